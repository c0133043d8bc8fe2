"""Friendly sites: `layer` + `site` resolved to a module path and side, for every common family of transformers.

    resid_pre    the residual stream entering block `layer`        (the block's input)
    resid_post   the residual stream leaving block `layer`         (the block's output)
    attn_out     what the attention sublayer writes                (its output projection's output)
    mlp_act      the MLP's neurons, after the nonlinearity         (its output projection's input; a gated MLP's
                                                                    act(gate) · up)
    mlp_out      what the MLP sublayer writes                      (its output projection's output)

The blocks are the model's ModuleList as long as its layer count; within a block the projections are found by the
names the families use (GPT-2, GPT-NeoX, Llama, Mistral, Qwen2, Gemma 1–3, Phi, BERT). A model laid out otherwise
gets an error listing its block's modules: pass `hook=` with a module path instead.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, get_args

import torch

from saekit.activations import nnsight_api as api
from saekit.errors import InputError

SiteName = Literal["resid_pre", "resid_post", "attn_out", "mlp_act", "mlp_out"]
SITES: tuple[str, ...] = get_args(SiteName)

MLP_OUTPUT_PROJECTIONS = ("mlp.c_proj", "mlp.down_proj", "mlp.dense_4h_to_h", "mlp.fc2", "output.dense")
"""The MLP's output projection within a block, by family: GPT-2; Llama/Mistral/Qwen2/Gemma; GPT-NeoX; Phi; BERT."""
ATTENTION_OUTPUT_PROJECTIONS = ("attn.c_proj", "self_attn.o_proj", "attention.dense", "self_attn.dense",
                                "attention.output.dense")
"""The attention's output projection within a block: GPT-2; Llama/Mistral/Qwen2/Gemma; GPT-NeoX; Phi; BERT."""


class ResolvedSite(NamedTuple):
    """Where a friendly site lives in a model."""

    hook: str  # module path
    side: Literal["output", "input"]


def block_list(model: Any) -> tuple[str, int]:
    """(path of the model's ModuleList of transformer blocks, its length): the first ModuleList as long as the
    config's layer count (the longest ModuleList where the config does not say)."""
    module = api.underlying_module(model)
    config = getattr(module, "config", None)
    n_layers = next((getattr(config, k) for k in ("num_hidden_layers", "n_layer", "num_layers")
                     if isinstance(getattr(config, k, None), int)), None)
    lists = [(name, len(m)) for name, m in module.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    matching = [entry for entry in lists if entry[1] == n_layers] if n_layers else []
    if matching:
        return matching[0]
    if not lists:
        raise InputError(f"{type(module).__name__} has no list of blocks to take a layer from: pass hook= with a "
                         "module path")
    return max(lists, key=lambda entry: entry[1])


def resolve_site(model: Any, layer: int, site: str) -> ResolvedSite:
    """The module path and side of `site` in block `layer` (negative layers count from the end)."""
    if site not in SITES:
        raise InputError(f"unknown site {site!r}: use one of {', '.join(SITES)}")
    blocks, n = block_list(model)
    if not -n <= layer < n:
        raise InputError(f"layer {layer} is out of range: the model has {n} blocks (0..{n - 1}, or -1 for the last)")
    block = f"{blocks}.{layer % n}"
    if site == "resid_pre":
        return ResolvedSite(block, "input")
    if site == "resid_post":
        return ResolvedSite(block, "output")
    names = MLP_OUTPUT_PROJECTIONS if site in ("mlp_act", "mlp_out") else ATTENTION_OUTPUT_PROJECTIONS
    paths = set(api.module_paths(model))
    found = next((f"{block}.{name}" for name in names if f"{block}.{name}" in paths), None)
    if found is None:
        inside = sorted(p.removeprefix(block + ".") for p in paths if p.startswith(block + "."))
        raise InputError(f"found no {'MLP' if site != 'attn_out' else 'attention'} output projection in {block} "
                         f"(looked for {', '.join(names)}; it holds {', '.join(inside[:12])}): pass hook= with a "
                         "module path")
    return ResolvedSite(found, "input" if site == "mlp_act" else "output")
