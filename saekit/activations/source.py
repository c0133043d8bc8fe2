"""Training batches of model activations: tokens → model → hook → filter → shuffle buffer → batches.

`ActivationSource` is the iterable `saekit.train` consumes. It reads what the dictionary needs side by side, one
row per token: the hook's activations (an SAE); the hook's, then the target hook's (a transcoder: [x, y]); or
several models' activations at the hook on the same tokens (a crosscoder: [x_A, x_B, ...]). A sweep over sites reads
the hook and `more_sites` in one forward, each site's columns after the one before (`site_columns`).

Positions holding the tokenizer's special tokens (BOS/EOS/PAD) and padded positions are dropped by default: their
activations are often far larger than ordinary tokens' and would pull features towards them.

Length: with `total_tokens` set, exactly that many activation vectors are emitted (the text is
cycled as needed when `repeat` is on). Without it, `repeat=True` streams forever (the trainer stops
at its own token budget) and `repeat=False` makes one pass over the text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations import nnsight_api as api
from saekit.activations.buffer import ActivationBuffer, rank_rows
from saekit.activations.nnsight_api import SIDES, check_hook, model_name
from saekit.activations.reading import (
    DEFAULT_CONTEXT_LEN,
    ReadSettings,
    keep_positions,
    open_models_at,
    read_models,
)
from saekit.activations.windows import TokenWindows, token_source
from saekit.errors import InputError
from saekit.saes.dictionary import Dictionary
from saekit.saes.provenance import Provenance


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """A torch dtype from its name ("float32", "bfloat16", ...) or itself."""
    if isinstance(name, torch.dtype):
        return name
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InputError(f"unknown floating dtype {name!r}; use e.g. 'float32', 'bfloat16' or 'float16'")
    return dtype


@dataclass(frozen=True)
class ActivationConfig:
    """Where activations are read and how they are batched."""

    hook: str  # module path read, e.g. "transformer.h.0.mlp.act"
    hook_side: str = "output"  # "output" of the module (default) or its first "input"
    target_hook: str | None = None  # a transcoder's target: the module whose activations it reconstructs
    target_side: str = "output"  # "output" of the target module or its first "input"
    more_sites: tuple[tuple[str, str], ...] = ()  # further (module path, side) pairs read in the same forward
    context_len: int = DEFAULT_CONTEXT_LEN  # tokens per context window
    batch_size: int = 4096  # activation vectors per emitted training batch
    model_batch_size: int = 32  # context windows per model forward
    buffer_bytes: int = 256 * 2**20  # memory budget of the shuffle buffer
    dtype: str = "float32"  # dtype of the emitted activations; must match the SAE's
    device: str = "cpu"  # where the model runs and the batches live
    exclude_special_tokens: bool = True  # drop BOS/EOS/PAD positions (padding is always dropped)
    total_tokens: int | None = None  # emit exactly this many activations; None: see `repeat`
    repeat: bool = True  # cycle over the text when it runs out; False: stop after one pass
    seed: int = 0  # seed of the buffer's shuffle

    def __post_init__(self) -> None:
        if not self.hook:
            raise InputError("hook is empty; pass a module path such as 'transformer.h.0.mlp.act'")
        if self.hook_side not in SIDES or self.target_side not in SIDES:
            raise InputError(f"hook_side and target_side must be one of {SIDES}, got {self.hook_side!r}, "
                             f"{self.target_side!r}")
        if self.target_hook is not None and (self.target_hook, self.target_side) == (self.hook, self.hook_side):
            raise InputError(f"target_hook {self.target_hook!r} is the hook itself: that is an SAE, so leave "
                             "target_hook unset (a transcoder reconstructs another hook)")
        sites = [(self.hook, self.hook_side), *self.more_sites]
        if any(side not in SIDES for _, side in self.more_sites) or len(set(sites)) < len(sites):
            raise InputError(f"more_sites must be distinct (module path, side) pairs besides the hook, sides one of "
                             f"{SIDES}; got {self.more_sites}")
        if self.more_sites and self.target_hook is not None:
            raise InputError("more_sites reads several sites for a sweep of SAEs; a transcoder's target_hook is one "
                             "site more: read a transcoder's pair alone")
        for name in ("context_len", "batch_size", "model_batch_size", "buffer_bytes"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.total_tokens is not None and self.total_tokens < 1:
            raise InputError(f"total_tokens must be positive or None (unbounded), got {self.total_tokens}")
        torch_dtype(self.dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype)


class ActivationSource:
    """Iterable of shuffled activation batches [batch_size, width] from a model (or several) and a text.

    `model`: an nnsight model, hub name, folder, or torch module; a list of them for a crosscoder (they must share
    the tokenizer: every model reads the same tokens). `text`: a folder of .txt files, a list of strings, a
    DocumentSource, or pre-tokenized ids (see `saekit.activations.windows`).

    Data-parallel training gives each of `world_size` ranks its own source: rank r reads model batches r, r + N,
    r + 2N, ... of the text and emits its share of each global batch of `config.batch_size` rows (and of
    `config.total_tokens`), so the ranks' batches together are one global batch.
    """

    def __init__(
        self, model: Any, text: Any, config: ActivationConfig, *, tokenizer: Any = None, progress: bool = True,
        rank: int = 0, world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size or config.batch_size < world_size:
            raise InputError(f"rank {rank} of {world_size} ranks cannot share batches of {config.batch_size} rows: "
                             "pass 0 <= rank < world_size <= batch_size")
        self.config, self.rank, self.world_size = config, rank, world_size
        models = list(model) if isinstance(model, (list, tuple)) else [model]
        if not models:
            raise InputError("no model given: pass one model, or a list of models for a crosscoder")
        if len(models) > 1 and (config.target_hook is not None or config.more_sites):
            raise InputError("a transcoder, or a sweep over sites, reads one model: pass one model with target_hook "
                             "or more_sites, or several models without them (a crosscoder)")
        settings = ReadSettings(config.hook, config.hook_side, config.context_len, config.exclude_special_tokens)
        self.models, self.tokenizer, special = open_models_at(models, settings, tokenizer, device=config.device)
        self.model = self.models[0]
        for hook in [config.target_hook, *(hook for hook, _ in config.more_sites)]:
            if hook is not None:
                check_hook(self.model, hook)
        self.tokens = token_source(text, self.tokenizer, config.context_len, config.model_batch_size)
        self.special_ids = torch.tensor(special, dtype=torch.long)
        self.progress = progress

    @cached_property
    def widths(self) -> tuple[int, ...]:
        """Width of each read, in the order a row holds them (one short forward to find out)."""
        first = next(iter(self.tokens))
        probe = TokenWindows(first.input_ids[:1], first.attention_mask[:1])
        return tuple(t.shape[-1] for t in self._reads(probe))

    @property
    def width(self) -> int:
        """Columns of a batch: every read side by side."""
        return sum(self.widths)

    @property
    def d_in(self) -> int:
        """Width of the dictionary's input: the hook's (a transcoder's, or a sweep's first site), or all the models'
        together."""
        return self.widths[0] if self.config.target_hook is not None or self.config.more_sites else self.width

    def site_columns(self) -> list[tuple[str, str, slice]]:
        """(module path, side, columns of a row) of each site read: a sweep trains each SAE on its site's columns."""
        cfg = self.config
        if cfg.target_hook is not None or len(self.models) > 1:  # one dictionary reads the whole row
            return [(cfg.hook, cfg.hook_side, slice(0, self.width))]
        sites = [(cfg.hook, cfg.hook_side), *cfg.more_sites]
        starts = [0, *torch.tensor(self.widths).cumsum(0).tolist()]
        return [(hook, side, slice(a, b)) for (hook, side), a, b in zip(sites, starts, starts[1:])]

    @property
    def d_out(self) -> int | None:
        """Width of a transcoder's target; None when the dictionary reconstructs its input."""
        return self.widths[1] if self.config.target_hook is not None else None

    def _reads(self, windows: TokenWindows) -> list[Tensor]:
        """The activations [batch, seq, d] of one batch of windows, each read's."""
        cfg = self.config
        ids, mask = windows.input_ids, windows.attention_mask
        if cfg.target_hook is not None or cfg.more_sites:
            second = [(cfg.target_hook, cfg.target_side)] if cfg.target_hook is not None else list(cfg.more_sites)
            return api.read_sites(self.model, ids, mask, [(cfg.hook, cfg.hook_side), *second])[0]
        return [api.get_activations(model, ids, mask, cfg.hook, cfg.hook_side) for model in self.models]

    def _acts(self, windows: TokenWindows) -> Tensor:
        """Activations [batch, seq, width] of one batch of windows: the reads side by side."""
        cfg = self.config
        if cfg.target_hook is None and not cfg.more_sites:
            return read_models(self.models, windows.input_ids, windows.attention_mask, cfg.hook, cfg.hook_side)
        reads = self._reads(windows)
        return torch.cat([r.to(reads[0].dtype) for r in reads], dim=-1)

    def keep_mask(self, windows: TokenWindows) -> Tensor:
        """[batch, seq] bool: real tokens that are not special tokens."""
        return keep_positions(windows, self.special_ids)

    def activations(self, skip: int = 0) -> Iterator[Tensor]:
        """Unshuffled kept activations, one chunk [n, d_in] per model batch, cycling if `repeat`, from kept
        position `skip` on: windows wholly before it are counted from their tokens alone, never run."""
        while True:
            produced = 0
            for i, windows in enumerate(self.tokens):
                if i % self.world_size != self.rank:
                    continue
                keep = self.keep_mask(windows)
                n_kept = int(keep.sum())
                produced += n_kept
                if skip >= n_kept:
                    skip -= n_kept
                    continue
                acts = self._acts(windows)  # [batch, seq, d_in]
                kept = acts[keep.to(acts.device)][skip:]
                skip = 0
                yield kept.to(device=self.config.device, dtype=self.config.torch_dtype)
            if not self.config.repeat:
                return
            if produced == 0:
                raise InputError("the text yields no activations (all tokens special or padded); pass more text")

    def working_bytes(self) -> int:
        """Memory the stream needs besides the buffer's store: one model batch's hook output, counted three
        times (the forward's own intermediate of that size, the output, the kept rows copied out of it)."""
        cfg = self.config
        itemsize = max(torch.empty((), dtype=cfg.torch_dtype).element_size(), 4)  # models mostly run in fp32
        return 3 * cfg.model_batch_size * cfg.context_len * self.width * itemsize

    def buffer(self) -> ActivationBuffer:
        """The shuffle buffer, sized so that it and the forward's outputs fit `buffer_bytes` together."""
        cfg = self.config
        working = self.working_bytes()
        minimum = working + 2 * cfg.batch_size * self.width * torch.empty((), dtype=cfg.torch_dtype).element_size()
        if cfg.buffer_bytes < minimum:
            raise InputError(
                f"buffer_bytes={cfg.buffer_bytes} cannot hold 2 batches of {cfg.batch_size} activations of width "
                f"{self.width} besides one model batch's outputs ({working} bytes): raise the budget to at least "
                f"{minimum} bytes (--buffer-mb {-(-minimum // 2**20)}), or lower the batch size or model_batch_size"
            )
        batch = self._share(cfg.batch_size)
        budget = cfg.buffer_bytes - working
        if cfg.total_tokens is not None:  # a short run needs no block larger than all it will emit
            rows = max(2, -(-self._share(cfg.total_tokens) // batch)) * batch
            budget = min(budget, rows * self.width * torch.empty((), dtype=cfg.torch_dtype).element_size())
        return ActivationBuffer(self.width, budget_bytes=budget, batch_size=batch, dtype=cfg.torch_dtype,
                                device=cfg.device, seed=cfg.seed)

    def _share(self, rows: int) -> int:
        """This rank's rows of `rows` global ones."""
        part = rank_rows(rows, self.rank, self.world_size)
        return part.stop - part.start

    def __iter__(self) -> Iterator[Tensor]:
        return self.batches_from(0)

    def batches_from(self, first_batch: int) -> Iterator[Tensor]:
        """The batches from number `first_batch` on, as iterating from the start would give them; only the
        buffer block holding that batch is recomputed (a resumed training run starts here)."""
        cfg = self.config
        buffer = self.buffer()
        emitted = first_batch * buffer.batch_size
        total = None if cfg.total_tokens is None else self._share(cfg.total_tokens)
        with tqdm(total=total, initial=min(emitted, total or emitted), unit="tok", desc="activations",
                  disable=not self.progress) as bar:
            if total is not None and emitted >= total:
                return
            chunks = self.activations(skip=buffer.block_start(first_batch))
            for batch in buffer.batches(chunks, first_batch):
                if total is not None:
                    batch = batch[: total - emitted]
                emitted += batch.shape[0]
                bar.update(batch.shape[0])
                yield batch
                if total is not None and emitted >= total:
                    return

    def provenance(self) -> Provenance:
        """What to store as `sae.provenance` so the SAE can be evaluated and explored later."""
        cfg = self.config
        return Provenance(
            model=model_name(self.model),
            models=tuple(model_name(m) for m in self.models) if len(self.models) > 1 else (),
            hook=cfg.hook, hook_side=cfg.hook_side, target_hook=cfg.target_hook, target_side=cfg.target_side,
            context_len=cfg.context_len, text=self.tokens.describe(), exclude_special_tokens=cfg.exclude_special_tokens,
        )


def check_dtype(sae: Dictionary, source: ActivationSource | ActivationConfig | torch.dtype | str) -> None:
    """Raise a clear TypeError when the activations' dtype differs from the SAE's."""
    if isinstance(source, ActivationSource):
        source = source.config
    dtype = source.torch_dtype if isinstance(source, ActivationConfig) else torch_dtype(source)
    if sae.dtype != dtype:
        raise TypeError(
            f"the activations are {dtype} but the SAE is {sae.dtype}; set ActivationConfig(dtype="
            f"{str(sae.dtype).removeprefix('torch.')!r}) or convert the SAE with sae.to({dtype})"
        )
