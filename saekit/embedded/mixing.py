"""How many bytes each subset gets: the largest mix under a byte target where no subset passes its cap.

Pure arithmetic over byte counts, plus the two hash rules that make sampling and the held-out split
deterministic (no dependence on filesystem order, hash seeds or what else is installed).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping


def feasible_total(available: Mapping[str, int], caps: Mapping[str, float], target: int) -> int:
    """Largest total X <= target with sum_s min(available_s, cap_s * X) >= X (each subset within its cap)."""
    usable = {s: (available[s], caps.get(s, 0.0)) for s in available if caps.get(s, 0.0) > 0}
    if sum(min(a, c * target) for a, c in usable.values()) >= target:
        return target
    # f(X) = sum_s min(a_s, c_s X) - X is concave with f(0) = 0: walk its breakpoints a_s / c_s to the root.
    saturated, free_caps = 0.0, sum(c for _, c in usable.values())
    for a, c in sorted(usable.values(), key=lambda ac: ac[0] / ac[1]):
        if free_caps < 1:
            root = saturated / (1 - free_caps)
            if root <= a / c:
                return min(target, math.floor(root + 1e-6))
        saturated += a
        free_caps -= c
    return min(target, math.floor(saturated))


def allot_bytes(available: Mapping[str, int], caps: Mapping[str, float], target: int) -> dict[str, int]:
    """Bytes per subset: each takes min(available, cap * total), scaled together to the feasible total."""
    total = feasible_total(available, caps, target)
    wanted = {s: min(available[s], caps.get(s, 0.0) * total) for s in available}
    scale = total / sum(wanted.values()) if sum(wanted.values()) > 0 else 0.0
    return {s: math.floor(w * min(scale, 1.0)) for s, w in wanted.items()}


def shares(sizes: Mapping[str, int]) -> dict[str, float]:
    """Each subset's fraction of the total bytes."""
    total = sum(sizes.values())
    return {s: (b / total if total else 0.0) for s, b in sizes.items()}


def over_cap(sizes: Mapping[str, int], caps: Mapping[str, float]) -> list[str]:
    """Subsets whose share of the total is above their cap."""
    return [s for s, share in shares(sizes).items() if share > caps.get(s, 0.0) + 1e-12]


def _unit_hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()[:8], "big")


def sampling_key(seed: int, name: str) -> int:
    """A document's place in the seeded sampling order (stable across machines, runs, hash seeds)."""
    return _unit_hash("sample", str(seed), name)


def is_heldout(name: str, fraction: float) -> bool:
    """Whether a document is in the held-out split: a hash of its name only, so the split never shifts."""
    return _unit_hash("heldout", name) < fraction * 2**64


def seeded_order(names: Iterable[str], seed: int) -> list[str]:
    """Names sorted by their seeded sampling key (ties broken by name)."""
    return sorted(names, key=lambda n: (sampling_key(seed, n), n))
