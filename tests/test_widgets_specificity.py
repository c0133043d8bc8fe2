"""The specificity figures: the traces each one draws, and markup in corpus tokens, labels and proxy names shown as
text (every payload of the escaping tests)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("plotly")

from test_escaping import assert_safe_figure  # noqa: E402

from saekit.analysis.specificity import proxy_distribution, proxy_histogram, tracking_curves  # noqa: E402
from saekit.widgets import html as H  # noqa: E402
from saekit.widgets.specificity import (  # noqa: E402
    proxy_distribution_figure,
    proxy_histogram_figure,
    tracking_figure,
)

from helpers import PAYLOAD_IDS, PAYLOADS  # noqa: E402

each_payload = pytest.mark.parametrize("payload", PAYLOADS, ids=PAYLOAD_IDS)


def unit_data(payload: str, n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A unit's activations, a proxy's values and the tokens, the payload the commonest token where both are high."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 1, n)
    acts = np.where(rng.random(n) < 0.6, rng.exponential(1.0, n) + 2 * values, 0.0)
    tokens = [payload if v > 0.5 else f"w{i % 5}" for i, v in enumerate(values)]
    return acts, values, tokens


@each_payload
def test_stacked_histogram_draws_one_bar_trace_per_bucket_and_escapes_tokens(payload):
    acts, values, tokens = unit_data(payload)
    table = proxy_histogram(acts, values, tokens, bins=12, buckets=4)
    fig = proxy_histogram_figure(table, unit=f"feature {payload}", proxy=f"proxy {payload}")
    assert fig.layout.barmode == "stack" and len(fig.data) == 4
    for bucket, trace in enumerate(fig.data):
        assert trace.type == "bar"
        assert list(trace.y) == table[table["bucket"] == bucket]["count"].tolist()
    assert sum(sum(trace.y) for trace in fig.data) == (acts > 0).sum()
    colours = [trace.marker.color for trace in fig.data]
    assert len(set(colours)) == 4  # low to high proxy values, each its own colour
    hovers = "".join(text for trace in fig.data for text in trace.hovertext)
    assert H.plotly_text(H.token_label(payload)) in hovers
    assert_safe_figure(fig, payload)


@each_payload
def test_distribution_figure_draws_firing_against_not_firing(payload):
    acts, values, _ = unit_data(payload)
    table = proxy_distribution(acts, values, bins=10, value_range=(0, 1))
    fig = proxy_distribution_figure(table, unit=payload, proxy=payload)
    assert [trace.type for trace in fig.data] == ["bar", "bar"] and fig.layout.barmode == "overlay"
    firing, silent = fig.data
    assert sum(firing.y) == pytest.approx(1.0) and sum(silent.y) == pytest.approx(1.0)
    assert f"({(acts > 0).sum():,} tokens)" in firing.name and f"({(acts == 0).sum():,} tokens)" in silent.name
    assert_safe_figure(fig, payload)


@each_payload
def test_tracking_figure_draws_precision_and_recall_per_unit(payload):
    acts, values, _ = unit_data(payload)
    holds = values > 0.5
    curves = tracking_curves(np.stack([acts, np.where(acts > 0, acts + 5 * ~holds, 0)], 1), holds)
    fig = tracking_figure({f"feature {payload}": curves[curves["unit"] == 0], "neuron 7": curves[curves["unit"] == 1]},
                          proxy=payload)
    assert len(fig.data) == 4
    names = [trace.name for trace in fig.data]
    assert names[2:] == ["neuron 7 precision", "neuron 7 recall"]
    assert [trace.line.dash for trace in fig.data] == ["solid", "dash"] * 2
    feature_precision = fig.data[0]
    expected = curves[curves["unit"] == 0].sort_values("level")["precision"].to_numpy()
    np.testing.assert_allclose(np.array(feature_precision.y, dtype=float), expected)
    assert_safe_figure(fig, payload)
