"""Documents and the text checks every corpus source shares: decoding, hashing, noise filters."""

from __future__ import annotations

import hashlib
import io
import re
import tokenize
from typing import NamedTuple

_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ASCII_LETTER_OR_SPACE = re.compile(r"[A-Za-z ]")


class Document(NamedTuple):
    """One corpus document: its subset, a stable machine-independent name, and its text."""

    subset: str
    name: str
    text: str


class NoiseLimits(NamedTuple):
    """Thresholds that mark a text as generated noise rather than writing."""

    min_bytes: int
    max_bytes: int
    max_line_chars: int
    min_printable: float


def sha256_text(text: str) -> str:
    """Hex sha256 of the UTF-8 bytes of `text` (the corpus's identity for a document)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def utf8_size(text: str) -> int:
    """Bytes `text` takes in UTF-8 (what every size and share in the corpus counts)."""
    return len(text.encode("utf-8"))


def normalize_newlines(text: str) -> str:
    """Strip a BOM and turn CRLF / CR line ends into LF, so identical texts hash identically."""
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def decode(data: bytes, encoding: str = "utf-8") -> str | None:
    """Decode bytes strictly with `encoding`; None when they are binary (NUL bytes) or do not decode."""
    if b"\x00" in data:
        return None
    try:
        return normalize_newlines(data.decode(encoding))
    except (UnicodeDecodeError, LookupError):
        return None


def decode_python(data: bytes) -> str | None:
    """Decode Python source honouring its PEP 263 coding cookie (some stdlib tests are latin-1, koi8-r...)."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        return None
    return decode(data, "utf-8" if encoding == "utf-8-sig" else encoding)


def printable_ratio(text: str) -> float:
    """Fraction of characters that are printable or ordinary whitespace."""
    if not text:
        return 0.0
    if text.isascii():
        return 1 - len(_ASCII_CONTROL.findall(text)) / len(text)
    if text.replace("\n", "").replace("\t", "").isprintable():
        return 1.0
    ok = sum(1 for c in text if c.isprintable() or c in "\n\t")
    return ok / len(text)


def noise_reason(text: str, limits: NoiseLimits) -> str | None:
    """Why `text` is noise (too small, too large, very long lines, not printable), or None when it is fine."""
    size = utf8_size(text)
    if size < limits.min_bytes:
        return "too small"
    if size > limits.max_bytes:
        return "too large"
    if max(map(len, text.split("\n"))) > limits.max_line_chars:
        return "long lines"
    if printable_ratio(text) < limits.min_printable:
        return "not printable"
    return None


def ascii_letter_ratio(text: str) -> float:
    """Fraction of characters that are ASCII letters or spaces: high for English prose, low for data."""
    if not text:
        return 0.0
    return len(_ASCII_LETTER_OR_SPACE.findall(text)) / len(text)
