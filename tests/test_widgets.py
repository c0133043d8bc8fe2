"""Widgets, headless: built on a tiny GPT-2, driven programmatically; what they show is checked against
the stores and analysis functions they read, and every token string is checked to be escaped."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")  # plotly's FigureWidget needs it

from saekit.activations import nnsight_api as api  # noqa: E402
from saekit.analysis.browsing import nearest_features  # noqa: E402
from saekit.analysis.features import StoreConfig, build_feature_store, window_activations  # noqa: E402
from saekit.analysis.splitting import decoder_cosine, families, split_edges, split_similarities  # noqa: E402
from saekit.analysis.steering import FeatureEdit, next_token_shift  # noqa: E402
from saekit.analysis.universality import best_match_tables, correlate, universality_summary  # noqa: E402
from saekit.saes.provenance import Provenance
from saekit.widgets import html as H  # noqa: E402
from saekit.widgets.card import Basis  # noqa: E402
from saekit.widgets.explorer import FeatureExplorer  # noqa: E402
from saekit.widgets.feature_map import FeatureMap, map_figure  # noqa: E402
from saekit.widgets.paper import (  # noqa: E402
    density_counts,
    density_figure,
    example_features,
    measures_figure,
    sweep_figure,
)
from saekit.widgets.splitting import SplittingView, coarse_to_fine_html, tree_layout  # noqa: E402
from saekit.widgets.steering import SteeringView  # noqa: E402
from saekit.widgets.universality import UniversalityView, universality_figure  # noqa: E402

from helpers import (  # noqa: E402
    HOOK,
    PAYLOAD,
    SCRIPT,
    TEXTS,
    build_markup_model,
    build_tiny_gpt2,
    dense_acts,
    make_sae,
    markup_feature,
    markup_neuron_store,
    sparse_sae,
    tiny_store,
)

CONFIG = StoreConfig(n_top=6, n_per_interval=3, n_bins=128, n_logits=4, batch_size=8)
SPAN = re.compile(r'<span class="saekit-tok" style="([^"]*)" title="([^"]*)">([^<]*)</span>')


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_lm):
    built = tiny_store(tiny_lm, CONFIG)
    built.neurons = build_feature_store(tiny_lm, built.windows, None, hook=HOOK, config=CONFIG, progress=False)
    return built


@pytest.fixture(scope="module")
def explorer(tiny, tiny_lm):
    return FeatureExplorer(tiny.store, tiny.sae, tiny_lm, neurons=tiny.neurons)


@pytest.fixture(scope="module")
def markup(tmp_path_factory):
    model = api.load_model(build_markup_model(tmp_path_factory.mktemp("markup_lm")))
    return SimpleNamespace(model=model, store=markup_neuron_store(model))


def spans(html: str) -> list[tuple[str, str, str]]:
    return SPAN.findall(html)


def bold_values(html: str) -> list[float]:
    """The activation in the title of each outlined (firing) token."""
    return [float(title.rsplit(" ", 1)[1]) for style, title, _ in spans(html) if "font-weight:bold" in style]


# --- token rendering -----------------------------------------------------------------------------------


def test_token_spans_escape_markup_and_carry_the_value():
    out = H.token_span(PAYLOAD, 0.5, 1.0) + H.token_span(SCRIPT, None, 1.0) + H.token_span('"q"&\n', 2.0, 1.0)
    assert "<img" not in out and "<script" not in out and "onerror=alert(1)&gt;" in out
    assert "&lt;img src=x onerror=alert(1)&gt;" in out and "&lt;script&gt;alert(2)&lt;/script&gt;" in out
    (style0, title0, text0), (style1, _, _), (style2, title2, text2) = spans(out)
    assert "rgba(255,120,0,0.500)" in style0 and title0.endswith("activation 0.5") and "&lt;img" in title0
    assert "background" not in style1  # unknown value: no colour
    assert "rgba(255,120,0,1.000)" in style2  # clipped to full colour
    assert text2 == "&quot;q&quot;&amp;↵" and "&quot;" in title2
    assert H.plotly_text(f"{PAYLOAD}\n'q\"") == "&lt;img src=x onerror=alert(1)&gt;<br>'q\""


def test_examples_without_context_values_colour_only_the_firing_token():
    row = pd.DataFrame({"left": [["a", "b"]], "token": [PAYLOAD], "right": [["c"]], "activation": [3.0]})
    out = H.examples_html(row, 6.0)
    parsed = spans(out)
    assert [t for _, _, t in parsed] == ["a", "b", H.escape(PAYLOAD), "c"]
    assert ["background" in s for s, _, _ in parsed] == [False, False, True, False]
    assert bold_values(out) == [3.0]


# --- the explorer ----------------------------------------------------------------------------------------


def test_card_shows_the_stores_values(explorer, tiny):
    feature = int(tiny.store.feature_table()["feature"].iloc[3])
    explorer.show(feature)
    row = tiny.store.features.iloc[feature]
    assert explorer.feature == feature and explorer.feature_box.value == feature
    assert f"feature {feature}" in explorer.card.summary.value
    assert f"density {row.density:.3g} (fires on {int(row.n_fires):,} of {tiny.store.meta['n_tokens']:,}" in (
        explorer.card.summary.value)
    top = tiny.store.top_examples(feature, 12)
    np.testing.assert_allclose(bold_values(explorer.card.top.value), top["activation"], rtol=1e-3)
    hist = tiny.store.histogram(feature)
    bars = explorer.card.histogram.figure.data[0]
    assert sum(bars.y) == hist["count"].sum() and len(bars.y) <= 50
    assert bars.x[0] < bars.x[-1] <= hist["bin_end"].iloc[-1]
    boosted = tiny.store.logit_effects(feature).query("direction == 'boost'")["token"]
    assert H.escape(H.token_label(boosted.iloc[0])) in explorer.card.logits.value
    intervals = tiny.store.interval_examples(feature)
    assert len(bold_values(explorer.card.intervals.value)) == int((intervals["sample"] < 2).sum())


def test_every_context_token_is_coloured_by_its_recomputed_activation(explorer, tiny, tiny_lm):
    feature = int(tiny.store.feature_table()["feature"].iloc[0])
    explorer.show(feature)
    first = tiny.store.top_examples(feature, 12).iloc[0]
    acts = window_activations(tiny_lm, tiny.sae, tiny.store.windows([first.window]), [feature], HOOK)[0, :, 0]
    start = first.position - len(first.left)
    expected = acts[start : first.position + 1 + len(first.right)].numpy()
    example = explorer.card.top.value.split('class="saekit-example"')[1]
    shown = [float(title.rsplit(" ", 1)[1]) for _, title, _ in spans(example)]
    np.testing.assert_allclose(shown, expected, rtol=1e-3, atol=1e-6)


def test_nearest_features_are_the_decoder_neighbours_and_open_on_click(explorer, tiny):
    explorer.show(5)
    cos = decoder_cosine(tiny.sae.W_dec[5:6], tiny.sae.W_dec)[0]
    cos[5] = -1
    expected = cos.topk(8).indices.tolist()
    buttons = explorer.card.nearest.children
    assert [b.feature for b in buttons] == expected
    assert nearest_features(tiny.sae, 5, 8)["feature"].tolist() == expected
    buttons[2].click()
    assert explorer.feature == expected[2] and explorer.feature_box.value == expected[2]


def test_table_search_and_the_neuron_basis(explorer, tiny):
    assert list(explorer.bases) == ["features", "neurons"]
    densities = [tiny.store.features["density"].iloc[f] for _, f in explorer.table.options]
    assert densities == sorted(densities, reverse=True)
    explorer.sort_picker.value = "rarest (alive) first"
    densities = [tiny.store.features["density"].iloc[f] for _, f in explorer.table.options]
    assert densities == sorted(densities) and min(densities) > 0
    explorer.table.value = explorer.table.options[1][1]
    assert explorer.feature == explorer.table.options[1][1]
    explorer.sort_picker.value = "densest first"
    explorer.basis_picker.value = "neurons"
    assert explorer.basis_name == "neurons" and "neuron" in explorer.card.summary.value
    assert explorer.feature_box.max == tiny.neurons.n_features - 1
    assert explorer.card.nearest.children == ()  # neurons have no decoder neighbours
    token = tiny.neurons.top_examples(7)["token"].iloc[0]
    found = explorer.search(token)
    assert 7 in set(found["feature"]) and len(explorer.results.children) == len(found)
    target = int(found["feature"].iloc[0])
    explorer.results.children[0].click()
    assert explorer.feature == target and explorer.basis_name == "neurons"
    explorer.show(3, basis="features")
    assert explorer.basis_name == "features" and explorer.feature == 3


def test_text_search_finds_the_features_firing_on_the_text(explorer, tiny, tiny_lm):
    explorer.search_mode.value = "text"
    try:
        found = explorer.search("The quick brown fox")
    finally:
        explorer.search_mode.value = "token"
    assert len(found) > 0 and (found["activation"] > 0).all()
    assert list(found["activation"]) == sorted(found["activation"], reverse=True)
    ids = api.get_tokenizer(tiny_lm)("The quick brown fox", add_special_tokens=False)["input_ids"]
    acts = tiny.sae.encode(api.get_activations(tiny_lm, torch.tensor([ids]), None, HOOK)[0]).detach()
    assert int(found["feature"].iloc[0]) == int(acts.max(0).values.argmax())


def test_from_sae_builds_both_stores(tiny_lm, tiny):
    built = FeatureExplorer.from_sae(tiny.sae, tiny_lm, TEXTS[:5], max_tokens=200, context_len=32,
                                        config=CONFIG, progress=False)
    assert list(built.bases) == ["features", "neurons"]
    assert built.bases["neurons"].store.n_features == 128 and built.store.n_features == 40
    assert built.feature == int(built.store.feature_table()["feature"].iloc[0])


def test_markup_in_the_corpus_is_shown_as_text(markup):
    store = markup.store
    feature = markup_feature(store)
    plain = FeatureExplorer(store)  # no model: only the firing tokens are coloured
    plain.show(feature)
    model_view = FeatureExplorer(store, model=markup.model)
    model_view.show(feature)
    for view in (plain, model_view):
        card = view.card
        html = card.summary.value + card.top.value + card.intervals.value + card.logits.value
        assert "<img" not in html and "<script" not in html
        assert H.escape(PAYLOAD) in card.top.value
    found = plain.search(PAYLOAD)
    assert feature in set(found["feature"])
    assert "<img" not in plain.results_note.value and H.escape(repr(PAYLOAD)) in plain.results_note.value


# --- the map -------------------------------------------------------------------------------------------


def _map_table(hover: str = "", dictionaries: tuple[tuple[str, int], ...] = (("features", 40), ("neurons", 128))
               ) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    parts = [pd.DataFrame({"dictionary": name, "size": n, "feature": np.arange(n), "x": rng.normal(size=n),
                           "y": rng.normal(size=n), "hover": hover, "cluster": np.arange(n) % 3 - 1})
             for name, n in dictionaries]
    return pd.concat(parts, ignore_index=True)


def test_map_figure_and_clicks_open_the_explorer(explorer, tiny):
    table = _map_table(hover=f"fires on: {PAYLOAD}")
    fig = map_figure(table)
    assert [t.meta for t in fig.data] == ["neurons", "features"]  # the larger drawn first, under the smaller
    assert [len(t.x) for t in fig.data] == [128, 40] and fig.layout.legend.traceorder == "reversed"
    assert all("<img" not in h and "&lt;img" in h for h in fig.data[1].hovertext)
    assert fig.data[0].marker.color != fig.data[1].marker.color
    by_cluster = map_figure(table, "cluster")
    assert by_cluster.data[1].marker.color[0] == "lightgrey"  # cluster -1: noise
    view = FeatureMap(table, explorer)
    trace = view.figure.data[0]
    view.clicked(trace, SimpleNamespace(point_inds=[17]))
    assert explorer.basis_name == "neurons" and explorer.feature == 17
    view.clicked(view.figure.data[1], SimpleNamespace(point_inds=[9]))
    assert explorer.basis_name == "features" and explorer.feature == 9
    assert "features</b> feature <b>9" in view.status.value
    view.recolour("cluster")
    assert view.figure.data[1].marker.color[0] == "lightgrey" and view.colour_picker.value == "cluster"
    view.colour_picker.value = "dictionary"
    assert view.figure.data[0].marker.color == fig.data[0].marker.color


def test_joint_map_colours_each_dictionary_and_says_where_a_store_is_missing(explorer):
    """A/1 and two larger dictionaries (two of one size) in one map, with stores for only some of them."""
    sizes = (("A-relu-64", 64), ("A-topk-128", 128), ("A-relu-128", 128), ("A-relu-256", 256))
    table = _map_table(dictionaries=sizes)
    table.loc[table.dictionary == "A-relu-64", "hover"] = f"fires on: {PAYLOAD}"
    fig = map_figure(table)
    assert [t.meta for t in fig.data] == ["A-relu-256", "A-topk-128", "A-relu-128", "A-relu-64"]
    colours = [t.marker.color for t in fig.data]
    assert all(isinstance(c, str) for c in colours) and len(set(colours)) == 4  # equal sizes, distinct colours
    assert map_figure(table, "size").data[1].marker.color == colours[1]  # "size": the former name of this colouring
    assert [len(t.x) for t in fig.data] == [256, 128, 128, 64]
    assert fig.data[3].hovertext[5].startswith("<b>A-relu-64 #5</b>") and "&lt;img" in fig.data[3].hovertext[5]
    assert all("no feature store" in h for h in fig.data[0].hovertext)
    with pytest.raises(ValueError, match="colour_by"):
        map_figure(table, "run")
    big = _map_table(dictionaries=(("A-relu-4096", 4096), ("A-relu-8192", 8192)))
    assert {t.type for t in map_figure(big).data} == {"scattergl"}  # WebGL for tens of thousands of points
    bases = {"A-relu-64": explorer.bases["features"], "A-relu-128": explorer.bases["neurons"]}
    view = FeatureMap(table, FeatureExplorer(bases))
    assert view.colour_picker.options == ("dictionary", "cluster")
    view.open_feature("A-relu-128", 3)
    assert view.explorer.basis_name == "A-relu-128" and view.explorer.feature == 3
    view.open_feature("A-relu-256", 7)  # no store: says so, and does not open feature 7 of another dictionary
    assert view.explorer.basis_name == "A-relu-128" and view.explorer.feature == 3
    assert "A-relu-256</b> feature <b>7</b>: no feature store" in view.status.value


# --- universality ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def universal(tiny, tiny_lm, tmp_path_factory):
    model_b = api.load_model(build_tiny_gpt2(tmp_path_factory.mktemp("tiny_b"), seed=1))
    acts_b, _ = dense_acts(model_b, tiny.windows)
    sae_b = sparse_sae(acts_b, 30, seed=2)
    corr = correlate(tiny_lm, model_b, tiny.windows, tiny.sae, sae_b, hook=HOOK, progress=False)
    store_b = build_feature_store(model_b, tiny.windows, sae_b, hook=HOOK, config=CONFIG, progress=False)
    neurons_b = build_feature_store(model_b, tiny.windows, None, hook=HOOK, config=CONFIG, progress=False)
    return SimpleNamespace(model_b=model_b, sae_b=sae_b, result=best_match_tables(corr), store_b=store_b,
                           neurons_b=neurons_b)


def test_universality_figure_and_pair_viewer(universal, tiny, tiny_lm):
    result = universal.result
    fig = universality_figure(result, bins=20, reference={"features": 0.72, "neurons": 0.46})
    assert [t.name for t in fig.data] == ["features", "neurons"]
    assert sum(fig.data[0].customdata[:, 0]) == result.features["correlation"].notna().sum()
    medians = universality_summary(result).set_index("basis")["median"]
    assert sorted(s.x0 for s in fig.layout.shapes) == sorted([*medians, 0.72, 0.46])
    view = UniversalityView(result, Basis(tiny.store, tiny.sae, tiny_lm),
                            Basis(universal.store_b, universal.sae_b, universal.model_b),
                            neurons=(Basis(tiny.neurons, None, tiny_lm), universal.neurons_b))
    best = result.features.dropna(subset=["correlation"]).sort_values("correlation", ascending=False).iloc[0]
    assert view.unit_picker.value == int(best.unit)
    assert view.card_a.feature == int(best.unit) and view.card_b.feature == int(best.best_match)
    assert f"{best.correlation:.3f}" in view.match_note.value
    pair = view.show_pair(3, basis="neurons")
    expected = result.neurons.set_index("unit").loc[3]
    assert pair["best_match"] == int(expected.best_match) and view.card_b.feature == int(expected.best_match)
    assert view.card_b.basis.store is universal.neurons_b and "model B neuron" in view.card_b.summary.value


# --- splitting ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splitting(tiny, tiny_lm):
    saes = [sparse_sae(tiny.acts, n, seed=n) for n in (10, 20, 40)]
    split = split_similarities(tiny_lm, tiny.windows, saes, hook=HOOK, progress=False)
    edges = split_edges(split, threshold=0.0)  # every child gets its best parent: families span all sizes
    stores = [build_feature_store(tiny_lm, tiny.windows, sae, hook=HOOK, config=CONFIG, progress=False)
              for sae in saes]
    return SimpleNamespace(edges=edges, stores=stores, decoder_edges=split_edges(split, 0.0, link_by="decoder"))


def test_tree_layout_centres_parents_on_their_children():
    family = pd.DataFrame({"depth": [0, 1, 1, 2, 2, 2], "size": [4, 8, 8, 16, 16, 16],
                           "feature": [0, 1, 2, 3, 4, 5], "parent_size": [None, 4, 4, 8, 8, 8],
                           "parent_feature": [None, 0, 0, 1, 1, 2], "activation_cosine": np.nan,
                           "decoder_cosine": np.nan, "is_query": False})
    laid = tree_layout(family).set_index("feature")
    assert laid["x"].tolist() == [0, 1, 1, 2, 2, 2]
    assert laid.loc[[3, 4, 5], "y"].tolist() == [0, -1, -2]
    assert laid.loc[1, "y"] == -0.5 and laid.loc[2, "y"] == -2 and laid.loc[0, "y"] == -1.25


def test_splitting_view_draws_a_family_across_three_sizes(splitting):
    roots = families(splitting.edges, 3)
    assert len(roots) > 0
    view = SplittingView(splitting.edges, splitting.stores, decoder_edges=splitting.decoder_edges)
    top = roots.sort_values(["n_descendants", "size", "feature"], ascending=[False, True, True]).iloc[0]
    assert view.query == (int(top["size"]), int(top.feature))
    nodes = view.figure.data[-1]
    assert len(nodes.x) == int(top.n_descendants) + 1 and sorted(set(nodes.x)) == [0, 1, 2]
    labels = splitting.stores[0].feature_table().set_index("feature")["top_token"]
    assert H.plotly_text(H.token_label(labels[int(top.feature)])) in nodes.text[0]
    n_edges = int(top.n_descendants)
    assert len(view.figure.data) == n_edges + 2  # one line per edge, the edge labels, the nodes
    assert view.listing.value.count("<div style='margin-left") == n_edges + 1
    child = view.family(*view.query).iloc[1]
    family = view.show(int(child["size"]), int(child.feature))
    assert family["is_query"].sum() == 1 and view.query == (int(child["size"]), int(child.feature))
    view.view_picker.value = "decoder cosine"
    assert "decoder cosine" in view.figure.layout.title.text
    assert "act cos" in coarse_to_fine_html(view.family(*view.query))


def test_one_line_constructors_on_your_own_saes(tiny, tiny_lm, universal, splitting, monkeypatch):
    text = tiny.windows
    saes = [sparse_sae(tiny.acts, n, seed=n) for n in (10, 20, 40)]
    split_view = SplittingView.from_saes(tiny_lm, saes, text, threshold=0.0, hook=HOOK, progress=False)
    assert sorted(split_view.labels.stores) == [10, 20, 40] and split_view.query is not None
    pd.testing.assert_frame_equal(split_view.edges["activation cosine"], splitting.edges)
    pd.testing.assert_frame_equal(split_view.edges["decoder cosine"], splitting.decoder_edges)
    pair_view = UniversalityView.from_saes(tiny_lm, universal.model_b, tiny.sae, universal.sae_b, text, hook=HOOK,
                                           progress=False)
    pd.testing.assert_frame_equal(pair_view.result.features, universal.result.features)
    assert pair_view.card_b.basis.store.n_features == 30 and list(pair_view.pairs) == ["features", "neurons"]
    monkeypatch.setattr("saekit.widgets.feature_map.feature_map", lambda saes, hover, **kw: _map_table().assign(
        hover=[*hover["features"], *[""] * 128]))  # UMAP itself is tested in test_maps
    fmap = FeatureMap.from_saes({"features": tiny.sae}, model=tiny_lm, text=text)
    assert fmap.explorer is not None and list(fmap.explorer.bases) == ["features"]
    assert fmap.table["hover"].iloc[0].startswith("fires on: ")


# --- steering ------------------------------------------------------------------------------------------------


def test_steering_view_generates_both_ways_and_shows_the_shift(tiny_lm, tiny):
    sae = make_sae("relu", 128, 64)
    sae.provenance = Provenance(hook=HOOK)
    store = build_feature_store(tiny_lm, tiny.windows, sae, hook=HOOK, config=CONFIG, progress=False)
    view = SteeringView(tiny_lm, sae, store=store, feature=7, prompt="The quick <b>brown", value=60.0,
                        max_new_tokens=4, k=3)
    assert view.strength.value == 60.0 and view.strength.max >= 60.0
    run = view.run()
    assert run.edit == FeatureEdit(7, 60.0, "pin")
    expected = next_token_shift(tiny_lm, sae, "The quick <b>brown", FeatureEdit(7, 60.0), k=3)
    pd.testing.assert_frame_equal(run.shift, expected)
    assert run.result.clean != run.result.steered
    assert "&lt;b&gt;brown" in view.output.value and "<b>brown" not in view.output.value
    assert H.escape(run.result.steered) in view.output.value
    assert sorted(view.figure.data[0].x) == sorted(expected["delta"])
    view.feature_box.value = 3
    scale = float(store.features["max_activation"].iloc[3])
    assert view.strength.max == round(30 * scale, 2) and view.strength.value == round(10 * scale, 2)


# --- paper figures -----------------------------------------------------------------------------------------


def test_paper_figures(tiny):
    density = np.array([0, 0, 0, 5e-7, 1e-3, 2e-2, 0.1])
    assert density_counts(density) == {"features": 7, "dead": 3, "ultralow": 1, "alive": 3}
    fig = density_figure(density, n_tokens=200_000)
    assert fig.data[1].y == (3,) and "3 never fired, 1 below 1e-06" in fig.layout.title.text
    table = pd.DataFrame({"model": "A", "arch": "relu", "n_features": [512, 1024], "loss_recovered": [0.7, 0.8],
                          "fvu": [0.3, 0.2], "l0": [20.0, 15.0]})
    sweep = sweep_figure(table, reference={"A/1": 0.79})
    assert len(sweep.data) == 2 and list(sweep.data[0].y) == [0.7, 0.8]
    from saekit.analysis.interpretability import unit_measures

    measures = measures_figure({"features": unit_measures(tiny.store), "neurons": unit_measures(tiny.neurons)})
    table = pd.DataFrame({"feature": [0, 1, 2, 3], "n_fires": [0, 5, 9, 9], "density": [0, 0.2, 0.3, 0.01],
                          "top_token_share": [np.nan, 0.9, 0.5, 0.6]})
    assert example_features(table)["feature"].tolist() == [3]  # the density band wins when it has any
    assert example_features(table, high=1e-3)["feature"].tolist() == [1, 3, 2]  # else every live feature
    assert [t.name.split(" ")[0] for t in measures.data] == ["features", "neurons"]


def test_histogram_merges_fine_bins_into_readable_bars():
    """256 fine bins of a rare feature become ~√count bars; counts and range are kept."""
    from saekit.widgets.card import bars_for, histogram_figure, merge_bins

    starts = np.arange(256) * 0.01
    counts = np.zeros(256, dtype=np.int64)
    counts[[3, 40, 41, 200, 255]] = [5, 2, 3, 1, 1]
    hist = pd.DataFrame({"bin_start": starts, "bin_end": starts + 0.01, "count": counts})
    assert bars_for(12) == 10 and bars_for(10_000) == 50 and bars_for(900) == 30
    merged = merge_bins(hist, 10)
    assert len(merged) <= 10 and merged["count"].sum() == 12
    assert merged["bin_start"].iloc[0] == 0 and merged["bin_end"].iloc[-1] == pytest.approx(2.56)
    assert (merged["bin_end"] - merged["bin_start"]).iloc[0] == pytest.approx(0.26)
    fig = histogram_figure(hist)
    bar = fig.data[0]
    assert len(bar.x) == len(merged) and list(bar.y) == merged["count"].tolist()
    assert fig.layout.yaxis.type == "log"
    assert merge_bins(hist.head(8), 10).equals(hist.head(8))


def test_crosscoder_figures_count_every_feature_and_escape_names():
    import saekit
    from saekit.analysis import compare_with_matching, relative_norms
    from saekit.widgets import matching_figure, relative_norm_figure

    cc = saekit.SAE.create("relu", 16, 24, n_models=2, seed=0)
    norms = relative_norms(cc, models=("<b>A</b>", "B"))
    fig = relative_norm_figure(norms, models=("<b>A</b>", "B"))
    assert sum(fig.data[0].y) == 24
    assert "<b>" not in fig.layout.xaxis.title.text and "&lt;b&gt;" in fig.layout.xaxis.title.text
    sae_a = saekit.SAE.create("relu", 8, 6, seed=1)
    matches = pd.DataFrame({"unit": range(6), "best_match": range(6), "correlation": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    comparison = compare_with_matching(cc, sae_a, matches)
    figure = matching_figure(comparison)
    assert sum(len(trace.y) for trace in figure.data) == comparison["best_match_correlation"].notna().sum()


def test_steering_view_of_an_encoder_says_why_it_cannot_steer(tiny_bert_dir):
    from saekit.errors import InputError

    sae = make_sae("topk", 32, 16)
    sae.provenance = Provenance(hook="encoder.layer.0.output.dense")
    view = SteeringView(api.load_model(tiny_bert_dir), sae, feature=1)
    assert view.button.disabled and "no language-model head" in view.output.value
    with pytest.raises(InputError, match="no language-model head"):
        view.run()


# --- automata ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def automaton(tiny_lm):
    from helpers import planted_automaton

    return planted_automaton(tiny_lm)


def test_automaton_view_draws_the_chain_and_colours_its_runs(automaton, tiny_lm):
    from saekit.analysis.automata import HandoffConfig, find_chains, handoff_edges
    from saekit.widgets.automata import AutomatonView, state_colour

    from helpers import CHAIN_WORDS

    edges = handoff_edges(automaton.store, automaton.sae, tiny_lm, k=3, config=HandoffConfig(min_fires=3),
                          progress=False)
    chains = find_chains(edges, automaton.store)
    view = AutomatonView(chains, automaton.store, automaton.sae, tiny_lm)
    assert view.chain.features == (0, 1, 2, 3) and view.text.value == "" and not view.button.disabled
    *arrows, scores, nodes = view.figure.data
    assert len(arrows) == 3 and list(scores.text) == [f"{s:.3g}" for s in view.chain.scores] == ["10"] * 3
    assert list(nodes.customdata) == [0, 1, 2, 3]
    assert [t.split("<br>")[1] for t in nodes.text] == [H.plotly_text(H.token_label(w)) for w in CHAIN_WORDS]
    assert list(nodes.marker.color) == [state_colour(i) for i in range(4)]
    confirmed = view.confirm()
    assert confirmed.full_runs >= 6
    rows = view.text.value.split("class='saekit-example'")[1:]
    assert len(rows) == len(confirmed.examples)
    for row, run in zip(rows, confirmed.examples):
        parsed = spans(row)
        outlined = [(style, title, text) for style, title, text in parsed if "font-weight:bold" in style]
        assert [text for _, _, text in outlined] == [H.escape(w) for w in CHAIN_WORDS]
        for k, (style, title, _) in enumerate(outlined):  # each run token in its state's colour, with its value
            assert state_colour(k, 1.0).rsplit(",", 1)[0] in style
            value = float(run.activations[run.start + k, k])
            assert title.endswith(f"activation {value:.4g}") and f"feature {k} (step {k})" in title
    assert "lift" in view.steps.value and f"{confirmed.full_runs} full runs" in view.steps.value
    view.show(1)
    assert view.picker.value == 1 and view.text.value == ""
    view.show(0)
    assert view.text.value and view.confirmations[0] is confirmed  # found once, shown again
    without = AutomatonView(chains, automaton.store)
    assert without.button.disabled and "pass dictionary= and model=" in without.text.value


def test_chain_figure_draws_a_cycle_back_and_a_self_loop_above():
    from saekit.analysis.automata import Chain
    from saekit.widgets.automata import AutomatonView, chain_figure

    cycle = Chain((4, 5, 6, 5), (3.0, 2.0, 1.0), 0.5, (("a",), ("b",), ("c",), ("b",)), ((), (), (), ()))
    *arrows, _, nodes = chain_figure(cycle).data
    assert list(nodes.customdata) == [4, 5, 6]
    assert max(arrows[2].y) < 0 and arrows[2].x[0] == 2 and arrows[2].x[-1] == 1  # 6 → 5 arcs back below
    loop = Chain((7, 7), (2.0,), 1.0, (("x",), ("x",)), ((), ()))
    *arrows, _, nodes = chain_figure(loop).data
    assert len(nodes.x) == 1 and min(arrows[0].y) > 0  # a feature handing off to itself loops above it
    from saekit.analysis.automata import TopicChains
    from saekit.analysis.topics import TOPICS

    empty = TopicChains(TOPICS["base64"], pd.DataFrame(), (), None, "looked for base64 automata <b>; found none")
    view = AutomatonView(empty, None)
    assert view.chain is None and view.button.disabled
    assert "found none" in view.note.value and "&lt;b&gt;" in view.note.value
