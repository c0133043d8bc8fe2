"""Statistics over the whole training batch, for losses that need more than a mean over their own rows.

Most losses are means over tokens, and data-parallel training gets the global batch's gradient by averaging the
ranks'. A few architectures also read the batch as a whole (AuxK divides by the residual's variance over the batch;
BatchTopK keeps the k·B largest pre-activations of the batch): they ask a `BatchReduce` for the numbers, which is
`LOCAL` in one process and the ranks' collective in `saekit.training.distributed`, so both compute the same thing.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class BatchReduce(Protocol):
    """Reductions over the rows of the global training batch, which may be split across processes (no gradient)."""

    def sum(self, partial: Tensor) -> Tensor:
        """The sum over processes of each one's `partial` (a tensor of the same shape everywhere)."""
        ...

    def min(self, partial: Tensor) -> Tensor:
        """The elementwise minimum over processes."""
        ...

    def kth_largest(self, values: Tensor, k: int) -> Tensor:
        """The k-th largest of all processes' `values` [n_p] together (k ≤ their total count)."""
        ...


class LocalBatch:
    """The whole batch is in this process."""

    def sum(self, partial: Tensor) -> Tensor:
        return partial

    def min(self, partial: Tensor) -> Tensor:
        return partial

    def kth_largest(self, values: Tensor, k: int) -> Tensor:
        if values.numel() == k:  # already the k largest (BatchTopK passes its own top k)
            return values.min()
        return values.topk(k, sorted=False).values.min()


LOCAL = LocalBatch()


@torch.no_grad()
def row_variance(e: Tensor, batch: BatchReduce = LOCAL) -> Tensor:
    """E‖e − ē‖² over the rows of the global batch, e [rows, d] (two passes: the mean first, as a variance should)."""
    n = batch.sum(e.new_tensor(float(e.shape[0])))
    mean = batch.sum(e.sum(0)) / n  # [d]
    return batch.sum((e - mean).pow(2).sum()) / n
