"""What the server clients share: prompts sent from a bounded thread pool, each retried on transient errors,
answers returned in the prompts' order under a progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

from tqdm.auto import tqdm

from saekit.errors import InputError
from saekit.llm.client import Completion, CostEstimate, OnCompletion, Prompt
from saekit.llm.pricing import Prices, Tokenizer, estimate_cost, list_prices
from saekit.llm.retry import RetryPolicy, call_with_retries, retry_after_seconds, transient_status

T = TypeVar("T")
R = TypeVar("R")


def map_in_order(fn: Callable[[T], R], items: Sequence[T], max_concurrency: int, progress: bool, desc: str,
                 on_result: Callable[[int, R], None] | None = None) -> list[R]:
    """[fn(item) for item in items] computed by up to `max_concurrency` threads. `on_result(i, result)` runs in
    the caller's thread as each finishes. After a failure no new item starts; the ones running finish (and
    reach on_result, so paid-for answers can be kept) and then the first error is raised."""
    results: list[Any] = [None] * len(items)
    if not items:
        return results
    error: BaseException | None = None
    with ThreadPoolExecutor(max_workers=min(max_concurrency, len(items))) as pool, \
            tqdm(total=len(items), desc=desc, disable=not progress) as bar:
        futures: dict[Future, int] = {pool.submit(fn, item): i for i, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                if future.exception() is not None:
                    if error is None:
                        error = future.exception()
                        _cancel(futures)
                    continue
                index = futures[future]
                results[index] = future.result()
                if on_result is not None:
                    on_result(index, results[index])
                bar.update(1)
        except BaseException:  # an interrupt (or on_result failing): start nothing more
            _cancel(futures)
            raise
    if error is not None:
        raise error
    return results


def _cancel(futures: dict[Future, int]) -> None:
    for future in futures:
        future.cancel()


class RemoteClient:
    """Base of the clients that send prompts to a server; a subclass says how to send one (`_send`) and which
    of its SDK's errors are connection errors (`_connection_errors`)."""

    provider = "remote"
    _connection_errors: tuple[type[BaseException], ...] = ()
    """The SDK's errors for a request that never got an answer (refused, reset, timed out): retried."""

    def __init__(self, model: str, max_concurrency: int, retry: RetryPolicy, prices: Prices | None,
                 tokenizer: Tokenizer | None, sleep: Callable[[float], None] | None) -> None:
        if not isinstance(model, str) or not model:
            raise InputError(f"{type(self).__name__}: model must be a non-empty name, got {model!r}")
        if max_concurrency < 1:
            raise InputError(f"{type(self).__name__}: max_concurrency must be ≥ 1, got {max_concurrency}")
        self.model = model
        self.max_concurrency = max_concurrency
        self.retry = retry
        self.prices = prices if prices is not None else list_prices(model)
        self.tokenizer = tokenizer
        self.sleep = sleep if sleep is not None else time.sleep

    def _send(self, prompt: Prompt) -> Completion:
        """One request, no retries."""
        raise NotImplementedError

    def _transient(self, error: BaseException) -> bool:
        status = getattr(error, "status_code", None)
        if isinstance(status, int):
            return transient_status(status)
        return isinstance(error, self._connection_errors)

    @staticmethod
    def _retry_after(error: BaseException) -> float | None:
        response = getattr(error, "response", None)
        return retry_after_seconds(getattr(response, "headers", None))

    def _send_with_retries(self, prompt: Prompt) -> Completion:
        return call_with_retries(lambda: self._send(prompt), self.retry, self._transient, self._retry_after,
                                 self.sleep)

    def complete(self, prompts: Sequence[Prompt], progress: bool = True,
                 on_completion: OnCompletion | None = None) -> list[Completion]:
        """Send every prompt (up to max_concurrency at once, transient errors retried); answers in order."""
        return map_in_order(self._send_with_retries, list(prompts), self.max_concurrency, progress,
                            f"{self.provider} {self.model}", on_completion)

    def estimate(self, prompts: Sequence[Prompt]) -> CostEstimate:
        """The most sending `prompts` would cost; nothing is sent."""
        return estimate_cost(list(prompts), self.prices, self.tokenizer)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, max_concurrency={self.max_concurrency})"
