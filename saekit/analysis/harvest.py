"""Several streaming analyses in ONE pass over shared token windows (what `saekit demo` computes).

The per-analysis functions (`build_feature_store`, `correlate`, `split_similarities`) each run the model
and encode their dictionaries on their own. Here each model's activations are read once per batch of
windows, each dictionary encodes each batch once, and its firing entries are found once, then fed to
every analysis that reads that dictionary: feature stores and co-activation sums (universality
correlations, splitting cosines). Analyses may read fewer windows than others (a prefix of the same
windows): they get the first rows of a batch. Batches, entries and their order are those the
per-analysis functions see, so the results are the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations.reading import ActivationChunk, Reading, reading_activations
from saekit.activations.windows import TokenWindows
from saekit.analysis.encoding import encode, fired, first_rows, positive_entries
from saekit.analysis.features import FeatureStats, FeatureStore, StoreConfig, assemble_store
from saekit.analysis.universality import DENSE_ABOVE, PROBE_ROWS, CoactivationSums, Correlations, Method, probe_density
from saekit.saes.dictionary import Dictionary
from saekit.saes.sparse import Codes


class Reader(NamedTuple):
    """A dictionary and the reading (of `shared_pass`'s) it reads: the model, hook and skipped tokens."""

    reading: str  # key of the reading in `shared_pass`'s readings
    dictionary: Dictionary  # an SAE, or Neurons(d) for the raw neurons


class StoreJob(NamedTuple):
    """A feature store of a reader over the first `n_windows` windows."""

    reader: str
    n_windows: int


class PairJob(NamedTuple):
    """Co-activation sums of two readers (same windows, e.g. two models or two sizes) over the first windows."""

    reader_a: str
    reader_b: str
    n_windows: int
    method: Method = "auto"


class PairSums(NamedTuple):
    """What a PairJob accumulated: the sums and each side's firing counts (f ≠ 0) per unit."""

    sums: CoactivationSums
    fires_a: Tensor  # [d_a] float32 counts
    fires_b: Tensor  # [d_b]

    def correlations(self, neurons: PairSums | None = None) -> Correlations:
        """As `universality.correlate` returns them (`neurons`: the raw-neuron pair of the same tokens)."""
        empty = torch.zeros(0, 0)
        n = max(self.sums.n, 1)
        return Correlations(self.sums.correlation(), neurons.sums.correlation() if neurons else empty,
                            self.fires_a / n, self.fires_b / n)


class SharedPass(NamedTuple):
    """The analyses' results: stores assembled as soon as their windows are read (their running statistics,
    far larger, are dropped then), and the pairs' co-activation sums."""

    stores: dict[str, FeatureStore]
    pairs: dict[str, PairSums]

    def assemble(self, name: str) -> FeatureStore:
        """The feature store `name`, handed over (dropped from this result, to bound memory)."""
        return self.stores.pop(name)


def cut_windows(windows: TokenWindows, n_windows: int) -> TokenWindows:
    """The first `n_windows` windows."""
    return TokenWindows(*(t[:n_windows] for t in windows))


def shared_pass(
    readings: Mapping[str, Reading],
    readers: Mapping[str, Reader],
    stores: Mapping[str, StoreJob] = {},
    pairs: Mapping[str, PairJob] = {},
    *,
    batch_size: int = 32,
    config: StoreConfig | None = None,
    progress: bool = True,
) -> SharedPass:
    """Feed every store and pair job from one read of each reading, batch by batch.

    All readings must hold the same windows and skip the same special tokens (e.g. one text through models A
    and B); `batch_size` windows per forward (the per-analysis functions' `batch_size`, the store's
    `config.batch_size`: the same batches give the same sums). Readers are encoded in the order given, and each
    batch's codes are dropped once the last job reading them has them. `config`: the stores' (default StoreConfig()).
    """
    config = config or StoreConfig()
    _check_readings(readings)
    windows = next(iter(readings.values())).windows
    jobs: dict[str, list[tuple[str, int]]] = {name: [] for name in readers}  # reader → [(job, n_windows)]
    for name, job in stores.items():
        jobs[job.reader].append((name, min(job.n_windows, len(windows))))
    for name, job in pairs.items():
        for reader in (job.reader_a, job.reader_b):
            jobs[reader].append((name, min(job.n_windows, len(windows))))
    reach = {name: max((n for _, n in needs), default=0) for name, needs in jobs.items()}
    reading_reach = {key: max([reach[r] for r, reader in readers.items() if reader.reading == key], default=0)
                    for key in readings}
    order = [r for r in readers if reach[r] > 0]
    held_until = {r: max(order.index(s) for s in _partners(r, pairs) if s in order) for r in order}
    fed_at = {name: max(order.index(job.reader_a), order.index(job.reader_b)) for name, job in pairs.items()
              if job.reader_a in order and job.reader_b in order}

    cut = {name: windows if min(job.n_windows, len(windows)) == len(windows)
           else cut_windows(windows, job.n_windows) for name, job in stores.items()}
    stats: dict[str, FeatureStats] = {}
    done: dict[str, FeatureStore] = {}
    sums: dict[str, list[Any]] = {}  # name → [CoactivationSums, fires_a, fires_b]
    streams = {key: _stream(reading, reading_reach[key], batch_size) for key, reading in readings.items()
               if reading_reach[key] > 0}
    context = windows.input_ids.shape[1]
    n_batches = -(-max(reading_reach.values(), default=0) // batch_size)
    for batch in tqdm(range(n_batches), desc="shared pass", unit="batch", disable=not progress):
        start = batch * batch_size
        chunks = {key: next(stream) for key, stream in streams.items() if reading_reach[key] > start}
        held: dict[str, _Codes] = {}
        for position, name in enumerate(order):
            if reach[name] <= start:
                continue
            reader = readers[name]
            held[name] = _Codes(chunks[reader.reading], reader.dictionary)
            for job_name, n_windows in jobs[name]:
                if n_windows <= start:
                    continue
                rows = held[name].rows_before(n_windows * context)
                if job_name in stores:
                    if job_name not in stats:
                        stats[job_name] = FeatureStats(held[name].width, config)
                    stats[job_name].add_entries(held[name].chunk.token_index[:rows], *held[name].entries(rows, True))
                elif fed_at[job_name] == position:  # both sides encoded: the later one feeds the pair
                    _add_pair(sums, job_name, pairs[job_name], held, rows)
            for other in list(held):
                if held_until[other] <= position:
                    del held[other]
        for name, job in stores.items():  # stores whose windows are all read: assembled now, statistics dropped
            if name in stats and job.n_windows <= start + batch_size:
                reader = readers[job.reader]
                reading = readings[reader.reading]._replace(windows=cut[name])
                done[name] = assemble_store(reading, reader.dictionary, stats.pop(name), config)
    missing = [name for name in stores if name not in done]
    if missing:
        raise ValueError(f"stores {missing}: the text yields no tokens to read (all padded or special)")
    return SharedPass(done, {name: PairSums(*parts) for name, parts in sums.items()})


def _check_readings(readings: Mapping[str, Reading]) -> None:
    if not readings:
        raise ValueError("pass at least one reading")
    first = next(iter(readings.values()))
    for reading in readings.values():
        if not torch.equal(reading.windows.input_ids, first.windows.input_ids) or \
                not torch.equal(reading.windows.attention_mask, first.windows.attention_mask) or \
                reading.special_ids != first.special_ids:
            raise ValueError("the readings must share their token windows and skipped special tokens")


def _partners(reader: str, pairs: Mapping[str, PairJob]) -> list[str]:
    """The reader and every reader it is paired with (its codes are kept until they are all encoded)."""
    out = [reader]
    for job in pairs.values():
        if reader in (job.reader_a, job.reader_b):
            out += [job.reader_a, job.reader_b]
    return out


def _stream(reading: Reading, n_windows: int, batch_size: int) -> Iterator[ActivationChunk]:
    """The reading's activations over its first `n_windows` windows, `batch_size` windows per forward."""
    return reading_activations(reading._replace(windows=cut_windows(reading.windows, n_windows)), batch_size,
                               progress=False)


KEEP_DENSE = 0.03
"""A batch's dense codes are kept for dictionaries firing on more of their probe than this (raw neurons: pairs
with them go the dense way); sparser ones keep only their firing entries (a dense product rebuilds them)."""


class _Codes:
    """One batch of a dictionary's codes: encoded once, entries found once for all its jobs; the dense
    [tokens, d_sae] block is dropped for sparse dictionaries (the largest block of a pass otherwise)."""

    def __init__(self, chunk: ActivationChunk, dictionary: Dictionary) -> None:
        self.chunk = chunk
        f = encode(dictionary, chunk.acts).float().cpu()  # [tokens, d_sae]
        self.n_rows, self.width = f.shape
        self.f: Tensor | None = f
        self._entries: dict[bool, tuple[Codes, Tensor]] = {}
        if probe_density(f) <= KEEP_DENSE:
            self.entries(self.n_rows, False)
            if True not in self._entries:
                self.entries(self.n_rows, True)
            self.f = None

    def rows_before(self, token_limit: int) -> int:
        """How many of the batch's tokens have a flat index below `token_limit` (indices ascend)."""
        return int(np.searchsorted(self.chunk.token_index.numpy(), token_limit, side="left"))

    def entries(self, rows: int, positive: bool) -> tuple[Codes, Tensor]:
        """`fired(f[:rows], positive)`, from one search over the whole batch (one for both kinds when no
        activation is negative, as for ReLU dictionaries)."""
        if positive not in self._entries:
            if positive and False in self._entries:
                self._entries[True] = positive_entries(*self._entries[False])
            else:
                self._entries[positive] = fired(self.f, positive=positive)
                if not bool((self.f < 0).any()):
                    self._entries[not positive] = self._entries[positive]
        codes, values = self._entries[positive]
        return (codes, values) if rows == codes.n_rows else first_rows(codes, values, rows)

    def dense(self, rows: int) -> Tensor:
        """f[:rows], rebuilt from the non-zero entries when the block was dropped (the same values)."""
        if self.f is not None:
            return self.f[:rows]
        codes, values = self.entries(rows, False)
        f = torch.zeros(rows, self.width)
        f[codes.rows, codes.cols] = values
        return f

    def density(self, rows: int) -> float:
        """`universality.probe_density(f[:rows])` (the share of non-zeros in the first PROBE_ROWS tokens)."""
        if self.f is not None:
            return probe_density(self.f[:rows])
        probe = min(PROBE_ROWS, rows)
        count = int(np.searchsorted(self.entries(rows, False)[0].rows.numpy(), probe, side="left"))
        return count / max(probe * self.width, 1)


def _add_pair(sums: dict[str, list[Any]], name: str, job: PairJob, held: dict[str, _Codes], rows: int) -> None:
    """Feed a pair job the first `rows` tokens of both sides' codes (dense or sparse as `update` would)."""
    side_a, side_b = held[job.reader_a], held[job.reader_b]
    if name not in sums:
        sums[name] = [CoactivationSums(side_a.width, side_b.width, job.method),
                      torch.zeros(side_a.width), torch.zeros(side_b.width)]
    pair, fires_a, fires_b = sums[name]
    dense = job.method == "dense" or (job.method == "auto"
                                      and side_a.density(rows) * side_b.density(rows) > DENSE_ABOVE)
    if dense:
        f_a, f_b = side_a.dense(rows), side_b.dense(rows)
        pair.update(f_a, f_b)
        fires_a += (f_a != 0).sum(0)
        fires_b += (f_b != 0).sum(0)
        return
    entries_a, entries_b = side_a.entries(rows, False), side_b.entries(rows, False)
    pair.add_entries(entries_a, entries_b)
    fires_a += torch.bincount(entries_a[0].cols, minlength=side_a.width)
    fires_b += torch.bincount(entries_b[0].cols, minlength=side_b.width)
