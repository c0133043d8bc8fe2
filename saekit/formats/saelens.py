"""SAE folders on disk: `cfg.json` + `sae_weights.safetensors`, in SAELens's layout.

SAELens (≥ 6) loads saekit's `relu` (as "standard"), `topk`, `jumprelu` and `batchtopk` (as "jumprelu")
folders, and `load_sae` reads folders SAELens writes. Transcoders add SAELens's `d_out` (relu and jumprelu ones
are saved as its "transcoder" and "jumprelu_transcoder"); a crosscoder is one SAE over its models' activations
side by side, with `n_models` under "saekit". saekit's own keys (architecture, hyperparameters,
model, hook, training summary) ride along under "saekit" in cfg.json, which SAELens ignores.
Only JSON and safetensors are ever read: no pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from saekit.formats.common import SAEFormatError, atomic_write, check_finite, json_object, saekit_version
from saekit.saes import SAE, sae_class
from saekit.saes.provenance import Provenance
from saekit.saes.registry import saelens_architectures, saelens_class

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
# cfg.json layout version we follow; SAELens treats folders without one as pre-6.0 and converts them
SAELENS_FORMAT_VERSION = "6.0.0"
# Largest d_in and d_sae accepted: tensor sizes a real model or dictionary can have, far below overflow.
MAX_WIDTH = 2**31 - 1
# safetensors dtype codes that weights may be stored in (converted to the cfg.json dtype on load)
FLOAT_CODES = ("F16", "BF16", "F32", "F64")


def sae_config(sae: SAE) -> dict[str, Any]:
    """The cfg.json contents for `sae`: SAELens's keys plus saekit's under "saekit"."""
    prov = sae.provenance
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
            "saekit_version": saekit_version(),
            "model_name": prov.model,
            "hook_name": prov.hook,
        },
        "architecture": sae.saved_architecture,
    }
    if sae.is_transcoder:
        cfg["d_out"] = sae.d_out
        cfg["metadata"]["hook_name_out"] = prov.target_hook
    cfg.update(sae.saelens_config())
    cfg["saekit"] = {"arch": sae.arch, "hyperparams": sae.hyperparams(),
                     **({"n_models": sae.n_models} if sae.n_models > 1 else {}), **prov.to_json()}
    return cfg


def save_sae(sae: SAE, path: str | os.PathLike) -> None:
    """Write `sae` to the folder `path` (created if needed; other files in it are left alone)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sae.saelens_tensors().items()}
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
    text = json.dumps(sae_config(sae), indent=2, default=str)
    atomic_write(folder / CFG_FILE, lambda tmp: Path(tmp).write_text(text))


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
    cfg = json_object(cfg_path)
    for key in ("d_in", "d_sae", "d_out"):
        value = cfg.get(key)
        if key == "d_out" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise SAEFormatError(f"{cfg_path}: integer key {key!r} is missing or not an integer")
        if not 1 <= value <= MAX_WIDTH:
            raise SAEFormatError(f"{cfg_path}: {key}={value} is not a width an SAE can have; use 1..{MAX_WIDTH}")
    if not isinstance(cfg.get("saekit") or {}, dict):
        raise SAEFormatError(f"{cfg_path}: key 'saekit' must hold a JSON object")
    n_models = (cfg.get("saekit") or {}).get("n_models", 1)
    if not isinstance(n_models, int) or isinstance(n_models, bool) or not 1 <= n_models <= cfg["d_in"]:
        raise SAEFormatError(f"{cfg_path}: saekit.n_models={n_models!r} must be a count of models from 1 to d_in")
    return cfg


def _arch_and_hyperparams(cfg: dict[str, Any], cfg_path: Path) -> tuple[str, dict[str, Any]]:
    own = cfg.get("saekit") or {}
    if "arch" in own:
        hyper = own.get("hyperparams") or {}
        if not isinstance(own["arch"], str) or not isinstance(hyper, dict):
            raise SAEFormatError(f"{cfg_path}: saekit.arch must be a name and saekit.hyperparams a JSON object")
        return own["arch"], dict(hyper)
    arch = cfg.get("architecture", "standard")
    cls = saelens_class(arch) if isinstance(arch, str) else None
    if cls is None:
        raise SAEFormatError(
            f"{cfg_path}: architecture {arch!r} is not supported; saekit reads {saelens_architectures()}"
        )
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, "none"):
        raise SAEFormatError(
            f"{cfg_path}: normalize_activations={norm!r} needs statistics SAELens keeps outside the folder; "
            "fold the normalisation into the weights in SAELens before saving, then load again"
        )
    return cls.arch, cls.hyperparams_from_saelens(cfg)


def _check_header(weights_path: Path, file, expected: dict[str, torch.Tensor]) -> None:
    """Every tensor the SAE needs is in the file's header with the shape cfg.json implies and a float dtype.

    Reads the header only, so a cfg.json or file claiming huge tensors fails before anything is allocated."""
    found = set(file.keys())
    for name, param in expected.items():
        if name not in found:
            raise SAEFormatError(f"{weights_path} has no tensor {name!r} (found {sorted(found)})")
        header = file.get_slice(name)
        shape, code = tuple(header.get_shape()), header.get_dtype()
        if shape != tuple(param.shape):
            d_in, d_sae = expected["W_enc"].shape
            d_out = expected["W_dec"].shape[1]
            raise SAEFormatError(
                f"{weights_path}: {name!r} has shape {shape}, but cfg.json "
                f"(d_in={d_in}, d_sae={d_sae}, d_out={d_out}) needs {tuple(param.shape)}"
            )
        if code not in FLOAT_CODES:
            raise SAEFormatError(f"{weights_path}: {name!r} is stored as {code}; SAE weights must be one of "
                                 f"{', '.join(FLOAT_CODES)}")


def _read_weights(folder: Path, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors named in `expected` (shape-only tensors), checked against the header before any is read."""
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise SAEFormatError(f"{weights_path} is missing")
    try:
        with safe_open(str(weights_path), framework="pt") as file:
            _check_header(weights_path, file, expected)
            return {name: file.get_tensor(name) for name in expected}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        if isinstance(e, SAEFormatError):
            raise
        raise SAEFormatError(f"{weights_path} is not a readable safetensors file: {e}") from None


def _dtype(name: str | None, cfg_path: Path) -> torch.dtype:
    name = (name or "float32").removeprefix("torch.")
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise SAEFormatError(f"{cfg_path}: unknown floating dtype {name!r}; use e.g. 'float32' or 'bfloat16'")
    return dtype


def _build(arch: str, cfg: dict[str, Any], hyper: dict[str, Any], cfg_path: Path, dtype: torch.dtype,
           device: str | torch.device) -> SAE:
    """The SAE cfg.json describes, on `device` ("meta" builds shapes only and allocates nothing)."""
    try:
        transcoder = cfg.get("d_out") is not None
        return sae_class(arch)(
            cfg["d_in"], cfg["d_sae"], d_out=cfg.get("d_out"), n_models=(cfg.get("saekit") or {}).get("n_models", 1),
            apply_b_dec_to_input=None if transcoder else bool(cfg.get("apply_b_dec_to_input", True)),
            dtype=dtype, device=device, **hyper,
        )
    except (TypeError, ValueError) as e:
        raise SAEFormatError(f"{cfg_path}: cannot build a {arch!r} SAE from it: {e}") from None


def is_saelens_folder(folder: Path) -> bool:
    """Whether `folder` looks like saekit's or SAELens's layout (its cfg.json and weights file are there)."""
    return (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def load_saelens(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, allow_nonfinite: bool = False) -> SAE:
    """Load an SAE folder written by saekit or SAELens (≥ 6).

    cfg.json and the weights' header are checked against each other before anything is allocated;
    weights holding NaN/inf are refused unless `allow_nonfinite`."""
    folder = Path(path)
    cfg = read_config(folder)
    cfg_path = folder / CFG_FILE
    arch, hyper = _arch_and_hyperparams(cfg, cfg_path)
    dtype = dtype or _dtype(cfg.get("dtype"), cfg_path)
    expected = _build(arch, cfg, hyper, cfg_path, dtype, "meta").saelens_tensors()
    tensors = _read_weights(folder, expected)
    if not allow_nonfinite:
        check_finite(folder / WEIGHTS_FILE, tensors)
    sae = _build(arch, cfg, hyper, cfg_path, dtype, "cpu")
    try:
        sae.load_saelens_tensors({k: v.to(sae.dtype) for k, v in tensors.items()})
    except ValueError as e:
        raise SAEFormatError(f"{folder}: {e}") from None
    if cfg.get("rescale_acts_by_decoder_norm"):
        _fold_decoder_norm(sae)
    own = cfg.get("saekit") or {}
    try:
        sae.provenance = Provenance.from_json({k: v for k, v in own.items() if k not in ("arch", "hyperparams",
                                                                                          "n_models")})
    except (TypeError, ValueError) as e:
        raise SAEFormatError(f"{cfg_path}: the saekit block's provenance is not readable: {e}") from None
    return sae.to(device).eval()


@torch.no_grad()
def _fold_decoder_norm(sae: SAE) -> None:
    """SAELens TopK with rescale_acts_by_decoder_norm: fold ‖W_dec_i‖ into the encoder; outputs unchanged."""
    norms = sae.W_dec.norm(dim=1)  # [d_sae]
    sae.W_enc *= norms
    sae.b_enc *= norms
    sae.W_dec /= norms[:, None]
