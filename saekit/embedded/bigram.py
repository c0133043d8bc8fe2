"""The bigram baseline: add-k smoothed next-token counts from the train tokens, scored on held-out tokens."""

from __future__ import annotations

import numpy as np


def bigram_loss(train: np.ndarray, heldout: np.ndarray, vocab_size: int, k: float = 0.1) -> float:
    """Mean held-out cross-entropy (nats/token) of p(next | prev) = (count + k) / (row count + k * vocab).

    Counts are over every adjacent pair of `train [m]`. Scored pairs: the adjacent pairs of `heldout`,
    either one sequence `[n]` or windows `[n_windows, length]` (pairs within each row, as a model sees them).
    """
    if k <= 0:
        raise ValueError(f"k={k}: add-k smoothing needs k > 0 (e.g. 0.1) so unseen pairs keep some mass")
    heldout = np.atleast_2d(np.asarray(heldout, dtype=np.int64))
    if heldout.shape[-1] < 2:
        raise ValueError("heldout needs at least two tokens (one pair) to score")
    train = np.asarray(train, dtype=np.int64)
    pair_counts = np.bincount(train[:-1] * vocab_size + train[1:], minlength=vocab_size * vocab_size)
    row_counts = np.bincount(train[:-1], minlength=vocab_size)
    prev, nxt = heldout[:, :-1].ravel(), heldout[:, 1:].ravel()
    probs = (pair_counts[prev * vocab_size + nxt] + k) / (row_counts[prev] + k * vocab_size)
    return float(-np.log(probs).mean())
