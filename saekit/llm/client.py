"""What every language-model client speaks: prompts in, completions out, a cost estimate before sending.

`LLMClient` is the protocol the automated-interpretability code calls; `AnthropicClient`,
`OpenAICompatibleClient` and `CachedClient` implement it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from saekit.errors import InputError

Role = Literal["user", "assistant"]
ROLES: tuple[str, ...] = ("user", "assistant")


@dataclass(frozen=True)
class Prompt:
    """One request: a system text and a conversation; the model answers the last message."""

    system: str
    """Instructions sent as the system prompt ("" sends none)."""
    messages: tuple[tuple[Role, str], ...]
    """(role, text) pairs, role "user" or "assistant"; the first is the user's. A last "assistant" message is a
    prefill the answer continues (Anthropic; OpenAI-compatible servers may not support it)."""
    max_tokens: int
    """Most tokens the answer may have (also the estimate's output-token bound)."""
    temperature: float = 0.0
    """Sampling temperature; 0 asks for the most likely answer, as the interpretability scores want."""

    def __post_init__(self) -> None:
        messages = tuple(tuple(message) for message in self.messages)
        object.__setattr__(self, "messages", messages)
        if not isinstance(self.system, str):
            raise InputError(f"Prompt: system must be a str, not {type(self.system).__name__}")
        if not messages:
            raise InputError("Prompt: messages is empty; give at least one ('user', text) pair")
        for message in messages:
            if len(message) != 2 or message[0] not in ROLES or not isinstance(message[1], str):
                raise InputError(f"Prompt: each message must be (role, text) with role in {ROLES}, got {message!r}")
        if messages[0][0] != "user":
            raise InputError("Prompt: the first message must be the user's; put instructions in system")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InputError(f"Prompt: max_tokens must be an int ≥ 1, got {self.max_tokens!r}")
        if not 0.0 <= self.temperature <= 2.0:
            raise InputError(f"Prompt: temperature must be in [0, 2], got {self.temperature}")

    @classmethod
    def of(cls, user: str, *, system: str = "", max_tokens: int, temperature: float = 0.0) -> Prompt:
        """A one-message prompt: `user` as the only message."""
        return cls(system=system, messages=(("user", user),), max_tokens=max_tokens, temperature=temperature)

    def texts(self) -> list[str]:
        """Every text sent: the system prompt and each message."""
        return [self.system, *(text for _, text in self.messages)]


@dataclass(frozen=True)
class Completion:
    """One answer, with the token counts the server reported."""

    text: str
    """The answer's text (text blocks joined; "" when the server returned none)."""
    input_tokens: int
    """Prompt tokens the server counted (0 when it reported no usage)."""
    output_tokens: int
    """Answer tokens the server counted (0 when it reported no usage)."""
    cached: bool
    """True when read from a response cache instead of sent: it cost nothing this time."""
    model: str
    """The model that answered, as the server names it."""
    stop_reason: str | None = None
    """Why the answer ended, as the server says ("end_turn"/"stop", "max_tokens"/"length", ...)."""


@dataclass(frozen=True)
class CostEstimate:
    """What sending some prompts would cost, worked out before anything is sent."""

    prompts: int
    """Prompts that would be sent (cached ones excluded)."""
    input_tokens: int
    """Estimated prompt tokens over those prompts."""
    max_output_tokens: int
    """Sum of their max_tokens: an upper bound on the answers' tokens."""
    dollars: float | None
    """Upper-bound price in US dollars at the prices used; None when the model's prices are unknown."""
    method: str
    """How the numbers were estimated (token heuristic or tokenizer, and where the prices came from)."""
    cached_prompts: int = 0
    """Prompts a response cache already answers (not counted above)."""

    def __str__(self) -> str:
        dollars = "unknown price" if self.dollars is None else f"at most ${self.dollars:,.4f}"
        cached = f" ({self.cached_prompts} more cached)" if self.cached_prompts else ""
        return (f"{self.prompts} prompts{cached}: ~{self.input_tokens:,} input tokens, at most "
                f"{self.max_output_tokens:,} output tokens, {dollars}; {self.method}")


OnCompletion = Callable[[int, Completion], None]
"""Called with (index in the prompts, completion) as each answer arrives, in the caller's thread."""


@runtime_checkable
class LLMClient(Protocol):
    """Anything that answers prompts: a server's client, or a cache around one."""

    provider: str
    """Who serves the model ("anthropic", "openai", ...): part of a cached response's key."""
    model: str
    """The model's name as the provider knows it."""

    def complete(self, prompts: Sequence[Prompt], progress: bool = True,
                 on_completion: OnCompletion | None = None) -> list[Completion]:
        """One completion per prompt, in the prompts' order; `on_completion` sees each as it arrives."""
        ...

    def estimate(self, prompts: Sequence[Prompt]) -> CostEstimate:
        """What `complete(prompts)` would cost, without sending anything."""
        ...
