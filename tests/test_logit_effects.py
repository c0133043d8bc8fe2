"""Logit effects: decoder directions through W_out, the final norm's linear part and W_U, median-centred."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saekit.activations import nnsight_api as api
from saekit.analysis import logit_effects as L

from helpers import HOOK


def _numpy_effects(directions, W_out, W_U, gamma=None):
    resid = directions @ W_out
    if gamma is not None:
        resid = (resid - resid.mean(-1, keepdims=True)) * gamma
    effects = resid @ W_U.T
    return effects - np.median(effects, axis=-1, keepdims=True)


@pytest.fixture
def weights():
    g = torch.Generator().manual_seed(0)
    return L.OutputWeights(torch.randn(12, 6, generator=g), torch.randn(9, 6, generator=g),
                           torch.rand(6, generator=g) + 0.5, True)


@pytest.mark.parametrize("final_norm", [True, False])
def test_logit_effects_match_numpy(weights, final_norm):
    if not final_norm:
        weights = weights._replace(norm_weight=None)
    directions = torch.randn(5, 12)
    gamma = weights.norm_weight.numpy() if final_norm else None
    expected = _numpy_effects(directions.numpy(), weights.W_out.numpy(), weights.W_U.numpy(), gamma)
    got = L.logit_effect_matrix(directions, weights)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.median(got.numpy(), axis=-1), 0, atol=1e-6)


@pytest.mark.parametrize("n", [7, 8])
def test_median_is_numpys(n):
    values = torch.randn(3, n)
    np.testing.assert_allclose(L.median(values)[:, 0].numpy(), np.median(values.numpy(), axis=-1), rtol=1e-6)


def test_top_logit_effects_in_chunks(weights, monkeypatch):
    monkeypatch.setattr(L, "FEATURE_CHUNK", 2)  # several chunks for 5 features
    directions = torch.randn(5, 12)
    tokens = [f"t{i}" for i in range(9)]
    table = L.top_logit_effects(directions, weights, tokens, k=3, features=[10, 11, 12, 13, 14])
    effects = L.logit_effect_matrix(directions, weights).numpy()
    assert len(table) == 5 * 2 * 3
    for i, feature in enumerate(range(10, 15)):
        rows = table[table.feature == feature]
        boost, suppress = rows[rows.direction == "boost"], rows[rows.direction == "suppress"]
        assert boost["token_id"].tolist() == np.argsort(-effects[i])[:3].tolist()
        assert suppress["token_id"].tolist() == np.argsort(effects[i])[:3].tolist()
        assert boost["token"].tolist() == [tokens[t] for t in boost["token_id"]]
        np.testing.assert_allclose(boost["logit"], np.sort(effects[i])[::-1][:3], rtol=1e-6)


def test_output_weights_of_gpt2(tiny_lm):
    module = api.underlying_module(tiny_lm)
    found = L.output_weights(tiny_lm, HOOK)
    torch.testing.assert_close(found.W_out, module.transformer.h[0].mlp.c_proj.weight)  # Conv1D: [in, out]
    torch.testing.assert_close(found.W_U, module.lm_head.weight)
    torch.testing.assert_close(found.norm_weight, module.transformer.ln_f.weight)
    assert found.norm_centers
    assert L.output_weights(tiny_lm, HOOK, final_norm=False).norm_weight is None
    with pytest.raises(ValueError, match="output projection"):
        L.output_weights(tiny_lm, "transformer.wte")


def test_effects_predict_the_logit_change_of_a_large_residual_push(tiny_lm):
    """Adding s·(W_out^T d) to the MLP output moves the logits along the (final-norm) logit effect."""
    module = api.underlying_module(tiny_lm)
    direction = torch.randn(1, 128)
    found = L.output_weights(tiny_lm, HOOK)
    push = 200.0 * (direction @ found.W_out)
    ids = torch.tensor([[5, 17, 33, 9]])
    handle = module.transformer.h[0].mlp.register_forward_hook(lambda m, a, out: out + push)
    with torch.no_grad():
        pushed = module(input_ids=ids).logits[0, -1]
    handle.remove()
    expected = L.logit_effect_matrix(direction, found)[0]
    corr = np.corrcoef(pushed.numpy(), expected.numpy())[0, 1]
    assert corr > 0.99


def test_token_strings(tiny_lm):
    tokenizer = api.get_tokenizer(tiny_lm)
    texts = L.token_strings(tokenizer, len(tokenizer) + 2)
    assert texts[0] == "<|endoftext|>" and texts[-1] == f"<{len(tokenizer) + 1}>"
    ids = tokenizer("the quick", add_special_tokens=False)["input_ids"]
    assert "".join(texts[i] for i in ids) == "the quick"


def test_a_transcoder_store_reads_its_logit_effects_off_the_decoder(tiny_lm):
    """A transcoder writes the MLP's output, which the residual stream adds as it is: W_out is the identity, and the
    feature store's effects are W_U · N(W_dec[i]) computed from the raw weights."""
    import saekit
    from saekit.analysis import StoreConfig, build_feature_store
    from saekit.saes.provenance import Provenance

    module = api.underlying_module(tiny_lm)
    weights = L.output_weights(tiny_lm, "transformer.h.0.mlp")
    assert torch.equal(weights.W_out, torch.eye(32))
    tc = saekit.SAE.create("topk", 32, 16, d_out=32, k=4, seed=0)
    tc.provenance = Provenance(hook="transformer.h.0.ln_2", target_hook="transformer.h.0.mlp")
    ids = torch.randint(1, 300, (4, 16), generator=torch.Generator().manual_seed(0))
    store = build_feature_store(tiny_lm, ids, tc, config=StoreConfig(n_top=3, n_per_interval=1, n_logits=3),
                                progress=False)
    expected = _numpy_effects(tc.W_dec.detach().numpy(), np.eye(32), module.lm_head.weight.detach().numpy(),
                              module.transformer.ln_f.weight.detach().numpy())
    table = store.logits
    boost = table[(table.direction == "boost") & (table["rank"] == 0)].set_index("feature")
    for feature, row in boost.iterrows():
        assert row.token_id == int(expected[feature].argmax())
        assert row.logit == pytest.approx(float(expected[feature].max()), rel=1e-4, abs=1e-5)


def test_each_site_reaches_the_residual_stream_through_its_own_weight():
    """The MLP's neurons (its output projection's input) go through that projection; an attention or MLP output and
    a block's input or output are in the residual stream already (the identity), whatever the hook's module is."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from saekit.activations.sites import resolve_site

    model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                                         num_key_value_heads=2, intermediate_size=24, vocab_size=40)).eval()
    for site in ("resid_pre", "resid_post", "attn_out", "mlp_out"):
        hook, side = resolve_site(model, 1, site)
        assert torch.equal(L.output_weights(model, hook, side=side).W_out, torch.eye(16)), site
    hook, side = resolve_site(model, 1, "mlp_act")
    down_proj = model.model.layers[1].mlp.down_proj
    torch.testing.assert_close(L.output_weights(model, hook, side=side).W_out, down_proj.weight.T)


def test_gemma_final_norm_scales_by_one_plus_its_weight():
    """Gemma's RMSNorm multiplies by 1 + w (w starts at 0): a γ of w alone would zero every logit effect."""
    from transformers import GemmaConfig, GemmaForCausalLM

    model = GemmaForCausalLM(GemmaConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                         num_key_value_heads=2, head_dim=8, intermediate_size=24, vocab_size=40))
    with torch.no_grad():
        model.model.norm.weight.normal_()
    found = L.output_weights(model, "model.layers.0.mlp.down_proj", side="input")
    torch.testing.assert_close(found.norm_weight, 1 + model.model.norm.weight.detach())
    assert not found.norm_centers
