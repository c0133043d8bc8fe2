"""OpenAI's chat completions, and any server that speaks them (vLLM, llama.cpp's server, Ollama), through
OpenAI's official SDK (`openai`), imported only when a client is made."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

from saekit.errors import InputError
from saekit.llm.client import Completion, Prompt
from saekit.llm.pricing import Prices, Tokenizer
from saekit.llm.remote import RemoteClient
from saekit.llm.retry import RetryPolicy

KEY_VARIABLE = "OPENAI_API_KEY"
BASE_URL_VARIABLE = "OPENAI_BASE_URL"
OPENAI_HOST = "api.openai.com"
PLACEHOLDER_KEY = "no-key-needed"
"""Sent to a local server when no key is given (the SDK insists on one; such servers ignore it)."""


def _sdk() -> Any:
    try:
        import openai
    except ImportError as error:
        raise ImportError("OpenAICompatibleClient needs OpenAI's SDK: pip install openai "
                          "(or pip install 'saekit[autointerp]')") from error
    return openai


class OpenAICompatibleClient(RemoteClient):
    """Sends prompts to a chat-completions endpoint (`client.chat.completions.create`), several at once.

    `base_url` (or $OPENAI_BASE_URL) picks the server, e.g. http://localhost:8000/v1 for vLLM or
    http://localhost:11434/v1 for Ollama; none means OpenAI's. The key comes from `api_key` or $OPENAI_API_KEY;
    a server other than OpenAI's gets a placeholder when there is none. `max_tokens_field` names the length
    limit as the server expects it ("max_completion_tokens" for OpenAI's reasoning models). `http_client` is
    handed to the SDK (an `httpx2.Client`). Retries are saekit's (`retry`, waits through `sleep`).
    """

    provider = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, *,
                 max_concurrency: int = 4, retry: RetryPolicy | None = None, timeout: float = 120.0,
                 max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
                 prices: Prices | None = None, tokenizer: Tokenizer | None = None,
                 sleep: Callable[[float], None] | None = None, http_client: Any = None) -> None:
        super().__init__(model, max_concurrency, retry or RetryPolicy(), prices, tokenizer, sleep)
        if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise InputError(f"OpenAICompatibleClient: max_tokens_field must be 'max_tokens' or "
                             f"'max_completion_tokens', got {max_tokens_field!r}")
        openai = _sdk()
        base_url = base_url or os.environ.get(BASE_URL_VARIABLE) or None
        api_key = api_key or os.environ.get(KEY_VARIABLE)
        if not api_key:
            if base_url is None or OPENAI_HOST in base_url:
                raise InputError(f"OpenAICompatibleClient needs an API key for OpenAI: set the environment variable "
                                 f"{KEY_VARIABLE} or pass api_key=... (a local server: pass base_url=...)")
            api_key = PLACEHOLDER_KEY
        self.base_url = base_url
        self.max_tokens_field = max_tokens_field
        self._connection_errors = (openai.APIConnectionError,)
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout,
                                     http_client=http_client)

    def _send(self, prompt: Prompt) -> Completion:
        system = [{"role": "system", "content": prompt.system}] if prompt.system else []
        response = self._client.chat.completions.create(
            model=self.model, temperature=prompt.temperature, **{self.max_tokens_field: prompt.max_tokens},
            messages=system + [{"role": role, "content": text} for role, text in prompt.messages])
        if not response.choices:
            raise RuntimeError(f"{self.base_url or OPENAI_HOST} answered {self.model} with no choices")
        choice = response.choices[0]
        usage = response.usage
        return Completion(text=choice.message.content or "", input_tokens=usage.prompt_tokens if usage else 0,
                          output_tokens=usage.completion_tokens if usage else 0, cached=False,
                          model=response.model or self.model, stop_reason=choice.finish_reason)
