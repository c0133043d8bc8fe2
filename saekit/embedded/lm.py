"""The paper's one-layer transformer as a Hugging Face GPT-2 (`n_layer=1`), trained on the corpus tokens.

The saved folder (weights + tokenizer) loads with `transformers.AutoModelForCausalLM.from_pretrained`
and `nnsight.LanguageModel`; the MLP activations (after GELU) are at `transformer.h.0.mlp.act`.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple, get_args

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from saekit.cached_steps import code_version, write_json_atomic
from saekit.embedded.bigram import bigram_loss
from saekit.embedded.fused_loss import lm_loss
from saekit.embedded.threads import LM_THREADS, torch_threads
from saekit.embedded.tokenizer import EOT, PAD, save_tokenizer
from saekit.training.precision import native_bf16

MLP_HOOK = "transformer.h.0.mlp.act"
"""Module path of the MLP neurons' activations (the SAEs' input)."""
MLP_INPUT_HOOK = "transformer.h.0.ln_2"
"""The MLP's input (the LayerNorm before it): what a transcoder of the MLP reads."""
MLP_OUTPUT_HOOK = "transformer.h.0.mlp"
"""The MLP's output (what it adds to the residual stream): what a transcoder of the MLP writes."""
MODEL_SEEDS = {"A": 0, "B": 1}
"""The paper's two models, identical but for the random seed."""
HISTORY_COLUMNS = ["step", "tokens", "lr", "loss", "tokens_per_second", "seconds", "threads"]
LM_VERSION = 3
"""Bump when training computes another model from the same config: built models are then retrained."""
TIMING_KEYS = ("seconds", "tokens_per_second")
"""training.json entries that measure the machine, not the model (left out of what identifies a model)."""
ProductDtype = Literal["auto", "float32", "bfloat16"]


@dataclass(frozen=True)
class LMConfig:
    """Shape and training of the one-layer language model."""

    d_model: int = 128
    """Residual stream width."""
    n_mlp: int = 512
    """MLP neurons (the activations the SAEs decompose)."""
    n_head: int = 4
    """Attention heads (d_model must divide by it)."""
    context: int = 128
    """Tokens per training window (and the model's maximum positions)."""
    tokens: int = 1_500_000
    """Training tokens; steps = tokens // (batch_size * context)."""
    batch_size: int = 8
    """Windows per step (small batches learn more per token at these budgets, at the same speed)."""
    lr: float = 5e-3
    """Peak AdamW learning rate."""
    warmup: float = 0.05
    """Fraction of steps with linear warm-up, before the cosine decay."""
    min_lr_ratio: float = 0.1
    """The cosine decays to lr * min_lr_ratio."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (not on biases or LayerNorm gains)."""
    grad_clip: float = 1.0
    """Gradient norm clipping."""
    seed: int = 0
    """Seed of the initialisation and of the window order."""
    threads: int | None = None
    """torch threads while training (they set the float sums' order, so the weights' last bits); None:
    LM_THREADS, the same side by side or one at a time."""
    eval_tokens: int = 1_000_000
    """Held-out predictions scored for the final loss (all of the split when it is smaller)."""
    log_every: int = 10
    """Steps between rows of the history."""
    tie_embeddings: bool = False
    """Share the embedding and unembedding matrices (GPT-2 does; untied learns bigrams faster)."""
    activation: Literal["gelu_new", "gelu_pytorch_tanh"] = "gelu_pytorch_tanh"
    """MLP nonlinearity: GPT-2's tanh GELU; gelu_pytorch_tanh is the same function, fused (faster)."""
    product_dtype: ProductDtype = "auto"
    """dtype of the training step's matrix products (all else fp32): auto is bfloat16 where the CPU declares
    native bf16 products (AVX512-BF16, AMX), else float32; recorded in training.json."""

    def __post_init__(self) -> None:
        for name in (
            "d_model",
            "n_mlp",
            "n_head",
            "context",
            "tokens",
            "batch_size",
            "eval_tokens",
            "log_every",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be positive")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} does not divide into n_head={self.n_head} heads")
        if self.tokens < self.batch_size * self.context:
            raise ValueError(
                f"tokens={self.tokens} is under one step ({self.batch_size} x {self.context}): raise tokens"
            )
        if self.lr <= 0 or not 0 <= self.warmup < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("need lr > 0, warmup in [0, 1) and min_lr_ratio in [0, 1]")
        if self.weight_decay < 0 or self.grad_clip <= 0:
            raise ValueError("need weight_decay >= 0 and grad_clip > 0")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads={self.threads}: use a positive count, or None for LM_THREADS")
        if self.product_dtype not in get_args(ProductDtype):
            raise ValueError(f"product_dtype={self.product_dtype!r}: use one of {list(get_args(ProductDtype))}")

    @property
    def torch_threads(self) -> int:
        """The thread count training runs with."""
        return self.threads or LM_THREADS

    @property
    def torch_product_dtype(self) -> torch.dtype:
        """The dtype the training products run in: product_dtype, with auto decided by the CPU's flags."""
        if self.product_dtype == "auto":
            return torch.bfloat16 if native_bf16("cpu") else torch.float32
        return getattr(torch, self.product_dtype)

    @property
    def steps(self) -> int:
        """Optimizer steps the token budget buys."""
        return self.tokens // (self.batch_size * self.context)

    @classmethod
    def profile(cls, name: Literal["quick", "full"], **overrides: object) -> LMConfig:
        """Recommended settings: quick (the defaults, ~1 minute on 2 cores) or full (~7 minutes on one core)."""
        settings = {"quick": {}, "full": {"tokens": 9_000_000, "lr": 3e-3, "eval_tokens": 262_144}}
        if name not in settings:
            raise ValueError(f"profile {name!r}: use one of {sorted(settings)}")
        return replace(cls(**settings[name]), **overrides)


class LMResult(NamedTuple):
    """A trained model: folder, config, history, speed, and its held-out loss next to the bigram baseline's
    on the same tokens (nats/token)."""

    path: Path
    config: LMConfig
    history: pd.DataFrame
    heldout_loss: float
    bigram_loss: float
    heldout_tokens: int
    tokens_per_second: float
    seconds: float


def gpt2_config(config: LMConfig, tokenizer: PreTrainedTokenizerFast) -> GPT2Config:
    """A one-layer GPT-2 config of the paper's shape, with the tokenizer's vocabulary and special ids."""
    eot_id = tokenizer.convert_tokens_to_ids(EOT)
    gpt2 = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.context,
        n_embd=config.d_model,
        n_layer=1,
        n_head=config.n_head,
        n_inner=config.n_mlp,
        activation_function=config.activation,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        tie_word_embeddings=config.tie_embeddings,
    )
    gpt2._attn_implementation = "sdpa"
    return gpt2


def train_flops_per_token(config: LMConfig, vocab: int) -> int:
    """Floating-point operations of one training token (forward + backward), counting matrix products only.

    6 N + 12 n_layer context d_model, with N = n_layer (4 d_model^2 + 2 d_model n_mlp) + vocab d_model the
    weights that multiply activations (attention's qkv and output, the MLP's two, the unembedding; the
    embeddings are lookups): 2 FLOPs per weight forward, 4 backward. Attention's scores and weighted sum
    are 2 context d_model multiply-adds per token forward, counted dense as the kernel's blocks are, so
    4 context d_model FLOPs forward and twice that backward. Biases, LayerNorm, GELU, softmax and AdamW
    are left out (a few % of this). The demo's shape: 4.52 MFLOP/token.
    """
    n_layer = 1
    weights = n_layer * (4 * config.d_model**2 + 2 * config.d_model * config.n_mlp) + vocab * config.d_model
    return 6 * weights + 12 * n_layer * config.context * config.d_model


def lr_at(step: int, steps: int, config: LMConfig) -> float:
    """Learning rate at `step` of `steps`: linear warm-up, then cosine decay to lr * min_lr_ratio."""
    warmup = max(1, int(config.warmup * steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def sample_windows(
    tokens: np.ndarray, batch_size: int, context: int, rng: np.random.Generator
) -> torch.Tensor:
    """`[batch_size, context + 1]` windows at uniformly random offsets of `tokens [n]`, as int64."""
    starts = rng.integers(0, len(tokens) - context - 1, size=batch_size)
    return torch.from_numpy(np.stack([tokens[s : s + context + 1] for s in starts]).astype(np.int64))


def make_optimizer(model: torch.nn.Module, config: LMConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only, fused (one pass over each tensor: the step is small, so
    the optimizer's passes over memory are a large share of it)."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": matrices, "weight_decay": config.weight_decay},
        {"params": others, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), fused=True)


def heldout_windows(tokens: np.ndarray, context: int, max_tokens: int) -> np.ndarray:
    """`[n_windows, context + 1]` held-out windows scoring at most `max_tokens` predictions.

    Consecutive windows overlapping by one token (each token after the first predicted once) when the
    split fits, else that many windows evenly spaced over the split, so every subset is represented.
    """
    available = (len(tokens) - 1) // context
    if available < 1:
        raise ValueError(
            f"held-out split has {len(tokens)} tokens: need at least context + 1 = {context + 1}"
        )
    n_windows = max(1, min(available, max_tokens // context))
    starts = np.linspace(0, available - 1, n_windows).round().astype(np.int64) * context
    return np.stack([np.asarray(tokens[s : s + context + 1]) for s in starts]).astype(np.int64)


@torch.no_grad()
def heldout_loss(
    model: GPT2LMHeadModel, windows: np.ndarray, batch_size: int = 64, *, progress: bool = False
) -> float:
    """Mean next-token loss (nats/token) of `model` over held-out `windows [n, context + 1]`."""
    model.eval()
    total = 0.0
    for first in tqdm(range(0, len(windows), batch_size), desc="held-out loss", disable=not progress):
        batch = torch.from_numpy(windows[first : first + batch_size])
        logits = model(input_ids=batch[:, :-1]).logits  # [b, context, vocab]
        total += float(F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum"))
    model.train()
    return total / (windows.shape[0] * (windows.shape[1] - 1))


def train_steps(
    model: GPT2LMHeadModel,
    train: np.ndarray,
    config: LMConfig,
    *,
    progress: bool = True,
    position: int = 0,
) -> pd.DataFrame:
    """Run the optimisation loop; return the history (step, tokens, lr, loss, tokens/s, seconds, threads)."""
    optimizer = make_optimizer(model, config)
    rng = np.random.default_rng(config.seed)
    dtype = config.torch_product_dtype
    rows, running, start = [], 0.0, time.perf_counter()
    bar = tqdm(total=config.steps, desc=f"LM seed {config.seed}", unit="step", disable=not progress, position=position)
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config.steps, config)
        loss = lm_loss(model, sample_windows(train, config.batch_size, config.context, rng), dtype)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        running += float(loss.detach())
        threads = torch.get_num_threads()
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            seen, elapsed = (step + 1) * config.batch_size * config.context, time.perf_counter() - start
            n = (step % config.log_every) + 1
            lr = optimizer.param_groups[0]["lr"]
            rows.append((step + 1, seen, lr, running / n, seen / elapsed, elapsed, threads))
            running = 0.0
            bar.set_postfix(loss=f"{rows[-1][3]:.3f}", tok_s=f"{rows[-1][4]:.0f}", threads=threads)
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def train_lm(
    train: np.ndarray,
    heldout: np.ndarray,
    tokenizer: PreTrainedTokenizerFast,
    out: str | Path,
    config: LMConfig = LMConfig(),
    *,
    progress: bool = True,
    position: int = 0,
    data: dict[str, object] | None = None,
) -> LMResult:
    """Train a one-layer GPT-2 on `train [n]` tokens, score it and the bigram baseline on `heldout [m]`,
    and save it with its tokenizer to `out` (`position`: the progress bar's line, for side-by-side runs;
    `data`: what identifies the tokens, e.g. the corpus manifest hash, recorded in training.json)."""
    if len(train) <= config.context + 1:
        raise ValueError(f"train has {len(train)} tokens: need more than context + 1 = {config.context + 1}")
    with torch_threads(config.torch_threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the forked RNG: the caller's global RNG is left as it was
        model = GPT2LMHeadModel(gpt2_config(config, tokenizer))
        model.train()
        history = train_steps(model, train, config, progress=progress, position=position)
        windows = heldout_windows(heldout, config.context, config.eval_tokens)
        loss = heldout_loss(model, windows, progress=progress)
    baseline = bigram_loss(train, windows, len(tokenizer))
    seconds = float(history["seconds"].iloc[-1])
    result = LMResult(
        path=Path(out),
        config=config,
        history=history,
        heldout_loss=loss,
        bigram_loss=baseline,
        heldout_tokens=windows.shape[0] * config.context,
        tokens_per_second=float(history["tokens"].iloc[-1]) / seconds,
        seconds=seconds,
    )
    save_lm(model, tokenizer, result, data)
    return result


def save_lm(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, result: LMResult,
            data: dict[str, object] | None = None) -> Path:
    """Save weights, tokenizer, `history.csv` and `training.json` (config, versions, threads, losses, speed)
    to `result.path`, atomically: all into a sibling `.partial` folder renamed into place when complete, so a
    killed run never leaves a folder that looks trained."""
    out = Path(result.path)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    save_tokenizer(tokenizer, tmp, model_max_length=result.config.context)
    result.history.to_csv(tmp / "history.csv", index=False)
    write_json_atomic(tmp / "training.json", training_summary(result, data), indent=2)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def training_summary(result: LMResult, data: dict[str, object] | None = None) -> dict[str, object]:
    """What `training.json` records: config, code version, thread count, the data's identity, losses, speed."""
    return {
        "config": asdict(result.config),
        "data": data or {},
        "code_version": code_version(LM_VERSION),
        "torch_threads": result.config.torch_threads,
        "product_dtype": str(result.config.torch_product_dtype).removeprefix("torch."),
        "heldout_loss": result.heldout_loss,
        "bigram_loss": result.bigram_loss,
        "heldout_tokens": result.heldout_tokens,
        "tokens_per_second": result.tokens_per_second,
        "seconds": result.seconds,
        "mlp_hook": MLP_HOOK,
    }


def model_identity(summary: dict[str, object]) -> dict[str, object]:
    """A training.json without its timings: what identifies the model (equal for a rebuild of the same)."""
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


def load_lm(folder: str | Path) -> GPT2LMHeadModel:
    """A saved model, loaded as any Hugging Face causal LM is."""
    return AutoModelForCausalLM.from_pretrained(str(folder))
