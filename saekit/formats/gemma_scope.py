"""Gemma Scope (Google DeepMind) JumpReLU SAEs: one `params.npz` per SAE.

The archive holds W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc, b_dec and threshold [d_sae], already in
saekit's layout; Gemma Scope encodes ReLU(x W_enc + b_enc) · 1[pre > θ] with no pre-encoder bias. Read with
numpy's pickle-free loader.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from saekit.formats.common import SAEFormatError, assemble
from saekit.saes import SAE

WEIGHTS_FILE = "params.npz"
NAMES = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")


def is_gemma_scope_folder(folder: Path) -> bool:
    """Whether `folder` holds a Gemma Scope `params.npz`."""
    return (folder / WEIGHTS_FILE).is_file()


def load_gemma_scope(path: Path, *, dtype: torch.dtype | None = None, allow_nonfinite: bool = False) -> SAE:
    """The JumpReLU SAE of a Gemma Scope folder (or of its `params.npz` itself)."""
    file = Path(path)
    file = file / WEIGHTS_FILE if file.is_dir() else file
    try:
        with np.load(file, allow_pickle=False) as npz:
            missing = [name for name in NAMES if name not in npz.files]
            if missing:
                raise SAEFormatError(f"{file}: a Gemma Scope archive holds {list(NAMES)}; {missing} are missing "
                                     f"(found {sorted(npz.files)})")
            arrays = {name: npz[name] for name in NAMES}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        if isinstance(e, SAEFormatError):
            raise
        raise SAEFormatError(f"{file} is not a readable .npz archive of arrays: {e}") from None
    bad = [name for name, a in arrays.items() if not np.issubdtype(a.dtype, np.floating)]
    if bad:
        raise SAEFormatError(f"{file}: {bad} are not floating-point arrays")
    tensors = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}
    return assemble("jumprelu", tensors, source=file, apply_b_dec_to_input=False, dtype=dtype,
                    allow_nonfinite=allow_nonfinite)
