"""Token windows as text, for proxies written over characters (a regex, a Unicode block).

Each window is decoded once from its tokens' bytes, and each token keeps the span of characters it overlaps. A
byte-level vocabulary often splits one character over several tokens (a CJK character is three UTF-8 bytes); decoded
alone such a token reads "\ufffd", here it overlaps the character it holds bytes of, so a per-character proxy gives it
that character's value.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from saekit.activations.windows import TokenWindows

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # SentencePiece's byte fallback


class WindowText(NamedTuple):
    """One window's real tokens and the text they decode to."""

    ids: np.ndarray  # [tokens] int64 token ids
    text: str  # the window decoded
    starts: np.ndarray  # [tokens] int64: index in `text` of the first character each token overlaps
    ends: np.ndarray  # [tokens] int64: one past its last (starts == ends for a token with no bytes)

    @property
    def tokens(self) -> list[str]:
        """Each token's text: the characters it overlaps (a character split over tokens appears in each)."""
        return [self.text[s:e] for s, e in zip(self.starts.tolist(), self.ends.tolist())]


def byte_level_chars() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2's): the printable Latin-1 bytes stand for themselves, the other bytes for
    the characters from U+0100 on, in byte order. Maps each character to its byte."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in set(printable)]
    chars = {chr(b): b for b in printable}
    chars.update({chr(0x100 + i): b for i, b in enumerate(others)})
    return chars


def decoder_kind(tokenizer: Any) -> str:
    """How a Hugging Face tokenizer's pieces become text: "byte_level" (GPT-2's BPE), "metaspace" (SentencePiece's
    ▁ for a space), "wordpiece" (BERT's ## continuations), or "decode" (anything else: each token decoded alone)."""
    decoder = str(getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", ""))
    for name, kind in (("ByteLevel", "byte_level"), ("Metaspace", "metaspace"), ("WordPiece", "wordpiece")):
        if name in decoder:
            return kind
    return "decode"


def token_bytes(tokenizer: Any, vocab_size: int | None = None) -> list[bytes]:
    """The bytes of every token id below `vocab_size` (default: the tokenizer's length).

    Byte-level vocabularies are read exactly; SentencePiece pieces with ▁ as a space and their byte tokens (`<0xE3>`)
    as that byte; WordPiece pieces with a space before each word (not before ## continuations); other tokenizers give
    each token decoded alone. Added and special tokens are their own text (a document separator reads
    "<|endoftext|>", as the feature store shows it).
    """
    vocab_size = len(tokenizer) if vocab_size is None else int(vocab_size)
    known = min(len(tokenizer), vocab_size)
    pieces = [p or "" for p in tokenizer.convert_ids_to_tokens(list(range(known)))]
    added = {int(i): str(getattr(t, "content", t)) for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    kind = decoder_kind(tokenizer)
    chars = byte_level_chars()
    decoded = tokenizer.batch_decode([[i] for i in range(known)]) if kind == "decode" else pieces
    table: list[bytes] = []
    for i, (piece, text) in enumerate(zip(pieces, decoded)):
        byte = _BYTE_TOKEN.match(piece)
        if byte and kind in ("metaspace", "decode"):
            table.append(bytes([int(byte.group(1), 16)]))
        elif i in added:
            table.append(added[i].encode("utf-8"))
        elif kind == "byte_level" and all(c in chars for c in piece):
            table.append(bytes(chars[c] for c in piece))
        elif kind == "metaspace":
            table.append(piece.replace("\u2581", " ").encode("utf-8"))
        elif kind == "wordpiece":
            table.append((piece[2:] if piece.startswith("##") else " " + piece).encode("utf-8"))
        else:
            table.append(text.encode("utf-8"))
    return table + [b""] * (vocab_size - known)


def decode_window(ids: Sequence[int] | np.ndarray, table: Sequence[bytes]) -> WindowText:
    """A window's tokens as text, with the characters each token overlaps (bytes that do not decode read U+FFFD)."""
    ids = np.asarray(ids, dtype=np.int64)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces, starts, ends, n = [], np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=np.int64), 0
    for i, token in enumerate(ids.tolist()):
        piece = decoder.decode(table[token] if 0 <= token < len(table) else b"")
        pending = bool(decoder.getstate()[0])  # bytes of a character that a later token completes
        starts[i] = n
        n += len(piece)
        ends[i] = n + pending
        pieces.append(piece)
    pieces.append(decoder.decode(b"", final=True))  # a character cut by the window's end reads U+FFFD
    return WindowText(ids, "".join(pieces), starts, ends)


@dataclass(frozen=True)
class WindowTexts:
    """Token windows with every window's text, decoded once; proxies are evaluated on them (see
    `saekit.analysis.proxies`)."""

    windows: TokenWindows
    texts: tuple[WindowText, ...]  # one per window, of its real (unmasked) tokens

    @classmethod
    def of(cls, windows: TokenWindows, tokenizer: Any) -> WindowTexts:
        """Decode every window of `windows` with `tokenizer`'s token bytes."""
        table = token_bytes(tokenizer, max(len(tokenizer), int(windows.input_ids.max()) + 1 if len(windows) else 0))
        ids, mask = windows.input_ids.numpy(), windows.attention_mask.numpy().astype(bool)
        return cls(windows, tuple(decode_window(row[keep], table) for row, keep in zip(ids, mask)))

    @property
    def shape(self) -> tuple[int, int]:
        """[n_windows, context_len]."""
        return tuple(self.windows.input_ids.shape)

    def scatter(self, per_window: Sequence[np.ndarray], fill: float = 0.0) -> np.ndarray:
        """Per-token values of each window's real tokens as one [n_windows · context_len] float array (padding
        `fill`), indexed like the readings' flat token indices (window · context_len + position)."""
        out = np.full(self.shape, fill, dtype=np.float32)
        mask = self.windows.attention_mask.numpy().astype(bool)
        for row, (values, keep) in enumerate(zip(per_window, mask)):
            out[row, keep] = values
        return out.reshape(-1)

    def tokens(self, token_index: np.ndarray | torch.Tensor | None = None) -> list[str]:
        """The text of the tokens at flat indices (default: every real token, window by window)."""
        ctx = self.shape[1]
        mask = self.windows.attention_mask.numpy().astype(bool)
        flat = [""] * mask.size
        for row, (keep, text) in enumerate(zip(mask, self.texts)):
            for position, token in zip(np.flatnonzero(keep).tolist(), text.tokens):
                flat[row * ctx + position] = token
        index = np.flatnonzero(mask.reshape(-1)) if token_index is None else np.asarray(token_index, dtype=np.int64)
        return [flat[i] for i in index.tolist()]
