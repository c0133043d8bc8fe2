"""The texts a language model reads to explain, simulate and judge a unit, and the parsing of its replies.

Corpus text reaches a prompt only through `prompt_token`: control characters become visible escapes and the
highlight marks cannot be forged by the text itself, so an excerpt can neither break the prompt's layout nor pass
for one of its marks. Each prompt is bounded in size (`PromptLimits`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from saekit.analysis.autointerp.records import LEVELS, ActivationRecord, UnitRecords

OPEN, CLOSE = "<<", ">>"
"""Marks around a highlighted token."""

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "<": "\\<", ">": "\\>"}


def prompt_token(token: str) -> str:
    """A token as it appears in a prompt: backslash, newline, tab, CR and angle brackets escaped, other control
    characters as \\uXXXX."""
    out = []
    for ch in token:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def quoted(token: str) -> str:
    """A token between double quotes, as the prompts list them (its own quotes escaped)."""
    return '"' + prompt_token(token).replace('"', '\\"') + '"'


def excerpt_text(tokens: Sequence[str], marked: Sequence[bool] | None = None) -> str:
    """The excerpt's text, the `marked` tokens between OPEN and CLOSE."""
    if marked is None:
        return "".join(prompt_token(t) for t in tokens)
    return "".join(f"{OPEN}{prompt_token(t)}{CLOSE}" if m else prompt_token(t) for t, m in zip(tokens, marked))


@dataclass(frozen=True)
class PromptLimits:
    """Bounds on what one prompt holds."""

    max_examples: int = 12
    """Excerpts shown to the explainer."""
    max_chars: int = 12_000
    """Characters of excerpts per prompt; excerpts beyond it are left out (at least one is always kept)."""
    judge_batch: int = 8
    """Excerpts per detection or fuzzing prompt."""
    explanation_tokens: int = 80
    """Reply budget of an explanation."""

    def __post_init__(self) -> None:
        for name in ("max_examples", "max_chars", "judge_batch", "explanation_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"PromptLimits.{name} must be >= 1 (got {getattr(self, name)})")


# --- explanation -------------------------------------------------------------------------------------

EXPLAIN_SYSTEM = (
    "You are helping to interpret a unit inside a language model. The unit reads text one token at a time and "
    "responds to some pattern. You will see excerpts of text; in each, the tokens where the unit responds are "
    f"marked {OPEN}like this{CLOSE}, and a list gives its activation on those tokens on a scale from 0 (silent) "
    f"to {LEVELS} (its strongest). Work out what the unit responds to: particular tokens, a kind of text, or a "
    "context. Answer with one short phrase, specific enough that someone could predict the activations from it, "
    "on one line starting with 'Explanation:'."
)


def explain_prompt_text(records: UnitRecords, limits: PromptLimits) -> str:
    """The user turn of an explanation prompt: the unit's explanation excerpts, strongest first, size-bounded."""
    shown = sorted(records.explain, key=lambda r: -float(r.activations.max(initial=0)))[: limits.max_examples]
    parts, used = [], 0
    for i, record in enumerate(shown, 1):
        levels = record.levels(records.max_activation)
        marked = levels >= 1
        listed = ", ".join(f"{quoted(t)} {int(v)}" for t, v, m in zip(record.tokens, levels, marked) if m)
        part = f"Excerpt {i}: {excerpt_text(record.tokens, marked)}\nActivations: {listed or 'none'}\n"
        if parts and used + len(part) > limits.max_chars:
            break
        parts.append(part)
        used += len(part)
    return "\n".join(parts) + "\nWhat does the unit respond to?"


_EXPLANATION = re.compile(r"explanation\s*:\s*(.+)", re.IGNORECASE)


def parse_explanation(reply: str) -> str:
    """The phrase after 'Explanation:' (else the reply's first non-empty line), stripped of quotes."""
    match = _EXPLANATION.search(reply)
    line = match.group(1) if match else next((ln for ln in reply.splitlines() if ln.strip()), "")
    return line.strip().strip("\"'").strip()


# --- simulation --------------------------------------------------------------------------------------

SIMULATE_SYSTEM = (
    "You predict how a unit inside a language model responds to text, from an explanation of what it responds "
    f"to. For every numbered token, give the unit's activation on the scale 0 (silent) to {LEVELS} (strongest). "
    "Most tokens of most texts get 0. Reply with one line per token: its number, a tab, the activation. "
    "Nothing else."
)


def simulate_prompt_text(explanation: str, record: ActivationRecord) -> str:
    """The user turn of a simulation prompt: the explanation and the excerpt's tokens, numbered."""
    lines = "\n".join(f"{i}\t{quoted(t)}" for i, t in enumerate(record.tokens))
    return f"Explanation: {explanation}\n\nTokens:\n{lines}"


_LINE = re.compile(r'^\s*(\d+)\s*[\t:,.)\-]?\s*(?:"(?:\\.|[^"\\])*")?\s*[\t:,=\-]?\s*(\d+(?:\.\d+)?)',
                   re.MULTILINE)


def parse_simulation(reply: str, n_tokens: int) -> np.ndarray:
    """Predicted levels [n_tokens] from 'number<TAB>activation' lines; tokens missing from the reply count as 0,
    values are clipped to 0..LEVELS."""
    out = np.zeros(n_tokens, dtype=np.float64)
    for index, value in _LINE.findall(reply):
        i = int(index)
        if 0 <= i < n_tokens:
            out[i] = min(max(float(value), 0.0), LEVELS)
    return out


# --- detection and fuzzing ---------------------------------------------------------------------------

DETECT_SYSTEM = (
    "You check an explanation of a unit inside a language model. For each numbered excerpt, decide whether the "
    "unit, as explained, would respond somewhere in it. Reply with one line per excerpt: its number, a tab, then "
    "yes or no. Nothing else."
)

FUZZ_SYSTEM = (
    "You check an explanation of a unit inside a language model. In each numbered excerpt some tokens are marked "
    f"{OPEN}like this{CLOSE}. Decide whether the marked tokens are where the unit, as explained, responds. Reply "
    "with one line per excerpt: its number, a tab, then yes or no. Nothing else."
)


def judge_prompt_text(explanation: str, excerpts: Sequence[str]) -> str:
    """The user turn of a detection or fuzzing prompt: the explanation and the excerpts, numbered from 1."""
    listed = "\n".join(f"{i}\t{text}" for i, text in enumerate(excerpts, 1))
    return f"Explanation: {explanation}\n\nExcerpts:\n{listed}"


_ANSWER = re.compile(r"^\s*(\d+)\s*[\t:,.)\-]?\s*(yes|no|true|false)\b", re.IGNORECASE | re.MULTILINE)


def parse_judgements(reply: str, n: int) -> np.ndarray:
    """Yes/no answers [n] as booleans; an excerpt the reply skips counts as no."""
    out = np.zeros(n, dtype=bool)
    for index, word in _ANSWER.findall(reply):
        i = int(index) - 1
        if 0 <= i < n:
            out[i] = word.lower() in ("yes", "true")
    return out
