"""KL fine-tune of the decoder: the reconstruction the model reads best, with the features left as they are.

The least-squares refit makes x̂ close to x in L2, but the layers after the hook read x̂, and some directions
matter more to the next-token distribution than others. With the codes f = encode(x) frozen, the decoder is
tuned on the KL divergence from the clean model's next-token distribution to the one with x̂ spliced in:

    W_dec, b_dec = argmin E_t KL( p(· | x) ‖ p(· | x̂) ),   x̂ = f W_dec + b_dec,   f = encode(x) held fixed

by Adam, the rate held then decayed linearly to 0 over the last DECAY_FRACTION of the steps (end-to-end
fine-tuning as in Braun et al. 2024 and Karvonen 2025, restricted to the decoder). The same features fire at the
same strengths, so L0, densities and activation correlations do not change; b_enc moves with b_dec, as in the
refit, so the codes stay what they were. A lower KL lowers the spliced cross-entropy that evaluation's
`loss_increase` reports.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations import nnsight_api as api
from saekit.activations.windows import TokenWindows
from saekit.errors import InputError
from saekit.saes import SAE
from saekit.saes.sparse import Codes, sparse_decode

FINETUNE_LR = 1e-3
"""Adam's rate (measured on a study A/1 at λ 5 with its least-squares decoder, +0.30 nats on held-out text; over 200k
tokens 1e-3 left +0.20 nats, 3e-3 +0.24)."""
DECAY_FRACTION = 0.2
WINDOWS_PER_STEP = 16


class DecoderFinetune(NamedTuple):
    """What a fine-tune did: tokens and steps taken, and the mean KL (nats per token) over the first and the last
    tenth of the steps (on the tokens being trained on)."""

    tokens: int
    steps: int
    kl_start: float
    kl_end: float


KL_BLOCK_ELEMENTS = 2**19
"""Logits per block of the KL (2 MiB of fp32: a block's softmaxes and gradient stay in cache)."""


class _KLToClean(torch.autograd.Function):
    """Weighted mean over tokens of KL(softmax(clean) ‖ softmax(spliced)), for logits [tokens, vocab] and weights
    [tokens]; the gradient (softmax(spliced) − softmax(clean)) · w_t / Σ w is computed in the forward, block by block
    of rows, while each block is in cache (Σ p log p is a constant for it)."""

    @staticmethod
    def forward(ctx, spliced: Tensor, clean: Tensor, weight: Tensor) -> Tensor:  # type: ignore[override]
        rows = max(1, KL_BLOCK_ELEMENTS // spliced.shape[1])
        scale = weight.sum().clamp_min(1)
        grad = torch.empty(spliced.shape, dtype=torch.float32, device=spliced.device)
        total = torch.zeros((), dtype=torch.float64, device=spliced.device)
        for first in range(0, len(spliced), rows):
            block = slice(first, first + rows)
            log_p, log_q = clean[block].float().log_softmax(-1), spliced[block].float().log_softmax(-1)
            p = log_p.exp()
            total += torch.linalg.vecdot(p, log_p - log_q).mul(weight[block]).sum(dtype=torch.float64)
            grad[block] = log_q.exp_().sub_(p).mul_((weight[block] / scale)[:, None])
        ctx.save_for_backward(grad)
        ctx.spliced_dtype = spliced.dtype
        return (total / scale).float()

    @staticmethod
    def backward(ctx, grad_kl: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad.mul_(grad_kl).to(ctx.spliced_dtype), None, None  # the graph is freed after: no second backward


def kl_to_clean(clean: Tensor, spliced: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens of KL(softmax(clean) ‖ softmax(spliced)); logits [batch, seq, vocab], mask [batch, seq];
    differentiable in `spliced`."""
    vocab = spliced.shape[-1]
    return _KLToClean.apply(spliced.reshape(-1, vocab), clean.detach().reshape(-1, vocab),
                            mask.reshape(-1).to(torch.float32))


def _splice(W_dec: Tensor, b_dec: Tensor, codes: Codes, values: Tensor, value: Tensor) -> Tensor:
    """x̂ = f W_dec + b_dec for the fixed codes, shaped and typed as the hook's value [..., d_in]."""
    return sparse_decode(codes, values, W_dec, b_dec).view(value.shape).to(value.dtype)


def finetune_decoder(sae: SAE, model, windows: TokenWindows, hook: str, tokens: int, *, side: api.Side = "output",
                     lr: float = FINETUNE_LR, windows_per_step: int = WINDOWS_PER_STEP,
                     compute_dtype: torch.dtype | None = None, progress: bool = True) -> DecoderFinetune:
    """Tune `sae`'s W_dec and b_dec in place on the KL to `model`'s clean outputs over the first `tokens` real tokens
    of `windows` (fewer if they run out), with the codes of the SAE as given held fixed (the encoder's product in
    `compute_dtype`, default the SAE's dtype)."""
    if not api.has_lm_head(model):
        raise InputError("the decoder's KL fine-tune needs next-token logits; this model has no language-model head "
                         "(use the least-squares refit, decoder_refit_tokens, instead)")
    if tokens <= 0 or len(windows) == 0:
        return DecoderFinetune(0, 0, float("nan"), float("nan"))
    per_window = max(1, windows.n_tokens // len(windows))
    steps = min(math.ceil(tokens / (windows_per_step * per_window)), math.ceil(len(windows) / windows_per_step))
    decay_from = int(steps * (1 - DECAY_FRACTION))
    b_dec = torch.nn.Parameter(sae.b_dec.detach().clone())  # tuned apart: the encoder reads x − sae.b_dec
    params = [sae.W_dec, b_dec]
    fused = sae.device.type in ("cpu", "cuda") and sae.dtype in (torch.float32, torch.float64)
    optimizer = torch.optim.Adam(params, lr=lr, fused=fused or None)
    kls, seen = [], 0
    for step in tqdm(range(steps), desc="decoder KL fine-tune", disable=not progress, leave=False):
        ids = windows.input_ids[step * windows_per_step:(step + 1) * windows_per_step]
        mask = windows.attention_mask[step * windows_per_step:(step + 1) * windows_per_step]
        with torch.no_grad():
            acts, clean = api.activations_and_logits(model, ids, mask, hook, side)  # [b, s, d_in], [b, s, vocab]
            codes, values = sae.sparse_encode(acts.reshape(-1, sae.d_in).to(sae.dtype), compute_dtype)
        splice = partial(_splice, sae.W_dec, b_dec, codes, values)
        spliced = api.spliced_logits(model, ids, mask, hook, splice, side, grad=True)
        kl = kl_to_clean(clean, spliced, mask)
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (steps - step) / max(1, steps - decay_from))
        grads = torch.autograd.grad(kl, params)
        for param, grad in zip(params, grads):
            param.grad = grad
        optimizer.step()
        kls.append(kl.item())
        seen += int(mask.sum())
    sae.W_dec.grad = None
    sae.set_b_dec_keeping_codes(b_dec.detach())
    tenth = max(1, steps // 10)
    return DecoderFinetune(seen, steps, sum(kls[:tenth]) / tenth, sum(kls[-tenth:]) / tenth)
