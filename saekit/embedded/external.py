"""Corpus sources other than the installation: a folder of text files, or a Hugging Face dataset by name."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from saekit.embedded.documents import Document, decode, normalize_newlines
from saekit.embedded.selection import Candidate

# Stream this many times the target bytes from a Hugging Face dataset, so capping has room to sample.
HF_READ_FACTOR = 2


def folder_subset(rel: PurePosixPath) -> str:
    """A folder file's subset: its top-level sub-folder, or "text" for files directly in the folder."""
    return rel.parts[0] if len(rel.parts) > 1 else "text"


def read_text_file(subset: str, name: str, path: Path) -> list[Document]:
    """A UTF-8 text file as one document; [] when it is binary or not UTF-8."""
    try:
        text = decode(path.read_bytes())
    except OSError:
        return []
    return [] if text is None else [Document(subset, name, text)]


def folder_candidates(folder: Path) -> list[Candidate]:
    """Every non-hidden file under `folder` (sorted), named by its relative path, subset by sub-folder."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(f for f in filenames if not f.startswith(".")):
            path = Path(dirpath) / filename
            rel = PurePosixPath(*path.relative_to(folder).parts)
            subset, name = folder_subset(rel), str(rel)
            load = partial(read_text_file, subset, name, path)
            found.append(Candidate(subset, name, path.stat().st_size, load))
    return found


def lookup(row: Mapping[str, Any], dotted: str) -> Any:
    """`row["a"]["b"]` for `dotted="a.b"` (the Pile keeps its subset name at `meta.pile_set_name`)."""
    value: Any = row
    for key in dotted.split("."):
        value = value[key]
    return value


def open_hf_dataset(name: str, config_name: str | None, split: str) -> Iterable[Mapping[str, Any]]:
    """Rows of a Hugging Face dataset: a `save_to_disk` folder, or any name/path `load_dataset` streams."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            "CorpusConfig(source='hf') needs the `datasets` package: pip install datasets"
        ) from err
    if (Path(name) / "dataset_info.json").is_file() or (Path(name) / "dataset_dict.json").is_file():
        loaded = datasets.load_from_disk(name)
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    return datasets.load_dataset(name, config_name, split=split, streaming=True)


def hf_candidates(
    name: str,
    config_name: str | None,
    split: str,
    text_column: str,
    subset_column: str | None,
    max_bytes: int,
) -> list[Candidate]:
    """The first rows of a dataset (about `max_bytes` of text) as in-memory candidates `name/split/row`."""
    default_subset = PurePosixPath(name).name or name
    found: list[Candidate] = []
    total = 0
    for i, row in enumerate(open_hf_dataset(name, config_name, split)):
        text = normalize_newlines(str(row[text_column]))
        subset = str(lookup(row, subset_column)) if subset_column else default_subset
        doc = Document(subset, f"{default_subset}/{split}/{i}", text)
        found.append(Candidate(subset, doc.name, len(text), partial(list, [doc])))
        total += len(text)
        if total >= max_bytes:
            break
    return found
