"""Figures of crosscoder model diffing (`saekit.analysis.crosscoders`): the relative decoder norm histogram, and
the crosscoder's kinds beside the paper's correlation matching."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from saekit.analysis.crosscoders import relative_norm_histogram
from saekit.widgets import html as H


def relative_norm_figure(norms: pd.DataFrame, models: tuple[str, str] = ("A", "B"), bins: int = 40,
                         title: str = "crosscoder features by relative decoder norm") -> go.Figure:
    """Histogram of `relative_norms(...)`'s relative norm: 0 a feature only the first model uses, 1 only the second,
    ½ shared (the crosscoder paper's figure)."""
    hist = relative_norm_histogram(norms, bins)
    a, b = (H.plotly_text(m) for m in models)
    fig = go.Figure(go.Bar(x=(hist["bin_start"] + hist["bin_end"]) / 2, y=hist["count"], width=1 / bins,
                           hovertemplate="relative norm %{x:.2f}<br>%{y} features<extra></extra>"))
    fig.update_layout(title=H.plotly_text(title), height=340, width=720, template="plotly_white",
                      xaxis_title=f"‖W_dec^{b}‖ / (‖W_dec^{a}‖ + ‖W_dec^{b}‖)   (0: {a} only, 1: {b} only)",
                      yaxis_title="features", xaxis_range=[-0.02, 1.02], margin=dict(l=50, r=10, t=60, b=45))
    return fig


def matching_figure(comparison: pd.DataFrame,
                    title: str = "crosscoder kinds against correlation matching") -> go.Figure:
    """Box plots of the best-match correlation (A/1 → B/1) of each crosscoder feature's nearest A/1 feature, per
    crosscoder kind (`compare_with_matching`)."""
    fig = go.Figure()
    for kind, part in comparison.dropna(subset=["best_match_correlation"]).groupby("kind"):
        fig.add_trace(go.Box(y=part["best_match_correlation"], name=f"{H.plotly_text(kind)} ({len(part)})",
                             boxpoints=False))
    fig.update_layout(title=H.plotly_text(title), height=340, width=720, template="plotly_white",
                      yaxis_title="best-match correlation of the nearest A/1 feature", showlegend=False,
                      margin=dict(l=50, r=10, t=60, b=45))
    return fig
