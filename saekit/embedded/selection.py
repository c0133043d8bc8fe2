"""Choosing corpus documents: read candidates lazily, in seeded order, until each subset's bytes are filled.

Candidates are cheap (a name, a size estimate, a loader). Subsets are read only as far as their byte
allotment needs, so a 4 MB corpus does not read 300 MB of installed code. When a subset runs out,
its true size replaces the estimate and the allotments are recomputed, until nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from tqdm.auto import tqdm

from saekit.embedded.documents import Document, NoiseLimits, noise_reason, sha256_text, utf8_size
from saekit.embedded.mixing import allot_bytes, over_cap, sampling_key

# Stop filling a subset after this many documents in a row that do not fit its remaining bytes.
_MAX_MISSES = 64


class Candidate(NamedTuple):
    """A possible source of documents, not yet read: its subset, name, size estimate and loader."""

    subset: str
    name: str
    size: int
    load: Callable[[], list[Document]]


class Accepted(NamedTuple):
    """A document that passed the noise and duplicate filters, with its identity."""

    doc: Document
    bytes: int
    sha256: str


@dataclass
class SubsetPool:
    """One subset's candidates in seeded order, read on demand; accepted documents are kept in that order."""

    candidates: list[Candidate]
    accepted: list[Accepted] = field(default_factory=list)
    cursor: int = 0

    @property
    def exhausted(self) -> bool:
        return self.cursor >= len(self.candidates)

    @property
    def accepted_bytes(self) -> int:
        return sum(a.bytes for a in self.accepted)

    def read_next(self, limits: NoiseLimits, seen: set[str]) -> list[Accepted]:
        """Read the next candidate; keep its documents that are neither noise nor already seen."""
        candidate = self.candidates[self.cursor]
        self.cursor += 1
        new = []
        for doc in candidate.load():
            digest = sha256_text(doc.text)
            if noise_reason(doc.text, limits) is None and digest not in seen:
                seen.add(digest)
                new.append(Accepted(doc, utf8_size(doc.text), digest))
        self.accepted.extend(new)
        return new

    def iter_accepted(self, limits: NoiseLimits, seen: set[str]) -> Iterator[Accepted]:
        """Accepted documents in order, reading more candidates when the kept ones run out."""
        i = 0
        while True:
            while i >= len(self.accepted) and not self.exhausted:
                self.read_next(limits, seen)
            if i >= len(self.accepted):
                return
            yield self.accepted[i]
            i += 1


def fill(pool: SubsetPool, budget: int, limits: NoiseLimits, seen: set[str]) -> list[Accepted]:
    """Greedy fill in seeded order: take each document that still fits the budget, skip those that do not."""
    chosen, used, misses = [], 0, 0
    for acc in pool.iter_accepted(limits, seen):
        if budget - used < limits.min_bytes or misses >= _MAX_MISSES:
            break
        if used + acc.bytes <= budget:
            chosen.append(acc)
            used, misses = used + acc.bytes, 0
        else:
            misses += 1
    return chosen


def make_pools(candidates: Iterable[Candidate], seed: int) -> dict[str, SubsetPool]:
    """Candidates grouped by subset (in first-seen subset order), each group in its seeded sampling order."""
    groups: dict[str, list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(c.subset, []).append(c)
    return {
        s: SubsetPool(sorted(cs, key=lambda c: (sampling_key(seed, c.name), c.name)))
        for s, cs in groups.items()
    }


def trim_to_caps(chosen: dict[str, list[Accepted]], caps: Mapping[str, float]) -> dict[str, list[Accepted]]:
    """Drop the last-chosen documents of any subset whose share is still above its cap (filling slack)."""
    chosen = {s: list(docs) for s, docs in chosen.items()}
    while over := over_cap({s: sum(a.bytes for a in docs) for s, docs in chosen.items()}, caps):
        for s in over:
            chosen[s].pop()
    return chosen


def select_documents(
    candidates: Iterable[Candidate],
    caps: Mapping[str, float],
    target_bytes: int,
    seed: int,
    limits: NoiseLimits,
    *,
    progress: bool = True,
) -> dict[str, list[Accepted]]:
    """The corpus documents per subset: a capped, deduplicated, seeded sample of about `target_bytes`."""
    pools = make_pools(candidates, seed)
    estimate = {s: sum(c.size for c in pool.candidates) for s, pool in pools.items()}
    seen: set[str] = set()
    bar = tqdm(total=target_bytes, unit="B", unit_scale=True, desc="corpus", disable=not progress)
    while True:
        budgets = allot_bytes(estimate, caps, target_bytes)
        chosen = {s: fill(pools[s], budgets[s], limits, seen) for s in pools}
        bar.n = min(target_bytes, sum(a.bytes for docs in chosen.values() for a in docs))
        bar.refresh()
        exact = {s: pool.accepted_bytes for s, pool in pools.items() if pool.exhausted}
        if all(estimate[s] == b for s, b in exact.items()):
            break
        estimate.update(exact)
    bar.close()
    return trim_to_caps(chosen, caps)
