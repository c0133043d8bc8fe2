"""The one-layer language model: training, the fused loss, the schedule, and loading like a hub model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nnsight
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel, PreTrainedTokenizerFast

from saekit.embedded.build import EmbeddedConfig, build_embedded
from saekit.embedded.corpus import CorpusConfig
from saekit.embedded.fused_loss import hidden_states, lm_loss, unembed_cross_entropy
from saekit.embedded.lm import (
    HISTORY_COLUMNS,
    MLP_HOOK,
    MODEL_SEEDS,
    LMConfig,
    LMResult,
    gpt2_config,
    heldout_windows,
    load_lm,
    lr_at,
    train_flops_per_token,
    train_lm,
)
from saekit.embedded.threads import LM_THREADS, torch_threads
from saekit.embedded.tokenizer import TokenizerConfig, train_bpe, wrap_tokenizer

TEXT = (
    "def area(width, height):\n    return width * height\n\n"
    "The cat sat on the mat. The dog sat on the log. "
    "for i in range(10):\n    print(i, area(i, i))\n"
)
TINY = LMConfig(
    d_model=32,
    n_mlp=64,
    n_head=2,
    context=16,
    tokens=16 * 8 * 60,
    batch_size=8,
    lr=1e-2,
    threads=1,
    eval_tokens=512,
    log_every=5,
)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return wrap_tokenizer(
        train_bpe([TEXT] * 20, TokenizerConfig(vocab_size=300), progress=False), TokenizerConfig()
    )


@pytest.fixture(scope="module")
def trained(tokenizer: PreTrainedTokenizerFast, tmp_path_factory: pytest.TempPathFactory) -> LMResult:
    ids = np.array(tokenizer(TEXT * 30)["input_ids"], dtype=np.uint16)
    split = int(len(ids) * 0.8)
    out = tmp_path_factory.mktemp("lm") / "model"
    return train_lm(ids[:split], ids[split:], tokenizer, out, TINY, progress=False)


def test_loss_goes_down(trained: LMResult) -> None:
    history = trained.history
    assert list(history.columns) == HISTORY_COLUMNS and (history["threads"] == 1).all()
    assert history["step"].iloc[-1] == TINY.steps == 60
    assert history["loss"].iloc[-1] < history["loss"].iloc[0] - 1.0
    assert trained.heldout_loss < np.log(300)  # better than uniform over the vocabulary
    assert np.isfinite(trained.bigram_loss) and trained.tokens_per_second > 0


def test_folder_loads_like_a_hub_model(trained: LMResult, tokenizer: PreTrainedTokenizerFast) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(trained.path))
    assert isinstance(model, GPT2LMHeadModel)
    assert (model.config.n_layer, model.config.n_embd, model.config.n_inner) == (1, 32, 64)
    assert model.get_submodule(MLP_HOOK) is model.transformer.h[0].mlp.act
    loaded_tok = AutoTokenizer.from_pretrained(str(trained.path))
    assert loaded_tok.model_max_length == TINY.context == model.config.n_positions
    ids = torch.tensor([loaded_tok(TEXT)["input_ids"][:16]])
    assert ids.tolist()[0] == tokenizer(TEXT)["input_ids"][:16]
    torch.testing.assert_close(model(ids).logits, load_lm(trained.path)(ids).logits)
    summary = json.loads((trained.path / "training.json").read_text())
    assert summary["heldout_loss"] == pytest.approx(trained.heldout_loss) and summary["mlp_hook"] == MLP_HOOK


def test_nnsight_reads_the_mlp_activations(trained: LMResult) -> None:
    ids = torch.arange(3, 15)[None, :]
    reference = GPT2LMHeadModel.from_pretrained(trained.path).eval()
    seen = {}
    handle = reference.get_submodule(MLP_HOOK).register_forward_hook(lambda m, a, out: seen.update(out=out))
    with torch.no_grad():
        reference(ids)
    handle.remove()

    lm = nnsight.LanguageModel(str(trained.path), dispatch=True)
    with lm.trace(ids) as tracer:
        acts = lm.transformer.h[0].mlp.act.output.save()
        tracer.stop()
    assert acts.shape == (1, 12, 64)
    torch.testing.assert_close(acts, seen["out"])


def test_fused_loss_matches_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(20, 8, generator=g, requires_grad=True)
    weight = torch.randn(50, 8, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (20,), generator=g)
    fused = unembed_cross_entropy(hidden, weight, targets)
    grads = torch.autograd.grad(fused, (hidden, weight))
    plain = F.cross_entropy(hidden @ weight.T, targets)
    expected = torch.autograd.grad(plain, (hidden, weight))
    torch.testing.assert_close(fused, plain)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_lr_schedule_warms_up_then_decays() -> None:
    config = LMConfig(lr=1.0, warmup=0.1, min_lr_ratio=0.1)
    lrs = [lr_at(step, 100, config) for step in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_heldout_windows_cover_the_split_once() -> None:
    tokens = np.arange(101)
    windows = heldout_windows(tokens, context=10, max_tokens=1000)
    assert windows.shape == (10, 11)
    assert np.array_equal(windows[:, 1:].ravel(), np.arange(1, 101))  # each token predicted once
    spread = heldout_windows(tokens, context=10, max_tokens=30)
    assert spread.shape == (3, 11) and spread[0, 0] == 0 and spread[-1, 0] == 90


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="n_head"):
        LMConfig(d_model=130, n_head=4)
    with pytest.raises(ValueError, match="raise tokens"):
        LMConfig(tokens=100)
    with pytest.raises(ValueError, match="threads"):
        LMConfig(threads=0)
    with pytest.raises(ValueError, match="product_dtype='float16': use one of"):
        LMConfig(product_dtype="float16")  # type: ignore[arg-type]


def test_build_embedded_reuses_what_is_built(tmp_path: Path) -> None:
    config = EmbeddedConfig(
        CorpusConfig(target_bytes=150_000), TokenizerConfig(vocab_size=300), replace(TINY, context=32)
    )
    built = build_embedded(tmp_path, config, models=("A",), progress=False)
    weights = tmp_path / "model_A" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = build_embedded(tmp_path, config, models=("A",), progress=False)
    assert weights.stat().st_mtime_ns == stamp  # not retrained
    assert again.summary().equals(built.summary())
    row = built.summary().iloc[0]
    assert row["model"] == "A" and row["seed"] == MODEL_SEEDS["A"]
    assert built.tokens.n_tokens["train"] > 10_000
    other_tokens = replace(config, tokenizer=TokenizerConfig(vocab_size=310))
    build_embedded(tmp_path, other_tokens, models=("A",), progress=False)
    assert weights.stat().st_mtime_ns != stamp  # other tokens: retrained, never a model of the old ones


def test_models_trained_side_by_side_match_one_after_the_other(tmp_path: Path) -> None:
    config = EmbeddedConfig(
        CorpusConfig(target_bytes=150_000), TokenizerConfig(vocab_size=300), replace(TINY, context=32)
    )
    config = replace(config, lm=replace(config.lm, threads=None))  # the default: LM_THREADS either way
    serial = build_embedded(tmp_path / "serial", config, progress=False, parallel=False).summary()
    side = build_embedded(tmp_path / "side", config, progress=False, parallel=True)
    weights = tmp_path / "side" / "model_B" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = build_embedded(tmp_path / "side", config, progress=False, parallel=True)  # reused, not retrained
    assert weights.stat().st_mtime_ns == stamp
    assert list(again.summary()["model"]) == ["A", "B"]
    # same seeds, same data, same fixed thread count: the very same models
    assert list(side.summary()["heldout_loss"]) == list(serial["heldout_loss"])
    for name in ("A", "B"):
        assert (tmp_path / "side" / f"model_{name}" / "model.safetensors").read_bytes() == \
            (tmp_path / "serial" / f"model_{name}" / "model.safetensors").read_bytes()
    assert side.summary()["heldout_loss"].iloc[0] != side.summary()["heldout_loss"].iloc[1]  # two seeds


def test_training_leaves_the_global_rng_and_thread_count_alone(tokenizer: PreTrainedTokenizerFast,
                                                              tmp_path: Path) -> None:
    ids = np.array(tokenizer(TEXT * 30)["input_ids"], dtype=np.uint16)
    small = replace(TINY, tokens=16 * 8 * 3, eval_tokens=64, threads=None)
    torch.manual_seed(1234)
    with torch_threads(2):
        before = torch.get_rng_state()
        first = train_lm(ids[:400], ids[400:], tokenizer, tmp_path / "a", small, progress=False)
        assert torch.equal(torch.get_rng_state(), before) and torch.get_num_threads() == 2
    assert (first.history["threads"] == LM_THREADS).all()  # None: the fixed count, whatever the cores
    torch.manual_seed(999)  # another global state: the model must not change
    again = train_lm(ids[:400], ids[400:], tokenizer, tmp_path / "b", small, progress=False)
    assert again.heldout_loss == first.heldout_loss
    weights = [(path / "model.safetensors").read_bytes() for path in (tmp_path / "a", tmp_path / "b")]
    assert weights[0] == weights[1]


def test_a_killed_save_never_leaves_a_folder_that_looks_trained(trained: LMResult, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import saekit.embedded.lm as lm_module

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lm_module, "write_json_atomic", killed)  # dies after the weights, before training.json
    model = load_lm(trained.path)
    tokenizer = AutoTokenizer.from_pretrained(str(trained.path))
    with pytest.raises(KeyboardInterrupt):
        lm_module.save_lm(model, tokenizer, trained._replace(path=tmp_path / "model_A"))
    assert not (tmp_path / "model_A").exists()
    monkeypatch.undo()
    lm_module.save_lm(model, tokenizer, trained._replace(path=tmp_path / "model_A"))
    summary = json.loads((tmp_path / "model_A" / "training.json").read_text())
    assert summary["torch_threads"] == 1 and summary["code_version"].endswith(f"/{lm_module.LM_VERSION}")
    assert not (tmp_path / "model_A.partial").exists()


def _ids(tokenizer: PreTrainedTokenizerFast) -> np.ndarray:
    return np.array(tokenizer(TEXT * 30)["input_ids"], dtype=np.uint16)


def test_bf16_products_train_and_are_recorded(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    ids = _ids(tokenizer)
    config = replace(TINY, product_dtype="bfloat16")
    result = train_lm(ids[:400], ids[400:], tokenizer, tmp_path / "bf16", config, progress=False)
    assert result.history["loss"].iloc[-1] < result.history["loss"].iloc[0] - 1.0
    assert result.heldout_loss < np.log(300)
    summary = json.loads((tmp_path / "bf16" / "training.json").read_text())
    assert summary["product_dtype"] == "bfloat16" and summary["config"]["product_dtype"] == "bfloat16"
    assert load_lm(tmp_path / "bf16").dtype == torch.float32  # weights stay fp32


def test_auto_products_follow_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    import saekit.embedded.lm as lm_module

    for native, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(lm_module, "native_bf16", lambda device, native=native: native)
        assert LMConfig().torch_product_dtype == dtype
        assert LMConfig(product_dtype="float32").torch_product_dtype == torch.float32
        assert LMConfig(product_dtype="bfloat16").torch_product_dtype == torch.bfloat16


def test_bf16_training_is_deterministic(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    ids = _ids(tokenizer)
    config = replace(TINY, tokens=16 * 8 * 10, eval_tokens=64, product_dtype="bfloat16")
    runs = [train_lm(ids[:400], ids[400:], tokenizer, tmp_path / name, config, progress=False) for name in "ab"]
    assert runs[0].heldout_loss == runs[1].heldout_loss
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    float32 = train_lm(ids[:400], ids[400:], tokenizer, tmp_path / "c", replace(config, product_dtype="float32"),
                       progress=False)
    assert float32.heldout_loss != runs[0].heldout_loss  # the products' dtype does reach the weights


def test_training_forward_is_the_hub_models(tokenizer: PreTrainedTokenizerFast) -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(gpt2_config(TINY, tokenizer)).train()
    ids = torch.randint(0, len(tokenizer), (3, TINY.context))
    with torch.no_grad():
        expected = model.transformer(input_ids=ids).last_hidden_state
        torch.testing.assert_close(hidden_states(model, ids, torch.float32), expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(hidden_states(model, ids, torch.bfloat16), expected, rtol=0.05, atol=0.05)


def test_bf16_loss_and_gradients_match_fp32(tokenizer: PreTrainedTokenizerFast) -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(gpt2_config(TINY, tokenizer)).train()
    windows = torch.from_numpy(_ids(tokenizer)[: 8 * (TINY.context + 1)].astype(np.int64)).view(8, -1)
    losses, grads = {}, {}
    for dtype in (torch.float32, torch.bfloat16):
        model.zero_grad()
        losses[dtype] = lm_loss(model, windows, dtype)
        losses[dtype].backward()
        grads[dtype] = torch.cat([p.grad.flatten() for p in model.parameters()])
    plain = F.cross_entropy(model(input_ids=windows[:, :-1]).logits.flatten(0, 1), windows[:, 1:].flatten())
    torch.testing.assert_close(losses[torch.float32], plain)
    assert abs(float(losses[torch.bfloat16].detach() - losses[torch.float32].detach())) < 0.01
    assert F.cosine_similarity(grads[torch.bfloat16], grads[torch.float32], dim=0) > 0.999
    assert torch.linalg.vector_norm(grads[torch.bfloat16] - grads[torch.float32]) < \
        0.03 * torch.linalg.vector_norm(grads[torch.float32])


def test_fused_loss_in_blocks_matches_cross_entropy(monkeypatch: pytest.MonkeyPatch) -> None:
    import saekit.embedded.fused_loss as fused

    monkeypatch.setattr(fused, "LOSS_BLOCK_ELEMENTS", 50 * 7)  # 7 rows a block: 20 rows in 3 blocks
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(20, 8, generator=g, requires_grad=True)
    weight = torch.randn(50, 8, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (20,), generator=g)
    fused_loss = unembed_cross_entropy(hidden, weight, targets)
    got = torch.autograd.grad(3 * fused_loss, (hidden, weight))
    plain = F.cross_entropy(hidden @ weight.T, targets)
    want = torch.autograd.grad(3 * plain, (hidden, weight))
    torch.testing.assert_close(fused_loss, plain)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_flops_per_token_of_the_demo_shape() -> None:
    weights = 128 * 384 + 128 * 128 + 128 * 512 * 2 + 4096 * 128  # qkv, attn out, MLP in and out, unembedding
    assert train_flops_per_token(LMConfig(), 4096) == 6 * weights + 12 * 128 * 128 == 4_521_984
