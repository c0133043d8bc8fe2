"""The embedded corpus: a capped, de-duplicated, deterministic "local pile" written to a folder.

`build_corpus(CorpusConfig(), out)` samples documents from a source (this Python installation, a
folder of text files, or a Hugging Face dataset), holds out a split by document, and writes
`train/<subset>.jsonl`, `heldout/<subset>.jsonl`, `manifest.csv` and `corpus.json` (with the
manifest hash: the same config on the same declared sources gives the same hash). The folder is written
beside its place and renamed into it when complete, so a killed build never leaves a corpus that opens.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import pandas as pd

from saekit.embedded.documents import Document, NoiseLimits
from saekit.embedded.external import HF_READ_FACTOR, folder_candidates, hf_candidates
from saekit.embedded.installed import (
    CORE_DISTRIBUTIONS,
    LOCAL_PILE_SUBSETS,
    find_distributions,
    installation_roots,
    installed_candidates,
)
from saekit.embedded.mixing import is_heldout
from saekit.embedded.selection import Accepted, Candidate, select_documents

Split = Literal["train", "heldout"]
SPLITS: tuple[Split, ...] = ("train", "heldout")
MANIFEST_COLUMNS = ["subset", "split", "document", "bytes", "sha256"]

DEFAULT_MAX_SHARE: tuple[tuple[str, float], ...] = (
    ("python_code", 0.65),
    ("prose", 0.2),
    ("legal", 0.1),
    ("base64", 0.05),
    ("multilingual", 0.15),
    ("markup", 0.2),
)
PROFILE_TARGET_BYTES = {"quick": 4_000_000, "full": 60_000_000}
CORPUS_VERSION = 2
"""Bump when the same config and sources give other documents: built corpora are then rebuilt."""


@dataclass(frozen=True)
class CorpusConfig:
    """What goes into the corpus: its source, size, mix caps, split and noise filters."""

    source: Literal["installed", "folder", "hf"] = "installed"
    """Where documents come from: this Python installation, `folder`, or the dataset `hf_dataset`."""
    target_bytes: int = PROFILE_TARGET_BYTES["quick"]
    """Total UTF-8 bytes wanted (train + held-out); less when the caps and the available text allow less."""
    seed: int = 0
    """Seed of the sampling order within each subset."""
    heldout_fraction: float = 0.05
    """Fraction of documents held out for evaluation (chosen by a hash of the document name)."""
    max_share: tuple[tuple[str, float], ...] | None = None
    """Per-subset caps on the share of total bytes, (subset, fraction) pairs; 0 leaves a subset out.
    None: DEFAULT_MAX_SHARE for source="installed", no caps for a folder or a dataset."""
    default_max_share: float = 1.0
    """Cap for subsets not named in `max_share` (folder sub-folders, dataset subsets)."""
    roots: tuple[Path, ...] | None = None
    """Folders walked whole by source="installed"; None: this interpreter's standard library and the system
    certificate folder."""
    distributions: tuple[str, ...] = CORE_DISTRIBUTIONS
    """Distributions whose files (as their RECORDs list them) join the roots for source="installed"."""
    distribution_paths: tuple[Path, ...] | None = None
    """Where those distributions are looked up; None: sys.path (this interpreter's site-packages)."""
    folder: Path | None = None
    """The folder of text files read by source="folder" (sub-folders become subsets)."""
    hf_dataset: str | None = None
    """Dataset name or local path read by source="hf"."""
    hf_config: str | None = None
    """Dataset configuration name, if it has several."""
    hf_split: str = "train"
    """Dataset split to read (the held-out split is carved from it)."""
    hf_text_column: str = "text"
    """Column holding the document text."""
    hf_subset_column: str | None = None
    """Column (dotted for nested, e.g. "meta.pile_set_name") naming each row's subset; None: one subset."""
    min_document_bytes: int = 100
    """Documents shorter than this are dropped."""
    max_document_bytes: int = 1_000_000
    """Documents longer than this are dropped (mostly generated data)."""
    max_line_chars: int = 1000
    """Documents with a longer line are dropped (minified or generated files)."""
    min_printable: float = 0.95
    """Documents with a smaller fraction of printable characters are dropped (binary-ish files)."""

    def __post_init__(self) -> None:
        if self.max_share is not None:
            object.__setattr__(self, "max_share", tuple((str(s), float(c)) for s, c in self.max_share))
        if self.roots is not None:
            object.__setattr__(self, "roots", tuple(Path(r) for r in self.roots))
        if self.distribution_paths is not None:
            object.__setattr__(self, "distribution_paths", tuple(Path(r) for r in self.distribution_paths))
        object.__setattr__(self, "distributions", tuple(str(d) for d in self.distributions))
        if self.folder is not None:
            object.__setattr__(self, "folder", Path(self.folder))
        self._check()

    def _check(self) -> None:
        if self.source not in ("installed", "folder", "hf"):
            raise ValueError(f"source={self.source!r}: use 'installed', 'folder' or 'hf'")
        if self.target_bytes <= 0:
            raise ValueError(f"target_bytes={self.target_bytes}: set a positive byte count, e.g. 4_000_000")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction={self.heldout_fraction}: use a fraction in [0, 1), e.g. 0.05")
        for subset, cap in (*self.caps.items(), ("default_max_share", self.default_max_share)):
            if not 0 <= cap <= 1:
                raise ValueError(f"max share {cap} for {subset!r}: use a fraction in [0, 1]")
        local = sum(self.caps.get(s, self.default_max_share) for s in LOCAL_PILE_SUBSETS)
        if self.source == "installed" and local < 1:
            raise ValueError(
                f"the subset caps sum to {local:.2f} < 1, so no mix fills a corpus: raise max_share"
            )
        if self.source == "folder" and (self.folder is None or not self.folder.is_dir()):
            raise ValueError(f"source='folder' needs folder= an existing directory (got {self.folder!r})")
        if self.source == "hf" and not self.hf_dataset:
            raise ValueError("source='hf' needs hf_dataset= a dataset name or path")
        if not 0 < self.min_document_bytes <= self.max_document_bytes:
            raise ValueError("need 0 < min_document_bytes <= max_document_bytes")
        if self.max_line_chars <= 0 or not 0 <= self.min_printable <= 1:
            raise ValueError("max_line_chars must be positive and min_printable a fraction in [0, 1]")

    @property
    def caps(self) -> dict[str, float]:
        """The named caps as a dict (`max_share`, or its default for the source)."""
        if self.max_share is None:
            return dict(DEFAULT_MAX_SHARE) if self.source == "installed" else {}
        return dict(self.max_share)

    @property
    def limits(self) -> NoiseLimits:
        """The noise filters as one value."""
        return NoiseLimits(
            self.min_document_bytes, self.max_document_bytes, self.max_line_chars, self.min_printable
        )

    @classmethod
    def profile(cls, name: Literal["quick", "full"], **overrides: object) -> CorpusConfig:
        """A demo profile: quick (4 MB) or full (60 MB target; the caps stop a typical install near 40 MB)."""
        if name not in PROFILE_TARGET_BYTES:
            raise ValueError(f"profile {name!r}: use one of {sorted(PROFILE_TARGET_BYTES)}")
        return replace(cls(target_bytes=PROFILE_TARGET_BYTES[name]), **overrides)


@dataclass(frozen=True, eq=False)
class Corpus:
    """A built corpus folder: its config, manifest (one row per document) and manifest hash."""

    path: Path
    config: CorpusConfig
    manifest: pd.DataFrame = field(repr=False)
    manifest_hash: str

    def mix(self) -> pd.DataFrame:
        """The subset mix: documents, bytes and share of total bytes per subset."""
        return subset_mix(self.manifest)

    def documents(self, split: Split = "train") -> Iterator[Document]:
        """The documents of one split, subset by subset, in manifest order."""
        return iter_documents(self.path, split)

    @property
    def total_bytes(self) -> int:
        return int(self.manifest["bytes"].sum())


def subset_mix(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per subset: number of documents, bytes, and share of all bytes (from a manifest DataFrame)."""
    mix = manifest.groupby("subset", sort=False).agg(documents=("document", "size"), bytes=("bytes", "sum"))
    mix["share"] = mix["bytes"] / max(int(mix["bytes"].sum()), 1)
    return mix.reset_index()


def candidates_for(config: CorpusConfig) -> list[Candidate]:
    """The lazy candidates of the configured source."""
    if config.source == "folder":
        assert config.folder is not None
        return folder_candidates(config.folder)
    if config.source == "hf":
        assert config.hf_dataset is not None
        return hf_candidates(
            config.hf_dataset,
            config.hf_config,
            config.hf_split,
            config.hf_text_column,
            config.hf_subset_column,
            HF_READ_FACTOR * config.target_bytes,
        )
    roots = installation_roots() if config.roots is None else config.roots
    dists = find_distributions(config.distributions, config.distribution_paths)
    return [c for c in installed_candidates(roots, dists)
            if config.caps.get(c.subset, config.default_max_share) > 0]


def manifest_of(chosen: Mapping[str, list[Accepted]], heldout_fraction: float) -> pd.DataFrame:
    """One row per chosen document: subset, split, name, bytes, sha256; sorted by subset, split, name."""
    rows = [
        (s, "heldout" if is_heldout(a.doc.name, heldout_fraction) else "train", a.doc.name, a.bytes, a.sha256)
        for s, docs in chosen.items()
        for a in docs
    ]
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    manifest["bytes"] = manifest["bytes"].astype("int64")
    return manifest.sort_values(["subset", "split", "document"], kind="stable", ignore_index=True)


def manifest_hash(manifest: pd.DataFrame) -> str:
    """sha256 over the manifest rows (tab-separated, in order): equal manifests give equal hashes."""
    digest = hashlib.sha256()
    for row in manifest[MANIFEST_COLUMNS].itertuples(index=False):
        digest.update(("\t".join(map(str, row)) + "\n").encode("utf-8"))
    return digest.hexdigest()


def config_json(config: CorpusConfig) -> dict[str, object]:
    """The config as JSON-able values (paths as strings)."""
    return json.loads(json.dumps(asdict(config), default=str))


def write_corpus(out: Path, config: CorpusConfig, chosen: Mapping[str, list[Accepted]]) -> Corpus:
    """Write the chosen documents as JSONL per split and subset, plus manifest.csv and corpus.json."""
    manifest = manifest_of(chosen, config.heldout_fraction)
    split_of = dict(zip(manifest["document"], manifest["split"]))
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
        for old in (out / split).glob("*.jsonl"):
            old.unlink()
    for subset, docs in chosen.items():
        for split in SPLITS:
            lines = [
                json.dumps({"document": a.doc.name, "text": a.doc.text}, ensure_ascii=False)
                for a in sorted(docs, key=lambda a: a.doc.name)
                if split_of[a.doc.name] == split
            ]
            if lines:
                (out / split / f"{subset}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest.to_csv(out / "manifest.csv", index=False)
    digest = manifest_hash(manifest)
    meta = {
        "manifest_hash": digest,
        "total_bytes": int(manifest["bytes"].sum()),
        "config": config_json(config),
        "code_version": CORPUS_VERSION,
    }
    (out / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return Corpus(out, config, manifest, digest)


def build_corpus(
    config: CorpusConfig, out: str | Path, *, progress: bool = True, rebuild: bool = False
) -> Corpus:
    """Build the corpus into folder `out`, or open the one there if built from the same config."""
    out = Path(out)
    if not rebuild and (out / "corpus.json").is_file():
        existing = json.loads((out / "corpus.json").read_text(encoding="utf-8"))
        if existing.get("config") == config_json(config) and existing.get("code_version") == CORPUS_VERSION:
            return load_corpus(out)
    candidates = candidates_for(config)
    caps = {c.subset: config.caps.get(c.subset, config.default_max_share) for c in candidates}
    if sum(caps.values()) < 1:
        raise ValueError(
            f"the caps of the subsets found ({caps}) sum to < 1: raise max_share or default_max_share"
        )
    chosen = select_documents(
        candidates, caps, config.target_bytes, config.seed, config.limits, progress=progress
    )
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_corpus(tmp, config, chosen)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return load_corpus(out)


def config_from_json(values: Mapping[str, object]) -> CorpusConfig:
    """A CorpusConfig from `config_json` output."""
    fields = dict(values)
    if fields.get("max_share") is not None:
        fields["max_share"] = tuple(tuple(pair) for pair in fields["max_share"])  # type: ignore[union-attr]
    for name in ("roots", "distribution_paths"):
        if fields.get(name) is not None:
            fields[name] = tuple(Path(r) for r in fields[name])  # type: ignore[union-attr]
    if fields.get("distributions") is not None:
        fields["distributions"] = tuple(fields["distributions"])  # type: ignore[arg-type]
    return CorpusConfig(**fields)  # type: ignore[arg-type]


def load_corpus(path: str | Path) -> Corpus:
    """Open a corpus folder written by `build_corpus`."""
    path = Path(path)
    meta = json.loads((path / "corpus.json").read_text(encoding="utf-8"))
    manifest = pd.read_csv(path / "manifest.csv", dtype={"bytes": "int64"}, keep_default_na=False)
    return Corpus(path, config_from_json(meta["config"]), manifest, meta["manifest_hash"])


def iter_documents(path: str | Path, split: Split = "train") -> Iterator[Document]:
    """Documents of one split of a corpus folder, subset files in sorted order, lines in file order."""
    for file in sorted((Path(path) / split).glob("*.jsonl")):
        with file.open(encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                yield Document(file.stem, record["document"], record["text"])
