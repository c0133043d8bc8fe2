"""Static figures of the paper's headline results, each with the paper's own number drawn next to ours:
feature density, reconstruction and loss recovered across sizes, and features vs neurons on an
interpretability measure. (Universality, splitting and steering reuse their views' figure functions.)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saekit.widgets import html as H

PAPER_DENSITY = "paper, A/1 (4,096 features): 168 dead, 292 below 1e-6"
PAPER_LOSS_RECOVERED = {"A/1 (4,096)": 0.79, "largest (131,072)": 0.945}
BASIS_COLOURS = {"features": "#ff7800", "neurons": "#1f77b4"}


def example_features(table: pd.DataFrame, low: float = 1e-3, high: float = 5e-2) -> pd.DataFrame:
    """Features to show off, from `FeatureStore.feature_table()`: the live ones, most specific first (most
    of their top examples on one token), preferring densities in [low, high] (frequent enough to see, rare
    enough to mean one thing) when any are there."""
    live = table[table["n_fires"] > 0]
    band = live[live["density"].between(low, high)]
    chosen = band if len(band) else live
    return chosen.sort_values(["top_token_share", "density", "feature"], ascending=[False, True, True],
                              ignore_index=True)


def density_counts(density: np.ndarray, ultralow: float = 1e-6) -> dict[str, int]:
    """How many features are dead (never fired), ultralow (fired, below `ultralow`) and alive."""
    density = np.asarray(density, dtype=np.float64)
    dead = int((density == 0).sum())
    low = int(((density > 0) & (density < ultralow)).sum())
    return {"features": len(density), "dead": dead, "ultralow": low, "alive": len(density) - dead - low}


def density_figure(density: np.ndarray, *, name: str = "A/1", n_tokens: int | None = None, ultralow: float = 1e-6,
                   reference: str | None = PAPER_DENSITY, bins: int = 50) -> go.Figure:
    """Histogram of log10 feature density; features that never fired are stacked in a separate bar on
    the left. `n_tokens` (tokens the densities were measured on) marks the resolution 1/n_tokens."""
    density = np.asarray(density, dtype=np.float64)
    counts = density_counts(density, ultralow)
    live = np.log10(density[density > 0])
    lowest = min(live.min() if live.size else -6.0, np.log10(ultralow))
    dead_x = np.floor(lowest) - 1
    fig = go.Figure(go.Histogram(x=live, nbinsx=bins, marker_color="#ff7800", name="fired",
                                 hovertemplate="log10 density %{x}<br>%{y} features<extra></extra>"))
    fig.add_trace(go.Bar(x=[dead_x], y=[counts["dead"]], width=0.3, marker_color="#555", name="never fired",
                         hovertemplate="never fired: %{y} features<extra></extra>"))
    fig.add_vline(x=np.log10(ultralow), line=dict(dash="dot", color="#999"),
                  annotation_text=f"{ultralow:g}", annotation_position="top right")
    if n_tokens:
        fig.add_vline(x=-np.log10(n_tokens), line=dict(dash="dash", color="#bbb"),
                      annotation_text=f"1 / {n_tokens:,} tokens", annotation_position="bottom right")
    text = (f"{H.plotly_text(name)}: {counts['dead']} never fired, {counts['ultralow']} below {ultralow:g}, "
            f"of {counts['features']:,}")
    if reference:
        text += f"<br>{H.plotly_text(reference)}"
    fig.update_layout(title=dict(text=f"feature density<br><sup>{text}</sup>"), height=400, width=720,
                      template="plotly_white", bargap=0.02, xaxis_title="log10(feature density)",
                      yaxis_title="features", margin=dict(l=50, r=10, t=80, b=45),
                      xaxis=dict(tickvals=[dead_x, *range(int(dead_x) + 1, 1)],
                                 ticktext=["dead", *[str(v) for v in range(int(dead_x) + 1, 1)]]))
    return fig


def sweep_figure(table: pd.DataFrame, reference: Mapping[str, float] | None = None) -> go.Figure:
    """Loss recovered and FVU against dictionary size, one line per (model, arch), from an evaluation
    table (columns model, arch, n_features, loss_recovered, fvu, l0); `reference` values are dotted lines."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss recovered", "fraction of variance unexplained"))
    for (model, arch), part in table.sort_values("n_features").groupby(["model", "arch"], sort=True):
        label = H.plotly_text(f"model {model}, {arch}")
        custom = part[["l0"]].to_numpy() if "l0" in part else None
        for col, metric in ((1, "loss_recovered"), (2, "fvu")):
            fig.add_trace(go.Scatter(x=part["n_features"], y=part[metric], mode="lines+markers", name=label,
                                     legendgroup=label, showlegend=col == 1, customdata=custom,
                                     hovertemplate=f"{label}<br>%{{x:,}} features<br>{metric} %{{y:.3f}}"
                                     + ("<br>L0 %{customdata[0]:.1f}" if custom is not None else "")
                                     + "<extra></extra>"), row=1, col=col)
    for label, value in (reference or {}).items():
        fig.add_hline(y=value, line=dict(dash="dot", color="#888"),
                      annotation_text=f"paper {H.plotly_text(label)}: {value:.1%}",
                      annotation_position="bottom right", row=1, col=1)
    fig.update_xaxes(type="log", title_text="features")
    fig.update_layout(height=400, width=900, template="plotly_white", margin=dict(l=50, r=10, t=50, b=45))
    return fig


def measures_figure(measures: Mapping[str, pd.DataFrame], measure: str = "top_token_share", bins: int = 30
                    ) -> go.Figure:
    """Overlaid histograms of one interpretability measure (`unit_measures` tables, e.g. features and
    neurons), with each basis's median in the legend."""
    fig = go.Figure()
    for name, table in measures.items():
        values = table[measure].dropna()
        fig.add_trace(go.Histogram(x=values, nbinsx=bins, histnorm="probability", opacity=0.6,
                                   name=f"{H.plotly_text(name)} (median {values.median():.2f})",
                                   marker_color=BASIS_COLOURS.get(name)))
    shown = H.plotly_text(measure)
    fig.update_layout(barmode="overlay", title=f"{shown.replace('_', ' ')}: features vs neurons", height=380,
                      width=720, template="plotly_white", xaxis_title=shown, yaxis_title="fraction of units",
                      margin=dict(l=50, r=10, t=50, b=45))
    return fig
