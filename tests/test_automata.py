"""Automata of features: hand-off scores against hand and numpy computations, chain search on hand-made edges
and on a planted automaton in a tiny real model, the on-text counts against brute-force loops, and topics."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import saekit
from saekit.activations import nnsight_api as api
from saekit.analysis.automata import (
    Chain,
    ChainConfig,
    HandoffConfig,
    chain_evidence,
    chain_table,
    confirm_chain,
    confirm_chains,
    confirmation_table,
    eligible_features,
    find_chains,
    firing_tokens,
    handoff_edges,
    handoff_scores,
    strong_threshold,
    topic_chains,
)
from saekit.analysis.features import FeatureStore, StoreConfig
from saekit.analysis.topics import Topic, topic_features, topic_mask
from saekit.errors import InputError
from saekit.saes.provenance import Provenance

from helpers import (
    CHAIN_WORDS,
    HOOK,
    PAYLOAD,
    SCRIPT,
    build_markup_model,
    dense_acts,
    planted_automaton,
    tiny_store,
)

# --- a store written by hand ------------------------------------------------------------------------------------

VOCAB = ["a", "b", "c", "d", "e"]
WINDOW = [0, 1, 2, 3, 0, 1, 2, 3]  # one window of token ids
# (feature, interval, sample, interval_count, activation, token_index)
INTERVALS = [
    (0, 0, 0, 4, 1.0, 0), (0, 0, 1, 4, 1.0, 2), (0, 5, 0, 1, 2.0, 3),  # weights a 2, c 2, d 2
    (1, 2, 0, 3, 3.0, 1), (1, 10, 0, 1, 1.0, 7),  # b 9, d 1
    (2, 0, 0, 1, 0.5, 4),  # a
]
TOP = [(0, 0, 2.0, 3), (0, 1, 1.0, 0), (1, 0, 3.0, 1), (2, 0, 0.5, 4)]  # (feature, rank, activation, token_index)


def hand_store(n_features: int = 3, intervals=INTERVALS, top=TOP, mean=(1.5, 2.0, 0.5), n_fires=None,
               windows=(WINDOW,), vocab=VOCAB, lengths=None) -> FeatureStore:
    """A FeatureStore filled by hand (no model): what the hand computations below read."""
    ids = np.asarray(windows, dtype=np.int32)
    iv = pd.DataFrame(intervals, columns=["feature", "interval", "sample", "interval_count", "activation",
                                          "token_index"])
    iv["interval_start"], iv["interval_end"] = 0.0, 1.0
    features = pd.DataFrame({
        "feature": np.arange(n_features), "density": 0.01,
        "n_fires": list(n_fires) if n_fires is not None else [20] * n_features,
        "mean_activation": list(mean), "max_activation": 3.0, "bin_width": 0.1,
    })
    logits = pd.DataFrame({"feature": np.arange(n_features), "direction": "boost", "rank": 0, "token_id": 0,
                           "token": vocab[0], "logit": 1.0})
    return FeatureStore(
        meta={"n_features": n_features, "context_len": ids.shape[1], "hook": HOOK, "side": "output",
              "special_ids": []},
        features=features, top=pd.DataFrame(top, columns=["feature", "rank", "activation", "token_index"]),
        intervals=iv, histograms=pd.DataFrame({"feature": [], "bin": [], "count": []}), logits=logits,
        token_ids=ids, lengths=np.asarray(lengths if lengths is not None else [ids.shape[1]] * len(ids), np.int32),
        vocab=list(vocab))


def hand_model():
    """A one-block GPT-2 (d_model 4, 16 neurons, 5 tokens) whose output path is set by hand: neuron 0 writes
    [3, 0, 0, -1], neuron 1 writes [0, 1, 0, 3]; the final norm's γ is [1, 2, 1, 1]; token t unembeds as the t-th
    unit vector, token 4 as [1, 1, 1, 1]."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=4, n_head=1, n_positions=8, vocab_size=5)).eval()
    with torch.no_grad():
        proj = model.transformer.h[0].mlp.c_proj.weight  # Conv1D: [in 16, out 4]
        proj.zero_()
        proj[0] = torch.tensor([3.0, 0, 0, -1])
        proj[1] = torch.tensor([0.0, 1, 0, 3])
        model.transformer.ln_f.weight.copy_(torch.tensor([1.0, 2, 1, 1]))
        model.transformer.wte.weight.copy_(torch.cat([torch.eye(4), torch.ones(1, 4)]))
    return model


def hand_sae() -> saekit.SAE:
    """Feature 0 writes 2 × neuron 0, feature 1 neuron 1, feature 2 nothing."""
    sae = saekit.SAE.create("relu", 16, 3, seed=0)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.W_dec[0, 0], sae.W_dec[1, 1] = 2.0, 1.0
    sae.provenance = Provenance(hook=HOOK)
    return sae


def test_firing_tokens_weigh_each_sample_by_its_intervals_count():
    rows = firing_tokens(hand_store())
    got = {(f, t): w for f, t, w in zip(rows["feature"], rows["token"], rows["weight"])}
    assert got == pytest.approx({(0, "a"): 1 / 3, (0, "c"): 1 / 3, (0, "d"): 1 / 3, (1, "b"): 0.9, (1, "d"): 0.1,
                                 (2, "a"): 1.0})
    top = firing_tokens(hand_store(), [0], examples="top")
    assert list(top["token"]) == ["d", "a"] and list(top["weight"]) == pytest.approx([2 / 3, 1 / 3])


def test_handoff_score_by_hand():
    """Feature 0's effects: resid 2·[3,0,0,-1] → centred [5,-1,-1,-3] → ·γ [5,-2,-1,-3] → logits [5,-2,-1,-3,-1]
    → minus their median (-1): e_0 = [6,-1,0,-2,0]. Feature 1: [0,1,0,3] → [-1,0,-1,2] → logits [-1,0,-1,2,0],
    median 0: e_1 = [-1,0,-1,2,0]. s_ij = a_i Σ_v q_j(v) e_i(v) with a = (1.5, 2, 0.5) and q from the store."""
    scores = handoff_scores(hand_store(), hand_sae(), hand_model())
    expected = [[1.5 * (6 - 2) / 3, 1.5 * (0.9 * -1 + 0.1 * -2), 1.5 * 6],
                [2 * (-1 - 1 + 2) / 3, 2 * 0.1 * 2, 2 * -1],
                [0, 0, 0]]
    assert scores.numpy() == pytest.approx(np.array(expected), abs=1e-5)
    unit = handoff_scores(hand_store(), hand_sae(), hand_model(), [0], [2], config=HandoffConfig(scale="unit"))
    assert float(unit) == pytest.approx(6.0, abs=1e-5)
    top = handoff_scores(hand_store(), hand_sae(), hand_model(), [0], [0], config=HandoffConfig(examples="top"))
    assert float(top) == pytest.approx(1.5 * (2 / 3 * -2 + 1 / 3 * 6), abs=1e-5)


@pytest.fixture(scope="module")
def tiny(tiny_lm):
    return tiny_store(tiny_lm, StoreConfig(n_top=6, n_per_interval=3, n_bins=128, n_logits=4, batch_size=8))


def _numpy_scores(store: FeatureStore, sae, model) -> np.ndarray:
    """s_ij from the model's weights in numpy, with the token distributions summed in a plain loop."""
    module = api.underlying_module(model)
    W_out = module.transformer.h[0].mlp.c_proj.weight.detach().numpy().astype(np.float64)  # [d_mlp, d_model]
    gamma = module.transformer.ln_f.weight.detach().numpy().astype(np.float64)
    W_U = module.lm_head.weight.detach().numpy().astype(np.float64)
    resid = sae.W_dec.detach().numpy().astype(np.float64) @ W_out
    logits = ((resid - resid.mean(1, keepdims=True)) * gamma) @ W_U.T
    effects = logits - np.median(logits, axis=1, keepdims=True)  # [n, vocab]
    q = np.zeros((store.n_features, W_U.shape[0]))
    drawn: dict[tuple[int, int], int] = {}
    for row in store.intervals.itertuples():
        drawn[(row.feature, row.interval)] = drawn.get((row.feature, row.interval), 0) + 1
    flat = store.token_ids.reshape(-1)
    for row in store.intervals.itertuples():
        q[row.feature, flat[row.token_index]] += row.activation * row.interval_count / drawn[(row.feature,
                                                                                             row.interval)]
    q /= np.maximum(q.sum(1, keepdims=True), 1e-300)
    mean = store.features["mean_activation"].to_numpy()
    return mean[:, None] * effects @ q.T


def test_handoff_scores_match_numpy_on_the_tiny_model(tiny, tiny_lm):
    got = handoff_scores(tiny.store, tiny.sae, tiny_lm).numpy()
    want = _numpy_scores(tiny.store, tiny.sae, tiny_lm)
    assert got.shape == (40, 40)
    assert np.abs(got - want).max() < 1e-4 * max(np.abs(want).max(), 1e-6)
    # the activation scale is each feature's mean where it fires, as the dense codes give it
    f = tiny.sae.encode(dense_acts(tiny_lm, tiny.windows)[0]).detach()
    fired = (f > 0).sum(0)
    live = fired > 0
    assert tiny.store.features["mean_activation"].to_numpy()[live.numpy()] == pytest.approx(
        (f.sum(0)[live] / fired[live]).numpy(), rel=1e-4)


def test_handoff_edges_are_each_features_strongest(tiny, tiny_lm):
    config = HandoffConfig(max_density=1.0, min_fires=1)
    ids = eligible_features(tiny.store, config)
    assert 0 < len(ids) < 40  # the dead feature is left out
    edges = handoff_edges(tiny.store, tiny.sae, tiny_lm, k=4, config=config, progress=False)
    full = _numpy_scores(tiny.store, tiny.sae, tiny_lm)[np.ix_(ids, ids)]
    assert len(edges) == 4 * len(ids)
    for source, group in edges.groupby("source"):
        row = full[list(ids).index(source)]
        best = ids[np.argsort(-row, kind="stable")[:4]]
        assert list(group.sort_values("rank")["target"]) == list(best)
        assert group.sort_values("rank")["score"].to_numpy() == pytest.approx(np.sort(row)[::-1][:4], abs=1e-5)
    assert strong_threshold(edges, 0.5) == pytest.approx(np.median(edges.loc[edges["rank"] == 0, "score"]))
    dense = HandoffConfig(max_density=0.2, min_fires=1)
    kept = eligible_features(tiny.store, dense)
    assert (tiny.store.features["density"].to_numpy()[kept] <= 0.2).all()


# --- chains on hand-made hand-offs ------------------------------------------------------------------------------


def edge_table(scores: dict[tuple[int, int], float]) -> pd.DataFrame:
    """Hand-off edges as handoff_edges writes them (ranked per source)."""
    table = pd.DataFrame([(s, t, v) for (s, t), v in scores.items()], columns=["source", "target", "score"])
    table["rank"] = table.groupby("source")["score"].rank(ascending=False, method="first").astype(int) - 1
    return table


def many_store(n: int) -> FeatureStore:
    """A hand store with n features, feature f firing on token f (mod 5) of the one window."""
    intervals = [(f, 0, 0, 1, 1.0, f % 5) for f in range(n)]
    top = [(f, 0, 1.0, f % 5) for f in range(n)]
    return hand_store(n, intervals, top, mean=[1.0] * n)


def test_chains_rank_by_margin_and_a_stretch_counts_once():
    """p→q→r is strong (10, 9.5) and r's weak hand-off to s (1) extends it: p→q→r ranks first with margin 8.5
    (its weakest 9.5 over the 1 that would extend it); p→q (a stretch of it) is not listed again; p→q→r→s is,
    with its margin 1 − 0.5."""
    p, q, r, s = 0, 1, 2, 3
    chains = find_chains(edge_table({(p, q): 10.0, (q, r): 9.5, (r, s): 1.0}), many_store(4),
                         ChainConfig(min_score=0.5))
    assert [c.features for c in chains] == [(p, q, r), (p, q, r, s)]
    assert [c.margin for c in chains] == pytest.approx([8.5, 0.5])
    assert chains[0].scores == (10.0, 9.5) and chains[0].weakest == 9.5
    assert chains[0].labels == (("a",), ("b",), ("c",))  # each feature's firing token, from the store
    table = chain_table(chains)
    assert list(table["length"]) == [3, 4] and list(table["weakest"]) == [9.5, 1.0]
    assert chains[0].table()["target"].tolist() == [q, r]
    strict = find_chains(edge_table({(p, q): 10.0, (q, r): 9.5, (r, s): 1.0}), many_store(4),
                         ChainConfig(min_score=2.0))  # r→s is no longer followed: nothing extends p→q→r
    assert [c.features for c in strict] == [(p, q, r)] and strict[0].margin == pytest.approx(7.5)


def test_cycles_close_count_once_and_self_loops_are_one_state_automata():
    """x enters the cycle a→b→c→a; y hands off to itself; z→w is a weak single hand-off."""
    x, a, b, c, y, z, w = range(7)
    edges = edge_table({(x, a): 5.0, (a, b): 9.0, (b, c): 8.0, (c, a): 7.0, (y, y): 3.0, (z, w): 1.5})
    chains = find_chains(edges, many_store(7), ChainConfig(min_score=1.0))
    assert [ch.features for ch in chains] == [(x, a, b, c, a), (y, y), (z, w)]
    assert chains[0].closes_cycle and chains[0].states == (x, a, b, c) and chains[0].next_state(3) == 1
    assert chains[1].closes_cycle and chains[1].states == (y,) and chains[1].next_state(0) == 0
    assert not chains[2].closes_cycle and chains[2].next_state(1) is None
    assert [ch.margin for ch in chains] == pytest.approx([4.0, 2.0, 0.5])
    no_self = find_chains(edges, many_store(7), ChainConfig(min_score=1.0, self_loops=False))
    assert [ch.features for ch in no_self] == [(x, a, b, c, a), (z, w)]
    # without x, the cycle alone is one chain, starting after its weakest hand-off (c→a)
    ring = find_chains(edge_table({(a, b): 9.0, (b, c): 8.0, (c, a): 7.0}), many_store(7),
                       ChainConfig(min_score=1.0))
    assert [ch.features for ch in ring] == [(a, b, c, a)] and ring[0].scores == (9.0, 8.0, 7.0)
    short = find_chains(edges, many_store(7), ChainConfig(min_score=1.0, max_length=3, min_length=3))
    assert all(len(ch.features) == 3 for ch in short) and (x, a, b) in [ch.features for ch in short]


def test_chain_config_says_what_to_change():
    with pytest.raises(InputError, match="min_length"):
        ChainConfig(min_length=4, max_length=3)
    with pytest.raises(InputError, match="max_density"):
        HandoffConfig(max_density=0.0)
    with pytest.raises(InputError, match="examples"):
        HandoffConfig(examples="all")
    with pytest.raises(InputError, match="out of range"):
        handoff_scores(hand_store(), hand_sae(), hand_model(), [7])
    with pytest.raises(InputError, match="features"):
        handoff_scores(hand_store(2, mean=(1, 1)), hand_sae(), hand_model())


# --- a planted automaton ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(tiny_lm):
    return planted_automaton(tiny_lm)


def test_the_planted_chain_is_found_first(planted, tiny_lm):
    config = HandoffConfig(min_fires=3)
    edges = handoff_edges(planted.store, planted.sae, tiny_lm, k=3, config=config, progress=False)
    chains = find_chains(edges, planted.store)  # the automatic threshold
    assert chains[0].features == (0, 1, 2, 3)
    assert chains[0].scores == pytest.approx((10.0, 10.0, 10.0), rel=1e-3)  # each boosts the next word 10 nats
    assert [labels[0] for labels in chains[0].labels] == CHAIN_WORDS
    assert chains[0].boosts[0][0] == CHAIN_WORDS[1]
    assert chains[0].margin > 2.0


def _brute_force(chain: Chain, fires: np.ndarray, valid: np.ndarray):
    """Per step (source fires, followed), per state its firings, and every maximal run, in plain loops."""
    n_windows, length, _ = fires.shape
    index = {f: i for i, f in enumerate(chain.states)}
    steps = []
    for source, target in zip(chain.features[:-1], chain.features[1:]):
        went = followed = 0
        for w, t in itertools.product(range(n_windows), range(length - 1)):
            if valid[w, t + 1] and fires[w, t, index[source]]:
                went += 1
                followed += bool(fires[w, t + 1, index[target]])
        steps.append((went, followed))
    runs = set()
    for w, t, k in itertools.product(range(n_windows), range(length), range(len(chain.states))):
        if not fires[w, t, k]:
            continue
        if t > 0 and any(fires[w, t - 1, j] and chain.next_state(j) == k for j in range(len(chain.states))):
            continue  # inside a run that began earlier
        n, state, pos = 1, k, t
        while chain.next_state(state) is not None and pos + 1 < length and fires[w, pos + 1, chain.next_state(state)]:
            n, state, pos = n + 1, chain.next_state(state), pos + 1
        if n >= 2:
            runs.add((w, t, k, n))
    return steps, runs


def _valid(store: FeatureStore, n_windows: int) -> np.ndarray:
    valid = np.zeros((n_windows, store.context_len), dtype=bool)
    for w in range(n_windows):
        for t in range(int(store.lengths[w])):
            valid[w, t] = int(store.token_ids[w, t]) not in store.meta["special_ids"]
    return valid


def test_confirmation_counts_match_a_brute_force_loop(planted, tiny_lm):
    chain = Chain((0, 1, 2, 3), (10.0,) * 3, 1.0, (("x",),) * 4, ((),) * 4)
    confirmed = confirm_chain(planted.store, planted.sae, tiny_lm, chain, progress=False)
    # the activations from one dense forward of all windows, placed at their flat token indices
    store, windows = planted.store, planted.windows
    acts, flat = dense_acts(tiny_lm, windows)
    codes = np.zeros((len(windows) * store.context_len, 4), dtype=np.float32)
    codes[flat] = planted.sae.encode(acts)[:, :4].detach().numpy()
    valid = _valid(store, len(windows))
    fires = (codes.reshape(len(windows), store.context_len, 4) > 0) & valid[..., None]
    steps, runs = _brute_force(chain, fires, valid)
    assert list(zip(confirmed.steps["source_fires"], confirmed.steps["followed"])) == steps
    n_tokens = int(valid.sum())
    assert confirmed.n_tokens == n_tokens
    base = fires.reshape(-1, 4).sum(0) / n_tokens
    assert confirmed.steps["base_rate"].to_numpy() == pytest.approx(base[1:])
    lift = [f / s / b for (s, f), b in zip(steps, base[1:])]
    assert confirmed.steps["lift"].to_numpy() == pytest.approx(lift)
    assert set(map(tuple, confirmed.runs[["window", "position", "first_step", "n_steps"]].to_numpy())) == runs
    full = sum(1 for _, _, k, n in runs if k == 0 and n == 4)
    assert confirmed.full_runs == full and full >= 6  # the phrase runs the chain (unless a window cuts it)
    starts = sum(valid[w, t : t + 4].all() for w in range(len(windows)) for t in range(store.context_len - 3))
    assert confirmed.expected_full_runs == pytest.approx(starts * np.prod(base))
    first = confirmed.examples[0]
    assert first.n_steps == 4 and first.first_step == 0
    assert first.tokens[first.start : first.start + 4] == tuple(CHAIN_WORDS)
    assert (first.activations[first.start : first.start + 4].argmax(1) == np.arange(4)).all()
    table = confirmation_table([confirmed])
    assert table.loc[0, "full_runs"] == full and table.loc[0, "min_lift"] == pytest.approx(min(lift))


def test_runs_go_round_a_cycle_as_a_brute_force_loop_finds_them(planted):
    """Random firings of a cycle's states (a → b → c → b ...) on the store's windows, counted both ways."""
    chain = Chain((5, 6, 7, 6), (1.0, 1.0, 1.0), 1.0, ((),) * 4, ((),) * 4)
    store = planted.store
    rng = np.random.default_rng(0)
    n_windows = len(store.token_ids)
    acts = np.where(rng.random((n_windows, store.context_len, 3)) < 0.45,
                    rng.random((n_windows, store.context_len, 3)) + 0.1, 0.0)
    confirmed = chain_evidence(store, chain, acts)
    valid = _valid(store, n_windows)
    steps, runs = _brute_force(chain, (acts > 0) & valid[..., None], valid)
    assert list(zip(confirmed.steps["source_fires"], confirmed.steps["followed"])) == steps
    assert set(map(tuple, confirmed.runs[["window", "position", "first_step", "n_steps"]].to_numpy())) == runs
    assert max(n for *_, n in runs) > 4  # some runs go round the cycle
    assert confirmed.full_runs == sum(1 for _, _, k, n in runs if k == 0 and n >= 4)
    assert list(confirmed.runs["n_steps"]) == sorted(confirmed.runs["n_steps"], reverse=True)
    assert len({r.window for r in confirmed.examples}) == len(confirmed.examples) == 6


def test_confirm_chains_reads_the_model_once_for_several(planted, tiny_lm, tiny_lm_dir, monkeypatch):
    import saekit.analysis.automata as automata

    calls = []
    real = automata.chain_activations
    monkeypatch.setattr(automata, "chain_activations", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    one = Chain((0, 1), (1.0,), 1.0, ((),) * 2, ((),) * 2)
    two = Chain((2, 3, 2), (1.0, 1.0), 1.0, ((),) * 3, ((),) * 3)
    both = confirm_chains(planted.store, planted.sae, tiny_lm, [one, two], max_windows=5, progress=False)
    assert calls == [[0, 1, 2, 3]]
    alone = confirm_chain(planted.store, planted.sae, tiny_lm, two, max_windows=5, progress=False)
    pd.testing.assert_frame_equal(both[1].steps, alone.steps)
    assert both[1].n_tokens == alone.n_tokens == int(_valid(planted.store, 5).sum())
    from_folder = confirm_chain(planted.store, planted.sae, tiny_lm_dir, two, max_windows=5, progress=False)
    pd.testing.assert_frame_equal(from_folder.steps, alone.steps)  # a model folder works as the loaded model


# --- topics -----------------------------------------------------------------------------------------------------


def test_topic_mask_marks_the_tokens_inside_a_match():
    tokens = ["key", ":", " QUJD", "RGVm", "Z2hp", "amts", "bW5v", "cDEy", "==", " end", " <a", " href", '="x"', ">",
              "hi", "</a>", " &amp;", " 5", " < ", "b", ">"]
    store = hand_store(1, [(0, 0, 0, 1, 1.0, 2)], [(0, 0, 1.0, 2)], mean=[1.0], windows=[list(range(len(tokens)))],
                       vocab=tokens)
    base64 = topic_mask(store, "base64")[0]
    assert [t for t, m in zip(tokens, base64) if m] == tokens[2:9]
    markup = topic_mask(store, "markup")[0]
    assert [t for t, m in zip(tokens, markup) if m] == [" <a", " href", '="x"', ">", "</a>", " &amp;"]
    table = topic_features(store, "base64")
    assert list(table["feature"]) == [0] and table.loc[0, "share"] == 1.0
    assert topic_features(store, "markup").empty
    with pytest.raises(InputError, match="unknown topic"):
        topic_mask(store, "html")


def test_topic_search_finds_the_planted_phrase_or_says_what_it_looked_for(planted, tiny_lm):
    phrase = Topic("fox", r"quick brown fox jumps", "the phrase 'quick brown fox jumps'")
    config = HandoffConfig(min_fires=3)
    found = topic_chains(planted.store, planted.sae, tiny_lm, phrase, config=config, progress=False)
    assert found.found and found.chains[0].features == (0, 1, 2, 3)
    assert set(found.features["feature"]) >= {0, 1, 2, 3} and found.features["eligible"].any()
    assert "looked for fox automata" in found.note and "chains with every hand-off" in found.note
    none = topic_chains(planted.store, planted.sae, tiny_lm, "base64", config=config, progress=False)
    assert not none.found and none.chains == () and none.features.empty
    assert none.note.startswith("looked for base64 automata") and "found no such feature" in none.note
    strict = topic_chains(planted.store, planted.sae, tiny_lm, phrase, config=config,
                          chains=ChainConfig(min_score=50.0), progress=False)
    assert not strict.found and "no hand-off among them ≥ 50" in strict.note


def test_markup_features_of_a_model_whose_tokens_are_tags(tmp_path):
    from helpers import markup_neuron_store

    model = api.load_model(build_markup_model(tmp_path / "markup"))
    store = markup_neuron_store(model)
    mask = topic_mask(store, "markup")
    flat = store.token_ids.reshape(-1)
    tags = np.isin(flat, [store.vocab.index(PAYLOAD), store.vocab.index(SCRIPT)])
    assert mask.reshape(-1)[tags].all()  # every tag token is inside a match
    table = topic_features(store, "markup", min_share=0.5)
    on_tags = store.top.assign(tag=tags[store.top["token_index"].to_numpy()]).groupby("feature")["tag"].mean()
    assert set(on_tags[on_tags >= 0.5].index) <= set(table["feature"])
