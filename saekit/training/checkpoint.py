"""Checkpoint folders: a loadable SAE folder plus the trainer's state, safetensors + JSON only.

    CHECKPOINT_DIR/tokens_000001048576/
        cfg.json, sae_weights.safetensors   the SAE in the units of its inputs (load_sae reads it)
        trainer_state.safetensors           weights in training units, Adam moments, firing record, RNG
        trainer_state.json                  step, tokens, activation scale, history, config
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


def checkpoint_name(tokens: int) -> str:
    return f"tokens_{tokens:012d}"


def write_checkpoint(folder: Path, save_sae_folder, tensors: dict[str, Tensor], state: dict[str, Any]) -> Path:
    """Write a checkpoint atomically: into a temporary folder, renamed into place when complete."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_sae_folder(tmp)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / STATE_TENSORS))
    (tmp / STATE_JSON).write_text(json.dumps(state, indent=1, default=float))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def find_checkpoint(path: str | os.PathLike) -> Path:
    """`path` itself if it is a checkpoint, else the latest checkpoint inside it."""
    path = Path(path)
    if (path / STATE_JSON).is_file():
        return path
    found = sorted(p for p in path.glob("tokens_*") if (p / STATE_JSON).is_file()) if path.is_dir() else []
    if not found:
        raise FileNotFoundError(
            f"no checkpoint at {path}: pass a checkpoint folder (holding {STATE_JSON}) or the checkpoint_dir "
            "of an earlier run"
        )
    return found[-1]


def read_checkpoint(folder: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and JSON state of a checkpoint folder."""
    try:
        state = json.loads((folder / STATE_JSON).read_text())
        tensors = load_file(str(folder / STATE_TENSORS))
    except (OSError, ValueError) as e:
        raise ValueError(f"checkpoint {folder} is unreadable ({type(e).__name__}: {e})") from None
    return tensors, state
