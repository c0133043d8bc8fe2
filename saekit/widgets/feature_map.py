"""The feature map: a UMAP of decoder directions (`saekit.analysis.feature_map`) as a plotly scatter.

One trace per dictionary, coloured by dictionary (ordered by size) or by HDBSCAN cluster; hovering a
point shows its top tokens; clicking it opens the feature in a FeatureExplorer below the map.

    FeatureMap.from_saes({"A-relu-512": sae_512, "A-relu-1024": sae_1024}, stores, model)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go

from saekit.analysis.browsing import map_stores
from saekit.analysis.features import FeatureStore
from saekit.analysis.maps import MapConfig, feature_map, hover_labels
from saekit.saes.dictionary import Dictionary
from saekit.widgets import html as H
from saekit.widgets.card import as_basis
from saekit.widgets.explorer import FeatureExplorer
from saekit.widgets.figure_slot import FigureSlot

COLOUR_BY = ("dictionary", "cluster")
ALIASES = {"size": "dictionary"}  # the earlier name of colouring by dictionary
WEBGL_FROM = 5000  # points; above this the map is drawn with WebGL (SVG slows down with tens of thousands)
NO_HOVER = "<i>no top tokens: no feature store for this dictionary</i>"


def dictionary_order(table: pd.DataFrame) -> list[str]:
    """The map's dictionaries, small → large (ties by name)."""
    sizes = table.drop_duplicates("dictionary").set_index("dictionary")["size"]
    return sorted(sizes.index, key=lambda name: (int(sizes[name]), str(name)))


def dictionary_colours(names: list[str]) -> dict[str, str]:
    """One colour per dictionary, along Viridis in the given (size) order: distinct even for equal sizes."""
    palette = plotly.colors.sample_colorscale("Viridis", np.linspace(0.05, 0.9, max(len(names), 1)).tolist())
    return dict(zip(names, palette))


def _cluster_colours(cluster: np.ndarray) -> list[str]:
    palette = plotly.colors.qualitative.Dark24
    return ["lightgrey" if c < 0 else palette[int(c) % len(palette)] for c in cluster]


def _colour_mode(colour_by: str) -> str:
    mode = ALIASES.get(colour_by, colour_by)
    if mode not in COLOUR_BY:
        raise ValueError(f"colour_by must be one of {COLOUR_BY}, got {colour_by!r}")
    return mode


def map_figure(table: pd.DataFrame, colour_by: str = "dictionary",
               title: str = "feature map (UMAP of decoder directions)") -> go.Figure:
    """A scatter of `feature_map` output: one trace per dictionary (meta: its name; customdata: the feature
    index), the largest drawn first so smaller dictionaries' points stay visible on top; colour by dictionary,
    or by HDBSCAN cluster (grey: noise). Hovers show the escaped hover text, or say that there is none."""
    mode = _colour_mode(colour_by)
    if mode == "cluster" and "cluster" not in table.columns:
        raise ValueError("this map has no clusters; build it with feature_map(..., clusters=True)")
    order = dictionary_order(table)
    colours = dictionary_colours(order)
    scatter = go.Scattergl if len(table) > WEBGL_FROM else go.Scatter
    fig = go.Figure()
    for name in reversed(order):
        part = table[table["dictionary"] == name]
        size = int(part["size"].iloc[0])
        cluster = part["cluster"].to_numpy() if "cluster" in part else np.full(len(part), -1)
        hover = [f"<b>{H.plotly_text(name)} #{f}</b> (cluster {c})<br>{H.plotly_text(h) if h else NO_HOVER}"
                 for f, c, h in zip(part["feature"], cluster, part["hover"])]
        marker: dict[str, Any] = {"size": 5 if len(table) < 3000 else 3, "opacity": 0.8}
        marker["color"] = colours[name] if mode == "dictionary" else _cluster_colours(cluster)
        fig.add_trace(scatter(x=part["x"], y=part["y"], mode="markers", name=f"{H.plotly_text(name)} ({size:,})",
                              meta=name, customdata=part["feature"].to_numpy()[:, None], hovertext=hover,
                              hoverinfo="text", marker=marker))
    fig.update_layout(title=title, height=560, width=760, template="plotly_white", legend_title_text="dictionary",
                      legend=dict(traceorder="reversed", itemsizing="constant"),
                      xaxis=dict(showticklabels=False, title=""), yaxis=dict(showticklabels=False, title=""),
                      margin=dict(l=10, r=10, t=40, b=10), hoverlabel=dict(align="left"))
    return fig


class FeatureMap(widgets.VBox):
    """The map as a FigureWidget; clicking a point opens its feature in `explorer` (shown below it).

    The explorer's bases should be named like the map's dictionaries, so a click on a dictionary's
    point opens that dictionary's store; a single-basis explorer opens every click of a one-dictionary
    map. A click on a dictionary that has no basis says so instead of opening another's feature.
    """

    def __init__(self, table: pd.DataFrame, explorer: FeatureExplorer | None = None, *,
                 colour_by: str = "dictionary") -> None:
        self.table = table
        self.explorer = explorer
        self.colour_by = _colour_mode(colour_by)
        self.slot = FigureSlot(map_figure(table, self.colour_by), on_new=self._connect)
        self.colour_picker = widgets.ToggleButtons(
            options=[c for c in COLOUR_BY if c == "dictionary" or c in table.columns], value=self.colour_by,
            description="colour by")
        self.colour_picker.observe(lambda change: self.recolour(change["new"]), names="value")
        self.status = widgets.HTML("<i>click a point to open its feature</i>")
        children = [self.colour_picker, self.slot, self.status] + ([explorer] if explorer is not None else [])
        super().__init__(children)
        self.add_class("saekit-map")

    @property
    def figure(self) -> go.FigureWidget:
        """The map now shown."""
        return self.slot.figure

    def _connect(self, figure: go.FigureWidget) -> None:
        for trace in figure.data:
            trace.on_click(self.clicked)

    def recolour(self, colour_by: str) -> None:
        """Redraw the points coloured by "dictionary" or "cluster" (the picker follows)."""
        mode = _colour_mode(colour_by)
        if mode == self.colour_by:
            return
        self.colour_by = mode
        self.slot.show(map_figure(self.table, mode))
        self.colour_picker.value = mode

    def clicked(self, trace: Any, points: Any, state: Any = None) -> None:
        """plotly's click callback: open the first clicked point."""
        if not points.point_inds:
            return
        feature = int(np.asarray(trace.customdata)[points.point_inds[0]][0])
        self.open_feature(trace.meta, feature)

    def open_feature(self, dictionary: str, feature: int) -> None:
        """Open `feature` of `dictionary` in the explorer."""
        if self.explorer is not None and dictionary not in self.explorer.bases and (
                len(self.explorer.bases) > 1 or self.table["dictionary"].nunique() > 1):
            self.status.value = (f"<b>{H.escape(dictionary)}</b> feature <b>{int(feature)}</b>: no feature store "
                                 "for this dictionary, so nothing to open")
            return
        self.status.value = f"opened <b>{H.escape(dictionary)}</b> feature <b>{int(feature)}</b>"
        if self.explorer is None:
            return
        basis = dictionary if dictionary in self.explorer.bases else None
        self.explorer.show(int(feature), basis=basis)

    @classmethod
    def from_saes(cls, saes: Mapping[str, Dictionary], stores: Mapping[str, FeatureStore | None] | None = None,
                  model: Any = None,
                  *, text: Any = None, max_tokens: int = 50_000, config: MapConfig | None = None,
                  clusters: bool = True, explorer: bool = True) -> FeatureMap:
        """Map the decoders of `saes` (name → SAE) in one UMAP; hovers and the explorer come from
        `stores` (name → FeatureStore; a dictionary without one, or with None, is mapped with bare hovers),
        or from stores built over `text` through `model` when given."""
        stores = {name: store for name, store in (stores or {}).items() if store is not None}
        if not stores and model is not None and text is not None:
            stores = map_stores(saes, model, text, max_tokens)
        hover = {name: hover_labels(store, 4) for name, store in stores.items()}
        table = feature_map(dict(saes), hover=hover, clusters=clusters, config=config or MapConfig())
        browser = None
        if explorer and stores:
            bases = {name: as_basis(store, saes.get(name), model) for name, store in stores.items()}
            browser = FeatureExplorer(bases)
        return cls(table, browser)
