"""Token counts and prices: estimating a batch of prompts before sending it, and tallying what a run spent.

Input tokens are counted by a tokenizer when one is given, else by the rule of thumb of about four
characters per token (English prose and code; other scripts take more tokens per character, so treat the
heuristic as rough). Output tokens are bounded by each prompt's max_tokens. Prices are the caller's, or
a small table of list prices that says when it was written: check the provider's page before trusting it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from saekit.errors import InputError
from saekit.llm.client import Completion, CostEstimate, Prompt

CHARS_PER_TOKEN = 4
"""The heuristic's characters per token."""

LIST_PRICES_DATE = "2025-11"
"""When the list prices below were copied from the providers' pricing pages."""


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens, input and output."""

    input_per_million: float
    """Price of a million prompt tokens."""
    output_per_million: float
    """Price of a million answer tokens."""
    source: str = "prices given by the caller"
    """Where the prices come from (said in estimates)."""

    def __post_init__(self) -> None:
        if self.input_per_million < 0 or self.output_per_million < 0:
            raise InputError(f"Prices: per-million prices must be ≥ 0, got {self.input_per_million}, "
                             f"{self.output_per_million}")

    def dollars(self, input_tokens: int, output_tokens: int) -> float:
        """The price of these token counts."""
        return (input_tokens * self.input_per_million + output_tokens * self.output_per_million) / 1e6


def _list(input_per_million: float, output_per_million: float) -> Prices:
    return Prices(input_per_million, output_per_million, f"list price as of {LIST_PRICES_DATE}")


LIST_PRICES: dict[str, Prices] = {
    "claude-opus-4-5": _list(5.0, 25.0),
    "claude-opus-4-1": _list(15.0, 75.0),
    "claude-sonnet-4-5": _list(3.0, 15.0),
    "claude-sonnet-4": _list(3.0, 15.0),
    "claude-haiku-4-5": _list(1.0, 5.0),
    "claude-3-5-haiku": _list(0.8, 4.0),
    "gpt-4.1": _list(2.0, 8.0),
    "gpt-4.1-mini": _list(0.4, 1.6),
    "gpt-4.1-nano": _list(0.1, 0.4),
    "gpt-4o": _list(2.5, 10.0),
    "gpt-4o-mini": _list(0.15, 0.6),
}
"""A few models' list prices, keyed by name without a date suffix."""

_DATE_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest)$")


def list_prices(model: str) -> Prices | None:
    """The table's prices for `model` (a dated name such as claude-sonnet-4-5-20250929 finds its base name);
    None for a model not in the table."""
    return LIST_PRICES.get(model) or LIST_PRICES.get(_DATE_SUFFIX.sub("", model))


Tokenizer = Any
"""A function text → token count, or an object with .encode(text) returning the tokens (a Hugging Face tokenizer)."""


def token_counter(tokenizer: Tokenizer | None) -> Callable[[str], int]:
    """text → token count: the tokenizer's, or ceil(characters / CHARS_PER_TOKEN) without one."""
    if tokenizer is None:
        return lambda text: math.ceil(len(text) / CHARS_PER_TOKEN)
    if hasattr(tokenizer, "encode"):
        return lambda text: len(tokenizer.encode(text))
    if callable(tokenizer):
        return tokenizer
    raise InputError(f"tokenizer must be a function text → count or have .encode(text), got {type(tokenizer)}")


def estimate_cost(prompts: Sequence[Prompt], prices: Prices | None, tokenizer: Tokenizer | None = None,
                  cached_prompts: int = 0) -> CostEstimate:
    """What sending `prompts` costs at most: input tokens counted (or estimated) over the system prompt and
    every message, output tokens at each prompt's max_tokens. Nothing is sent."""
    count = token_counter(tokenizer)
    input_tokens = sum(count(text) for prompt in prompts for text in prompt.texts() if text)
    max_output_tokens = sum(prompt.max_tokens for prompt in prompts)
    counted = "tokenizer" if tokenizer is not None else f"~{CHARS_PER_TOKEN} characters per token"
    priced = "no known prices" if prices is None else prices.source
    return CostEstimate(
        prompts=len(prompts), input_tokens=input_tokens, max_output_tokens=max_output_tokens,
        dollars=None if prices is None else prices.dollars(input_tokens, max_output_tokens),
        method=f"input tokens by {counted}, output tokens at max_tokens, {priced}", cached_prompts=cached_prompts)


@dataclass(frozen=True)
class Tally:
    """What a run's completions cost: cached ones are counted apart and cost nothing."""

    completions: int
    """Completions in the run."""
    cached: int
    """Of which read from a cache (free)."""
    input_tokens: int
    """Prompt tokens billed (sent completions only)."""
    output_tokens: int
    """Answer tokens billed (sent completions only)."""
    dollars: float | None
    """Price of the billed tokens; None when some sent completion's model has no known price."""


def tally(completions: Sequence[Completion], prices: Prices | None = None) -> Tally:
    """Sum what `completions` cost at `prices` (default: the list price of each completion's model)."""
    sent = [c for c in completions if not c.cached]
    dollars: float | None = 0.0
    for completion in sent:
        price = prices or list_prices(completion.model)
        if price is None:
            dollars = None
            break
        dollars += price.dollars(completion.input_tokens, completion.output_tokens)
    return Tally(completions=len(completions), cached=len(completions) - len(sent),
                 input_tokens=sum(c.input_tokens for c in sent), output_tokens=sum(c.output_tokens for c in sent),
                 dollars=dollars)
