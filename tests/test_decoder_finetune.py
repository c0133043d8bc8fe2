"""Decoder KL fine-tune: the spliced model's gradient matches a plain torch splice, the KL to the clean model falls
while the codes stay as they were (every architecture), and a model without next-token logits is refused."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

import saekit
from saekit.activations import nnsight_api as api
from saekit.errors import InputError
from saekit.training.decoder_finetune import _splice, finetune_decoder, kl_to_clean

from helpers import ARCHS, HOOK, corpus, set_thresholds, with_k


def _sae(arch: str, acts: torch.Tensor) -> saekit.SAE:
    """A dictionary of the tiny model's 128 neurons whose reconstruction is rough: room for the fine-tune."""
    sae = saekit.SAE.create(arch, acts.shape[-1], 256, seed=3, **with_k(arch, 8))
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0))
    set_thresholds(sae, per_feature=(0.01, 0.01), single=0.05)
    return sae


def _kl_by_torch_hooks(model, sae: saekit.SAE, windows, codes_of: saekit.SAE) -> torch.Tensor:
    """KL(clean ‖ spliced) per real token, computed on the bare torch module with a forward hook (no nnsight), the
    codes taken from `codes_of`."""
    module = api.underlying_module(model)
    ids, mask = windows.input_ids, windows.attention_mask
    clean = module(input_ids=ids, attention_mask=mask).logits
    site = module.get_submodule(HOOK)
    handle = site.register_forward_hook(
        lambda _m, _i, out: sae.decode(codes_of.encode(out.reshape(-1, out.shape[-1])).detach()).view(out.shape))
    try:
        spliced = module(input_ids=ids, attention_mask=mask).logits
    finally:
        handle.remove()
    kl = F.kl_div(spliced.log_softmax(-1), clean.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    return (kl * mask).sum() / mask.sum()


@pytest.fixture(scope="module")
def windows(tiny_lm):
    return corpus(tiny_lm)


@pytest.fixture(scope="module")
def acts(tiny_lm, windows):
    return api.get_activations(tiny_lm, windows.input_ids, windows.attention_mask, HOOK).reshape(-1, 128)


def test_spliced_gradient_matches_a_plain_torch_splice(tiny_lm, windows, acts):
    """The fine-tune's KL and its gradients in W_dec and b_dec (blockwise KL, sparse decode through nnsight) against
    F.kl_div on the bare module with a forward hook and a dense decode."""
    sae = _sae("relu", acts)
    codes, values = sae.sparse_encode(acts)
    splice = partial(_splice, sae.W_dec, sae.b_dec, codes, values)

    clean = api.clean_logits(tiny_lm, windows.input_ids, windows.attention_mask)
    spliced = api.spliced_logits(tiny_lm, windows.input_ids, windows.attention_mask, HOOK, splice, grad=True)
    assert spliced.requires_grad
    assert not api.spliced_logits(tiny_lm, windows.input_ids, windows.attention_mask, HOOK, splice).requires_grad
    kl = kl_to_clean(clean, spliced, windows.attention_mask)
    ours = torch.autograd.grad(kl, [sae.W_dec, sae.b_dec])
    reference_kl = _kl_by_torch_hooks(tiny_lm, sae, windows, sae)
    reference = torch.autograd.grad(reference_kl, [sae.W_dec, sae.b_dec])
    torch.testing.assert_close(kl, reference_kl, rtol=1e-5, atol=1e-7)
    assert ours[0].abs().sum() > 0
    for got, want in zip(ours, reference):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("arch", ARCHS)
def test_sparse_codes_are_the_encoders(acts, arch):
    """The codes held fixed: exactly encode's with fp32 products. With bf16 products (as the SAEs were trained), the
    values within bf16's rounding of pre, and only entries within that rounding of the threshold (zero, or TopK's
    k-th value) chosen differently: under 0.1 % of the entries."""
    sae = _sae(arch, acts)
    want = sae.encode(acts).detach()
    for dtype in (None, torch.bfloat16):
        codes, values = sae.sparse_encode(acts, dtype)
        got = torch.zeros_like(want).index_put_((codes.rows, codes.cols), values)
        assert codes.n_rows == len(acts) and (values > 0).all()
        if dtype is None:
            assert torch.equal(got, want)
            continue
        both = (got != 0) & (want != 0)
        torch.testing.assert_close(got[both], want[both], rtol=2e-2, atol=2e-2 * float(want.abs().max()))
        assert ((got != 0) != (want != 0)).float().mean() < 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_finetune_lowers_the_kl_and_keeps_the_codes(tiny_lm, windows, acts, arch):
    sae = _sae(arch, acts)
    trained = _sae(arch, acts)  # the same dictionary, untouched
    codes_before = sae.encode(acts).detach()
    with torch.no_grad():
        kl_before = _kl_by_torch_hooks(tiny_lm, sae, windows, sae).item()

    result = finetune_decoder(sae, tiny_lm, windows, HOOK, tokens=50 * windows.n_tokens, lr=3e-3,
                              windows_per_step=4, progress=False)

    with torch.no_grad():
        kl_after = _kl_by_torch_hooks(tiny_lm, sae, windows, trained).item()
    assert kl_after < 0.7 * kl_before, (kl_before, kl_after)
    assert result.kl_end < result.kl_start
    codes_after = sae.encode(acts).detach()
    assert torch.equal(codes_after != 0, codes_before != 0)
    torch.testing.assert_close(codes_after, codes_before, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.W_enc, trained.W_enc, rtol=0, atol=0)
    assert not torch.equal(sae.W_dec, trained.W_dec)
    # the windows run out before 50 passes: one pass, every real token once
    assert result.tokens == windows.n_tokens and result.steps == -(-len(windows) // 4)


def test_no_tokens_changes_nothing(tiny_lm, windows, acts):
    sae = _sae("relu", acts)
    before = {name: value.detach().clone() for name, value in sae.state_dict().items()}
    result = finetune_decoder(sae, tiny_lm, windows, HOOK, tokens=0, progress=False)
    assert result.tokens == 0 and result.steps == 0
    for name, value in sae.state_dict().items():
        assert torch.equal(value, before[name])


def test_a_model_without_next_token_logits_is_refused(tiny_bert_dir, tiny_lm, windows, acts):
    bert = api.load_model(tiny_bert_dir)
    sae = _sae("relu", acts)
    with pytest.raises(InputError, match="least-squares refit"):
        finetune_decoder(sae, bert, windows, "encoder.layer.0.intermediate", tokens=100, progress=False)
