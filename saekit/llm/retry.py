"""When to resend a failed request and how long to wait first.

saekit retries itself (the SDKs are built with max_retries=0), so both providers back off the same way,
the server's retry-after is honoured in one place, and tests inject the wait instead of sleeping.
Transient: rate limits (429), overload (529) and other server errors (5xx), request timeouts (408), and
connection errors. Anything else (a bad request, a wrong key) fails at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from saekit.errors import InputError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: wait first_wait, then × multiplier each retry, at most max_wait."""

    max_retries: int = 6
    """Resends after the first try; the last error is raised when they are used up."""
    first_wait: float = 1.0
    """Seconds before the first resend when the server gives no retry-after."""
    multiplier: float = 2.0
    """Growth of the wait from one resend to the next."""
    max_wait: float = 120.0
    """Longest wait in seconds (a longer retry-after is cut to it)."""

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise InputError(f"RetryPolicy: max_retries must be ≥ 0, got {self.max_retries}")
        if self.first_wait < 0 or self.max_wait < 0 or self.multiplier < 1:
            raise InputError("RetryPolicy: first_wait and max_wait must be ≥ 0 and multiplier ≥ 1, got "
                             f"{self.first_wait}, {self.max_wait}, {self.multiplier}")

    def wait(self, retry: int, retry_after: float | None) -> float:
        """Seconds before resend number `retry` (0-based): the server's retry-after when it sent one."""
        seconds = retry_after if retry_after is not None else self.first_wait * self.multiplier**retry
        return min(seconds, self.max_wait)


def transient_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying: 408, 429, and 5xx (529 is Anthropic's "overloaded")."""
    return status in (408, 429) or status >= 500


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The server's requested wait: retry-after-ms, else retry-after in seconds; None when absent or a date."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if seconds >= 0:
            return seconds
    return None


def call_with_retries(call: Callable[[], T], policy: RetryPolicy, transient: Callable[[BaseException], bool],
                      retry_after: Callable[[BaseException], float | None], sleep: Callable[[float], None]) -> T:
    """`call()`, resent after `sleep(wait)` while it raises a transient error and retries remain."""
    retry = 0
    while True:
        try:
            return call()
        except Exception as error:
            if retry >= policy.max_retries or not transient(error):
                raise
            sleep(policy.wait(retry, retry_after(error)))
            retry += 1
