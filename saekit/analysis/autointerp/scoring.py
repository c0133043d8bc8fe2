"""Scores of explanations on held-out excerpts: the paper's simulation score and delphi-style detection and fuzzing.

- simulation: the simulator predicts each token's level from the explanation alone; the score is the
  correlation of the predictions with the true activations over every test token (the paper's "all at once"
  scoring: top, interval and random excerpts pooled). 0 where either side is constant.
- detection: for each test excerpt, would the unit respond in it? Balanced accuracy against whether it does
  (some token at level ≥ 1 of its scale).
- fuzzing: each responding test excerpt twice, once with the tokens where the unit responds marked and once
  with as many other tokens marked (chosen with a seeded generator); are the marks right? Balanced accuracy.

Balanced accuracy is the mean of the true-positive and true-negative rates (0.5: chance); NaN where the test
excerpts hold only one class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import pandas as pd

from saekit.analysis.autointerp.explanations import Explainer, Explanation, Judge, JudgeItem, Simulator
from saekit.analysis.autointerp.records import UnitRecords
from saekit.errors import InputError

if TYPE_CHECKING:
    from saekit.llm.client import CostEstimate

ScoreName = Literal["simulation", "detection", "fuzzing", "embedding"]


class Scorer(Protocol):
    name: ScoreName
    by: str
    """Who scores (the simulator's or judge's name): every score row says it."""

    def estimate(self, units: Sequence[UnitRecords]) -> CostEstimate | None:
        """What scoring these units would cost, before anything is sent (None: nothing is sent)."""

    def score_all(self, units: Sequence[UnitRecords], explanations: Sequence[Explanation],
                  progress: bool = True) -> list[float]: ...


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-length vectors; 0 where either is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def balanced_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean of the true-positive and true-negative rates; NaN without both classes."""
    predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        return float("nan")
    return float((predicted[truth].mean() + (~predicted[~truth]).mean()) / 2)


@dataclass(frozen=True)
class SimulationScorer:
    """The paper's simulation score, predictions from `simulator`."""

    simulator: Simulator
    name: ScoreName = "simulation"

    @property
    def by(self) -> str:
        return self.simulator.name

    def estimate(self, units: Sequence[UnitRecords]) -> CostEstimate | None:
        return self.simulator.estimate([r for u in units for r in u.test])

    def score_all(self, units: Sequence[UnitRecords], explanations: Sequence[Explanation],
                  progress: bool = True) -> list[float]:
        jobs = [(e, r) for u, e in zip(units, explanations) for r in u.test]
        predicted = iter(self.simulator.simulate_all(jobs, progress=progress))
        scores = []
        for unit in units:
            guesses = [next(predicted) for _ in unit.test]
            truth = np.concatenate([r.activations for r in unit.test]) if unit.test else np.zeros(0)
            scores.append(correlation(np.concatenate(guesses), truth) if guesses else float("nan"))
        return scores


@dataclass(frozen=True)
class DetectionScorer:
    """Detection: does the unit respond in the excerpt? Answers from `judge`."""

    judge: Judge
    name: ScoreName = "detection"

    @property
    def by(self) -> str:
        return self.judge.name

    def estimate(self, units: Sequence[UnitRecords]) -> CostEstimate | None:
        return self.judge.estimate([[JudgeItem(r.tokens) for r in u.test] for u in units], "detect")

    def score_all(self, units: Sequence[UnitRecords], explanations: Sequence[Explanation],
                  progress: bool = True) -> list[float]:
        jobs = [(e, [JudgeItem(r.tokens) for r in u.test]) for u, e in zip(units, explanations)]
        answers = self.judge.judge_all(jobs, "detect", progress=progress)
        return [balanced_accuracy(a, [u.firing(r) for r in u.test]) for u, a in zip(units, answers)]


@dataclass(frozen=True)
class FuzzingScorer:
    """Fuzzing: are the marked tokens where the unit responds? Answers from `judge`."""

    judge: Judge
    seed: int = 0
    """Seed of the wrongly marked tokens."""
    name: ScoreName = "fuzzing"

    @property
    def by(self) -> str:
        return self.judge.name

    def items(self, unit: UnitRecords) -> tuple[list[JudgeItem], np.ndarray]:
        """The unit's fuzzing excerpts (each responding test excerpt marked rightly, then wrongly) and which are
        right."""
        rng = np.random.default_rng([self.seed, unit.unit])
        items, right = [], []
        for record in unit.test:
            on = record.levels(unit.max_activation) >= 1
            off = np.flatnonzero(~on)
            if not on.any() or not len(off):
                continue
            wrong = np.zeros(len(on), dtype=bool)
            wrong[rng.choice(off, size=min(int(on.sum()), len(off)), replace=False)] = True
            items += [JudgeItem(record.tokens, on), JudgeItem(record.tokens, wrong)]
            right += [True, False]
        return items, np.asarray(right, dtype=bool)

    def estimate(self, units: Sequence[UnitRecords]) -> CostEstimate | None:
        return self.judge.estimate([self.items(u)[0] for u in units], "fuzz")

    def score_all(self, units: Sequence[UnitRecords], explanations: Sequence[Explanation],
                  progress: bool = True) -> list[float]:
        built = [self.items(u) for u in units]
        answers = self.judge.judge_all([(e, items) for e, (items, _) in zip(explanations, built)], "fuzz",
                                       progress=progress)
        return [balanced_accuracy(a, right) for a, (_, right) in zip(answers, built)]


def estimate_cost(units: Sequence[UnitRecords], explainer: Explainer, scorers: Sequence[Scorer] = ()) -> pd.DataFrame:
    """What explaining and scoring these units would cost, before anything is sent: one row per step (explain,
    then each scorer), with its prompts, estimated input tokens, output-token bound, dollars (None: unknown
    price or nothing sent) and how it was estimated."""
    steps = [("explain", explainer.name, explainer.estimate(units))]
    steps += [(s.name, s.by, s.estimate(units)) for s in scorers]
    rows = []
    for step, by, cost in steps:
        rows.append({"step": step, "by": by, "prompts": cost.prompts if cost else 0,
                     "input_tokens": cost.input_tokens if cost else 0,
                     "max_output_tokens": cost.max_output_tokens if cost else 0,
                     "dollars": cost.dollars if cost else 0.0,
                     "method": cost.method if cost else "offline: nothing is sent"})
    return pd.DataFrame(rows)


def score(units: Sequence[UnitRecords], explanations: Sequence[Explanation], scorer: Scorer,
          progress: bool = True) -> pd.DataFrame:
    """One row per unit: unit, basis, explainer, scorer (the score's name), by (who scored), score."""
    if len(units) != len(explanations):
        raise InputError(f"{len(units)} units and {len(explanations)} explanations: give one explanation per unit")
    mismatched = [(u.unit, e.unit) for u, e in zip(units, explanations) if u.unit != e.unit or u.basis != e.basis]
    if mismatched:
        raise InputError(f"explanations out of order: unit {mismatched[0][0]} got unit {mismatched[0][1]}'s; pass "
                         "them in the order `explain` returned them")
    scores = scorer.score_all(units, explanations, progress=progress)
    return pd.DataFrame({"unit": [u.unit for u in units], "basis": [u.basis for u in units],
                         "explainer": [e.explainer for e in explanations], "scorer": scorer.name, "by": scorer.by,
                         "score": np.asarray(scores, dtype=np.float64)})
