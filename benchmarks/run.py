"""`make bench`: every performance goal of saekit, measured on this machine, printed as one table.

SAELens and EleutherAI's sparsify run in their own virtual environments (`make bench` builds them: $SAELENS_PYTHON,
$SPARSIFY_PYTHON), so their pins never touch saekit's; the trainers alternate, 3 runs each, and the medians are
compared.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"topk": 5.0, "relu": 2.0}
SPARSIFY_GOAL = 3.0  # saekit's TopK against sparsify's, on the same batches


def _train_run(python: str, side: str, arch: str, batch: int | None = None) -> dict[str, str]:
    """One benchmark run in a fresh process: {"TOKPS": ..., "DTYPE": ...} from its output lines."""
    args = [python, "-m", "benchmarks.train_speed", side, arch] + ([str(batch)] if batch else [])
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return dict(line.split(maxsplit=1) for line in out.stdout.splitlines() if line.startswith(("TOKPS", "DTYPE")))


def trainer_rows(saelens_python: str | None, runs: int = 3) -> list[dict]:
    """saekit (its own dtype choice), saekit forced to fp32, and SAELens, alternating; medians compared."""
    rows = []
    for arch in ("topk", "relu"):
        sides = ["saekit", "saekit-fp32"] + (["saelens"] if saelens_python else [])
        runs_by_side: dict[str, list[dict[str, str]]] = {side: [] for side in sides}
        for _ in range(runs):
            for side in sides:
                python = saelens_python if side == "saelens" else sys.executable
                runs_by_side[side].append(_train_run(python, side, arch))
        speed = {side: statistics.median(float(r["TOKPS"]) for r in rs) for side, rs in runs_by_side.items()}
        peer = speed.get("saelens", float("nan"))
        for side in ("saekit", "saekit-fp32"):
            dtype = runs_by_side[side][0].get("DTYPE", "?")
            label = "auto" if side == "saekit" else "forced"
            rows.append({"benchmark": f"train {arch} 512→4096, batch 4096 ({label} {dtype})",
                         "saekit": f"{speed[side]:,.0f} tok/s", "reference": f"SAELens {peer:,.0f} tok/s",
                         "ratio": speed[side] / peer, "goal": f"≥ {GOALS[arch]}x" if side == "saekit" else "",
                         "met": speed[side] / peer >= GOALS[arch] if side == "saekit" else ""})
    return rows


def sparsify_rows(sparsify_python: str, runs: int = 3) -> list[dict]:
    """saekit's TopK (its own dtype choice, Adam) against sparsify's (fp32 on CPU, its default signum optimiser),
    alternating on the same batches, at the benchmark's batch 4096 and the demo's 1024; medians compared."""
    rows = []
    for batch in (4096, 1024):
        runs_by_side: dict[str, list[dict[str, str]]] = {"saekit": [], "sparsify": []}
        for _ in range(runs):
            for side, python in (("saekit", sys.executable), ("sparsify", sparsify_python)):
                runs_by_side[side].append(_train_run(python, side, "topk", batch))
        speed = {side: statistics.median(float(r["TOKPS"]) for r in rs) for side, rs in runs_by_side.items()}
        ratio = speed["saekit"] / speed["sparsify"]
        dtype = runs_by_side["saekit"][0].get("DTYPE", "?")
        rows.append({"benchmark": f"train topk 512→4096, batch {batch} (auto {dtype}) vs sparsify (float32, signum)",
                     "saekit": f"{speed['saekit']:,.0f} tok/s", "reference": f"sparsify {speed['sparsify']:,.0f} tok/s",
                     "ratio": ratio, "goal": f"≥ {SPARSIFY_GOAL}x", "met": ratio >= SPARSIFY_GOAL})
    return rows


def analysis_rows() -> list[dict]:
    from benchmarks import analysis_speed, harvest, memory

    h = harvest.measure()
    mem = memory.measure()
    store = analysis_speed.feature_store()
    sums = analysis_speed.universality_sums()
    uni = analysis_speed.universality()
    return [
        {"benchmark": "harvest activations (demo model)", "saekit": f"{h['nnsight_tok_s']:,.0f} tok/s",
         "reference": f"forward hook {h['hook_tok_s']:,.0f} tok/s", "ratio": h["nnsight_vs_hook"],
         "goal": "≥ 0.9x", "met": h["nnsight_vs_hook"] >= 0.9},
        {"benchmark": "peak RSS of saekit train, 256 MB buffer: 300k tokens vs 3M (10x the text)",
         "saekit": f"{mem['peak_mb']:,.0f} MiB vs {mem['peak_10x_mb']:,.0f} MiB", "reference": "",
         "ratio": mem["peak_10x_mb"] / mem["peak_mb"], "goal": "no growth (≤ 1.05x)",
         "met": mem["peak_10x_mb"] <= 1.05 * mem["peak_mb"]},
        {"benchmark": "feature store, 4096 features × 1M tokens", "saekit": f"{store['store_seconds']:.1f} s",
         "reference": "", "ratio": float("nan"), "goal": "≤ 60 s", "met": store["store_seconds"] <= 60},
        {"benchmark": "universality correlation, 4096 × 4096 features × 1M tokens",
         "saekit": f"{sums['universality_sums_seconds']:.1f} s", "reference": "", "ratio": float("nan"),
         "goal": "≤ 20 s", "met": sums["universality_sums_seconds"] <= 20},
        {"benchmark": "  the same end to end (2 models read, 2 SAEs encode)",
         "saekit": f"{uni['universality_seconds']:.1f} s", "reference": "", "ratio": float("nan"), "goal": "",
         "met": ""},
    ]


def scale_rows() -> list[dict]:
    from benchmarks import scale

    m = scale.measure()
    sweep = ", ".join(str(n) for n in scale.SWEEP)
    return [
        {"benchmark": "read a cache on disk vs harvest from the model (demo shape, batch 4096)",
         "saekit": f"{m['cache_read_tok_s']:,.0f} tok/s", "reference": f"harvest {m['harvest_tok_s']:,.0f} tok/s",
         "ratio": m["cache_read_tok_s"] / m["harvest_tok_s"], "goal": "", "met": ""},
        {"benchmark": f"{len(scale.SWEEP)} TopK SAEs ({sweep}) from one pass vs {len(scale.SWEEP)} runs",
         "saekit": f"{m['sweep_one_pass_s']:.1f} s", "reference": f"separate {m['sweep_separate_s']:.1f} s",
         "ratio": m["sweep_separate_s"] / m["sweep_one_pass_s"], "goal": "", "met": ""},
        {"benchmark": "train topk 512→4096 from a cache: 2 gloo ranks (1 thread each) vs 1 process (2 threads)",
         "saekit": f"{m['two_ranks_tok_s']:,.0f} tok/s",
         "reference": f"1 process {m['one_process_2_threads_tok_s']:,.0f} tok/s",
         "ratio": m["two_ranks_tok_s"] / m["one_process_2_threads_tok_s"], "goal": "", "met": ""},
    ]


def lm_rows() -> list[dict]:
    from benchmarks import lm_speed

    m = lm_speed.measure()
    return [{"benchmark": f"train the demo LM, 1 thread ({m['dtype']} products, {m['flop_per_token']:,} FLOP/token)",
             "saekit": f"{m['tok_s']:,.0f} tok/s = {m['gflops']:.0f} GFLOP/s ({m['of_limit_fp32']:.0%} of fp32's)",
             "reference": f"1-thread matmul fp32 {m['limit_fp32']:.0f}, {m['dtype']} {m['limit_dtype']:.0f} GFLOP/s",
             "ratio": m["of_limit_dtype"], "goal": "", "met": ""}]


def main() -> None:
    saelens, sparsify = (os.environ.get(name) for name in ("SAELENS_PYTHON", "SPARSIFY_PYTHON"))
    saelens, sparsify = (p if p and Path(p).exists() else None for p in (saelens, sparsify))
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    print(f"saekit benchmarks on {machine} (threads: {torch.get_num_threads()})")
    only = set(sys.argv[1:])
    rows = []
    if not only or "train" in only:
        rows += trainer_rows(saelens)
    if sparsify and (not only or "train" in only or "sparsify" in only):
        rows += sparsify_rows(sparsify)
    if not only or "analysis" in only:
        rows += analysis_rows()
    if not only or "scale" in only:
        rows += scale_rows()
    if not only or "lm" in only:
        rows += lm_rows()
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    text = f"Measured on {machine}.\n\n```\n{table.to_string(index=False)}\n```\n"
    (ROOT / "benchmarks" / "results.md").write_text(text)


if __name__ == "__main__":
    main()
