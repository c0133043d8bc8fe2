"""The splitting tree's layout, headless: label widths and cuts against hand-computed numbers, and every label's
pixel span, worked out from the figure's width, margins and axis range, inside the figure and clear of the next
column's nodes (tests/test_frontends.py checks the same in JupyterLab and Notebook 7)."""

from __future__ import annotations

import html

import pandas as pd
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")  # plotly's FigureWidget needs it

from saekit.analysis.splitting import EDGE_COLUMNS, feature_family  # noqa: E402
from saekit.errors import InputError  # noqa: E402
from saekit.widgets import html as H  # noqa: E402
from saekit.widgets.splitting import (  # noqa: E402
    LABEL_GAP_PX,
    MARKER_PX,
    SplittingView,
    family_figure,
    fit_labels,
    right_margin,
    shorten,
    text_width_px,
)

LONG = H.token_label("<img src=x onerror=alert(1)>")  # 30 characters with its quotes


class LongLabels:
    """Stands in for `Labels`: every node's token is the long markup."""

    def token(self, size: int, feature: int) -> str:
        return LONG

    def hover(self, size: int, feature: int) -> str:
        return LONG


def chain_edges(n_sizes: int) -> pd.DataFrame:
    """Sizes 8, 16, 32, ...: feature 0 of each size has two children in the next, 0 and a large id."""
    rows = []
    for level in range(n_sizes - 1):
        size = 8 * 2**level
        rows += [(size, 0, 2 * size, 0, 0.9, 0.8), (size, 0, 2 * size, 1000 + level, 0.5, 0.4)]
    return pd.DataFrame(rows, columns=EDGE_COLUMNS)


def test_text_widths_and_cuts_by_hand():
    assert text_width_px("abc") == pytest.approx(3 * 0.62 * 12)  # 22.32
    assert text_width_px("日本") == pytest.approx(24.0)  # wide glyphs are one em
    assert shorten("'abc'", 135) == "'abc'"
    # 17 glyphs and the ellipsis: 18 × 7.44 = 133.92 ≤ 135; 18 and the ellipsis would be 141.36
    assert shorten(LONG, 135) == "'<img src=x onerr…"
    assert shorten("日本語のテキスト", 40) == "日本…"  # 24 + 7.44 ≤ 40 < 36 + 7.44
    # "#7 'abc'": 12 + 8 × 7.44 + 4 = 75.52 → 76; the tick needs 12 × 7.44 / 2 + 4 = 48.64
    assert right_margin(["#7 'abc'"], "512 features") == 76
    assert right_margin([], "") == 20


def test_labels_fit_columns_and_the_last_gets_its_margin():
    fit = fit_labels([0, 1000, 3], [LONG, LONG, "'x'"], [0, 1, 1], n_columns=2, width=800, last_tick="16 features")
    assert fit.texts[1] == "#1000 '<img src=x onerr…" and fit.texts[2] == "#3 'x'"
    assert fit.margin_right == 12 + 4 + round(24 * 7.44 + 0.5)  # 24 glyphs: 178.56 → 179; 195 in all
    assert fit.column_px == pytest.approx((800 - 20 - 195) / 1.2)
    assert fit.texts[0] == "#0 '<img src=x onerr…"  # 487 px to the next column: only TOKEN_PX cuts it


@pytest.mark.parametrize(("width", "n_sizes"), [(600, 2), (600, 4), (800, 4), (800, 8), (1000, 2), (1000, 8)])
def test_every_label_lies_inside_the_figure_and_clear_of_the_next_column(n_sizes, width):
    family = feature_family(chain_edges(n_sizes), 8, 0)
    fig = family_figure(family, LongLabels(), width=width)
    layout = fig.layout
    assert layout.width == width and layout.autosize is not True
    nodes = fig.data[-1]
    assert nodes.cliponaxis is False  # the last column's labels are drawn in the right margin
    x0, x1 = layout.xaxis.range
    plot_px = width - layout.margin.l - layout.margin.r

    def px(x: float) -> float:
        return layout.margin.l + (x - x0) / (x1 - x0) * plot_px

    last = n_sizes - 1
    for x, text in zip(nodes.x, nodes.text):
        assert "<" not in text  # escaped for plotly
        start = px(x) + LABEL_GAP_PX
        end = start + text_width_px(html.unescape(text))
        assert px(x) - MARKER_PX / 2 >= 0
        assert end <= width, (x, text)
        if x < last:
            assert end <= px(x + 1) - MARKER_PX / 2, (x, text)  # ends before the next column's nodes
        else:
            assert html.unescape(text).endswith("'<img src=x onerr…")  # the last column keeps the full cut
    texts = [html.unescape(t) for t in nodes.text]
    inner = {f: t for f, x, t in zip(family.feature, nodes.x, texts) if x < last}
    if (width, n_sizes) == (800, 4):  # 195 px of right margin; 182.8 px between columns, 161.8 of them for a label
        assert inner == {0: "#0 '<img src=x onerr…", 1000: "#1000 '<img src=x on…", 1001: "#1001 '<img src=x on…"}
    if (width, n_sizes) == (800, 8):  # 81.25 px between columns, 60.25 for a label: "#1000 " leaves too little
        assert inner[0] == "#0 '<im…" and inner[1000] == "#1000"


def test_the_view_draws_at_the_width_it_is_given():
    edges = chain_edges(4)
    view = SplittingView(edges, feature=(8, 0), width=900)
    assert view.figure.layout.width == 900
    view.view_picker.value = "decoder cosine"  # a redraw keeps it
    assert view.figure.layout.width == 900
    assert SplittingView(edges, feature=(8, 0)).figure.layout.width == 800
    with pytest.raises(InputError, match="width=300"):
        family_figure(feature_family(edges, 8, 0), width=200)
