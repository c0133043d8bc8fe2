"""Escaped HTML for token text: every string shown in a widget passes through `html.escape` here.

Corpus text can hold markup (`<img onerror=...>`, `<script>`); ipywidgets' HTML widget sets its
value as innerHTML, so anything not escaped would run. Tokens are drawn as spans coloured by an
activation, with the exact value in the `title` (shown on hover).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd

TOKEN_CLASS = "saekit-tok"
EXAMPLE_CLASS = "saekit-example"
HIGHLIGHT_RGB = (255, 120, 0)  # orange, the paper's colour for activations
_VISIBLE = {"\n": "↵", "\r": "⏎", "\t": "⇥"}


def escape(text: object) -> str:
    """Any value as HTML-safe text (quotes escaped too, so it is safe inside attributes)."""
    return html.escape(str(text), quote=True)


def visible(token: str) -> str:
    """Token text with newlines, returns and tabs drawn as glyphs, so a context stays on one line."""
    return "".join(_VISIBLE.get(ch, ch) for ch in token)


def token_label(token: str) -> str:
    """A token as a short quoted label for lists and buttons (plain text, not HTML)."""
    return repr(visible(token))


def colour(value: float, scale: float) -> str:
    """The background of a token that activates `value` on a scale where `scale` is full colour."""
    alpha = 0.0 if scale <= 0 or not np.isfinite(value) else float(np.clip(value / scale, 0.0, 1.0))
    r, g, b = HIGHLIGHT_RGB
    return f"rgba({r},{g},{b},{alpha:.3f})"


def token_span(token: str, value: float | None, scale: float, *, bold: bool = False) -> str:
    """One token as an escaped span, coloured by `value` (None: unknown, no colour) with it in the title."""
    style = "white-space:pre;border-radius:2px;"
    title = f"{token_label(token)}"
    if value is not None:
        style += f"background:{colour(value, scale)};"
        title += f" activation {value:.4g}"
    if bold:
        style += "font-weight:bold;outline:1px solid rgba(0,0,0,0.35);"
    return f'<span class="{TOKEN_CLASS}" style="{style}" title="{escape(title)}">{escape(visible(token))}</span>'


def tokens_html(tokens: Sequence[str], values: Sequence[float | None], scale: float, bold_at: int | None = None) -> str:
    """A run of tokens, each coloured by its value; the token at `bold_at` is outlined."""
    return "".join(token_span(t, v, scale, bold=i == bold_at) for i, (t, v) in enumerate(zip(tokens, values)))


def example_html(left: Sequence[str], token: str, right: Sequence[str], activation: float, scale: float,
                 context_values: Sequence[float] | None = None) -> str:
    """One example: its activation, then the context with the firing token outlined.

    `context_values` are the activations of every token of left + [token] + right; without them only
    the firing token is coloured (its value is known from the store).
    """
    tokens = [*left, token, *right]
    if context_values is None:
        context_values = [None] * len(left) + [activation] + [None] * len(right)
    body = tokens_html(tokens, list(context_values), scale, bold_at=len(left))
    value = f'<span style="display:inline-block;width:4.5em;color:#555;font-family:monospace">{activation:.3g}</span>'
    return (f'<div class="{EXAMPLE_CLASS}" style="font-family:monospace;font-size:12px;line-height:1.7;'
            f'overflow:hidden;white-space:nowrap">{value}{body}</div>')


def examples_html(examples: pd.DataFrame, scale: float, context_values: Sequence[Sequence[float]] | None = None) -> str:
    """Rows of `FeatureStore.top_examples`/`interval_examples` (columns left, token, right, activation)."""
    if examples.empty:
        return '<div style="color:#777">no examples</div>'
    rows = []
    for i, row in enumerate(examples.itertuples(index=False)):
        values = None if context_values is None else context_values[i]
        rows.append(example_html(row.left, row.token, row.right, float(row.activation), scale, values))
    return "".join(rows)


def table_html(table: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    """A DataFrame as an HTML table with every cell escaped."""
    formatters = {c: float_format.format for c in table.columns if pd.api.types.is_float_dtype(table[c])}
    return table.to_html(index=False, escape=True, formatters=formatters, border=0, classes="saekit-table",
                         na_rep="")


def heading(text: str, level: int = 4) -> str:
    """An escaped heading."""
    return f"<h{level} style='margin:6px 0 2px 0'>{escape(text)}</h{level}>"


def plotly_text(text: object) -> str:
    """Text for any plotly string (trace name, label, hover, title, annotation, tick).

    plotly reads a subset of HTML (<b>, <a href>, <span style>, ...) and decodes only a few entities
    (&lt; &gt; &amp;, numeric ones; not &quot;), so `<`, `>`, `&` are escaped and quotes kept. It also
    fills `%{...}` templates in hovers, names, titles and annotations (`%{meta}` there is a trace's raw
    meta), so `%` is written as the entity &#37;. Newlines become <br>.
    """
    return html.escape(str(text), quote=False).replace("%", "&#37;").replace("\n", "<br>")
