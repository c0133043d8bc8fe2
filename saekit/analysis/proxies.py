"""Proxies: a hypothesis about text ("this is base64", "this is Hebrew") computed without the model, as one value
per token, to set against a unit's activations (the paper's specificity plots; see `saekit.analysis.specificity`).

A `Proxy` is a name and a function from a window's tokens in context (`WindowText`) to a value per token, in
[0, 1] for the built-ins (the share of a token's characters the hypothesis covers) or any real score (the
log-likelihood ratio of `saekit.analysis.likelihood_ratio`); it holds on a token where the value is ≥ its threshold.

Built in, fitted to the embedded corpus's subsets (`saekit.embedded.installed`):

- `base64()`: long runs of the base64 alphabet that switch often between upper case, lower case and digits (the
  certificate bundles' PEM lines; not identifiers, words or hex digests);
- `script(name)`: characters of a Unicode script's blocks ("cjk" covers the standard library's CJK test files);
- `python_code()`: lines that are Python statements (def, class, imports, block openers, assignments, calls);
- `markup()`: HTML/XML tags, comments and entities, Markdown links, headers and fences, reST roles, directives
  and underlines;
- `legal_text()`: sentences with two or more terms of licence language (licence texts, licence headers);
- `regex(pattern)` and `predicate(fn)`: a user's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike

from saekit.analysis.token_text import WindowText, WindowTexts
from saekit.errors import InputError

# --- the proxy ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proxy:
    """A named hypothesis over tokens in context."""

    name: str  # how tables and figures name it
    fn: Callable[[WindowText], ArrayLike]  # a window's tokens → a value per token [tokens]
    threshold: float = 0.5  # the proxy holds on a token whose value is ≥ threshold

    def __post_init__(self) -> None:
        if not self.name:
            raise InputError("a proxy needs a name, e.g. Proxy('base64', fn)")
        if not callable(self.fn):
            raise InputError(f"proxy {self.name!r}: fn must be a function of a WindowText, got {type(self.fn)}")

    def values(self, window: WindowText) -> np.ndarray:
        """The proxy's value of every token of `window` [tokens] float32."""
        values = np.asarray(self.fn(window), dtype=np.float32).reshape(-1)
        if values.shape[0] != len(window.ids):
            raise InputError(f"proxy {self.name!r} gave {values.shape[0]} values for a window of {len(window.ids)} "
                             "tokens: its function must return one value per token")
        return values

    def holds(self, values: ArrayLike) -> np.ndarray:
        """Where the proxy holds, from its values (bool, same shape)."""
        return np.asarray(values) >= self.threshold


def proxy_values(proxy: Proxy, texts: WindowTexts) -> np.ndarray:
    """The proxy on every position of the windows [n_windows · context_len] float32 (0 at padding), indexed by the
    readings' flat token indices (window · context_len + position)."""
    return texts.scatter([proxy.values(window) for window in texts.texts])


# --- from characters to tokens --------------------------------------------------------------------

_SPACES = np.array([0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
                    0x202F, 0x205F, 0x3000], dtype=np.uint32)


def codepoints(text: str) -> np.ndarray:
    """[chars] uint32 code points of `text`."""
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")


def token_shares(window: WindowText, marked: np.ndarray) -> np.ndarray:
    """[tokens] the share of each token's characters that are `marked` [chars], spaces left out unless a token is
    only spaces (so " 파" is all Hangul and a newline inside a base64 block is base64); 0 for a token with no text."""
    marked = np.asarray(marked, dtype=bool)
    solid = ~np.isin(codepoints(window.text), _SPACES)
    sums = [np.concatenate([[0], np.cumsum(a, dtype=np.int64)]) for a in (marked & solid, solid, marked)]
    s, e = window.starts, window.ends
    solid_marked, n_solid, n_marked = (c[e] - c[s] for c in sums)
    length = e - s
    share_solid = solid_marked / np.maximum(n_solid, 1)
    share_all = n_marked / np.maximum(length, 1)
    return np.where(n_solid > 0, share_solid, share_all).astype(np.float32)


def span_mask(n_chars: int, spans: list[tuple[int, int]]) -> np.ndarray:
    """[n_chars] bool: characters inside any of the [start, end) spans."""
    edges = np.zeros(n_chars + 1, dtype=np.int64)
    for start, end in spans:
        if end > start:
            edges[start] += 1
            edges[end] -= 1
    return np.cumsum(edges[:-1]) > 0


def char_proxy(name: str, mark: Callable[[str], np.ndarray], threshold: float = 0.5) -> Proxy:
    """A proxy from a function marking a text's characters ([chars] bool): each token's value is the share of its
    characters marked (see `token_shares`)."""
    return Proxy(name, lambda window: token_shares(window, mark(window.text)), threshold)


def regex(pattern: str | re.Pattern[str], name: str | None = None, flags: int = 0, threshold: float = 0.5) -> Proxy:
    """A proxy holding on the tokens inside the pattern's matches in each window's text (e.g. r"\\d+")."""
    compiled = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
    return char_proxy(name or f"regex {compiled.pattern}", lambda text: match_mask(compiled, text), threshold)


def match_mask(pattern: re.Pattern[str], text: str) -> np.ndarray:
    """[chars] bool: characters inside a match of `pattern`."""
    return span_mask(len(text), [m.span() for m in pattern.finditer(text)])


def predicate(fn: Callable[[str], bool | float], name: str | None = None, threshold: float = 0.5) -> Proxy:
    """A proxy from a function of one token's text (bool, or a number); for context, build a `Proxy` whose function
    reads the whole `WindowText`."""
    own = getattr(fn, "__name__", "<lambda>")
    return Proxy(name or ("predicate" if own == "<lambda>" else own),
                 lambda window: np.array([float(fn(token)) for token in window.tokens], dtype=np.float32), threshold)


# --- built-ins ------------------------------------------------------------------------------------

_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]+={0,2}(?:\r?\n[A-Za-z0-9+/]+={0,2})*")


def base64(min_length: int = 20, min_switch_rate: float = 0.3) -> Proxy:
    """Tokens inside base64 text: runs of the base64 alphabet (lines joined across single newlines, '=' padding
    included) of at least `min_length` characters that hold upper case, lower case and a digit or +/, and whose
    character class changes from one character to the next at a rate of at least `min_switch_rate` (random base64:
    ~0.65; words and CamelCase identifiers: ~0.1 to 0.4, and no digits; hex digests have no upper case)."""

    def mark(text: str) -> np.ndarray:
        spans = []
        for m in _BASE64_RUN.finditer(text):
            body = re.sub(r"[\r\n=]", "", m.group())
            if len(body) >= min_length and _looks_random(body, min_switch_rate):
                spans.append(m.span())
        return span_mask(len(text), spans)

    return char_proxy("base64", mark)


def _looks_random(body: str, min_switch_rate: float) -> bool:
    """Whether a base64-alphabet string mixes all its character classes and switches between them as random base64
    does."""
    kinds = ["u" if c.isupper() else "l" if c.islower() else "d" for c in body]  # digits and +/ together
    switches = sum(a != b for a, b in zip(kinds, kinds[1:]))
    return set(kinds) == {"u", "l", "d"} and switches / max(len(body) - 1, 1) >= min_switch_rate


ScriptName = Literal["cjk", "hangul", "kana", "han", "arabic", "hebrew", "cyrillic", "greek", "devanagari", "thai",
                     "armenian", "georgian"]
_HAN = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))
_KANA = ((0x3040, 0x309F), (0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))
_HANGUL = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7AF), (0xD7B0, 0xD7FF))
_CJK_PUNCTUATION = ((0x3000, 0x303F), (0xFF00, 0xFF65), (0xFFE0, 0xFFEF))
SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "cjk": _HAN + _KANA + _HANGUL + _CJK_PUNCTUATION,  # Chinese, Japanese and Korean with their punctuation
    "han": _HAN,
    "kana": _KANA,
    "hangul": _HANGUL,
    "arabic": ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
    "hebrew": ((0x0590, 0x05FF), (0xFB1D, 0xFB4F)),
    "cyrillic": ((0x0400, 0x04FF), (0x0500, 0x052F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F)),
    "greek": ((0x0370, 0x03FF), (0x1F00, 0x1FFF)),
    "devanagari": ((0x0900, 0x097F), (0xA8E0, 0xA8FF)),
    "thai": ((0x0E00, 0x0E7F),),
    "armenian": ((0x0530, 0x058F), (0xFB13, 0xFB17)),
    "georgian": ((0x10A0, 0x10FF), (0x2D00, 0x2D2F), (0x1C90, 0x1CBF)),
}
"""Unicode blocks of each script (inclusive code point ranges)."""


def script(name: ScriptName) -> Proxy:
    """Tokens written in a script, by the Unicode blocks of `SCRIPTS` (spaces left out; see `token_shares`)."""
    if name not in SCRIPTS:
        raise InputError(f"unknown script {name!r}; choose one of {', '.join(get_args(ScriptName))}")
    ranges = np.array(SCRIPTS[name], dtype=np.uint32)

    def mark(text: str) -> np.ndarray:
        points = codepoints(text)[:, None]
        return ((points >= ranges[:, 0]) & (points <= ranges[:, 1])).any(axis=1)

    return char_proxy(name, mark)


_PYTHON_LINE = re.compile(r"""^[ \t]*(?:
      (?:async[ \t]+)?def[ \t]+\w+[ \t]*\(
    | class[ \t]+\w+[ \t]*[(:]
    | from[ \t]+\.*[\w.]*[ \t]+import[ \t]
    | import[ \t]+[\w.]+(?:[ \t]+as[ \t]+\w+)?(?:[ \t]*,[ \t]*[\w.]+(?:[ \t]+as[ \t]+\w+)?)*[ \t]*(?:\#.*)?$
    | (?:if|elif|while|for|with|async[ \t]+for|async[ \t]+with)\b[^\n]*:[ \t]*(?:\#.*)?$
    | (?:else|try|finally)[ \t]*:[ \t]*(?:\#.*)?$
    | except\b[^\n]*:[ \t]*(?:\#.*)?$
    | (?:return|raise|yield|assert|del|await)(?:[ \t]*$|[ \t][^\n]*[(\[.=_+\-*/%<>{}]|[ \t]+[\w.]+[ \t]*$)
    | (?:pass|break|continue)[ \t]*(?:\#.*)?$
    | @[A-Za-z_][\w.]*
    | [A-Za-z_][\w.]*(?:\[[^\]\n]*\])?[ \t]*(?:[-+*/%&|^@]|//|\*\*|>>|<<)?=(?!=)
    | [A-Za-z_][\w.]*\([^\n]*\)[ \t]*$
)""", re.MULTILINE | re.VERBOSE)


def python_code() -> Proxy:
    """Tokens on lines that are Python statements: def/class headers, imports, block openers ending in ':',
    return/raise/... with code on them, decorators, assignments and calls (each line whole, its indentation and
    newline included). Docstrings and comment lines are not marked."""

    def mark(text: str) -> np.ndarray:
        spans = []
        for m in _PYTHON_LINE.finditer(text):
            end = text.find("\n", m.start())
            spans.append((m.start(), len(text) if end < 0 else end + 1))
        return span_mask(len(text), spans)

    return char_proxy("python_code", mark)


_MARKUP = re.compile(r"""
      <!--.*?-->                                      # HTML/XML comment
    | <![A-Za-z\[][^>]*>                              # <!DOCTYPE ...>, <![CDATA[
    | <\?[A-Za-z][^>]*\?>                             # <?xml ...?>
    | </?[A-Za-z][\w:.-]*(?:\s+[^<>]*?)?\s*/?>          # a tag with its attributes
    | &(?:[A-Za-z][A-Za-z0-9]*|\#[0-9]+|\#x[0-9A-Fa-f]+);   # an entity
    | !?\[[^\]\n]+\]\([^)\s]+\)                       # Markdown link or image
    | ^\#{2,6}[ \t]+\S[^\n]*$                        # Markdown header (## and deeper: "# " is a Python comment)
    | ^[ \t]*(?:```|~~~)[^\n]*$                       # Markdown fence
    | ^\.\.[ \t]+[\w:-]+::                            # reST directive
    | :[\w:-]+:`[^`\n]+`                              # reST role
    | ``[^`\n]+``                                     # reST literal
    | ^([=\-~^*+\#])\1{3,}[ \t]*$                     # reST/Markdown underline
""", re.MULTILINE | re.VERBOSE | re.DOTALL)


def markup() -> Proxy:
    """Tokens inside markup: HTML/XML tags (with their attributes), comments, declarations and entities; Markdown
    links, headers and fences; reST directives, roles, literals and section underlines. JSON and CSS bodies are not
    markup here."""
    return char_proxy("markup", lambda text: match_mask(_MARKUP, text))


_LEGAL_TERMS = re.compile(r"""\b(?:
      licen[cs]\w* | sublicens\w* | warrant\w* | copyright\w* | liabilit\w* | liable | merchantabilit\w*
    | infring\w* | indemn\w* | disclaim\w* | herein\w* | hereby | hereunder | thereof | whereas | notwithstanding
    | pursuant | redistribut\w* | permission | permitted | provided[ \t\n]+that | without[ \t\n]+limitation
    | express[ \t\n]+or[ \t\n]+implied | all[ \t\n]+rights[ \t\n]+reserved | shall | damages | tort | contract\w*
    | terms[ \t\n]+and[ \t\n]+conditions | jurisdiction | patent\w* | trademark\w* | royalt\w* | irrevocable
    | perpetual | non-exclusive | worldwide | licensor | licensee | fitness[ \t\n]+for[ \t\n]+a[ \t\n]+particular
)\b""", re.IGNORECASE | re.VERBOSE)
_SENTENCE_END = re.compile(r"[.;!?](?=\s)|\n[ \t]*\n")


def legal_text(min_terms: int = 2) -> Proxy:
    """Tokens in sentences of licence language: sentences (cut at . ; ! ? before a space, and at blank lines)
    holding at least `min_terms` distinct terms such as licence, warranty, liability, hereby, "without limitation"."""

    def mark(text: str) -> np.ndarray:
        spans, start = [], 0
        for end in [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]:
            terms = {re.sub(r"\s+", " ", m.group().lower()) for m in _LEGAL_TERMS.finditer(text, start, end)}
            if len(terms) >= min_terms:
                spans.append((start, end))
            start = end
        return span_mask(len(text), spans)

    return char_proxy("legal_text", mark)
