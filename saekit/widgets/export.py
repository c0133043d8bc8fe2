"""Feature cards as one self-contained HTML file to share: no server, no kernel, nothing fetched from a network.

Each card holds what the explorer's card shows (summary, activation histogram, logit effects, top examples and
examples across activation intervals, tokens coloured by activation), built by the same escaped HTML builders
(`saekit.widgets.card`, `saekit.widgets.html`). The histograms are plotly figures drawn by plotly.js, embedded
once in the file's head, so the page works offline and from an e-mail attachment.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
from tqdm.auto import tqdm

from saekit.analysis.features import FeatureStore
from saekit.errors import InputError
from saekit.widgets import html as H
from saekit.widgets.card import Basis, as_basis, card_html, histogram_figure, unit_word

CARD_CLASS = "saekit-export-card"
PLOT_CLASS = "saekit-export-histogram"
_STYLE = """
body { font-family: sans-serif; margin: 16px; color: #222; }
.saekit-export-card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; margin: 12px 0; }
.saekit-export-row { display: flex; gap: 16px; align-items: flex-start; }
.saekit-export-row > div { min-width: 0; }
"""


def check_features(store: FeatureStore, features: Sequence[int]) -> list[int]:
    """`features` as ints, each checked to be a unit of `store` (an InputError says the valid range)."""
    chosen = [int(f) for f in features]
    if not chosen:
        raise InputError("no features to export: name at least one (e.g. features=[0, 5])")
    bad = [f for f in chosen if not 0 <= f < store.n_features]
    if bad:
        raise InputError(f"features {bad} are out of range: this store has {store.n_features} (0 to "
                         f"{store.n_features - 1})")
    return chosen


def card_section(basis: Basis, feature: int, *, name: str = "", n_top: int = 10, n_per_interval: int = 2,
                 context: int = 12) -> str:
    """One feature's card as an HTML section (escaped text, the histogram as a plotly div and its script)."""
    parts = card_html(basis, feature, n_top=n_top, n_per_interval=n_per_interval, context=context, name=name)
    hist = basis.store.histogram(feature)
    total = int(hist["count"].sum()) if len(hist) else 0
    figure = histogram_figure(hist, f"activation histogram ({total:,})")
    plot = figure_div(figure, f"saekit-hist-{feature}")
    return (f"<section class='{CARD_CLASS}' id='{unit_word(basis)}-{feature}'>{parts['summary']}"
            f"<div class='saekit-export-row'><div class='{PLOT_CLASS}'>{plot}</div>"
            f"<div style='flex:1'>{parts['logits']}</div></div>{parts['top']}{parts['intervals']}</section>")


def figure_div(figure: go.Figure, div_id: str) -> str:
    """A plotly figure as a div and the script that draws it with the page's plotly.js (no plotly.js of its own)."""
    return figure.to_html(include_plotlyjs=False, full_html=False, div_id=div_id,
                          config={"displaylogo": False, "responsive": False})


def cards_document(store: FeatureStore | Basis, features: Sequence[int], *, name: str = "", title: str | None = None,
                   n_top: int = 10, n_per_interval: int = 2, context: int = 12, progress: bool = True) -> str:
    """The whole page: plotly.js inlined once in the head, then one card per feature, in the order given."""
    from plotly.offline import get_plotlyjs

    basis = as_basis(store)
    chosen = check_features(basis.store, features)
    word = unit_word(basis)
    title = title or f"{name + ' ' if name else ''}{word}s {', '.join(map(str, chosen[:8]))}" + (
        " …" if len(chosen) > 8 else "")
    cards = [card_section(basis, f, name=name, n_top=n_top, n_per_interval=n_per_interval, context=context)
             for f in tqdm(chosen, desc="feature cards", disable=not progress)]
    n_tokens = int(basis.store.meta.get("n_tokens", 0))
    intro = (f"<p style='color:#555'>{len(chosen)} {word}(s) of a store of {basis.store.n_features:,} over "
             f"{n_tokens:,} tokens. Tokens are coloured by activation; hover one for its value.</p>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{H.escape(title)}</title><style>{_STYLE}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body><h2>{H.escape(title)}</h2>{intro}{''.join(cards)}</body></html>\n")


def export_html(store: FeatureStore | Basis, path: str | Path, features: Sequence[int], *, name: str = "",
                title: str | None = None, n_top: int = 10, n_per_interval: int = 2, context: int = 12,
                progress: bool = True) -> Path:
    """Write `features`' cards to `path` as one self-contained HTML file (see `cards_document`); returns the path.

    With a Basis holding the dictionary and model, every context token is coloured by its activation; from a
    store alone, only each example's firing token is.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{str(path)!r} is a folder; pass a file name such as {str(path / 'features.html')!r}")
    document = cards_document(store, features, name=name, title=title, n_top=n_top, n_per_interval=n_per_interval,
                              context=context, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path
