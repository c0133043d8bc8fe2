"""Ctrl-C between training steps, never inside one: a step half done would leave weights and counters apart."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def interrupts_between_steps() -> Iterator[Callable[[], bool]]:
    """Within the block, the first SIGINT (Ctrl-C, a notebook's interrupt) only sets a flag; yields a function
    that says whether it came. A second SIGINT raises at once. Off the main thread signals stay as they are."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    received: list[int] = []

    def on_sigint(signum: int, frame: object) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGINT, previous)
