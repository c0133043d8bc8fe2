"""Figures of the specificity analyses (`saekit.analysis.specificity`): a unit's activation histogram stacked by
proxy value, the proxy's distribution where the unit fires and where it does not, and precision and recall by
activation level for a feature beside the best neuron.

    acts = unit_activations(model, text, sae, units=[f])
    proxy_histogram_figure(proxy_histogram(acts.column(f), acts.proxy(llr), acts.tokens), unit=f"feature {f}")
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go

from saekit.widgets import html as H

LINE_COLOURS = ("#ff7800", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")  # features orange, neurons blue


def _bucket_colours(table: pd.DataFrame, colorscale: str) -> dict[int, str]:
    """A colour per bucket, low proxy values at the scale's start and high ones at its end."""
    buckets = table.drop_duplicates("bucket").sort_values("bucket")
    if len(buckets) == 1:
        return {int(buckets["bucket"].iloc[0]): plotly.colors.sample_colorscale(colorscale, [1.0])[0]}
    positions = np.linspace(0.0, 1.0, len(buckets)).tolist()
    return dict(zip(buckets["bucket"].astype(int), plotly.colors.sample_colorscale(colorscale, positions)))


def _examples_text(examples: list[str]) -> str:
    return ", ".join(H.plotly_text(H.token_label(t)) for t in examples)


def proxy_histogram_figure(table: pd.DataFrame, *, unit: str = "unit", proxy: str = "proxy",
                           colorscale: str = "RdBu_r") -> go.Figure:
    """The paper's stacked histogram of a unit's activations (`proxy_histogram`): one bar per activation bin, its
    tokens stacked by proxy-value bucket, coloured from low (blue) to high (red) proxy values; hovering a bar names
    its bucket, count and most common tokens."""
    fig = go.Figure()
    colours = _bucket_colours(table, colorscale)
    proxy_text, unit_text = H.plotly_text(proxy), H.plotly_text(unit)
    for bucket, part in table.groupby("bucket", sort=True):
        low, high = float(part["bucket_start"].iloc[0]), float(part["bucket_end"].iloc[0])
        label = f"{proxy_text} {low:.3g} to {high:.3g}"
        hover = [f"activation {s:.3g} to {e:.3g}<br>{label}<br>{n:,} tokens"
                 + (f"<br>e.g. {_examples_text(ex)}" if len(ex) else "")
                 for s, e, n, ex in zip(part["bin_start"], part["bin_end"], part["count"], part["examples"])]
        fig.add_trace(go.Bar(x=(part["bin_start"] + part["bin_end"]) / 2, y=part["count"], name=label,
                             width=float(part["bin_end"].iloc[0] - part["bin_start"].iloc[0]),
                             marker_color=colours[int(bucket)], hovertext=hover,
                             hovertemplate="%{hovertext}<extra></extra>"))
    fig.update_layout(barmode="stack", bargap=0, title=f"{unit_text}: activations by {proxy_text}", height=380,
                      width=760, template="plotly_white", xaxis_title=f"activation of {unit_text} (firing tokens)",
                      yaxis_title="tokens", legend_title_text=proxy_text, margin=dict(l=50, r=10, t=60, b=45))
    return fig


def proxy_distribution_figure(table: pd.DataFrame, *, unit: str = "unit", proxy: str = "proxy") -> go.Figure:
    """The proxy's distribution on the tokens where the unit fires against where it does not (`proxy_distribution`),
    each as a fraction of its own tokens."""
    fig = go.Figure()
    unit_text, proxy_text = H.plotly_text(unit), H.plotly_text(proxy)
    for firing, colour in ((True, LINE_COLOURS[0]), (False, "#888")):
        part = table[table["firing"] == firing]
        label = f"{unit_text} {'fires' if firing else 'does not fire'} ({int(part['count'].sum()):,} tokens)"
        fig.add_trace(go.Bar(x=(part["bin_start"] + part["bin_end"]) / 2, y=part["fraction"], name=label,
                             width=float((part["bin_end"] - part["bin_start"]).iloc[0]) if len(part) else None,
                             marker_color=colour, opacity=0.6, customdata=part[["count"]].to_numpy(),
                             hovertemplate=f"{label}<br>{proxy_text} %{{x:.3g}}<br>%{{customdata[0]}} tokens"
                                           "<extra></extra>"))
    fig.update_layout(barmode="overlay", title=f"{proxy_text} where {unit_text} fires and where it does not",
                      height=360, width=760, template="plotly_white", xaxis_title=proxy_text,
                      yaxis_title="fraction of tokens", margin=dict(l=50, r=10, t=60, b=45))
    return fig


def tracking_figure(curves: Mapping[str, pd.DataFrame], *, proxy: str = "proxy") -> go.Figure:
    """Precision P(proxy | act ≥ t) (solid) and recall P(act ≥ t | proxy) (dashed) against the level t as a
    fraction of each unit's max, one colour per unit (`curves`: label → one unit's `tracking_curves` rows, e.g.
    {"feature 16": ..., "neuron 27": ...})."""
    fig = go.Figure()
    proxy_text = H.plotly_text(proxy)
    for i, (label, part) in enumerate(curves.items()):
        name, colour = H.plotly_text(label), LINE_COLOURS[i % len(LINE_COLOURS)]
        part = part.sort_values("level")
        custom = part[["threshold", "n_above"]].to_numpy()
        for measure, dash in (("precision", "solid"), ("recall", "dash")):
            fig.add_trace(go.Scatter(
                x=part["fraction"], y=part[measure], mode="lines+markers", name=f"{name} {measure}",
                legendgroup=name, line=dict(color=colour, dash=dash), customdata=custom,
                hovertemplate=f"{name}<br>act ≥ %{{customdata[0]:.3g}} (%{{x:.2f}} of max)<br>{measure} %{{y:.3f}}"
                              "<br>%{customdata[1]:,} tokens above<extra></extra>"))
    fig.update_layout(title=f"tracking {proxy_text}: precision (solid) and recall (dashed) by activation level",
                      height=380, width=760, template="plotly_white", yaxis_range=[-0.02, 1.02],
                      xaxis_title="activation level (fraction of the unit's max; 0: fires)",
                      yaxis_title="precision / recall", margin=dict(l=50, r=10, t=60, b=45))
    return fig
