"""Claude through Anthropic's official SDK (`anthropic`, the Messages API), imported only when a client is made."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from saekit.errors import InputError
from saekit.llm.client import Completion, Prompt
from saekit.llm.pricing import Prices, Tokenizer
from saekit.llm.remote import RemoteClient
from saekit.llm.retry import RetryPolicy

KEY_VARIABLE = "ANTHROPIC_API_KEY"


def _sdk() -> Any:
    try:
        import anthropic
    except ImportError as error:
        raise ImportError("AnthropicClient needs Anthropic's SDK: pip install anthropic "
                          "(or pip install 'saekit[autointerp]')") from error
    return anthropic


class AnthropicClient(RemoteClient):
    """Sends prompts to Anthropic's Messages API (`client.messages.create`), several at once, with backoff.

    The key comes from `api_key` or $ANTHROPIC_API_KEY; `base_url` (or $ANTHROPIC_BASE_URL) points elsewhere,
    e.g. a proxy. `http_client` is handed to the SDK (an `httpx2.Client`, as the SDK requires). Retries are
    saekit's (`retry`, waits through `sleep`); the SDK's own are off.

    The Messages API of the current SDK takes no temperature: the model samples as it does by default, and a
    prompt's temperature only tells cached answers apart. `send_temperature=True` sends it anyway (in the
    request body) to a model or proxy that still accepts one.
    """

    provider = "anthropic"

    def __init__(self, model: str, api_key: str | None = None, base_url: str | None = None, *,
                 max_concurrency: int = 4, retry: RetryPolicy | None = None, timeout: float = 120.0,
                 prices: Prices | None = None, tokenizer: Tokenizer | None = None,
                 sleep: Callable[[float], None] | None = None, http_client: Any = None,
                 send_temperature: bool = False) -> None:
        super().__init__(model, max_concurrency, retry or RetryPolicy(), prices, tokenizer, sleep)
        anthropic = _sdk()
        api_key = api_key or os.environ.get(KEY_VARIABLE)
        if not api_key:
            raise InputError(f"AnthropicClient needs an API key: set the environment variable {KEY_VARIABLE} "
                             "or pass api_key=...")
        self.send_temperature = send_temperature
        self._connection_errors = (anthropic.APIConnectionError,)
        self._client = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout,
                                           http_client=http_client)

    def _send(self, prompt: Prompt) -> Completion:
        request: dict[str, Any] = {
            "model": self.model, "max_tokens": prompt.max_tokens,
            "messages": [{"role": role, "content": text} for role, text in prompt.messages],
        }
        if prompt.system:
            request["system"] = prompt.system
        if self.send_temperature:
            request["extra_body"] = {"temperature": prompt.temperature}
        message = self._client.messages.create(**request)
        text = "".join(block.text for block in message.content if block.type == "text")
        return Completion(text=text, input_tokens=message.usage.input_tokens,
                          output_tokens=message.usage.output_tokens, cached=False, model=message.model,
                          stop_reason=message.stop_reason)
