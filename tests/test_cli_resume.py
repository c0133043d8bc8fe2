"""`saekit train` checkpoints, resumes a killed run to the same bytes, and leaves a finished run alone."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import saekit
import saekit.training
from saekit import cli
from saekit.activations import nnsight_api as api
from saekit.cli import main

from helpers import ARCHS, HOOK

ARCH_ARGS = {"relu": ["--l1", "1"], "topk": ["--k", "4"], "batchtopk": ["--k", "4"], "jumprelu": []}
WEIGHTS = "sae_weights.safetensors"


def _argv(model: Path, text: Path, out: Path, arch: str = "topk", *extra: str, tokens: int = 2048,
          features: int = 32) -> list[str]:
    return ["train", "--model", str(model), "--hook", HOOK, "--arch", arch, "--features", str(features),
            "--tokens", str(tokens), "--text", str(text), "--out", str(out), "--batch-size", "64",
            "--context-len", "16", "--buffer-mb", "1", "--seed", "3", "--quiet", *ARCH_ARGS[arch], *extra]


def _complete_checkpoints(out: Path) -> list[Path]:
    """Checkpoint folders renamed into place (a `.partial` folder is still being written)."""
    return [p for p in (out / cli.CHECKPOINTS).glob("tokens_*") if "." not in p.name
            and (p / "trainer_state.json").is_file()]


def _kill_after_first_checkpoint(argv: list[str], out: Path, timeout: float = 240) -> None:
    """Run `saekit train` as its own process and SIGKILL it as soon as its first checkpoint is complete."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # the tests' one thread: same sums
    proc = subprocess.Popen([sys.executable, "-m", "saekit.cli", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not _complete_checkpoints(out):
            assert proc.poll() is None, f"train ended before its first checkpoint: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed: raise --tokens"


@pytest.fixture
def resumes(monkeypatch):
    """The `resume` argument of every saekit.training.train call the CLI makes (the real train still runs)."""
    seen: list = []
    real = saekit.training.train

    def spy(sae, batches, cfg, *, resume=None, progress=True, parallel=None):
        seen.append((resume, cfg))
        return real(sae, batches, cfg, resume=resume, progress=progress, parallel=parallel)

    monkeypatch.setattr(saekit.training, "train", spy)
    return seen


@pytest.mark.parametrize("arch", ARCHS)
def test_killed_run_resumes_to_the_same_bytes(tiny_lm_dir, text_dir, tmp_path, capsys, resumes, arch):
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert main(_argv(tiny_lm_dir, text_dir, reference, arch, "--checkpoint-every", "256")) == 0
    assert not (reference / cli.CHECKPOINTS).exists()  # dropped once the SAE is saved

    argv = _argv(tiny_lm_dir, text_dir, run, arch, "--checkpoint-every", "256")
    _kill_after_first_checkpoint(argv, run)
    assert json.loads((run / cli.RUN_FILE).read_text())["status"] == "running"
    assert not (run / WEIGHTS).exists()

    assert main(argv) == 0  # the same command again
    assert resumes[-1][0] == run / cli.CHECKPOINTS
    assert json.loads((run / cli.RUN_FILE).read_text())["status"] == "done"
    assert not (run / cli.CHECKPOINTS).exists()
    assert (run / WEIGHTS).read_bytes() == (reference / WEIGHTS).read_bytes()

    before = (run / WEIGHTS).stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0  # a finished run: nothing changes
    assert "already trained" in capsys.readouterr().out
    assert (run / WEIGHTS).stat().st_mtime_ns == before and len(resumes) == 2


# --- the run record, without killing anything ------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tiny_lm_dir, text_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "sae"
    assert main(_argv(tiny_lm_dir, text_dir, out, tokens=256)) == 0
    return out


def test_finished_run_record(finished, tiny_lm_dir, text_dir):
    record = json.loads((finished / cli.RUN_FILE).read_text())
    assert record["status"] == "done" and record["checkpoint_every_tokens"] == 64  # 256 // 10 → one batch
    settings = record["settings"]
    assert settings["model"] == str(tiny_lm_dir.resolve()) and settings["text"] == str(text_dir.resolve())
    assert (settings["arch"], settings["features"], settings["k"], settings["tokens"]) == ("topk", 32, 4, 256)
    assert saekit.load_sae(finished).d_sae == 32


def test_rerun_with_other_settings_is_refused(finished, tiny_lm_dir, text_dir, capsys, monkeypatch):
    monkeypatch.setattr(api, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    before = (finished / WEIGHTS).read_bytes()
    capsys.readouterr()
    argv = _argv(tiny_lm_dir, text_dir, finished, tokens=256, features=48) + ["--lr", "1e-3"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("saekit train: error: ")
    assert "features: 32 → 48" in err[0] and "lr: None → 0.001" in err[0] and "tokens" not in err[0]
    assert "use another --out or delete it" in err[0]
    assert (finished / WEIGHTS).read_bytes() == before


def test_rerun_elsewhere_or_with_other_checkpointing_is_the_same_run(finished, tiny_lm_dir, text_dir, capsys,
                                                                     monkeypatch):
    monkeypatch.setattr(api, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.chdir(text_dir)
    argv = _argv(Path(os.path.relpath(tiny_lm_dir)), Path("."), finished, "topk", "--checkpoint-every", "0",
                 tokens=256)
    capsys.readouterr()
    assert main(argv) == 0
    assert "already trained" in capsys.readouterr().out


def test_default_k_given_explicitly_is_the_same_run(tiny_lm_dir, text_dir, tmp_path):
    argv = _argv(tiny_lm_dir, text_dir, tmp_path / "out")
    implicit = cli.run_settings(cli.build_parser().parse_args([a for a in argv if a not in ("--k", "4")]))
    explicit = cli.run_settings(cli.build_parser().parse_args([*argv[:-2], "--k", "32"]))
    assert implicit == explicit and implicit["k"] == 32


def test_sae_folder_without_a_record_is_not_overwritten(tiny_lm_dir, text_dir, tmp_path, capsys):
    saekit.SAE.create("relu", 128, 16).save(tmp_path / "sae")
    capsys.readouterr()
    assert main(_argv(tiny_lm_dir, text_dir, tmp_path / "sae")) == 1
    assert "already holds an SAE without a run record" in capsys.readouterr().err


def _started(out: Path, settings: dict, with_checkpoint: bool) -> None:
    out.mkdir(parents=True)
    (out / cli.RUN_FILE).write_text(json.dumps({"status": "running", "settings": settings}))
    if with_checkpoint:
        (out / cli.CHECKPOINTS / "tokens_000000000064").mkdir(parents=True)
        (out / cli.CHECKPOINTS / "tokens_000000000064" / "trainer_state.json").write_text("{}")
        (out / cli.CHECKPOINTS / "tokens_000000000064" / "trainer_state.safetensors").write_bytes(b"")


@pytest.mark.parametrize("with_checkpoint", [False, True])
def test_started_run_with_other_settings(tiny_lm_dir, text_dir, tmp_path, capsys, monkeypatch, with_checkpoint):
    """Other settings may take over a started run only while it has no checkpoint to lose."""
    monkeypatch.setattr(api, "load_model", lambda *a, **k: (_ for _ in ()).throw(cli.CliError("model load")))
    argv = _argv(tiny_lm_dir, text_dir, tmp_path / "out")
    old = {**cli.run_settings(cli.with_chosen_defaults(cli.build_parser().parse_args(argv))), "seed": 99}
    _started(tmp_path / "out", old, with_checkpoint)
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    if with_checkpoint:
        assert "holds a started run with other settings (seed: 99 → 3)" in err
    else:
        assert "model load" in err


def test_explicit_resume_folder_without_checkpoint(tiny_lm_dir, text_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(_argv(tiny_lm_dir, text_dir, tmp_path / "out", "topk", "--resume", str(tmp_path / "empty"))) == 1
    err = capsys.readouterr().err
    assert "checkpoint at" in err and "empty" in err and "pass a checkpoint folder" in err


def test_checkpoints_off(tiny_lm_dir, text_dir, tmp_path, resumes):
    assert main(_argv(tiny_lm_dir, text_dir, tmp_path / "out", "topk", "--checkpoint-every", "0", tokens=256)) == 0
    resume, cfg = resumes[-1]
    assert resume is None and cfg.checkpoint_dir is None and cfg.checkpoint_every_tokens is None
    assert not (tmp_path / "out" / cli.CHECKPOINTS).exists()


@pytest.mark.parametrize("tokens,batch,given,expected", [
    (10_000, 64, None, 1024),   # a tenth (1000) rounded up to whole batches
    (256, 64, None, 64),        # at least one batch
    (10_000, 64, 100, 128),     # given: rounded up to whole batches
    (10_000, 64, 0, None),      # off
])
def test_checkpoint_spacing(tokens, batch, given, expected):
    args = argparse.Namespace(tokens=tokens, batch_size=batch, checkpoint_every=given)
    assert cli.checkpoint_every(args) == expected


def test_kill_before_the_done_marker_resumes_and_finishes(tiny_lm_dir, text_dir, tmp_path, monkeypatch, resumes):
    """A run killed after saving its SAE but before run.json says "done" does not look finished."""
    out = tmp_path / "out"
    argv = _argv(tiny_lm_dir, text_dir, out, tokens=256)
    real = cli.write_run_record

    def killed_at_done(folder, status, settings, extra):
        if status == "done":
            raise KeyboardInterrupt
        real(folder, status, settings, extra)

    monkeypatch.setattr(cli, "write_run_record", killed_at_done)
    assert main(argv) == 130
    saved = (out / WEIGHTS).read_bytes()
    assert json.loads((out / cli.RUN_FILE).read_text())["status"] == "running"
    assert (out / cli.CHECKPOINTS).is_dir()

    monkeypatch.setattr(cli, "write_run_record", real)
    assert main(argv) == 0
    assert resumes[-1][0] == out / cli.CHECKPOINTS
    assert json.loads((out / cli.RUN_FILE).read_text())["status"] == "done"
    assert (out / WEIGHTS).read_bytes() == saved


def test_ctrl_c_says_how_to_resume(tiny_lm_dir, text_dir, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(saekit.training, "train", interrupted)
    capsys.readouterr()
    assert main(_argv(tiny_lm_dir, text_dir, tmp_path / "out")) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' own loading bars
    assert last == "saekit train: interrupted; run the same command again to resume from its last checkpoint"
