"""The shuffle buffer: bounded memory, every activation exactly once, seeded mixing."""

from __future__ import annotations

import pytest
import torch

from saekit.activations.buffer import ActivationBuffer


def _chunks(n_rows: int, d_in: int, chunk: int):
    """Rows whose every entry is the row's index, in chunks of `chunk` rows."""
    ids = torch.arange(n_rows, dtype=torch.float32)
    for start in range(0, n_rows, chunk):
        part = ids[start : start + chunk]
        yield part[:, None].expand(-1, d_in).clone()


def _run(seed=0, n_rows=1000, d_in=4, batch_size=32, chunk=37, budget_rows=200, **kw):
    buffer = ActivationBuffer(d_in, budget_bytes=budget_rows * d_in * 4, batch_size=batch_size, seed=seed, **kw)
    return buffer, list(buffer.batches(_chunks(n_rows, d_in, chunk)))


def test_capacity_follows_the_byte_budget():
    buffer = ActivationBuffer(16, budget_bytes=10_000, batch_size=8, dtype=torch.float16)
    assert buffer.capacity_tokens == 10_000 // (16 * 2)
    with pytest.raises(ValueError, match="raise the buffer budget"):
        ActivationBuffer(16, budget_bytes=1000, batch_size=64)


def test_every_row_once_in_full_batches():
    _, batches = _run()
    assert all(b.shape == (32, 4) for b in batches[:-1])
    assert 1 <= batches[-1].shape[0] <= 32
    rows = torch.cat(batches)
    assert (rows == rows[:, :1]).all()  # rows stay intact
    assert sorted(rows[:, 0].long().tolist()) == list(range(1000))


def test_drop_last():
    _, batches = _run(drop_last=True)
    assert all(b.shape[0] == 32 for b in batches)
    assert sum(b.shape[0] for b in batches) == 1000 // 32 * 32


def test_shuffled_mixed_within_reach_and_seeded():
    buffer, batches = _run(seed=3)
    order = torch.cat(batches)[:, 0].long()
    assert not torch.equal(order, torch.arange(1000))
    # the first emitted batch can only hold rows of the first fill
    assert order[:32].max() < buffer.capacity_tokens
    _, again = _run(seed=3)
    torch.testing.assert_close(torch.cat(again), torch.cat(batches))
    _, other = _run(seed=4)
    assert not torch.equal(torch.cat(other), torch.cat(batches))


def test_short_stream_fits_in_the_buffer():
    _, batches = _run(n_rows=50, batch_size=16)
    assert [b.shape[0] for b in batches] == [16, 16, 16, 2]
    assert sorted(torch.cat(batches)[:, 0].long().tolist()) == list(range(50))


@pytest.mark.parametrize("first", [0, 5, 6, 7, 11, 30])
def test_restart_at_any_batch_gives_the_same_batches(first):
    """Started at batch `first` with the stream from its block's first row, the buffer hands out exactly the
    batches an uninterrupted pass gives from there (6 batches of 32 per 200-row block)."""
    buffer, whole = _run(seed=5)
    assert buffer.block_batches == 6
    start = buffer.block_start(first)
    assert start == first // 6 * 192
    rows = torch.arange(start, 1000, dtype=torch.float32)[:, None].expand(-1, 4).clone()
    again = list(buffer.batches(rows.split(37), first_batch=first))
    assert len(again) == len(whole) - first
    for a, b in zip(again, whole[first:]):
        assert torch.equal(a, b)


def test_each_block_is_one_permutation_of_its_rows():
    buffer, batches = _run(seed=1)
    block = torch.cat(batches[:6])[:, 0].long()
    assert sorted(block.tolist()) == list(range(192))  # the first block: the stream's first 192 rows
    assert torch.equal(block, buffer.permutation(0, 192))
