"""A dictionary as every analysis encodes with it (an SAE, or `Neurons` for the raw neurons: see
saekit.saes.dictionary): its codes on activations, and the entries where units fire."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from saekit.saes.dictionary import Dictionary
from saekit.saes.sparse import Codes


@torch.no_grad()
def encode(dictionary: Dictionary, acts: Tensor) -> Tensor:
    """Feature activations [tokens, d_sae] of activations [tokens, d_in], on the dictionary's device/dtype."""
    return dictionary.encode(acts.to(device=dictionary.device, dtype=dictionary.dtype))


def fired(f: Tensor, positive: bool = True) -> tuple[Codes, Tensor]:
    """The entries of f [tokens, units] where units fire (f > 0, or f ≠ 0 with positive=False), sorted
    by token, and their values [nnz]. Found with numpy (torch's nonzero is several times slower here)."""
    f = f.detach().cpu()
    array = (f.float() if f.dtype in (torch.bfloat16, torch.float16) else f).contiguous().numpy()
    flat = array.reshape(-1)
    index = np.flatnonzero(flat > 0 if positive else flat != 0)  # [nnz] into the row-major matrix
    rows, cols = np.divmod(index, max(f.shape[1], 1))
    return Codes(torch.from_numpy(rows), torch.from_numpy(cols), f.shape[0]), torch.from_numpy(flat[index])


def positive_entries(codes: Codes, values: Tensor) -> tuple[Codes, Tensor]:
    """The entries of `fired(f, positive=False)` with value > 0: `fired(f)` without a second pass over f."""
    keep = values.numpy() > 0
    if keep.all():
        return codes, values
    index = torch.from_numpy(np.flatnonzero(keep))
    return Codes(codes.rows[index], codes.cols[index], codes.n_rows), values[index]


def first_rows(codes: Codes, values: Tensor, n_rows: int) -> tuple[Codes, Tensor]:
    """The entries of the first `n_rows` tokens (entries are sorted by token)."""
    end = int(np.searchsorted(codes.rows.numpy(), n_rows, side="left"))
    return Codes(codes.rows[:end], codes.cols[:end], n_rows), values[:end]
