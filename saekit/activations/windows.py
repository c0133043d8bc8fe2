"""Text in, fixed-length token windows out.

Documents come from one small interface (iterate to get strings): a list of strings, a folder of
`.txt` files, or a Hugging Face dataset. They are tokenized GPT-2-pretraining style: each document
is followed by the tokenizer's end-of-text token (EOS, else SEP, else BOS), the documents are
concatenated into one stream, and the stream is cut into windows of `context_len` tokens, so a
window can span documents and no compute is spent on padding. Only the very last window is padded,
and its `attention_mask` is 0 there. Pre-tokenized token arrays are accepted too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from saekit.errors import InputError

DOCS_PER_TOKENIZER_CALL = 64  # documents tokenized together (batched calls are much faster)


class TokenWindows(NamedTuple):
    """A batch of context windows."""

    input_ids: Tensor  # [n, ctx] int64
    attention_mask: Tensor  # [n, ctx] int64, 0 at padding

    def __len__(self) -> int:  # number of windows, not the tuple's length
        return self.input_ids.shape[0]

    @property
    def n_tokens(self) -> int:
        """Real (unpadded) tokens in these windows."""
        return int(self.attention_mask.sum())


# --- document sources -----------------------------------------------------------------------------


@runtime_checkable
class DocumentSource(Protocol):
    """Anything that yields documents as strings, in a fixed order, each time it is iterated."""

    def __iter__(self) -> Iterator[str]: ...

    def describe(self) -> str | None:
        """What to record as the training text (a folder path, a dataset name), or None."""


@dataclass(frozen=True)
class TextList:
    """Documents given as strings."""

    texts: tuple[str, ...]

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    def describe(self) -> str | None:
        return None


@dataclass(frozen=True)
class TextFolder:
    """Every file matching `pattern` under `path` (recursively), one document per file, sorted by path."""

    path: Path
    pattern: str = "*.txt"
    encoding: str = "utf-8"

    def __post_init__(self) -> None:
        path = Path(self.path).expanduser().resolve()
        object.__setattr__(self, "path", path)
        if not path.is_dir():
            raise FileNotFoundError(f"text folder {str(path)!r} does not exist; pass a folder of .txt files")
        if not self.files():
            raise InputError(f"text folder {str(path)!r} has no files matching {self.pattern!r}")

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob(self.pattern) if p.is_file())

    def __iter__(self) -> Iterator[str]:
        for file in self.files():
            yield file.read_text(encoding=self.encoding, errors="replace")

    def describe(self) -> str | None:
        return str(self.path)


@dataclass(frozen=True)
class HFDataset:
    """A Hugging Face dataset by hub name, or a folder written by `Dataset.save_to_disk`.

    Needs the optional `datasets` package (imported only when iterated). `streaming=True` reads a
    hub dataset without downloading it whole.
    """

    name: str
    split: str = "train"
    text_column: str = "text"
    config_name: str | None = None
    streaming: bool = False

    def load(self) -> Any:
        try:
            import datasets
        except ImportError as error:
            raise InputError("reading a Hugging Face dataset needs the datasets package: pip install datasets") \
                from error
        if Path(self.name).expanduser().is_dir():
            loaded = datasets.load_from_disk(str(Path(self.name).expanduser()))
            return loaded[self.split] if isinstance(loaded, datasets.DatasetDict) else loaded
        return datasets.load_dataset(self.name, self.config_name, split=self.split, streaming=self.streaming)

    def __iter__(self) -> Iterator[str]:
        dataset = self.load()
        columns = getattr(dataset, "column_names", None)
        if columns is not None and self.text_column not in columns:
            raise InputError(f"dataset {self.name!r} has no column {self.text_column!r}; pick one of {columns}")
        for row in dataset:
            yield row[self.text_column]

    def describe(self) -> str | None:
        return self.name


def as_documents(text: DocumentSource | str | os.PathLike | Sequence[str]) -> DocumentSource:
    """A DocumentSource from a source, a folder path, or a list of strings."""
    if isinstance(text, DocumentSource) and not isinstance(text, (str, list, tuple)):
        return text
    if isinstance(text, (str, os.PathLike)):
        return TextFolder(Path(text))
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        return TextList(tuple(text))
    raise TypeError(
        f"cannot read documents from {type(text).__name__}; pass a folder path, a list of strings, "
        "or a DocumentSource (TextList, TextFolder, HFDataset)"
    )


# --- tokenization ---------------------------------------------------------------------------------


def separator_id(tokenizer) -> int | None:
    """The token put after each document: EOS, else SEP, else BOS, else none."""
    for name in ("eos_token_id", "sep_token_id", "bos_token_id"):
        token = getattr(tokenizer, name, None)
        if token is not None:
            return int(token)
    return None


def pad_id(tokenizer) -> int:
    """The id written into padded positions (masked out, so only its value in the tensor matters)."""
    for token in (getattr(tokenizer, "pad_token_id", None), separator_id(tokenizer)):
        if token is not None:
            return int(token)
    return 0


def special_token_ids(tokenizer) -> list[int]:
    """Ids of the tokenizer's special tokens (BOS, EOS, PAD, ...), sorted; empty without a tokenizer."""
    if tokenizer is None:
        return []
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "cls_token_id"):
        token = getattr(tokenizer, name, None)
        if token is not None:
            ids.add(int(token))
    return sorted(ids)


def token_stream(documents: Iterable[str], tokenizer) -> Iterator[list[int]]:
    """Token ids of each document followed by the separator, documents tokenized in batches."""
    sep = separator_id(tokenizer)
    chunk: list[str] = []
    for doc in documents:
        chunk.append(doc)
        if len(chunk) == DOCS_PER_TOKENIZER_CALL:
            yield from _encode(chunk, tokenizer, sep)
            chunk = []
    if chunk:
        yield from _encode(chunk, tokenizer, sep)


def _encode(docs: list[str], tokenizer, sep: int | None) -> Iterator[list[int]]:
    encoded = tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"]
    for ids in encoded:
        yield list(ids) + ([sep] if sep is not None else [])


def iter_windows(
    documents: Iterable[str], tokenizer, context_len: int, batch_size: int
) -> Iterator[TokenWindows]:
    """Stream `batch_size` windows at a time from packed documents (the last window padded)."""
    pad = pad_id(tokenizer)
    buffer: list[int] = []
    rows: list[list[int]] = []
    for ids in token_stream(documents, tokenizer):
        buffer.extend(ids)
        n_full = len(buffer) // context_len
        for i in range(n_full):
            rows.append(buffer[i * context_len : (i + 1) * context_len])
            if len(rows) == batch_size:
                yield _stack(rows, context_len, pad)
                rows = []
        buffer = buffer[n_full * context_len :]
    if buffer:
        rows.append(buffer)
    if rows:
        yield _stack(rows, context_len, pad)


def _stack(rows: list[list[int]], context_len: int, pad: int) -> TokenWindows:
    if all(len(row) == context_len for row in rows):
        ids = torch.tensor(rows, dtype=torch.long).reshape(len(rows), context_len)
        return TokenWindows(ids, torch.ones_like(ids))
    ids = torch.full((len(rows), context_len), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), context_len), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return TokenWindows(ids, mask)


def windows_from_tokens(tokens: Tensor | np.ndarray, context_len: int, pad: int = 0) -> TokenWindows:
    """Windows from pre-tokenized ids: a 1-D stream [n_tokens] is cut into [n, context_len] (last row
    padded); a 2-D array [n_seq, ctx] is used row for row as it is."""
    if isinstance(tokens, Tensor):
        ids = tokens.to(torch.int64)
    else:
        ids = torch.from_numpy(np.array(tokens, dtype=np.int64))  # a copy: arrays may be read-only memory maps
    if ids.dim() == 2:
        return TokenWindows(ids, torch.ones_like(ids))
    if ids.dim() != 1:
        raise InputError(f"token arrays must be 1-D [n_tokens] or 2-D [n_seq, ctx], got shape {tuple(ids.shape)}")
    n_full = ids.numel() // context_len
    full = ids[: n_full * context_len].view(n_full, context_len)
    if ids.numel() % context_len == 0:
        return TokenWindows(full, torch.ones_like(full))
    tail = _stack([ids[n_full * context_len :].tolist()], context_len, pad)
    return TokenWindows(torch.cat([full, tail.input_ids]), torch.cat([torch.ones_like(full), tail.attention_mask]))


def split_windows(windows: TokenWindows, batch_size: int) -> Iterator[TokenWindows]:
    """`windows` in consecutive batches of `batch_size` rows (the last may be smaller)."""
    for start in range(0, len(windows), batch_size):
        yield TokenWindows(*(t[start : start + batch_size] for t in windows))


def is_tokens(text: Any) -> bool:
    """Whether `text` is pre-tokenized: token windows, a tensor, or a numpy array."""
    return isinstance(text, (TokenWindows, Tensor, np.ndarray))


@dataclass(frozen=True)
class TokenArray:
    """Pre-tokenized ids kept where they are (e.g. a memory-mapped `.npy`): windows are cut from it one batch at a
    time, so memory does not grow with the array. 1-D [n_tokens] is cut into windows of `context_len` (the last
    padded); 2-D [n_seq, ctx] is used row for row."""

    ids: np.ndarray
    path: str | None = None  # where it was loaded from, recorded as the training text

    def __post_init__(self) -> None:
        if self.ids.ndim not in (1, 2):
            raise InputError(f"token arrays must be 1-D [n_tokens] or 2-D [n_seq, ctx], got shape {self.ids.shape}")
        if not np.issubdtype(self.ids.dtype, np.integer):
            raise InputError(f"token arrays hold integer ids, not {self.ids.dtype}: pass the tokenized ids")

    def batches(self, context_len: int, batch_size: int, pad: int) -> Iterator[TokenWindows]:
        """Windows [≤ batch_size, ctx], in order."""
        step = batch_size if self.ids.ndim == 2 else batch_size * context_len
        for start in range(0, self.ids.shape[0], step):
            yield windows_from_tokens(self._slice(start, start + step), context_len, pad)

    def _slice(self, start: int, stop: int) -> np.ndarray:
        """A copy of ids[start:stop]. A file's ids are mapped afresh for each slice, so the pages read before are
        released with the old map instead of adding up in this process's resident memory."""
        ids = np.load(self.path, mmap_mode="r", allow_pickle=False) if self.path else self.ids
        return np.array(ids[start:stop], dtype=np.int64)


@dataclass(frozen=True)
class TokenSource:
    """Re-iterable batches of token windows from documents or from pre-tokenized ids.

    Iterating it again starts over from the first window (the activation source cycles this way).
    """

    text: Any  # a DocumentSource, or TokenWindows
    tokenizer: Any
    context_len: int
    batch_size: int

    def __iter__(self) -> Iterator[TokenWindows]:
        if isinstance(self.text, TokenWindows):
            return split_windows(self.text, self.batch_size)
        if isinstance(self.text, TokenArray):
            return self.text.batches(self.context_len, self.batch_size, pad_id(self.tokenizer))
        return iter_windows(self.text, self.tokenizer, self.context_len, self.batch_size)

    def describe(self) -> str | None:
        if isinstance(self.text, (TokenWindows, TokenArray)):
            return getattr(self.text, "path", None)
        return self.text.describe()

    def take(self, max_tokens: int | None) -> TokenWindows:
        """The first windows holding at least `max_tokens` real tokens (all of them when None), as one batch."""
        taken: list[TokenWindows] = []
        count = 0
        for batch in self:
            taken.append(batch)
            count += batch.n_tokens
            if max_tokens is not None and count >= max_tokens:
                break
        if not taken:
            raise InputError("the text produced no tokens; pass a non-empty text")
        windows = TokenWindows(*(torch.cat(parts) for parts in zip(*taken)))
        if max_tokens is None:
            return windows
        n_rows = int((windows.attention_mask.sum(1).cumsum(0) < max_tokens).sum()) + 1
        return TokenWindows(*(t[:n_rows] for t in windows))


def token_source(text: Any, tokenizer, context_len: int, batch_size: int) -> TokenSource:
    """A TokenSource from any text form: documents (see `as_documents`), TokenWindows, a token array, or
    the path of a `.npy` token array."""
    if context_len < 1 or batch_size < 1:
        raise InputError(f"context_len and batch_size must be positive (got {context_len}, {batch_size})")
    if isinstance(text, (str, os.PathLike)) and str(text).endswith(".npy"):
        path = str(Path(text).resolve())
        ids = np.load(text, mmap_mode="r", allow_pickle=False)  # [n_tokens] or [n_seq, ctx], left on disk
        return TokenSource(TokenArray(ids, path), tokenizer, context_len, batch_size)
    if isinstance(text, np.ndarray):
        return TokenSource(TokenArray(text), tokenizer, context_len, batch_size)
    if is_tokens(text):
        windows = text if isinstance(text, TokenWindows) else windows_from_tokens(text, context_len, pad_id(tokenizer))
        return TokenSource(windows, tokenizer, context_len, batch_size)
    if tokenizer is None:
        raise InputError("this model has no tokenizer, so text cannot be tokenized; pass token ids instead")
    return TokenSource(as_documents(text), tokenizer, context_len, batch_size)
