"""SAE folders on disk: `cfg.json` + `sae_weights.safetensors`, in SAELens's layout.

SAELens (≥ 6) loads saekit's `relu` (as "standard"), `topk`, `jumprelu` and `batchtopk` (as "jumprelu")
folders, and `load_sae` reads folders SAELens writes. saekit's own keys (architecture, hyperparameters,
model, hook, training summary) ride along under "saekit" in cfg.json, which SAELens ignores.
Only JSON and safetensors are ever read: no pickle.
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from saekit.saes import SAE, sae_class

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
# SAELens "architecture" -> saekit arch, for folders SAELens wrote
FROM_SAELENS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk"}
# cfg.json layout version we follow; SAELens treats folders without one as pre-6.0 and converts them
SAELENS_FORMAT_VERSION = "6.0.0"


class SAEFormatError(ValueError):
    """A folder that is not a readable SAE: the message names the file and the problem."""


def _saekit_version() -> str:
    try:
        return version("saekit")
    except PackageNotFoundError:
        return "unknown"


def _atomic_write(path: Path, write: callable) -> None:
    """Write through a temporary file in the same folder, so a crash never leaves a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sae_config(sae: SAE) -> dict[str, Any]:
    """The cfg.json contents for `sae`: SAELens's keys plus saekit's under "saekit"."""
    meta = sae.metadata
    cfg: dict[str, Any] = {
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": str(sae.dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": SAELENS_FORMAT_VERSION,
            "saekit_version": _saekit_version(),
            "model_name": meta.get("model"),
            "hook_name": meta.get("hook"),
        },
        "architecture": sae.saelens_architecture,
    }
    if sae.saelens_architecture == "topk":
        cfg.update(k=sae.k, rescale_acts_by_decoder_norm=False)
    cfg["saekit"] = {"arch": sae.arch, "hyperparams": sae.hyperparams(), **meta}
    return cfg


def save_sae(sae: SAE, path: str | os.PathLike) -> None:
    """Write `sae` to the folder `path` (created if needed; other files in it are left alone)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sae.saelens_tensors().items()}
    _atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
    text = json.dumps(sae_config(sae), indent=2, default=str)
    _atomic_write(folder / CFG_FILE, lambda tmp: Path(tmp).write_text(text))


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a folder's cfg.json, with errors that name the file."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no SAE folder at {folder}: pass a folder holding {CFG_FILE} and {WEIGHTS_FILE} "
            "(written by sae.save() or by SAELens)"
        )
    cfg_path = folder / CFG_FILE
    if not cfg_path.is_file():
        raise SAEFormatError(f"{cfg_path} is missing: this folder is not an SAE folder")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SAEFormatError(f"{cfg_path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise SAEFormatError(f"{cfg_path} must hold a JSON object, not {type(cfg).__name__}")
    for key in ("d_in", "d_sae"):
        if not isinstance(cfg.get(key), int):
            raise SAEFormatError(f"{cfg_path}: integer key {key!r} is missing or not an integer")
    return cfg


def _arch_and_hyperparams(cfg: dict[str, Any], cfg_path: Path) -> tuple[str, dict[str, Any]]:
    own = cfg.get("saekit") or {}
    if "arch" in own:
        return own["arch"], dict(own.get("hyperparams") or {})
    arch = cfg.get("architecture", "standard")
    if arch not in FROM_SAELENS:
        raise SAEFormatError(
            f"{cfg_path}: architecture {arch!r} is not supported; saekit reads {sorted(FROM_SAELENS)}"
        )
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, "none"):
        raise SAEFormatError(
            f"{cfg_path}: normalize_activations={norm!r} needs statistics SAELens keeps outside the folder; "
            "fold the normalisation into the weights in SAELens before saving, then load again"
        )
    hyper = {"k": cfg["k"]} if arch in ("topk", "batchtopk") and "k" in cfg else {}
    return FROM_SAELENS[arch], hyper


def _read_weights(folder: Path, sae: SAE) -> dict[str, torch.Tensor]:
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise SAEFormatError(f"{weights_path} is missing")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise SAEFormatError(f"{weights_path} is not a readable safetensors file: {e}") from None
    for name, param in sae.saelens_tensors().items():
        if name not in tensors:
            raise SAEFormatError(f"{weights_path} has no tensor {name!r} (found {sorted(tensors)})")
        if tuple(tensors[name].shape) != tuple(param.shape):
            raise SAEFormatError(
                f"{weights_path}: {name!r} has shape {tuple(tensors[name].shape)}, but cfg.json "
                f"(d_in={sae.d_in}, d_sae={sae.d_sae}) needs {tuple(param.shape)}"
            )
    return {k: v.to(sae.dtype) for k, v in tensors.items()}


def _dtype(name: str | None, cfg_path: Path) -> torch.dtype:
    name = (name or "float32").removeprefix("torch.")
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise SAEFormatError(f"{cfg_path}: unknown dtype {name!r}")
    return dtype


def load_sae(path: str | os.PathLike, *, device: str | torch.device = "cpu",
             dtype: torch.dtype | None = None) -> SAE:
    """Load an SAE folder written by saekit or SAELens (≥ 6)."""
    folder = Path(path)
    cfg = read_config(folder)
    cfg_path = folder / CFG_FILE
    arch, hyper = _arch_and_hyperparams(cfg, cfg_path)
    try:
        sae = sae_class(arch)(
            cfg["d_in"], cfg["d_sae"], apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
            dtype=dtype or _dtype(cfg.get("dtype"), cfg_path), **hyper,
        )
    except (TypeError, ValueError) as e:
        raise SAEFormatError(f"{cfg_path}: cannot build a {arch!r} SAE from it: {e}") from None
    tensors = _read_weights(folder, sae)
    try:
        sae.load_saelens_tensors(tensors)
    except ValueError as e:
        raise SAEFormatError(f"{folder}: {e}") from None
    if cfg.get("rescale_acts_by_decoder_norm"):
        _fold_decoder_norm(sae)
    own = cfg.get("saekit") or {}
    sae.metadata = {k: v for k, v in own.items() if k not in ("arch", "hyperparams")}
    return sae.to(device).eval()


@torch.no_grad()
def _fold_decoder_norm(sae: SAE) -> None:
    """SAELens TopK with rescale_acts_by_decoder_norm: fold ‖W_dec_i‖ into the encoder; outputs unchanged."""
    norms = sae.W_dec.norm(dim=1)  # [d_sae]
    sae.W_enc *= norms
    sae.b_enc *= norms
    sae.W_dec /= norms[:, None]
