"""The language model's training forward for a CPU: GPT-2's one block written out with its products in a
chosen dtype, and the next-token cross-entropy fused with the unembedding.

Only the matrix products change dtype (bf16 where the CPU multiplies it natively, twice to five times
the fp32 rate); the residual stream, LayerNorms, GELU, attention, softmax, loss and every gradient the
optimizer sees stay fp32. Attention stays fp32 because torch's bf16 attention kernel is slower on a CPU
than its fp32 one, and it is under 5% of the FLOPs. The loss runs over blocks of rows that fit in the
cache and computes its gradients in the same pass, so the `[tokens, vocab]` logits are never stored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import GPT2LMHeadModel

LOSS_BLOCK_ELEMENTS = 2**19
"""Logits per block of the fused loss (2 MiB of fp32: the block's softmax and gradient stay in L2)."""


def loss_block_rows(vocab: int) -> int:
    """Rows of hidden states per block of the fused loss: fixed by the vocabulary, never by the machine."""
    return max(1, LOSS_BLOCK_ELEMENTS // vocab)


class UnembedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `softmax(hidden @ weight.T)` against `targets`, products in `dtype`.

    The gradients are computed in the forward, block by block (the loss ends the graph, so they only need
    scaling by the incoming gradient), which reads each block's logits while they are still in cache.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, dtype: torch.dtype) -> Tensor:  # type: ignore[override]
        # hidden [n, d_model], weight [vocab, d_model], targets [n]
        n, rows = len(targets), loss_block_rows(weight.shape[0])
        h, w = hidden.detach().to(dtype), weight.detach().to(dtype)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_logits = torch.empty(n, w.shape[0], dtype=dtype) if need_grad else None  # [n, vocab]
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32) if need_grad else None
        total = torch.zeros((), dtype=torch.float64)
        for first in range(0, n, rows):
            block = slice(first, min(first + rows, n))
            probs = torch.softmax((h[block] @ w.T).float(), dim=-1)  # [rows, vocab]
            picked = torch.arange(probs.shape[0])
            total += probs[picked, targets[block]].clamp_min(1e-30).log().sum(dtype=torch.float64)
            if need_grad:
                probs[picked, targets[block]] -= 1  # d loss / d logits = (softmax - onehot) / n
                grad_logits[block] = probs.mul_(1 / n)
                grad_hidden[block] = grad_logits[block] @ w
        grad_weight = (grad_logits.T @ h).float() if need_grad else None
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.input_dtypes = (hidden.dtype, weight.dtype)
        return (-total / n).to(torch.float32)

    @staticmethod
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor, Tensor, None, None]:  # type: ignore[override]
        grad_hidden, grad_weight = ctx.saved_tensors
        hidden_dtype, weight_dtype = ctx.input_dtypes
        return (grad_hidden.mul(grad_loss).to(hidden_dtype), grad_weight.mul(grad_loss).to(weight_dtype),
                None, None)


def unembed_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor,
                          dtype: torch.dtype = torch.float32) -> Tensor:
    """Mean next-token loss (nats) for `hidden [n, d]`, unembedding `weight [vocab, d]`, `targets [n]`, with
    the products in `dtype` (the softmax and loss in fp32)."""
    return UnembedCrossEntropy.apply(hidden, weight, targets, dtype)


def _linear(x: Tensor, conv: torch.nn.Module, dtype: torch.dtype) -> Tensor:
    """GPT-2's Conv1D (`x @ weight + bias`, weight `[in, out]`) with the product in `dtype`."""
    flat = x.reshape(-1, x.shape[-1]).to(dtype)
    out = torch.addmm(conv.bias.to(dtype), flat, conv.weight.to(dtype))
    return out.view(*x.shape[:-1], out.shape[-1])


def hidden_states(model: GPT2LMHeadModel, inputs: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """`model.transformer(inputs).last_hidden_state` `[batch, context, d_model]` of a GPT-2 without dropout,
    with its linear layers' products in `dtype` and everything else in fp32."""
    t, (batch, context) = model.transformer, inputs.shape
    n_head = model.config.n_head
    x = t.wte(inputs) + t.wpe.weight[:context]
    for block in t.h:
        a = F.layer_norm(x, x.shape[-1:], block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
        qkv = _linear(a, block.attn.c_attn, dtype).float().view(batch, context, 3, n_head, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [batch, head, context, head_dim]
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + _linear(attended.transpose(1, 2).reshape(x.shape), block.attn.c_proj, dtype).float()
        m = F.layer_norm(x, x.shape[-1:], block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
        neurons = block.mlp.act(_linear(m, block.mlp.c_fc, dtype).float())
        x = x + _linear(neurons, block.mlp.c_proj, dtype).float()
    return F.layer_norm(x, x.shape[-1:], t.ln_f.weight, t.ln_f.bias, t.ln_f.eps)


def lm_loss(model: GPT2LMHeadModel, windows: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Training loss of a GPT-2 model on token windows `[batch, context + 1]` (inputs, shifted targets), its
    products in `dtype`."""
    inputs, targets = windows[:, :-1], windows[:, 1:]
    hidden = hidden_states(model, inputs, dtype)
    return unembed_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), model.lm_head.weight,
                                 targets.reshape(-1), dtype)
