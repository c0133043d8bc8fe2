"""Training throughput on identical activation batches, for saekit or SAELens (run in each one's venv).

usage: python -m benchmarks.train_speed saekit|saekit-fp32|saelens topk|relu   → prints "TOKPS <tokens/s>"
(saekit: products in the dtype it picks here, printed as "DTYPE <dtype>"; saekit-fp32: forced fp32)
Both train d_in 512 → 4096 features, batch 4096, Adam lr 3e-4, on the same seeded batches shaped like
MLP activations (sparse non-negative mixtures of directions); timed over steps after a warm-up.
"""

from __future__ import annotations

import itertools
import sys
import time

import torch

D_IN, N_FEATURES, BATCH, K = 512, 4096, 4096, 32
WARMUP, STEPS = 5, 25


def batches(n_distinct: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    basis = torch.randn(2048, D_IN, generator=g) / D_IN**0.5
    out = []
    for i in range(n_distinct):
        gi = torch.Generator().manual_seed(1000 + i)
        idx = torch.randint(0, 2048, (BATCH, 24), generator=gi)
        coef = torch.rand(BATCH, 24, generator=gi)
        mix = torch.einsum("bk,bkd->bd", coef, basis[idx]) * 4 + 0.05 * torch.randn(BATCH, D_IN, generator=gi)
        out.append(torch.relu(mix))
    return out


def timed_stream(data: list[torch.Tensor], stamps: list[float]):
    for i in itertools.count():
        stamps.append(time.perf_counter())
        yield data[i % len(data)]


def train_saekit(arch: str, stream, total: int, compute: str = "auto") -> None:
    import saekit

    kw = {"k": K} if arch == "topk" else {}
    sae = saekit.SAE.create(arch, d_in=D_IN, n_features=N_FEATURES, **kw)
    cfg = saekit.TrainConfig(total_tokens=total, lr=3e-4, l1_coefficient=5.0, compute_dtype=compute)
    result = saekit.train(sae, stream, cfg, progress=False)
    print(f"DTYPE {result.summary['compute_dtype']}")


def train_saelens(arch: str, stream, total: int) -> None:
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    if arch == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=N_FEATURES, k=K))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=D_IN, d_sae=N_FEATURES, l1_coefficient=5.0))
    cfg = SAETrainerConfig(total_training_samples=total, train_batch_size_samples=BATCH, lr=3e-4, lr_end=3e-4,
                           logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=1)
    SAETrainer(cfg, sae, stream).fit()


def main(side: str, arch: str) -> float:
    torch.manual_seed(0)
    stamps: list[float] = []
    total = BATCH * (WARMUP + STEPS)
    if side == "saelens":
        train_saelens(arch, timed_stream(batches(), stamps), total)
    else:
        train_saekit(arch, timed_stream(batches(), stamps), total, "float32" if side == "saekit-fp32" else "auto")
    seconds = stamps[-1] - stamps[WARMUP]
    return (len(stamps) - 1 - WARMUP) * BATCH / seconds


if __name__ == "__main__":
    print(f"TOKPS {main(sys.argv[1], sys.argv[2]):.1f}")
