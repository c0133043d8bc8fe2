"""Peak memory of a real `saekit train` run with the default 256 MB buffer budget, on 1x and 10x the text: the
buffer's budget covers the forward's outputs, and token arrays are read a batch at a time, so the peak must not
grow with the text."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import HOOK, VOCAB, demo_shaped_model

RUN = """
import resource, sys
from saekit.cli import main
status = main(sys.argv[1:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(status)
"""
TOKENS = 300_000  # more than two buffer blocks of the demo's 512-wide activations at 256 MB


def peak_rss_mb(model: Path, tokens_file: Path, n_tokens: int, out: Path) -> float:
    """Peak resident memory (MiB) of `saekit train` reading `n_tokens` of a token array."""
    cmd = [sys.executable, "-c", RUN, "train", "--model", str(model), "--hook", HOOK, "--arch", "topk", "--k", "16",
           "--features", "512", "--tokens", str(n_tokens), "--text", str(tokens_file), "--buffer-mb", "256",
           "--checkpoint-every", "0", "--quiet", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(done.stdout.split("MAXRSS_KB")[-1]) / 1024


def measure() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo_shaped_model().save_pretrained(root / "model")
        ids = np.random.default_rng(0).integers(1, VOCAB, size=10 * TOKENS)
        np.save(root / "small.npy", ids[:TOKENS])
        np.save(root / "large.npy", ids)
        small = peak_rss_mb(root / "model", root / "small.npy", TOKENS, root / "a")
        large = peak_rss_mb(root / "model", root / "large.npy", 10 * TOKENS, root / "b")
    return {"peak_mb": small, "peak_10x_mb": large}


if __name__ == "__main__":
    print(measure())
