"""Automated interpretability: excerpts with true activations, the prompts and their parsing, the offline n-gram
baseline, the scores against hand computations, and the language-model roles driven by a scripted client (a fake
that returns fixed texts: no language model runs in these tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saekit.analysis import autointerp as A
from saekit.analysis.autointerp import prompts as P
from saekit.analysis.features import StoreConfig
from saekit.errors import InputError

from helpers import HOOK, MARKUP_TEXTS, PAYLOAD, corpus, dense_acts, markup_neuron_store, tiny_store

STORE = StoreConfig(n_top=8, n_per_interval=2, n_bins=128, n_logits=4, batch_size=8)


@pytest.fixture(scope="module")
def tiny(tiny_lm):
    return tiny_store(tiny_lm, STORE)


# --- records -------------------------------------------------------------------------------------------


def test_records_hold_the_true_activation_of_every_token(tiny, tiny_lm):
    features = [0, 5, 11]
    config = A.RecordConfig(n_top=8, n_interval=4, n_random=5, left=6, right=3)
    units = A.unit_records(tiny.store, features, tiny_lm, tiny.sae, config)
    # independently: every window's activations through the SAE, by flat token index
    windows = corpus(tiny_lm)
    acts = tiny.sae.encode(torch.cat([a for a in [dense_acts(tiny_lm, windows)[0]]])).detach().numpy()
    flat = dense_acts(tiny_lm, windows)[1]
    by_index = {int(i): row for i, row in zip(flat, acts)}
    context = tiny.store.context_len
    for unit, feature in zip(units, features):
        assert unit.unit == feature and unit.basis == "feature"
        assert unit.max_activation == pytest.approx(float(tiny.store.features.loc[feature, "max_activation"]))
        top = tiny.store.top[tiny.store.top.feature == feature].sort_values("rank")
        assert [r.kind for r in unit.explain].count("top") == (len(top) + 1) // 2
        assert [r.kind for r in unit.test].count("top") == len(top) // 2
        assert [r.kind for r in unit.test].count("random") == 5
        for record in unit.explain + unit.test:
            for i, (token, value) in enumerate(zip(record.tokens, record.activations)):
                index = record.window * context + record.start + i
                assert token == tiny.store.vocab[tiny.store.token_ids.reshape(-1)[index]]
                if index in by_index:  # special tokens are not read by the store's pass
                    assert value == pytest.approx(by_index[index][feature], abs=1e-5)
        best = max(unit.explain, key=lambda r: r.activations.max())
        assert best.activations.max() == pytest.approx(top.activation.iloc[0], rel=1e-5)  # the top example itself


def test_records_need_the_dictionary_of_an_sae_store(tiny, tiny_lm):
    with pytest.raises(InputError, match="dictionary="):
        A.unit_records(tiny.store, [0], tiny_lm)
    with pytest.raises(InputError, match="out of range"):
        A.unit_records(tiny.store, [999], tiny_lm, tiny.sae)


def test_neuron_records_read_the_neurons(tmp_path):
    from saekit.activations import load_model

    from helpers import build_markup_model

    model = load_model(build_markup_model(tmp_path / "m"))
    store = markup_neuron_store(model)
    unit = A.unit_records(store, [3], model, config=A.RecordConfig(n_random=2))[0]
    assert unit.basis == "neuron"
    record = unit.explain[0]
    ids = torch.as_tensor(store.token_ids[record.window : record.window + 1].astype(np.int64))
    from saekit.activations import nnsight_api as api

    direct = api.get_activations(model, ids, torch.ones_like(ids), HOOK)[0, :, 3].numpy()
    np.testing.assert_allclose(record.activations, direct[record.start : record.start + len(record.tokens)],
                               atol=1e-5)


def test_levels_are_tenths_of_the_top_activation():
    np.testing.assert_array_equal(A.discretize(np.array([-1.0, 0.0, 0.05, 0.1, 0.55, 1.0, 2.0]), 1.0),
                                  [0, 0, 0, 1, 5, 10, 10])
    assert A.discretize(np.array([0.3]), 0.0).tolist() == [0]


# --- prompts ---------------------------------------------------------------------------------------------


def record(tokens, acts, kind="top"):
    return A.ActivationRecord(tuple(tokens), np.asarray(acts, dtype=np.float32), kind)


def test_corpus_text_cannot_forge_marks_or_break_lines():
    assert P.prompt_token("a<<b>>\n\t\\") == "a\\<\\<b\\>\\>\\n\\t\\\\"
    assert P.prompt_token("\x00") == "\\u0000"
    text = P.excerpt_text(["<<", "x", ">>"], [False, True, False])
    assert text == "\\<\\<<<x>>\\>\\>"  # the only unescaped marks are the ones the prompt put there
    assert P.quoted('say "hi"') == '"say \\"hi\\""'


def test_explanation_prompt_lists_levels_and_is_bounded():
    unit = A.UnitRecords(0, "feature", 2.0, (record(["the", " cat", " sat"], [0, 2.0, 0.5]),
                                             record([PAYLOAD, " x"], [1.0, 0.0])), ())
    text = P.explain_prompt_text(unit, P.PromptLimits())
    assert 'Excerpt 1: the<< cat>><< sat>>\nActivations: " cat" 10, " sat" 2\n' in text
    assert 'Excerpt 2: <<\\<img src=x onerror=alert(1)\\>>> x\nActivations: "\\<img' in text
    short = P.explain_prompt_text(unit, P.PromptLimits(max_chars=10))
    assert "Excerpt 1" in short and "Excerpt 2" not in short  # one excerpt always kept


def test_replies_are_parsed_leniently():
    assert P.parse_explanation("Sure.\nExplanation: \"base64 strings\"\n") == "base64 strings"
    assert P.parse_explanation("mentions of cats") == "mentions of cats"
    np.testing.assert_array_equal(P.parse_simulation('0\t3\n2\t"tok"\t7\n5: 4\n1\t12\n', 4), [3, 10, 7, 0])
    np.testing.assert_array_equal(P.parse_judgements("1\tyes\n2: No\n4\tyes\n9 yes", 4), [True, False, False, True])


# --- the n-gram baseline and the scores --------------------------------------------------------------------


def b_unit(n_test=6, seed=0) -> A.UnitRecords:
    """A unit that responds exactly on the token "b" (level 10), silent elsewhere."""
    rng = np.random.default_rng(seed)

    def make(kind, with_b):
        tokens = list(rng.choice(["a", "c", "d", "e"], 8))
        if with_b:
            tokens[int(rng.integers(8))] = "b"
        return record(tokens, [1.0 if t == "b" else 0.0 for t in tokens], kind)

    explain = tuple(make("top", True) for _ in range(4))
    test = tuple(make("top", True) for _ in range(n_test)) + tuple(make("random", False) for _ in range(n_test))
    return A.UnitRecords(7, "feature", 1.0, explain, test)


def test_ngram_table_matches_a_hand_count():
    unit = A.UnitRecords(1, "neuron", 1.0, (record(["x", "b", "x", "b"], [0.0, 1.0, 0.0, 0.5]),
                                            record(["y", "b"], [0.0, 0.0])), ())
    explanation = A.NgramExplainer(n=2).explain_all([unit], progress=False)[0]
    table = dict(explanation.ngrams)
    assert table[("b",)] == pytest.approx((10 + 5 + 0) / 3)  # every occurrence of "b" counts, silent ones too
    assert table[("x", "b")] == pytest.approx(7.5)  # the context adds something: kept
    assert ("y", "b") not in table and ("x",) not in table  # never responded
    assert explanation.explainer == A.NgramExplainer().name and "n-gram baseline" in explanation.text
    np.testing.assert_allclose(A.NgramSimulator().simulate_all([(explanation, record(["x", "b", "y", "b"], [0] * 4))],
                                                               progress=False)[0], [0, 7.5, 0, 5.0])


def test_a_token_feature_scores_perfectly_and_a_shuffled_one_does_not():
    unit = b_unit()
    explanation = A.explain([unit], A.NgramExplainer(), progress=False)
    scores = {s.name: A.score([unit], explanation, s, progress=False).score.iloc[0]
              for s in (A.SimulationScorer(A.NgramSimulator()), A.DetectionScorer(A.NgramJudge()),
                        A.FuzzingScorer(A.NgramJudge()))}
    assert scores == {"simulation": pytest.approx(1.0), "detection": 1.0, "fuzzing": 1.0}
    elsewhere = A.UnitRecords(7, "feature", 1.0, unit.explain, tuple(  # in truth it fires on "c", not "b"
        record(r.tokens, [float(t == "c") for t in r.tokens], r.kind) for r in unit.test))
    simulation = A.score([elsewhere], explanation, A.SimulationScorer(A.NgramSimulator()), progress=False)
    assert simulation.score.iloc[0] <= 0.0


def test_scores_equal_their_definitions():
    a, b = np.array([1.0, 2, 3, 5]), np.array([2.0, 1, 4, 4])
    assert A.correlation(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert A.correlation(a, np.ones(4)) == 0.0
    # TPR 2/3, TNR 1/2
    assert A.balanced_accuracy([1, 1, 0, 1, 0], [1, 1, 1, 0, 0]) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert np.isnan(A.balanced_accuracy([1, 0], [1, 1]))
    scores, truth = np.array([0.9, 0.1, 0.5, 0.5, 0.3]), np.array([1, 0, 1, 0, 0], dtype=bool)
    pairs = [(s > t) + 0.5 * (s == t) for s in scores[truth] for t in scores[~truth]]
    assert A.auroc(scores, truth) == pytest.approx(np.mean(pairs))


def test_fuzzing_marks_the_right_tokens_then_as_many_wrong_ones():
    unit = b_unit(n_test=3)
    items, right = A.FuzzingScorer(A.NgramJudge(), seed=1).items(unit)
    assert right.tolist() == [True, False] * 3  # the random excerpts (silent) are left out
    for good, bad in zip(items[0::2], items[1::2]):
        assert [t for t, m in zip(good.tokens, good.marked) if m] == ["b"]
        assert bad.marked.sum() == 1 and "b" not in [t for t, m in zip(bad.tokens, bad.marked) if m]


def test_embedding_score_is_the_auroc_of_cosines():
    unit = b_unit()

    def embed(texts):  # counts of each letter: "b" in the explanation and the excerpt make them closer
        return np.array([[t.count(c) for c in "abcde"] for t in texts], dtype=float)

    explanation = A.Explanation(7, "feature", "b b b", "hand")
    got = A.score([unit], [explanation], A.EmbeddingScorer(embed, "letters"), progress=False)
    vectors = embed(["b b b"] + [r.text() for r in unit.test])
    cosines = vectors[1:] @ vectors[0] / np.linalg.norm(vectors[1:], axis=1) / np.linalg.norm(vectors[0])
    truth = np.array([unit.firing(r) for r in unit.test])
    assert got.score.iloc[0] == pytest.approx(A.auroc(cosines, truth)) and got.score.iloc[0] > 0.9
    assert got.by.iloc[0] == "letters"


def test_wordllama_scorer_runs_offline():
    pytest.importorskip("wordllama")
    scorer = A.wordllama_scorer()
    unit = b_unit()
    got = A.score([unit], [A.Explanation(7, "feature", "the letter b", "hand")], scorer, progress=False)
    assert 0.0 <= got.score.iloc[0] <= 1.0 and got.by.iloc[0].startswith("WordLlama")


def test_score_refuses_explanations_out_of_order():
    units = [b_unit(seed=0), A.UnitRecords(8, "feature", 1.0, (), ())]
    explanations = A.explain(units, A.NgramExplainer(), progress=False)
    with pytest.raises(InputError, match="out of order"):
        A.score(units, explanations[::-1], A.SimulationScorer(A.NgramSimulator()), progress=False)


# --- the language-model roles, with a scripted client ------------------------------------------------------


def ScriptedClient(reply):  # noqa: N802 (a factory named for what it makes)
    """Fixed replies computed from each prompt (saekit.llm.ScriptedReplies): not a language model."""
    from saekit.llm import ScriptedReplies

    return ScriptedReplies(reply)


def test_scripted_explainer_sends_the_excerpts_and_parses_the_reply():
    client = ScriptedClient(lambda p: "Explanation: the letter b")
    unit = b_unit()
    [explanation] = A.explain([unit], A.LMExplainer(client), progress=False)
    assert explanation.text == "the letter b" and explanation.explainer.startswith("scripted:")
    [prompt] = client.received
    assert prompt.system == P.EXPLAIN_SYSTEM and "<<b>>" in prompt.messages[0][1] and prompt.temperature == 0.0


def test_scripted_simulator_and_judges_score_like_the_baseline():
    """Replies that say what the n-gram table says: the scores equal the baseline's exactly."""
    unit = b_unit(n_test=10)

    def simulate(prompt):
        lines = prompt.messages[0][1].split("Tokens:\n")[1].splitlines()
        return "\n".join(f"{i}\t{10 if line.endswith(chr(34) + 'b' + chr(34)) else 0}" for i, line in enumerate(lines))

    def judge(prompt):
        excerpts = prompt.messages[0][1].split("Excerpts:\n")[1].splitlines()
        if prompt.system == P.DETECT_SYSTEM:
            return "\n".join(f"{i}\t{'yes' if 'b' in e.split(chr(9))[1] else 'no'}" for i, e in enumerate(excerpts, 1))
        return "\n".join(f"{i}\t{'yes' if '<<b>>' in e else 'no'}" for i, e in enumerate(excerpts, 1))

    explanation = A.Explanation(7, "feature", "the letter b", "hand")
    for scorer, baseline in ((A.SimulationScorer(A.LMSimulator(ScriptedClient(simulate))),
                              A.SimulationScorer(A.NgramSimulator())),
                             (A.DetectionScorer(A.LMJudge(ScriptedClient(judge))), A.DetectionScorer(A.NgramJudge())),
                             (A.FuzzingScorer(A.LMJudge(ScriptedClient(judge))), A.FuzzingScorer(A.NgramJudge()))):
        got = A.score([unit], [explanation], scorer, progress=False).score.iloc[0]
        expected = A.score([unit], A.explain([unit], A.NgramExplainer(), progress=False), baseline,
                           progress=False).score.iloc[0]
        assert got == pytest.approx(expected) == pytest.approx(1.0), scorer.name
    judge_client = ScriptedClient(judge)
    A.score([unit], [explanation], A.DetectionScorer(A.LMJudge(judge_client)), progress=False)
    assert len(judge_client.received) == 3  # 20 excerpts, 8 per prompt


def test_cost_is_estimated_before_anything_is_sent():
    client = ScriptedClient(lambda p: "")
    units = [b_unit(seed=s) for s in range(3)]
    table = A.estimate_cost(units, A.LMExplainer(client), [A.SimulationScorer(A.LMSimulator(client)),
                                                           A.DetectionScorer(A.NgramJudge())])
    assert client.received == []
    assert table.step.tolist() == ["explain", "simulation", "detection"]
    assert table.prompts.tolist() == [3, 3 * 12, 0]  # one per unit; one per test excerpt; offline
    explain_prompts = A.LMExplainer(client).prompts(units)
    assert table.input_tokens.iloc[0] == sum(-(-len(t) // 4) for p in explain_prompts for t in p.texts() if t)
    assert table.method.iloc[2] == "offline: nothing is sent"


def test_markup_corpus_reaches_prompts_escaped(tmp_path):
    tokens = MARKUP_TEXTS[0].split(" ")
    unit = A.UnitRecords(0, "feature", 1.0, (record(tokens, [0.0, 1.0] * 6),), ())
    text = P.explain_prompt_text(unit, P.PromptLimits())
    unescaped = text.replace("\\<", "").replace("\\>", "")
    assert unescaped.count("<") == unescaped.count(">") == 2 * 6  # only the prompt's own marks
    assert "\\<img" in text and "\\<script\\>" in text


def test_units_come_back_in_order_of_request(tiny, tiny_lm):
    units = A.unit_records(tiny.store, [9, 2], tiny_lm, tiny.sae, A.RecordConfig(n_random=1))
    assert [u.unit for u in units] == [9, 2]


def test_prompts_from_a_real_store_mark_its_top_example(tiny, tiny_lm):
    [unit] = A.unit_records(tiny.store, [4], tiny_lm, tiny.sae, A.RecordConfig(n_random=2))
    top = max(unit.explain, key=lambda r: r.activations.max())
    peak = int(top.activations.argmax())
    text = P.explain_prompt_text(unit, P.PromptLimits())
    assert f"{P.OPEN}{P.prompt_token(top.tokens[peak])}{P.CLOSE}" in text.split("\n")[0]  # the strongest excerpt first
    assert f"{P.quoted(top.tokens[peak])} 10" in text.split("\n")[1]
    simulate = P.simulate_prompt_text("anything", unit.test[0])
    assert simulate.count("\n") == len(unit.test[0].tokens) + 2  # explanation, blank, header, one line per token
