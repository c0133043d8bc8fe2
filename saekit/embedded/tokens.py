"""The corpus as flat token arrays: each split one `.npy`, every document preceded by `<|endoftext|>`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from saekit.cached_steps import write_json_atomic
from saekit.embedded.corpus import SPLITS, Corpus, Split
from saekit.embedded.documents import Document
from saekit.embedded.tokenizer import EOT

TOKENS_VERSION = 1
"""Bump when the same corpus and tokenizer config give other tokens (tokenizer training or encoding)."""
# Documents per call into the tokenizer's (parallel, Rust) batch encoder.
_BATCH_DOCS = 256


@dataclass(frozen=True)
class TokenizedCorpus:
    """Token arrays of a corpus on disk, with the counts per split and per subset."""

    folder: Path
    eot_id: int
    vocab_size: int
    n_tokens: dict[str, int]
    subset_tokens: dict[str, dict[str, int]]

    def tokens(self, split: Split = "train") -> np.ndarray:
        """The split's tokens, `[n_tokens]`, memory-mapped read-only."""
        return np.load(self.folder / f"{split}.npy", mmap_mode="r")

    def mix(self) -> pd.DataFrame:
        """Tokens per subset and split."""
        return pd.DataFrame(self.subset_tokens).fillna(0).astype("int64").rename_axis("subset").reset_index()


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else int32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def batched(items: Iterable[Document], size: int) -> Iterator[list[Document]]:
    """Consecutive lists of at most `size` items."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def encode_documents(
    tokenizer: PreTrainedTokenizerFast, docs: Iterable[Document], *, total: int, progress: bool = True
) -> tuple[np.ndarray, dict[str, int]]:
    """`[n_tokens]` ids of `<|endoftext|> doc <|endoftext|> doc ...`, and the token count per subset."""
    eot_id = tokenizer.convert_tokens_to_ids(EOT)
    dtype = token_dtype(len(tokenizer))
    pieces: list[np.ndarray] = []
    per_subset: dict[str, int] = {}
    with tqdm(total=total, desc="tokenize", unit="doc", disable=not progress) as bar:
        for batch in batched(docs, _BATCH_DOCS):
            encodings = tokenizer.backend_tokenizer.encode_batch(
                [d.text for d in batch], add_special_tokens=False
            )
            for doc, encoding in zip(batch, encodings):
                pieces.append(np.array([eot_id, *encoding.ids], dtype=dtype))
                per_subset[doc.subset] = per_subset.get(doc.subset, 0) + len(encoding.ids) + 1
            bar.update(len(batch))
            bar.set_postfix(tokens=sum(per_subset.values()))
    return (np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)), per_subset


def tokenize_corpus(
    corpus: Corpus,
    tokenizer: PreTrainedTokenizerFast,
    folder: str | Path,
    *,
    progress: bool = True,
    extra: dict[str, object] | None = None,
) -> TokenizedCorpus:
    """Tokenize both splits into `folder/{train,heldout}.npy` plus `tokens.json` (counts, ids, hash, and
    `extra` entries), written last and atomically: a folder without tokens.json is not a finished one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_tokens: dict[str, int] = {}
    subset_tokens: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        total = int((corpus.manifest["split"] == split).sum())
        ids, per_subset = encode_documents(tokenizer, corpus.documents(split), total=total, progress=progress)
        np.save(folder / f"{split}.npy", ids)
        n_tokens[split], subset_tokens[split] = int(ids.size), per_subset
    meta = {
        "eot_id": tokenizer.convert_tokens_to_ids(EOT),
        "vocab_size": len(tokenizer),
        "n_tokens": n_tokens,
        "subset_tokens": subset_tokens,
        "corpus_manifest_hash": corpus.manifest_hash,
        **(extra or {}),
    }
    write_json_atomic(folder / "tokens.json", meta, indent=2)
    return load_tokenized(folder)


def load_tokenized(folder: str | Path) -> TokenizedCorpus:
    """Open a folder written by `tokenize_corpus`."""
    folder = Path(folder)
    meta = json.loads((folder / "tokens.json").read_text(encoding="utf-8"))
    return TokenizedCorpus(
        folder, meta["eot_id"], meta["vocab_size"], meta["n_tokens"], meta["subset_tokens"]
    )
