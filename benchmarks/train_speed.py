"""Training throughput on identical activation batches, for saekit, SAELens or sparsify (run in each one's venv).

usage: python -m benchmarks.train_speed saekit|saekit-fp32|saelens|sparsify topk|relu [batch]
→ prints "TOKPS <tokens/s>" (saekit: products in the dtype it picks here, printed as "DTYPE <dtype>";
saekit-fp32: forced fp32). All train d_in 512 → 4096 features, batch 4096 unless given, on the same seeded
batches shaped like MLP activations (sparse non-negative mixtures of directions); timed over steps after a
warm-up. saekit and SAELens use Adam lr 3e-4; sparsify uses its default optimiser (see `train_sparsify`).
"""

from __future__ import annotations

import itertools
import sys
import time

import torch

D_IN, N_FEATURES, BATCH, K = 512, 4096, 4096, 32
WARMUP, STEPS = 5, 25


def batches(n_distinct: int = 8, batch: int = BATCH) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    basis = torch.randn(2048, D_IN, generator=g) / D_IN**0.5
    out = []
    for i in range(n_distinct):
        gi = torch.Generator().manual_seed(1000 + i)
        idx = torch.randint(0, 2048, (batch, 24), generator=gi)
        coef = torch.rand(batch, 24, generator=gi)
        mix = torch.einsum("bk,bkd->bd", coef, basis[idx]) * 4 + 0.05 * torch.randn(batch, D_IN, generator=gi)
        out.append(torch.relu(mix))
    return out


def timed_stream(data: list[torch.Tensor], stamps: list[float]):
    for i in itertools.count():
        stamps.append(time.perf_counter())
        yield data[i % len(data)]


def train_saekit(arch: str, stream, total: int, compute: str = "auto") -> None:
    """saekit's trainer as `saekit train` runs it: in a process that keeps freed blocks for reuse."""
    import saekit
    from saekit.training.allocator import retain_freed_memory

    retain_freed_memory()

    kw = {"k": K} if arch == "topk" else {}
    sae = saekit.SAE.create(arch, d_in=D_IN, n_features=N_FEATURES, **kw)
    cfg = saekit.TrainConfig(total_tokens=total, lr=3e-4, l1_coefficient=5.0, compute_dtype=compute)
    result = saekit.train(sae, stream, cfg, progress=False)
    print(f"DTYPE {result.summary['compute_dtype']}")


def train_saelens(arch: str, stream, total: int, batch: int = BATCH) -> None:
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    if arch == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=N_FEATURES, k=K))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=D_IN, d_sae=N_FEATURES, l1_coefficient=5.0))
    cfg = SAETrainerConfig(total_training_samples=total, train_batch_size_samples=batch, lr=3e-4, lr_end=3e-4,
                           logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=1)
    SAETrainer(cfg, sae, stream).fit()


def train_sparsify(arch: str, stream, total: int) -> None:
    """sparsify's own SparseCoder and the step its `Trainer.fit` takes (on CPU, in its default config), on batches
    instead of a model's hooked activations: that trainer only reads activations from a model forward.

    Per step, as its hook and loop do: decoder rows renormalised, SparseCoder forward (fused encoder with its
    index_add backward, embedding_bag decoder: Triton is CUDA-only; bf16 autocast only on CUDA, so fp32 here),
    FVU loss (AuxK off: auxk_alpha defaults to 0), backward, parallel decoder gradient removed, its default
    optimiser (signum: SignSGD in schedule-free's wrapper, momentum 0.95, lr 5e-3 / sqrt(latents / 2^14)),
    dead-latent counters updated, FVU read for logging. b_dec starts at the first batch's mean."""
    if arch != "topk":
        raise ValueError("sparsify trains TopK sparse coders only")
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify.sign_sgd import SignSGD

    torch.set_float32_matmul_precision("high")  # as its fit() does
    sae = SparseCoder(D_IN, SparseCoderConfig(num_latents=N_FEATURES, k=K), "cpu", dtype=torch.float32)
    opt = ScheduleFreeWrapper(SignSGD([dict(params=sae.parameters(), lr=5e-3 / (N_FEATURES / 2**14) ** 0.5)]),
                              momentum=0.95)
    opt.train()
    since_fired = torch.zeros(N_FEATURES, dtype=torch.long)
    did_fire = torch.zeros(N_FEATURES, dtype=torch.bool)
    seen = 0
    for step, x in enumerate(stream):
        if seen >= total:
            break
        if step == 0:
            sae.b_dec.data = x.mean(0).to(sae.dtype)
        sae.set_decoder_norm_to_unit_norm()
        total_variance = (x - x.mean(0)).pow(2).sum()
        out = sae(x=x, y=x, dead_mask=None, total_variance=total_variance)
        did_fire[out.latent_indices.flatten()] = True
        float(out.fvu.detach())
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            since_fired += x.shape[0]
            since_fired[did_fire] = 0
            did_fire.zero_()
        seen += x.shape[0]


def main(side: str, arch: str, batch: int = BATCH) -> float:
    torch.manual_seed(0)
    stamps: list[float] = []
    total = batch * (WARMUP + STEPS)
    stream = timed_stream(batches(batch=batch), stamps)
    if side == "saelens":
        train_saelens(arch, stream, total, batch)
    elif side == "sparsify":
        train_sparsify(arch, stream, total)
    else:
        train_saekit(arch, stream, total, "float32" if side == "saekit-fp32" else "auto")
    seconds = stamps[-1] - stamps[WARMUP]
    return (len(stamps) - 1 - WARMUP) * batch / seconds


if __name__ == "__main__":
    print(f"TOKPS {main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:4])):.1f}")
