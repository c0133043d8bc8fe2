"""`saekit demo`: the embedded default built end to end, cached step by step and resumable.

    corpus → tokenizer → models A and B            (saekit.embedded)
    → SAEs on A at several sizes, one on B          (saekit.train on activations through nnsight)
    → evaluation table (CSV)                        (saekit.evaluate on held-out tokens)
    → feature data for the notebooks                (feature stores, universality, splitting)

Each step is skipped when its inputs are unchanged (`saekit.cached_steps`); an interrupted (even killed) run
resumes, SAE training included (from its checkpoints), and ends with the numbers an uninterrupted run gives:
every step's cache key holds the code version that computes it, the corpus manifest hash, the product
dtype and the thread count (both fixed per build, never chosen by timing or load), and every step writes
its record last and atomically. `open_demo()` reads what a run built.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch

from saekit.activations.nnsight_api import context_length, load_model
from saekit.activations.source import ActivationConfig, ActivationSource
from saekit.activations.windows import TokenSource, TokenWindows, windows_from_tokens
from saekit.cached_steps import (
    begin_step,
    code_version,
    end_step,
    input_key,
    is_built,
    run_step,
    write_json_atomic,
    write_text_atomic,
)
from saekit.embedded import EmbeddedConfig, build_embedded
from saekit.embedded.build import ProfileName
from saekit.embedded.lm import MLP_HOOK, MLP_INPUT_HOOK, MLP_OUTPUT_HOOK, model_identity
from saekit.embedded.threads import available_cores, torch_threads
from saekit.folder_lock import folder_lock
from saekit.saes.registry import sae_class
from saekit.training.allocator import retain_freed_memory
from saekit.training.decoder_finetune import finetune_decoder
from saekit.training.precision import resolve_compute_dtype

if TYPE_CHECKING:
    from saekit.activations.reading import Reading
    from saekit.analysis.harvest import PairJob, Reader, StoreJob
    from saekit.training import TrainConfig

DEMO_DIR_ENV = "SAEKIT_DEMO_DIR"
INDEX = "demo.json"
LATEST = "latest.json"
SAE_VERSION = 2  # bump when SAE training computes something different: built demos retrain their SAEs
EVAL_VERSION = 4  # bump when the evaluation step computes something different: built demos re-evaluate
FEATURES_VERSION = 2  # bump when the feature data step computes something different
EVAL_BATCH = 32  # windows per forward in the evaluation: 3x faster than 8 here; the loss sums' order depends on it


def default_root() -> Path:
    """Where `saekit demo` builds and the notebooks look: $SAEKIT_DEMO_DIR, else ~/.cache/saekit/demo."""
    return Path(os.environ.get(DEMO_DIR_ENV) or Path.home() / ".cache" / "saekit" / "demo").expanduser()


@dataclass(frozen=True)
class SAESpec:
    """One dictionary the demo trains."""

    model: Literal["A", "B"]
    """Which language model's MLP it decomposes (a crosscoder's first model)."""
    arch: Literal["relu", "topk", "batchtopk", "jumprelu"]
    """SAE architecture."""
    n_features: int
    """Dictionary size."""
    tokens: int
    """Training tokens."""
    lr: float = 1e-3
    """Adam learning rate."""
    l1_coefficient: float = 5.0
    """relu: λ of the L1 penalty."""
    k: int = 32
    """topk/batchtopk: active features per token."""
    recipe: Literal["april_2024", "towards_monosemanticity", "default"] = "default"
    """Training recipe: a TrainConfig preset by name, or "default" (TrainConfig's own defaults)."""
    resample: bool = False
    """Resample dead features four times in the first half of training (the 2023 recipe's way)."""
    resample_at: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)
    """With `resample`: the shares of training at which dead features are resampled (2023: four in the first half)."""
    l1_warmup: float = 0.05
    """relu: share of training over which λ rises from 0 (longer: features form before sparsity presses them)."""
    refit_tokens: int = 0
    """Tokens read after training on which W_dec and b_dec are refit by least squares (0: none; see
    saekit.training.decoder_refit): the L1's shrinkage leaves the reconstruction, the features stay as trained."""
    finetune_tokens: int = 0
    """Tokens of the training text on which W_dec and b_dec are then tuned on the KL to the clean model, the codes
    held fixed (0: none; see saekit.training.decoder_finetune): the reconstruction the model reads best."""
    kind: Literal["sae", "transcoder", "crosscoder"] = "sae"
    """sae: reads and rebuilds the MLP neurons; transcoder: reads the MLP's input and rebuilds its output;
    crosscoder: reads both models' MLP neurons at once and rebuilds each."""

    def __post_init__(self) -> None:
        sae_class(self.arch)  # an unknown architecture fails here, naming the known ones
        if self.kind not in ("sae", "transcoder", "crosscoder"):
            raise ValueError(f"SAESpec kind {self.kind!r}: use 'sae', 'transcoder' or 'crosscoder'")
        if self.kind != "sae" and self.finetune_tokens:
            raise ValueError(f"SAESpec {self.name}: the decoder fine-tune is an SAE's; set finetune_tokens=0")
        if self.kind == "crosscoder" and self.model != "A":
            raise ValueError(f"SAESpec {self.name}: a crosscoder reads A and B; give model='A'")
        if self.tokens < 1:
            raise ValueError(f"SAESpec {self.name}: tokens must be positive (got {self.tokens})")
        for name in ("refit_tokens", "finetune_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"SAESpec {self.name}: {name} must be >= 0 (got {getattr(self, name)}; 0: none)")

    @property
    def name(self) -> str:
        models = "AB" if self.kind == "crosscoder" else self.model
        return f"{models}-{self.arch}-{self.n_features}" + ("" if self.kind == "sae" else f"-{self.kind}")

    @property
    def models(self) -> tuple[str, ...]:
        """The language models it reads: its own, or A and B for a crosscoder."""
        return ("A", "B") if self.kind == "crosscoder" else (self.model,)

    @property
    def stream(self) -> tuple[tuple[str, ...], str, int]:
        """What its training reads (models, hooks by kind, tokens with the refit's): dictionaries with equal
        streams get the same batches, so they train from one pass (`saekit.train_many`)."""
        return self.models, self.kind, self.tokens + self.refit_tokens

    def activation_config(self, context: int, batch_size: int, seed: int) -> ActivationConfig:
        """Where it reads and what it rebuilds, for `ActivationSource`."""
        hooks = dict(hook=MLP_INPUT_HOOK, target_hook=MLP_OUTPUT_HOOK) if self.kind == "transcoder" else \
            dict(hook=MLP_HOOK)
        return ActivationConfig(**hooks, context_len=context, batch_size=batch_size,
                                total_tokens=self.tokens + self.refit_tokens, seed=seed)

    def hyperparams(self) -> dict[str, Any]:
        """The architecture's own `SAE.create` arguments this spec sets (k, for the architectures that take it)."""
        return {"k": self.k} if "k" in sae_class(self.arch).hyperparameter_names() else {}


@dataclass(frozen=True)
class DemoProfile:
    """Everything a demo run builds besides the corpus and the models (those are saekit.embedded's)."""

    name: str
    """Profile name ("quick", "full"), also the folder under the demo root."""
    saes: tuple[SAESpec, ...]
    """The dictionaries, the A family first (small → large)."""
    batch_size: int = 1024
    """SAE training batch (activation vectors per step): short runs need the Adam steps small batches give."""
    eval_tokens: int = 32_768
    """Held-out tokens each SAE is evaluated on."""
    store_tokens: int = 200_000
    """Tokens the A/1 and neuron feature stores scan."""
    family_store_tokens: int = 100_000
    """Tokens the other dictionaries' feature stores scan."""
    universality_tokens: int = 200_000
    """Tokens over which A/1 and B/1 (and the neurons) are correlated."""
    splitting_tokens: int = 100_000
    """Tokens over which the A family's features are linked."""
    seed: int = 0
    """Seed for window order and SAE initialisation."""
    a1_features: int = 4096
    """Size of the A/1 analogue (the dictionary on model A studied in depth)."""
    a1_arch: str = "relu"
    """Architecture of A/1, B/1 and the size family (the paper's: ReLU with an L1 penalty)."""
    embedded: EmbeddedConfig | None = None
    """Corpus, tokenizer and language models; None: saekit.embedded's settings for the profile name."""

    def __post_init__(self) -> None:
        keys = {(s.model, s.arch, s.n_features) for s in self.saes if s.kind == "sae"}
        for model in ("A", "B"):
            if (model, self.a1_arch, self.a1_features) not in keys:
                raise ValueError(f"DemoProfile {self.name!r}: add a {self.a1_arch} SAE with {self.a1_features} "
                                 f"features on "
                                 f"model {model} (A/1 and B/1 are compared for universality), or change a1_features")
        if len({s.name for s in self.saes}) != len(self.saes):
            raise ValueError(f"DemoProfile {self.name!r}: two SAEs share a name (model-arch-size); make them differ")
        for name, value in vars(self).items():
            if name.endswith("_tokens") and value < 1:
                raise ValueError(f"DemoProfile {self.name!r}: {name} must be positive")

    @property
    def embedded_config(self) -> EmbeddedConfig:
        return self.embedded or EmbeddedConfig.profile(self.name)

    @property
    def a1(self) -> SAESpec:
        """The paper's A/1 analogue: relu, 4096 features, on model A."""
        return next(s for s in self.saes
                    if (s.model, s.arch, s.n_features, s.kind) == ("A", self.a1_arch, self.a1_features, "sae"))

    def family(self, model: str = "A") -> list[SAESpec]:
        """The dictionaries of A/1's architecture on one model, small → large (for splitting)."""
        return sorted((s for s in self.saes if s.model == model and s.arch == self.a1_arch and s.kind == "sae"),
                      key=lambda s: s.n_features)


def _relu(model: str, n: int, tokens: int, l1: float, lr: float = 3e-3, **more: Any) -> SAESpec:
    """A ReLU+L1 dictionary: the April 2024 recipe (L1 weighted by decoder norms: a better loss at the same
    L0 than 2023's unit-norm decoders) with the 2023 dead-feature resampling."""
    return SAESpec(model, "relu", n, tokens, lr=lr, l1_coefficient=l1, recipe="april_2024", resample=True, **more)


FULL_L1 = 5.5
"""λ of the full profile's relu dictionaries, chosen for universality: A/1's median best-match correlation with B/1
rises as L0 falls (0.44 at L0 36, 0.53 at 14, 0.59 at 8; neurons 0.34), and so does its loss increase (+0.21,
+0.22, +0.32 nats with the least-squares decoder). The decoder's KL fine-tune then takes the loss down without
touching the codes (A/1: +0.35 -> +0.23 nats), so the sparsity universality needs no longer costs the loss."""
FINETUNE_TOKENS = 200_000
"""Tokens of the decoder's KL fine-tune for model A's dictionaries (measured on a study A/1 at λ 5, +0.30 nats with
the least-squares decoder: 100k at lr 2e-3 left +0.24 nats, 200k at 1e-3 +0.20)."""


def _april(model: str, n: int, tokens: int, finetune: bool = True) -> SAESpec:
    """A ReLU+L1 dictionary of the full profile: the April 2024 recipe (λ FULL_L1, lr 3e-3, no resampling), the
    least-squares decoder for its codes on 100k further tokens (the L1's shrinkage taken out), then the decoder's
    KL fine-tune (the reconstruction the model reads best), the codes unchanged throughout."""
    return SAESpec(model, "relu", n, tokens, lr=3e-3, l1_coefficient=FULL_L1, recipe="april_2024",
                   refit_tokens=100_000, finetune_tokens=FINETUNE_TOKENS if finetune else 0)


LATE_RESAMPLING = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
"""Resampling on until 70% of a short run: at lr 3e-3 a 4096-feature dictionary keeps losing features after
the 2023 recipe's last resample at 40% (measured on the quick corpus: 3% dead but FVU 0.25 with four resamples,
0.5% dead and FVU 0.13 with seven)."""

PROFILES: dict[str, DemoProfile] = {
    # quick: CI and a first look, in under 4 minutes on 2 idle cores (half of it the two language models).
    # Short runs sit on a knife edge between dense and dying: lr 3e-3 kills most of a 2048-feature dictionary
    # (70-80% dead) and lr 1e-3 keeps every feature alive; so the mid sizes learn at 1-2e-3 with more λ, and
    # the 4096s at 3e-3 with resampling until 70% (A/1's L0 stays in the paper's range).
    "quick": DemoProfile(
        "quick",
        (_relu("A", 512, 150_000, 0.8), _relu("A", 1024, 150_000, 1.5, lr=2e-3),
         _relu("A", 2048, 150_000, 4.0, lr=1e-3), _relu("A", 4096, 200_000, 0.4, resample_at=LATE_RESAMPLING))
        + (SAESpec("A", "topk", 4096, 200_000, lr=1e-3, k=32),
           _relu("B", 4096, 200_000, 0.4, resample_at=LATE_RESAMPLING),
           SAESpec("A", "topk", 4096, 200_000, lr=1e-3, k=32, kind="transcoder"),
           SAESpec("A", "topk", 4096, 200_000, lr=1e-3, k=64, kind="crosscoder")),
        eval_tokens=16_384,
        store_tokens=60_000,
        family_store_tokens=30_000,
        universality_tokens=60_000,
        splitting_tokens=30_000,
    ),
    # full: the paper's experiments at small scale, in under 25 minutes on 2 cores (40% of it the two language
    # models). Every relu dictionary has one recipe (the April 2024 update at lr 3e-3 on batches of 512: twice
    # the Adam steps of batches of 1024, which at lr 2e-3 already moved FVU 0.27 -> 0.22 and universality
    # 0.55 -> 0.58 at the same tokens), a least-squares decoder, then the decoder's KL fine-tune. A/1 and B/1 are
    # trained alike; B/1 is read through its codes only (universality), which the fine-tune leaves as they are, so
    # it is not fine-tuned.
    "full": DemoProfile(
        "full",
        (_april("A", 512, 600_000), _april("A", 1024, 800_000), _april("A", 2048, 1_000_000),
         _april("A", 4096, 2_500_000), _april("A", 8192, 700_000), _april("A", 16384, 700_000))
        + (SAESpec("A", "topk", 4096, 1_000_000, lr=2e-3, k=32, finetune_tokens=FINETUNE_TOKENS),
           _april("B", 4096, 2_500_000, finetune=False),
           SAESpec("A", "topk", 4096, 1_000_000, lr=2e-3, k=32, kind="transcoder"),
           SAESpec("A", "topk", 4096, 1_000_000, lr=1e-3, k=64, kind="crosscoder")),
        batch_size=512,
        eval_tokens=65_536,
        store_tokens=300_000,
        family_store_tokens=60_000,
        universality_tokens=300_000,
        splitting_tokens=150_000,
    ),
}


# --- the steps ------------------------------------------------------------------------------------


def shuffled_windows(tokens: np.ndarray, context_len: int, seed: int) -> TokenWindows:
    """The token stream cut into windows [n, context_len], in a seeded random order (the corpus is stored
    subset by subset; SAE training wants every subset all along)."""
    n = len(tokens) // context_len
    ids = torch.as_tensor(np.asarray(tokens[: n * context_len], dtype=np.int64)).view(n, context_len)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return windows_from_tokens(ids[order], context_len)


def mixed_heldout_windows(heldout: Path, model: Any, seed: int) -> TokenWindows:
    """The held-out split as the model's windows in a seeded order: the split is stored subset by subset, so its
    first N tokens would all be one kind of text; evaluation and feature data read a mix."""
    return shuffled_windows(np.load(heldout, mmap_mode="r"), context_length(model), seed)


def first_windows(windows: TokenWindows, tokens: int) -> TokenWindows:
    """The first windows holding at least `tokens` real tokens (all of them if fewer)."""
    return TokenSource(windows, None, windows.input_ids.shape[1], len(windows)).take(tokens)


def sae_compute_dtype(spec: SAESpec, d_in: int) -> str:
    """The product dtype an SAE of this spec trains with on the CPU ("float32" or "bfloat16"), decided from the
    hardware (never timed): the demo fixes it per build and keys the SAE step on it."""
    dtype = resolve_compute_dtype("auto", torch.float32, torch.device("cpu"), d_in, spec.n_features)
    return str(dtype).removeprefix("torch.")


def spec_train_config(spec: SAESpec, folder: Path, compute_dtype: str = "auto") -> TrainConfig:
    """The TrainConfig a demo SAE trains with: its recipe's preset with the spec's settings, checkpointing into
    `folder`."""
    from saekit.training import TrainConfig

    common = dict(total_tokens=spec.tokens, lr=spec.lr, l1_coefficient=spec.l1_coefficient,
                  compute_dtype=compute_dtype, l1_warmup_fraction=spec.l1_warmup,
                  decoder_refit_tokens=spec.refit_tokens,
                  dead_window_tokens=max(1, spec.tokens // 20),  # dead: silent for 5% of the run
                  checkpoint_dir=str(folder / "checkpoints"), checkpoint_every_tokens=max(1, spec.tokens // 4))
    cfg = TrainConfig(**common) if spec.recipe == "default" else getattr(TrainConfig, spec.recipe)(**common)
    if spec.resample and not cfg.resample_at:
        cfg = cfg.replace(resample_at=spec.resample_at)
    if cfg.resample_at:
        cfg = cfg.replace(resample_pool_tokens=min(cfg.resample_pool_tokens, spec.tokens // RESAMPLE_POOL_SHARE))
    return cfg


RESAMPLE_POOL_SHARE = 8
"""A resampling draws from the run's last 1/RESAMPLE_POOL_SHARE of tokens (at most TrainConfig's pool): each one
scores the whole pool through the SAE, and a 65,536-input pool cost the quick A/1 (200k tokens, 7 resamplings)
about 40 of its 71 s on one thread. Measured on the quick demo (time; A/1's loss increase): 65,536 inputs 259 s,
+0.055 nats; a quarter of the run 252 s, +0.070; an eighth 219 s, +0.114."""


def train_demo_saes_together(specs: Sequence[SAESpec], model_folders: Sequence[Path], train_tokens: Path,
                             profile: DemoProfile, folders: Sequence[Path], progress: bool = True,
                             compute_dtypes: Sequence[str] | None = None,
                             saved: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train dictionaries of one stream (`SAESpec.stream`, on the models of `model_folders`, in order) from one
    pass over their activations (`saekit.train_many`), each into its folder and resumed from its latest complete
    checkpoint; each ends byte for byte as it would alone. `saved(i, outputs)` is called as the i-th is saved
    (compute_dtypes: the products' dtype of each; None: `sae_compute_dtype`)."""
    import shutil

    from saekit.saes import SAE
    from saekit.training import train_many

    if len({spec.stream for spec in specs}) != 1:
        raise ValueError(f"{[spec.name for spec in specs]} read different activations: train each stream apart")
    loaded = [load_model(path) for path in model_folders]
    model = loaded[0]
    context = context_length(model)
    tokens = np.load(train_tokens, mmap_mode="r")
    windows = shuffled_windows(tokens, context, profile.seed)
    source = ActivationSource(loaded, windows,
                              specs[0].activation_config(context, profile.batch_size, profile.seed), progress=False)
    saes = [SAE.create(spec.arch, source.d_in, spec.n_features, d_out=source.d_out, n_models=len(loaded),
                       seed=profile.seed, **spec.hyperparams()) for spec in specs]
    dtypes = compute_dtypes or [sae_compute_dtype(spec, source.d_in) for spec in specs]
    configs = [spec_train_config(spec, folder, dtype) for spec, folder, dtype in zip(specs, folders, dtypes)]
    runs = train_many(saes, source, configs, resume=[latest_checkpoint(folder / "checkpoints") for folder in folders],
                      progress=progress)
    results = []
    for i, (spec, sae, run, folder) in enumerate(zip(specs, saes, runs, folders)):
        tuned = None
        if spec.finetune_tokens:
            tuned = finetune_decoder(sae, model, shuffled_windows(tokens, context, profile.seed + 1), MLP_HOOK,
                                     spec.finetune_tokens, compute_dtype=getattr(torch, run.summary["compute_dtype"]),
                                     progress=progress)._asdict()
            run.summary["decoder_finetune"] = tuned  # the summary is the SAE's provenance.training
        sae.provenance = source.provenance().replace(text=str(train_tokens), training=run.summary)
        sae.save(folder)
        run.history.to_csv(folder / "history.csv", index=False)
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        outputs = {"tokens": run.summary["tokens"], "l0": run.summary.get("l0"),
                   "resampled_features": run.summary["resampled_features"],
                   "compute_dtype": run.summary["compute_dtype"], **({"decoder_finetune": tuned} if tuned else {})}
        if saved is not None:
            saved(i, outputs)
        results.append(outputs)
    return results


def train_demo_sae(spec: SAESpec, model_folders: Sequence[Path], train_tokens: Path, profile: DemoProfile,
                   folder: Path, progress: bool = True, compute_dtype: str | None = None) -> dict[str, Any]:
    """Train one dictionary into `folder` (see `train_demo_saes_together`)."""
    return train_demo_saes_together([spec], model_folders, train_tokens, profile, [folder], progress,
                                    None if compute_dtype is None else [compute_dtype])[0]


FINETUNE_COST = 8192
"""A token of decoder fine-tune costs about what one training token of an SAE this wide does (measured, 1 thread)."""
SAE_THREADS = 1
"""Torch threads per demo SAE. The SAEs train side by side, one process per core: on 2 cores two 1-thread runs
make ~1.4x the tokens/s of one 2-thread run (an SAE step's Python and optimizer work is serial). Every dictionary
comes out the same, byte for byte, side by side or one at a time (tests/test_demo.py)."""


@dataclass(frozen=True)
class SAEJob:
    """One demo SAE to train (or find built): its spec, step inputs and folder."""

    spec: SAESpec
    inputs: dict[str, Any]
    out: Path

    @property
    def folder(self) -> Path:
        return self.out / "saes" / self.spec.name

    @property
    def step_name(self) -> str:
        return f"SAE {self.spec.name}"

    @property
    def cost(self) -> float:
        """Relative training time (tokens × features)."""
        return float((self.spec.tokens + self.spec.refit_tokens) * self.spec.n_features
                     + self.spec.finetune_tokens * FINETUNE_COST)


@dataclass(frozen=True)
class SAEGroup:
    """Demo SAEs of one stream, trained from one pass over their activations, in a form a worker process can
    receive."""

    jobs: tuple[SAEJob, ...]
    model_folders: tuple[Path, ...]
    train_tokens: Path
    profile: DemoProfile
    progress: bool

    @property
    def cost(self) -> float:
        """Relative training time: the longest groups start first."""
        return sum(job.cost for job in self.jobs)

    def run(self, log=print) -> list[str]:
        """Train (or reuse) these SAEs with SAE_THREADS threads; returns their step keys."""
        todo = [job for job in self.jobs if begin_step(job.folder, job.step_name, job.inputs, log) is None]
        if todo:
            start = time.perf_counter()
            names = [job.spec.name for job in todo]

            def saved(i: int, outputs: dict[str, Any]) -> None:
                job = todo[i]
                end_step(job.folder, job.step_name, job.inputs, {**outputs, "trained_with": names},
                         time.perf_counter() - start)

            with torch_threads(SAE_THREADS):
                train_demo_saes_together([job.spec for job in todo], self.model_folders, self.train_tokens,
                                         self.profile, [job.folder for job in todo], self.progress,
                                         [job.inputs["compute_dtype"] for job in todo], saved)
        return [input_key(job.inputs) for job in self.jobs]


def _run_sae_group(group: SAEGroup) -> list[str]:
    """A worker process's job: its own process, so freed training blocks are kept for reuse."""
    retain_freed_memory()
    return group.run()


def train_demo_saes(jobs: list[SAEJob], model_folders: dict[str, Path], train_tokens: Path, profile: DemoProfile,
                    progress: bool = True, log=print) -> dict[str, str]:
    """Every SAE's step key, training those not built yet: the SAEs of one stream from one pass, the streams side
    by side (one process per core, the longest first)."""
    keys = {job.spec.name: input_key(job.inputs) for job in jobs if is_built(job.folder, job.inputs)}
    for job in jobs:
        if job.spec.name in keys:
            log(f"[saekit] {job.step_name}: cached ({job.folder})")
    streams: dict[tuple, list[SAEJob]] = {}
    for job in jobs:
        if job.spec.name not in keys:
            streams.setdefault(job.spec.stream, []).append(job)
    groups = sorted((SAEGroup(tuple(group), tuple(model_folders[m] for m in group[0].spec.models), train_tokens,
                              profile, progress) for group in streams.values()), key=lambda group: -group.cost)
    workers = min(len(groups), max(1, available_cores() // SAE_THREADS))
    if workers <= 1:
        done = [group.run(log) for group in groups]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_run_sae_group, groups))
    for group, group_keys in zip(groups, done):
        keys.update(zip((job.spec.name for job in group.jobs), group_keys))
    return {job.spec.name: keys[job.spec.name] for job in jobs}


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The latest complete checkpoint in `checkpoints` (half-written ones are never taken), or None."""
    from saekit.training.checkpoint import find_checkpoint

    try:
        return find_checkpoint(checkpoints) if checkpoints.is_dir() else None
    except FileNotFoundError:
        return None


def evaluate_demo(profile: DemoProfile, out: Path, models: dict[str, Path], heldout: Path, folder: Path,
                  progress: bool = True, corpus_manifest: str = "") -> dict[str, Any]:
    """Evaluate every dictionary on held-out tokens: `eval.csv` (one row per SAE, with the corpus manifest hash
    it all came from) and feature densities, each written atomically."""
    from safetensors.torch import save_file

    from saekit.evaluation import evaluate, evaluate_many
    from saekit.formats import load_sae

    loaded = {name: load_model(path) for name, path in models.items()}
    windows = first_windows(mixed_heldout_windows(heldout, loaded["A"], profile.seed), profile.eval_tokens)
    saes = {spec.name: load_sae(out / "saes" / spec.name) for spec in profile.saes}
    results = {}
    plain = [spec for spec in profile.saes if spec.kind == "sae"]
    for model in dict.fromkeys(spec.model for spec in plain):  # one clean pass per model, shared by its SAEs
        names = [spec.name for spec in plain if spec.model == model]
        evaluated = evaluate_many([saes[n] for n in names], loaded[model], windows, hook=MLP_HOOK, max_tokens=None,
                                  batch_size=EVAL_BATCH, progress=progress)
        results.update(zip(names, evaluated))
    for spec in profile.saes:
        if spec.kind != "sae":  # a transcoder reads and writes its own hooks; a crosscoder reads both models
            models_read = [loaded[m] for m in spec.models]
            results[spec.name] = evaluate(saes[spec.name], models_read if len(models_read) > 1 else models_read[0],
                                          windows, max_tokens=None, batch_size=EVAL_BATCH, progress=progress)
    rows, densities = [], {}
    for spec in profile.saes:
        result, training = results[spec.name], saes[spec.name].provenance.training
        metrics = result.to_dict()
        per_model = metrics.pop("per_model", {})
        rows.append({"name": spec.name, "kind": spec.kind, "model": "+".join(spec.models), "arch": spec.arch,
                     "n_features": spec.n_features, "k": spec.hyperparams().get("k"),
                     "recipe": spec.recipe + (" + resampling" if spec.resample else ""),
                     "train_tokens": training.get("tokens"), "compute_dtype": training.get("compute_dtype"),
                     **metrics, **per_model_columns(per_model, spec.models), "corpus_manifest": corpus_manifest})
        densities[spec.name] = result.densities.contiguous()
    save_file(densities, str(folder / "densities.tmp.safetensors"))
    os.replace(folder / "densities.tmp.safetensors", folder / "densities.safetensors")
    write_text_atomic(folder / "eval.csv", pd.DataFrame(rows).to_csv(index=False))
    return {"rows": len(rows)}


def per_model_columns(per_model: dict[str, dict[str, Any]], models: Sequence[str]) -> dict[str, Any]:
    """A crosscoder's per-model fvu, loss recovered and loss increase as columns `<metric>_<model>` (A, B)."""
    return {f"{metric}_{name}": result.get(metric) for name, result in zip(models, per_model.values())
            for metric in ("fvu", "loss_recovered", "loss_increase")}


def feature_data(profile: DemoProfile, out: Path, models: dict[str, Path], heldout: Path, folder: Path,
                 progress: bool = True) -> dict[str, Any]:
    """What the notebooks open: feature stores, universality tables (A/1 vs B/1) and splitting edges.

    One shared pass (`saekit.analysis.harvest`): each model reads the windows once, each dictionary encodes
    each batch once for its store, the universality sums and the splitting sums; each analysis reads the
    first windows of its own token budget, as `build_feature_store`, `correlate` and `split_similarities`
    would on those windows."""
    from saekit.analysis.harvest import shared_pass
    from saekit.analysis.splitting import split_edges, splitting_from_sums
    from saekit.analysis.universality import best_match_tables

    plan = feature_plan(profile, out, models, heldout)
    shared = shared_pass(plan.readings, plan.readers, plan.stores, plan.pairs, progress=progress)
    for name in list(plan.stores):
        shared.assemble(name).save(folder / "stores" / name)
    universal = best_match_tables(shared.pairs.pop("universality").correlations(shared.pairs.pop("neurons")))
    universal.features.to_parquet(folder / "universality_features.parquet")
    universal.neurons.to_parquet(folder / "universality_neurons.parquet")
    del universal
    family = [plan.readers[s.name].dictionary for s in profile.family("A")]
    edges = []  # level by level (split_edges concatenates levels in order): one level's [n, 2n] matrices at a time
    for small, large in zip(family, family[1:]):
        sums = shared.pairs.pop(f"split-{small.d_sae}").sums
        edges.append(split_edges(splitting_from_sums([small, large], [sums])))
        del sums
    pd.concat(edges, ignore_index=True).to_parquet(folder / "splitting_edges.parquet")
    return {"stores": sorted(plan.stores)}


@dataclass(frozen=True)
class FeaturePlan:
    """The feature data step's analyses as jobs of one shared pass (see `saekit.analysis.harvest`)."""

    readings: dict[str, Reading]  # "A"/"B" → the windows the largest budget needs, read through that model
    readers: dict[str, Reader]  # store/dictionary name → its reader, in encoding order
    stores: dict[str, StoreJob]  # store name → its job
    pairs: dict[str, PairJob]  # "universality", "neurons", "split-<size>" → its job


def feature_plan(profile: DemoProfile, out: Path, models: dict[str, Path], heldout: Path) -> FeaturePlan:
    """Load the models and SAEs and lay out the feature data step's stores and co-activation pairs."""
    from saekit.activations.reading import open_reading, read_settings
    from saekit.analysis.harvest import PairJob, Reader, StoreJob
    from saekit.formats import load_sae
    from saekit.saes.dictionary import Neurons

    loaded = {name: load_model(path) for name, path in models.items()}
    windows = mixed_heldout_windows(heldout, loaded["A"], profile.seed)
    budgets = [v for k, v in vars(profile).items() if k.endswith("_tokens") and k != "eval_tokens"]
    windows = first_windows(windows, max(budgets))

    def n_windows(tokens: int) -> int:
        return len(first_windows(windows, tokens))

    family = profile.family("A")
    a1, b1 = profile.a1.name, replace(profile.a1, model="B").name
    saes = {name: load_sae(out / "saes" / name) for name in [s.name for s in family] + [b1]}
    settings = {read_settings(sae, MLP_HOOK)._replace(context_len=0) for sae in [*saes.values(), Neurons(1)]}
    if len(settings) != 1:
        raise ValueError(f"the demo's dictionaries read their hook differently ({settings}); one pass needs one way")
    readings = {m: open_reading(loaded[m], windows, saes[a1], hook=MLP_HOOK) for m in ("A", "B")}
    d_in = {"A": saes[a1].d_in, "B": saes[b1].d_in}
    # encoding order: a batch's codes are kept until the last reader paired with them is encoded
    readers = {"A-neurons": Reader("A", Neurons(d_in["A"])), "B-neurons": Reader("B", Neurons(d_in["B"]))}
    for spec in family:
        readers[spec.name] = Reader("A", saes[spec.name])
        if spec.name == a1:
            readers[b1] = Reader("B", saes[b1])
    stores = {a1: StoreJob(a1, n_windows(profile.store_tokens)),
              "A-neurons": StoreJob("A-neurons", n_windows(profile.store_tokens)),
              b1: StoreJob(b1, n_windows(profile.family_store_tokens)),
              "B-neurons": StoreJob("B-neurons", n_windows(profile.family_store_tokens))}
    stores.update({s.name: StoreJob(s.name, n_windows(profile.family_store_tokens)) for s in family if s.name != a1})
    pairs = {"universality": PairJob(a1, b1, n_windows(profile.universality_tokens)),
             "neurons": PairJob("A-neurons", "B-neurons", n_windows(profile.universality_tokens))}
    pairs.update({f"split-{a.n_features}": PairJob(a.name, b.name, n_windows(profile.splitting_tokens))
                  for a, b in zip(family, family[1:])})
    return FeaturePlan(readings, readers, stores, pairs)


# --- the run --------------------------------------------------------------------------------------


def run_demo(profile: ProfileName | DemoProfile = "quick", out: str | Path | None = None, *, progress: bool = True,
             log=print) -> DemoOutput:
    """Build (or finish, or reuse) the demo of `profile` in `out` (default: default_root()/profile).

    torch runs with one thread count for the whole build (this process's cores, restored after): the count
    sets the float sums' order, so it is fixed per build and recorded in the steps' keys."""
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    out = Path(out).expanduser() if out is not None else default_root() / prof.name
    log(f"[saekit] demo profile {prof.name!r} in {out}")
    with folder_lock(out, "saekit demo", log), torch_threads(available_cores()):
        evals = _build(prof, out, progress, log)
        write_json_atomic(out / INDEX, {"profile": prof.name, "saes": [s.name for s in prof.saes],
                                        "a1": prof.a1.name, "eval_key": evals.key,
                                        "corpus_manifest": evals.outputs.get("corpus_manifest")})
    if out.parent == default_root() or out == default_root() / prof.name:
        write_json_atomic(out.parent / LATEST, {"path": str(out)}, indent=None)
    demo = open_demo(out)
    _report_eval(demo, out, log)
    return demo


def _build(prof: DemoProfile, out: Path, progress: bool, log) -> Any:
    """Every step of the demo, each cached by its inputs; returns the evaluation step's result."""
    embedded = build_embedded(out, prof.embedded_config, progress=progress)
    _report_models(embedded.summary(), out, log)
    models = {name: result.path for name, result in embedded.models.items()}
    manifest = embedded.corpus.manifest_hash
    model_keys = {name: input_key(model_identity(_read_json(path / "training.json"))) for name, path in models.items()}
    train_tokens, heldout = embedded.tokens.folder / "train.npy", embedded.tokens.folder / "heldout.npy"
    threads = torch.get_num_threads()
    jobs = []
    for spec in prof.saes:
        config = embedded.models[spec.model].config
        d_in = config.d_model if spec.kind == "transcoder" else config.n_mlp * len(spec.models)
        inputs = {"spec": vars(spec), "model": "+".join(model_keys[m] for m in spec.models), "data": manifest,
                  "batch_size": prof.batch_size, "seed": prof.seed, "compute_dtype": sae_compute_dtype(spec, d_in),
                  "threads": SAE_THREADS, "version": code_version(SAE_VERSION)}
        jobs.append(SAEJob(spec, inputs, out))
    sae_keys = train_demo_saes(jobs, models, train_tokens, prof, progress, log)
    eval_inputs = {"saes": sae_keys, "tokens": prof.eval_tokens, "threads": threads, "data": manifest,
                   "version": code_version(EVAL_VERSION)}
    evals = run_step(out / "eval", "evaluation", eval_inputs, log=log,
                     build=lambda folder: {**evaluate_demo(prof, out, models, heldout, folder, progress, manifest),
                                           "corpus_manifest": manifest})
    inputs = {"saes": sae_keys, "threads": threads, "version": code_version(FEATURES_VERSION),
              **{k: v for k, v in vars(prof).items() if k.endswith("_tokens")}}
    run_step(out / "features", "feature data", inputs, log=log,
             build=lambda folder: feature_data(prof, out, models, heldout, folder, progress))
    return evals


def _report_eval(demo: DemoOutput, out: Path, log) -> None:
    """Print the evaluation table, with the corpus manifest hash and product dtypes it was built with."""
    table = demo.eval_table()
    log(table[["name", "arch", "n_features", "compute_dtype", "l0", "dead_fraction", "fvu", "loss_recovered",
               "loss_increase"]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    log(f"[saekit] corpus manifest {table['corpus_manifest'].iloc[0]}; SAEs trained and evaluated with "
        f"{available_cores()} torch threads")
    log(f"[saekit] evaluation table: {out / 'eval' / 'eval.csv'}")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _report_models(summary: pd.DataFrame, out: Path, log) -> None:
    """Print the language models' held-out loss next to the bigram baseline, and say if one fails to beat it."""
    summary.to_csv(out / "models.csv", index=False)
    log(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for row in summary.itertuples():
        gain = row.bigram_loss - row.heldout_loss
        if gain < 0.1:
            verdict = "does not beat" if gain <= 0 else "barely beats"
            log(f"[saekit] warning: model {row.model} {verdict} the bigram baseline ({row.heldout_loss:.2f} vs "
                f"{row.bigram_loss:.2f} nats/token): its features will be weak; train it longer")


# --- reading a built demo ---------------------------------------------------------------------------


class DemoNotFoundError(FileNotFoundError):
    """No built demo where one was looked for; the message names the command that builds it."""


def find_demo(path: str | Path | None = None) -> Path:
    """A built demo folder: `path` itself, else $SAEKIT_DEMO_DIR / default root's latest or full/quick."""
    candidates = [Path(path).expanduser()] if path is not None else []
    if path is None:
        root = default_root()
        latest = _read_json(root / LATEST).get("path") if (root / LATEST).is_file() else None
        candidates = [root] + ([Path(latest)] if latest else []) + [root / "full", root / "quick"]
    for folder in candidates:
        if (folder / INDEX).is_file():
            return folder
    where = candidates[0] if candidates else default_root()
    raise DemoNotFoundError(
        f"no saekit demo at {where}: build one with `saekit demo --profile quick` (or `make demo`), "
        f"or point ${DEMO_DIR_ENV} at a demo folder"
    )


def open_demo(path: str | Path | None = None) -> DemoOutput:
    """What a `saekit demo` run built (see `find_demo` for where it looks)."""
    return DemoOutput(find_demo(path))


class DemoOutput:
    """Read access to a built demo: models, tokens, SAEs, the evaluation table and the feature data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.index = _read_json(root / INDEX)
        self.profile: str = self.index["profile"]
        self.a1_name: str = self.index["a1"]
        self._models: dict[str, Any] = {}

    def model_path(self, name: str = "A") -> Path:
        return self.root / f"model_{name}"

    def model(self, name: str = "A"):
        """The nnsight model of language model "A" or "B" (loaded once)."""
        if name not in self._models:
            self._models[name] = load_model(self.model_path(name))
        return self._models[name]

    def tokenizer(self):
        from saekit.embedded import load_tokenizer

        return load_tokenizer(self.root / "tokenizer")

    def heldout_tokens(self) -> np.ndarray:
        return np.load(self.root / "tokens" / "heldout.npy", mmap_mode="r")

    def train_tokens(self) -> np.ndarray:
        return np.load(self.root / "tokens" / "train.npy", mmap_mode="r")

    def models_table(self) -> pd.DataFrame:
        """Held-out loss of models A and B next to the bigram baseline."""
        return pd.read_csv(self.root / "models.csv")

    def eval_table(self) -> pd.DataFrame:
        return pd.read_csv(self.root / "eval" / "eval.csv")

    def sae_names(self) -> list[str]:
        return list(self.index["saes"])

    def sae(self, name: str):
        from saekit.formats import load_sae

        if name not in self.sae_names():
            raise KeyError(f"no SAE {name!r} in this demo; choose one of {self.sae_names()}")
        return load_sae(self.root / "saes" / name)

    def family_names(self, model: str = "A") -> list[str]:
        """The relu dictionaries of one model, small → large (the splitting family)."""
        names = [n for n in self.sae_names() if n.startswith(f"{model}-relu-") and n.count("-") == 2]
        return sorted(names, key=lambda n: int(n.rsplit("-", 1)[1]))

    def density(self, name: str) -> torch.Tensor:
        """[d_sae] feature densities on the held-out evaluation tokens."""
        from safetensors.torch import load_file

        return load_file(str(self.root / "eval" / "densities.safetensors"))[name]

    def feature_store(self, name: str):
        """The precomputed feature store of an SAE name, or of "A-neurons" / "B-neurons"."""
        from saekit.analysis.features import FeatureStore

        folder = self.root / "features" / "stores" / name
        if not folder.is_dir():
            have = sorted(p.name for p in (self.root / "features" / "stores").iterdir())
            raise KeyError(f"no feature store {name!r}; this demo has {have}")
        return FeatureStore.load(folder)

    def universality(self):
        """Best matches of A/1's features among B/1's, and of A's neurons among B's (precomputed)."""
        from saekit.analysis.universality import Universality

        folder = self.root / "features"
        return Universality(pd.read_parquet(folder / "universality_features.parquet"),
                            pd.read_parquet(folder / "universality_neurons.parquet"))

    def splitting_edges(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / "features" / "splitting_edges.parquet")

    def __repr__(self) -> str:
        return f"DemoOutput({str(self.root)!r}, profile={self.profile!r}, saes={self.sae_names()})"
