"""What every streaming analysis reads: a dictionary as an encoder (an SAE, or `Neurons` for the raw
neurons), a model with the token windows to run, and the activations at a hook, streamed batch by batch
with each kept token's flat index (window · context_len + position), so two models read the same tokens."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations import nnsight_api as api
from saekit.activations.source import keep_positions
from saekit.activations.text import TokenWindows, special_token_ids, token_source
from saekit.evaluation import eval_settings
from saekit.saes.sparse import Codes

DEFAULT_STORE_TOKENS = 1_000_000
"""Tokens an analysis reads by default when it cuts its own windows."""


# --- dictionaries ---------------------------------------------------------------------------------


class Neurons:
    """The identity dictionary: a model's neurons as the features (the baseline of every comparison)."""

    def __init__(self, d_in: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        self.d_in = self.d_sae = int(d_in)
        self.dtype, self.device = dtype, torch.device(device)
        self.metadata: dict[str, Any] = {}

    def encode(self, x: Tensor) -> Tensor:
        return x

    @property
    def W_dec(self) -> Tensor:
        """[d, d] identity: neuron i's direction in neuron space is the i-th unit vector."""
        return torch.eye(self.d_sae, dtype=self.dtype, device=self.device)


@torch.no_grad()
def encode(dictionary: Any, acts: Tensor) -> Tensor:
    """Feature activations [tokens, d_sae] of activations [tokens, d_in], on the dictionary's device/dtype."""
    return dictionary.encode(acts.to(device=dictionary.device, dtype=dictionary.dtype))


def fired(f: Tensor, positive: bool = True) -> tuple[Codes, Tensor]:
    """The entries of f [tokens, units] where units fire (f > 0, or f ≠ 0 with positive=False), sorted
    by token, and their values [nnz]. Found with numpy (torch's nonzero is several times slower here)."""
    f = f.detach().cpu()
    array = (f.float() if f.dtype in (torch.bfloat16, torch.float16) else f).contiguous().numpy()
    flat = array.reshape(-1)
    index = np.flatnonzero(flat > 0 if positive else flat != 0)  # [nnz] into the row-major matrix
    rows, cols = np.divmod(index, max(f.shape[1], 1))
    return Codes(torch.from_numpy(rows), torch.from_numpy(cols), f.shape[0]), torch.from_numpy(flat[index])


def positive_entries(codes: Codes, values: Tensor) -> tuple[Codes, Tensor]:
    """The entries of `fired(f, positive=False)` with value > 0: `fired(f)` without a second pass over f."""
    keep = values.numpy() > 0
    if keep.all():
        return codes, values
    index = torch.from_numpy(np.flatnonzero(keep))
    return Codes(codes.rows[index], codes.cols[index], codes.n_rows), values[index]


def first_rows(codes: Codes, values: Tensor, n_rows: int) -> tuple[Codes, Tensor]:
    """The entries of the first `n_rows` tokens (entries are sorted by token)."""
    end = int(np.searchsorted(codes.rows.numpy(), n_rows, side="left"))
    return Codes(codes.rows[:end], codes.cols[:end], n_rows), values[:end]


# --- streaming activations ------------------------------------------------------------------------


class ActivationChunk(NamedTuple):
    """The kept activations of one model batch."""

    token_index: Tensor  # [tokens] int64: window · context_len + position of each kept token
    acts: Tensor  # [tokens, d_in]


def corpus_windows(text: Any, tokenizer: Any, context_len: int, max_tokens: int | None) -> TokenWindows:
    """The first windows of `text` (any form `token_source` takes) holding `max_tokens` real tokens."""
    return token_source(text, tokenizer, context_len, batch_size=64).take(max_tokens)


def hook_activations(
    model: Any,
    windows: TokenWindows,
    hook: str,
    side: str = "output",
    *,
    special_ids: Sequence[int] = (),
    batch_size: int = 32,
    progress: bool = True,
    desc: str = "activations",
) -> Iterator[ActivationChunk]:
    """Activations at `hook` over `windows`, `batch_size` windows per forward, padding and special
    tokens dropped; the same windows give the same token indices for any model."""
    special = torch.tensor(list(special_ids), dtype=torch.long)
    n, ctx = windows.input_ids.shape
    flat = torch.arange(n * ctx).view(n, ctx)
    kept = int(keep_positions(windows, special).sum())
    with tqdm(total=kept, unit="tok", desc=desc, disable=not progress) as bar:
        for start in range(0, n, batch_size):
            batch = TokenWindows(*(t[start : start + batch_size] for t in windows))
            keep = keep_positions(batch, special)
            acts = api.get_activations(model, batch.input_ids, batch.attention_mask, hook, side)
            bar.update(int(keep.sum()))
            yield ActivationChunk(flat[start : start + batch_size][keep], acts[keep.to(acts.device)].float())


class Corpus(NamedTuple):
    """A model, the windows to read and where to read them: what every streaming analysis needs."""

    model: Any  # a loaded nnsight model
    windows: TokenWindows
    hook: str
    side: str
    special_ids: tuple[int, ...]  # token ids whose positions are skipped
    tokenizer: Any


def open_corpus(
    model: Any,
    text: Any,
    dictionary: Any,
    *,
    hook: str | None = None,
    side: str | None = None,
    context_len: int | None = None,
    max_tokens: int | None = DEFAULT_STORE_TOKENS,
    exclude_special_tokens: bool | None = None,
    tokenizer: Any = None,
) -> Corpus:
    """Load the model and cut the windows; hook/side/context/text default to the dictionary's metadata.

    TokenWindows are used whole; any other text is cut into windows up to `max_tokens` real tokens.
    """
    settings = eval_settings(dictionary, hook, side, context_len, exclude_special_tokens)
    model = api.load_model(model)
    api.check_hook(model, settings.hook)
    tokenizer = tokenizer if tokenizer is not None else api.get_tokenizer(model)
    if text is None:
        text = (getattr(dictionary, "metadata", None) or {}).get("text")
        if text is None:
            raise ValueError("no text given and the dictionary's metadata names none; pass a text folder or token ids")
    windows = text if isinstance(text, TokenWindows) else corpus_windows(text, tokenizer, settings.context_len,
                                                                          max_tokens)
    special = tuple(special_token_ids(tokenizer)) if settings.exclude_special_tokens else ()
    return Corpus(model, windows, settings.hook, settings.side, special, tokenizer)


def corpus_activations(corpus: Corpus, batch_size: int = 32, progress: bool = True,
                       desc: str = "activations") -> Iterator[ActivationChunk]:
    """`hook_activations` over a Corpus."""
    return hook_activations(corpus.model, corpus.windows, corpus.hook, corpus.side, special_ids=corpus.special_ids,
                            batch_size=batch_size, progress=progress, desc=desc)
