"""The embedding score: how well an explanation's sentence embedding tells the excerpts where the unit responds
from those where it does not (delphi's embedding scorer: AUROC of the cosine between the explanation and each
test excerpt). Any local sentence-embedding model works; WordLlama ships its weights in its PyPI wheel, so
`pip install wordllama` gives one that runs offline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
from tqdm.auto import tqdm

from saekit.analysis.autointerp.explanations import Explanation
from saekit.analysis.autointerp.records import UnitRecords
from saekit.analysis.autointerp.scoring import ScoreName
from saekit.errors import InputError

Embed = Callable[[list[str]], np.ndarray]
"""Texts → embeddings [len(texts), dim]."""


def auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve (the chance a positive outscores a negative; ties count half); NaN without both
    classes."""
    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)  # average ranks for ties
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass(frozen=True)
class EmbeddingScorer:
    """AUROC of cos(explanation, excerpt) between the test excerpts where the unit responds and the others."""

    embed: Embed
    model: str
    """The embedding model's name: every score row says it."""
    name: ScoreName = "embedding"

    @property
    def by(self) -> str:
        return self.model

    def estimate(self, units: Sequence[UnitRecords]) -> None:
        """Runs here: nothing is sent."""
        return None

    def score_all(self, units: Sequence[UnitRecords], explanations: Sequence[Explanation],
                  progress: bool = True) -> list[float]:
        scores = []
        for unit, explanation in tqdm(list(zip(units, explanations)), desc=f"embedding ({self.model})",
                                      disable=not progress):
            vectors = np.asarray(self.embed([explanation.text, *(r.text() for r in unit.test)]), dtype=np.float64)
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            cosines = vectors[1:] @ vectors[0]
            scores.append(auroc(cosines, np.asarray([unit.firing(r) for r in unit.test], dtype=bool)))
        return scores


def wordllama_scorer(dim: int = 256) -> EmbeddingScorer:
    """The embedding scorer with WordLlama's small model, read from the wheel's own files (no download)."""
    try:
        import wordllama
        from wordllama import WordLlama
    except ImportError:
        raise InputError("the offline embedding scorer needs WordLlama: pip install wordllama") from None
    package = Path(wordllama.__file__).parent
    model = WordLlama.load(cache_dir=package, dim=dim, disable_download=True)  # tokenizer and weights ship inside
    return EmbeddingScorer(lambda texts: np.asarray(model.embed(texts)), f"WordLlama l2_supercat {dim}")


def sentence_transformers_scorer(path: str) -> EmbeddingScorer:
    """The embedding scorer with a sentence-transformers model the user has (a local folder or a cached hub id)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise InputError("this embedding scorer needs sentence-transformers: pip install sentence-transformers, or "
                         "use wordllama_scorer()") from None
    model = SentenceTransformer(path)
    return EmbeddingScorer(lambda texts: np.asarray(model.encode(texts)), Path(path).name or path)
