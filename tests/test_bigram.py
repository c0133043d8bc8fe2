"""The bigram baseline against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from saekit.embedded.bigram import bigram_loss


def test_matches_hand_computation() -> None:
    # train pairs: (0,1) twice, (1,0), (1,2); rows: 0 -> 2 pairs, 1 -> 2 pairs; vocab 3, k = 1
    train = np.array([0, 1, 0, 1, 2])
    heldout = np.array([0, 1, 2, 2])
    p01 = (2 + 1) / (2 + 3)
    p12 = (1 + 1) / (2 + 3)
    p22 = (0 + 1) / (0 + 3)  # token 2 never starts a train pair: uniform
    expected = -(math.log(p01) + math.log(p12) + math.log(p22)) / 3
    assert bigram_loss(train, heldout, vocab_size=3, k=1.0) == pytest.approx(expected)


def test_windows_score_pairs_within_rows() -> None:
    train = np.array([0, 1, 0, 1, 2, 2, 0])
    windows = np.array([[0, 1, 2], [2, 0, 1]])
    by_row = [bigram_loss(train, row, vocab_size=3, k=0.5) for row in windows]
    assert bigram_loss(train, windows, vocab_size=3, k=0.5) == pytest.approx(np.mean(by_row))


def test_less_smoothing_fits_seen_pairs_better() -> None:
    train = np.tile([0, 1, 2, 3], 50)
    assert bigram_loss(train, train, 4, k=0.01) < bigram_loss(train, train, 4, k=1.0) < math.log(4)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="k > 0"):
        bigram_loss(np.array([0, 1]), np.array([0, 1]), 2, k=0)
    with pytest.raises(ValueError, match="two tokens"):
        bigram_loss(np.array([0, 1]), np.array([0]), 2)
