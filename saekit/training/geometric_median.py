"""The geometric median, where the 2023 paper starts b_dec."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def geometric_median(points: Tensor, iters: int = 100, tol: float = 1e-6) -> Tensor:
    """argmin_y Σ ‖p − y‖ over points [n, d] → [d], by Weiszfeld's iterations from the mean."""
    points = points.float()
    y = points.mean(0)
    for _ in range(iters):
        w = 1.0 / (points - y).norm(dim=1).clamp_min(1e-8)  # [n]
        y_next = (w[:, None] * points).sum(0) / w.sum()
        moved = (y_next - y).norm()
        y = y_next
        if moved <= tol * y.norm().clamp_min(1e-8):
            break
    return y
