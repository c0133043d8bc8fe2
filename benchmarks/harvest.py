"""Activation harvesting: saekit's nnsight path against a plain PyTorch forward hook, on the demo's shape."""

from __future__ import annotations

import torch

from benchmarks.common import CONTEXT, HOOK, VOCAB, demo_shaped_model, median_time

WINDOWS = 64  # context windows per forward (8192 tokens)


def measure() -> dict[str, float]:
    from saekit.activations import nnsight_api as api

    module = demo_shaped_model()
    model = api.load_model(module)
    ids = torch.randint(1, VOCAB, (WINDOWS, CONTEXT), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        captured["acts"] = output
        raise StopForward

    def plain() -> torch.Tensor:
        handle = module.get_submodule(HOOK).register_forward_hook(hook)
        try:
            with torch.no_grad():
                module(input_ids=ids, attention_mask=mask)
        except StopForward:
            pass
        finally:
            handle.remove()
        return captured["acts"]

    def through_nnsight() -> torch.Tensor:
        return api.get_activations(model, ids, mask, HOOK)

    torch.testing.assert_close(plain(), through_nnsight())
    tokens = WINDOWS * CONTEXT
    times = {"hook": [], "nnsight": []}
    for _ in range(5):  # alternate, so both sides see the same machine state
        times["hook"].append(median_time(plain, repeats=1))
        times["nnsight"].append(median_time(through_nnsight, repeats=1))
    hook_s, nn_s = sorted(times["hook"])[2], sorted(times["nnsight"])[2]
    return {"hook_tok_s": tokens / hook_s, "nnsight_tok_s": tokens / nn_s, "nnsight_vs_hook": hook_s / nn_s}


class StopForward(Exception):
    """Raised by the plain hook to stop the forward after the MLP, as saekit's trace does."""
