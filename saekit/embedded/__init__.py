"""The embedded default: a local-pile corpus, a byte-level BPE tokenizer and the paper's one-layer model.

Everything runs offline on a CPU in minutes: `build_embedded(out, "quick")` makes the lot.
"""

from saekit.embedded.bigram import bigram_loss
from saekit.embedded.build import EmbeddedBuild, EmbeddedConfig, build_embedded, load_lm_result
from saekit.embedded.corpus import (
    Corpus,
    CorpusConfig,
    build_corpus,
    iter_documents,
    load_corpus,
    subset_mix,
)
from saekit.embedded.documents import Document
from saekit.embedded.installed import LOCAL_PILE_SUBSETS, installation_roots
from saekit.embedded.lm import (
    MLP_HOOK,
    MODEL_SEEDS,
    LMConfig,
    LMResult,
    heldout_loss,
    heldout_windows,
    load_lm,
    train_lm,
)
from saekit.embedded.tokenizer import EOT, PAD, TokenizerConfig, load_tokenizer, train_tokenizer
from saekit.embedded.tokens import TokenizedCorpus, load_tokenized, tokenize_corpus

__all__ = [
    "EOT",
    "LOCAL_PILE_SUBSETS",
    "MLP_HOOK",
    "MODEL_SEEDS",
    "PAD",
    "Corpus",
    "CorpusConfig",
    "Document",
    "EmbeddedBuild",
    "EmbeddedConfig",
    "LMConfig",
    "LMResult",
    "TokenizedCorpus",
    "TokenizerConfig",
    "bigram_loss",
    "build_corpus",
    "build_embedded",
    "heldout_loss",
    "heldout_windows",
    "installation_roots",
    "iter_documents",
    "load_corpus",
    "load_lm",
    "load_lm_result",
    "load_tokenized",
    "load_tokenizer",
    "subset_mix",
    "tokenize_corpus",
    "train_lm",
    "train_tokenizer",
]
