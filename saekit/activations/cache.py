"""Activations on disk: read a model once (`write_cache`), train on what it wrote as often as wanted (`CachedBatches`).

A cache is a folder of shards, `shard-00000.safetensors`, ..., each one tensor "activations" [rows, width] in the
order the model produced them, and `manifest.json`: where they came from (a `Provenance`: model, hook, target hook,
text), the width of each read side by side in a row (as `ActivationSource` lays them out), the dtype, and each
shard's rows and SHA-256.

Writing is resumable and bounded in memory: one shard is held at a time, written atomically, then listed in the
manifest (also written atomically); a rerun of the same command continues after the last listed shard, reading on
from that token without running the model over the ones before.

Reading shuffles across shards: each pass over the cache takes the shards in a seeded random order and the
`ActivationBuffer` mixes the rows of as many consecutive shards as its budget holds, so batches restart at any batch
number (a resumed run) by reading one buffer block. Under data-parallel training every rank reads the same global
batches and keeps its share of their rows, in rank order (see `rank_rows`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations.buffer import ActivationBuffer, rank_rows
from saekit.errors import InputError
from saekit.formats import atomic_write
from saekit.saes.provenance import Provenance

MANIFEST = "manifest.json"
FORMAT = "saekit-activation-cache/1"
TENSOR = "activations"


@dataclass(frozen=True)
class Shard:
    """One file of the cache: its name, its rows, and the SHA-256 of its bytes."""

    file: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class CacheManifest:
    """What a cache folder holds (manifest.json)."""

    provenance: Provenance
    """Where the activations were read: model(s), hook, target hook, text, context length."""
    widths: tuple[int, ...]
    """Width of each read, side by side in a row: the hook's (then a transcoder target's), or each model's."""
    dtype: str
    """dtype of the stored activations, e.g. "float32"."""
    tokens_requested: int
    """Rows the writer was asked for (the cache holds fewer when the text ran out)."""
    shard_rows: int
    """Rows per shard (the last may hold fewer)."""
    sites: tuple[tuple[str, str, int, int], ...] = ()
    """(module path, side, first column, end column) of each site, where a row holds several sites' activations
    side by side (a sweep over sites); () where a row is one dictionary's input."""
    shards: tuple[Shard, ...] = ()
    complete: bool = False
    """True once the writer finished: every row it will ever hold is listed."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Activation vectors (token positions) in the listed shards."""
        return sum(s.rows for s in self.shards)

    @property
    def width(self) -> int:
        return sum(self.widths)

    @property
    def is_transcoder(self) -> bool:
        return self.provenance.target_hook is not None

    @property
    def n_models(self) -> int:
        return max(1, len(self.provenance.models))

    @property
    def d_in(self) -> int:
        """Width of a dictionary's input trained on this cache."""
        return self.widths[0] if self.is_transcoder else self.width

    @property
    def d_out(self) -> int | None:
        """A transcoder's target width; None when the dictionary rebuilds its input."""
        return self.widths[1] if self.is_transcoder else None

    def settings(self) -> dict[str, Any]:
        """What decides the cache's contents: a rerun with other settings must not append to it."""
        return {"provenance": self.provenance.to_json(), "widths": list(self.widths), "dtype": self.dtype,
                "tokens_requested": self.tokens_requested, "shard_rows": self.shard_rows,
                "sites": [list(site) for site in self.sites]}

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **self.settings(), "rows": self.rows, "complete": self.complete,
                "shards": [vars(s) for s in self.shards], **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CacheManifest:
        known = {"format", "provenance", "widths", "dtype", "tokens_requested", "shard_rows", "sites", "rows",
                 "complete", "shards"}
        return cls(provenance=Provenance.from_json(data["provenance"]), widths=tuple(data["widths"]),
                   dtype=data["dtype"], tokens_requested=int(data["tokens_requested"]),
                   shard_rows=int(data["shard_rows"]), sites=tuple(tuple(s) for s in data.get("sites", ())),
                   shards=tuple(Shard(**s) for s in data["shards"]),
                   complete=bool(data["complete"]), extra={k: v for k, v in data.items() if k not in known})


def read_manifest(folder: str | Path) -> CacheManifest | None:
    """The manifest of a cache folder; None when the folder holds none. A folder that is something else is refused."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise KeyError("format")
        return CacheManifest.from_json(data)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path} is not a saekit activation cache manifest ({error!r}): pass another folder, "
                         "or delete it and write the cache again") from None


def _write_manifest(folder: Path, manifest: CacheManifest) -> None:
    text = json.dumps(manifest.to_json(), indent=1)
    atomic_write(folder / MANIFEST, lambda tmp: Path(tmp).write_text(text))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def write_cache(source: Any, folder: str | Path, tokens: int, *, shard_bytes: int = 128 * 2**20,
                progress: bool = True) -> CacheManifest:
    """Write `tokens` activation rows of `source` (an `ActivationSource`, read in model order, one pass over its
    text) to `folder`; returns the manifest. Rerunning it on a killed cache continues where the last listed shard
    ends; on a complete one it changes nothing; on a cache of other settings it refuses."""
    if tokens < 1:
        raise InputError(f"tokens must be positive (got {tokens})")
    folder = Path(folder)
    itemsize = torch.empty((), dtype=source.config.torch_dtype).element_size()
    shard_rows = max(1, shard_bytes // (source.width * itemsize))
    columns = source.site_columns()
    sites = tuple((hook, side, part.start, part.stop) for hook, side, part in columns) if len(columns) > 1 else ()
    fresh = CacheManifest(provenance=source.provenance(), widths=tuple(source.widths), dtype=source.config.dtype,
                          tokens_requested=tokens, shard_rows=shard_rows, sites=sites)
    found = read_manifest(folder)
    if found is None and folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir()):
        raise InputError(f"{folder} is a folder that holds something other than an activation cache: pass a new or "
                         "empty folder")
    if found is not None and found.settings() != fresh.settings():
        differ = [k for k, v in fresh.settings().items() if found.settings().get(k) != v]
        raise InputError(f"{folder} holds an activation cache of other settings ({', '.join(differ)} differ): pass "
                         "another folder, or delete it to write this one")
    manifest = found or fresh
    if manifest.complete:
        return manifest
    folder.mkdir(parents=True, exist_ok=True)
    listed = {s.file for s in manifest.shards}
    for stray in folder.glob("shard-*"):  # written by a killed run after its last manifest update
        if stray.name not in listed:
            stray.unlink()
    _write_manifest(folder, manifest)
    pending: list[Tensor] = []
    held = 0
    with tqdm(total=tokens, initial=manifest.rows, unit="tok", desc="cache", disable=not progress) as bar:
        chunks = source.activations(skip=manifest.rows) if manifest.rows < tokens else iter(())
        for chunk in chunks:
            chunk = chunk[: tokens - manifest.rows - held]
            pending.append(chunk.cpu())
            held += chunk.shape[0]
            while held >= shard_rows or (held and manifest.rows + held >= tokens):
                rows = torch.cat(pending)
                manifest = _add_shard(folder, manifest, rows[:shard_rows])
                rest = rows[shard_rows:]
                pending, held = [rest], rest.shape[0]
                bar.update(rows.shape[0] - held)
            if manifest.rows >= tokens:
                break
        if held:
            manifest = _add_shard(folder, manifest, torch.cat(pending))
            bar.update(held)
    manifest = CacheManifest(**{**vars(manifest), "complete": True})
    _write_manifest(folder, manifest)
    return manifest


def _add_shard(folder: Path, manifest: CacheManifest, rows: Tensor) -> CacheManifest:
    """Write one shard atomically, then list it in the manifest: a kill between the two leaves a stray file that the
    next run deletes and rewrites."""
    name = shard_name(len(manifest.shards))
    atomic_write(folder / name, lambda tmp: save_file({TENSOR: rows.contiguous()}, tmp))
    shard = Shard(name, int(rows.shape[0]), file_sha256(folder / name))
    manifest = CacheManifest(**{**vars(manifest), "shards": (*manifest.shards, shard)})
    _write_manifest(folder, manifest)
    return manifest


def open_cache(folder: str | Path) -> CacheManifest:
    """The manifest of a complete cache whose shards are all present (not hashed: `verify_cache` does that)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise InputError(f"{folder} holds no activation cache ({MANIFEST} missing): write one with saekit cache")
    if not manifest.complete:
        raise InputError(f"the activation cache in {folder} is incomplete ({manifest.rows:,} of "
                         f"{manifest.tokens_requested:,} tokens): run the same saekit cache command again to finish it")
    if manifest.rows == 0:
        raise InputError(f"the activation cache in {folder} holds no activations: write it again from more text")
    for shard in manifest.shards:
        path = folder / shard.file
        if not path.is_file():
            raise InputError(f"the activation cache in {folder} lacks {shard.file}: write the cache again")
    return manifest


def verify_cache(folder: str | Path) -> list[str]:
    """The shards whose bytes no longer match their SHA-256 (empty when the cache is intact)."""
    manifest = open_cache(folder)
    return [s.file for s in manifest.shards if file_sha256(Path(folder) / s.file) != s.sha256]


class CachedBatches:
    """Shuffled training batches [batch_size, width] from an activation cache, restartable at any batch.

    `total_tokens` rows are emitted (passes over the cache repeat, each in a new shard order); None: one pass.
    With world_size > 1 each batch is rank `rank`'s share of the global batch of `batch_size` rows. `hook` picks one
    site's columns of a cache that holds several (`site_columns` says where each is); None keeps whole rows."""

    def __init__(self, folder: str | Path, *, batch_size: int = 4096, total_tokens: int | None = None,
                 buffer_bytes: int = 256 * 2**20, seed: int = 0, dtype: torch.dtype | None = None,
                 device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1, hook: str | None = None,
                 progress: bool = False) -> None:
        if not 0 <= rank < world_size:
            raise InputError(f"rank {rank} is not one of the {world_size} ranks")
        if batch_size < world_size:
            raise InputError(f"a global batch of {batch_size} cannot be shared by {world_size} ranks: raise the "
                             "batch size")
        self.folder = Path(folder)
        self.manifest = open_cache(self.folder)
        self.batch_size, self.total_tokens, self.seed = batch_size, total_tokens, seed
        self.dtype = dtype or getattr(torch, self.manifest.dtype)
        self.device, self.rank, self.world_size, self.progress = torch.device(device), rank, world_size, progress
        self.buffer = ActivationBuffer(self.manifest.width, budget_bytes=buffer_bytes, batch_size=batch_size,
                                       dtype=self.dtype, device=self.device, seed=seed)
        self.site = self._pick_site(hook)

    def _pick_site(self, hook: str | None) -> tuple[str, str, int, int] | None:
        """The site `hook` names, for a cache of several sites (which needs one); None: the whole row."""
        sites = self.manifest.sites
        held = [site[0] for site in sites] or [self.manifest.provenance.hook]
        if hook is not None and hook not in held:
            raise InputError(f"the cache in {self.folder} holds no activations of {hook!r}: it holds "
                             f"{', '.join(map(str, held))}")
        return next((site for site in sites if site[0] == hook), None)

    def site_columns(self) -> list[tuple[str, str, slice]]:
        """(module path, side, columns of a row) of each site a row holds."""
        if self.site is not None:
            return [(self.site[0], self.site[1], slice(0, self.width))]
        if self.manifest.sites:
            return [(hook, side, slice(a, b)) for hook, side, a, b in self.manifest.sites]
        prov = self.manifest.provenance
        return [(prov.hook, prov.hook_side, slice(0, self.width))]

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.site[3] - self.site[2],) if self.site else self.manifest.widths

    @property
    def width(self) -> int:
        return sum(self.widths)

    @property
    def d_in(self) -> int:
        return self.width if self.site else self.manifest.d_in

    @property
    def d_out(self) -> int | None:
        return None if self.site else self.manifest.d_out

    def provenance(self) -> Provenance:
        prov = self.manifest.provenance
        return prov.replace(hook=self.site[0], hook_side=self.site[1]) if self.site else prov

    def shard_order(self, epoch: int) -> list[int]:
        """The order pass `epoch` reads the shards in."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.manifest.shards), generator=generator).tolist()

    def rows(self, skip: int = 0) -> Iterator[Tensor]:
        """Rows in reading order (shard by shard, passes repeating while `total_tokens` asks for more), from row
        `skip` on; the shards before it are not read."""
        epoch, per_pass = 0, self.manifest.rows
        repeat = self.total_tokens is not None and self.total_tokens > per_pass
        epoch, skip = divmod(skip, per_pass)
        while True:
            for index in self.shard_order(epoch):
                shard = self.manifest.shards[index]
                if skip >= shard.rows:
                    skip -= shard.rows
                    continue
                with safe_open(str(self.folder / shard.file), framework="pt") as file:
                    yield file.get_slice(TENSOR)[skip:]
                skip = 0
            epoch += 1
            if not repeat:
                return

    def __iter__(self) -> Iterator[Tensor]:
        return self.batches_from(0)

    def batches_from(self, first_batch: int) -> Iterator[Tensor]:
        """Batches from global batch number `first_batch` on (this rank's rows of each), as from the start."""
        emitted = first_batch * self.batch_size
        total = self.total_tokens
        if total is not None and emitted >= total:
            return
        with tqdm(total=total, initial=emitted, unit="tok", desc="cached activations",
                  disable=not self.progress) as bar:
            for batch in self.buffer.batches(self.rows(self.buffer.block_start(first_batch)), first_batch):
                if total is not None:
                    batch = batch[: total - emitted]
                emitted += batch.shape[0]
                bar.update(batch.shape[0])
                batch = batch[rank_rows(batch.shape[0], self.rank, self.world_size)]
                yield batch[:, self.site[2] : self.site[3]].contiguous() if self.site else batch
                if total is not None and emitted >= total:
                    return
