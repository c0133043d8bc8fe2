"""The paper's log-likelihood-ratio proxy, from token statistics alone:

    llr(t) = log P(t | hypothesis) − log P(t | corpus)

P(t | hypothesis) is counted from text generated for the hypothesis (for base64, base64 of seeded random bytes, as
the paper does) cut into tokens by the model's tokenizer, P(t | corpus) from the tokens the analysis reads; both
with add-α smoothing, (count + α) / (total + α · vocab), so a token unseen on one side has a finite ratio. A token
scores high when the hypothesis explains it much better than the corpus does; `llr_proxy` gives every token its
id's ratio.
"""

from __future__ import annotations

import base64 as b64
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from saekit.activations.windows import TokenWindows, special_token_ids
from saekit.analysis.logit_effects import token_strings
from saekit.analysis.proxies import Proxy
from saekit.analysis.token_text import WindowText
from saekit.errors import InputError


def base64_text(n_bytes: int = 200_000, seed: int = 0, line_length: int = 64) -> str:
    """Base64 of `n_bytes` seeded random bytes, in lines of `line_length` characters (as PEM files write it)."""
    if n_bytes < 1 or line_length < 4:
        raise InputError(f"n_bytes must be ≥ 1 and line_length ≥ 4, got {n_bytes} and {line_length}")
    encoded = b64.b64encode(np.random.default_rng(seed).bytes(n_bytes)).decode("ascii")
    return "\n".join(encoded[i : i + line_length] for i in range(0, len(encoded), line_length)) + "\n"


def _ids_of(text: str | Sequence[str] | ArrayLike, tokenizer: Any) -> np.ndarray:
    """Token ids of text (strings need the tokenizer) or ids given as they are."""
    if isinstance(text, str):
        text = [text]
    if isinstance(text, Sequence) and text and all(isinstance(t, str) for t in text):
        if tokenizer is None:
            raise InputError("the hypothesis is text: pass the model's tokenizer to cut it into tokens")
        encoded = tokenizer(list(text), add_special_tokens=False, verbose=False)["input_ids"]
        return np.asarray([i for ids in encoded for i in ids], dtype=np.int64)
    return np.asarray(text, dtype=np.int64).reshape(-1)


def _corpus_ids(corpus: TokenWindows | ArrayLike, tokenizer: Any) -> np.ndarray:
    """The ids of a corpus: the real tokens of windows, special tokens left out, or ids given as they are."""
    if isinstance(corpus, TokenWindows):
        ids = corpus.input_ids[corpus.attention_mask.bool()].numpy().astype(np.int64)
        return ids[~np.isin(ids, special_token_ids(tokenizer))]
    return np.asarray(corpus, dtype=np.int64).reshape(-1)


def llr_table(hypothesis: str | Sequence[str] | ArrayLike, corpus: TokenWindows | ArrayLike, tokenizer: Any = None,
              *, vocab_size: int | None = None, smoothing: float = 1.0) -> pd.DataFrame:
    """The log-likelihood ratio of every token id: `hypothesis` as text (cut by `tokenizer`) or token ids, `corpus`
    as the windows the analysis reads (special tokens left out) or token ids; `vocab_size` defaults to the
    tokenizer's, else to the largest id + 1.

    Columns: token_id, token (with a tokenizer), hypothesis_count, corpus_count, log_p_hypothesis, log_p_corpus,
    llr (nats)."""
    if smoothing <= 0:
        raise InputError(f"smoothing must be > 0 (add-α counts; 1 is add-one), got {smoothing}")
    hyp, corp = _ids_of(hypothesis, tokenizer), _corpus_ids(corpus, tokenizer)
    if hyp.size == 0 or corp.size == 0:
        raise InputError("the hypothesis and the corpus must each hold at least one token")
    top = int(max(hyp.max(), corp.max())) + 1
    size = vocab_size or (len(tokenizer) if tokenizer is not None else top)
    if top > size:
        raise InputError(f"token id {top - 1} is outside a vocabulary of {size}: pass vocab_size ≥ {top}")
    counts = [np.bincount(ids, minlength=size) for ids in (hyp, corp)]
    log_p = [np.log((c + smoothing) / (c.sum() + smoothing * size)) for c in counts]
    table = pd.DataFrame({"token_id": np.arange(size)})
    if tokenizer is not None:
        table["token"] = token_strings(tokenizer, size)
    table["hypothesis_count"], table["corpus_count"] = counts
    table["log_p_hypothesis"], table["log_p_corpus"] = log_p
    table["llr"] = log_p[0] - log_p[1]
    return table


def llr_proxy(table: pd.DataFrame, name: str = "llr", threshold: float = 1.0) -> Proxy:
    """A proxy whose value on a token is its id's `llr` in `table` (ids outside it: 0), holding where the ratio is ≥
    `threshold` nats (1: the hypothesis makes the token e ≈ 2.7 times likelier than the corpus does)."""
    llr = np.zeros(int(table["token_id"].max()) + 1, dtype=np.float32)
    llr[table["token_id"].to_numpy()] = table["llr"].to_numpy()

    def values(window: WindowText) -> np.ndarray:
        ids = window.ids
        inside = (ids >= 0) & (ids < len(llr))
        return np.where(inside, llr[np.where(inside, ids, 0)], 0.0)

    return Proxy(name, values, threshold)
