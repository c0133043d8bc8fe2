"""Learning-rate and penalty schedules as pure functions of training progress (a share in [0, 1])."""

from __future__ import annotations


def lr_factor(progress: float, warmup: float, decay: float) -> float:
    """Linear warm-up over the first `warmup` share, flat, then linear decay to 0 over the last `decay`."""
    if warmup > 0 and progress < warmup:
        return progress / warmup
    if decay > 0 and progress > 1 - decay:
        return max(0.0, (1 - progress) / decay)
    return 1.0


def warmup_factor(progress: float, warmup: float) -> float:
    """Linear ramp from 0 to 1 over the first `warmup` share of training (λ warm-up)."""
    return min(1.0, progress / warmup) if warmup > 0 else 1.0
