"""Steps cached by their inputs, for builds like `saekit demo` that take minutes and may be interrupted.

A step's folder records the hash of the inputs that built it (`step.json`). Running it again with the
same inputs returns the recorded outputs at once; changed inputs rebuild it (and, since a step's inputs
include the keys of the steps it reads, everything downstream). A step interrupted mid-build keeps its
folder and a `step.partial.json`, so a build that can resume (e.g. from training checkpoints) does.
`step.json` is written last and atomically (temp file + rename): a folder without it is never taken as
built, whatever else a killed build left in it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DONE = "step.json"
PARTIAL = "step.partial.json"


def saekit_version() -> str:
    """The installed saekit's version ("0+unknown" when it runs from a source tree without metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("saekit")
    except PackageNotFoundError:
        return "0+unknown"


def code_version(step_version: int) -> str:
    """What a step's cache key records of the code that computes it: saekit's version and the step's own
    version number (which its developer bumps when the step computes something different)."""
    return f"{saekit_version()}/{step_version}"


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file renamed into place: readers see the old file or the
    whole new one, never a half-written one (also when the process is killed mid-write)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | Path, value: Any, indent: int | None = 1) -> Path:
    """`value` as JSON at `path`, written atomically (see `write_text_atomic`)."""
    return write_text_atomic(path, json.dumps(value, indent=indent, default=str) + "\n")


def input_key(inputs: dict[str, Any]) -> str:
    """A short stable hash of JSON-able inputs (key order does not matter)."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StepResult:
    """A finished step: where it lives, its key (for downstream inputs), its outputs, and whether cached."""

    folder: Path
    key: str
    outputs: dict[str, Any]
    cached: bool
    seconds: float


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_built(folder: str | Path, inputs: dict[str, Any]) -> bool:
    """Whether `folder` holds a finished build of the step for these inputs."""
    done = _read(Path(folder) / DONE)
    return bool(done and done.get("key") == input_key(inputs))


def begin_step(folder: str | Path, name: str, inputs: dict[str, Any],
               log: Callable[[str], None] = print) -> StepResult | None:
    """The finished step when the folder holds one for these inputs; else None, the folder made ready for a build
    (a partial build of the same inputs is kept, to resume; one of other inputs is cleared)."""
    folder = Path(folder)
    key = input_key(inputs)
    done = _read(folder / DONE)
    if done and done.get("key") == key:
        log(f"[saekit] {name}: cached ({folder})")
        return StepResult(folder, key, done.get("outputs", {}), True, done.get("seconds", 0.0))
    partial = _read(folder / PARTIAL)
    resuming = bool(partial and partial.get("key") == key)
    if folder.exists() and not resuming:
        shutil.rmtree(folder)  # built from other inputs: stale
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE).unlink(missing_ok=True)
    write_json_atomic(folder / PARTIAL, {"name": name, "key": key, "inputs": inputs})
    log(f"[saekit] {name}: {'resuming' if resuming else 'building'} ({folder})")
    return None


def end_step(folder: str | Path, name: str, inputs: dict[str, Any], outputs: dict[str, Any],
             seconds: float) -> StepResult:
    """Record a finished build's outputs: `step.json`, written last and atomically."""
    folder, key = Path(folder), input_key(inputs)
    record = {"name": name, "key": key, "inputs": inputs, "outputs": outputs, "seconds": seconds}
    write_json_atomic(folder / DONE, record)
    (folder / PARTIAL).unlink(missing_ok=True)
    return StepResult(folder, key, outputs, False, seconds)


def run_step(folder: str | Path, name: str, inputs: dict[str, Any],
             build: Callable[[Path], dict[str, Any]], log: Callable[[str], None] = print) -> StepResult:
    """The outputs of `build(folder)` for these inputs, built only if the folder holds no finished build."""
    cached = begin_step(folder, name, inputs, log)
    if cached is not None:
        return cached
    start = time.perf_counter()
    outputs = build(Path(folder))
    return end_step(folder, name, inputs, outputs, time.perf_counter() - start)
