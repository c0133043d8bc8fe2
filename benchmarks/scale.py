"""Scaling up on this machine: a cache's read against harvesting from the model, N SAEs from one pass against N
runs, and data-parallel training on 2 gloo ranks against one process (all on the demo's shape)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import CONTEXT, HOOK, VOCAB, demo_shaped_model

TOKENS = 262_144
BATCH = 4096
SWEEP = (1024, 2048, 4096, 8192)  # TopK SAEs (k 32) of a sweep on the MLP neurons
SWEEP_TOKENS = 65_536
DDP_TOKENS = 1_048_576  # four passes over the cache: process start-up (~3 s a rank) amortised


def _model_folder(root: Path) -> Path:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    folder = root / "model"
    demo_shaped_model().save_pretrained(folder)
    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t1")),
                                  bos_token="t0", eos_token="t0", pad_token="t0")
    tok.save_pretrained(folder)
    ids = torch.randint(1, VOCAB, (TOKENS * 2,), generator=torch.Generator().manual_seed(0)).numpy()
    np.save(root / "tokens.npy", ids.astype(np.int64))
    return folder


def _source(model, root: Path, total: int):
    from saekit.activations import ActivationConfig, ActivationSource

    config = ActivationConfig(hook=HOOK, context_len=CONTEXT, batch_size=BATCH, total_tokens=total)
    return ActivationSource(model, str(root / "tokens.npy"), config, progress=False)


def _drain(batches) -> float:
    start = time.perf_counter()
    rows = sum(b.shape[0] for b in batches)
    return rows / (time.perf_counter() - start)


def _saes():
    import saekit

    return [saekit.SAE.create("topk", 512, n, k=32, seed=i) for i, n in enumerate(SWEEP)]


def measure() -> dict[str, float]:
    import saekit
    from saekit.activations.cache import CachedBatches, write_cache
    from saekit.activations.nnsight_api import load_model

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = load_model(str(_model_folder(root)))
        out["harvest_tok_s"] = _drain(_source(model, root, TOKENS))
        from saekit.activations import ActivationConfig, ActivationSource

        cache_source = ActivationSource(model, str(root / "tokens.npy"),
                                        ActivationConfig(hook=HOOK, context_len=CONTEXT, repeat=False), progress=False)
        start = time.perf_counter()
        write_cache(cache_source, root / "cache", TOKENS, progress=False)
        out["cache_write_tok_s"] = TOKENS / (time.perf_counter() - start)
        out["cache_read_tok_s"] = _drain(CachedBatches(root / "cache", batch_size=BATCH, total_tokens=TOKENS))

        config = saekit.TrainConfig(total_tokens=SWEEP_TOKENS)
        start = time.perf_counter()
        saekit.train_many(_saes(), _source(model, root, SWEEP_TOKENS), config, progress=False)
        out["sweep_one_pass_s"] = time.perf_counter() - start
        start = time.perf_counter()
        for sae in _saes():
            saekit.train(sae, _source(model, root, SWEEP_TOKENS), config, progress=False)
        out["sweep_separate_s"] = time.perf_counter() - start

        args = ["train", "--from-cache", str(root / "cache"), "--arch", "topk", "--k", "32", "--features", "4096",
                "--tokens", str(DDP_TOKENS), "--batch-size", str(BATCH), "--checkpoint-every", "0", "--quiet"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for name, extra, threads in (("one_process_2_threads", [], "2"), ("two_ranks", ["--nproc", "2"], "1")):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "saekit", *args, *extra, "--out", str(root / name)], check=True,
                           capture_output=True, env={**env, "OMP_NUM_THREADS": threads})
            out[f"{name}_tok_s"] = DDP_TOKENS / (time.perf_counter() - start)
    return out


if __name__ == "__main__":
    for key, value in measure().items():
        print(f"{key} {value:,.1f}")
