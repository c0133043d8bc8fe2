"""The language model a notebook uses, named by the environment, so the same cells run offline, against a
provider, or from recorded answers:

- `ANTHROPIC_API_KEY` set: Anthropic's Messages API;
- else `OPENAI_BASE_URL` or `OPENAI_API_KEY` set: OpenAI, or any compatible server (vLLM, llama.cpp, Ollama);
- `SAEKIT_AUTOINTERP_MODEL`: the model's name (defaults: claude-haiku-4-5; gpt-4.1-mini on OpenAI's own API;
  a compatible server needs it named);
- `SAEKIT_AUTOINTERP_REPLAY=anthropic|openai`: answers recorded earlier in the cache folder only, no network and
  no key (a teaching session replaying what its teacher ran).

Nothing set: None, and the notebook runs its offline baseline alone."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from saekit.errors import InputError
from saekit.llm.cache import CachedClient
from saekit.llm.client import Completion, CostEstimate, LLMClient, OnCompletion, Prompt
from saekit.llm.pricing import estimate_cost, list_prices

MODEL_VARIABLE = "SAEKIT_AUTOINTERP_MODEL"
REPLAY_VARIABLE = "SAEKIT_AUTOINTERP_REPLAY"
DEFAULT_MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-4.1-mini"}


class RecordedOnly:
    """Stands for a provider's model in replay mode: it names the model the answers were recorded from and sends
    nothing (a prompt without a recorded answer is an error, raised by the cache before this is reached)."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider, self.model = provider, model

    def complete(self, prompts: Sequence[Prompt], progress: bool = True,
                 on_completion: OnCompletion | None = None) -> list[Completion]:
        raise InputError(f"{self.provider}:{self.model} is replayed from recorded answers only; unset "
                         f"{REPLAY_VARIABLE} and set a key to send prompts")

    def estimate(self, prompts: Sequence[Prompt]) -> CostEstimate:
        return estimate_cost(prompts, list_prices(self.model))


def client_from_environment(cache: str | Path | None = None) -> LLMClient | None:
    """The client the environment names (see the module), answers cached in `cache` when given (replay needs
    it); None when the environment names none."""
    model = os.environ.get(MODEL_VARIABLE)
    replay = os.environ.get(REPLAY_VARIABLE)
    if replay:
        if replay not in DEFAULT_MODELS:
            raise InputError(f"{REPLAY_VARIABLE}={replay!r}: name the provider the answers came from, "
                             f"{' or '.join(DEFAULT_MODELS)}")
        if cache is None:
            raise InputError(f"{REPLAY_VARIABLE} replays a cache folder: pass cache=the folder they were recorded in")
        return CachedClient(RecordedOnly(replay, model or DEFAULT_MODELS[replay]), cache, mode="replay")
    client: LLMClient
    if os.environ.get("ANTHROPIC_API_KEY"):
        from saekit.llm.anthropic_client import AnthropicClient

        client = AnthropicClient(model or DEFAULT_MODELS["anthropic"])
    elif os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY"):
        from saekit.llm.openai_client import OpenAICompatibleClient

        if not model and os.environ.get("OPENAI_BASE_URL"):
            raise InputError(f"OPENAI_BASE_URL points at a server: name its model in {MODEL_VARIABLE}")
        client = OpenAICompatibleClient(model or DEFAULT_MODELS["openai"])
    else:
        return None
    return CachedClient(client, cache) if cache is not None else client
