"""Which features fire: dead features (none over a window of tokens) and dense ones (above a rate)."""

from __future__ import annotations

import torch
from torch import Tensor


class FiringTracker:
    """Per-feature firing record over training: when each feature last fired and its recent density."""

    def __init__(self, d_sae: int, window_tokens: int, device: torch.device | str = "cpu") -> None:
        self.window_tokens = window_tokens
        self.last_fired = torch.zeros(d_sae, dtype=torch.int64, device=device)  # tokens seen when it last fired
        self.counts = torch.zeros(d_sae, dtype=torch.int64, device=device)  # firings in the open window
        self.counted_tokens = 0  # tokens in the open window
        self.density = torch.full((d_sae,), float("nan"), device=device)  # firing rate over the last window

    def update(self, fired: Tensor, n_tokens: int, tokens_seen: int) -> None:
        """Record a batch: fired [d_sae] counts tokens each feature fired on; tokens_seen includes the batch."""
        self.last_fired[fired > 0] = tokens_seen
        self.counts += fired
        self.counted_tokens += n_tokens
        if self.counted_tokens >= self.window_tokens:
            self.density = self.counts.float() / self.counted_tokens
            self.counts.zero_()
            self.counted_tokens = 0

    def dead(self, tokens_seen: int) -> Tensor:
        """[d_sae] bool: features that fired on none of the last `window_tokens` tokens."""
        return (tokens_seen - self.last_fired) >= self.window_tokens

    def recent_density(self) -> Tensor:
        """Firing rate per feature over the last full window (the open one before any is full)."""
        if torch.isnan(self.density).all() and self.counted_tokens:
            return self.counts.float() / self.counted_tokens
        return self.density

    def revive(self, features: Tensor, tokens_seen: int) -> None:
        """Give resampled features a fresh window before they can count as dead again."""
        self.last_fired[features] = tokens_seen

    def state(self) -> dict[str, Tensor]:
        return {"last_fired": self.last_fired, "counts": self.counts, "density": self.density,
                "counted_tokens": torch.tensor(self.counted_tokens)}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.last_fired.copy_(state["last_fired"])
        self.counts.copy_(state["counts"])
        self.density.copy_(state["density"])
        self.counted_tokens = int(state["counted_tokens"])
