"""EleutherAI sparsify checkpoints: one sub-folder per hookpoint, each `cfg.json` + `sae.safetensors`.

sparsify's SparseCoder keeps the encoder as an nn.Linear (`encoder.weight` [num_latents, d_in], `encoder.bias`),
the decoder as `W_dec` [num_latents, d_in] (feature rows, unit-norm when `normalize_decoder`) and `b_dec` [d_in],
and encodes TopK_k(ReLU((x − b_dec) W_encᵀ + b_enc)): saekit's TopK SAE. A transcoder (`transcode`) skips the
b_dec subtraction; "multi_topk" only adds a training loss (inference keeps k). The "groupmax" activation and the
skip connection (`W_skip`) have no saekit architecture and are refused.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from saekit.formats.common import SAEFormatError, assemble, json_object, positive_int
from saekit.saes import SAE
from saekit.saes.provenance import Provenance

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"


def is_hook_folder(folder: Path) -> bool:
    """Whether `folder` is one hookpoint's checkpoint."""
    return (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def hooks(folder: Path) -> list[str]:
    """The hookpoints a sparsify run's folder holds (its sub-folders that are checkpoints), sorted."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and is_hook_folder(p))


def is_sparsify_folder(folder: Path) -> bool:
    """One hookpoint's checkpoint, or a run's folder of them."""
    return is_hook_folder(folder) or bool(hooks(folder))


def hook_folder(folder: Path, hook: str | None) -> Path:
    """The checkpoint folder for `hook`; without one, the folder itself or its only hookpoint."""
    found = hooks(folder)
    if hook is not None:
        if hook not in found:
            raise SAEFormatError(f"{folder} has no sparsify hookpoint {hook!r}; it has {found or 'none'}")
        return folder / hook
    if is_hook_folder(folder):
        return folder
    if len(found) == 1:
        return folder / found[0]
    raise SAEFormatError(f"{folder} holds sparsify SAEs for {len(found)} hookpoints {found}: "
                         f"name one, e.g. load_sae(path, hook={found[0]!r})")



def load_sparsify(path: Path, *, hook: str | None = None, dtype: torch.dtype | None = None,
                  allow_nonfinite: bool = False) -> SAE:
    """The TopK SAE (or transcoder) of one sparsify hookpoint."""
    folder = hook_folder(Path(path), hook)
    cfg_path, weights_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    cfg = json_object(cfg_path)
    d_in = positive_int(cfg_path, "d_in", cfg.get("d_in"))
    num_latents = cfg.get("num_latents") or d_in * positive_int(cfg_path, "expansion_factor",
                                                                 cfg.get("expansion_factor", 32))
    num_latents = positive_int(cfg_path, "num_latents", num_latents)
    k = positive_int(cfg_path, "k", cfg.get("k", 32))
    if cfg.get("activation", "topk") != "topk":
        raise SAEFormatError(f"{cfg_path}: activation {cfg.get('activation')!r} has no saekit architecture; "
                             "saekit reads sparsify's 'topk' SAEs and transcoders")
    if cfg.get("skip_connection"):
        raise SAEFormatError(f"{cfg_path}: a skip connection (W_skip) has no saekit architecture; "
                             "saekit reads sparsify SAEs and transcoders trained without one")
    transcoder = bool(cfg.get("transcode", False))
    expected = {"encoder.weight": (num_latents, d_in), "encoder.bias": (num_latents,),
                "W_dec": (num_latents, d_in), "b_dec": (d_in,)}
    try:
        with safe_open(str(weights_path), framework="pt") as file:
            found = set(file.keys())
            for name, shape in expected.items():
                if name not in found:
                    raise SAEFormatError(f"{weights_path} has no tensor {name!r} (found {sorted(found)})")
                got = tuple(file.get_slice(name).get_shape())
                if got != shape:
                    raise SAEFormatError(f"{weights_path}: {name!r} has shape {got}, but cfg.json (d_in={d_in}, "
                                         f"num_latents={num_latents}) needs {shape}")
            raw = {name: file.get_tensor(name) for name in expected}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        if isinstance(e, SAEFormatError):
            raise
        raise SAEFormatError(f"{weights_path} is not a readable safetensors file: {e}") from None
    tensors = {"W_enc": raw["encoder.weight"].T, "b_enc": raw["encoder.bias"], "W_dec": raw["W_dec"],
               "b_dec": raw["b_dec"]}
    return assemble("topk", tensors, source=weights_path, apply_b_dec_to_input=not transcoder,
                    transcoder=transcoder, hyper={"k": k}, dtype=dtype, allow_nonfinite=allow_nonfinite,
                    provenance=Provenance(extra={"sparsify_hookpoint": folder.name}))
