"""Steering: pick a feature and a strength, generate from a prompt with and without the feature pinned,
and see how the next-token distribution shifts (`saekit.analysis.steering`).

    SteeringView(model, sae, store=store, prompt="The license")
"""

from __future__ import annotations

from typing import Any, NamedTuple

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from saekit.activations.nnsight_api import load_model
from saekit.analysis.features import FeatureStore
from saekit.analysis.steering import (
    MODES,
    FeatureEdit,
    SteeringResult,
    next_token_shift,
    steer_generate,
    steering_problem,
)
from saekit.errors import InputError
from saekit.saes.dictionary import Dictionary
from saekit.widgets import html as H
from saekit.widgets.figure_slot import FigureSlot

SLIDER_RANGE = 30.0  # the slider reaches this multiple of the feature's largest activation on real text
DEFAULT_STRENGTH = 10.0  # and starts at this multiple


def shift_figure(shift: pd.DataFrame, title: str = "next-token probability shift") -> go.Figure:
    """Bars of `next_token_shift` output: each token's change in probability (raised green, lowered red)."""
    table = shift.sort_values("delta")
    labels = [H.plotly_text(H.token_label(t)) for t in table["token"]]
    fig = go.Figure(go.Bar(
        x=table["delta"], y=labels, orientation="h",
        marker_color=["#1a7f37" if d > 0 else "#cf222e" for d in table["delta"]],
        customdata=table[["p_before", "p_after"]].to_numpy(),
        hovertemplate="%{y}<br>before %{customdata[0]:.4f}<br>after %{customdata[1]:.4f}<br>Δ %{x:+.4f}"
                      "<extra></extra>"))
    fig.update_layout(title=title, height=max(260, 22 * len(table) + 80), width=560, template="plotly_white",
                      xaxis_title="p(after) − p(before)", margin=dict(l=110, r=10, t=40, b=40),
                      yaxis=dict(type="category"))
    return fig


def continuations_html(result: SteeringResult, edit: FeatureEdit) -> str:
    """The clean and the steered continuation side by side, the prompt in grey, all escaped."""
    def box(title: str, text: str) -> str:
        return (f"<div style='flex:1;border:1px solid #ddd;border-radius:4px;padding:6px'><b>{H.escape(title)}</b>"
                f"<div style='font-family:monospace;white-space:pre-wrap;font-size:12px'>"
                f"<span style='color:#888'>{H.escape(result.prompt)}</span>{H.escape(text)}</div></div>")
    steered = f"feature {edit.feature} {edit.mode} {edit.value:g}" if edit.mode != "ablate" else (
        f"feature {edit.feature} ablated")
    return (f"<div class='saekit-continuations' style='display:flex;gap:10px'>{box('clean', result.clean)}"
            f"{box(steered, result.steered)}</div>")


class SteeringRun(NamedTuple):
    """What one click of "generate" computed."""

    edit: FeatureEdit
    result: SteeringResult
    shift: pd.DataFrame


class SteeringView(widgets.VBox):
    """Feature picker, strength slider, mode, prompt and a generate button; shows both continuations and
    the next-token shift. `run()` does what the button does and returns a SteeringRun. A model that cannot be
    steered (no language-model head) gets a note saying why and a disabled button."""

    def __init__(self, model: Any, sae: Dictionary, *, store: FeatureStore | None = None, feature: int = 0,
                 prompt: str = "The", value: float | None = None, mode: str = "pin", max_new_tokens: int = 20,
                 k: int = 10) -> None:
        self.model, self.sae, self.store, self.k = load_model(model), sae, store, k
        self.problem = steering_problem(self.model, sae)
        self.feature_box = widgets.BoundedIntText(value=feature, min=0, max=sae.d_sae - 1, description="feature",
                                                  layout=widgets.Layout(width="180px"))
        self.feature_note = widgets.HTML()
        self.strength = widgets.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.01, description="strength",
                                            continuous_update=False, readout_format=".2f",
                                            layout=widgets.Layout(width="420px"))
        self.mode_picker = widgets.Dropdown(options=list(MODES), value=mode, description="mode",
                                            layout=widgets.Layout(width="180px"))
        self.prompt_box = widgets.Textarea(value=prompt, description="prompt", layout=widgets.Layout(width="600px"))
        self.length = widgets.IntSlider(value=max_new_tokens, min=1, max=64, description="new tokens")
        self.button = widgets.Button(description="generate", icon="play", button_style="primary")
        self.output = widgets.HTML()
        self.slot = FigureSlot(shift_figure(pd.DataFrame(columns=["token", "p_before", "p_after", "delta"])))
        self.table = widgets.HTML()
        self.last: SteeringRun | None = None
        self._tokens: pd.Series | None = None
        self.feature_box.observe(lambda change: self._feature_changed(), names="value")
        self.button.on_click(lambda _: self.run())
        super().__init__([widgets.HBox([self.feature_box, self.feature_note]),
                          widgets.HBox([self.strength, self.mode_picker]), self.prompt_box,
                          widgets.HBox([self.length, self.button]), self.output,
                          widgets.HBox([self.slot, self.table])])
        self.add_class("saekit-steering")
        self._feature_changed()
        if value is not None:
            self.strength.max = max(self.strength.max, float(value))
            self.strength.value = float(value)
        if self.problem:
            self.button.disabled = True
            self.output.value = f"<div class='saekit-note' style='color:#9a6700'>{H.escape(self.problem)}</div>"

    def _feature_changed(self) -> None:
        """Rescale the slider to the feature's activation range: up to SLIDER_RANGE × its max, starting
        at DEFAULT_STRENGTH × (without a store: 0..30, starting at 10)."""
        feature = self.feature_box.value
        scale = 1.0
        if self.store is not None:
            row = self.store.features.iloc[feature]
            scale = float(row.max_activation) if row.max_activation > 0 else 1.0
            token = self._top_tokens().get(feature)
            boosts = self.store.logit_effects(feature)
            boosts = boosts[boosts["direction"] == "boost"]["token"].head(5)
            self.feature_note.value = (f"max activation {row.max_activation:.3g} · fires most on "
                                       f"{H.escape(H.token_label(token)) if isinstance(token, str) else '(never)'}"
                                       f" · boosts {H.escape(', '.join(H.token_label(t) for t in boosts))}")
        top = SLIDER_RANGE * scale
        self.strength.max = round(top, 2)
        self.strength.step = round(top / 300, 4) or 0.01
        self.strength.value = round(DEFAULT_STRENGTH * scale, 2)

    @property
    def figure(self) -> go.FigureWidget:
        """The shift figure now shown."""
        return self.slot.figure

    def _top_tokens(self) -> pd.Series:
        if self._tokens is None:
            self._tokens = self.store.feature_table().set_index("feature")["top_token"]
        return self._tokens

    def edit(self) -> FeatureEdit:
        """The edit the controls describe."""
        return FeatureEdit(int(self.feature_box.value), float(self.strength.value), self.mode_picker.value)

    def run(self) -> SteeringRun:
        """Generate with and without the edit, and measure the next-token shift after the prompt (an InputError
        saying why where the model cannot be steered, as the widget shows)."""
        if self.problem:
            raise InputError(self.problem)
        edit, prompt = self.edit(), self.prompt_box.value
        result = steer_generate(self.model, self.sae, prompt, edit, max_new_tokens=int(self.length.value))
        shift = next_token_shift(self.model, self.sae, prompt, edit, k=self.k)
        self.output.value = continuations_html(result, edit)
        self.slot.show(shift_figure(shift))
        self.table.value = H.table_html(shift.drop(columns="token_id").assign(
            token=[H.token_label(t) for t in shift["token"]]))
        self.last = SteeringRun(edit, result, shift)
        return self.last
