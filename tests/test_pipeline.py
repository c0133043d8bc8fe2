import pytest

from saekit.pipeline import input_key, run_step


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
