"""The formats `load_sae` reads, how each is recognised, and the one entry point that picks among them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple

import torch

from saekit.formats import dictionary_learning, gemma_scope, hub, saelens, sparsify
from saekit.formats.common import SAEFormatError
from saekit.saes import SAE

FormatName = Literal["saelens", "sparsify", "dictionary_learning", "gemma_scope"]


class Format(NamedTuple):
    """One on-disk format: its name, what its folder holds, and its detector and loader."""

    name: FormatName
    holds: str  # what a folder of this format holds, for error messages
    complete: Callable[[Path], bool]  # every file it needs is there
    marked: Callable[[Path], bool]  # at least one file only it uses is there (a damaged folder still says its format)
    load: Callable[..., SAE]  # (folder, *, dtype, allow_nonfinite, [hook]) -> SAE on the CPU


FORMATS: tuple[Format, ...] = (
    Format("gemma_scope", "params.npz (W_enc, W_dec, b_enc, b_dec, threshold)",
           gemma_scope.is_gemma_scope_folder, gemma_scope.is_gemma_scope_folder, gemma_scope.load_gemma_scope),
    Format("dictionary_learning", "ae.pt (a state dict) + config.json naming trainer.dict_class",
           dictionary_learning.is_dictionary_learning_folder,
           lambda f: any((f / name).is_file() for name in (dictionary_learning.WEIGHTS_FILE,
                                                            dictionary_learning.CONFIG_FILE)),
           dictionary_learning.load_dictionary_learning),
    Format("sparsify", "cfg.json + sae.safetensors, or sub-folders (one per hookpoint) holding them",
           sparsify.is_sparsify_folder, lambda f: (f / sparsify.WEIGHTS_FILE).is_file() or bool(sparsify.hooks(f)),
           sparsify.load_sparsify),
    Format("saelens", "cfg.json + sae_weights.safetensors (written by saekit or SAELens ≥ 6)",
           saelens.is_saelens_folder,
           lambda f: (f / saelens.CFG_FILE).is_file() or (f / saelens.WEIGHTS_FILE).is_file(),
           saelens.load_saelens),
)
ALIASES = {"saekit": "saelens"}  # saekit writes SAELens's layout


def formats() -> list[str]:
    """The format names `load_sae(path, format=...)` takes."""
    return [f.name for f in FORMATS] + sorted(ALIASES)


def _looked_for() -> str:
    return "; ".join(f"{f.name}: {f.holds}" for f in FORMATS)


def detect_format(path: str | os.PathLike) -> FormatName:
    """The format of the SAE folder at `path`: the first whose files are all there, else the first with a file
    only it uses (so a damaged folder's loader says what is wrong)."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no SAE folder at {folder}: pass a folder holding cfg.json and sae_weights.safetensors (written by "
            f"sae.save() or by SAELens) or another format's files ({_looked_for()}), or a Hub reference "
            f"(hf://owner/repo/path, or a SAELens release/sae_id)"
        )
    for check in ("complete", "marked"):
        for fmt in FORMATS:
            if getattr(fmt, check)(folder):
                return fmt.name
    raise SAEFormatError(f"{folder} holds no SAE saekit reads; it looked for {_looked_for()}")


def _format(name: str) -> Format:
    name = ALIASES.get(name, name)
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise SAEFormatError(f"unknown SAE format {name!r}; choose one of {formats()}")


def load_sae(path: str | os.PathLike, *, format: FormatName | Literal["saekit"] | None = None,
             hook: str | None = None, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
             allow_nonfinite: bool = False) -> SAE:
    """Load an SAE saved by saekit, SAELens (≥ 6), sparsify, dictionary_learning or Gemma Scope.

    `path` is a local folder (or Gemma Scope's params.npz), "hf://owner/repo/path" or SAELens's "release/sae_id";
    the format is detected unless named. `hook` picks a sparsify run's hookpoint. Weights holding NaN/inf are
    refused unless `allow_nonfinite`; no loader runs pickled code."""
    local = Path(path)
    if isinstance(path, str) and not local.exists():
        location = hub.locate(path)
        if location is not None:
            local = hub.download(location, sub_folder=hook)
    if local.is_file():  # a format's file (params.npz, ae.pt, cfg.json) stands for its folder
        local = local.parent
    fmt = _format(format) if format is not None else _format(detect_format(local))
    if format is not None and not local.is_dir():
        detect_format(local)  # the missing-folder message
    if hook is not None and fmt.name != "sparsify":
        raise SAEFormatError(f"hook={hook!r} picks a hookpoint of a sparsify run; {local} is a {fmt.name} folder")
    extra = {"hook": hook} if fmt.name == "sparsify" else {}
    return fmt.load(local, dtype=dtype, allow_nonfinite=allow_nonfinite, **extra).to(device).eval()

