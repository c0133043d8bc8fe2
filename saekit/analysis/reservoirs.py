"""Bounded per-unit samples, merged batch by batch: each unit's top entries (`GroupBest`) and uniform
samples from fine activation bins that coarsen exactly as the running max grows (`BinnedSamples`), cut
into the paper's even intervals at the end. How they work is told in `saekit.analysis.features`."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from saekit.saes.sparse import Codes

# --- running per-group selections -----------------------------------------------------------------


COARSEN_UNITS = 1024  # units whose bins merge at a time (bounds the temporaries)


class GroupBest:
    """Per group, the `n` entries with the lowest scores so far, each row kept sorted by score.

    Top-k by value uses score = −value; a uniform sample uses random scores (bottom-k sampling). Both
    merge exactly: the best n of a union are the best n of the parts' best n. Empty slots score +inf.
    """

    def __init__(self, n_groups: int, n: int) -> None:
        self.n = n
        self.score = torch.full((n_groups, n), math.inf)  # [groups, n]
        self.value = torch.zeros(n_groups, n)  # [groups, n] the activation of each kept entry
        self.token = torch.zeros(n_groups, n, dtype=torch.long)  # [groups, n] its flat token index

    def update(self, group: Tensor, score: Tensor, value: Tensor, token: Tensor) -> None:
        """Offer entries (all [m]); only those beating their group's current n-th score are sorted.

        Per touched group the kept entries and the offered ones are ranked by (score, arrival): kept
        entries before offered ones, offered ones in their given order. One stable sort of int64
        (group, score) keys does it, in numpy on views of the state (torch's masking, nonzero and sort
        are several times slower on these 1-D arrays here)."""
        group, score = group.numpy(), score.float().numpy()
        keep = np.flatnonzero(score < self.score.numpy()[group, -1])
        if keep.size == 0:
            return
        group, score = group[keep], score[keep]
        value, token = value.float().numpy()[keep], token.numpy()[keep]
        state = (self.score.numpy(), self.value.numpy(), self.token.numpy())
        touched = np.zeros(state[0].shape[0], dtype=bool)
        touched[group] = True
        groups = np.flatnonzero(touched)  # [U] ascending
        old_score = state[0][groups]  # [U, n]
        filled = np.isfinite(old_score)
        group = np.concatenate([np.broadcast_to(groups[:, None], old_score.shape)[filled], group])  # kept first:
        score = np.concatenate([old_score[filled], score])  # they win ties
        value = np.concatenate([state[1][groups][filled], value])
        token = np.concatenate([state[2][groups][filled], token])
        order = stable_argsort(group_score_key(group, score))
        group = group[order]
        rank = rank_in_runs(group)
        first = np.flatnonzero(rank < self.n)
        order, group, rank = order[first], group[first], rank[first]
        for array, empty, values in zip(state, (math.inf, 0, 0), (score, value, token)):
            array[groups] = empty
            array[group, rank] = values[order]

    def entries(self) -> Entries:
        """The filled slots, group by group, best first."""
        group, rank = torch.isfinite(self.score).nonzero(as_tuple=True)
        return Entries(group, rank, self.score[group, rank], self.value[group, rank], self.token[group, rank])


def group_score_key(group: np.ndarray, score: np.ndarray) -> np.ndarray:
    """int64 keys ordered as (group, score) pairs: the group in the high 32 bits, the float32 score's
    bits made order-preserving (as unsigned) in the low 32 (−0.0 counts as 0.0, as float comparison does)."""
    bits = (score.astype(np.float32) + np.float32(0.0)).view(np.int32).astype(np.int64)  # + 0.0: −0.0 → 0.0
    ordered = np.where(bits < 0, ~bits & 0xFFFFFFFF, bits | 0x80000000)  # negatives reversed, below positives
    return (group.astype(np.int64) << 32) | ordered


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """The stable ascending order of int64 `keys` [m]: numpy's quicksort (several times faster here than a
    stable sort), then runs of equal keys, rare, put back in index order."""
    order = np.argsort(keys, kind="quicksort")
    ordered = keys[order]
    tied = np.zeros(len(order), dtype=bool)
    tied[1:] = ordered[1:] == ordered[:-1]
    if tied.any():
        tied[:-1] |= tied[1:].copy()  # both ends of every tie
        positions = order[tied]
        order[tied] = positions[np.lexsort((positions, ordered[tied]))]
    return order


def rank_in_runs(sorted_ids: np.ndarray) -> np.ndarray:
    """Each element's position within its run of equal values in `sorted_ids` [m] (0 at each run's start)."""
    index = np.arange(len(sorted_ids))
    start = np.ones(len(sorted_ids), dtype=bool)
    start[1:] = sorted_ids[1:] != sorted_ids[:-1]
    return index - np.maximum.accumulate(np.where(start, index, 0))


class Entries(NamedTuple):
    """The filled slots of a GroupBest, each [m]."""

    group: Tensor
    rank: Tensor  # position within the group, 0 = best
    score: Tensor
    value: Tensor
    token: Tensor


class RangeGrowth(NamedTuple):
    """Where a batch takes per-unit power-of-two ranges [0, 2^exponent)."""

    exponent: Tensor  # [units] each unit's new exponent: its max so far < 2^exponent (0 before it fires)
    seen: Tensor  # [units] bool: whether the unit has fired
    units: Tensor  # [g] the units that fired before and whose range grew
    shifts: Tensor  # [g] by how many powers of two each one's range grew


def range_growth(exponent: Tensor, seen: Tensor, cols: Tensor, values: Tensor) -> RangeGrowth:
    """The ranges after a batch of firing entries (values [nnz] > 0 of units `cols` [nnz]): a unit firing for the
    first time takes the smallest power of two above its max, a seen one grows when its max outgrows it."""
    batch_max = torch.zeros(exponent.numel()).scatter_reduce_(0, cols, values.float(), "amax")
    fired_now = batch_max > 0
    needed = torch.frexp(batch_max).exponent.long()  # batch_max < 2^needed
    grow = fired_now & seen & (needed > exponent)
    first = fired_now & ~seen
    return RangeGrowth(torch.where(grow | first, needed, exponent), seen | fired_now, grow.nonzero(as_tuple=True)[0],
                       (needed - exponent)[grow])


def merge_bins(counts: Tensor, shift: int) -> Tensor:
    """Counts [..., bins] over [0, 2^e) as counts over [0, 2^(e + shift)) in as many bins: each 2^shift adjacent
    bins summed into one, at the start (bin i goes to i >> shift), the rest zero."""
    b = counts.shape[-1]
    m = 1 << min(shift, int(math.log2(b)))
    merged = torch.zeros_like(counts)
    merged[..., : b // m] = counts.reshape(*counts.shape[:-1], b // m, m).sum(-1)
    return merged


class BinnedSamples:
    """Per unit: a fine histogram over [0, 2^e) and a uniform sample per fine bin (see module doc)."""

    def __init__(self, n_units: int, n_bins: int, n_per_bin: int, seed: int) -> None:
        self.n_units, self.n_bins, self.log2_bins = n_units, n_bins, int(math.log2(n_bins))
        self.exponent = torch.zeros(n_units, dtype=torch.long)  # max < 2^exponent, once seen
        self.seen = torch.zeros(n_units, dtype=torch.bool)
        self.counts = torch.zeros(n_units, n_bins, dtype=torch.long)  # [units, bins]
        self.samples = GroupBest(n_units * n_bins, n_per_bin)  # group = unit · n_bins + bin
        self.generator = torch.Generator().manual_seed(seed)

    def update(self, codes: Codes, values: Tensor, token: Tensor) -> None:
        """Add the firing entries of a batch: values [nnz] at `codes`, token [nnz] flat indices."""
        self._grow(codes.cols, values)
        bins = torch.ldexp(values, self.log2_bins - self.exponent[codes.cols]).floor().long().clamp_(0, self.n_bins - 1)
        group = codes.cols * self.n_bins + bins
        self.counts.view(-1).index_add_(0, group, torch.ones_like(group))
        keys = torch.rand(values.shape, generator=self.generator)
        self.samples.update(group, keys, values, token)

    def _grow(self, cols: Tensor, values: Tensor) -> None:
        """Raise each unit's power-of-two range to cover this batch's max, merging its bins."""
        growth = range_growth(self.exponent, self.seen, cols, values)
        for shift in growth.shifts.unique().tolist():
            self._coarsen(growth.units[growth.shifts == shift], int(shift))
        self.exponent, self.seen = growth.exponent, growth.seen

    def _coarsen(self, units: Tensor, shift: int) -> None:
        """Merge each 2^shift adjacent bins of `units` into one (the range grew by 2^shift), COARSEN_UNITS units
        at a time (the temporaries of 16k units at once would take ~1 GiB)."""
        for start in range(0, units.numel(), COARSEN_UNITS):
            self._coarsen_block(units[start : start + COARSEN_UNITS], shift)

    def _coarsen_block(self, units: Tensor, shift: int) -> None:
        m = 1 << min(shift, self.log2_bins)
        b, n, k = self.n_bins, self.samples.n, units.numel()
        self.counts[units] = merge_bins(self.counts[units], shift)
        views = [t.view(self.n_units, b, n) for t in (self.samples.score, self.samples.value, self.samples.token)]
        score = views[0][units].view(k, b // m, m * n)
        order = score.sort(dim=-1, stable=True).indices[..., :n]
        for view, empty in zip(views, (math.inf, 0, 0)):
            merged = torch.full((k, b, n), empty, dtype=view.dtype)
            merged[:, : b // m] = view[units].view(k, b // m, m * n).gather(-1, order)
            view[units] = merged

    def bin_width(self) -> Tensor:
        """[units] the width of each unit's fine bins (2^e / n_bins); 0 for units that never fired."""
        return torch.where(self.seen, torch.ldexp(torch.ones(self.n_units), self.exponent - self.log2_bins), 0.0)

    def interval_edges(self, max_values: Tensor, n_intervals: int) -> Tensor:
        """[units, n_intervals + 1] fine-bin indices cutting [0, max] into even intervals (rounded to bins)."""
        width = self.bin_width().clamp_min(1e-30)
        last = (max_values / width).floor().clamp(max=self.n_bins - 1) + 1  # one past the max's bin
        cuts = torch.arange(n_intervals + 1) / n_intervals * (max_values / width)[:, None]
        edges = cuts.round().long()
        edges[:, -1] = last.long()
        return torch.minimum(edges, last.long()[:, None])

    def interval_samples(self, max_values: Tensor, n_intervals: int) -> IntervalSamples:
        """Per (unit, interval): the smallest-key entries over the interval's fine bins, and its count."""
        edges = self.interval_edges(max_values, n_intervals)  # [units, n_intervals + 1]
        fine_bins = torch.arange(self.n_bins)[None, :, None]
        interval_of_bin = (fine_bins >= edges[:, None, 1:]).sum(-1)  # [units, bins]; n_intervals: past the max
        counts = torch.zeros(self.n_units, n_intervals + 1, dtype=torch.long).scatter_add_(1, interval_of_bin,
                                                                                           self.counts)
        kept = self.samples.entries()
        unit, fine = kept.group // self.n_bins, kept.group % self.n_bins
        interval = interval_of_bin[unit, fine]
        keep = interval < n_intervals
        merged = GroupBest(self.n_units * n_intervals, self.samples.n)
        merged.update((unit * n_intervals + interval)[keep], kept.score[keep], kept.value[keep], kept.token[keep])
        return IntervalSamples(merged, edges, counts[:, :n_intervals])


class IntervalSamples(NamedTuple):
    """The interval examples of every unit."""

    samples: GroupBest  # group = unit · n_intervals + interval
    edges: Tensor  # [units, n_intervals + 1] fine-bin indices of the interval boundaries
    counts: Tensor  # [units, n_intervals] firing entries in each interval
