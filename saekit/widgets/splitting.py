"""Feature splitting: one feature of a small dictionary and its family in the larger ones, as a tree
drawn coarse (left) to fine (right), each node labelled with its top tokens.

Edges come from `split_edges` (each child linked to its most similar parent, activation cosine ≥ 0.4
by default). The "decoder" view weights the same edges by decoder cosine, or draws a second edge
table linked by decoder cosine when one is given.

    SplittingView(demo.splitting_edges(), [demo.feature_store(n) for n in demo.family_names("A")])
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from saekit.analysis.browsing import splitting_data
from saekit.analysis.features import FeatureStore
from saekit.analysis.maps import hover_labels
from saekit.analysis.splitting import DEFAULT_THRESHOLD, families, feature_family
from saekit.errors import InputError
from saekit.saes.dictionary import Dictionary
from saekit.widgets import html as H
from saekit.widgets.figure_slot import FigureSlot

VIEWS = {"activation cosine": "activation_cosine", "decoder cosine": "decoder_cosine"}
Node = tuple[int, int]  # (size, feature)
FONT_PX = 12  # node labels' font size
GLYPH_EM = 0.62  # an average glyph's width in em (generous for plotly's sans-serif); wide CJK glyphs count 1
TOKEN_PX = 135  # a node's token is cut to this width, about 18 latin characters (the hover shows it whole)
LABEL_GAP_PX = 12  # from a node's centre to its label: the marker's radius and some space
MARKER_PX = 14  # a node's diameter
MARGIN_PX = 20  # the plot's left margin and the least right one
X_PAD = (0.15, 0.05)  # the x axis runs this far (in columns) left of the first column and right of the last
WIDTH_PX = 800  # the tree's width unless told: the narrowest usual notebook output area


class Labels:
    """Per dictionary size: each feature's most common top token (node text) and its hover label."""

    def __init__(self, stores: Mapping[int, FeatureStore] | Sequence[FeatureStore]) -> None:
        items = stores.items() if isinstance(stores, Mapping) else ((s.n_features, s) for s in stores)
        self.stores = {int(size): store for size, store in items}
        self._tokens: dict[int, pd.Series] = {}
        self._hover: dict[int, list[str]] = {}

    def token(self, size: int, feature: int) -> str:
        if size not in self.stores:
            return ""
        if size not in self._tokens:
            self._tokens[size] = self.stores[size].feature_table().set_index("feature")["top_token"]
        token = self._tokens[size].get(feature)
        return H.token_label(token) if isinstance(token, str) else "(silent)"

    def hover(self, size: int, feature: int) -> str:
        if size not in self.stores:
            return ""
        if size not in self._hover:
            self._hover[size] = hover_labels(self.stores[size], 4)
        return self._hover[size][feature]


def text_width_px(text: str, font_px: int = FONT_PX) -> float:
    """An estimate of `text`'s drawn width, on the wide side (plotly measures only in the browser)."""
    return font_px * sum(1.0 if unicodedata.east_asian_width(ch) in "WF" else GLYPH_EM for ch in text)


def shorten(text: str, max_px: float) -> str:
    """`text`, or its longest start that fits `max_px` with an ellipsis after it."""
    if text_width_px(text) <= max_px:
        return text
    room = max_px - text_width_px("…")
    kept = ""
    for ch in text:
        if text_width_px(kept + ch) > room:
            break
        kept += ch
    return kept + "…"


def right_margin(last_labels: Sequence[str], tick: str = "") -> int:
    """Pixels right of the last column that hold its labels (drawn right of each node) and half its tick."""
    widest = max((text_width_px(t) for t in last_labels), default=0.0)
    return math.ceil(max(MARGIN_PX, LABEL_GAP_PX + widest + 4, text_width_px(tick) / 2 + 4))


class TreeFit(NamedTuple):
    """A tree's node labels fitted to a figure's width."""

    texts: list[str]  # each node's label, plain text: "#feature token", the token cut to its room
    margin_right: int  # px right of the last column, holding its labels and half its tick
    column_px: float  # px between neighbouring columns


def fit_labels(features: Sequence[int], tokens: Sequence[str], columns: Sequence[int], n_columns: int,
               width: int = WIDTH_PX, last_tick: str = "") -> TreeFit:
    """Labels for nodes (`features`, their `tokens`, their `columns` of `n_columns`) in a figure `width` px
    wide: the last column's tokens are cut to TOKEN_PX and get a right margin that holds them; every other
    token is cut further where needed, so that its label ends before the next column's nodes, and left out
    where not even three characters fit (columns closer than the ids alone need may still overlap)."""
    last = n_columns - 1

    def label(feature: int, token: str, max_px: float) -> str:
        fits = token and max_px >= text_width_px("'ab…")
        return f"#{feature} {shorten(token, max_px)}" if fits else f"#{feature}"

    margin = right_margin([label(f, t, TOKEN_PX) for f, t, c in zip(features, tokens, columns) if c == last],
                          last_tick)
    column_px = (width - MARGIN_PX - margin) / (last + sum(X_PAD))
    room = column_px - LABEL_GAP_PX - MARKER_PX / 2 - 2  # from a label's start to the next column's nodes
    texts = [label(f, t, TOKEN_PX if c == last else min(TOKEN_PX, room - text_width_px(f"#{f} ")))
             for f, t, c in zip(features, tokens, columns)]
    return TreeFit(texts, margin, column_px)


def tree_layout(family: pd.DataFrame) -> pd.DataFrame:
    """`family` (from `feature_family`) with x (level: 0 = coarsest size) and y (leaves stacked, each
    parent centred on its children) for drawing."""
    nodes = [(int(s), int(f)) for s, f in zip(family["size"], family["feature"])]
    children: dict[Node, list[Node]] = {node: [] for node in nodes}
    for node, ps, pf in zip(nodes, family["parent_size"], family["parent_feature"]):
        if not pd.isna(ps):
            children[(int(ps), int(pf))].append(node)
    sizes = sorted({s for s, _ in nodes})
    y: dict[Node, float] = {}
    next_leaf = [0.0]

    def place(node: Node) -> float:
        if not children[node]:
            y[node], next_leaf[0] = next_leaf[0], next_leaf[0] + 1
        else:
            y[node] = float(np.mean([place(child) for child in children[node]]))
        return y[node]

    place(nodes[0])
    return family.assign(x=[sizes.index(s) for s, _ in nodes], y=[-y[node] for node in nodes])


def family_figure(family: pd.DataFrame, labels: Labels | None = None, view: str = "activation cosine",
                  title: str | None = None, width: int = WIDTH_PX) -> go.Figure:
    """The family as a tree `width` pixels wide: nodes by size (coarse → fine, left → right), edges weighted
    by the chosen cosine ("activation cosine" or "decoder cosine"), each node labelled with its top token."""
    if width < 300:
        raise InputError(f"a tree {width} px wide has no room for its labels: pass width=300 or more")
    column = VIEWS[view]
    laid = tree_layout(family)
    at = {(int(r.size), int(r.feature)): (r.x, r.y) for r in laid.itertuples(index=False)}
    fig = go.Figure()
    for r in laid.itertuples(index=False):
        if pd.isna(r.parent_size):
            continue
        (x0, y0), weight = at[(int(r.parent_size), int(r.parent_feature))], float(getattr(r, column))
        fig.add_trace(go.Scatter(x=[x0, r.x], y=[y0, r.y], mode="lines", hoverinfo="skip", showlegend=False,
                                 line=dict(color=f"rgba(90,90,90,{0.25 + 0.75 * max(min(weight, 1), 0):.2f})",
                                           width=1 + 5 * max(weight, 0))))
    _edge_labels(fig, laid, at, column)
    sizes = sorted(laid["size"].unique())
    ticks = [f"{int(s):,} features" for s in sizes]
    tokens = [labels.token(int(r.size), int(r.feature)) if labels else "" for r in laid.itertuples(index=False)]
    fit = fit_labels(laid["feature"].astype(int).tolist(), tokens, laid["x"].tolist(), len(sizes), width, ticks[-1])
    hover = [f"<b>size {int(r.size):,} · feature {int(r.feature)}</b><br>"
             f"{H.plotly_text(labels.hover(int(r.size), int(r.feature))) if labels else ''}"
             for r in laid.itertuples(index=False)]
    fig.add_trace(go.Scatter(
        x=laid["x"], y=laid["y"], mode="markers+text", text=[H.plotly_text(t) for t in fit.texts],
        textposition="middle right", textfont=dict(size=FONT_PX), cliponaxis=False,
        hovertext=hover, hoverinfo="text", showlegend=False, customdata=laid[["size", "feature"]].to_numpy(dtype=int),
        marker=dict(size=MARKER_PX, color=["#d62728" if q else "#ff7800" for q in laid["is_query"]],
                    line=dict(color="white", width=1))))
    last = len(sizes) - 1
    root = laid.iloc[0]
    # a set width: plotly's FigureWidget draws before it is on the page and never autosizes to its container.
    # The last column's labels get a right margin of their own: plotly does not widen one for text.
    fig.update_layout(
        title=title or f"family of feature {int(root.feature)} (size {int(root['size']):,}); edges: {view}",
        height=max(260, 34 * (laid["y"].max() - laid["y"].min() + 2)), width=width,
        template="plotly_white", hoverlabel=dict(align="left"),
        margin=dict(l=MARGIN_PX, t=45, b=30, r=fit.margin_right),
        xaxis=dict(tickvals=list(range(len(sizes))), ticktext=ticks, range=[-X_PAD[0], last + X_PAD[1]],
                   showgrid=False, zeroline=False),
        yaxis=dict(showticklabels=False, showgrid=False, zeroline=False))
    return fig


def _edge_labels(fig: go.Figure, laid: pd.DataFrame, at: dict[Node, tuple[float, float]], column: str) -> None:
    """The cosine of each edge written at its middle."""
    xs, ys, texts = [], [], []
    for r in laid.itertuples(index=False):
        if pd.isna(r.parent_size):
            continue
        x0, y0 = at[(int(r.parent_size), int(r.parent_feature))]
        xs.append((x0 + r.x) / 2)
        ys.append((y0 + r.y) / 2)
        texts.append(f"{getattr(r, column):.2f}")
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="text", text=texts, textfont=dict(size=9, color="#666"),
                             hoverinfo="skip", showlegend=False))


def coarse_to_fine_html(family: pd.DataFrame, labels: Labels | None = None) -> str:
    """The family as an indented list, depth first: each node's size, id, top tokens and cosines to its parent."""
    rows = family.reset_index(drop=True)
    kids: dict[Node, list[int]] = {}
    for i, r in rows.iterrows():
        if not pd.isna(r["parent_size"]):
            kids.setdefault((int(r["parent_size"]), int(r["parent_feature"])), []).append(i)
    lines: list[str] = []

    def visit(i: int) -> None:
        r = rows.iloc[i]
        node = (int(r["size"]), int(r["feature"]))
        token = labels.token(*node) if labels else ""
        link = "" if pd.isna(r["parent_size"]) else (
            f" · act cos {r['activation_cosine']:.2f} · dec cos {r['decoder_cosine']:.2f}")
        weight = "bold" if r["is_query"] else "normal"
        lines.append(f"<div style='margin-left:{1.6 * int(r['depth'])}em;font-family:monospace;font-size:12px;"
                     f"font-weight:{weight}'>{node[0]:,} · #{node[1]} {H.escape(token)}"
                     f"<span style='color:#777'>{link}</span></div>")
        for child in kids.get(node, []):
            visit(child)

    visit(0)
    return H.heading("coarse → fine") + "".join(lines)


def family_options(edges: pd.DataFrame, labels: Labels | None, min_sizes: int = 3, limit: int = 300
                   ) -> list[tuple[str, tuple[int, int]]]:
    """(label, (size, feature)) of the roots whose trees span ≥ `min_sizes` sizes, largest family first."""
    roots = families(edges, min_sizes).sort_values(["n_descendants", "size", "feature"], ascending=[False, True, True])
    return [(f"{int(r.size):,} #{int(r.feature)} {labels.token(int(r.size), int(r.feature)) if labels else ''} — "
             f"{int(r.n_descendants)} descendants over {int(r.n_sizes)} sizes", (int(r.size), int(r.feature)))
            for r in roots.head(limit).itertuples(index=False)]


class SplittingView(widgets.VBox):
    """Pick a family (or any feature of any size); see its tree and its coarse-to-fine listing."""

    def __init__(self, edges: pd.DataFrame, stores: Mapping[int, FeatureStore] | Sequence[FeatureStore] = (), *,
                 decoder_edges: pd.DataFrame | None = None, min_sizes: int = 3,
                 feature: tuple[int, int] | None = None, width: int = WIDTH_PX) -> None:
        if edges.empty:
            raise ValueError("no edges to draw: lower the threshold of split_edges or use more text")
        self.edges = {"activation cosine": edges, "decoder cosine": decoder_edges if decoder_edges is not None
                      else edges}
        self.labels = Labels(stores)
        self.width = width
        sizes = sorted(set(edges["size_from"]) | set(edges["size_to"]))
        options = family_options(edges, self.labels, min_sizes)
        self.family_picker = widgets.Dropdown(options=options, description="family",
                                              layout=widgets.Layout(width="560px"))
        self.size_picker = widgets.Dropdown(options=[(f"{int(s):,}", int(s)) for s in sizes], description="size",
                                            layout=widgets.Layout(width="180px"))
        self.feature_box = widgets.IntText(value=0, description="feature", layout=widgets.Layout(width="180px"))
        self.go_button = widgets.Button(description="show", layout=widgets.Layout(width="70px"))
        self.view_picker = widgets.ToggleButtons(options=list(VIEWS), description="edges")
        self.slot = FigureSlot()
        self.listing = widgets.HTML()
        self.query: tuple[int, int] | None = None
        self.family_picker.observe(lambda change: change["new"] and self.show(*change["new"]), names="value")
        self.view_picker.observe(lambda change: self.query and self.show(*self.query), names="value")
        self.go_button.on_click(lambda _: self.show(self.size_picker.value, self.feature_box.value))
        super().__init__([self.family_picker, widgets.HBox([self.size_picker, self.feature_box, self.go_button]),
                          self.view_picker, self.slot, self.listing])
        self.add_class("saekit-splitting")
        start = feature or (options[0][1] if options else (int(edges["size_from"].iloc[0]),
                                                           int(edges["feature_from"].iloc[0])))
        self.show(*start)

    @property
    def figure(self) -> go.FigureWidget:
        """The tree now shown."""
        return self.slot.figure

    @classmethod
    def from_saes(cls, model: Any, saes: Sequence[Dictionary], text: Any, *, threshold: float = DEFAULT_THRESHOLD,
                  max_tokens: int = 100_000, progress: bool = True, min_sizes: int = 3, **settings: Any
                  ) -> SplittingView:
        """Link dictionaries of several sizes (same model and hook) over `text`, build their feature
        stores on the same windows, and show the families (`settings`: hook, context_len, ...)."""
        data = splitting_data(model, saes, text, threshold=threshold, max_tokens=max_tokens, progress=progress,
                              **settings)
        return cls(data.edges, data.stores, decoder_edges=data.decoder_edges, min_sizes=min_sizes)

    def family(self, size: int, feature: int) -> pd.DataFrame:
        """`feature_family` of (size, feature) in the current view's edges."""
        return feature_family(self.edges[self.view_picker.value], size, feature)

    def show(self, size: int, feature: int) -> pd.DataFrame:
        """Draw the family holding `feature` of the dictionary of `size`; returns it."""
        self.query = (int(size), int(feature))
        family = self.family(*self.query)
        self.slot.show(family_figure(family, self.labels, self.view_picker.value, width=self.width))
        self.listing.value = coarse_to_fine_html(family, self.labels)
        return family


def splitting_figure(edges: pd.DataFrame, size: int, feature: int, stores: Any = (),
                     view: str = "activation cosine", width: int = WIDTH_PX) -> go.Figure:
    """The static tree of one family, in one call."""
    return family_figure(feature_family(edges, size, feature), Labels(stores), view, width=width)
