"""Two runs in one folder never overlap: the second waits for the first, or takes over at once if it was killed."""

from __future__ import annotations

import signal
import subprocess
import sys

from saekit.folder_lock import folder_lock

HOLD = """
import sys, time
from saekit.folder_lock import folder_lock
with folder_lock(sys.argv[1], "test"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    open(sys.argv[1] + "/finished", "w").close()
"""


def _holder(folder, seconds: float) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_second_run_waits_for_the_first(tmp_path):
    child = _holder(tmp_path, 1.0)
    messages: list[str] = []
    with folder_lock(tmp_path, "saekit train", log=messages.append):
        assert (tmp_path / "finished").exists()  # the holder had finished its work before the lock was granted
    child.wait()
    assert len(messages) == 1 and "is in use by pid" in messages[0] and "waiting" in messages[0]


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    child = _holder(tmp_path, 600)
    child.send_signal(signal.SIGKILL)
    child.wait()
    messages: list[str] = []
    with folder_lock(tmp_path, "saekit train", log=messages.append):
        pass
    assert messages == []


def test_a_run_that_made_nothing_leaves_no_folder(tmp_path):
    out = tmp_path / "new"
    try:
        with folder_lock(out, "saekit train"):
            raise ValueError("bad input")
    except ValueError:
        pass
    assert not out.exists()
    with folder_lock(out, "saekit train"):
        (out / "cfg.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == [".lock", "cfg.json"]
