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
- A transcoder is measured and spliced at its target: x is read at its hook, y at the target hook, the metrics
  compare y with ŷ, and ŷ (zeros, the mean of y) replaces the target's activations.
- A crosscoder is measured per model (`per_model`, keyed by model): each model's block of x̂ is compared with
  that model's activations and spliced into it. Its top-level mse and fvu are over all blocks together, and
  its top-level losses are the models' means.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations import nnsight_api as api
from saekit.activations.nnsight_api import Site
from saekit.activations.reading import (
    ReadSettings,
    keep_positions,
    open_reading,
    provenance_of,
    read_settings,
)
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
    per_model: dict[str, EvalResult] = field(default_factory=dict)  # a crosscoder's metrics in each model

    def to_dict(self) -> dict[str, Any]:
        """The scalar metrics as a JSON-able dict (densities left out; see `density_histogram`), with a
        crosscoder's `per_model` dicts."""
        out = {name: getattr(self, name) for name in _SCALAR_FIELDS}
        if self.per_model:
            out["per_model"] = {name: result.to_dict() for name, result in self.per_model.items()}
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
    model: Any = None,
    text: Any = None,
    *,
    hook: str | None = None,
    side: str | None = None,
    target_hook: str | None = None,
    context_len: int | None = None,
    max_tokens: int | None = DEFAULT_EVAL_TOKENS,
    batch_size: int = 8,
    exclude_special_tokens: bool | None = None,
    dense_threshold: float = 0.1,
    tokenizer: Any = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate `sae` on `model`'s activations over `text` (see the module docstring for the metrics).

    `model`: nnsight model, hub name, folder or torch module (a crosscoder's: a list, one per model it reads); None
    uses the model(s) in the SAE's provenance. `text`: folder, list of strings, DocumentSource or token ids; None
    uses the text in the SAE's provenance. `hook`, `side`, `target_hook` (a transcoder's), `context_len`,
    `exclude_special_tokens` default to the SAE's provenance. `max_tokens` bounds the tokens read (None: all).
    """
    kwargs = dict(hook=hook, side=side, context_len=context_len, max_tokens=max_tokens, batch_size=batch_size,
                  exclude_special_tokens=exclude_special_tokens, dense_threshold=dense_threshold, tokenizer=tokenizer,
                  progress=progress)
    if getattr(sae, "n_models", 1) > 1:
        return evaluate_crosscoder(sae, model, text, **kwargs)
    return evaluate_many([sae], _the_model(sae, model), text, target_hook=target_hook, **kwargs)[0]


def _the_model(sae: Dictionary, model: Any) -> Any:
    """`model`, else the one the dictionary's provenance names."""
    model = model if model is not None else provenance_of(sae).model
    if model is None:
        raise InputError("no model given and the dictionary's provenance names none; pass the model it reads")
    return model


def target_site(sae: Dictionary, settings: ReadSettings, target_hook: str | None = None) -> Site:
    """Where the dictionary's reconstruction belongs: a transcoder's target hook (given, else its provenance's), else
    where it reads."""
    prov = provenance_of(sae)
    hook = target_hook or prov.target_hook
    if hook is None:
        if getattr(sae, "is_transcoder", False):
            raise InputError("a transcoder is spliced at its target, and neither target_hook nor its provenance "
                             "names one: pass target_hook='module.path'")
        return settings.hook, settings.side
    return hook, prov.target_side


@torch.no_grad()
def evaluate_many(
    saes: Sequence[Dictionary],
    model: Any,
    text: Any = None,
    *,
    hook: str | None = None,
    side: str | None = None,
    target_hook: str | None = None,
    context_len: int | None = None,
    max_tokens: int | None = DEFAULT_EVAL_TOKENS,
    batch_size: int = 8,
    exclude_special_tokens: bool | None = None,
    dense_threshold: float = 0.1,
    tokenizer: Any = None,
    progress: bool = True,
) -> list[EvalResult]:
    """`evaluate` of several SAEs (or transcoders) of one model on the same tokens, each result the one `evaluate`
    gives.

    What does not depend on the SAE is computed once: the clean forward (activations and loss), the
    zero-ablated and the mean-ablated losses; each SAE adds only its own spliced forward. Settings
    (hook, side, target, context, special tokens; from the first SAE's provenance unless given) must agree."""
    if not saes:
        return []
    if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
        raise InputError(f"batch_size and max_tokens must be positive (got {batch_size}, {max_tokens})")
    settings = read_settings(saes[0], hook, side, context_len, exclude_special_tokens)
    target = target_site(saes[0], settings, target_hook)
    first = saes[0]
    for sae in saes[1:]:
        other = read_settings(sae, hook, side, context_len, exclude_special_tokens)
        if (other, target_site(sae, other, target_hook)) != (settings, target) or \
                (sae.d_in, sae.d_out, sae.dtype, sae.device) != (first.d_in, first.d_out, first.dtype, first.device):
            raise InputError(f"evaluate_many: the SAEs read differently ({settings} vs {other}, or their target, "
                             "d_in, d_out, dtype or device); evaluate them separately")
    reading = open_reading(model, text, first, max_tokens=max_tokens, tokenizer=tokenizer, **settings._asdict())
    model, special = reading.model, torch.tensor(reading.special_ids, dtype=torch.long)
    batches = list(split_windows(reading.windows, batch_size))
    lm = api.has_lm_head(model)
    sites = [(settings.hook, settings.side)] + ([target] if target != (settings.hook, settings.side) else [])

    stats = [ReconstructionStats(sae.d_out, sae.d_sae) for sae in saes]
    shared = {name: LossSum() for name in ("clean", "zero_ablated", "mean_ablated")}  # the same for every SAE
    spliced = [LossSum() for _ in saes]
    for batch in tqdm(batches, desc="evaluate", disable=not progress):
        keep = keep_positions(batch, special)
        x, y = _clean_pass(first, model, sites, batch, keep, shared if lm else None)
        for sae, sae_stats, sae_loss in zip(saes, stats, spliced):  # one width: _clean_pass checked it
            f = sae.encode(x)
            y_hat = sae.decode(f)
            sae_stats.update(y, f, y_hat)
            if lm:
                sae_loss.update(api.spliced_logits(model, *batch, target[0], _put(keep, y_hat), target[1]), batch)
    if lm:
        _mean_ablation(model, batches, special, target, stats[0].mean, shared["mean_ablated"], progress)
    return [_result(sae_stats.metrics(dense_threshold), {**shared, "spliced": loss} if lm else None)
            for sae_stats, loss in zip(stats, spliced)]


def _mean_ablation(model: Any, batches: list[TokenWindows], special: Tensor, site: Site, mean: Tensor,
                   loss: LossSum, progress: bool) -> None:
    """The loss with the kept activations at `site` replaced by their mean [d] over the eval tokens."""
    for batch in tqdm(batches, desc="mean ablation", disable=not progress):
        keep = keep_positions(batch, special)
        logits = api.spliced_logits(model, *batch, site[0], _put(keep, mean.expand(int(keep.sum()), -1)), site[1])
        loss.update(logits, batch)


@torch.no_grad()
def evaluate_crosscoder(
    crosscoder: Dictionary,
    models: Sequence[Any] | None = None,
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
    """A crosscoder's metrics over all its models' activations, and in each model (`per_model`, keyed by the models'
    names): that model's block of the reconstruction against its activations, and spliced into it."""
    models = list(models) if models is not None else list(provenance_of(crosscoder).models)
    if len(models) != crosscoder.n_models:
        raise InputError(f"the crosscoder reads {crosscoder.n_models} models and {len(models) or 'none'} were given "
                         "(or named by its provenance): pass them all, in the order it was trained on")
    if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
        raise InputError(f"batch_size and max_tokens must be positive (got {batch_size}, {max_tokens})")
    settings = read_settings(crosscoder, hook, side, context_len, exclude_special_tokens)
    site = (settings.hook, settings.side)
    reading = open_reading(models, text, crosscoder, max_tokens=max_tokens, tokenizer=tokenizer, **settings._asdict())
    opened = list(reading.models)
    names = model_keys(models)
    special = torch.tensor(reading.special_ids, dtype=torch.long)
    batches = list(split_windows(reading.windows, batch_size))
    lm = all(api.has_lm_head(m) for m in opened)
    blocks = crosscoder.model_blocks()

    overall = ReconstructionStats(crosscoder.d_in, crosscoder.d_sae)
    stats = [ReconstructionStats(b.stop - b.start, crosscoder.d_sae) for b in blocks]
    losses = [{name: LossSum() for name in ("clean", "zero_ablated", "mean_ablated", "spliced")} for _ in opened]
    for batch in tqdm(batches, desc="evaluate crosscoder", disable=not progress):
        keep = keep_positions(batch, special)
        x = torch.cat([_clean_pass(crosscoder, m, [site], batch, keep, loss if lm else None, width)[0]  # widths checked
                       for m, loss, width in zip(opened, losses, (b.stop - b.start for b in blocks))], dim=1)
        f = crosscoder.encode(x)
        x_hat = crosscoder.decode(f)
        overall.update(x, f, x_hat)
        for m, block in enumerate(blocks):
            stats[m].update(x[:, block], f, x_hat[:, block])
            if lm:
                logits = api.spliced_logits(opened[m], *batch, site[0], _put(keep, x_hat[:, block]), site[1])
                losses[m]["spliced"].update(logits, batch)
    per_model = {}
    for m, name in enumerate(names):
        if lm:
            _mean_ablation(opened[m], batches, special, site, stats[m].mean, losses[m]["mean_ablated"], progress)
        per_model[name] = _result(stats[m].metrics(dense_threshold), losses[m] if lm else None)
    return _mean_over_models(_result(overall.metrics(dense_threshold), None), per_model)


def model_keys(models: Sequence[Any]) -> list[str]:
    """A name per model for `per_model`: its hub name or folder, with #2, #3 after repeats."""
    names = [api.model_name(m) if not isinstance(m, (str, Path)) else str(m) for m in models]
    names = [name or f"model {i}" for i, name in enumerate(names)]
    return [name if names[:i].count(name) == 0 else f"{name}#{names[:i].count(name) + 1}"
            for i, name in enumerate(names)]


def _mean_over_models(overall: EvalResult, per_model: dict[str, EvalResult]) -> EvalResult:
    """The overall result with the models' mean losses (clean, spliced, ablated; None where any model has none) and
    the loss recovered and increase of those means."""
    means = {}
    for name in ("loss_clean", "loss_spliced", "loss_zero_ablated", "loss_mean_ablated"):
        values = [getattr(r, name) for r in per_model.values()]
        means[name] = None if any(v is None for v in values) else sum(values) / len(values)
    clean, spliced, zero = means["loss_clean"], means["loss_spliced"], means["loss_zero_ablated"]
    if clean is None:
        note = next((r.note for r in per_model.values() if r.note), None)
        return replace(overall, **dict.fromkeys(_LOSS_FIELDS), note=note, per_model=per_model)
    return replace(overall, **means, loss_recovered=(zero - spliced) / (zero - clean) if zero != clean else None,
                   loss_increase=spliced - clean, note="losses are the means over the models; see per_model",
                   per_model=per_model)


def _clean_pass(
    sae: Dictionary,
    model: Any,
    sites: Sequence[Site],
    batch: TokenWindows,
    keep: Tensor,
    losses: dict[str, LossSum] | None,
    width: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The kept activations at the dictionary's input site and at its target [tokens, d] (the same tensor when they
    are one site), on the SAE's device and dtype; for a language model also the clean and the zero-ablated losses
    (the target zeroed). `width`: the input's expected width (default the SAE's d_in)."""
    reads, logits = api.read_sites(model, *batch, sites, logits=losses is not None)
    if losses is not None:
        losses["clean"].update(logits, batch)
    check_width(sae, model, sites[0][0], reads[0].shape[-1], width or sae.d_in)
    if len(sites) > 1:
        check_width(sae, model, sites[1][0], reads[1].shape[-1], sae.d_out, "d_out")
    kept = [r[keep.to(r.device)].to(device=sae.device, dtype=sae.dtype) for r in reads]  # each [tokens, d]
    x, y = kept[0], kept[-1]
    if losses is not None:
        zeros = torch.zeros(y.shape, device=sae.device, dtype=sae.dtype)
        site = sites[-1]
        losses["zero_ablated"].update(api.spliced_logits(model, *batch, site[0], _put(keep, zeros), site[1]), batch)
    return x, y


def check_width(sae: Dictionary, model: Any, hook: str, width: int, expected: int | None = None,
                what: str = "d_in") -> None:
    """Raise InputError when the hook's activations are not the width the SAE reads (`expected`, default d_in)."""
    expected = sae.d_in if expected is None else expected
    if width != expected:
        name = api.model_name(model) or type(api.underlying_module(model)).__name__
        raise InputError(
            f"the SAE {'reads' if what == 'd_in' else 'writes'} {what}={expected} but hook {hook} of model {name} "
            f"gives width {width}: "
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

_SCALAR_FIELDS = tuple(f.name for f in fields(EvalResult) if f.name not in ("densities", "per_model"))
