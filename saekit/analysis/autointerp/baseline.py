"""The offline baseline: an n-gram explainer and the simulator and judge that apply its table exactly.

No language model: the explanation is the table of token n-grams (the current token, and the tokens before it
up to n) on which the unit responded in its explanation excerpts, each with its mean level there; the simulator
predicts each token's level from the longest n-gram of the table ending at it. It scores how far "the unit fires
on these tokens" goes: a monosemantic token feature scores high, a unit that needs more context than n tokens
scores low. It is the floor a language model's explanation should beat, labelled as such wherever it appears."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from saekit.analysis.autointerp.explanations import Explanation, JudgeItem, JudgeMode
from saekit.analysis.autointerp.prompts import quoted
from saekit.analysis.autointerp.records import ActivationRecord, UnitRecords

NAME = "n-gram baseline (no language model)"


@dataclass(frozen=True)
class NgramExplainer:
    """Explains a unit by the n-grams it responded to: at most `max_entries` of them, longest context `n`."""

    n: int = 2
    """Longest n-gram (1: the current token alone; 2: with the token before it)."""
    max_entries: int = 12
    """Entries in the explanation, by activation mass (the level summed over occurrences)."""
    min_level: float = 1.0
    """Entries with a lower mean level are left out (they would predict silence anyway)."""
    name: str = NAME

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_entries < 1:
            raise ValueError(f"NgramExplainer needs n >= 1 and max_entries >= 1 (got {self.n}, {self.max_entries})")

    def estimate(self, units: Sequence[UnitRecords]) -> None:
        """Nothing is sent: no cost."""
        return None

    def explain_all(self, units: Sequence[UnitRecords], progress: bool = True) -> list[Explanation]:
        return [self.explanation(r) for r in tqdm(units, desc="explain (n-gram)", disable=not progress)]

    def explanation(self, records: UnitRecords) -> Explanation:
        """The unit's table: for each n-gram ending on a token where it responded, its mean level over all the
        n-gram's occurrences in the explanation excerpts (silent ones included)."""
        sums: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])  # n-gram → [level sum, count]
        responded: set[tuple[str, ...]] = set()
        for record in records.explain:
            levels = record.levels(records.max_activation)
            for i, level in enumerate(levels):
                for gram in _grams(record.tokens, i, self.n):
                    sums[gram][0] += float(level)
                    sums[gram][1] += 1.0
                    if level >= 1:
                        responded.add(gram)
        means = {g: sums[g][0] / sums[g][1] for g in responded}
        kept = [g for g in means if means[g] >= self.min_level]
        kept = [g for g in kept if len(g) == 1 or means[g] > means.get(g[1:], 0.0)]  # context that adds something
        kept.sort(key=lambda g: (-sums[g][0], len(g), g))
        table = tuple((g, round(means[g], 3)) for g in kept[: self.max_entries])
        return Explanation(records.unit, records.basis, describe(table), self.name, table)


def _grams(tokens: Sequence[str], i: int, n: int) -> list[tuple[str, ...]]:
    """The n-grams ending at token i, shortest first."""
    return [tuple(tokens[i - k + 1 : i + 1]) for k in range(1, min(n, i + 1) + 1)]


def describe(table: Sequence[tuple[tuple[str, ...], float]]) -> str:
    """The table as an explanation a reader (or a language model) can use."""
    if not table:
        return "no token pattern (n-gram baseline)"
    entries = ", ".join(f"{' '.join(quoted(t) for t in gram)} ({level:.1f})" for gram, level in table)
    return f"responds on the tokens {entries} (n-gram baseline: level out of 10)"


def simulate(table: Sequence[tuple[tuple[str, ...], float]], tokens: Sequence[str]) -> np.ndarray:
    """Levels [len(tokens)] the table predicts: the longest of its n-grams ending at each token, else 0."""
    lookup = dict(table)
    longest = max((len(g) for g, _ in table), default=0)
    out = np.zeros(len(tokens), dtype=np.float64)
    for i in range(len(tokens)):
        for gram in reversed(_grams(tokens, i, longest)):
            if gram in lookup:
                out[i] = lookup[gram]
                break
    return out


@dataclass(frozen=True)
class NgramSimulator:
    """Applies an n-gram explanation's table exactly (only to n-gram baseline explanations)."""

    name: str = NAME

    def estimate(self, records: Sequence[ActivationRecord]) -> None:
        """Nothing is sent: no cost."""
        return None

    def simulate_all(self, jobs: Sequence[tuple[Explanation, ActivationRecord]],
                     progress: bool = True) -> list[np.ndarray]:
        return [simulate(_table(e), r.tokens) for e, r in tqdm(jobs, desc="simulate (n-gram)", disable=not progress)]


@dataclass(frozen=True)
class NgramJudge:
    """Answers from an n-gram table: detection says yes where it predicts level ≥ 1 on some token; fuzzing says
    yes where it predicts level ≥ 1 on every marked token (and something is marked)."""

    name: str = NAME

    def estimate(self, items: Sequence[Sequence[JudgeItem]], mode: JudgeMode) -> None:
        """Nothing is sent: no cost."""
        return None

    def judge_all(self, jobs: Sequence[tuple[Explanation, Sequence[JudgeItem]]], mode: JudgeMode,
                  progress: bool = True) -> list[np.ndarray]:
        out = []
        for explanation, items in tqdm(jobs, desc=f"{mode} (n-gram)", disable=not progress):
            table = _table(explanation)
            answers = []
            for item in items:
                hit = simulate(table, item.tokens) >= 1
                if mode == "detect":
                    answers.append(bool(hit.any()))
                else:
                    marked = np.asarray(item.marked, dtype=bool)
                    answers.append(bool(marked.any() and hit[marked].all()))
            out.append(np.asarray(answers, dtype=bool))
        return out


def _table(explanation: Explanation) -> tuple[tuple[tuple[str, ...], float], ...]:
    if explanation.explainer != NAME:
        raise ValueError(f"the n-gram simulator and judge apply n-gram tables; this explanation is from "
                         f"{explanation.explainer!r}: score it with a language model's simulator or judge")
    return explanation.ngrams
