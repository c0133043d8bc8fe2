"""What every format shares: the error type, atomic writes, and building an SAE from raw tensors.

A foreign format's loader only renames and transposes its tensors into saekit's layout (W_enc [d_in, d_sae],
W_dec [d_sae, d_out], b_enc [d_sae], b_dec [d_out], threshold [d_sae]) and names the architecture; `assemble`
checks shapes, dtypes and finiteness, and builds the SAE.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saekit.errors import InputError
from saekit.saes import SAE, sae_class
from saekit.saes.provenance import Provenance


class SAEFormatError(InputError):
    """A folder that is not a readable SAE: the message names the file and the problem."""


def saekit_version() -> str:
    """The installed saekit's version, recorded in the folders it writes."""
    try:
        return version("saekit")
    except PackageNotFoundError:
        return "unknown"


def atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """Write through a temporary file in the same folder, so a crash never leaves a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; anything else (bad JSON, a list, not UTF-8) is an SAEFormatError naming it."""
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SAEFormatError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise SAEFormatError(f"{path} must hold a JSON object, not {type(value).__name__}")
    return value


def check_finite(source: Path, tensors: dict[str, Tensor]) -> None:
    """Refuse weights holding NaN or inf, naming each tensor and its count of bad entries."""
    bad = {name: int((~torch.isfinite(t)).sum()) for name, t in tensors.items()}
    bad = {name: count for name, count in bad.items() if count}
    if bad:
        counts = ", ".join(f"{name}: {count} of {tensors[name].numel()}" for name, count in bad.items())
        raise SAEFormatError(
            f"{source} holds NaN/inf weights ({counts}): retrain the SAE or repair its weights; "
            "load_sae(path, allow_nonfinite=True) loads it anyway"
        )


def positive_int(source: Path, name: str, value: Any) -> int:
    """A config's count (k, a width), refused with a message naming the file unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SAEFormatError(f"{source}: {name}={value!r} must be a positive integer")
    return value


def assemble(arch: str, tensors: dict[str, Tensor], *, source: Path, apply_b_dec_to_input: bool,
             transcoder: bool = False, hyper: dict[str, Any] | None = None, dtype: torch.dtype | None = None,
             allow_nonfinite: bool = False, provenance: Provenance | None = None) -> SAE:
    """The `arch` SAE holding `tensors` (saekit's names and layout), shapes and dtypes checked against W_enc/W_dec.

    A transcoder has no pre-encoder bias; a plain SAE's W_dec must map back to d_in."""
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        if name not in tensors:
            raise SAEFormatError(f"{source}: no tensor for {name}")
    for name, t in tensors.items():
        if not isinstance(t, Tensor) or not t.is_floating_point():
            kind = t.dtype if isinstance(t, Tensor) else type(t).__name__
            raise SAEFormatError(f"{source}: {name} is {kind}; SAE weights must be floating point")
    if tensors["W_enc"].ndim != 2 or tensors["W_dec"].ndim != 2:
        raise SAEFormatError(f"{source}: the encoder and decoder weights must be matrices "
                             f"(got {tuple(tensors['W_enc'].shape)} and {tuple(tensors['W_dec'].shape)})")
    d_in, d_sae = tensors["W_enc"].shape
    d_out = tensors["W_dec"].shape[1]
    if d_out != d_in and not transcoder:
        transcoder = True  # reads one space and writes another: only a transcoder does that
    shapes = {"W_dec": (d_sae, d_out), "b_enc": (d_sae,), "b_dec": (d_out,), "threshold": (d_sae,)}
    for name, shape in shapes.items():
        if name in tensors and tuple(tensors[name].shape) != shape:
            raise SAEFormatError(f"{source}: {name} has shape {tuple(tensors[name].shape)}, but the encoder "
                                 f"(d_in={d_in}, d_sae={d_sae}) and decoder (d_out={d_out}) need {shape}")
    if not allow_nonfinite:
        check_finite(source, tensors)
    dtype = dtype or tensors["W_enc"].dtype
    try:
        sae = sae_class(arch)(d_in, d_sae, d_out=d_out if transcoder else None,
                              apply_b_dec_to_input=None if transcoder else apply_b_dec_to_input,
                              dtype=dtype, device="cpu", seed=0, **(hyper or {}))
        sae.load_saelens_tensors({k: v.to(dtype) for k, v in tensors.items()})
    except (TypeError, ValueError) as e:
        raise SAEFormatError(f"{source}: cannot build a {arch!r} SAE from it: {e}") from None
    if provenance is not None:
        sae.provenance = provenance
    return sae.eval()
