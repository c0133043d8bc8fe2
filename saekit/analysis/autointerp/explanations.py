"""Explanations and the three roles around them: an explainer writes one from a unit's excerpts, a simulator
predicts activations from it, a judge answers yes/no questions about excerpts from it. Each role is a small
protocol, filled by the offline n-gram baseline (`baseline`) or a language model (`language_model`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import pandas as pd

from saekit.analysis.autointerp.records import ActivationRecord, UnitRecords

if TYPE_CHECKING:
    from saekit.llm.client import CostEstimate


@dataclass(frozen=True)
class Explanation:
    """What an explainer said about one unit."""

    unit: int
    basis: str
    text: str
    explainer: str
    """Who wrote it (a model name, or the n-gram baseline): every score names it."""
    ngrams: tuple[tuple[tuple[str, ...], float], ...] = ()
    """The n-gram baseline's table, (tokens ending at the current one, level): what its simulator applies."""


@dataclass(frozen=True)
class JudgeItem:
    """One excerpt put to a judge: its tokens and, for fuzzing, which are marked."""

    tokens: tuple[str, ...]
    marked: np.ndarray | None = None  # [len(tokens)] bool


JudgeMode = Literal["detect", "fuzz"]


class Explainer(Protocol):
    name: str

    def estimate(self, units: Sequence[UnitRecords]) -> CostEstimate | None:
        """What explaining these units would cost, before anything is sent (None: nothing is sent)."""

    def explain_all(self, units: Sequence[UnitRecords], progress: bool = True) -> list[Explanation]:
        """One explanation per unit, from its explanation excerpts."""


class Simulator(Protocol):
    name: str

    def estimate(self, records: Sequence[ActivationRecord]) -> CostEstimate | None:
        """What simulating these excerpts would cost (None: nothing is sent)."""

    def simulate_all(self, jobs: Sequence[tuple[Explanation, ActivationRecord]],
                     progress: bool = True) -> list[np.ndarray]:
        """Predicted levels [len(record.tokens)] on the 0..LEVELS scale, per (explanation, excerpt)."""


class Judge(Protocol):
    name: str

    def estimate(self, items: Sequence[Sequence[JudgeItem]], mode: JudgeMode) -> CostEstimate | None:
        """What judging these excerpts (per unit) would cost (None: nothing is sent)."""

    def judge_all(self, jobs: Sequence[tuple[Explanation, Sequence[JudgeItem]]], mode: JudgeMode,
                  progress: bool = True) -> list[np.ndarray]:
        """Yes/no [len(items)] per (explanation, excerpts): detection (would the unit respond here?) or fuzzing
        (are the marked tokens where it responds?)."""


def explain(units: Sequence[UnitRecords], explainer: Explainer, progress: bool = True) -> list[Explanation]:
    """Each unit's explanation from its explanation excerpts (see `unit_records`)."""
    return explainer.explain_all(units, progress=progress)


def explanations_table(explanations: Sequence[Explanation]) -> pd.DataFrame:
    """One row per explanation: unit, basis, explainer, text."""
    return pd.DataFrame({"unit": [e.unit for e in explanations], "basis": [e.basis for e in explanations],
                         "explainer": [e.explainer for e in explanations],
                         "explanation": [e.text for e in explanations]})
