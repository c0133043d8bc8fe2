"""The "local pile": real text installed with Python, found by path and sorted into Pile-like subsets.

Sources are declared, so that installing an unrelated package changes nothing: the standard library and
the system's certificate folder (walked whole), plus the files of a fixed tuple of distributions,
`CORE_DISTRIBUTIONS` (saekit's core dependencies and what they pull in, always installed with saekit),
listed from each one's RECORD through `importlib.metadata`. Each file is classified by its path, listed
in sorted-name order as a lazy `Candidate`, and read (with the decoding its kind needs) only when the
corpus sampler wants it.
"""

from __future__ import annotations

import ast
import email.parser
import importlib.metadata
import os
import pickletools
import re
import ssl
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Literal

from saekit.embedded.documents import Document, ascii_letter_ratio, decode, decode_python
from saekit.embedded.selection import Candidate

SubsetName = Literal["python_code", "prose", "legal", "base64", "multilingual", "markup"]
LOCAL_PILE_SUBSETS: tuple[SubsetName, ...] = (
    "python_code",
    "prose",
    "legal",
    "base64",
    "multilingual",
    "markup",
)

MARKUP_SUFFIXES = frozenset(
    {".json", ".html", ".htm", ".css", ".md", ".rst", ".xml", ".toml", ".yaml", ".yml"}
)
_LEGAL_NAME = re.compile(r"^(licen[cs]e|copying|notice|copyright)([._-].*)?$", re.IGNORECASE)
_SKIPPED_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages", ".git"})
CORE_DISTRIBUTIONS: tuple[str, ...] = (
    # pyproject's dependencies
    "torch", "nnsight", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "pyarrow", "tqdm",
    "scipy",
    # what they install with them (their dependency closure on a CPU build of torch)
    "annotated-doc", "annotated-types", "anyio", "certifi", "click", "cloudpickle", "filelock", "fsspec",
    "greenlet", "h11", "hf-xet", "httpcore", "httpx", "huggingface-hub", "idna", "jinja2", "markdown-it-py",
    "markupsafe", "mdurl", "mpmath", "networkx", "packaging", "pydantic", "pydantic-core", "pygments",
    "python-dateutil", "pyyaml", "regex", "rich", "shellingham", "sympy", "typer", "typing-extensions",
    "typing-inspection", "tzdata", "websocket-client",
)
"""Distributions whose files join the local pile, a fixed list: installing another package never changes the
corpus (a name not installed here is skipped; the manifest hash tells corpora apart)."""
# Prose needs at least this fraction of ASCII letters and spaces (English; tables of numbers are not prose).
_ENGLISH_LETTERS = 0.6


def installation_roots() -> tuple[Path, ...]:
    """The folders walked whole: this interpreter's standard library and the system certificate folder."""
    found = [Path(sysconfig.get_paths()["stdlib"])]
    capath = ssl.get_default_verify_paths().capath
    if capath:
        found.append(Path(capath))
    unique: list[Path] = []
    for path in found:
        if path.is_dir() and path.resolve() not in {p.resolve() for p in unique}:
            unique.append(path)
    return tuple(unique)


def find_distributions(names: Iterable[str], paths: Sequence[Path] | None = None
                       ) -> list[importlib.metadata.Distribution]:
    """The installed distributions of these names, first found on `paths` (None: sys.path) as imports would
    find them, sorted by name; names not installed are left out."""
    where = {} if paths is None else {"path": [str(p) for p in paths]}
    found = {}
    for name in sorted(set(names)):
        dist = next(iter(importlib.metadata.Distribution.discover(name=name, **where)), None)
        if dist is not None:
            found[name] = dist
    return [found[n] for n in sorted(found)]


def distribution_files(dists: Sequence[importlib.metadata.Distribution]) -> Iterator[tuple[PurePosixPath, Path]]:
    """(document name, path) for every file the distributions' RECORDs list inside their install folder
    (named `<that folder's name>/<path in it>`, e.g. `site-packages/numpy/...`), sorted, each once."""
    files: dict[PurePosixPath, Path] = {}
    for dist in dists:
        base = Path(dist.locate_file(""))
        for file in dist.files or ():
            parts = PurePosixPath(str(file)).parts
            if ".." in parts or any(p in _SKIPPED_DIRS for p in parts[:-1]):
                continue  # scripts outside the folder, bytecode caches
            files.setdefault(PurePosixPath(base.name or "root", *parts), base.joinpath(*parts))
    for name in sorted(files):
        yield name, files[name]


def root_labels(roots: Sequence[Path]) -> tuple[str, ...]:
    """A short unique label per root (its folder name, numbered on clashes) used to name documents."""
    labels: list[str] = []
    for root in roots:
        label, n = root.name or "root", 2
        while label in labels:
            label, n = f"{root.name}{n}", n + 1
        labels.append(label)
    return tuple(labels)


def classify(rel: PurePosixPath) -> SubsetName | None:
    """The subset a file belongs to by its path inside a root, or None when it is not corpus material."""
    name, suffix = rel.name, rel.suffix.lower()
    in_dist_info = any(part.endswith((".dist-info", ".egg-info")) for part in rel.parts[:-1])
    if suffix in {".pem", ".crt"}:
        return "base64"
    if _LEGAL_NAME.match(name) or (in_dist_info and "licenses" in rel.parts):
        return "legal"
    if "cjkencodings" in rel.parts or suffix == ".po" or is_cldr_locale(rel):
        return "multilingual"
    if name in {"METADATA", "PKG-INFO"} or name.lower().startswith("readme"):
        return "prose"
    if rel.parts[-2:] == ("pydoc_data", "topics.py"):
        return "prose"
    if suffix == ".py":
        return "python_code"
    if suffix in MARKUP_SUFFIXES:
        return "markup"
    if suffix == ".txt" and not in_dist_info:
        return "prose"
    return None


def iter_candidate_files(roots: Sequence[Path]) -> Iterator[tuple[PurePosixPath, Path]]:
    """(document name, path) for every file under the roots, sorted; nested roots are not walked twice."""
    resolved = {root.resolve() for root in roots}
    for label, root in zip(root_labels(roots), roots):
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = sorted(
                d for d in dirnames if d not in _SKIPPED_DIRS and (here / d).resolve() not in resolved
            )
            for filename in sorted(filenames):
                path = here / filename
                yield PurePosixPath(label, *path.relative_to(root).parts), path


def read_metadata_description(data: bytes) -> str | None:
    """The long description (README) in a METADATA / PKG-INFO file: its body, or its Description header."""
    text = decode(data)
    if text is None:
        return None
    message = email.parser.Parser().parsestr(text)
    body = message.get_payload()
    if isinstance(body, str) and body.strip():
        return body
    return message.get("Description")


def read_pydoc_topics(data: bytes) -> dict[str, str]:
    """The Python reference manual's topics shipped in `pydoc_data/topics.py` (a dict literal), by topic."""
    text = decode(data)
    if text is None:
        return {}
    tree = ast.parse(text)
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            value = ast.literal_eval(node.value)
            return {str(k): str(v) for k, v in sorted(value.items())}
    return {}


def is_cldr_locale(rel: PurePosixPath) -> bool:
    """Whether `rel` is one of babel's CLDR locale files (names of languages, months, units... per locale)."""
    return rel.suffix == ".dat" and "locale-data" in rel.parts


def read_pickle_strings(data: bytes) -> str | None:
    """The distinct strings in a pickle, one per line, found by parsing its opcodes: nothing is unpickled."""
    seen: dict[str, None] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if isinstance(arg, str) and "UNICODE" in opcode.name:
                seen.setdefault(arg.replace("\n", " "), None)
    except (ValueError, EOFError):
        return None
    return "\n".join(seen)


def cjk_test_encoding(rel: PurePosixPath) -> str:
    """Encoding of a `test/cjkencodings` file: `big5-utf8.txt` is UTF-8, `big5.txt` is Big5."""
    stem = rel.stem
    return "utf-8" if stem.endswith("-utf8") else stem


def decode_file(name: PurePosixPath, data: bytes) -> str | None:
    """A classified file's text, decoded the way its kind needs; None when it does not decode."""
    if name.name in {"METADATA", "PKG-INFO"}:
        return read_metadata_description(data)
    if is_cldr_locale(name):
        return read_pickle_strings(data)
    if "cjkencodings" in name.parts:
        return decode(data, cjk_test_encoding(name))
    if name.suffix == ".py":
        return decode_python(data)
    return decode(data)


def fits_subset(subset: SubsetName, text: str) -> bool:
    """Content checks on top of the path rule: certificates hold PEM blocks, prose is English-looking text."""
    if subset == "base64":
        return "-----BEGIN" in text
    if subset == "prose":
        return ascii_letter_ratio(text) >= _ENGLISH_LETTERS
    return True


def read_documents(subset: SubsetName, name: PurePosixPath, path: Path) -> list[Document]:
    """The documents one classified file holds (usually one, one per topic for pydoc's); [] when unusable."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    if rel_is_topics(name):
        return [Document(subset, f"{name}#{topic}", text) for topic, text in read_pydoc_topics(data).items()]
    text = decode_file(name, data)
    return [Document(subset, str(name), text)] if text is not None and fits_subset(subset, text) else []


def rel_is_topics(name: PurePosixPath) -> bool:
    """Whether `name` is the standard library's `pydoc_data/topics.py` (read as prose, one doc per topic)."""
    return name.parts[-2:] == ("pydoc_data", "topics.py")


def installed_candidates(roots: Sequence[Path],
                         dists: Sequence[importlib.metadata.Distribution] = ()) -> list[Candidate]:
    """Every corpus file under `roots` and in the distributions' RECORDs as a lazy candidate (subset by
    path, size from the filesystem), in sorted-name order."""
    found = {}
    files = [*iter_candidate_files(roots), *distribution_files(dists)]
    for name, path in files:
        subset = classify(name)
        if subset is None or name in found or not path.is_file():
            continue
        found[name] = Candidate(subset, str(name), path.stat().st_size, partial(read_documents, subset, name, path))
    return [found[n] for n in sorted(found)]
