"""ActivationSource: the activations it emits are exactly the model's at the kept positions."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2LMHeadModel

import saekit
from saekit.activations import nnsight_api as api
from saekit.activations.source import ActivationConfig, ActivationSource, check_dtype
from saekit.activations.windows import token_source
from saekit.saes.provenance import Provenance

from helpers import HOOK

CTX = 16


def _config(**kw) -> ActivationConfig:
    base = dict(hook=HOOK, context_len=CTX, batch_size=64, model_batch_size=4, buffer_bytes=2**20)
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


def test_provenance(tiny_lm, tiny_lm_dir, text_dir):
    prov = ActivationSource(tiny_lm, text_dir, _config(), progress=False).provenance()
    assert prov == Provenance(model=str(tiny_lm_dir.resolve()), hook=HOOK, hook_side="output", context_len=CTX,
                              text=str(text_dir.resolve()), exclude_special_tokens=True)


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


@pytest.mark.parametrize("first", [1, 9, 17, 40])
def test_batches_from_matches_a_full_pass_and_skips_the_model(tiny_lm, text_dir, monkeypatch, first):
    """A source restarted at batch `first` gives the batches a full pass gives from there (across cycles of the
    text), running the model only on the windows of the block holding that batch and after."""
    config = _config(total_tokens=64 * 45 + 5, buffer_bytes=2**20 // 2 + 3 * 4 * CTX * 128 * 4)
    whole = list(ActivationSource(tiny_lm, text_dir, config, progress=False))
    source = ActivationSource(tiny_lm, text_dir, config, progress=False)
    forwards = []
    real = api.get_activations

    def counting(model, input_ids, *args, **kw):
        forwards.append(int(input_ids.shape[0] * input_ids.shape[1]))
        return real(model, input_ids, *args, **kw)

    source.d_in  # noqa: B018  (the width probe is one forward of its own)
    monkeypatch.setattr("saekit.activations.nnsight_api.get_activations", counting)
    again = list(source.batches_from(first))
    assert len(again) == len(whole) - first
    for a, b in zip(again, whole[first:]):
        assert torch.equal(a, b)
    buffer = source.buffer()
    rows_needed = sum(b.shape[0] for b in whole) - buffer.block_start(first)
    model_batch_rows = 4 * CTX
    assert sum(forwards) <= rows_needed * 1.25 + 2 * model_batch_rows  # eos positions are run but not kept


def test_buffer_budget_covers_the_forward_outputs(tiny_lm, text_dir):
    source = ActivationSource(tiny_lm, text_dir, _config(), progress=False)
    assert source.working_bytes() == 3 * 4 * CTX * 128 * 4
    assert source.buffer().capacity_tokens == (2**20 - source.working_bytes()) // (128 * 4)
    small = ActivationSource(tiny_lm, text_dir, _config(buffer_bytes=2 * 64 * 128 * 4), progress=False)
    with pytest.raises(saekit.InputError, match="besides one model batch's outputs"):
        next(iter(small))


def test_a_short_run_reads_no_more_than_it_emits(tiny_lm, text_dir, monkeypatch):
    """With the default 256 MiB budget a block would hold ~500k rows; a run of 200 tokens reads ~200 of them."""
    source = ActivationSource(tiny_lm, text_dir, _config(total_tokens=200, buffer_bytes=256 * 2**20), progress=False)
    forwards = []
    real = api.get_activations

    def counting(model, input_ids, *args, **kw):
        forwards.append(int(input_ids.shape[0] * input_ids.shape[1]))
        return real(model, input_ids, *args, **kw)

    source.d_in  # noqa: B018  (the width probe)
    monkeypatch.setattr("saekit.activations.nnsight_api.get_activations", counting)
    assert sum(b.shape[0] for b in source) == 200
    assert sum(forwards) <= 4 * 64 + 2 * 4 * CTX  # the rows of a 2-batch block, in whole model batches
