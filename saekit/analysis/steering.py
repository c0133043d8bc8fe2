"""Steering: pin, add to, clamp or ablate SAE features while the model runs, and see what changes.

An edit changes only the chosen features and keeps the SAE's error term, so the model is untouched
where the edit changes nothing (adding 0, or pinning a feature to the value it already has):

    x' = x + Σ_i (f'_i − f_i) · W_dec[i]          x: hook activations, f = sae.encode(x)

The edit applies at every position, in every forward of a generation (the prompt's and each new
token's). Modes: "pin" f'_i = value; "add" f'_i = f_i + value; "clamp" f'_i = min(f_i, value) (a
ceiling); "ablate" f'_i = 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations import nnsight_api as api
from saekit.activations.reading import open_model_at, read_settings
from saekit.analysis.encoding import encode
from saekit.analysis.logit_effects import token_strings
from saekit.errors import InputError
from saekit.saes.dictionary import Dictionary

MODES = ("pin", "add", "clamp", "ablate")


@dataclass(frozen=True)
class FeatureEdit:
    """One feature's intervention."""

    feature: int  # index of the SAE feature
    value: float = 0.0  # the pinned value, the amount added, or the ceiling (unused by "ablate")
    mode: str = "pin"  # "pin", "add", "clamp" or "ablate" (see the module doc)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.feature < 0:
            raise ValueError(f"feature must be a non-negative index, got {self.feature}")

    def target(self, f: Tensor) -> Tensor:
        """The feature's new activation f' from its current one f (any shape)."""
        if self.mode == "pin":
            return torch.full_like(f, self.value)
        if self.mode == "add":
            return f + self.value
        if self.mode == "clamp":
            return f.clamp(max=self.value)
        return torch.zeros_like(f)


def as_edits(edits: FeatureEdit | Sequence[FeatureEdit]) -> tuple[FeatureEdit, ...]:
    return (edits,) if isinstance(edits, FeatureEdit) else tuple(edits)


@torch.no_grad()
def edit_activations(sae: Dictionary, acts: Tensor, edits: FeatureEdit | Sequence[FeatureEdit]) -> Tensor:
    """acts [..., d_in] with each edited feature moved to its target: x + Σ (f'_i − f_i) W_dec[i]."""
    edits = as_edits(edits)
    for edit in edits:
        if edit.feature >= sae.d_sae:
            raise IndexError(f"feature {edit.feature} is out of range; the SAE has {sae.d_sae} features")
    flat = acts.reshape(-1, acts.shape[-1])
    f = encode(sae, flat)  # [tokens, d_sae]
    delta = torch.zeros_like(f)
    for edit in edits:
        delta[:, edit.feature] = edit.target(f[:, edit.feature]) - f[:, edit.feature]
    if not bool(delta.any()):
        return acts
    shift = delta @ sae.W_dec  # [tokens, d_in]
    return (flat + shift.to(flat.dtype)).reshape(acts.shape)


def edit_function(sae: Dictionary, edits: FeatureEdit | Sequence[FeatureEdit]) -> Callable[[Tensor], Tensor]:
    """The replacement for the hook's activations that applies `edits`."""
    edits = as_edits(edits)
    return lambda acts: edit_activations(sae, acts, edits).to(device=acts.device, dtype=acts.dtype)


class Prompt(NamedTuple):
    input_ids: Tensor  # [1, seq]
    attention_mask: Tensor  # [1, seq]


def encode_prompt(prompt: str | Sequence[int] | Tensor, tokenizer: Any) -> Prompt:
    """A prompt as one row of token ids (text needs the tokenizer)."""
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError("this model has no tokenizer; pass the prompt as token ids")
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]], dtype=torch.long)
    else:
        ids = torch.as_tensor(prompt, dtype=torch.long).reshape(1, -1)
    if ids.numel() == 0:
        raise ValueError("the prompt is empty; pass some text or token ids")
    return Prompt(ids, torch.ones_like(ids))


class SteeringResult(NamedTuple):
    """A generation with and without the edits, from the same prompt."""

    prompt: str
    clean: str  # the clean continuation (new tokens only)
    steered: str  # the continuation with the edits
    clean_ids: Tensor  # [prompt + new] token ids
    steered_ids: Tensor  # [prompt + new]


def steering_problem(model: Any, sae: Dictionary) -> str | None:
    """Why `sae` cannot steer `model` (None: it can): steering edits one hook of one model and reads the change off
    next-token logits. `model`: an opened model, or None to check the dictionary alone."""
    if getattr(sae, "is_transcoder", False) or getattr(sae, "n_models", 1) > 1:
        return ("steering pins a feature where its dictionary reads and writes one hook of one model; a "
                "transcoder (reads one hook, writes another) or a crosscoder (several models) cannot be "
                "steered yet: steer an SAE of the same site")
    if model is not None and not api.has_lm_head(model):
        name = type(api.underlying_module(model)).__name__
        return (f"steering generates text and reads next-token probabilities, and {name} has no language-model "
                "head (an encoder such as BERT): steer a causal language model")
    return None


def _setup(model: Any, sae: Dictionary, hook: str | None, side: str | None,
           tokenizer: Any) -> tuple[Any, str, str, Any]:
    if problem := steering_problem(None, sae):
        raise InputError(problem)
    settings = read_settings(sae, hook, side)
    model, tokenizer, _ = open_model_at(model, settings, tokenizer)
    if problem := steering_problem(model, sae):
        raise InputError(problem)
    return model, settings.hook, settings.side, tokenizer


def steer_generate(
    model: Any,
    sae: Dictionary,
    prompt: str | Sequence[int] | Tensor,
    edits: FeatureEdit | Sequence[FeatureEdit],
    *,
    max_new_tokens: int = 20,
    hook: str | None = None,
    side: str | None = None,
    tokenizer: Any = None,
    **generate_kwargs: Any,
) -> SteeringResult:
    """Generate from `prompt` with and without `edits` (greedy unless `generate_kwargs` say otherwise)."""
    model, hook, side, tokenizer = _setup(model, sae, hook, side, tokenizer)
    ids, mask = encode_prompt(prompt, tokenizer)
    common = {"max_new_tokens": max_new_tokens, **generate_kwargs}
    clean = api.generate(model, ids, mask, **common)[0].cpu()
    steered = api.generate(model, ids, mask, hook=hook, replace=edit_function(sae, edits), side=side, **common)[0].cpu()
    n = ids.shape[1]
    text = _decoder(tokenizer)
    return SteeringResult(text(ids[0]), text(clean[n:]), text(steered[n:]), clean, steered)


def _decoder(tokenizer: Any) -> Callable[[Tensor], str]:
    if tokenizer is None:
        return lambda ids: " ".join(map(str, ids.tolist()))
    return lambda ids: tokenizer.decode(ids.tolist())


def next_token_shift(
    model: Any,
    sae: Dictionary,
    prompt: str | Sequence[int] | Tensor,
    edits: FeatureEdit | Sequence[FeatureEdit],
    *,
    k: int = 10,
    hook: str | None = None,
    side: str | None = None,
    tokenizer: Any = None,
) -> pd.DataFrame:
    """How the edits move the next-token distribution after `prompt`: the k most raised and k most
    lowered tokens, with columns token_id, token, p_before, p_after, delta (largest rise first)."""
    model, hook, side, tokenizer = _setup(model, sae, hook, side, tokenizer)
    ids, mask = encode_prompt(prompt, tokenizer)
    before = api.clean_logits(model, ids, mask)[0, -1].float().softmax(-1).cpu()
    after = api.spliced_logits(model, ids, mask, hook, edit_function(sae, edits), side)[0, -1]
    after = after.float().softmax(-1).cpu()
    delta = after - before
    k = min(k, delta.numel())
    chosen = torch.cat([delta.topk(k).indices, delta.topk(k, largest=False).indices]).unique()
    vocab = token_strings(tokenizer, delta.numel())
    table = pd.DataFrame({
        "token_id": chosen.numpy(), "token": [vocab[i] for i in chosen.tolist()],
        "p_before": before[chosen].numpy(), "p_after": after[chosen].numpy(), "delta": delta[chosen].numpy(),
    })
    return table.sort_values("delta", ascending=False, ignore_index=True)


def steering_sweep(
    model: Any,
    sae: Dictionary,
    prompt: str | Sequence[int] | Tensor,
    feature: int,
    values: Sequence[float],
    *,
    mode: str = "pin",
    max_new_tokens: int = 20,
    hook: str | None = None,
    side: str | None = None,
    tokenizer: Any = None,
    progress: bool = True,
    **generate_kwargs: Any,
) -> pd.DataFrame:
    """The continuation of `prompt` for each strength in `values`: value, continuation."""
    model, hook, side, tokenizer = _setup(model, sae, hook, side, tokenizer)
    ids, mask = encode_prompt(prompt, tokenizer)
    text = _decoder(tokenizer)
    rows = []
    for value in tqdm(values, desc="steering sweep", disable=not progress):
        replace = edit_function(sae, FeatureEdit(feature, float(value), mode))
        out = api.generate(model, ids, mask, max_new_tokens=max_new_tokens, hook=hook, replace=replace, side=side,
                           **generate_kwargs)[0].cpu()
        rows.append({"value": float(value), "continuation": text(out[ids.shape[1]:])})
    return pd.DataFrame(rows)
