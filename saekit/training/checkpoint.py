"""Checkpoint folders: a loadable SAE folder plus the trainer's state, safetensors + JSON only.

    CHECKPOINT_DIR/tokens_000001048576/
        cfg.json, sae_weights.safetensors   the SAE in the units of its inputs (load_sae reads it)
        trainer_state.safetensors           weights in training units, Adam moments, firing record, RNG
        trainer_state.json                  step, tokens, activation scale, hyperparameters, history, config

A checkpoint is written into `tokens_N.partial`, flushed to disk, and renamed into place: a folder named
`tokens_N` is always complete, and a crash mid-write leaves only a `.partial` folder, which is never read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from saekit.errors import InputError

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
_NAME = re.compile(r"^tokens_(\d{12})$")
# config fields that change how a run is recorded, not what it computes: a resume may change them
BOOKKEEPING_FIELDS = frozenset({"checkpoint_dir", "checkpoint_every_tokens", "keep_checkpoints", "log_every_steps",
                                "log_to", "log_dir", "run_name"})


class ResumeMismatchError(InputError):
    """A resume whose settings differ from the checkpoint's; the message names the fields."""


def checkpoint_name(tokens: int) -> str:
    return f"tokens_{tokens:012d}"


def write_checkpoint(folder: Path, save_sae_folder: Callable[[Path], None], tensors: dict[str, Tensor],
                     state: dict[str, Any], keep: int = 0) -> Path:
    """Write a checkpoint atomically (a temporary folder, synced, renamed into place), then drop all but the
    `keep` newest checkpoints beside it (0 keeps all)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_sae_folder(tmp)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / STATE_TENSORS))
    (tmp / STATE_JSON).write_text(json.dumps(state, indent=1, default=float))
    _sync_folder(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    _sync_folder(folder.parent, files=False)
    if keep:
        for old in checkpoints(folder.parent)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def _sync_folder(folder: Path, files: bool = True) -> None:
    """Flush a folder's files (and the folder entry itself) to disk, so a power cut cannot half-keep them."""
    paths = [p for p in folder.iterdir() if p.is_file()] if files else []
    for path in [*paths, folder]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass  # some filesystems cannot sync folders
        finally:
            os.close(fd)


def checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The complete checkpoints in `folder`, oldest first (half-written `.partial` folders excluded)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name) and (p / STATE_JSON).is_file()
             and (p / STATE_TENSORS).is_file()]
    return sorted(found, key=lambda p: p.name)


def find_checkpoint(path: str | os.PathLike) -> Path:
    """`path` itself if it is a checkpoint, else the latest complete checkpoint inside it."""
    path = Path(path)
    if (path / STATE_JSON).is_file() and not path.name.endswith(".partial"):
        return path
    found = checkpoints(path)
    if not found:
        raise FileNotFoundError(
            f"no complete checkpoint at {path}: pass a checkpoint folder (holding {STATE_JSON}) or the "
            "checkpoint_dir of an earlier run"
        )
    return found[-1]


def has_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is, or holds, a complete checkpoint to resume from."""
    path = Path(path)
    return bool(checkpoints(path)) or ((path / STATE_JSON).is_file() and not path.name.endswith(".partial"))


def read_checkpoint(folder: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and JSON state of a checkpoint folder."""
    try:
        state = json.loads((folder / STATE_JSON).read_text())
        tensors = load_file(str(folder / STATE_TENSORS))
    except (OSError, ValueError) as e:
        raise InputError(f"checkpoint {folder} is unreadable ({type(e).__name__}: {e})") from None
    return tensors, state


def config_differences(saved: dict[str, Any], current: dict[str, Any],
                       ignore: frozenset[str] = BOOKKEEPING_FIELDS) -> list[str]:
    """'field: saved → current' for each field that differs (compared as JSON stores them), but those in `ignore`
    (by default the config fields that change how a run is recorded, not what it computes)."""
    saved, current = json.loads(json.dumps(saved, default=str)), json.loads(json.dumps(current, default=str))
    names = sorted((saved.keys() | current.keys()) - ignore)
    return [f"{n}: {saved.get(n)!r} → {current.get(n)!r}" for n in names if saved.get(n) != current.get(n)]
