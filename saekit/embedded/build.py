"""The embedded default end to end: corpus -> tokenizer -> tokens -> models A and B, reusing what is built.

Folder layout under `out`: `corpus/`, `tokenizer/`, `tokens/`, `model_A/`, `model_B/`.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple

import pandas as pd

from saekit.cached_steps import code_version
from saekit.embedded.corpus import Corpus, CorpusConfig, build_corpus
from saekit.embedded.lm import LM_VERSION, MODEL_SEEDS, LMConfig, LMResult, train_lm
from saekit.embedded.threads import available_cores
from saekit.embedded.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer
from saekit.embedded.tokens import TOKENS_VERSION, TokenizedCorpus, load_tokenized, tokenize_corpus

ProfileName = Literal["quick", "full"]
"""The built-in profiles: quick (CI, a first look) and full (the paper's experiments at small scale)."""


@dataclass(frozen=True)
class EmbeddedConfig:
    """Corpus, tokenizer and language-model settings of one profile."""

    corpus: CorpusConfig
    tokenizer: TokenizerConfig
    lm: LMConfig

    @classmethod
    def profile(cls, name: ProfileName) -> EmbeddedConfig:
        """quick: ~4 MB corpus, ~2 minutes for both models side by side; full: ~40 MB, ~12 minutes for both."""
        return cls(CorpusConfig.profile(name), TokenizerConfig(), LMConfig.profile(name))


class EmbeddedBuild(NamedTuple):
    """What `build_embedded` made: the corpus, tokenizer folder, token arrays and trained models by name."""

    corpus: Corpus
    tokenizer_path: Path
    tokens: TokenizedCorpus
    models: dict[str, LMResult]

    def summary(self) -> pd.DataFrame:
        """One row per model: seed, training tokens and time, held-out loss against the bigram baseline."""
        rows = [
            {
                "model": name,
                "seed": r.config.seed,
                "train_tokens": r.config.steps * r.config.batch_size * r.config.context,
                "threads": r.config.torch_threads,
                "seconds": r.seconds,
                "tokens_per_second": r.tokens_per_second,
                "heldout_loss": r.heldout_loss,
                "bigram_loss": r.bigram_loss,
                "gain_over_bigram": r.bigram_loss - r.heldout_loss,
            }
            for name, r in self.models.items()
        ]
        return pd.DataFrame(rows)


def load_lm_result(folder: str | Path) -> LMResult:
    """The result of a model folder written by `train_lm` (from its training.json and history.csv)."""
    folder = Path(folder)
    summary = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    return LMResult(
        path=folder,
        config=LMConfig(**summary["config"]),
        history=pd.read_csv(folder / "history.csv"),
        heldout_loss=summary["heldout_loss"],
        bigram_loss=summary["bigram_loss"],
        heldout_tokens=summary["heldout_tokens"],
        tokens_per_second=summary["tokens_per_second"],
        seconds=summary["seconds"],
    )


def tokens_for(corpus: Corpus, out: Path, config: TokenizerConfig, progress: bool) -> TokenizedCorpus:
    """Tokenizer and token arrays for `corpus`, reused when `out/tokens` was made from this corpus with this
    tokenizer config and code version. tokens.json is written last (and removed before a rebuild starts), so
    a killed build is rebuilt rather than trusted."""
    tokens_json = out / "tokens" / "tokens.json"
    wanted = {"corpus_manifest_hash": corpus.manifest_hash, "tokenizer": asdict(config),
              "code_version": code_version(TOKENS_VERSION)}
    if tokens_json.is_file() and (out / "tokenizer" / "tokenizer.json").is_file():
        meta = json.loads(tokens_json.read_text(encoding="utf-8"))
        if all(meta.get(k) == v for k, v in wanted.items()):
            return load_tokenized(out / "tokens")
    tokens_json.unlink(missing_ok=True)
    tokenizer = train_tokenizer(corpus, out / "tokenizer", config, progress=progress)
    return tokenize_corpus(corpus, tokenizer, out / "tokens", progress=progress, extra=wanted)


def data_identity(tokens: TokenizedCorpus) -> dict[str, object]:
    """What identifies the tokens a model trains on (recorded in its training.json, compared on reuse)."""
    meta = json.loads((tokens.folder / "tokens.json").read_text(encoding="utf-8"))
    return {k: meta.get(k) for k in ("corpus_manifest_hash", "tokenizer", "code_version")}


def _trained(out: Path, config: LMConfig, data: dict[str, object]) -> LMResult | None:
    """The model in `out` if it was trained with `config` (threads included: they set the float sums' order),
    on these tokens, by this code version; None otherwise."""
    if not (out / "training.json").is_file():
        return None
    summary = json.loads((out / "training.json").read_text(encoding="utf-8"))
    if summary.get("code_version") != code_version(LM_VERSION) or summary.get("data") != data:
        return None
    return load_lm_result(out) if LMConfig(**summary["config"]) == config else None


def model_for(tokens: TokenizedCorpus, out: Path, config: LMConfig, progress: bool, position: int = 0) -> LMResult:
    """A model trained with `config`, reused when `out` already holds one trained with the same config on the
    same tokens."""
    data = data_identity(tokens)
    previous = _trained(out, config, data)
    if previous is not None:
        return previous
    tokenizer = load_tokenizer(tokens.folder.parent / "tokenizer")
    train, heldout = tokens.tokens("train"), tokens.tokens("heldout")
    return train_lm(train, heldout, tokenizer, out, config, progress=progress, position=position, data=data)


def _model_job(args: tuple[TokenizedCorpus, Path, LMConfig, bool, int]) -> LMResult:
    """One model of a side-by-side build, in its own process (its progress bar on its own line)."""
    return model_for(*args)


def train_models(tokens: TokenizedCorpus, jobs: dict[str, tuple[Path, LMConfig]], progress: bool,
                 parallel: bool) -> dict[str, LMResult]:
    """Train (or reuse) each model; with `parallel`, those still to train run side by side in processes, when
    the cores hold their threads. Each trains with its config's fixed thread count (LM_THREADS unless set)
    either way, so side by side, one at a time and resumed builds give the same weights; on 2 cores two
    1-thread runs make 25.6k tokens/s together against 22.4k for one 2-thread run."""
    data = data_identity(tokens)
    todo = [name for name, (out, config) in jobs.items() if _trained(out, config, data) is None]
    needed = sum(jobs[n][1].torch_threads for n in todo)
    if not parallel or len(todo) < 2 or needed > available_cores():
        return {name: model_for(tokens, out, config, progress) for name, (out, config) in jobs.items()}
    args = [(tokens, jobs[n][0], jobs[n][1], progress, i) for i, n in enumerate(todo)]
    with ProcessPoolExecutor(len(todo), mp_context=multiprocessing.get_context("spawn")) as pool:
        done = dict(zip(todo, pool.map(_model_job, args)))
    return {name: done.get(name) or model_for(tokens, out, config, progress) for name, (out, config) in jobs.items()}


def build_embedded(
    out: str | Path,
    config: EmbeddedConfig | ProfileName = "quick",
    *,
    models: Sequence[str] = ("A", "B"),
    progress: bool = True,
    parallel: bool = True,
) -> EmbeddedBuild:
    """Build (or reuse) corpus, tokenizer, tokens and the named models (seeds: MODEL_SEEDS) under `out`.

    parallel: train the models side by side when there are cores for it (see `train_models`)."""
    unknown = [name for name in models if name not in MODEL_SEEDS]
    if unknown:
        raise ValueError(f"models {unknown}: choose from {sorted(MODEL_SEEDS)}")
    out = Path(out)
    config = EmbeddedConfig.profile(config) if isinstance(config, str) else config
    corpus = build_corpus(config.corpus, out / "corpus", progress=progress)
    tokens = tokens_for(corpus, out, config.tokenizer, progress)
    jobs = {name: (out / f"model_{name}", replace(config.lm, seed=MODEL_SEEDS[name])) for name in models}
    trained = train_models(tokens, jobs, progress, parallel)
    return EmbeddedBuild(corpus, out / "tokenizer", tokens, trained)
