"""Markup in corpus text, feature labels, user input, model/dictionary names and table cells is shown as
text by every widget: each payload (`<img onerror>`, `<script>`, `<svg onload>`, attribute breakouts, a
closing `</textarea>`) goes through each widget, and what they render (the ipywidgets HTML values, the
plotly figures' names, labels, hovers, titles and annotations) is read back with an HTML tokenizer:
no injected element, no event-handler attribute, no `javascript:` URL, and the payload's characters are
there as text. The same payloads in a real browser: tests/test_browser.py."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")  # plotly's FigureWidget needs it

import ipywidgets as widgets  # noqa: E402
import plotly.graph_objects as go  # noqa: E402

from saekit.activations import nnsight_api as api  # noqa: E402
from saekit.analysis.features import build_feature_store  # noqa: E402
from saekit.analysis.interpretability import unit_measures  # noqa: E402
from saekit.analysis.maps import hover_labels  # noqa: E402
from saekit.analysis.splitting import split_edges, split_similarities  # noqa: E402
from saekit.analysis.steering import FeatureEdit, SteeringResult  # noqa: E402
from saekit.analysis.universality import best_match_tables, correlate  # noqa: E402
from saekit.saes.provenance import Provenance
from saekit.widgets import html as H  # noqa: E402
from saekit.widgets.card import Basis, logit_html  # noqa: E402
from saekit.widgets.explorer import FeatureExplorer  # noqa: E402
from saekit.widgets.feature_map import FeatureMap, map_figure  # noqa: E402
from saekit.widgets.paper import density_figure, measures_figure, sweep_figure  # noqa: E402
from saekit.widgets.splitting import Labels, SplittingView, coarse_to_fine_html, splitting_figure  # noqa: E402
from saekit.widgets.steering import SteeringView, continuations_html, shift_figure  # noqa: E402
from saekit.widgets.universality import UniversalityView, universality_figure  # noqa: E402

from helpers import (  # noqa: E402
    HOOK,
    MARKUP_STORE,
    PAYLOAD_IDS,
    PAYLOADS,
    build_payload_model,
    dense_acts,
    make_sae,
    payload_windows,
    sparse_sae,
    units_on,
)

each_payload = pytest.mark.parametrize("payload", PAYLOADS, ids=PAYLOAD_IDS)

# elements a payload could inject; none of the widgets writes any of them
INJECTED = {"img", "script", "svg", "iframe", "textarea", "object", "embed", "style", "link", "meta", "base",
            "form", "input", "math", "video", "audio", "source", "frame", "frameset"}
URL_ATTRIBUTES = {"src", "href", "xlink:href", "action", "formaction", "data", "srcdoc", "poster"}
# the markup the widgets write into plotly strings themselves (attribute-free)
PLOTLY_MARKUP = {"b", "br", "sup", "extra"}
# plotly attributes whose strings are drawn (as plotly's pseudo-HTML); "meta" and "legendgroup" are not
PLOTLY_DRAWN = {"name", "text", "hovertext", "hovertemplate", "ticktext", "x", "y"}
RAW_MARKUP = re.compile(r"<\s*/?\s*(img|script|svg|iframe|textarea)\b", re.IGNORECASE)  # `onerror=` as text is fine


class MarkupAudit(HTMLParser):
    """The start and end tags, attributes and text of a fragment, as an HTML tokenizer reads them."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.chunks: list[str] = []
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(tag, name, value) for name, value in attrs]

    def handle_endtag(self, tag: str) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def assert_safe_html(fragment: str, payload: str | None = None) -> str:
    """`fragment` (an ipywidgets HTML value) injects nothing; returns its text. With `payload`, the
    payload's characters must be in that text."""
    audit = MarkupAudit(fragment)
    assert not INJECTED & set(audit.tags), (sorted(INJECTED & set(audit.tags)), fragment)
    handlers = [(tag, name) for tag, name, _ in audit.attributes if name.startswith("on")]
    assert not handlers, (handlers, fragment)
    urls = [value for _, name, value in audit.attributes
            if name in URL_ATTRIBUTES and value and re.sub(r"\s", "", value).lower().startswith("javascript:")]
    assert not urls, (urls, fragment)
    assert not RAW_MARKUP.search(fragment), fragment
    if payload is not None:
        assert payload in audit.text, (payload, fragment)
    return audit.text


def plotly_strings(figure: go.Figure) -> list[str]:
    """Every string of a figure that plotly draws: trace names, text, hovers, category labels, titles,
    annotations, tick labels (the template is plotly's own and skipped)."""
    found: list[str] = []

    def walk(value: Any, drawn: bool) -> None:
        if isinstance(value, str):
            if drawn:
                found.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key != "template":
                    walk(item, drawn or key in PLOTLY_DRAWN)
        elif isinstance(value, (list, tuple, np.ndarray)):
            for item in value:
                walk(item, drawn)

    walk(figure.to_plotly_json(), False)
    return found


def assert_safe_figure(figure: go.Figure, payload: str | None = None) -> str:
    """No drawn string of `figure` holds markup other than the widgets' own <b>, <br>, <sup>, <extra> (no
    attributes, no links, no `%{` template a payload could smuggle); returns the text plotly would show.
    With `payload`, its characters must be in that text."""
    texts = []
    for text in plotly_strings(figure):
        audit = MarkupAudit(text)
        assert set(audit.tags) <= PLOTLY_MARKUP, (set(audit.tags) - PLOTLY_MARKUP, text)
        assert not audit.attributes, text
        assert not RAW_MARKUP.search(text), text
        texts.append(audit.text)
    shown = "\n".join(texts)
    if payload is not None:
        assert payload in shown, (payload, shown[:2000])
    return shown


def rendered(widget: widgets.Widget) -> tuple[list[str], list[go.FigureWidget]]:
    """The HTML values and the figures under `widget`."""
    html, figures = [], []
    stack = [widget]
    while stack:
        w = stack.pop()
        if isinstance(w, go.FigureWidget):
            figures.append(w)
        elif isinstance(w, (widgets.HTML, widgets.HTMLMath)):
            html.append(w.value)
        stack.extend(getattr(w, "children", ()))
    return html, figures


def assert_safe_widget(widget: widgets.Widget, payload: str | None = None) -> str:
    """Everything `widget` renders is safe (see assert_safe_html and assert_safe_figure); returns all of
    its text, which must hold `payload` when given."""
    html, figures = rendered(widget)
    assert html or figures
    text = "\n".join([*(assert_safe_html(h) for h in html), *(assert_safe_figure(f) for f in figures)])
    if payload is not None:
        assert payload in text, payload
    return text


# --- the checks themselves fail on unescaped markup -------------------------------------------------------


@each_payload
def test_the_checks_catch_every_payload_when_escaping_is_off(payload, monkeypatch):
    monkeypatch.setattr(H, "escape", str)
    with pytest.raises(AssertionError):
        assert_safe_html(H.token_span(payload, 1.0, 1.0), payload)
    monkeypatch.undo()
    assert_safe_html(H.token_span(payload, 1.0, 1.0), payload)


@pytest.mark.parametrize("payload", [p for p in PAYLOADS if "<" in p])
def test_the_figure_checks_catch_unescaped_markup(payload, monkeypatch):
    monkeypatch.setattr(H, "plotly_text", str)
    with pytest.raises(AssertionError):
        assert_safe_figure(density_figure(np.array([0.0, 1e-3]), name=payload), payload)


# --- the HTML builders ------------------------------------------------------------------------------------


@each_payload
def test_html_builders_show_markup_as_text(payload):
    assert_safe_html(H.token_span(payload, 0.5, 1.0, bold=True), payload)
    assert_safe_html(H.tokens_html(["a", payload, "b"], [0.1, None, 2.0], 1.0, bold_at=1), payload)
    rows = pd.DataFrame({"left": [[payload, "a"]], "token": [payload], "right": [["b", payload]],
                         "activation": [1.5]})
    text = assert_safe_html(H.examples_html(rows, 2.0, [[0.1, 0.2, 1.5, 0.0, 0.3]]), payload)
    assert text.count(payload) == 3
    assert_safe_html(H.heading(payload), payload)
    assert_safe_html(f"<div title=\"{H.escape(payload)}\">{H.escape(payload)}</div>", payload)
    table = pd.DataFrame({payload: [payload, "plain"], "value": [0.5, 1.25]})
    assert_safe_html(H.table_html(table), payload)
    effects = pd.DataFrame({"direction": ["boost", "suppress"], "token": [payload, payload], "logit": [1.0, -1.0]})
    assert assert_safe_html(logit_html(effects)).count(payload) == 2
    assert_safe_html(logit_html(effects.iloc[:0], note=payload), payload)
    result = SteeringResult(prompt=payload, clean=payload, steered=f"x{payload}", clean_ids=torch.zeros(1),
                            steered_ids=torch.zeros(1))
    assert assert_safe_html(continuations_html(result, FeatureEdit(3, 2.0))).count(payload) == 4


@each_payload
def test_plotly_text_draws_markup_as_text(payload):
    shown = MarkupAudit(H.plotly_text(f"{payload}\n%{{meta}}")).text
    assert shown == f"{payload}%{{meta}}" and "%{" not in H.plotly_text("%{meta}")


# --- a payload model: its tokenizer holds every payload as one token ------------------------------------


@pytest.fixture(scope="module")
def pay(tmp_path_factory) -> SimpleNamespace:
    """Two payload models (A and B, same tokenizer), their SAEs and feature/neuron stores, a universality
    result, three SAE sizes for splitting and a steering SAE, all on text that is mostly payloads."""
    folder = tmp_path_factory.mktemp("payload_models")
    model = api.load_model(build_payload_model(folder / "a"))
    model_b = api.load_model(build_payload_model(folder / "b", seed=1))
    windows = payload_windows(model)
    assert api.get_tokenizer(model_b).get_vocab() == api.get_tokenizer(model).get_vocab()
    acts, _ = dense_acts(model, windows)
    acts_b, _ = dense_acts(model_b, windows)
    sae, sae_b = sparse_sae(acts, 40), sparse_sae(acts_b, 30, seed=2)

    def store(m: Any, dictionary: Any) -> Any:
        return build_feature_store(m, windows, dictionary, hook=HOOK, config=MARKUP_STORE, progress=False)

    split_saes = [sparse_sae(acts, n, seed=n) for n in (16, 32, 64)]
    steer_sae = make_sae("relu", 128, 64)
    steer_sae.provenance = Provenance(hook=HOOK)
    corr = correlate(model, model_b, windows, sae, sae_b, hook=HOOK, progress=False)
    return SimpleNamespace(
        model=model, model_b=model_b, windows=windows, sae=sae, sae_b=sae_b, store=store(model, sae),
        neurons=store(model, None), store_b=store(model_b, sae_b), neurons_b=store(model_b, None),
        universality=best_match_tables(corr),
        edges=split_edges(split_similarities(model, windows, split_saes, hook=HOOK, progress=False), 0.0),
        split_stores=[store(model, s) for s in split_saes], steer_sae=steer_sae, steer_store=store(model, steer_sae))


def test_every_payload_is_a_top_example_of_some_neuron(pay):
    for payload in PAYLOADS:
        assert units_on(pay.neurons, payload), payload


# --- each widget ----------------------------------------------------------------------------------------------


@each_payload
def test_explorer(payload, pay):
    """Corpus tokens in the card, the basis name, a token search and a text search typed by the user."""
    explorer = FeatureExplorer({payload: Basis(pay.store, pay.sae, pay.model)}, model=pay.model,
                               neurons=pay.neurons)
    for unit in units_on(pay.store, payload)[:2]:
        explorer.show(unit)
        assert payload in assert_safe_html(explorer.card.top.value)
    neuron = units_on(pay.neurons, payload)[0]
    explorer.show(neuron, basis="neurons")
    assert payload in assert_safe_html(explorer.card.top.value)
    assert_safe_widget(explorer, payload)
    explorer.show(0, basis=payload)
    assert payload in assert_safe_html(explorer.card.summary.value)  # the basis name heads the card
    found = explorer.search(payload)
    assert_safe_html(explorer.results_note.value, repr(payload))
    assert payload in assert_safe_html(explorer.results_note.value)  # the basis name, in the note
    explorer.show(neuron, basis="neurons")
    found = explorer.search(payload)
    assert neuron in set(found["feature"])
    explorer.search_mode.value = "text"
    found = explorer.search(f"a {payload} b")
    assert len(found) > 0
    assert_safe_html(explorer.results_note.value, repr(f"a {payload} b"))
    assert_safe_widget(explorer, payload)


@each_payload
def test_feature_map(payload, pay):
    """Hover labels from the corpus and a dictionary named by the payload, in the figure and the status."""
    hover = hover_labels(pay.neurons, 4)
    n = pay.neurons.n_features
    table = pd.DataFrame({"dictionary": payload, "size": n, "feature": np.arange(n), "x": np.arange(n) % 16,
                          "y": np.arange(n) // 16, "hover": hover, "cluster": np.arange(n) % 3 - 1})
    for colour_by in ("size", "cluster"):
        assert_safe_figure(map_figure(table, colour_by), payload)
    fmap = FeatureMap(table, FeatureExplorer(pay.neurons, model=pay.model))
    assert fmap.figure.data[0].meta == payload  # the raw name still opens the right basis on click
    neuron = units_on(pay.neurons, payload)[0]
    fmap.clicked(fmap.figure.data[0], SimpleNamespace(point_inds=[neuron]))
    assert fmap.explorer.feature == neuron
    assert_safe_html(fmap.status.value, payload)
    assert payload in assert_safe_html(fmap.explorer.card.top.value)
    assert_safe_widget(fmap, payload)


@each_payload
def test_universality(payload, pay):
    """Both cards of a pair whose unit fires on the payload, and a reference named by the payload."""
    assert_safe_figure(universality_figure(pay.universality, bins=10, reference={payload: 0.5}), payload)
    view = UniversalityView(pay.universality, Basis(pay.store, pay.sae, pay.model),
                            Basis(pay.store_b, pay.sae_b, pay.model_b),
                            neurons=(Basis(pay.neurons, model=pay.model), Basis(pay.neurons_b, model=pay.model_b)),
                            reference={payload: 0.5})
    matched = set(pay.universality.neurons.dropna(subset=["correlation"])["unit"].astype(int))
    unit = next(u for u in units_on(pay.neurons, payload) if u in matched)
    view.show_pair(unit, basis="neurons")
    assert payload in assert_safe_html(view.card_a.top.value)
    assert_safe_html(view.match_note.value)
    assert_safe_widget(view, payload)


@each_payload
def test_splitting(payload, pay):
    """A family whose node hovers list the payload among its top tokens; its listing; the static figure."""
    labels = Labels(pay.split_stores)
    node = next(((size, f) for size in sorted(labels.stores) for f in range(size)
                 if repr(payload) in labels.hover(size, f)), None)
    assert node is not None, f"no feature of {sorted(labels.stores)} lists {payload!r} in its hover"
    view = SplittingView(pay.edges, pay.split_stores, min_sizes=1)
    family = view.show(*node)
    assert_safe_figure(view.figure, payload)
    assert_safe_html(view.listing.value)
    tokens = [labels.token(int(s), int(f)) for s, f in zip(family["size"], family["feature"])]
    if any(payload in t for t in tokens):
        assert payload in assert_safe_html(coarse_to_fine_html(family, labels))
    assert_safe_figure(splitting_figure(pay.edges, *node, pay.split_stores), payload)
    assert_safe_widget(view, payload)


@each_payload
def test_steering(payload, pay):
    """A prompt typed by the user, generated continuations, the shift's tokens (figure and table)."""
    view = SteeringView(pay.model, pay.steer_sae, store=pay.steer_store, feature=3, prompt=f"page {payload}",
                        value=40.0, max_new_tokens=4, k=4)
    assert_safe_html(view.feature_note.value)
    run = view.run()
    text = assert_safe_html(view.output.value, f"page {payload}")
    assert run.result.clean in text and run.result.steered in text
    assert_safe_html(view.table.value)
    assert_safe_figure(view.figure)
    assert_safe_widget(view, payload)
    # the feature note: a stand-in store whose feature 3 fires most on the payload and boosts it
    effects = pd.DataFrame({"direction": ["boost", "boost"], "token": ["a", payload], "logit": [2.0, 1.0]})
    stand_in = SimpleNamespace(
        features=pd.DataFrame({"max_activation": np.ones(pay.steer_sae.d_sae)}),
        feature_table=lambda: pd.DataFrame({"feature": [3], "top_token": [payload]}),
        logit_effects=lambda feature: effects)
    noted = SteeringView(pay.model, pay.steer_sae, store=stand_in, feature=3, prompt="page")
    assert assert_safe_html(noted.feature_note.value).count(payload) == 2
    shift = pd.DataFrame({"token": [payload, "a"], "token_id": [1, 2], "p_before": [0.1, 0.2],
                          "p_after": [0.3, 0.1], "delta": [0.2, -0.1]})
    assert_safe_figure(shift_figure(shift), payload)
    assert_safe_html(H.table_html(shift.drop(columns="token_id")), payload)


@each_payload
def test_paper_figures(payload, pay):
    """Names, table cells and references given by the caller or read from a table."""
    assert_safe_figure(density_figure(np.array([0.0, 5e-7, 1e-3, 0.1]), name=payload, reference=payload,
                                      n_tokens=1000), payload)
    table = pd.DataFrame({"model": payload, "arch": [payload, payload], "n_features": [512, 1024],
                          "loss_recovered": [0.7, 0.8], "fvu": [0.3, 0.2], "l0": [20.0, 15.0]})
    assert_safe_figure(sweep_figure(table, reference={payload: 0.79}), payload)
    measures = unit_measures(pay.store).rename(columns={"top_token_share": payload})
    assert_safe_figure(measures_figure({payload: measures}, measure=payload), payload)


def test_a_name_cannot_fill_a_plotly_template():
    """plotly fills %{meta} in trace names with the trace's raw meta: names are written with &#37;."""
    name = "%{meta}<a href='https://example.org'>x</a>"
    table = pd.DataFrame({"dictionary": name, "size": 2, "feature": [0, 1], "x": [0.0, 1.0], "y": [0.0, 1.0],
                          "hover": ["a", "b"]})
    fig = map_figure(table)
    assert "%{" not in fig.data[0].name and fig.data[0].meta == name
    assert_safe_figure(fig, name)


@each_payload
def test_automata(payload, pay):
    """A chain whose labels are the payload, and its runs on the payload text (context tokens from the corpus)."""
    from saekit.analysis.automata import Chain, chain_activations
    from saekit.saes.dictionary import Neurons
    from saekit.widgets.automata import AutomatonView, chain_figure, runs_html

    store, neurons = pay.neurons, Neurons(pay.neurons.n_features)
    first = units_on(store, payload)[0]
    fires = chain_activations(store, neurons, pay.model, range(store.n_features), progress=False).numpy() > 0
    after = (fires[:, :-1, first, None] & fires[:, 1:, :]).sum((0, 1))  # how often each unit fires next
    chain = Chain((first, int(after.argmax())), (1.0,), 0.5, ((payload, "a"), (payload,)), ((payload,), ()))
    view = AutomatonView([chain], store, neurons, pay.model)
    assert_safe_figure(view.figure, payload)
    assert_safe_figure(chain_figure(chain), payload)
    confirmed = view.confirm()
    assert confirmed.examples
    text = assert_safe_html(runs_html(confirmed))
    assert any(p in text for p in PAYLOADS)  # the corpus's markup, shown as text
    assert payload in assert_safe_html(view.steps.value)
    assert_safe_widget(view, payload)
