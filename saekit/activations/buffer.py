"""A shuffled activation buffer with a fixed memory budget, restartable at any batch.

Activations from one context window are strongly correlated, so training on them in model order
hurts. The buffer works in blocks of `block_tokens` activation vectors (as many whole batches as the
budget holds): it fills a block from the stream, hands it out as batches in a random order, and fills
the next. Each block's order is a permutation drawn from a generator seeded by (seed, block index), so
the batches from any point on depend only on that block's activations: a resumed run recomputes one
block, never the whole stream before it. Batches are gathered by indexing: no second copy of a block.
At the end of a finite stream the partial last block is handed out too, in random order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from saekit.errors import InputError

_BLOCK_SEED_STRIDE = 0x9E3779B1  # block generators (32-bit seeds) start at seed·stride + block mod 2³²: apart by seed


def rank_rows(n: int, rank: int, world_size: int) -> slice:
    """Rank `rank`'s rows of a global batch of n rows: consecutive, in rank order, sizes differing by at most one."""
    return slice(n * rank // world_size, n * (rank + 1) // world_size)


class ActivationBuffer:
    """Mixes a stream of activation chunks [n, d_in] into shuffled batches [batch_size, d_in]."""

    def __init__(
        self,
        d_in: int,
        *,
        budget_bytes: int,
        batch_size: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        itemsize = torch.empty((), dtype=dtype).element_size()
        self.capacity_tokens = budget_bytes // (d_in * itemsize)
        if self.capacity_tokens < 2 * batch_size:
            raise InputError(
                f"a buffer of {budget_bytes} bytes holds {self.capacity_tokens} activations of width {d_in}, "
                f"fewer than 2 batches of {batch_size}; raise the buffer budget to at least "
                f"{2 * batch_size * d_in * itemsize} bytes or lower the batch size"
            )
        self.d_in, self.batch_size, self.drop_last = d_in, batch_size, drop_last
        self.dtype, self.device, self.seed = dtype, torch.device(device), seed
        self.block_batches = self.capacity_tokens // batch_size  # batches one block hands out
        self.block_tokens = self.block_batches * batch_size

    def permutation(self, block: int, n: int) -> Tensor:
        """The order [n] in which block `block` (holding n rows) is handed out."""
        generator = torch.Generator(device="cpu").manual_seed((self.seed * _BLOCK_SEED_STRIDE + block) % 2**32)
        return torch.randperm(n, generator=generator)

    def batches(self, chunks: Iterable[Tensor], first_batch: int = 0) -> Iterator[Tensor]:
        """Shuffled batches [batch_size, d_in], every row once, starting at batch `first_batch`.

        `chunks` ([n, d_in] each) must start at the first row of that batch's block, row
        `block_start(first_batch)` of the stream."""
        block, skip = divmod(first_batch, self.block_batches)
        store = torch.empty(self.block_tokens, self.d_in, dtype=self.dtype, device=self.device)
        filled = 0
        for chunk in chunks:
            chunk = chunk.reshape(-1, self.d_in)
            start = 0
            while start < chunk.shape[0]:
                take = min(chunk.shape[0] - start, self.block_tokens - filled)
                store[filled : filled + take] = chunk[start : start + take].to(device=self.device, dtype=self.dtype)
                filled, start = filled + take, start + take
                if filled == self.block_tokens:
                    yield from self._gather(store, self.permutation(block, filled)[skip * self.batch_size :])
                    block, skip, filled = block + 1, 0, 0
        if filled:
            yield from self._gather(store, self.permutation(block, filled)[skip * self.batch_size :], last=True)

    def block_start(self, first_batch: int) -> int:
        """Stream row at which the block holding batch `first_batch` starts."""
        return first_batch // self.block_batches * self.block_tokens

    def _gather(self, store: Tensor, slots: Tensor, last: bool = False) -> Iterator[Tensor]:
        """Rows of `store` at `slots`, in batches (new tensors); a short tail batch only at the end."""
        for start in range(0, slots.numel(), self.batch_size):
            batch = slots[start : start + self.batch_size]
            if batch.numel() < self.batch_size and (not last or self.drop_last):
                return
            yield store[batch.to(self.device)]
