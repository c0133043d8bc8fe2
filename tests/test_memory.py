"""Memory of `saekit train` is bounded by the buffer budget: its peak does not grow with the text it reads."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from helpers import HOOK

RUN = """
import resource, sys
from saekit.cli import main
status = main(sys.argv[1:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(status)
"""


def peak_rss_mb(model, tokens_file, n_tokens: int, out) -> float:
    """Peak resident memory (MiB) of a real `saekit train` process reading `n_tokens` of a token array."""
    cmd = [sys.executable, "-c", RUN, "train", "--model", str(model), "--hook", HOOK, "--arch", "topk", "--k", "8",
           "--features", "128", "--tokens", str(n_tokens), "--text", str(tokens_file), "--batch-size", "512",
           "--context-len", "64", "--buffer-mb", "8", "--checkpoint-every", "0", "--quiet", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split("MAXRSS_KB")[-1]) / 1024


def test_peak_memory_does_not_grow_with_the_text(tiny_lm_dir, tmp_path):
    rng = np.random.default_rng(0)
    small, large = tmp_path / "small.npy", tmp_path / "large.npy"
    ids = rng.integers(1, 300, size=3_000_000)  # 24 MB of int64 ids, 10x as many as the small run
    np.save(small, ids[:300_000])
    np.save(large, ids)
    # a process's peak varies by ±5 MiB from run to run (most of it is the ~500 MiB of imports): the median of three
    runs = {n: [peak_rss_mb(tiny_lm_dir, path, n, tmp_path / f"{n}-{i}") for i in range(3)]
            for n, path in ((20_000, small), (200_000, large))}
    base, more = (float(np.median(peaks)) for peaks in runs.values())
    print(f"peak RSS: {base:.1f} MiB (20k tokens), {more:.1f} MiB (200k tokens); runs {runs}")
    assert more - base < 12, f"peak RSS {base:.0f} MiB for 20k tokens, {more:.0f} MiB for 200k"
