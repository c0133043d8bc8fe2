"""How good is an SAE: reconstruction, sparsity, and the model's loss with the SAE spliced in.

Conventions (the same as the trainer's):
- `mse` is the mean over tokens of the squared error summed over d_in: mean_t ‖x_t − x̂_t‖².
- `fvu` (fraction of variance unexplained) = Σ_t ‖x_t − x̂_t‖² / Σ_t ‖x_t − mean(x)‖².
- `l0` is the mean number of active features per token; a feature's density is the fraction of
  eval tokens it fires on; dead = density 0, dense = density > `dense_threshold`.
- Losses are mean next-token cross-entropies in nats over real (unpadded) positions. `spliced`
  replaces the hook's activations by the SAE's reconstruction, `zero_ablated` by zeros and
  `mean_ablated` by their mean over the eval tokens; `loss_recovered` = (zero − spliced) / (zero − clean)
  and `loss_increase` = spliced − clean.
- Only the positions the SAE was trained on are measured and replaced: padding, and special tokens
  (BOS/EOS/PAD) unless the SAE was trained on them, keep their original activations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations import nnsight_api as api
from saekit.activations.reading import ReadSettings, keep_positions, open_reading, read_settings
from saekit.activations.windows import TokenWindows, split_windows
from saekit.errors import InputError
from saekit.saes.dictionary import Dictionary

DEFAULT_EVAL_TOKENS = 16_384


@dataclass(frozen=True)
class EvalResult:
    """Evaluation metrics; loss fields are None for a model without an LM head (see `note`)."""

    n_tokens: int  # activation vectors measured
    mse: float
    fvu: float | None  # None when the activations have no variance
    l0: float
    dead_fraction: float
    dense_fraction: float
    loss_clean: float | None
    loss_spliced: float | None
    loss_zero_ablated: float | None
    loss_mean_ablated: float | None
    loss_recovered: float | None
    loss_increase: float | None
    note: str | None = None
    densities: Tensor = field(default_factory=lambda: torch.zeros(0), repr=False)  # [d_sae] firing rates

    def to_dict(self) -> dict[str, Any]:
        """The scalar metrics as a JSON-able dict (densities left out; see `density_histogram`)."""
        out = asdict(self)
        del out["densities"]
        return out

    def density_histogram(self, bins: int = 40) -> pd.DataFrame:
        """Histogram of log10 feature density over the features that fired (dead ones have log10 = -inf)."""
        alive = self.densities[self.densities > 0].double().log10().numpy()
        counts, edges = np.histogram(alive, bins=bins) if alive.size else (np.zeros(0, int), np.zeros(1))
        return pd.DataFrame({"log10_density_start": edges[:-1], "log10_density_end": edges[1:], "n_features": counts})


# --- accumulators ---------------------------------------------------------------------------------


class ReconstructionStats:
    """Running sums for mse, fvu, L0 and feature densities (float64, so long runs stay exact)."""

    def __init__(self, d_in: int, d_sae: int) -> None:
        self.n = 0
        self.sq_error = 0.0
        self.sum_x = torch.zeros(d_in, dtype=torch.float64)
        self.sum_sq_x = 0.0
        self.active = 0.0
        self.fired = torch.zeros(d_sae, dtype=torch.float64)

    def update(self, x: Tensor, f: Tensor, x_hat: Tensor) -> None:
        """x, x_hat: [tokens, d_in]; f: [tokens, d_sae]."""
        x, x_hat = x.double().cpu(), x_hat.double().cpu()
        fired = (f != 0).cpu()
        self.n += x.shape[0]
        self.sq_error += float((x - x_hat).pow(2).sum())
        self.sum_x += x.sum(0)
        self.sum_sq_x += float(x.pow(2).sum())
        self.active += float(fired.sum())
        self.fired += fired.sum(0).double()

    @property
    def mean(self) -> Tensor:
        """Mean activation [d_in] over the tokens seen."""
        return self.sum_x / max(self.n, 1)

    def metrics(self, dense_threshold: float) -> dict[str, Any]:
        n = max(self.n, 1)
        variance = self.sum_sq_x - n * float(self.mean.pow(2).sum())  # Σ‖x − mean‖²
        densities = (self.fired / n).float()
        return {
            "n_tokens": self.n,
            "mse": self.sq_error / n,
            "fvu": self.sq_error / variance if variance > 0 else None,
            "l0": self.active / n,
            "dead_fraction": float((densities == 0).float().mean()),
            "dense_fraction": float((densities > dense_threshold).float().mean()),
            "densities": densities,
        }


class LossSum:
    """Running next-token cross-entropy over real positions."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, logits: Tensor, windows: TokenWindows) -> None:
        """logits: [batch, seq, vocab]; a position counts when it and its successor are real tokens."""
        ids, mask = windows.input_ids.to(logits.device), windows.attention_mask.to(logits.device)
        valid = (mask[:, :-1] * mask[:, 1:]).bool()
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1][valid].float(), ids[:, 1:][valid], reduction="sum"
        )
        self.total += float(losses)
        self.count += int(valid.sum())

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


def _put(keep: Tensor, values: Tensor) -> Callable[[Tensor], Tensor]:
    """A replacement for the hook: `acts` [batch, seq, d] with `values` written at `keep` [batch, seq]."""

    def replace(acts: Tensor) -> Tensor:
        out = acts.clone()
        out[keep.to(acts.device)] = values.to(device=acts.device, dtype=acts.dtype)
        return out

    return replace


# --- the evaluation -------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    sae: Dictionary,
    model: Any,
    text: Any = None,
    *,
    hook: str | None = None,
    side: str | None = None,
    context_len: int | None = None,
    max_tokens: int | None = DEFAULT_EVAL_TOKENS,
    batch_size: int = 8,
    exclude_special_tokens: bool | None = None,
    dense_threshold: float = 0.1,
    tokenizer: Any = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate `sae` on `model`'s activations over `text` (see the module docstring for the metrics).

    `model`: nnsight model, hub name, folder or torch module. `text`: folder, list of strings,
    DocumentSource or token ids; None uses the text in the SAE's metadata. `hook`, `side`,
    `context_len`, `exclude_special_tokens` default to the SAE's metadata. `max_tokens` bounds the
    tokens read (None: all of the text).
    """
    return evaluate_many([sae], model, text, hook=hook, side=side, context_len=context_len, max_tokens=max_tokens,
                         batch_size=batch_size, exclude_special_tokens=exclude_special_tokens,
                         dense_threshold=dense_threshold, tokenizer=tokenizer, progress=progress)[0]


@torch.no_grad()
def evaluate_many(
    saes: Sequence[Dictionary],
    model: Any,
    text: Any = None,
    *,
    hook: str | None = None,
    side: str | None = None,
    context_len: int | None = None,
    max_tokens: int | None = DEFAULT_EVAL_TOKENS,
    batch_size: int = 8,
    exclude_special_tokens: bool | None = None,
    dense_threshold: float = 0.1,
    tokenizer: Any = None,
    progress: bool = True,
) -> list[EvalResult]:
    """`evaluate` of several SAEs of one model on the same tokens, each result the one `evaluate` gives.

    What does not depend on the SAE is computed once: the clean forward (activations and loss), the
    zero-ablated and the mean-ablated losses; each SAE adds only its own spliced forward. Settings
    (hook, side, context, special tokens; from the first SAE's metadata unless given) must agree."""
    if not saes:
        return []
    if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
        raise InputError(f"batch_size and max_tokens must be positive (got {batch_size}, {max_tokens})")
    settings = read_settings(saes[0], hook, side, context_len, exclude_special_tokens)
    for sae in saes[1:]:
        other = read_settings(sae, hook, side, context_len, exclude_special_tokens)
        if other != settings or (sae.d_in, sae.dtype, sae.device) != (saes[0].d_in, saes[0].dtype, saes[0].device):
            raise InputError(f"evaluate_many: the SAEs read differently ({settings} vs {other}, or d_in/dtype/"
                             "device); evaluate them separately")
    reading = open_reading(model, text, saes[0], max_tokens=max_tokens, tokenizer=tokenizer, **settings._asdict())
    model, special = reading.model, torch.tensor(reading.special_ids, dtype=torch.long)
    batches = list(split_windows(reading.windows, batch_size))
    lm = api.has_lm_head(model)

    stats = [ReconstructionStats(sae.d_in, sae.d_sae) for sae in saes]
    shared = {name: LossSum() for name in ("clean", "zero_ablated", "mean_ablated")}  # the same for every SAE
    spliced = [LossSum() for _ in saes]
    for batch in tqdm(batches, desc="evaluate", disable=not progress):
        keep = keep_positions(batch, special)
        x = _clean_pass(saes[0], model, settings, batch, keep, shared if lm else None)
        for sae, sae_stats, sae_loss in zip(saes, stats, spliced):  # one d_in: _clean_pass checked the width
            f = sae.encode(x)
            x_hat = sae.decode(f)
            sae_stats.update(x, f, x_hat)
            if lm:
                sae_loss.update(api.spliced_logits(model, *batch, settings.hook, _put(keep, x_hat), settings.side),
                                batch)
    if lm:
        for batch in tqdm(batches, desc="mean ablation", disable=not progress):
            keep = keep_positions(batch, special)
            mean = stats[0].mean.expand(int(keep.sum()), -1)  # the activations' mean: the same for every SAE
            logits = api.spliced_logits(model, *batch, settings.hook, _put(keep, mean), settings.side)
            shared["mean_ablated"].update(logits, batch)
    return [_result(sae_stats.metrics(dense_threshold), {**shared, "spliced": loss} if lm else None)
            for sae_stats, loss in zip(stats, spliced)]


def _clean_pass(
    sae: Dictionary,
    model: Any,
    settings: ReadSettings,
    batch: TokenWindows,
    keep: Tensor,
    losses: dict[str, LossSum] | None,
) -> Tensor:
    """The kept activations [tokens, d_in] of one batch, on the SAE's device and dtype; for a language model
    also the clean and the zero-ablated losses."""
    hook, side = settings.hook, settings.side
    if losses is None:
        acts = api.get_activations(model, *batch, hook, side)
    else:
        acts, logits = api.activations_and_logits(model, *batch, hook, side)
        losses["clean"].update(logits, batch)
    check_width(sae, model, hook, acts.shape[-1])
    x = acts[keep.to(acts.device)].to(device=sae.device, dtype=sae.dtype)  # [tokens, d_in]
    if losses is not None:
        zeros = torch.zeros(x.shape, device=sae.device, dtype=sae.dtype)
        losses["zero_ablated"].update(api.spliced_logits(model, *batch, hook, _put(keep, zeros), side), batch)
    return x


def check_width(sae: Dictionary, model: Any, hook: str, width: int) -> None:
    """Raise InputError when the hook's activations are not the width the SAE reads."""
    if width != sae.d_in:
        name = api.model_name(model) or type(api.underlying_module(model)).__name__
        raise InputError(
            f"the SAE reads d_in={sae.d_in} but hook {hook} of model {name} gives width {width}: "
            "pass the --model/--hook the SAE was trained on"
        )


def _result(metrics: dict[str, Any], losses: dict[str, LossSum] | None) -> EvalResult:
    if losses is None:
        note = "the model has no LM head, so the next-token loss fields are None"
        return EvalResult(**metrics, **dict.fromkeys(_LOSS_FIELDS), note=note)
    clean, spliced, zero, mean = (losses[k].mean for k in ("clean", "spliced", "zero_ablated", "mean_ablated"))
    note = None
    if clean is None:
        note = "no window has two real tokens in a row, so no next-token loss could be measured"
        return EvalResult(**metrics, **dict.fromkeys(_LOSS_FIELDS), note=note)
    recovered = (zero - spliced) / (zero - clean) if zero != clean else None
    return EvalResult(
        **metrics,
        loss_clean=clean,
        loss_spliced=spliced,
        loss_zero_ablated=zero,
        loss_mean_ablated=mean,
        loss_recovered=recovered,
        loss_increase=spliced - clean,
        note=note,
    )


_LOSS_FIELDS = (
    "loss_clean", "loss_spliced", "loss_zero_ablated", "loss_mean_ablated", "loss_recovered", "loss_increase",
)
