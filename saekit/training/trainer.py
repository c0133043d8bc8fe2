"""The trainer: Adam over any iterable of activation batches, with the paper's recipe around it.

`train(sae, batches, cfg)` is the whole interface. Inside: activations scaled to E‖x‖ = √d_in, b_dec
started at the geometric median, LR warm-up/decay, λ warm-up, unit-norm decoder rows, dead/dense
tracking, dead-feature resampling (relu) or AuxK (topk/batchtopk), a progress bar, a pandas history,
checkpoints, and resume. The SAE it returns works on the original (unscaled) activations.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.errors import InputError
from saekit.saes import SAE, LossContext, SAELoss
from saekit.saes.batch import LOCAL, BatchReduce, row_variance
from saekit.training.checkpoint import (
    ResumeMismatchError,
    checkpoint_name,
    config_differences,
    find_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from saekit.training.config import TrainConfig
from saekit.training.decoder_refit import DecoderRefit, DecoderRefitSums
from saekit.training.distributed import DataParallel, LossModule
from saekit.training.experiment_log import ExperimentLog, open_logs
from saekit.training.geometric_median import geometric_median
from saekit.training.interrupts import interrupts_between_steps
from saekit.training.precision import resolve_compute_dtype
from saekit.training.resampling import resample_dead
from saekit.training.schedules import lr_factor, warmup_factor
from saekit.training.tracking import FiringTracker


@dataclass
class TrainResult:
    """What a training run leaves: the SAE (also trained in place), its history, and a summary."""

    sae: SAE
    history: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Progress:
    """The trainer's counters: everything besides tensors that a checkpoint must restore."""

    step: int = 0
    tokens: int = 0
    scale: float = 1.0  # inputs are multiplied by this while training
    target_scale: float = 1.0  # a transcoder's targets are multiplied by this (an SAE's target is its input)
    started: bool = False
    resamples_done: int = 0
    resampled_features: int = 0
    next_checkpoint: int | None = None
    last_density: float = 0.0  # share of (token, feature) entries active in the last step: picks the sparse path


@runtime_checkable
class SeekableBatches(Protocol):
    """Batches that can restart at any batch number without producing the ones before it (an
    ActivationSource is one): a resumed run then skips the seen batches instead of recomputing them."""

    def __iter__(self) -> Iterator[Tensor]: ...

    def batches_from(self, first_batch: int) -> Iterator[Tensor]: ...


class NonFiniteError(InputError):
    """NaN or infinite activations or loss: training stops before the step, so no weight is ever non-finite."""


class Trainer:
    """Trains one SAE; holds the optimiser, the firing record and the counters between steps.

    With `parallel` (a rank of data-parallel training), the batches are this rank's shares of the global batches
    and every decision is taken from the ranks' reduced numbers (see `saekit.training.distributed`)."""

    def __init__(self, sae: SAE, cfg: TrainConfig, parallel: DataParallel | None = None) -> None:
        if parallel is not None and cfg.decoder_refit_tokens:
            raise InputError("the decoder refit reads its tokens in one process: train with one rank to use "
                             "decoder_refit_tokens (--refit-tokens), or leave it at 0")
        self.sae, self.cfg, self.parallel = sae, cfg, parallel
        self.batch: BatchReduce = parallel or LOCAL
        self.loss_module = parallel.wrap(LossModule(sae)) if parallel else None
        self.optimizer = make_adam(sae, cfg)
        self.tracker = FiringTracker(sae.d_sae, cfg.dead_window, sae.device)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.progress = _Progress(next_checkpoint=cfg.checkpoint_every_tokens)
        self.pool: deque[Tensor] = deque()  # recent training inputs, for resampling
        self.history: list[dict[str, float]] = []
        self.aux_k = cfg.aux_k or max(1, sae.d_out // 2)
        self.compute_dtype = resolve_compute_dtype(cfg.compute_dtype, sae.dtype, sae.device, sae.d_in, sae.d_sae)
        self._training_units = False  # whether the SAE currently expects inputs multiplied by the scale
        self._checkpointed_tokens: int | None = None  # tokens at the last checkpoint written
        self.refit: DecoderRefit | None = None  # the decoder refit after training, when the config asks for one
        self._refit_sums: DecoderRefitSums | None = None  # its sums while it reads its tokens
        self._logs: list[ExperimentLog] | None = None  # the trackers of cfg.log_to, opened at the first row
        self.progress.last_density = sae.initial_density()

    # --- the loop ---------------------------------------------------------------------------------

    def fit(self, batches: Iterable[Tensor], progress: bool = True) -> TrainResult:
        """Train until cfg.total_tokens, then fold the input scale back into the SAE.

        Ctrl-C is taken between steps: with checkpoints on, the step just finished is saved first."""
        return fit_together([self], batches, progress=progress)[0]

    @property
    def done(self) -> bool:
        """Whether training has all its tokens (the decoder refit may still be reading)."""
        return self.progress.tokens >= self.cfg.total_tokens

    @property
    def finished(self) -> bool:
        """Whether training and the decoder refit the config asks for are both over."""
        return self.done and (not self.cfg.decoder_refit_tokens or self.refit is not None)

    def first_batch_needed(self) -> int:
        """The first batch a resumed run must see: the last ones whose inputs refill the resampling pool, then the
        ones it has not trained on (0 for a fresh run)."""
        p = self.progress
        if p.step == 0:
            return 0
        replay = min(p.step, math.ceil(self.cfg.resample_pool_tokens * p.step / p.tokens) + 1) \
            if self.cfg.resample_at else 0
        return p.step - replay

    def take(self, index: int, x: Tensor, rows: list[int], bar: tqdm | None = None) -> None:
        """Batch number `index` of the stream: trained on if this run has not seen it, remembered for the resampling
        pool if a resumed run needs it there, read by the decoder refit once training is over, else passed over."""
        if self.finished or index < self.first_batch_needed():
            return
        if index < self.progress.step:
            if not self.done:
                self._remember(self._scaled(self._prepare(x)))
        elif not self.done:
            self._train_on(self._prepare(x), rows, bar)
            if self.done:
                self._checkpoint_if_new()  # a kill during the refit resumes here
        else:
            self._refit_sums = self._refit_sums or DecoderRefitSums(self.sae, self.cfg.decoder_refit_tokens)
            self._refit_sums.add(self._scaled(self._prepare(x)))
            if self._refit_sums.full:
                self._apply_refit()

    def _apply_refit(self) -> None:
        """The least-squares decoder for the trained encoder's codes, on the inputs read after training's last batch
        (a resumed run reads the same inputs and ends with the same weights)."""
        sums = self._refit_sums or DecoderRefitSums(self.sae, self.cfg.decoder_refit_tokens)
        self.refit, self._refit_sums = sums.apply(), None
        if self.refit.tokens < self.cfg.decoder_refit_tokens:
            tqdm.write(f"saekit.train: the batches ran out after {self.refit.tokens:,} of the decoder refit's "
                       f"{self.cfg.decoder_refit_tokens:,} tokens; refit on those")

    def _rows_on_every_rank(self, x: Tensor | None) -> list[int]:
        """Rows of each rank's next batch (0 where a rank's batches ran out): one process's alone outside DDP."""
        n = 0 if x is None else x.shape[0]
        return self.parallel.gather_counts(n) if self.parallel else [n]

    def _train_on(self, x: Tensor, rows: list[int], bar: tqdm | None) -> None:
        p = self.progress
        if not p.started:
            self._start(x)
        x = self._scaled(x)
        out = self.step(x, rows)
        if p.step % self.cfg.log_every_steps == 0 or p.tokens >= self.cfg.total_tokens:
            row = self._log_row(x, out)
            self._record(row)
            if bar is not None:
                bar.set_postfix(mse=f"{row['mse']:.3g}", L0=f"{row['l0']:.1f}", dead=f"{row['dead_fraction']:.1%}")
        self._maybe_resample()
        if p.next_checkpoint is not None and p.tokens >= p.next_checkpoint:
            self.save_checkpoint()
            while p.next_checkpoint <= p.tokens:
                p.next_checkpoint += self.cfg.checkpoint_every_tokens

    def step(self, batch: Tensor, rows: list[int] | None = None) -> SAELoss:
        """One Adam step on a batch [batch, batch_width] (training units); updates the counters and firing record.
        rows: every rank's rows of this global batch (data-parallel training; this batch alone by default)."""
        cfg, sae, p = self.cfg, self.sae, self.progress
        rows = rows or [batch.shape[0]]
        n = sum(rows)
        progress = (p.tokens + n) / cfg.total_tokens
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(progress, cfg.lr_warmup_fraction, cfg.lr_decay_fraction)
        x, target = sae.split_batch(batch)
        ctx, sparse = self._loss_context(progress), self._use_sparse()
        if self.loss_module is None:
            out = sae.loss(x, ctx, sparse=sparse, target=target)
            total = out.total
        else:
            total, out = self.loss_module(x, ctx, sparse, target, len(rows) * batch.shape[0] / n)
        if not torch.isfinite(out.total):
            raise NonFiniteError(
                f"saekit.train: the loss became {out.total.item()} at step {p.step} ({p.tokens:,} tokens) on finite "
                f"inputs (mse {out.mse.item():.4g}, sparsity {out.sparsity.item():.4g}): training diverged; lower "
                f"the learning rate (lr={cfg.lr}) or the sparsity coefficient; no weights were updated"
            )
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(total)  # not Tensor.backward: nnsight, once imported, wraps it (~12 µs a call)
        if cfg.decoder_norm == "unit":
            sae.remove_parallel_decoder_grad()
        self.optimizer.step()
        if cfg.decoder_norm == "unit":
            sae.normalize_decoder()
        sae.after_step(out, self.batch)
        p.step += 1
        p.tokens += n
        fired = self.batch.sum(out.fired(sae.d_sae))
        p.last_density = float(fired.sum()) / (n * sae.d_sae)
        self.tracker.update(fired, n, p.tokens)
        if cfg.resample_at:
            self._remember(batch)
        return out

    def _use_sparse(self) -> bool:
        """Sparse products where they win: on CPU, while few features are active per token."""
        mode = self.cfg.sparse
        if mode != "auto" or not self.sae.supports_sparse:
            return mode == "always"
        if self.sae.device.type != "cpu":
            return False
        return self.progress.last_density < self.cfg.sparse_max_density

    def _loss_context(self, progress: float) -> LossContext:
        cfg, sae = self.cfg, self.sae
        ramp = warmup_factor(progress, cfg.l1_warmup_fraction)
        penalty = {"l1": cfg.l1_coefficient, "l0": cfg.l0_coefficient, None: 0.0}[sae.sparsity_penalty]
        sparsity = penalty * ramp
        uses_aux = sae.uses_aux_k and cfg.aux_k_coefficient > 0
        return LossContext(
            sparsity_coefficient=sparsity,
            l1_weighted_by_decoder_norm=cfg.l1_weighted_by_decoder_norm,
            dead=self.tracker.dead(self.progress.tokens) if uses_aux else None,
            aux_coefficient=cfg.aux_k_coefficient if uses_aux else 0.0,
            aux_k=self.aux_k,
            compute_dtype=self.compute_dtype,
            batch=self.batch,
        )

    # --- set-up, input handling -------------------------------------------------------------------

    def _prepare(self, x: Tensor) -> Tensor:
        """Check a batch's shape and dtype and move it to the SAE's device."""
        sae = self.sae
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != sae.batch_width:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            wanted = f"d_in + d_out={sae.d_in} + {sae.d_out}: input and target side by side" if sae.is_transcoder \
                else f"d_in={sae.d_in}"
            raise ValueError(f"saekit.train wants batches shaped [batch, {wanted}], got {shape}")
        if x.dtype != sae.dtype:
            raise TypeError(
                f"the batches are {x.dtype} but the SAE is {sae.dtype}: create the SAE with dtype={x.dtype} "
                f"or cast the activations with .to({sae.dtype})"
            )
        x = x.to(sae.device, non_blocking=True)
        if torch.isfinite(x.sum()):  # one pass instead of isfinite's three: any NaN or inf makes the sum non-finite
            return x
        finite = torch.isfinite(x)  # exactly, as finite values can also sum past the dtype's range
        if not finite.all():
            bad = int((~finite).sum())
            raise NonFiniteError(
                f"saekit.train: batch {self.progress.step} ({self.progress.tokens:,} tokens in) holds {bad} NaN or "
                f"infinite activations of {x.numel()}: check the model and hook (e.g. fp16 overflow: use "
                "float32 or bfloat16); training stopped before this step, no weights were updated"
            )
        return x

    @torch.no_grad()
    def _start(self, batch: Tensor) -> None:
        """First batch: choose the input scale (from the input; a transcoder's target is scaled by the same factor,
        which keeps the fold-back exact) and initialise b_dec and the decoder as the recipe asks."""
        cfg, sae, p = self.cfg, self.sae, self.progress
        if self.parallel:
            batch = self.parallel.gather_rows(batch)  # every rank starts from the same, global, first batch
        x, target = sae.split_batch(batch)
        if cfg.normalize_activations:
            p.scale = math.sqrt(sae.d_in) / x.norm(dim=1).mean().clamp_min(1e-12).item()
            p.target_scale = math.sqrt(sae.d_out) / target.norm(dim=1).mean().clamp_min(1e-12).item() \
                if sae.is_transcoder else p.scale
            target = target * p.target_scale
            sae.scale_activations(p.scale, p.target_scale)  # a no-op for a fresh SAE; keeps a trained one right
        self._training_units = True
        if cfg.decoder_init_norm is not None:
            sae.normalize_decoder()
            sae.W_dec *= cfg.decoder_init_norm
            sae.tie_encoder_to_decoder()
        elif cfg.decoder_norm == "unit":
            sae.normalize_decoder()
        sample = target[:4096]  # b_dec starts at the reconstruction target's centre
        if cfg.init_b_dec == "geometric_median":
            sae.b_dec.copy_(geometric_median(sample).to(sae.dtype))
        elif cfg.init_b_dec == "mean":
            sae.b_dec.copy_(sample.mean(0))
        elif cfg.init_b_dec == "zero":
            sae.b_dec.zero_()
        p.started = True

    def _to_training_units(self) -> None:
        """Scale the SAE to work on scaled inputs (no-op before the scale is known or when already done)."""
        if self.progress.started and not self._training_units:
            self.sae.scale_activations(self.progress.scale, self.progress.target_scale)
            self._training_units = True

    def _to_input_units(self) -> None:
        """Fold the input scale out again, so the SAE works on the activations as given."""
        if self._training_units:
            self.sae.scale_activations(1.0 / self.progress.scale, 1.0 / self.progress.target_scale)
            self._training_units = False

    def _scaled(self, batch: Tensor) -> Tensor:
        """A batch in training units: the input times the scale, a transcoder's target times its own."""
        p, sae = self.progress, self.sae
        if sae.is_transcoder and p.target_scale != p.scale:
            factors = batch.new_full((sae.batch_width,), p.scale)
            factors[sae.d_in :] = p.target_scale
            return batch * factors
        return batch * p.scale if p.scale != 1.0 else batch

    # --- dead features ----------------------------------------------------------------------------

    def _remember(self, x: Tensor) -> None:
        self.pool.append(x.detach())
        while sum(b.shape[0] for b in self.pool) - self.pool[0].shape[0] >= self.cfg.resample_pool_tokens:
            self.pool.popleft()

    def _maybe_resample(self) -> None:
        cfg, p = self.cfg, self.progress
        if p.resamples_done >= len(cfg.resample_at):
            return
        if p.tokens < cfg.resample_at[p.resamples_done] * cfg.total_tokens:
            return
        dead = self.tracker.dead(p.tokens)
        gather = self.parallel.gather_rows if self.parallel else (lambda rows: rows)
        pool = torch.cat([gather(rows) for rows in self.pool])  # the global batches' rows, as one process holds them
        ids = resample_dead(self.sae, self.optimizer, pool, dead, self.generator)
        self.tracker.revive(ids, p.tokens)
        p.resamples_done += 1
        p.resampled_features += int(ids.numel())
        self._record({**self._status(), "resampled": float(ids.numel())})

    # --- logging ----------------------------------------------------------------------------------

    def _status(self) -> dict[str, float]:
        p = self.progress
        dense = self.tracker.recent_density() > self.cfg.dense_threshold
        seen_a_window = p.tokens >= self.cfg.dead_window
        dead = self.tracker.dead(p.tokens).float().mean().item() if seen_a_window else 0.0
        return {"step": p.step, "tokens": p.tokens, "lr": self.optimizer.param_groups[0]["lr"],
                "dead_fraction": dead, "dense_fraction": dense.float().mean().item()}

    def _record(self, row: dict[str, float]) -> None:
        """A history row, also sent to the experiment trackers (by the process that writes files)."""
        self.history.append(row)
        if self.cfg.log_to and self.writes_files:
            if self._logs is None:
                self._logs = open_logs(self.cfg, f"{self.sae.arch}-{self.sae.d_sae}")
            for log in self._logs:
                log.log(row, int(row["step"]))

    def _close_logs(self, summary: dict[str, Any] | None = None) -> None:
        """Give the trackers the summary (when the run ended) and close them."""
        for log in self._logs or []:
            if summary is not None:
                log.finish(summary)
            log.close()
        self._logs = None

    @torch.no_grad()
    def _log_row(self, batch: Tensor, out: SAELoss) -> dict[str, float]:
        """The step's losses over the global batch (each rank's means weighted by its rows)."""
        target = self.sae.split_batch(batch)[1]
        variance = row_variance(target, self.batch).clamp_min(1e-12)
        n = batch.shape[0]
        means = (out.total, out.mse, out.sparsity, out.auxiliary, out.l0())
        sums = self.batch.sum(torch.tensor([float(v) * n for v in means] + [n], dtype=torch.float64))
        loss, mse, sparsity, auxiliary, l0 = (sums[:5] / sums[5]).tolist()
        return {**self._status(), "loss": loss, "mse": mse, "fvu": mse / float(variance), "sparsity": sparsity,
                "auxiliary": auxiliary, "l0": l0}

    def _result(self) -> TrainResult:
        history = pd.DataFrame(self.history)
        last = history.iloc[-1].to_dict() if len(history) else {}
        summary = {
            "arch": self.sae.arch, "d_in": self.sae.d_in, "d_out": self.sae.d_out, "d_sae": self.sae.d_sae,
            "n_models": self.sae.n_models,
            "tokens": self.progress.tokens, "steps": self.progress.step, "activation_scale": self.progress.scale,
            "target_scale": self.progress.target_scale,
            "resampled_features": self.progress.resampled_features,
            "compute_dtype": str(self.compute_dtype).removeprefix("torch."),
            **{k: last[k] for k in ("mse", "fvu", "l0", "dead_fraction", "dense_fraction") if k in last},
            **({"decoder_refit": self.refit._asdict()} if self.refit else {}),
            "config": dataclasses.asdict(self.cfg),
        }
        self.sae.provenance = self.sae.provenance.replace(training=summary)
        self._close_logs(summary)
        return TrainResult(self.sae, history, summary)

    # --- checkpoints ------------------------------------------------------------------------------

    def _checkpoint_if_new(self) -> None:
        """Save the current step, when checkpoints are on and it is not saved yet."""
        if self.cfg.checkpoint_dir and self._checkpointed_tokens != self.progress.tokens:
            self.save_checkpoint()

    @property
    def writes_files(self) -> bool:
        """Whether this process writes checkpoints: one process alone, or rank 0 of data-parallel training."""
        return self.parallel is None or self.parallel.is_main

    def save_checkpoint(self) -> Path:
        """Write a checkpoint for the current step into cfg.checkpoint_dir (never one with non-finite weights)."""
        p = self.progress
        if not self.writes_files:
            self._checkpointed_tokens = p.tokens
            return Path(self.cfg.checkpoint_dir) / checkpoint_name(p.tokens)
        bad = [name for name, param in self.sae.named_parameters() if not torch.isfinite(param).all()]
        if bad:
            raise NonFiniteError(f"saekit.train: non-finite weights {bad} at step {p.step}: no checkpoint written")
        tensors = {f"sae.{k}": v for k, v in self.sae.state_dict().items()}
        for i, param in enumerate(self.sae.parameters()):
            for k, v in self.optimizer.state.get(param, {}).items():
                tensors[f"optim.{i}.{k}"] = v if isinstance(v, Tensor) else torch.tensor(v)
        tensors.update({f"tracker.{k}": v for k, v in self.tracker.state().items()})
        tensors["rng"] = self.generator.get_state()
        state = {"progress": dataclasses.asdict(p), "history": self.history,
                 "config": dataclasses.asdict(self.cfg), "arch": self.sae.arch, "d_sae": self.sae.d_sae,
                 "hyperparams": self.sae.hyperparams(),  # in training units, like the tensors
                 "compute_dtype": str(self.compute_dtype).removeprefix("torch.")}

        def save_sae_folder(folder: Path) -> None:  # a copy in input units, for load_sae
            self.sae.release_scratch()  # not worth copying
            export = copy.deepcopy(self.sae)
            if self._training_units:
                export.scale_activations(1.0 / p.scale, 1.0 / p.target_scale)
            export.save(folder)

        folder = write_checkpoint(Path(self.cfg.checkpoint_dir) / checkpoint_name(p.tokens), save_sae_folder,
                                  tensors, state, keep=self.cfg.keep_checkpoints)
        self._checkpointed_tokens = p.tokens
        return folder

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything a checkpoint holds; the next `fit` continues where that run stopped, with the
        same numbers as a run never interrupted. A checkpoint of other settings is refused."""
        folder = find_checkpoint(path)
        tensors, state = read_checkpoint(folder)
        if state.get("arch") != self.sae.arch or state.get("d_sae") != self.sae.d_sae:
            raise ResumeMismatchError(
                f"checkpoint {folder} is for a {state.get('arch')} SAE with {state.get('d_sae')} features, not this "
                f"{self.sae.arch} SAE with {self.sae.d_sae}: resume with the SAE it was written for")
        differences = config_differences(state.get("config", {}), dataclasses.asdict(self.cfg))
        if differences:
            raise ResumeMismatchError(
                f"checkpoint {folder} was written with other settings ({'; '.join(differences)}): resume with the "
                "same TrainConfig, or start a new run in another checkpoint_dir")
        self.sae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")})
        self.sae.load_hyperparams(state.get("hyperparams", {}))
        for i, param in enumerate(self.sae.parameters()):
            prefix = f"optim.{i}."
            st = {k[len(prefix):]: v.to(param.device) for k, v in tensors.items() if k.startswith(prefix)}
            if st:
                self.optimizer.state[param] = st
        self.tracker.load_state({k[8:]: v for k, v in tensors.items() if k.startswith("tracker.")})
        self.generator.set_state(tensors["rng"])
        self.progress = _Progress(**state["progress"])
        self.history = state["history"]
        self.compute_dtype = getattr(torch, state.get("compute_dtype", ""), self.compute_dtype)  # the run's choice
        self._training_units = self.progress.started  # the saved weights are in training units
        self._checkpointed_tokens = self.progress.tokens


def fit_together(trainers: Sequence[Trainer], batches: Iterable[Tensor], *,
                 columns: Sequence[slice | None] | None = None, progress: bool = True) -> list[TrainResult]:
    """Train every trainer on one pass over `batches`, each on its `columns` of every batch (all of them by
    default), until each has its own cfg.total_tokens; each ends where `trainer.fit(batches)` alone would.

    A resumed run (trainers restored from checkpoints) reads a `SeekableBatches` source from the earliest batch any
    of them needs, other iterables from their start. Ctrl-C is taken between steps: every trainer with checkpoints
    on saves the step just finished first."""
    columns = list(columns) if columns is not None else [None] * len(trainers)
    if len(columns) != len(trainers):
        raise InputError(f"{len(columns)} column selections for {len(trainers)} trainers: give one per trainer")
    lead = trainers[0]
    seekable = isinstance(batches, SeekableBatches)
    index = min(t.first_batch_needed() for t in trainers) if seekable else 0
    stream = iter(batches.batches_from(index)) if seekable and index else iter(batches)
    show = progress and (lead.parallel is None or lead.parallel.is_main)
    total = max(t.cfg.total_tokens for t in trainers)
    alone = len(trainers) == 1
    desc = f"train {lead.sae.arch} {lead.sae.d_sae}" if alone else f"train {len(trainers)} dictionaries"
    bar = tqdm(total=total, initial=min(max(t.progress.tokens for t in trainers), total), unit="tok",
               unit_scale=True, desc=desc, disable=not show)

    def view(x: Tensor, part: slice | None) -> Tensor:
        return x if part is None else x[:, part]

    for trainer in trainers:
        trainer._to_training_units()
    try:
        with interrupts_between_steps() as interrupted:
            while not all(t.finished for t in trainers) and not interrupted():
                try:
                    x = next(stream, None)
                except KeyboardInterrupt:  # raised by the batches, between two steps: safe to save
                    for trainer in trainers:
                        trainer._checkpoint_if_new()
                    raise
                rows = lead._rows_on_every_rank(x)
                if x is None or 0 in rows:
                    behind = [t for t in trainers if index < t.progress.step]
                    if behind:
                        raise InputError(
                            f"resuming at step {behind[0].progress.step}, but the batches ran out at step {index}: "
                            "pass the same batches as the interrupted run, from the start (the trainer skips what it "
                            "has already seen)")
                    training = [t.progress.tokens for t in trainers if not t.done]
                    if training:
                        bar.write(f"saekit.train: the batches ran out after {min(training):,} of {total:,} tokens; "
                                  "training stopped early")
                    break
                for trainer, part in zip(trainers, columns):
                    trainer.take(index, view(x, part), rows, bar if alone else None)
                bar.update(min(max(t.progress.tokens for t in trainers), total) - bar.n)
                index += 1
            for trainer in trainers:
                trainer._checkpoint_if_new()
            if interrupted():
                raise KeyboardInterrupt
            for trainer in trainers:
                if trainer.done and not trainer.finished:  # the batches ran out during its refit
                    trainer._apply_refit()
    except BaseException:
        for trainer in trainers:
            trainer._close_logs()  # an interrupted run's trackers hold what it logged
        raise
    finally:
        for trainer in trainers:
            trainer._to_input_units()
            trainer.sae.release_scratch()
        bar.close()
    return [trainer._result() for trainer in trainers]


def make_adam(sae: SAE, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over the SAE's parameters: fused (one kernel per parameter instead of ~6 passes) on CPU and CUDA,
    where torch has a fused Adam; the same update, computed in one pass."""
    fused = sae.device.type in ("cpu", "cuda") and sae.dtype in (torch.float32, torch.float64)
    return torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=cfg.adam_betas, fused=fused or None)


def train(sae: SAE, batches: Iterable[Tensor], cfg: TrainConfig | None = None, *,
          resume: str | Path | None = None, progress: bool = True, parallel: DataParallel | None = None) -> TrainResult:
    """Train `sae` in place on batches [batch, d_in] until cfg.total_tokens; returns the SAE and history.

    resume: a checkpoint folder (or a checkpoint_dir, for its latest) of an earlier run with the same
    config; pass the same batches from the start: the steps already taken are skipped.
    parallel: this process's rank in data-parallel training (`DataParallel.from_environment()` under torchrun);
    the batches are then its shares of the global batches (`CachedBatches`/`ActivationSource` with rank and
    world_size).
    """
    trainer = Trainer(sae, cfg or TrainConfig(), parallel)
    if resume is not None:
        trainer.load_checkpoint(resume)
    return trainer.fit(batches, progress=progress)
