"""The feature card: everything about one feature (or neuron) of a FeatureStore, as one widget.

Shared by the explorer and the universality pair viewer. The card reads the store (density,
histogram, examples, logit effects); with the model and dictionary it also colours every context
token by its activation and lists the nearest features by decoder cosine (both computed in
`saekit.analysis.browsing`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from saekit.analysis import browsing
from saekit.analysis.features import FeatureStore
from saekit.saes.dictionary import Dictionary, Neurons
from saekit.widgets import html as H


class Basis(NamedTuple):
    """A set of units to browse: their store, the dictionary that made it and the model it reads."""

    store: FeatureStore
    dictionary: Dictionary | None = None  # an SAE or Neurons; None: no context colouring, no nearest features
    model: Any = None  # the nnsight model the store was built on; None: no context colouring


HIST_CLASS = "saekit-histogram"
HIST_BAR = "saekit-hist-bar"


def as_basis(store: FeatureStore | Basis, dictionary: Dictionary | None = None, model: Any = None) -> Basis:
    """A Basis from a store; a neuron store gets the identity dictionary (`Neurons`) by default."""
    if isinstance(store, Basis):
        store, dictionary, model = store.store, store.dictionary or dictionary, store.model or model
    if dictionary is None and store.meta.get("kind") == "neurons":
        dictionary = Neurons(store.n_features)
    return Basis(store, dictionary, model)


def close_children(box: widgets.Box) -> None:
    """Close a box's children before it gets new ones, so replaced widgets leave the kernel and the notebook's
    saved widget state instead of piling up with every feature opened."""
    for child in box.children:
        child.close()
    box.children = ()


def unit_word(basis: Basis) -> str:
    return "neuron" if basis.store.meta.get("kind") == "neurons" else "feature"


# --- pieces, as plain values (usable without widgets) ------------------------------------------------


def histogram_figure(hist: pd.DataFrame, title: str = "activation histogram") -> go.Figure:
    """Bars of `FeatureStore.histogram(i)` (counts of the feature's non-zero activations) on a log count axis,
    its fine bins merged into about √count bars (10 to 50): the strong tail stays visible beside the many weak
    activations, and rare features read as a shape rather than scattered slivers."""
    hist = merge_bins(hist, bars_for(int(hist["count"].sum()) if len(hist) else 0))
    centres = (hist["bin_start"] + hist["bin_end"]) / 2 if len(hist) else []
    width = (hist["bin_end"] - hist["bin_start"]).to_numpy() if len(hist) else None
    fig = go.Figure(go.Bar(x=centres, y=hist["count"] if len(hist) else [], width=width, marker_color="#ff7800",
                           customdata=hist[["bin_start", "bin_end"]].to_numpy() if len(hist) else None,
                           hovertemplate="activation %{customdata[0]:.3g} to %{customdata[1]:.3g}<br>"
                                         "count %{y}<extra></extra>"))
    fig.update_layout(title=title, height=230, width=380, margin=dict(l=40, r=10, t=35, b=30), bargap=0.05,
                      xaxis_title="activation", yaxis_title="count (log)", template="plotly_white")
    fig.update_yaxes(type="log", dtick=1)  # counts fall by orders of magnitude from weak to strong activations
    return fig


def histogram_html(hist: pd.DataFrame, title: str = "activation histogram") -> str:
    """The same bars as `histogram_figure`, drawn as plain HTML boxes (log count heights, the bin and count in each
    bar's tooltip). The card shows this rather than a FigureWidget: every FigureWidget carries plotly.js (~5 MB)
    in the notebook's saved widget state, while this is a few kB and renders wherever HTML does."""
    hist = merge_bins(hist, bars_for(int(hist["count"].sum()) if len(hist) else 0))
    counts = hist["count"].to_numpy() if len(hist) else np.zeros(0)
    top = max(1.0, math.log10(max(1, int(counts.max()) if len(counts) else 1)) + 1)  # decades on the axis
    bars = []
    for start, end, count in zip(hist["bin_start"], hist["bin_end"], counts) if len(hist) else ():
        height = 0.0 if count <= 0 else 100 * (math.log10(count) + 1) / top  # one decade below 1 so 1 shows
        tip = H.escape(f"activation {start:.3g} to {end:.3g}, count {int(count):,}")
        bars.append(f"<div class='{HIST_BAR}' title='{tip}' style='flex:1 1 0;height:{height:.1f}%;"
                    f"background:#ff7800;margin:0 1px;min-width:1px'></div>")
    low = f"{hist['bin_start'].iloc[0]:.3g}" if len(hist) else "0"
    high = f"{hist['bin_end'].iloc[-1]:.3g}" if len(hist) else "0"
    ticks = "".join(f"<div style='position:absolute;right:2px;bottom:{100 * (d + 1) / top:.1f}%;font-size:9px;"
                    f"color:#777;transform:translateY(50%)'>{10 ** d:,}</div>" for d in range(int(top)))
    return (f"<div class='{HIST_CLASS}' style='width:370px;font-family:sans-serif;font-size:11px;color:#333'>"
            f"<div style='font-size:13px;margin:4px 0'>{H.escape(title)}</div>"
            f"<div style='display:flex'><div style='position:relative;width:30px;height:160px'>{ticks}</div>"
            f"<div style='flex:1;display:flex;align-items:flex-end;height:160px;border-left:1px solid #999;"
            f"border-bottom:1px solid #999'>{''.join(bars)}</div></div>"
            f"<div style='display:flex;justify-content:space-between;margin-left:30px;color:#777'><span>{low}</span>"
            f"<span>activation (count on a log scale)</span><span>{high}</span></div></div>")


def bars_for(count: int, fewest: int = 10, most: int = 50) -> int:
    """How many bars a histogram of `count` values gets: about √count, between `fewest` and `most`."""
    return int(min(most, max(fewest, round(math.sqrt(count)))))


def merge_bins(hist: pd.DataFrame, bars: int) -> pd.DataFrame:
    """Equal-width bins (bin_start, bin_end, count) merged in runs of adjacent ones into at most `bars`."""
    if len(hist) <= bars:
        return hist
    group = np.arange(len(hist)) // math.ceil(len(hist) / bars)
    return hist.groupby(group).agg(bin_start=("bin_start", "min"), bin_end=("bin_end", "max"),
                                   count=("count", "sum")).reset_index(drop=True)


def logit_html(effects: pd.DataFrame, note: str | None = None) -> str:
    """Top boosted and suppressed tokens of `FeatureStore.logit_effects(i)`, side by side, escaped."""
    if effects.empty:
        return H.heading("logit effects") + f"<div style='color:#777'>{H.escape(note or 'none stored')}</div>"
    columns = []
    for direction, colour in (("boost", "#1a7f37"), ("suppress", "#cf222e")):
        rows = effects[effects["direction"] == direction]
        items = "".join(
            f"<div style='font-family:monospace;font-size:12px'><span style='color:{colour}'>{r.logit:+.2f}</span> "
            f"{H.escape(H.token_label(r.token))}</div>" for r in rows.itertuples(index=False))
        columns.append(f"<div style='flex:1;min-width:9em'><b>{direction}</b>{items}</div>")
    return H.heading("logit effects") + f"<div style='display:flex;gap:12px'>{''.join(columns)}</div>"


def summary_html(basis: Basis, feature: int, name: str = "") -> str:
    """The card's header: which unit, its density and activation range."""
    store = basis.store
    row = store.features.iloc[feature]
    n_tokens = int(store.meta.get("n_tokens", 0))
    title = f"{name} {unit_word(basis)} {feature}".strip()
    facts = (f"density {row.density:.3g} (fires on {int(row.n_fires):,} of {n_tokens:,} tokens) · "
             f"max activation {row.max_activation:.3g} · mean {row.mean_activation:.3g}")
    if int(row.n_fires) == 0:
        facts += " · <b>dead</b>: it never fired on this text"
    return H.heading(title, 3) + f"<div class='saekit-facts' style='color:#333'>{facts}</div>"


def interval_html(examples: pd.DataFrame, scale: float, values: list[np.ndarray] | None) -> str:
    """Interval examples grouped under their activation range, highest interval first."""
    if examples.empty:
        return "<div style='color:#777'>no examples</div>"
    parts = []
    offsets = np.arange(len(examples))
    for interval in sorted(examples["interval"].unique(), reverse=True):
        mask = (examples["interval"] == interval).to_numpy()
        rows = examples[mask]
        first = rows.iloc[0]
        label = (f"interval {int(interval)}: [{first.interval_start:.3g}, {first.interval_end:.3g}) · "
                 f"{int(first.interval_count):,} activations")
        shown = None if values is None else [values[i] for i in offsets[mask]]
        parts.append(f"<div style='color:#555;font-size:11px;margin-top:4px'>{H.escape(label)}</div>"
                     + H.examples_html(rows, scale, shown))
    return "".join(parts)


def card_html(basis: Basis, feature: int, *, n_top: int = 10, n_per_interval: int = 2, context: int = 12,
              name: str = "") -> dict[str, str]:
    """The card's HTML parts (summary, logits, top, intervals) for one feature."""
    store = basis.store
    top = store.top_examples(feature, context).head(n_top)
    intervals = store.interval_examples(feature, context)
    intervals = intervals[intervals["sample"] < n_per_interval].reset_index(drop=True)
    scale = float(store.features["max_activation"].iloc[feature])
    examples = pd.concat([top, intervals], ignore_index=True) if not intervals.empty else top
    values = browsing.context_values(store, basis.dictionary, basis.model, feature, examples)
    top_values = None if values is None else values[: len(top)]
    interval_values = None if values is None else values[len(top):]
    return {
        "summary": summary_html(basis, feature, name),
        "logits": logit_html(store.logit_effects(feature), store.meta.get("logit_effects_note")),
        "top": H.heading(f"top activations ({len(top)})") + H.examples_html(top, scale, top_values),
        "intervals": H.heading("examples across activation intervals")
        + interval_html(intervals, scale, interval_values),
    }


class HistogramView(widgets.HTML):
    """The card's histogram as `histogram_html`; `figure` is the same histogram as a plotly figure (built on
    request, never sent to the browser), e.g. to open it larger with `go.FigureWidget(view.figure)`."""

    def __init__(self) -> None:
        super().__init__()
        self._hist = pd.DataFrame(columns=["bin_start", "bin_end", "count"])
        self._title = "activation histogram"
        self.show(self._hist, self._title)

    def show(self, hist: pd.DataFrame, title: str = "activation histogram") -> None:
        self._hist, self._title = hist, title
        self.value = histogram_html(hist, title)

    @property
    def figure(self) -> go.Figure:
        return histogram_figure(self._hist, self._title)


# --- the widget ------------------------------------------------------------------------------------


class FeatureCard(widgets.VBox):
    """One feature's card: summary, histogram, logit effects, top and interval examples, nearest features.

    `show(basis, feature)` fills it; clicking a nearest feature calls the `on_select` callbacks.
    """

    def __init__(self, *, n_top: int = 10, n_per_interval: int = 2, context: int = 12, n_nearest: int = 8) -> None:
        self.n_top, self.n_per_interval, self.context, self.n_nearest = n_top, n_per_interval, context, n_nearest
        self.summary, self.logits, self.top, self.intervals = (widgets.HTML() for _ in range(4))
        self.histogram = HistogramView()
        self.nearest_title = widgets.HTML()
        self.nearest = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.nearest.add_class("saekit-nearest")
        self.basis: Basis | None = None
        self.feature: int | None = None
        self._callbacks: list[Callable[[int], None]] = []
        self._labels: dict[int, pd.Series] = {}
        side = widgets.VBox([self.logits], layout=widgets.Layout(width="45%"))
        super().__init__([self.summary, widgets.HBox([self.histogram, side]), self.nearest_title, self.nearest,
                          self.top, self.intervals], layout=widgets.Layout(flex="1 1 0%", min_width="0",
                                                                           overflow="hidden"))
        self.add_class("saekit-card")

    def on_select(self, callback: Callable[[int], None]) -> None:
        """Call `callback(feature)` when a nearest feature is clicked."""
        self._callbacks.append(callback)

    def show(self, basis: Basis, feature: int, name: str = "") -> None:
        """Fill the card with `feature` of `basis`."""
        store = basis.store
        if not 0 <= feature < store.n_features:
            raise IndexError(f"{unit_word(basis)} {feature} is out of range; there are {store.n_features}")
        self.basis, self.feature = basis, int(feature)
        parts = card_html(basis, feature, n_top=self.n_top, n_per_interval=self.n_per_interval,
                          context=self.context, name=name)
        for key, widget in (("logits", self.logits), ("top", self.top), ("intervals", self.intervals),
                            ("summary", self.summary)):  # the title last: once it names the feature, all is sent
            widget.value = parts[key]
        self._show_histogram(store.histogram(feature))
        self._show_nearest(basis, feature)

    def _show_histogram(self, hist: pd.DataFrame) -> None:
        total = int(hist["count"].sum()) if len(hist) else 0
        self.histogram.show(hist, f"activation histogram ({total:,})")

    def _label(self, basis: Basis, feature: int) -> str:
        key = id(basis.store)
        if key not in self._labels:
            self._labels[key] = basis.store.feature_table().set_index("feature")["top_token"]
        token = self._labels[key].get(feature)
        return H.token_label(token) if isinstance(token, str) else "dead"

    def _show_nearest(self, basis: Basis, feature: int) -> None:
        near = browsing.nearest_features(basis.dictionary, feature, self.n_nearest)
        close_children(self.nearest)
        if near.empty:
            self.nearest_title.value = ""
            self.nearest.children = ()
            return
        self.nearest_title.value = H.heading("nearest features by decoder cosine (click to open)")
        buttons = []
        for row in near.itertuples(index=False):
            label = f"#{int(row.feature)} {row.cosine:.2f} {self._label(basis, int(row.feature))}"
            button = widgets.Button(description=label,
                                    tooltip=f"feature {int(row.feature)}, decoder cosine {row.cosine:.3f}",
                                    layout=widgets.Layout(width="auto"))
            button.feature = int(row.feature)
            button.on_click(self._clicked)
            buttons.append(button)
        self.nearest.children = tuple(buttons)

    def _clicked(self, button: widgets.Button) -> None:
        for callback in self._callbacks:
            callback(button.feature)
