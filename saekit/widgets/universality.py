"""Universality: how well each unit of model A is matched by one of model B (activation correlation on
the same tokens), features against neurons, and a pair viewer showing a unit and its match side by side.

    UniversalityView(demo.universality(), Basis(store_a, sae_a, model_a), Basis(store_b, sae_b, model_b))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from saekit.analysis.browsing import universality_data
from saekit.analysis.features import FeatureStore
from saekit.analysis.universality import (
    Universality,
    best_match_histogram,
    universality_summary,
)
from saekit.saes.dictionary import Dictionary
from saekit.widgets import html as H
from saekit.widgets.card import Basis, FeatureCard, as_basis

COLOURS = {"features": "#ff7800", "neurons": "#1f77b4"}
PAPER = {"features": 0.72, "neurons": 0.46}  # the paper's medians for A/1 vs B/1 and for neurons


def universality_figure(result: Universality, bins: int = 40, reference: Mapping[str, float] | None = None,
                        title: str = "best-match activation correlation, model A → model B") -> go.Figure:
    """Overlaid histograms of each unit's best-match correlation, features vs neurons, with the medians
    (dashed) and optional reference medians (dotted, e.g. `PAPER`)."""
    hist = best_match_histogram(result, bins)
    summary = universality_summary(result).set_index("basis")
    fig = go.Figure()
    for basis, part in hist.groupby("basis", sort=False):
        label = H.plotly_text(basis)
        fig.add_trace(go.Bar(x=(part["bin_start"] + part["bin_end"]) / 2, y=part["fraction"], name=label,
                             width=float(part["bin_end"].iloc[0] - part["bin_start"].iloc[0]),
                             marker_color=COLOURS.get(basis), opacity=0.6,
                             customdata=part[["count"]].to_numpy(),
                             hovertemplate=f"{label}<br>r %{{x:.2f}}<br>%{{customdata[0]}} units<extra></extra>"))
    for basis, row in summary.iterrows():
        fig.add_vline(x=row["median"], line=dict(color=COLOURS.get(basis), dash="dash"),
                      annotation_text=f"{H.plotly_text(basis)} median {row['median']:.2f}",
                      annotation_position="top right")
    for basis, value in (reference or {}).items():
        fig.add_vline(x=value, line=dict(color=COLOURS.get(basis), dash="dot", width=1),
                      annotation_text=f"paper {H.plotly_text(basis)} {value:.2f}", annotation_position="bottom right")
    fig.update_layout(title=title, barmode="overlay", height=380, width=720, template="plotly_white",
                      xaxis_title="correlation with the best-matching unit of model B", yaxis_title="fraction of units",
                      xaxis_range=[-0.05, 1.02], margin=dict(l=50, r=10, t=60, b=45))
    return fig


def ranked_pairs(table: pd.DataFrame) -> pd.DataFrame:
    """A best-match table's units that fired, best-matched first (unit, best_match, correlation)."""
    return table.dropna(subset=["correlation"]).sort_values(["correlation", "unit"], ascending=[False, True],
                                                            ignore_index=True)


class UniversalityView(widgets.VBox):
    """The histogram, a picker of A's units (best-matched first) and the two cards side by side."""

    def __init__(self, result: Universality, a: Basis | FeatureStore, b: Basis | FeatureStore, *,
                 neurons: tuple[Basis | FeatureStore, Basis | FeatureStore] | None = None,
                 reference: Mapping[str, float] | None = None, n_options: int = 300) -> None:
        self.result = result
        self.pairs = {"features": (as_basis(a), as_basis(b))}
        if neurons is not None:
            self.pairs["neurons"] = (as_basis(neurons[0]), as_basis(neurons[1]))
        self.n_options = n_options
        self.figure = go.FigureWidget(universality_figure(result, reference=reference))
        self.basis_picker = widgets.ToggleButtons(options=list(self.pairs), value="features", description="compare")
        self.unit_picker = widgets.Dropdown(description="unit of A", layout=widgets.Layout(width="520px"))
        self.match_note = widgets.HTML()
        self.card_a, self.card_b = (FeatureCard(n_top=6, n_per_interval=1, context=8) for _ in range(2))
        for card in (self.card_a, self.card_b):
            card.layout.width = "50%"
        self.basis_picker.observe(lambda change: self._fill_picker(), names="value")
        self.unit_picker.observe(lambda change: change["new"] is not None and self.show_pair(change["new"]),
                                 names="value")
        super().__init__([self.figure, widgets.HBox([self.basis_picker]), self.unit_picker, self.match_note,
                          widgets.HBox([self.card_a, self.card_b], layout=widgets.Layout(align_items="flex-start"))])
        self.add_class("saekit-universality")
        self._fill_picker()

    def table(self, basis: str | None = None) -> pd.DataFrame:
        """The best-match table of `basis` ("features" or "neurons")."""
        return self.result.features if (basis or self.basis_picker.value) == "features" else self.result.neurons

    def _fill_picker(self) -> None:
        ranked = ranked_pairs(self.table()).head(self.n_options)
        labels = self._labels(self.basis_picker.value)
        options = [(f"#{int(r.unit)} ↔ #{int(r.best_match)}  r={r.correlation:.2f}  {labels.get(int(r.unit), '')}",
                    int(r.unit)) for r in ranked.itertuples(index=False)]
        self.unit_picker.options = options
        if options:
            self.unit_picker.value = options[0][1]

    def _labels(self, basis: str) -> dict[int, str]:
        table = self.pairs[basis][0].store.feature_table().dropna(subset=["top_token"])
        return {int(f): H.token_label(t) for f, t in zip(table["feature"], table["top_token"])}

    def show_pair(self, unit: int, basis: str | None = None) -> dict[str, Any]:
        """Show A's `unit` and its best match in B; returns the match row as a dict."""
        basis = basis or self.basis_picker.value
        if basis != self.basis_picker.value:
            self.basis_picker.value = basis
        row = self.table(basis).set_index("unit").loc[int(unit)]
        a, b = self.pairs[basis]
        self.card_a.show(a, int(unit), name="model A")
        if pd.isna(row["best_match"]):
            self.match_note.value = f"{H.escape(basis)} unit {int(unit)} never fired: it has no match"
            return {"unit": int(unit), "best_match": None, "correlation": float("nan")}
        self.card_b.show(b, int(row["best_match"]), name="model B")
        self.match_note.value = (f"<b>A #{int(unit)}</b> ↔ <b>B #{int(row['best_match'])}</b>: activation "
                                 f"correlation <b>{row['correlation']:.3f}</b> on the same tokens")
        return {"unit": int(unit), "best_match": int(row["best_match"]), "correlation": float(row["correlation"])}

    @classmethod
    def from_saes(cls, model_a: Any, model_b: Any, sae_a: Dictionary, sae_b: Dictionary, text: Any, *,
                  max_tokens: int = 100_000, progress: bool = True, **settings: Any) -> UniversalityView:
        """Correlate `sae_a` on `model_a` with `sae_b` on `model_b` over `text` (and the neurons), build the
        four feature stores on the same windows, and show them (`settings`: hook, context_len, ...)."""
        d = universality_data(model_a, model_b, sae_a, sae_b, text, max_tokens=max_tokens, progress=progress,
                              **settings)
        return cls(d.result, Basis(d.store_a, sae_a, d.model_a), Basis(d.store_b, sae_b, d.model_b),
                   neurons=(Basis(d.neurons_a, model=d.model_a), Basis(d.neurons_b, model=d.model_b)),
                   reference=PAPER)
