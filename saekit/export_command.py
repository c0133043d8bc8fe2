"""`saekit export STORE --features 3,10-12 --out cards.html`: feature cards of a saved feature store as one
self-contained HTML file (`saekit.widgets.export`). With `--sae` and `--model` every context token is coloured by
its recomputed activation; from the store alone, each example's firing token is.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from saekit.errors import InputError

DEFAULT_COUNT = 12  # features exported when none are named: the densest ones


class ExportError(InputError):
    """Bad `saekit export` input: one line saying what to change."""


def parse_features(text: str) -> list[int]:
    """'3,10-12' → [3, 10, 11, 12] (order kept, repeats dropped)."""
    chosen: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if "-" in part.lstrip("-"):
                low, high = part.split("-", 1)
                numbers = list(range(int(low), int(high) + 1))
                if not numbers:
                    raise ValueError
            else:
                numbers = [int(part)]
        except ValueError:
            raise ExportError(f"--features: {part!r} is not a feature id or a range such as 10-12") from None
        chosen += [n for n in numbers if n not in chosen]
    if not chosen:
        raise ExportError("--features names no feature; pass ids and ranges such as 3,10-12")
    return chosen


def run(args: argparse.Namespace) -> int:
    """Load the store (and the SAE and model when given), write the page, print its path."""
    for package in ("plotly", "ipywidgets"):
        if importlib.util.find_spec(package) is None:
            raise ExportError(f"saekit export needs {package}: pip install 'saekit[notebooks]'")
    if (args.sae is None) != (args.model is None):
        raise ExportError("pass --sae and --model together (to colour every context token), or neither")
    if args.out.suffix.lower() not in (".html", ".htm"):
        raise ExportError(f"--out {args.out} should name an .html file")
    from saekit.analysis.features import load_feature_store
    from saekit.widgets.card import Basis
    from saekit.widgets.export import export_html

    store = load_feature_store(args.store)
    features = (parse_features(args.features) if args.features is not None
                else store.feature_table()["feature"].head(DEFAULT_COUNT).astype(int).tolist())
    sae = model = None
    if args.sae is not None:
        from saekit.activations import load_model
        from saekit.formats import load_sae

        sae, model = load_sae(args.sae), load_model(args.model)
    path = export_html(Basis(store, sae, model), args.out, features, title=args.title, progress=not args.quiet)
    print(f"wrote {len(features)} feature card(s) to {path} ({Path(path).stat().st_size / 1e6:.1f} MB)")
    return 0
