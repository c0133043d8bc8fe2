"""A shuffled activation buffer with a fixed memory budget.

Activations from one context window are strongly correlated, so training on them in model order
hurts. The buffer holds `capacity_tokens = budget_bytes // (d_in * itemsize)` activation vectors:
it fills up, hands out a random half of itself as batches (a seeded generator, so runs repeat),
refills those slots from the stream and draws again — the standard mixing of SAE trainers, done by
indexing so no second copy of the buffer is ever made. At the end of the stream whatever is left is
handed out too, in random order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor


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
            raise ValueError(
                f"a buffer of {budget_bytes} bytes holds {self.capacity_tokens} activations of width {d_in}, "
                f"fewer than 2 batches of {batch_size}; raise the buffer budget to at least "
                f"{2 * batch_size * d_in * itemsize} bytes or lower the batch size"
            )
        self.d_in, self.batch_size, self.drop_last = d_in, batch_size, drop_last
        self.dtype, self.device = dtype, torch.device(device)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        # Half a buffer, in whole batches: what one refill cycle hands out.
        self.emit_tokens = (self.capacity_tokens // 2 // batch_size) * batch_size

    def batches(self, chunks: Iterable[Tensor]) -> Iterator[Tensor]:
        """Shuffled batches [batch_size, d_in] from `chunks` ([n, d_in] each); every row is emitted once."""
        store = torch.empty(self.capacity_tokens, self.d_in, dtype=self.dtype, device=self.device)
        free = torch.arange(self.capacity_tokens)  # slots to fill next, in order
        n_free_used = 0
        for chunk in chunks:
            chunk = chunk.reshape(-1, self.d_in)
            start = 0
            while start < chunk.shape[0]:
                take = min(chunk.shape[0] - start, free.numel() - n_free_used)
                slots = free[n_free_used : n_free_used + take].to(self.device)
                store[slots] = chunk[start : start + take].to(device=self.device, dtype=self.dtype)
                n_free_used, start = n_free_used + take, start + take
                if n_free_used == free.numel():
                    # Full: hand out a random half, whose slots are then refilled.
                    free = torch.randperm(self.capacity_tokens, generator=self.generator)[: self.emit_tokens]
                    n_free_used = 0
                    yield from self._gather(store, free)
        filled = torch.ones(self.capacity_tokens, dtype=torch.bool)
        filled[free[n_free_used:]] = False
        rest = filled.nonzero().squeeze(1)
        rest = rest[torch.randperm(rest.numel(), generator=self.generator)]
        yield from self._gather(store, rest, last=True)

    def _gather(self, store: Tensor, slots: Tensor, last: bool = False) -> Iterator[Tensor]:
        """Rows of `store` at `slots`, in batches (new tensors); a short tail batch only at the end."""
        for start in range(0, slots.numel(), self.batch_size):
            batch = slots[start : start + self.batch_size]
            if batch.numel() < self.batch_size and (not last or self.drop_last):
                return
            yield store[batch.to(self.device)]
