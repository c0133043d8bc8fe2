"""Data-parallel training: 2 gloo ranks on one cache end where one process ends on the same global batches, for every
architecture and kind of dictionary, with resampling, AuxK and the batch-wide losses in play; rank 0 alone writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

from saekit.activations.cache import CachedBatches, write_cache
from saekit.saes import SAE
from saekit.saes.provenance import Provenance
from saekit.synthetic import SparseDictionary
from saekit.training import TrainConfig, TrainResult, train

D = 24
TOKENS = 6144
BATCH = 256

# name: (arch, dictionary kind, TrainConfig changes); features 0-15 start dead (b_enc below zero) and short dead windows
# put resampling and AuxK to work on them
CASES = {
    "relu-resampled": ("relu", "sae", dict(resample_at=(0.5,), dead_window_tokens=1024, l1_coefficient=2.0)),
    "topk-auxk": ("topk", "sae", dict(dead_window_tokens=512)),
    "batchtopk": ("batchtopk", "sae", dict(dead_window_tokens=512)),
    "jumprelu": ("jumprelu", "sae", {}),
    "topk-transcoder": ("topk", "transcoder", dict(dead_window_tokens=512)),
    "relu-crosscoder": ("relu", "crosscoder", dict(l1_coefficient=2.0)),
}


class _Rows:
    """An ActivationSource stand-in for write_cache: fixed rows and where they claim to come from."""

    def __init__(self, rows: torch.Tensor, widths: tuple[int, ...], provenance: Provenance) -> None:
        self.rows, self.widths, self.width, self._provenance = rows, widths, sum(widths), provenance
        self.config = SimpleNamespace(dtype="float32", torch_dtype=torch.float32)

    def provenance(self) -> Provenance:
        return self._provenance

    def site_columns(self) -> list[tuple[str, str, slice]]:
        return [(self._provenance.hook, "output", slice(0, self.width))]

    def activations(self, skip: int = 0):
        yield from self.rows[skip:].split(500)


def write_caches(root: Path) -> None:
    x = SparseDictionary(d_in=D, n_features=64, p_active=0.05, seed=0).sample(TOKENS, torch.Generator().manual_seed(1))
    y = x @ torch.randn(D, D, generator=torch.Generator().manual_seed(2)) / D**0.5
    kinds = {
        "sae": _Rows(x, (D,), Provenance(model="m", hook="h")),
        "transcoder": _Rows(torch.cat([x, y], 1), (D, D), Provenance(model="m", hook="h", target_hook="t")),
        "crosscoder": _Rows(torch.cat([x, y], 1), (2 * D,), Provenance(model="a", models=("a", "b"), hook="h")),
    }
    for kind, source in kinds.items():
        write_cache(source, root / kind, TOKENS, shard_bytes=1024 * source.width * 4, progress=False)


def train_case(root: Path, name: str, rank: int = 0, world_size: int = 1, parallel=None) -> TrainResult:
    arch, kind, changes = CASES[name]
    batches = CachedBatches(root / kind, batch_size=BATCH, total_tokens=TOKENS, buffer_bytes=2048 * 2 * D * 4,
                            seed=5, rank=rank, world_size=world_size)
    sae = SAE.create(arch, d_in=batches.d_in, n_features=96, d_out=batches.d_out,
                     n_models=2 if kind == "crosscoder" else 1, seed=3, **({"k": 4} if "topk" in arch else {}))
    with torch.no_grad():
        sae.b_enc[:16] = -100.0 if name == "relu-resampled" else -3.0
    return train(sae, batches, TrainConfig(total_tokens=TOKENS, lr=1e-3, seed=7, **changes), progress=False,
                 parallel=parallel)


def _rank(rank: int, world_size: int, root: str, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from saekit.training.distributed import DataParallel

    parallel = DataParallel.from_environment()
    try:
        for name in CASES:
            run = train_case(Path(root), name, rank, world_size, parallel)
            if parallel.is_main:
                torch.save(run.sae.state_dict(), Path(root) / f"{name}.pt")
    finally:
        parallel.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    write_caches(root)
    mp.start_processes(_rank, args=(2, str(root), _free_port()), nprocs=2, join=True, start_method="spawn")
    return root


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_end_where_one_process_ends(two_ranks, name):
    run = train_case(two_ranks, name)
    one = run.sae
    two = torch.load(two_ranks / f"{name}.pt", weights_only=True)
    for key, value in one.state_dict().items():
        relative = float((value - two[key]).norm() / value.norm().clamp_min(1e-12))
        assert relative < 1e-4, f"{name}: {key} differs by {relative:.2e} between 2 ranks and 1 process"
    if name == "relu-resampled":
        assert run.summary["resampled_features"] >= 16  # the pool was gathered and used
    if name == "topk-auxk":
        assert run.history["auxiliary"].max() > 0  # AuxK trained the dead features


def test_the_ranks_train_different_rows(two_ranks):
    """Each rank's share is half of each global batch: a rank alone would end elsewhere."""
    parts = [list(CachedBatches(two_ranks / "sae", batch_size=BATCH, total_tokens=TOKENS, seed=5, rank=r,
                                world_size=2)) for r in range(2)]
    assert parts[0][0].shape[0] == BATCH // 2 and not torch.equal(parts[0][0], parts[1][0])


def test_saekit_train_nproc_launches_torchrun_and_rank_0_writes(two_ranks, tmp_path):
    args = ["train", "--from-cache", str(two_ranks / "sae"), "--arch", "topk", "--k", "4", "--features", "64",
            "--tokens", "4096", "--batch-size", "256", "--seed", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for out, extra in (("one", []), ("two", ["--nproc", "2"])):
        done = subprocess.run([sys.executable, "-m", "saekit", *args, *extra, "--out", str(tmp_path / out)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "launching 2 ranks" in done.stdout and done.stdout.count("saved topk SAE") == 1
    from saekit.formats import load_sae

    one, two = load_sae(tmp_path / "one"), load_sae(tmp_path / "two")
    torch.testing.assert_close(one.W_dec, two.W_dec, rtol=1e-4, atol=1e-6)
    assert two.provenance.hook == "h" and not (tmp_path / "two" / "checkpoints").exists()
