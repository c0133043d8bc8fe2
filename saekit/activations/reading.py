"""Reading a model where a dictionary reads it: the one set-up that training, evaluation, the analyses and
steering share. The model is opened and the hook checked, the tokenizer and the special tokens to skip found,
and the token windows cut from the text; then activations stream batch by batch with each kept token's flat
index (window · context_len + position), so two models read the same tokens.

What is not given comes from the dictionary's provenance (where it was trained), then from the defaults.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations import nnsight_api as api
from saekit.activations.windows import TokenWindows, special_token_ids, token_source
from saekit.errors import InputError
from saekit.saes.dictionary import Dictionary
from saekit.saes.provenance import Provenance

DEFAULT_CONTEXT_LEN = 128
DEFAULT_READ_TOKENS = 1_000_000
"""Tokens a reading cuts from a text by default."""


class ReadSettings(NamedTuple):
    """Where and how a dictionary reads its model."""

    hook: str  # module path, e.g. "transformer.h.0.mlp.act"
    side: str  # "output" of the module or its first "input"
    context_len: int  # tokens per window
    exclude_special_tokens: bool  # skip BOS/EOS/PAD positions (padding is always skipped)


def provenance_of(dictionary: Dictionary | None) -> Provenance:
    """The dictionary's provenance; an empty one for None or a dictionary built by hand."""
    return getattr(dictionary, "provenance", None) or Provenance()


def read_settings(
    dictionary: Dictionary | None = None,
    hook: str | None = None,
    side: str | None = None,
    context_len: int | None = None,
    exclude_special_tokens: bool | None = None,
) -> ReadSettings:
    """Explicit arguments, else the dictionary's provenance, else the defaults; the hook has no default."""
    prov = provenance_of(dictionary)
    hook = hook or prov.hook
    if not hook:
        raise InputError("no hook given and the dictionary's provenance names none; pass hook='module.path'")
    side = side or prov.hook_side
    context_len = context_len or prov.context_len or DEFAULT_CONTEXT_LEN
    if exclude_special_tokens is None:
        exclude_special_tokens = prov.exclude_special_tokens
    return ReadSettings(hook, side, int(context_len), exclude_special_tokens)


class Reading(NamedTuple):
    """A model opened at a hook with the windows to read there: what every streaming pass needs."""

    model: Any  # a loaded nnsight model
    windows: TokenWindows
    hook: str
    side: str
    special_ids: tuple[int, ...]  # token ids whose positions are skipped
    tokenizer: Any
    others: tuple[Any, ...] = ()  # a crosscoder's further models, read at the same hook on the same windows

    @property
    def models(self) -> tuple[Any, ...]:
        """Every model read, in the order a crosscoder's input holds their activations."""
        return (self.model, *self.others)


def keep_positions(windows: TokenWindows, special_ids: Tensor) -> Tensor:
    """[batch, seq] bool: positions holding real tokens whose ids are not in `special_ids`."""
    keep = windows.attention_mask.bool()
    if special_ids.numel():
        keep &= ~torch.isin(windows.input_ids, special_ids)
    return keep


def check_same_tokenizer(first: Any, other: Any, first_name: Any, other_name: Any) -> None:
    """Raise InputError unless two models' tokenizers cut text into the same ids (a crosscoder reads one token
    stream through every model)."""
    if first.get_vocab() != other.get_vocab():
        raise InputError(f"the models {first_name} and {other_name} have different tokenizers: a crosscoder reads "
                         "the same tokens through every model, so pass models that share one")


def open_model_at(model: Any, settings: ReadSettings, tokenizer: Any = None,
                  device: str | torch.device = "cpu") -> tuple[Any, Any, tuple[int, ...]]:
    """(the model loaded through nnsight with `settings.hook` checked, its tokenizer, the special token ids to skip)."""
    model = api.load_model(model, device=device)
    api.check_hook(model, settings.hook)
    tokenizer = tokenizer if tokenizer is not None else api.get_tokenizer(model)
    special = tuple(special_token_ids(tokenizer)) if settings.exclude_special_tokens else ()
    return model, tokenizer, special


def open_models_at(models: Sequence[Any], settings: ReadSettings, tokenizer: Any = None,
                   device: str | torch.device = "cpu") -> tuple[list[Any], Any, tuple[int, ...]]:
    """`open_model_at` for each of a crosscoder's models (one model: a list of one), the tokenizer and special tokens
    the first one's; the others must cut text the same way."""
    first, tokenizer, special = open_model_at(models[0], settings, tokenizer, device=device)
    others = [open_model_at(m, settings, device=device)[0] for m in models[1:]]
    for name, other in zip(models[1:], others):
        check_same_tokenizer(tokenizer, api.get_tokenizer(other), models[0], name)
    return [first, *others], tokenizer, special


def text_windows(text: Any, dictionary: Dictionary, tokenizer: Any, context_len: int,
                 max_tokens: int | None) -> TokenWindows:
    """`text` (any form `token_source` takes; None: the text the dictionary's provenance names) as the first windows
    holding `max_tokens` real tokens (None: all of them); TokenWindows that fit are used as they are."""
    if text is None:
        text = provenance_of(dictionary).text
        if text is None:
            raise InputError("no text given and the dictionary's provenance names none; pass a text folder or "
                             "token ids")
    if isinstance(text, TokenWindows) and (max_tokens is None or text.n_tokens <= max_tokens):
        return text
    return token_source(text, tokenizer, context_len, batch_size=64).take(max_tokens)


def open_reading(
    model: Any,
    text: Any,
    dictionary: Dictionary | None = None,
    *,
    hook: str | None = None,
    side: str | None = None,
    context_len: int | None = None,
    max_tokens: int | None = DEFAULT_READ_TOKENS,
    exclude_special_tokens: bool | None = None,
    tokenizer: Any = None,
) -> Reading:
    """Open `model` where `dictionary` reads it and cut the windows of `text` (see `read_settings`,
    `text_windows`); a crosscoder's models as a list, in its training order (they must share the tokenizer)."""
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    n_models = getattr(dictionary, "n_models", 1)
    if len(models) != n_models:
        raise InputError(f"the dictionary reads {n_models} model(s) and {len(models)} were given: pass "
                         f"{'a list of its models, in training order' if n_models > 1 else 'one model'}")
    settings = read_settings(dictionary, hook, side, context_len, exclude_special_tokens)
    opened, tokenizer, special = open_models_at(models, settings, tokenizer)
    windows = text_windows(text, dictionary, tokenizer, settings.context_len, max_tokens)
    return Reading(opened[0], windows, settings.hook, settings.side, special, tokenizer, tuple(opened[1:]))


def read_models(models: Sequence[Any], input_ids: Tensor, attention_mask: Tensor, hook: str,
                side: str = "output") -> Tensor:
    """Activations [batch, seq, Σ d] at `hook` of every model on the same tokens, side by side (one model: its own)."""
    acts = [api.get_activations(model, input_ids, attention_mask, hook, side) for model in models]
    return acts[0] if len(acts) == 1 else torch.cat([a.to(acts[0].dtype) for a in acts], dim=-1)


class ActivationChunk(NamedTuple):
    """The kept activations of one model batch."""

    token_index: Tensor  # [tokens] int64: window · context_len + position of each kept token
    acts: Tensor  # [tokens, d_in]


def reading_activations(reading: Reading, batch_size: int = 32, progress: bool = True,
                        desc: str = "activations") -> Iterator[ActivationChunk]:
    """Activations at the reading's hook over its windows, `batch_size` windows per forward, padding and special
    tokens dropped; the same windows give the same token indices for any model."""
    windows = reading.windows
    special = torch.tensor(list(reading.special_ids), dtype=torch.long)
    n, ctx = windows.input_ids.shape
    flat = torch.arange(n * ctx).view(n, ctx)
    kept = int(keep_positions(windows, special).sum())
    with tqdm(total=kept, unit="tok", desc=desc, disable=not progress) as bar:
        for start in range(0, n, batch_size):
            batch = TokenWindows(*(t[start : start + batch_size] for t in windows))
            keep = keep_positions(batch, special)
            acts = read_models(reading.models, batch.input_ids, batch.attention_mask, reading.hook, reading.side)
            bar.update(int(keep.sum()))
            yield ActivationChunk(flat[start : start + batch_size][keep], acts[keep.to(acts.device)].float())
