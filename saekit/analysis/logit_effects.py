"""Logit effects: what a feature's decoder direction does to the next-token logits, read off the weights.

In a one-layer model the MLP output is added straight to the residual stream that the unembedding
reads, so a feature's direct effect on the logits is (the paper's approximation)

    effect_i = W_U · N(W_out^T d_i)            d_i = W_dec[i] [d_mlp], W_out [d_mlp, d_model], W_U [vocab, d_model]

(a transcoder writes the MLP's output, d_i [d_model], directly, and a dictionary at a residual-width site, an
attention or MLP output or a block's input or output, lives in the residual stream already: W_out is then the
identity and the effect is the direction's direct path to the logits)

shifted so that each feature's median over the vocabulary is 0. `N` is the final layer norm's
linear part: with ``final_norm=True`` (the default) the direction is centred over d_model (LayerNorm) and
scaled by the norm's weight γ (Gemma's RMSNorm: 1 + weight), exactly as the norm treats any residual vector; its
1/σ is a positive per-token scale that cannot change which tokens rank highest, and its bias does not depend on the
feature, so both are left out. ``final_norm=False`` ignores the layer norm, as the paper's figures do.
For raw neurons d_i is the i-th unit vector, i.e. the neuron's row of W_out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import pandas as pd
import torch
from torch import Tensor

from saekit.activations import nnsight_api as api
from saekit.activations.sites import ATTENTION_OUTPUT_PROJECTIONS, MLP_OUTPUT_PROJECTIONS, block_list
from saekit.errors import InputError

# Names of an MLP's output projection in common Hugging Face architectures.
_OUT_PROJECTIONS = ("c_proj", "down_proj", "fc_out", "fc2", "dense_4h_to_h", "wo")
# Paths of the final norm before the unembedding in common architectures.
_FINAL_NORMS = ("transformer.ln_f", "model.norm", "gpt_neox.final_layer_norm", "model.final_layernorm")
FEATURE_CHUNK = 256  # features per chunk when computing [features, vocab] effects (bounds memory)


class OutputWeights(NamedTuple):
    """The weights from the MLP's neurons to the logits."""

    W_out: Tensor  # [d_mlp, d_model]: neuron activations → residual stream
    W_U: Tensor  # [vocab, d_model]: residual stream → logits
    norm_weight: Tensor | None  # [d_model] γ of a final LayerNorm, or None to skip the norm
    norm_centers: bool  # whether the final norm subtracts the mean (LayerNorm yes, RMSNorm no)


def output_weights(model: Any, hook: str, *, side: str = "output", final_norm: bool = True) -> OutputWeights:
    """The weight from the dictionary's space at `hook` (`side`) to the residual stream (see `_to_residual`), the
    unembedding (`lm_head`) and the final norm's γ, from an nnsight model or a torch module."""
    module = api.underlying_module(model)
    head = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    if head is None:
        raise ValueError("the model has no output embedding (LM head), so it has no logits to read effects on")
    d_model = head.weight.shape[1]
    W_out = _to_residual(model, module, hook, side, d_model)
    norm = _final_norm(module) if final_norm else None
    weight = None if norm is None else _norm_gain(norm)
    centers = isinstance(norm, torch.nn.LayerNorm)
    return OutputWeights(W_out.detach().float(), head.weight.detach().float(), weight, centers)


def _to_residual(model: Any, module: torch.nn.Module, hook: str, side: str, d_model: int) -> Tensor:
    """[d, d_model]: what a direction at `hook` adds to the residual stream.

    - the input of a sublayer's output projection (the MLP's neurons, `mlp_act`): that projection's weight;
    - its output (`attn_out`, `mlp_out`), a whole MLP (a transcoder's target) or a block's input or output
      (`resid_pre`, `resid_post`): the identity, as these live in the residual stream's space already;
    - a hook inside an MLP (GPT-2's `mlp.act`): the MLP's output projection.
    """
    own = module.get_submodule(hook)
    if hook.endswith(tuple("." + p for p in MLP_OUTPUT_PROJECTIONS + ATTENTION_OUTPUT_PROJECTIONS)):
        return _as_in_out(own) if side == "input" else _eye(d_model, own.weight)
    for name in _OUT_PROJECTIONS:
        proj = getattr(own, name, None)
        if proj is not None and hasattr(proj, "weight"):
            return _eye(d_model, proj.weight)
    parent_path = hook.rsplit(".", 1)[0] if "." in hook else ""
    parent = module.get_submodule(parent_path)
    for name in _OUT_PROJECTIONS:
        proj = getattr(parent, name, None)
        if proj is not None and hasattr(proj, "weight"):
            return _as_in_out(proj)
    if parent_path and parent_path == _block_list_path(model):
        return _eye(d_model, next(own.parameters()))
    raise ValueError(
        f"found no MLP output projection ({', '.join(_OUT_PROJECTIONS)}) next to hook {hook!r}; "
        "pass the matrices to logit_effect_matrix() explicitly"
    )


def _as_in_out(proj: torch.nn.Module) -> Tensor:
    """A projection's weight as [in, out] (nn.Linear stores [out, in], Hugging Face's Conv1D [in, out])."""
    return proj.weight.T if isinstance(proj, torch.nn.Linear) else proj.weight


def _eye(d: int, like: Tensor) -> Tensor:
    return torch.eye(d, dtype=like.dtype, device=like.device)


def _block_list_path(model: Any) -> str | None:
    try:
        return block_list(model)[0]
    except InputError:
        return None


def _final_norm(module: torch.nn.Module) -> torch.nn.Module | None:
    for path in _FINAL_NORMS:
        try:
            norm = module.get_submodule(path)
        except AttributeError:
            continue
        return norm if getattr(norm, "weight", None) is not None else None
    return None


def _norm_gain(norm: torch.nn.Module) -> Tensor:
    """The final norm's per-dimension scale γ: its weight, or 1 + weight for Gemma's RMSNorm (whose weight starts
    at 0 and scales by 1 + w)."""
    weight = norm.weight.detach().float()
    return 1.0 + weight if type(norm).__name__.startswith("Gemma") else weight


def logit_effect_matrix(directions: Tensor, weights: OutputWeights) -> Tensor:
    """Median-centred logit effects [n, vocab] of neuron-space directions [n, d_mlp] (decoder rows)."""
    resid = directions.float() @ weights.W_out  # [n, d_model]
    if weights.norm_weight is not None:
        if weights.norm_centers:
            resid = resid - resid.mean(-1, keepdim=True)
        resid = resid * weights.norm_weight
    effects = resid @ weights.W_U.T  # [n, vocab]
    return effects - median(effects)


def median(values: Tensor) -> Tensor:
    """Median over the last dim, as numpy's (mean of the two middle values for an even count): [n, v] → [n, 1]."""
    v = values.shape[-1]
    lower = values.kthvalue((v + 1) // 2, dim=-1, keepdim=True).values
    upper = values.kthvalue(v // 2 + 1, dim=-1, keepdim=True).values
    return (lower + upper) / 2


def token_strings(tokenizer: Any, vocab_size: int) -> list[str]:
    """The text of every token id (raw, unescaped); ids the tokenizer does not know read "<id>"."""
    known = 0 if tokenizer is None else min(len(tokenizer), vocab_size)
    texts = tokenizer.batch_decode([[i] for i in range(known)]) if known else []
    return list(texts) + [f"<{i}>" for i in range(known, vocab_size)]


def top_logit_effects(
    directions: Tensor, weights: OutputWeights, tokens: Sequence[str], k: int = 10, *, features: Sequence[int] = ()
) -> pd.DataFrame:
    """The k most boosted and k most suppressed tokens per direction, computed in chunks of features.

    Columns: feature, direction ("boost"/"suppress"), rank, token_id, token, logit. `features` names
    the rows of `directions` (default 0..n-1).
    """
    n = directions.shape[0]
    names = torch.as_tensor(list(features) if len(features) else range(n), dtype=torch.long)
    k = min(k, weights.W_U.shape[0])
    parts = []
    for start in range(0, n, FEATURE_CHUNK):
        effects = logit_effect_matrix(directions[start : start + FEATURE_CHUNK], weights)  # [chunk, vocab]
        for label, largest in (("boost", True), ("suppress", False)):
            top = effects.topk(k, dim=-1, largest=largest)
            parts.append(_effects_frame(names[start : start + FEATURE_CHUNK], label, top.values, top.indices, tokens))
    return pd.concat(parts, ignore_index=True).sort_values(["feature", "direction", "rank"], ignore_index=True)


def _effects_frame(names: Tensor, label: str, values: Tensor, ids: Tensor, tokens: Sequence[str]) -> pd.DataFrame:
    n, k = values.shape
    flat_ids = ids.reshape(-1).tolist()
    return pd.DataFrame({
        "feature": names.repeat_interleave(k).numpy(),
        "direction": label,
        "rank": torch.arange(k).repeat(n).numpy(),
        "token_id": flat_ids,
        "token": [tokens[i] for i in flat_ids],
        "logit": values.reshape(-1).numpy(),
    })


def model_logit_effects(
    model: Any, hook: str, directions: Tensor, *, k: int = 10, tokenizer: Any = None, final_norm: bool = True,
    side: str = "output",
) -> pd.DataFrame:
    """`top_logit_effects` for a Hugging Face model: weights found from `hook`, tokens from its tokenizer."""
    weights = output_weights(model, hook, side=side, final_norm=final_norm)
    tokenizer = tokenizer if tokenizer is not None else api.get_tokenizer(model)
    return top_logit_effects(directions, weights, token_strings(tokenizer, weights.W_U.shape[0]), k)
