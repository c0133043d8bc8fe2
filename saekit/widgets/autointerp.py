"""Automated interpretability in a notebook: the cost before anything is sent, a button to go ahead, then the
paper's histogram of scores for features against neurons and the explanations themselves (escaped)."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from saekit.analysis import autointerp as A
from saekit.widgets import html as H
from saekit.widgets.figure_slot import FigureSlot
from saekit.widgets.paper import BASIS_COLOURS

BASIS_NAMES = {"feature": "features", "neuron": "neurons"}


def score_histogram(scores: pd.DataFrame, bins: int = 20) -> go.Figure:
    """Overlaid histograms of one scorer's scores (`autointerp.score` rows), one per basis, medians in the
    legend; the title names the score, who scored and who explained."""
    fig = go.Figure()
    for basis, rows in scores.groupby("basis", sort=True):
        values = rows["score"].dropna()
        name = BASIS_NAMES.get(basis, basis)
        fig.add_trace(go.Histogram(x=values, nbinsx=bins, histnorm="probability", opacity=0.6,
                                   name=f"{H.plotly_text(name)} (median {values.median():.2f}, n={len(values)})",
                                   marker_color=BASIS_COLOURS.get(name)))
    scorer = ", ".join(H.plotly_text(s) for s in scores["scorer"].unique())
    by = ", ".join(H.plotly_text(b) for b in scores["by"].unique())
    explainer = ", ".join(H.plotly_text(e) for e in scores["explainer"].unique())
    fig.update_layout(barmode="overlay", height=380, width=760, template="plotly_white",
                      title=dict(text=f"{scorer} score: features vs neurons<br><sup>explained by {explainer}; "
                                      f"scored by {by}</sup>"),
                      xaxis_title=f"{scorer} score", yaxis_title="fraction of units",
                      margin=dict(l=50, r=10, t=70, b=45))
    return fig


def cost_html(cost: pd.DataFrame) -> str:
    """The estimate of `autointerp.estimate_cost` as an escaped table, with its total."""
    known = cost["dollars"].dropna()
    total = "unknown (a price is missing)" if len(known) < len(cost) else f"at most ${known.sum():,.4f}"
    shown = cost[["step", "by", "prompts", "input_tokens", "max_output_tokens", "method"]].rename(
        columns={"input_tokens": "input tokens (est.)", "max_output_tokens": "output tokens (max)", "method": "how"})
    return H.table_html(shown) + f"<p>{int(cost.prompts.sum()):,} prompts; cost {H.escape(total)}</p>"


def explanations_html(explanations: Sequence[A.Explanation], scores: pd.DataFrame | None = None,
                      limit: int = 50) -> str:
    """The explanations (escaped), with each unit's scores when given, best first."""
    table = A.explanations_table(explanations)
    if scores is not None and len(scores):
        wide = scores.pivot_table(index=["unit", "basis"], columns="scorer", values="score").reset_index()
        table = table.merge(wide, on=["unit", "basis"], how="left")
        table = table.sort_values(wide.columns[-1], ascending=False)
    columns = ["unit", "basis", *[c for c in table.columns if c not in ("unit", "basis", "explainer", "explanation")],
               "explanation"]
    return H.table_html(table[columns].head(limit), "{:.2f}")


class AutointerpView(widgets.VBox):
    """Explain and score units: shows what it would send and cost, runs on the button, then draws each scorer's
    histogram of features against neurons and lists the explanations. `scores` and `explanations` hold the
    results for further cells."""

    def __init__(self, units: Sequence[A.UnitRecords], explainer: A.Explainer, scorers: Sequence[A.Scorer],
                 progress: bool = True) -> None:
        self.units, self.explainer, self.scorers, self.progress = list(units), explainer, list(scorers), progress
        self.explanations: list[A.Explanation] = []
        self.scores = pd.DataFrame()
        self.cost = A.estimate_cost(self.units, explainer, self.scorers)
        prompts = int(self.cost.prompts.sum())
        self.estimate = widgets.HTML(cost_html(self.cost))
        label = f"Send {prompts:,} prompts" if prompts else "Run (offline: nothing is sent)"
        self.button = widgets.Button(description=label, button_style="warning" if prompts else "primary",
                                     layout=widgets.Layout(width="auto"))
        self.button.on_click(lambda _: self.run())
        self.status = widgets.HTML()
        self.figures = widgets.VBox()
        self.table = widgets.HTML()
        super().__init__([self.estimate, self.button, self.status, self.figures, self.table])
        self.add_class("saekit-autointerp")

    def run(self) -> pd.DataFrame:
        """Explain every unit, score each explanation with every scorer; returns the scores."""
        self.button.disabled = True
        self.status.value = "explaining…"
        try:
            self.explanations = A.explain(self.units, self.explainer, progress=self.progress)
            parts = []
            for scorer in self.scorers:
                self.status.value = f"scoring: {H.escape(scorer.name)}…"
                parts.append(A.score(self.units, self.explanations, scorer, progress=self.progress))
            self.scores = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        except Exception as error:  # shown in the widget; the button comes back to try again
            self.status.value = f"<b>failed:</b> {H.escape(f'{type(error).__name__}: {error}')}"
            self.button.disabled = False
            raise
        self.status.value = f"{len(self.explanations)} units explained and scored"
        self.figures.children = tuple(FigureSlot(score_histogram(rows)) for _, rows in
                                      self.scores.groupby("scorer", sort=False)) if len(self.scores) else ()
        self.table.value = explanations_html(self.explanations, self.scores)
        return self.scores
