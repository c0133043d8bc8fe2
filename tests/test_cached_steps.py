import json
import os

import pytest

from saekit.cached_steps import code_version, input_key, run_step, write_json_atomic, write_text_atomic


def test_cached_rebuilt_on_change_and_resumed_after_interrupt(tmp_path):
    calls = []

    def build(folder):
        calls.append(folder.name)
        (folder / "out.txt").write_text("x")
        return {"n": len(calls)}

    quiet = lambda msg: None  # noqa: E731
    a = run_step(tmp_path / "a", "a", {"size": 1}, build, log=quiet)
    again = run_step(tmp_path / "a", "a", {"size": 1}, build, log=quiet)
    assert not a.cached and again.cached and again.outputs == {"n": 1} and calls == ["a"]
    changed = run_step(tmp_path / "a", "a", {"size": 2}, build, log=quiet)
    assert not changed.cached and changed.key != a.key and changed.outputs == {"n": 2}

    def interrupted(folder):
        (folder / "checkpoint").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_step(tmp_path / "b", "b", {"k": 1}, interrupted, log=quiet)

    def resume(folder):
        return {"found": (folder / "checkpoint").read_text()}

    assert run_step(tmp_path / "b", "b", {"k": 1}, resume, log=quiet).outputs == {"found": "half"}
    with pytest.raises(KeyboardInterrupt):
        run_step(tmp_path / "c", "c", {"k": 1}, interrupted, log=quiet)
    assert run_step(tmp_path / "c", "c", {"k": 2}, lambda f: {"stale": (f / "checkpoint").exists()},
                    log=quiet).outputs == {"stale": False}


def test_input_key_ignores_order():
    assert input_key({"a": 1, "b": [1, 2]}) == input_key({"b": [1, 2], "a": 1})
    assert input_key({"a": 1}) != input_key({"a": 2})


def test_a_half_written_record_is_never_taken_for_a_build(tmp_path):
    quiet = lambda msg: None  # noqa: E731
    calls = []

    def build(folder):
        calls.append(1)
        return {"n": len(calls)}

    first = run_step(tmp_path / "a", "a", {"k": 1}, build, log=quiet)
    done = tmp_path / "a" / "step.json"
    done.write_text(done.read_text()[: len(done.read_text()) // 2])  # what a non-atomic write killed midway leaves
    again = run_step(tmp_path / "a", "a", {"k": 1}, build, log=quiet)
    assert not again.cached and again.key == first.key and calls == [1, 1]


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path, monkeypatch):
    path = write_json_atomic(tmp_path / "record.json", {"v": 1})

    def dies_before_the_rename(fd):
        raise KeyboardInterrupt  # the new text is in the temporary file, not yet renamed into place

    monkeypatch.setattr(os, "fsync", dies_before_the_rename)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"v": 2, "long": "x" * 1000})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1}
    write_text_atomic(path, "new")
    assert path.read_text() == "new"


def test_code_version_names_saekit_and_the_step():
    assert code_version(3).endswith("/3") and code_version(3) != code_version(4)
