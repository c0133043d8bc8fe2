"""Data-parallel training on torch.distributed: one replica of the SAE per rank, gradients all-reduced by DDP.

`torchrun --nproc-per-node N -m saekit train ...` starts N ranks (gloo on CPU, NCCL on CUDA, one GPU per rank).
Each rank trains on its share of every global batch, in rank order, and the trainer keeps the replicas equal by
deciding everything from reduced numbers: the tokens seen, every feature's firing count (dead features, AuxK,
resampling), the resampling pool, the first batch (activation scale, b_dec), the losses that read the whole batch
(`saekit.saes.batch`). Gradients are weighted by each rank's rows, so N ranks take the steps one process takes on the
same global batches, to float rounding. Only rank 0 writes checkpoints and the final folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from saekit.errors import InputError

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DataParallel:
    """This process's place among the ranks, and the collectives the trainer uses."""

    rank: int
    world_size: int
    device: torch.device

    @classmethod
    def from_environment(cls, device: str | torch.device = "cpu") -> DataParallel | None:
        """The rank torchrun started this process as (joining its process group), or None outside torchrun."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        missing = [v for v in LAUNCH_VARIABLES if v not in os.environ]
        if missing:
            raise InputError(f"WORLD_SIZE is set but {', '.join(missing)} are not: start data-parallel training with "
                             "torchrun --nproc-per-node N -m saekit train ... (or saekit train --nproc N)")
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        device = torch.device(device)
        if device.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise InputError(f"rank {rank} wants GPU {local_rank} but {torch.cuda.device_count()} are visible: "
                                 "start at most one rank per GPU")
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return cls(rank, dist.get_world_size(), device)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and prints."""
        return self.rank == 0

    def wrap(self, module: nn.Module) -> DistributedDataParallel:
        """`module` under DDP: its backward all-reduces (averages) the gradients over the ranks."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False)

    def _on_device(self, t: Tensor) -> Tensor:
        return t.to(self.device) if self.device.type == "cuda" else t

    def sum(self, partial: Tensor) -> Tensor:
        total = self._on_device(partial.detach().clone())
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.to(partial.device)

    def min(self, partial: Tensor) -> Tensor:
        lowest = self._on_device(partial.detach().clone())
        dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
        return lowest.to(partial.device)

    def kth_largest(self, values: Tensor, k: int) -> Tensor:
        return self.gather_rows(values.detach()).topk(k, sorted=False).values.min()

    def gather_rows(self, rows: Tensor) -> Tensor:
        """Every rank's `rows` [n_r, ...] stacked in rank order (the n_r may differ)."""
        counts = self.gather_counts(rows.shape[0])
        padded = self._on_device(rows.new_zeros((max(counts), *rows.shape[1:])))
        padded[: rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, counts)]).to(rows.device)

    def gather_counts(self, n: int) -> list[int]:
        """Every rank's n, in rank order."""
        counts = self._on_device(torch.tensor([n], dtype=torch.int64))
        parts = [torch.empty_like(counts) for _ in range(self.world_size)]
        dist.all_gather(parts, counts)
        return [int(p) for p in parts]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (any picklable value)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        """Leave the process group (at the end of the run)."""
        if dist.is_initialized():
            dist.destroy_process_group()


class LossModule(nn.Module):
    """The SAE's training loss as a module's forward, which is what DDP wraps."""

    def __init__(self, sae: nn.Module) -> None:
        super().__init__()
        self.sae = sae

    def forward(self, x: Tensor, ctx: Any, sparse: bool, target: Tensor, weight: float) -> tuple[Tensor, Any]:
        """(the total loss times `weight`, the loss): `weight` is this rank's share of the rows × the world size, so
        DDP's average of the ranks' gradients is the global batch's gradient."""
        out = self.sae.loss(x, ctx, sparse=sparse, target=target)
        return out.total * weight, out
