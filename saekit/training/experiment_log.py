"""Experiment trackers beside the pandas history: TensorBoard and Weights & Biases get every history row (as
`train/<column>` at the row's step) and the final summary. Only the process that writes checkpoints logs; a
resumed run logs into the same run (W&B: the same id), from the step it resumes at."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from saekit.errors import InputError
from saekit.training.config import TrainConfig


class ExperimentLog(Protocol):
    def log(self, row: Mapping[str, float], step: int) -> None: ...

    def finish(self, summary: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def log_folder(cfg: TrainConfig) -> Path:
    """Where the trackers write: cfg.log_dir, else `logs` beside the checkpoints, else ./runs."""
    if cfg.log_dir is not None:
        return Path(cfg.log_dir)
    return Path(cfg.checkpoint_dir).parent / "logs" if cfg.checkpoint_dir else Path("runs")


def run_name(cfg: TrainConfig, sae_name: str) -> str:
    """cfg.run_name, else the SAE's description and a hash of where it checkpoints (the same on resume)."""
    if cfg.run_name:
        return cfg.run_name
    where = str(Path(cfg.checkpoint_dir).resolve()) if cfg.checkpoint_dir else ""
    return f"{sae_name}-{hashlib.sha256(where.encode()).hexdigest()[:8]}" if where else sae_name


def _scalars(row: Mapping[str, Any]) -> dict[str, float]:
    return {f"train/{k}": float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float))}


def _flat(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float | str]:
    """Nested summary values as 'a/b' keys (numbers and strings only)."""
    out: dict[str, float | str] = {}
    for key, value in summary.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


class TensorBoardLog:
    """Scalars into TensorBoard event files under `folder/name`."""

    def __init__(self, folder: Path, name: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise InputError("log_to='tensorboard' needs TensorBoard: pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(folder / name))

    def log(self, row: Mapping[str, float], step: int) -> None:
        for key, value in _scalars(row).items():
            self.writer.add_scalar(key, value, step)

    def finish(self, summary: Mapping[str, Any]) -> None:
        text = "\n".join(f"{k}: {v}" for k, v in _flat(summary).items())
        self.writer.add_text("summary", f"```\n{text}\n```")

    def close(self) -> None:
        self.writer.close()


class WandbLog:
    """A Weights & Biases run (offline unless WANDB_MODE or a WANDB_API_KEY says otherwise), resumed by id."""

    def __init__(self, folder: Path, name: str, config: Mapping[str, Any]) -> None:
        try:
            import wandb
        except ImportError:
            raise InputError("log_to='wandb' needs Weights & Biases: pip install wandb") from None
        folder.mkdir(parents=True, exist_ok=True)
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "saekit"), name=name, id=name,
                              resume="allow", dir=str(folder), mode=mode, config=dict(config),
                              settings=wandb.Settings(console="off", silent=True))

    def log(self, row: Mapping[str, float], step: int) -> None:
        self.run.log(_scalars(row), step=step)

    def finish(self, summary: Mapping[str, Any]) -> None:
        self.run.summary.update(_flat(summary))

    def close(self) -> None:
        self.run.finish()


def open_logs(cfg: TrainConfig, sae_name: str) -> list[ExperimentLog]:
    """The trackers cfg.log_to asks for."""
    folder, name = log_folder(cfg), run_name(cfg, sae_name)
    makers = {"tensorboard": lambda: TensorBoardLog(folder, name),
              "wandb": lambda: WandbLog(folder, name, {k: v for k, v in vars(cfg).items()})}
    return [makers[tracker]() for tracker in cfg.log_to]
