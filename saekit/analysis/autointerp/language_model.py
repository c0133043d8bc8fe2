"""A language model as explainer, simulator and judge, through any `saekit.llm` client (Anthropic's Messages API,
an OpenAI-compatible server, or a response cache around either).

Each role builds all its prompts first (`prompts`), so their cost can be estimated before anything is sent
(`estimate`), then sends them together: the client runs them concurrently and keeps their order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from saekit.analysis.autointerp import prompts as P
from saekit.analysis.autointerp.explanations import Explanation, JudgeItem, JudgeMode
from saekit.analysis.autointerp.records import ActivationRecord, UnitRecords

if TYPE_CHECKING:
    from saekit.llm.client import CostEstimate, LLMClient, Prompt

PLACEHOLDER = "x" * 200
"""The explanation an estimate assumes before any is written (about 50 tokens: explanations are one phrase)."""


def client_name(client: LLMClient) -> str:
    """How scores and explanations name a language model: provider:model."""
    return f"{client.provider}:{client.model}"


def _prompt(system: str, user: str, max_tokens: int) -> Prompt:
    from saekit.llm.client import Prompt

    return Prompt.of(user, system=system, max_tokens=max_tokens)


@dataclass(frozen=True)
class LMExplainer:
    """Explanations written by a language model from each unit's explanation excerpts."""

    client: LLMClient
    limits: P.PromptLimits = P.PromptLimits()

    @property
    def name(self) -> str:
        return client_name(self.client)

    def prompts(self, units: Sequence[UnitRecords]) -> list[Prompt]:
        return [_prompt(P.EXPLAIN_SYSTEM, P.explain_prompt_text(u, self.limits), self.limits.explanation_tokens)
                for u in units]

    def estimate(self, units: Sequence[UnitRecords]) -> CostEstimate:
        return self.client.estimate(self.prompts(units))

    def explain_all(self, units: Sequence[UnitRecords], progress: bool = True) -> list[Explanation]:
        replies = self.client.complete(self.prompts(units), progress=progress)
        return [Explanation(u.unit, u.basis, P.parse_explanation(c.text), self.name) for u, c in zip(units, replies)]


@dataclass(frozen=True)
class LMSimulator:
    """Per-token predictions from an explanation, one prompt per excerpt."""

    client: LLMClient
    tokens_per_line: int = 4
    """Reply budget per excerpt token ("12<TAB>3" and a newline)."""

    @property
    def name(self) -> str:
        return client_name(self.client)

    def prompts(self, jobs: Sequence[tuple[str, ActivationRecord]]) -> list[Prompt]:
        return [_prompt(P.SIMULATE_SYSTEM, P.simulate_prompt_text(text, record),
                        self.tokens_per_line * len(record.tokens) + 8) for text, record in jobs]

    def estimate(self, records: Sequence[ActivationRecord]) -> CostEstimate:
        """What simulating these excerpts costs, with a placeholder explanation (none written yet)."""
        return self.client.estimate(self.prompts([(PLACEHOLDER, r) for r in records]))

    def simulate_all(self, jobs: Sequence[tuple[Explanation, ActivationRecord]],
                     progress: bool = True) -> list[np.ndarray]:
        replies = self.client.complete(self.prompts([(e.text, r) for e, r in jobs]), progress=progress)
        return [P.parse_simulation(c.text, len(r.tokens)) for (_, r), c in zip(jobs, replies)]


@dataclass(frozen=True)
class LMJudge:
    """Yes/no answers about excerpts from an explanation, `limits.judge_batch` excerpts per prompt."""

    client: LLMClient
    limits: P.PromptLimits = P.PromptLimits()

    @property
    def name(self) -> str:
        return client_name(self.client)

    def _batches(self, jobs: Sequence[tuple[str, Sequence[JudgeItem]]], mode: JudgeMode) -> list[tuple[int, Prompt]]:
        """(job index, prompt) for each batch of each job's excerpts, in order."""
        system = P.DETECT_SYSTEM if mode == "detect" else P.FUZZ_SYSTEM
        out = []
        for index, (text, items) in enumerate(jobs):
            for start in range(0, len(items), self.limits.judge_batch):
                batch = items[start : start + self.limits.judge_batch]
                excerpts = [P.excerpt_text(i.tokens, None if mode == "detect" else i.marked) for i in batch]
                out.append((index, _prompt(system, P.judge_prompt_text(text, excerpts), 6 * len(batch) + 8)))
        return out

    def estimate(self, items: Sequence[Sequence[JudgeItem]], mode: JudgeMode) -> CostEstimate:
        """What judging these excerpts (per unit) costs, with a placeholder explanation (none written yet)."""
        return self.client.estimate([p for _, p in self._batches([(PLACEHOLDER, i) for i in items], mode)])

    def judge_all(self, jobs: Sequence[tuple[Explanation, Sequence[JudgeItem]]], mode: JudgeMode,
                  progress: bool = True) -> list[np.ndarray]:
        batches = self._batches([(e.text, items) for e, items in jobs], mode)
        replies = self.client.complete([p for _, p in batches], progress=progress)
        answers: list[list[np.ndarray]] = [[] for _ in jobs]
        for (index, _), start, reply in zip(batches, _starts(batches, jobs, self.limits.judge_batch), replies):
            n = min(self.limits.judge_batch, len(jobs[index][1]) - start)
            answers[index].append(P.parse_judgements(reply.text, n))
        return [np.concatenate(a) if a else np.zeros(0, dtype=bool) for a in answers]


def _starts(batches: list[tuple[int, Prompt]], jobs: Sequence[tuple[Explanation, Sequence[JudgeItem]]],
            size: int) -> list[int]:
    """Each batch's first excerpt within its job."""
    seen: dict[int, int] = {}
    out = []
    for index, _ in batches:
        out.append(seen.get(index, 0))
        seen[index] = out[-1] + size
    return out
