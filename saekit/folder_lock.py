"""One process at a time in a run's folder: a second `saekit train` or `saekit demo` on the same folder waits.

The lock is an flock on `FOLDER/.lock`; the operating system drops it when its holder exits or is killed, so a
crashed run never leaves the folder locked. Where flock is missing (Windows) runs are not serialised.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = ".lock"


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold `folder`'s lock for the block (creating the folder), waiting, with a message, while another has it."""
    if fcntl is None:
        yield
        return
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(folder / LOCK_FILE, what, log):
            yield
    finally:
        if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:  # nothing made: leave no trace
            (folder / LOCK_FILE).unlink(missing_ok=True)
            folder.rmdir()


@contextmanager
def _locked(path: Path, what: str, log: Callable[[str], None]) -> Iterator[None]:
    """flock `path` exclusively for the block, saying who holds it while waiting."""
    folder = path.parent
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            log(f"{what}: {folder} is in use by {holder}; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
