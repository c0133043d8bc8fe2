"""`saekit demo` killed (SIGKILL) at several moments and rerun ends with the evaluation table an uninterrupted
build gives, byte for byte; and that uninterrupted build runs under the load of the killed one beside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from saekit import demo as D
from saekit.embedded import CorpusConfig, EmbeddedConfig, LMConfig, TokenizerConfig

from helpers import write_topic_folder

DRIVER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_demo_resume import small_profile
from saekit.demo import run_demo

if __name__ == "__main__":  # the models train in spawned processes, which import this file again
    run_demo(small_profile(Path(sys.argv[1])), Path(sys.argv[2]), progress=False, log=lambda m: None)
"""


def small_profile(text_folder: Path) -> D.DemoProfile:
    """A demo small enough to build several times in a test, with every step the real one has."""
    lm = LMConfig(d_model=32, n_mlp=64, n_head=2, context=32, tokens=24_576, batch_size=8, eval_tokens=2048,
                  log_every=16)
    embedded = EmbeddedConfig(CorpusConfig(source="folder", folder=text_folder, target_bytes=300_000),
                              TokenizerConfig(vocab_size=300), lm)
    relu = lambda model, n: D.SAESpec(model, "relu", n, 16_384, lr=3e-3, l1_coefficient=1.0,  # noqa: E731
                                      recipe="april_2024", resample=True)
    return D.DemoProfile("small", (relu("A", 32), relu("A", 64), relu("B", 64)), batch_size=256, eval_tokens=2048,
                         store_tokens=2048, family_store_tokens=1024, universality_tokens=2048, splitting_tokens=1024,
                         a1_features=64, embedded=embedded)


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory) -> Path:
    return write_topic_folder(tmp_path_factory.mktemp("docs"))


def start(driver: Path, text_folder: Path, out: Path) -> subprocess.Popen:
    """The demo in its own process group (so a kill takes its model-training workers too), its output appended
    to `out`.log."""
    with open(f"{out}.log", "ab") as log:
        return subprocess.Popen([sys.executable, str(driver), str(text_folder), str(out)], start_new_session=True,
                                stdout=log, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, out: Path) -> None:
    assert process.wait(timeout=300) == 0, Path(f"{out}.log").read_text()[-4000:]


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> bool:
    """SIGKILL the process group as soon as `ready()` holds; whether it was still running then."""
    end = time.monotonic() + timeout
    while process.poll() is None and not ready() and time.monotonic() < end:
        time.sleep(0.005)
    running = process.poll() is None
    if running:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return running


def any_file(out: Path, pattern: str) -> Callable[[], bool]:
    return lambda: any(out.glob(pattern))


def test_killed_at_any_step_and_rerun_gives_the_uninterrupted_table(text_folder, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(Path(__file__).parent)))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    uninterrupted = start(driver, text_folder, whole)  # side by side with the killed runs: under their load
    moments = [
        any_file(killed, "corpus/corpus.json"),  # corpus done, tokenizer starting
        lambda: (killed / "tokens" / "tokens.json").is_file() and time.sleep(1.0) is None,  # models training
        any_file(killed, "saes/*/checkpoints/tokens_*[0-9]"),  # an SAE checkpoint written, training on
        any_file(killed, "eval/step.partial.json"),  # evaluating
    ]
    hits = [kill_when(start(driver, text_folder, killed), moment) for moment in moments]
    final = start(driver, text_folder, killed)
    finish(final, killed)
    finish(uninterrupted, whole)
    assert sum(hits) >= 3, f"most kills should land mid-build: {hits}"
    table = (killed / "eval" / "eval.csv").read_bytes()
    assert table == (whole / "eval" / "eval.csv").read_bytes()
    assert b"corpus_manifest" in table
