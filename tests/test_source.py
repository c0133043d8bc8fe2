"""ActivationSource: the activations it emits are exactly the model's at the kept positions."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2LMHeadModel

import saekit
from saekit.activations import nnsight_api as api
from saekit.activations.source import ActivationConfig, ActivationSource, check_dtype
from saekit.activations.text import token_source

from helpers import HOOK

CTX = 16


def _config(**kw) -> ActivationConfig:
    base = dict(hook=HOOK, context_len=CTX, batch_size=64, model_batch_size=4, buffer_bytes=512 * 128 * 4)
    return ActivationConfig(**{**base, **kw})


def _reference_acts(folder, text, tokenizer, *, side="output", drop_special=True) -> torch.Tensor:
    """All kept activations [n, d_in] computed with a plain forward hook, in model order."""
    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    windows = token_source(text, tokenizer, CTX, batch_size=1000).take(None)
    seen = {}
    handle = model.get_submodule(HOOK).register_forward_hook(lambda m, a, o: seen.update(output=o, input=a[0]))
    with torch.no_grad():
        model(input_ids=windows.input_ids, attention_mask=windows.attention_mask)
    handle.remove()
    keep = windows.attention_mask.bool()
    if drop_special:
        keep &= windows.input_ids != tokenizer.eos_token_id
    return seen[side][keep]


def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows in a canonical order, to compare two shuffles of the same set."""
    return x[torch.argsort(x[:, 0])]


@pytest.mark.parametrize("side", ["output", "input"])
def test_one_pass_emits_every_kept_activation_once(tiny_lm, tiny_lm_dir, text_dir, side):
    source = ActivationSource(tiny_lm, text_dir, _config(repeat=False, hook_side=side), progress=False)
    batches = list(source)
    got = torch.cat(batches)
    expected = _reference_acts(tiny_lm_dir, text_dir, source.tokenizer, side=side)
    assert got.shape == expected.shape and source.d_in == 128
    assert all(b.shape[0] == 64 for b in batches[:-1])
    assert not torch.equal(got, expected)  # shuffled...
    torch.testing.assert_close(_sorted_rows(got), _sorted_rows(expected))  # ...but the same set


def test_special_tokens_kept_when_asked(tiny_lm, tiny_lm_dir, text_dir):
    source = ActivationSource(tiny_lm, text_dir, _config(repeat=False, exclude_special_tokens=False), progress=False)
    expected = _reference_acts(tiny_lm_dir, text_dir, source.tokenizer, drop_special=False)
    with_special = torch.cat(list(source))
    assert with_special.shape == expected.shape
    n_eos = len(list(source.tokens.text))  # one EOS after each document
    assert with_special.shape[0] - _reference_acts(tiny_lm_dir, text_dir, source.tokenizer).shape[0] == n_eos


def test_total_tokens_is_exact_and_cycles_the_text(tiny_lm, text_dir):
    one_pass = sum(b.shape[0] for b in ActivationSource(tiny_lm, text_dir, _config(repeat=False), progress=False))
    total = one_pass * 2 + 7
    source = ActivationSource(tiny_lm, text_dir, _config(total_tokens=total), progress=False)
    sizes = [b.shape[0] for b in source]
    assert sum(sizes) == total
    assert all(s == 64 for s in sizes[:-1])


def test_pretokenized_input_and_dtype(tiny_lm):
    tokens = torch.arange(1, 101)  # a 1-D stream of 100 ordinary tokens
    source = ActivationSource(tiny_lm, tokens, _config(repeat=False, dtype="float64"), progress=False)
    rows = torch.cat(list(source))
    assert rows.shape == (100, 128) and rows.dtype == torch.float64


def test_check_dtype_against_the_sae(tiny_lm, text_dir):
    source = ActivationSource(tiny_lm, text_dir, _config(), progress=False)
    check_dtype(saekit.SAE.create("relu", d_in=128, n_features=256), source)
    sae64 = saekit.SAE.create("relu", d_in=128, n_features=256, dtype=torch.float64)
    with pytest.raises(TypeError, match="dtype='float64'"):
        check_dtype(sae64, source)


def test_metadata(tiny_lm, tiny_lm_dir, text_dir):
    meta = ActivationSource(tiny_lm, text_dir, _config(), progress=False).metadata()
    assert meta == {
        "model": str(tiny_lm_dir.resolve()), "hook": HOOK, "hook_side": "output", "context_len": CTX,
        "text": str(text_dir.resolve()), "exclude_special_tokens": True,
    }


def test_unknown_hook_fails_at_construction(tiny_lm, text_dir):
    with pytest.raises(api.UnknownHookError, match="transformer.h.0.mlp.act"):
        ActivationSource(tiny_lm, text_dir, _config(hook="transformer.h.0.mlp.ac"), progress=False)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(hook_side="middle"), "hook_side"),
        (dict(batch_size=0), "batch_size"),
        (dict(total_tokens=-1), "total_tokens"),
        (dict(dtype="int8"), "dtype"),
        (dict(hook=""), "module path"),
    ],
)
def test_config_says_what_to_change(change, message):
    with pytest.raises(ValueError, match=message):
        _config(**change)


def test_trains_an_sae(tiny_lm, text_dir):
    source = ActivationSource(tiny_lm, text_dir, _config(total_tokens=512), progress=False)
    sae = saekit.SAE.create("topk", d_in=source.d_in, n_features=64, k=4)
    run = saekit.train(sae, source, saekit.TrainConfig(total_tokens=512, lr=1e-3), progress=False)
    assert run.history.shape[0] >= 1
