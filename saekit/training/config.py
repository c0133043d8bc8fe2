"""The training recipe as one frozen dataclass, with the paper's recipes as presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from saekit.errors import InputError


@dataclass(frozen=True)
class TrainConfig:
    """How to train an SAE. Every field has a default that works; presets give the published recipes."""

    total_tokens: int = 2_000_000
    """Tokens (activation vectors) to train on; training stops after the batch that reaches it."""
    lr: float = 3e-4
    """Adam's peak learning rate."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's (β1, β2)."""
    lr_warmup_fraction: float = 0.01
    """Share of training over which the learning rate rises linearly from 0 to `lr`."""
    lr_decay_fraction: float = 0.2
    """Share of training at the end over which the learning rate falls linearly to 0."""
    l1_coefficient: float = 5.0
    """relu: λ of the L1 penalty, in units where activations are normalised (see `normalize_activations`)."""
    l1_warmup_fraction: float = 0.05
    """relu/jumprelu: share of training over which λ rises linearly from 0 to its value."""
    l1_weighted_by_decoder_norm: bool = False
    """relu: penalise λ Σ f_i ‖W_dec_i‖ (April 2024 update) instead of λ Σ f_i."""
    l0_coefficient: float = 1.0
    """jumprelu: λ of the L0 penalty."""
    aux_k_coefficient: float = 1 / 32
    """topk/batchtopk: weight α of the AuxK dead-feature loss; 0 turns it off."""
    aux_k: int | None = None
    """topk/batchtopk: dead features AuxK may use per token; None means d_in // 2 (OpenAI's choice)."""
    decoder_norm: Literal["unit", "free"] = "unit"
    """"unit": decoder rows kept at norm 1 (gradient along them removed); "free": unconstrained."""
    decoder_init_norm: float | None = None
    """If set, decoder rows start at this norm (April 2024: 0.1) and W_enc = W_decᵀ; None keeps the SAE's init."""
    init_b_dec: Literal["geometric_median", "mean", "zero", "keep"] = "geometric_median"
    """How b_dec starts: the first batch's geometric median (the paper), its mean, zero, or left as is."""
    normalize_activations: bool = True
    """Scale inputs so E‖x‖ = √d_in while training (λ then means the same at any scale); folded out at the end."""
    resample_at: tuple[float, ...] = ()
    """Fractions of training at which dead features are resampled (the 2023 recipe: 4 times); () = never."""
    dead_window_tokens: int | None = None
    """A feature that fires on none of this many consecutive tokens counts as dead; None: a tenth of the run, at most
    1M tokens and no later than the first resample (a window as long as the run never finds a feature to revive)."""
    resample_pool_tokens: int = 65_536
    """Recent inputs kept to draw resampled directions from."""
    dense_threshold: float = 0.1
    """A feature firing on more than this share of tokens counts as dense."""
    sparse: Literal["auto", "always", "never"] = "auto"
    """Sparse products (only active entries) or the dense reference; "auto": sparse on CPU when few are active."""
    sparse_max_density: float = 0.05
    """auto: use sparse products while the last step's L0 / n_features is below this."""
    compute_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """dtype of the [batch, n_features] products (weights, Adam and losses stay fp32): "auto" takes bf16 where the
    hardware declares native bf16 products (AVX512-BF16/AMX CPUs, CUDA capability ≥ 8.0), never from a timing."""
    decoder_refit_tokens: int = 0
    """After training, refit W_dec and b_dec by least squares on the codes of this many further tokens (encoder
    frozen: the same features fire; the L1's shrinkage leaves the reconstruction); 0 = no refit."""
    log_every_steps: int = 10
    """Steps between rows of the history (and progress-bar updates)."""
    checkpoint_dir: str | None = None
    """Folder for checkpoints (each a loadable SAE folder plus trainer state); None = no checkpoints."""
    checkpoint_every_tokens: int | None = None
    """Tokens between checkpoints; None = only at the end (when checkpoint_dir is set)."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep (older ones are deleted once a newer one is complete); 0 = all."""
    seed: int = 0
    """Seed for resampling's draws (the SAE's own init is seeded at creation)."""
    log_to: tuple[Literal["tensorboard", "wandb"], ...] = ()
    """Experiment trackers that get every history row and the final summary, besides the pandas history."""
    log_dir: str | None = None
    """Where trackers write (TensorBoard's event files, W&B's run folder); None: `logs` beside checkpoint_dir,
    else ./runs."""
    run_name: str | None = None
    """The run's name in the trackers (W&B's run name and id, TensorBoard's sub-folder); None: from the folder."""

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise InputError(f"TrainConfig: {msg}")

        need(self.total_tokens > 0, f"total_tokens must be positive (got {self.total_tokens})")
        need(self.lr > 0, f"lr must be positive (got {self.lr})")
        need(all(0 <= b < 1 for b in self.adam_betas), f"adam_betas must be in [0, 1) (got {self.adam_betas})")
        for name in ("lr_warmup_fraction", "lr_decay_fraction", "l1_warmup_fraction"):
            need(0 <= getattr(self, name) <= 1, f"{name} is a share of training: use a value in [0, 1]")
        need(self.lr_warmup_fraction + self.lr_decay_fraction <= 1,
             "lr_warmup_fraction + lr_decay_fraction must not exceed 1")
        for name in ("l1_coefficient", "l0_coefficient", "aux_k_coefficient"):
            need(getattr(self, name) >= 0, f"{name} must be ≥ 0 (got {getattr(self, name)})")
        need(self.aux_k is None or self.aux_k > 0, "aux_k must be positive, or None for d_in // 2")
        need(self.decoder_init_norm is None or self.decoder_init_norm > 0, "decoder_init_norm must be > 0")
        need(self.dead_window_tokens is None or self.dead_window_tokens > 0,
             "dead_window_tokens must be positive, or None for a tenth of the run")
        need(self.resample_pool_tokens > 0, "resample_pool_tokens must be positive")
        need(0 < self.sparse_max_density <= 1, "sparse_max_density is a share of features: use (0, 1]")
        need(0 < self.dense_threshold <= 1, "dense_threshold is a firing rate: use a value in (0, 1]")
        need(self.decoder_refit_tokens >= 0,
             f"decoder_refit_tokens must be ≥ 0 (0: no refit; got {self.decoder_refit_tokens})")
        need(self.log_every_steps > 0, "log_every_steps must be positive")
        need(self.checkpoint_every_tokens is None or self.checkpoint_every_tokens > 0,
             "checkpoint_every_tokens must be positive, or None")
        need(self.keep_checkpoints >= 0, f"keep_checkpoints must be ≥ 0 (0 keeps all; got {self.keep_checkpoints})")
        need(self.checkpoint_every_tokens is None or self.checkpoint_dir is not None,
             "checkpoint_every_tokens needs checkpoint_dir: say where checkpoints go")
        if isinstance(self.log_to, str):
            object.__setattr__(self, "log_to", (self.log_to,))
        object.__setattr__(self, "log_to", tuple(self.log_to))
        trackers = ("tensorboard", "wandb")
        need(all(t in trackers for t in self.log_to) and len(set(self.log_to)) == len(self.log_to),
             f"log_to takes each of {trackers} at most once (got {self.log_to})")
        points = self.resample_at
        need(all(0 < p < 1 for p in points) and list(points) == sorted(set(points)),
             f"resample_at must be increasing fractions in (0, 1) (got {points})")
        if points:
            need(self.dead_window <= points[0] * self.total_tokens,
                 f"dead_window_tokens ({self.dead_window_tokens}) must fit before the first resample "
                 f"({points[0] * self.total_tokens:.0f} tokens): lower it or resample later")

    @property
    def dead_window(self) -> int:
        """dead_window_tokens, or its default for this run."""
        if self.dead_window_tokens is not None:
            return self.dead_window_tokens
        first_resample = int(self.resample_at[0] * self.total_tokens) if self.resample_at else self.total_tokens
        return max(1, min(1_000_000, self.total_tokens // 10, first_resample))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def towards_monosemanticity(cls, total_tokens: int = 2_000_000, **overrides: Any) -> TrainConfig:
        """The 2023 recipe: unit-norm decoder, b_dec at the geometric median, L1, dead features
        resampled 4 times in the first half (the paper: steps 25k/50k/75k/100k), each over a window
        of half the spacing (the paper: 12.5k steps)."""
        points = (0.1, 0.2, 0.3, 0.4)
        base = dict(total_tokens=total_tokens, decoder_norm="unit", init_b_dec="geometric_median",
                    l1_weighted_by_decoder_norm=False, resample_at=points,
                    dead_window_tokens=max(1, int(total_tokens * 0.05)))
        return cls(**{**base, **overrides})

    @classmethod
    def april_2024(cls, total_tokens: int = 2_000_000, **overrides: Any) -> TrainConfig:
        """Anthropic's April 2024 update: decoder norms free and L1 weighted by them, W_enc = W_decᵀ at
        start with decoder rows of norm 0.1, λ warm-up over the first 5 %, LR decay over the last 20 %,
        no resampling."""
        base = dict(total_tokens=total_tokens, decoder_norm="free", decoder_init_norm=0.1,
                    l1_weighted_by_decoder_norm=True, l1_warmup_fraction=0.05, lr_decay_fraction=0.2,
                    init_b_dec="zero", resample_at=())
        return cls(**{**base, **overrides})


MIN_STEPS = 1000
"""Optimizer steps a run should get at least: `batch_size_for` trades batch size for steps below this."""
BATCH_SIZE_RANGE = (256, 4096)
"""The smallest and largest batch `batch_size_for` chooses."""


LR_BASE = 8e-4
"""`lr_for`'s learning rate for LR_REFERENCE_D_IN inputs and up to LR_REFERENCE_FEATURES features."""
LR_REFERENCE_D_IN = 512
"""The input width up to which `lr_for` gives LR_BASE; above it the rate falls as 1/d_in (to 1/16 of it at most)."""
LR_REFERENCE_FEATURES = 2**14
"""Above this many features `lr_for` lowers the learning rate as 1/√features (sparsify's scaling)."""


def lr_for(d_in: int, n_features: int) -> float:
    """A learning rate for a dictionary reading `d_in` activations scaled to E‖x‖ = √d_in (the trainer's default)
    into `n_features`: LR_BASE, times 512 / d_in above 512 inputs (down to 1/16), times √(2¹⁴ / n_features) above
    2¹⁴ features.

    A step moves each pre-activation by about lr times the summed size of the input's entries, which grows with
    d_in. Measured on the quick demo's models at 1M tokens: a TopK crosscoder over two models' neurons (d_in 1024,
    4096 features, k 64) lost +0.020 / +0.016 / +0.029 / +0.051 nats on its worse model at lr 3e-4 / 4e-4 / 5.7e-4 /
    8e-4 (best at half the rate of d_in 512); a TopK transcoder from ln_2 (d_in 128) +0.020 / +0.011 / +0.021 at
    3e-4 / 8e-4 / 3.2e-3, so narrower inputs keep LR_BASE rather than a higher rate.

    Measured on the quick demo's model (MLP neurons, d_in 512, 1M tokens, batch 512, held-out FVU): TopK k 32 with
    1024 / 4096 / 16384 features reached 0.034 / 0.029 / 0.029 at the old default 3e-4, 0.026 / 0.021 / 0.021 at
    8e-4, 0.026 / 0.022 / 0.023 at 1.6e-3; at 400k tokens (batch 256) 4096 features went 0.034 → 0.027 → 0.024,
    at 4M (batch 2048) 0.012 → 0.010 → 0.009 with dead features 0.1 % → 4.5 % → 14 %. ReLU (λ 5, 4096) went from
    FVU 0.166 at L0 17 (3e-4) to 0.200 at L0 7 (8e-4) and 0.153 at L0 8 (1.6e-3). sparsify's 2e-4·√(2¹⁴/n)
    (for long runs) gave 16384 features 0.038: at these budgets the size does not call for a lower rate, so the
    scaling starts only above 2¹⁴ features, where the runs that train them are long."""
    if n_features < 1 or d_in < 1:
        raise InputError(f"d_in and n_features must be positive (got {d_in}, {n_features})")
    width = min(1.0, max(1 / 16, LR_REFERENCE_D_IN / d_in))
    return LR_BASE * width * min(1.0, (LR_REFERENCE_FEATURES / n_features) ** 0.5)


def batch_size_for(total_tokens: int) -> int:
    """A batch size for a token budget: 4096 where that still gives MIN_STEPS steps, else the largest power of two
    that does, down to 256.

    Adam needs steps more than tokens at small budgets. On the quick demo's model, 1M tokens at 4096 (245 steps)
    left a TopK transcoder (ln_2 → MLP, 4096 features) at FVU 0.29 and +0.136 nats; at 512 (1,953 steps), FVU 0.027
    and +0.020. A TopK SAE on the MLP neurons went from FVU 0.144 to 0.057, a ReLU SAE from L0 506 (not yet sparse)
    to 43. A step costs more per token at small batches (2.5x here at 512), so large budgets keep 4096."""
    low, high = BATCH_SIZE_RANGE
    if total_tokens < 1:
        raise InputError(f"total_tokens must be positive (got {total_tokens})")
    size = high
    while size > low and total_tokens < MIN_STEPS * size:
        size //= 2
    return size
