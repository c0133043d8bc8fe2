"""Steering: edits keep the error term (no-op edits change nothing), generation edits every step, and
pinning a feature moves the logits along its logit effects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saekit.activations import nnsight_api as api
from saekit.analysis import steering as St
from saekit.analysis.encoding import encode
from saekit.analysis.logit_effects import logit_effect_matrix, output_weights
from saekit.analysis.steering import FeatureEdit
from saekit.saes.provenance import Provenance

from helpers import HOOK, make_sae

PROMPT = [5, 17, 33, 9, 41]


@pytest.fixture(scope="module")
def sae():
    sae = make_sae("relu", 128, 64)
    sae.provenance = Provenance(hook=HOOK)
    return sae


def _greedy_by_hand(model, ids, steps, replace):
    """Greedy decoding by full re-forwards through spliced_logits: no KV cache, no nnsight generate."""
    ids = ids.clone()
    for _ in range(steps):
        logits = api.spliced_logits(model, ids, torch.ones_like(ids), HOOK, replace)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids


def test_generate_edits_every_step(tiny_lm, sae):
    ids = torch.tensor([PROMPT])
    replace = St.edit_function(sae, FeatureEdit(3, 25.0))
    steered = api.generate(tiny_lm, ids, max_new_tokens=6, hook=HOOK, replace=replace)
    assert steered.shape == (1, len(PROMPT) + 6)
    torch.testing.assert_close(steered, _greedy_by_hand(tiny_lm, ids, 6, replace))
    plain = api.generate(tiny_lm, ids, max_new_tokens=6)
    torch.testing.assert_close(plain, _greedy_by_hand(tiny_lm, ids, 6, lambda acts: acts))
    assert not torch.equal(plain, steered)


def test_edit_activations_match_the_formula(sae):
    acts = torch.randn(2, 7, 128)
    edits = [FeatureEdit(1, 4.0, "pin"), FeatureEdit(2, 1.5, "add"), FeatureEdit(3, 0.1, "clamp"),
             FeatureEdit(4, mode="ablate")]
    f = sae.encode(acts).detach()
    target = f.clone()
    target[..., 1] = 4.0
    target[..., 2] += 1.5
    target[..., 3] = target[..., 3].clamp(max=0.1)
    target[..., 4] = 0
    expected = acts + (target - f) @ sae.W_dec.detach()
    torch.testing.assert_close(St.edit_activations(sae, acts, edits), expected, rtol=1e-5, atol=1e-5)


def test_no_op_edits_reproduce_the_clean_model_exactly(tiny_lm, sae):
    shift = St.next_token_shift(tiny_lm, sae, PROMPT, FeatureEdit(3, 0.0, "add"))
    assert (shift["delta"] == 0).all() and (shift["p_before"] == shift["p_after"]).all()
    result = St.steer_generate(tiny_lm, sae, PROMPT, FeatureEdit(3, 0.0, "add"), max_new_tokens=5)
    assert torch.equal(result.clean_ids, result.steered_ids) and result.clean == result.steered
    # pinning a feature to the value it already has (one position, so one value) changes nothing
    ids = torch.tensor([PROMPT[:1]])
    acts = api.get_activations(tiny_lm, ids, None, HOOK)
    own = float(encode(sae, acts.reshape(1, -1))[0, 3])  # computed exactly as the edit computes it
    pinned = api.spliced_logits(tiny_lm, ids, None, HOOK, St.edit_function(sae, FeatureEdit(3, own, "pin")))
    assert torch.equal(pinned, api.clean_logits(tiny_lm, ids, None))


def test_pinning_strongly_follows_the_logit_effects(tiny_lm, sae):
    feature, value = 7, 60.0
    ids = torch.tensor([PROMPT])
    clean = api.clean_logits(tiny_lm, ids, None)[0, -1].log_softmax(-1)
    pinned = api.spliced_logits(tiny_lm, ids, None, HOOK, St.edit_function(sae, FeatureEdit(feature, value)))
    after = pinned[0, -1].log_softmax(-1)
    effects = logit_effect_matrix(sae.W_dec[feature : feature + 1].detach(), output_weights(tiny_lm, HOOK))[0]
    # the final layer norm rescales the pushed residual, so the pushed direction dominates the logits
    assert np.corrcoef(after.numpy(), effects.numpy())[0, 1] > 0.95
    assert np.corrcoef((after - clean).numpy(), effects.numpy())[0, 1] > 0.5
    shift = St.next_token_shift(tiny_lm, sae, PROMPT, FeatureEdit(feature, value), k=3)
    assert list(shift.columns) == ["token_id", "token", "p_before", "p_after", "delta"]
    assert shift["token_id"].iloc[0] in effects.topk(5).indices.tolist()
    np.testing.assert_allclose(shift["delta"], shift["p_after"] - shift["p_before"], atol=1e-7)


def test_steer_with_text_and_sweep(tiny_lm, sae):
    result = St.steer_generate(tiny_lm, sae, "The quick brown", FeatureEdit(7, 60.0), max_new_tokens=4)
    assert result.prompt == "The quick brown"
    assert result.clean != result.steered
    sweep = St.steering_sweep(tiny_lm, sae, "The quick brown", 7, [0.0, 60.0], mode="add", max_new_tokens=4,
                               progress=False)
    assert sweep["value"].tolist() == [0.0, 60.0]
    assert sweep["continuation"].tolist() == [result.clean, result.steered]


def test_feature_edit_validation(sae):
    with pytest.raises(ValueError, match="mode"):
        FeatureEdit(0, 1.0, "boost")
    with pytest.raises(IndexError, match="out of range"):
        St.edit_activations(sae, torch.zeros(1, 128), FeatureEdit(64, 1.0))


@pytest.mark.parametrize("kind", [dict(d_out=128), dict(n_models=2)])
def test_transcoders_and_crosscoders_are_refused_with_a_reason(tiny_lm, kind):
    import saekit
    from saekit.analysis import next_token_shift

    d_in = 256 if "n_models" in kind else 128
    other = saekit.SAE.create("relu", d_in, 16, seed=0, **kind)
    other.provenance = Provenance(hook=HOOK)
    with pytest.raises(saekit.InputError, match="cannot be steered yet"):
        next_token_shift(tiny_lm, other, "hello world", FeatureEdit(0, 1.0))


def test_an_encoder_without_an_lm_head_says_it_cannot_be_steered(tiny_bert_dir):
    from saekit.errors import InputError

    bert = api.load_model(tiny_bert_dir)
    sae = make_sae("topk", 32, 16)
    sae.provenance = Provenance(hook="encoder.layer.0.output.dense")
    for run in (St.steer_generate, St.next_token_shift):
        with pytest.raises(InputError, match="BertModel has no language-model head"):
            run(bert, sae, [5, 6, 7], FeatureEdit(1, 3.0))
    assert St.steering_problem(bert, sae) is not None and St.steering_problem(None, sae) is None
