"""evaluate() against a hand computation: plain PyTorch forward hooks, no nnsight, no sae.encode."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel

import saekit
from saekit.activations.windows import TokenWindows
from saekit.evaluation import evaluate, evaluate_many
from saekit.saes.provenance import Provenance

from helpers import HOOK

EOS = 0  # the tiny tokenizer's <|endoftext|>


def _windows() -> TokenWindows:
    """4 windows of 12 tokens with EOS inside and a right-padded last row."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 300, (4, 12), generator=g)
    ids[0, 5] = ids[2, 0] = ids[3, 3] = EOS
    mask = torch.ones_like(ids)
    mask[3, 8:] = 0
    ids[3, 8:] = EOS
    return TokenWindows(ids, mask)


def _known_sae(d_in: int = 128, d_sae: int = 96) -> saekit.SAE:
    """A ReLU SAE with fixed random weights and negative encoder biases (so some features stay dead)."""
    sae = saekit.SAE.create("relu", d_in=d_in, n_features=d_sae, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g))
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) * 0.05)
        sae.b_enc.copy_(-torch.linspace(0, 3, d_sae))  # pre-activations have std ≈ 0.6
        sae.b_dec.copy_(torch.randn(d_in, generator=g) * 0.05)
    sae.provenance = Provenance(hook=HOOK, hook_side="output", context_len=12, exclude_special_tokens=True)
    return sae


def _hand_eval(folder, sae, windows: TokenWindows, dense_threshold: float) -> dict:
    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    module = model.get_submodule(HOOK)
    ids, mask = windows
    keep = mask.bool() & (ids != EOS)

    def run(replacement=None):
        seen = {}

        def hook(mod, args, out):
            seen["acts"] = out
            if replacement is None:
                return None
            out = out.clone()
            out[keep] = replacement
            return out

        handle = module.register_forward_hook(hook)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
        handle.remove()
        valid = (mask[:, :-1] * mask[:, 1:]).bool()
        loss = F.cross_entropy(logits[:, :-1][valid].double(), ids[:, 1:][valid]).item()
        return seen["acts"], loss

    acts, clean = run()
    x = acts[keep].double()
    W_enc, W_dec, b_enc, b_dec = (p.detach().double() for p in (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec))
    f = torch.relu((x - b_dec) @ W_enc + b_enc)
    x_hat = f @ W_dec + b_dec
    sq = (x - x_hat).pow(2).sum(-1)
    density = (f > 0).double().mean(0)
    spliced = run(x_hat.float())[1]
    zero = run(torch.zeros_like(x_hat).float())[1]
    mean = run(x.mean(0).float().expand_as(x))[1]
    return {
        "n_tokens": x.shape[0],
        "mse": sq.mean().item(),
        "fvu": (sq.sum() / (x - x.mean(0)).pow(2).sum()).item(),
        "l0": (f > 0).double().sum(-1).mean().item(),
        "dead_fraction": (density == 0).double().mean().item(),
        "dense_fraction": (density > dense_threshold).double().mean().item(),
        "loss_clean": clean,
        "loss_spliced": spliced,
        "loss_zero_ablated": zero,
        "loss_mean_ablated": mean,
        "loss_recovered": (zero - spliced) / (zero - clean),
        "loss_increase": spliced - clean,
    }


def test_matches_hand_computation(tiny_lm, tiny_lm_dir):
    sae = _known_sae()
    result = evaluate(sae, tiny_lm, _windows(), batch_size=3, dense_threshold=0.2, progress=False)
    expected = _hand_eval(tiny_lm_dir, sae, _windows(), dense_threshold=0.2)
    got = result.to_dict()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    # the weights make a meaningful test: some features dead, some alive, and ablations hurt
    assert 0 < result.dead_fraction < 1 and result.l0 > 0
    assert result.loss_zero_ablated != pytest.approx(result.loss_clean)
    assert result.note is None


def test_result_is_json_and_densities_plot(tiny_lm):
    sae = _known_sae()
    result = evaluate(sae, tiny_lm, _windows(), progress=False)
    parsed = json.loads(json.dumps(result.to_dict()))
    assert "densities" not in parsed and parsed["n_tokens"] == result.n_tokens
    assert result.densities.shape == (sae.d_sae,)
    hist = result.density_histogram(bins=10)
    assert list(hist.columns) == ["log10_density_start", "log10_density_end", "n_features"]
    assert hist.n_features.sum() == round((1 - result.dead_fraction) * sae.d_sae)


def test_text_folder_and_token_budget(tiny_lm, text_dir):
    sae = _known_sae()
    result = evaluate(sae, tiny_lm, text_dir, max_tokens=40, progress=False)
    assert 0 < result.n_tokens <= 40 + 12  # whole windows, special tokens dropped
    assert result.loss_recovered is not None


def test_encoder_gets_reconstruction_only(tiny_bert_dir):
    sae = saekit.SAE.create("topk", d_in=64, n_features=32, k=4, seed=0)
    result = evaluate(sae, tiny_bert_dir, _windows(), hook="encoder.layer.0.intermediate", progress=False)
    assert result.l0 == pytest.approx(4)
    assert result.mse > 0 and result.fvu is not None
    assert result.loss_clean is None and result.loss_recovered is None
    assert "LM head" in result.note


def test_hook_is_required(tiny_lm):
    sae = saekit.SAE.create("relu", d_in=128, n_features=32, seed=0)
    with pytest.raises(ValueError, match="hook"):
        evaluate(sae, tiny_lm, _windows(), progress=False)


def test_sae_width_must_match_the_hook(tiny_lm, tiny_lm_dir):
    """The hook gives 128-wide activations; an SAE reading 96 is refused before any of its maths runs."""
    sae = saekit.SAE.create("relu", d_in=96, n_features=32, seed=0)
    with pytest.raises(saekit.InputError) as info:
        evaluate(sae, tiny_lm, _windows(), hook=HOOK, progress=False)
    message = str(info.value)
    assert f"d_in=96 but hook {HOOK} of model {tiny_lm_dir.resolve()} gives width 128" in message
    assert "--model/--hook" in message


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"max_tokens": 0}, {"max_tokens": -5}])
def test_sizes_must_be_positive(tiny_lm, kwargs):
    with pytest.raises(saekit.InputError, match="must be positive"):
        evaluate(_known_sae(), tiny_lm, _windows(), progress=False, **kwargs)


def test_missing_hook_and_text_are_input_errors(tiny_lm):
    sae = saekit.SAE.create("relu", d_in=128, n_features=32, seed=0)
    with pytest.raises(saekit.InputError, match="hook"):
        evaluate(sae, tiny_lm, _windows(), progress=False)
    with pytest.raises(saekit.InputError, match="no text given"):
        evaluate(sae, tiny_lm, None, hook=HOOK, progress=False)


def _other_sae() -> saekit.SAE:
    """A second dictionary of another size and weights, evaluated next to `_known_sae` on the same pass."""
    sae = _known_sae(d_sae=40)
    with torch.no_grad():
        sae.W_enc.mul_(0.7)
        sae.b_dec.mul_(-1)
    return sae


def test_many_saes_share_a_pass_and_each_matches_the_hand_computation(tiny_lm, tiny_lm_dir):
    """evaluate_many shares the clean, zero- and mean-ablated forwards; each SAE's numbers stay its own."""
    saes = [_known_sae(), _other_sae()]
    results = evaluate_many(saes, tiny_lm, _windows(), batch_size=3, dense_threshold=0.2, progress=False)
    assert results[0].l0 != pytest.approx(results[1].l0)
    for sae, result in zip(saes, results):
        expected = _hand_eval(tiny_lm_dir, sae, _windows(), dense_threshold=0.2)
        got = result.to_dict()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
        alone = evaluate(sae, tiny_lm, _windows(), batch_size=3, dense_threshold=0.2, progress=False)
        assert alone.to_dict() == got and torch.equal(alone.densities, result.densities)


def test_many_saes_must_read_alike(tiny_lm):
    other = _other_sae()
    other.provenance = other.provenance.replace(exclude_special_tokens=False)
    with pytest.raises(saekit.InputError, match="separately"):
        evaluate_many([_known_sae(), other], tiny_lm, _windows(), progress=False)
    with pytest.raises(saekit.InputError, match="separately"):  # another width: caught before any forward
        evaluate_many([_known_sae(), _known_sae(d_in=64)], tiny_lm, _windows(), progress=False)
    assert evaluate_many([], tiny_lm, _windows(), progress=False) == []
