"""Automata of features: a chain of features that hand off to each other, drawn as a graph (features as nodes
labelled with the tokens they fire on, hand-off scores on the edges), and the text where it runs, each token
coloured by the chain's feature that fires on it (`saekit.analysis.automata`).

    chains = find_chains(handoff_edges(store, sae, model), store)
    AutomatonView(chains, store, sae, model)          # or AutomatonView(topic_chains(..., "base64"), ...)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from saekit.analysis.automata import Chain, ChainConfirmation, TopicChains, confirm_chain
from saekit.analysis.features import FeatureStore
from saekit.saes.dictionary import Dictionary
from saekit.widgets import html as H
from saekit.widgets.figure_slot import FigureSlot

# one colour per state of a chain (cycled beyond twelve)
PALETTE = [(255, 120, 0), (31, 119, 180), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (23, 190, 207), (188, 189, 34), (127, 127, 127), (174, 199, 232), (255, 187, 120)]


def state_colour(state: int, alpha: float = 1.0) -> str:
    r, g, b = PALETTE[state % len(PALETTE)]
    return f"rgba({r},{g},{b},{alpha:.3f})"


def chain_label(chain: Chain) -> str:
    """A one-line plain-text name of a chain (for pickers): its features, margin and first tokens."""
    tokens = " → ".join(H.token_label(labels[0]) if labels else "·" for labels in chain.labels)
    return (f"{' → '.join(f'#{f}' for f in chain.features)} · margin {chain.margin:.3g} · weakest "
            f"{chain.weakest:.3g} · {tokens}")


def chain_figure(chain: Chain, title: str | None = None) -> go.Figure:
    """The chain's states left to right, each labelled with the tokens it fires on; an arrow per hand-off with its
    score (a cycle's closing hand-off arcs back below, a feature handing off to itself loops above it)."""
    n = len(chain.states)
    index = {f: i for i, f in enumerate(chain.states)}
    top = max(max(chain.scores), 1e-12)
    fig = go.Figure()
    label_x, label_y, label_text = [], [], []
    for source, target, score in zip(chain.features[:-1], chain.features[1:], chain.scores):
        x, y = _edge_path(index[source], index[target])
        width = 1.5 + 5 * max(score, 0) / top
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", hoverinfo="skip", showlegend=False,
            line=dict(color="rgba(90,90,90,0.7)", width=width, shape="spline"),
            marker=dict(symbol="arrow", angleref="previous", size=[0] * (len(x) - 1) + [14],
                        color="rgba(90,90,90,0.9)")))
        middle = len(x) // 2
        label_x.append(x[middle])
        label_y.append(y[middle] + (0.08 if y[middle] >= 0 else -0.08))
        label_text.append(f"{score:.3g}")
    fig.add_trace(go.Scatter(x=label_x, y=label_y, mode="text", text=label_text, hoverinfo="skip",
                             showlegend=False, textfont=dict(size=11, color="#444")))
    text = [f"#{f}<br>{H.plotly_text(_tokens(chain.labels[i]))}" for i, f in enumerate(chain.states)]
    hover = [f"<b>feature {f}</b> (step {i})<br>fires on: {H.plotly_text(_tokens(chain.labels[i]))}<br>"
             f"boosts: {H.plotly_text(_tokens(chain.boosts[i]))}" for i, f in enumerate(chain.states)]
    fig.add_trace(go.Scatter(
        x=list(range(n)), y=[0.0] * n, mode="markers+text", text=text, textposition="bottom center",
        hovertext=hover, hoverinfo="text", showlegend=False, customdata=list(chain.states),
        marker=dict(size=26, color=[state_colour(i) for i in range(n)], line=dict(color="white", width=2))))
    fig.update_layout(
        title=title or f"chain of {len(chain.features)} features · margin {chain.margin:.3g} · weakest hand-off "
                       f"{chain.weakest:.3g}",
        height=320, width=max(420, 190 * n + 120), template="plotly_white", margin=dict(l=30, r=30, t=45, b=20),
        hoverlabel=dict(align="left"), xaxis=dict(visible=False, range=[-0.6, n - 0.4]),
        yaxis=dict(visible=False, range=[-1.1, 0.9]))
    return fig


def _edge_path(a: int, b: int) -> tuple[list[float], list[float]]:
    """Points of an arrow from state a to state b: straight to the next state, an arc below back to an earlier
    one, a loop above for a state to itself (nodes sit at y = 0)."""
    if b == a + 1:
        return [a + 0.12, a + 0.5, b - 0.12], [0.0, 0.0, 0.0]
    if b == a:
        return [a - 0.08, a - 0.2, a, a + 0.2, a + 0.08], [0.1, 0.45, 0.6, 0.45, 0.1]
    depth = 0.35 + 0.12 * abs(a - b)
    xs = list(np.linspace(a, b, 7))
    ys = [-0.1 - depth * np.sin(np.pi * t) for t in np.linspace(0, 1, 7)]
    return xs, [float(y) for y in ys]


def _tokens(tokens: Sequence[str]) -> str:
    return " ".join(H.token_label(t) for t in tokens) if tokens else "(no examples)"


def legend_html(chain: Chain) -> str:
    """A colour chip per state, with its feature and first tokens."""
    chips = [f"<span style='display:inline-block;margin-right:12px'><span style='display:inline-block;width:12px;"
             f"height:12px;border-radius:2px;vertical-align:middle;background:{state_colour(i)}'></span> "
             f"#{f} {H.escape(_tokens(chain.labels[i][:2]))}</span>" for i, f in enumerate(chain.states)]
    return f"<div class='saekit-legend' style='font-family:monospace;font-size:12px'>{''.join(chips)}</div>"


def runs_html(confirmation: ChainConfirmation) -> str:
    """The example runs: every token coloured by the chain's state that fires most on it (paler for a weaker
    activation), the run's own tokens outlined; the exact values in each token's title."""
    chain = confirmation.chain
    if not confirmation.examples:
        return "<div class='saekit-note' style='color:#777'>the chain does not run on this text</div>"
    scale = np.max([run.activations.max(0) for run in confirmation.examples], axis=0)  # [states]
    rows = []
    for run in confirmation.examples:
        spans = []
        for i, token in enumerate(run.tokens):
            values = run.activations[i]
            step = i - run.start
            in_run = 0 <= step < run.n_steps
            state = _run_state(chain, run.first_step, step) if in_run else int(values.argmax())
            value = float(values[state])
            spans.append(_span(token, chain, state, value, float(scale[state]), in_run))
        head = (f"<span style='display:inline-block;width:12em;color:#555'>window {run.window} · "
                f"{run.n_steps} steps</span>")
        rows.append(f"<div class='{H.EXAMPLE_CLASS}' style='font-family:monospace;font-size:12px;line-height:1.7;"
                    f"overflow:hidden;white-space:nowrap'>{head}{''.join(spans)}</div>")
    return legend_html(chain) + "".join(rows)


def _run_state(chain: Chain, first: int, step: int) -> int:
    state = first
    for _ in range(step):
        state = chain.next_state(state)
    return state


def _span(token: str, chain: Chain, state: int, value: float, scale: float, outlined: bool) -> str:
    style = "white-space:pre;border-radius:2px;"
    title = H.token_label(token)
    if value > 0:
        alpha = 0.25 + 0.75 * min(value / scale, 1.0) if scale > 0 else 1.0
        style += f"background:{state_colour(state, alpha)};"
        title += f" · feature {chain.states[state]} (step {state}) activation {value:.4g}"
    if outlined:
        style += "font-weight:bold;outline:1px solid rgba(0,0,0,0.35);"
    text = H.escape(H.visible(token))
    return f'<span class="{H.TOKEN_CLASS}" style="{style}" title="{H.escape(title)}">{text}</span>'


def steps_html(confirmation: ChainConfirmation) -> str:
    """The hand-offs on the text: how often the target fires right after the source, against its base rate."""
    chain = confirmation.chain
    table = confirmation.steps.assign(
        score=list(chain.scores),
        source_fires_on=[_tokens(labels[:2]) for labels in chain.labels[:-1]],
        target_fires_on=[_tokens(labels[:2]) for labels in chain.labels[1:]])
    table = table[["step", "source", "source_fires_on", "target", "target_fires_on", "score", "source_fires",
                   "followed", "p_follow", "base_rate", "lift"]]
    summary = (f"{confirmation.full_runs} full runs over {confirmation.n_tokens:,} tokens; "
               f"{confirmation.expected_full_runs:.3g} expected by chance")
    return H.heading("on the text") + H.table_html(table) + f"<div style='color:#555'>{H.escape(summary)}</div>"


class AutomatonView(widgets.VBox):
    """Pick a chain; see it as a graph, and with "find on text" its hand-offs and runs on the store's windows
    (the model rerun there; needs `dictionary` and `model`). `show(i)` and `confirm()` do what the controls do."""

    def __init__(self, chains: Sequence[Chain] | TopicChains, store: FeatureStore, dictionary: Dictionary | None = None,
                 model: Any = None, *, chain: int = 0, max_windows: int | None = None, n_examples: int = 6,
                 context: int = 8) -> None:
        note = chains.note if isinstance(chains, TopicChains) else None
        self.chains = list(chains.chains if isinstance(chains, TopicChains) else chains)
        self.store, self.dictionary, self.model = store, dictionary, model
        self.settings = dict(max_windows=max_windows, n_examples=n_examples, context=context)
        self.confirmations: dict[int, ChainConfirmation] = {}
        self.picker = widgets.Dropdown(options=[(chain_label(c), i) for i, c in enumerate(self.chains)],
                                       description="chain", layout=widgets.Layout(width="760px"))
        self.button = widgets.Button(description="find on text", icon="search",
                                     disabled=not self.chains or dictionary is None or model is None)
        self.note = widgets.HTML(f"<div class='saekit-note' style='color:#555'>{H.escape(note)}</div>" if note else "")
        self.slot = FigureSlot()
        self.steps = widgets.HTML()
        self.text = widgets.HTML()
        self.index: int | None = None
        self.picker.observe(lambda change: change["new"] is not None and self.show(change["new"]), names="value")
        self.button.on_click(lambda _: self.confirm())
        super().__init__([self.note, widgets.HBox([self.picker, self.button]), self.slot, self.steps, self.text])
        self.add_class("saekit-automata")
        if self.chains:
            self.show(chain)
        elif not note:
            self.note.value = "<div class='saekit-note' style='color:#777'>no chains to show</div>"

    @property
    def figure(self) -> go.FigureWidget:
        """The chain now drawn."""
        return self.slot.figure

    @property
    def chain(self) -> Chain | None:
        return None if self.index is None else self.chains[self.index]

    def show(self, index: int) -> Chain:
        """Draw chain `index` (and its runs, if they were found before)."""
        self.index = int(index)
        if self.picker.value != self.index:
            self.picker.value = self.index
        self.slot.show(chain_figure(self.chains[self.index]))
        done = self.confirmations.get(self.index)
        self.steps.value = steps_html(done) if done else ""
        self.text.value = runs_html(done) if done else ""
        if self.button.disabled and self.chains and (self.dictionary is None or self.model is None):
            self.text.value = ("<div class='saekit-note' style='color:#777'>pass dictionary= and model= to find "
                               "the chain on the text</div>")
        return self.chains[self.index]

    def confirm(self) -> ChainConfirmation:
        """Find the shown chain on the store's windows; shows and returns the counts and example runs."""
        if self.dictionary is None or self.model is None or self.index is None:
            raise ValueError("finding a chain on the text needs a chain, the dictionary and the model: pass "
                             "dictionary= and model= to AutomatonView")
        if self.index not in self.confirmations:
            self.confirmations[self.index] = confirm_chain(self.store, self.dictionary, self.model,
                                                           self.chains[self.index], progress=False, **self.settings)
        done = self.confirmations[self.index]
        self.steps.value = steps_html(done)
        self.text.value = runs_html(done)
        return done

