"""Several dictionaries from one pass over the activations: sizes, architectures and sparsities of a sweep share the
model's forward (or the cache's read), each trained exactly as it would be alone."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from torch import Tensor

from saekit.errors import InputError
from saekit.saes import SAE
from saekit.training.config import TrainConfig
from saekit.training.distributed import DataParallel
from saekit.training.trainer import Trainer, TrainResult, fit_together


def train_many(saes: Sequence[SAE], batches: Iterable[Tensor], configs: TrainConfig | Sequence[TrainConfig],
               *, columns: Sequence[slice | None] | None = None, resume: Sequence[str | Path | None] | None = None,
               progress: bool = True, parallel: DataParallel | None = None) -> list[TrainResult]:
    """Train every SAE in place on the same batches, read once; returns their results in order.

    configs: one TrainConfig for all, or one per SAE (token budgets may differ: each stops at its own).
    columns: which columns of each batch each SAE trains on (e.g. its hook's, where the batches hold several
    hooks side by side); None: all of them. resume: per SAE, a checkpoint (or checkpoint_dir) to continue from.
    Each SAE ends with the weights `saekit.train(sae, batches, config)` alone gives it."""
    if not saes:
        raise InputError("train_many needs at least one SAE")
    configs = [configs] * len(saes) if isinstance(configs, TrainConfig) else list(configs)
    resume = list(resume) if resume is not None else [None] * len(saes)
    if not len(configs) == len(resume) == len(saes):
        raise InputError(f"{len(saes)} SAEs with {len(configs)} configs and {len(resume)} resume points: give one "
                         "config (or one per SAE) and one resume point per SAE")
    folders = [c.checkpoint_dir for c in configs if c.checkpoint_dir]
    if len(set(folders)) < len(folders):
        raise InputError("two SAEs of the sweep share a checkpoint_dir: give each its own")
    trainers = [Trainer(sae, config, parallel) for sae, config in zip(saes, configs)]
    for trainer, point in zip(trainers, resume):
        if point is not None:
            trainer.load_checkpoint(point)
    return fit_together(trainers, batches, columns=columns, progress=progress)
