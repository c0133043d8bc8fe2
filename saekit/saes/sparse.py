"""Sparse-aware training products: only the encoder's forward matmul is inherently dense.

With a few active features per token, the decoder's forward and every backward product touch only
the active (token, feature) entries. Codes are kept as flat COO lists sorted by token:

    rows [nnz]  token of each entry (ascending)      cols [nnz]  feature of each entry
    pre  [nnz]  pre-activation of the entry           (values after the activation: f [nnz])

    x̂_t = Σ_{entries of t} f · W_dec[col] + b_dec               F.embedding_bag over W_dec
    ∂L/∂W_enc[:, i] = Σ_{entries with col i} ∂L/∂pre · x̄_row     embedding_bag over x̄, grouped by feature
    ∂L/∂W_dec[i] = Σ_{entries with col i} f · ∂L/∂x̂_row           embedding_bag over ∂L/∂x̂, grouped by feature
    ∂L/∂b_enc[i] = Σ_{entries with col i} ∂L/∂pre,   ∂L/∂b_dec (via x̄) = −W_enc ∂L/∂b_enc

A step then costs ≈ 2·d·n FLOPs per token (the encoder) plus O(nnz·d), instead of 6·d·n. The weight gradients
are computed for the features that fired in the batch only and written into zeros.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class FeatureGroups(NamedTuple):
    """The entries regrouped by feature: `order` [nnz] sorts them by feature (stably), `features` [U] are the
    distinct features that fired, `offsets` [U] where each one's entries start in that order, and `of_entry`
    [nnz] which of the U each entry belongs to."""

    order: Tensor
    features: Tensor
    offsets: Tensor
    of_entry: Tensor


def group_by_feature(cols: Tensor) -> FeatureGroups:
    """Group entries by their feature, for the per-feature sums of the weight gradients."""
    sorted_cols, order = torch.sort(_narrowest(cols), stable=True)
    features, of_sorted, counts = torch.unique_consecutive(sorted_cols, return_inverse=True, return_counts=True)
    features = features.long()
    of_entry = torch.empty_like(of_sorted).index_copy_(0, order, of_sorted)
    return FeatureGroups(order, features, torch.cumsum(counts, 0) - counts, of_entry)


def _narrowest(indices: Tensor) -> Tensor:
    """Non-negative int64 indices in the narrowest integer dtype that holds them: sorting 131k feature indices takes
    1.3 ms as int16 and 4.2 ms as int64 on one core of this project's CPU (the order is the same)."""
    top = int(indices.max()) if indices.numel() else 0
    for dtype in (torch.int16, torch.int32):
        if top <= torch.iinfo(dtype).max:
            return indices.to(dtype)
    return indices


class Codes(NamedTuple):
    """Selected (token, feature) entries of a batch, sorted by token, with their grouping by feature once a training
    step has asked for it (`grouped`: the encoder's and the decoder's gradients share one sort)."""

    rows: Tensor  # [nnz] int64
    cols: Tensor  # [nnz] int64
    n_rows: int  # tokens in the batch
    groups: FeatureGroups | None = None

    def grouped(self) -> Codes:
        """These codes with their feature grouping computed."""
        return self if self.groups is not None else self._replace(groups=group_by_feature(self.cols))


def bag_offsets(rows: Tensor, n_rows: int) -> Tensor:
    """Start of each token's entries in the sorted `rows` list: [n_rows] (empty tokens allowed)."""
    counts = torch.bincount(rows, minlength=n_rows)
    return torch.cumsum(counts, 0) - counts


def feature_sums(groups: FeatureGroups, rows: Tensor, dense: Tensor, weights: Tensor,
                 dtype: torch.dtype | None = None) -> Tensor:
    """Σ_{entries e of feature i} weights_e · dense[rows_e] for each fired feature i: [U, d] in dense's dtype, the
    products read in `dtype` if given (bf16 halves the bytes gathered; the sums are rounded once, by ~0.2 %)."""
    if dtype is not None and dtype != dense.dtype:
        return feature_sums(groups, rows, dense.to(dtype), weights.to(dtype)).to(dense.dtype)
    return F.embedding_bag(rows[groups.order], dense, groups.offsets, mode="sum",
                           per_sample_weights=weights[groups.order])


def transposed(a: Tensor, block: int = 256) -> Tensor:
    """a.T [d, U] as a contiguous tensor, copied in blocks of rows: 3x faster than `a.T.contiguous()` for a
    [3342, 512] fp32 gradient on this project's CPU (each block's transpose stays in cache)."""
    return torch.cat([a[i:i + block].T for i in range(0, len(a), block)], 1) if len(a) > block else a.T.contiguous()


class _SparseDecode(torch.autograd.Function):
    """x̂ = f W_dec + b_dec from entries f [nnz], and ‖W_dec[col]‖ at each entry (for the norm-weighted L1),
    with a backward that touches only the rows of W_dec whose features fired:

        ∂L/∂f_e = ∂L/∂x̂_row · W_dec[col]    (an L1 weighted by the norms adds its own term through autograd)
        ∂L/∂W_dec[i] = Σ_{e of i} f_e ∂L/∂x̂_row + (Σ_{e of i} ∂L/∂norm_e) W_dec[i] / ‖W_dec[i]‖

    forward(f, W_dec, b_dec, rows, cols, n_rows, with_norms, groups, grad_dtype) → (x̂ [n_rows, d_in], norms [nnz],
    empty without them); `groups`: the entries' FeatureGroups, or None to compute them; `grad_dtype`: the dtype
    W_dec's gradient sums read their products in (None: W_dec's).
    """

    @staticmethod
    def forward(ctx, f, W_dec, b_dec, rows, cols, n_rows, with_norms, groups, grad_dtype):
        x_hat = F.embedding_bag(cols, W_dec, bag_offsets(rows, n_rows), mode="sum", per_sample_weights=f) + b_dec
        groups = groups if groups is not None else group_by_feature(cols)
        norms = W_dec.index_select(0, groups.features).norm(dim=1) if with_norms else W_dec.new_empty(0)  # [U]
        ctx.save_for_backward(f, W_dec, rows, cols, norms, *groups)
        ctx.with_norms, ctx.grad_dtype = with_norms, grad_dtype
        return x_hat, norms[groups.of_entry] if with_norms else W_dec.new_empty(0)

    @staticmethod
    def backward(ctx, grad_x_hat: Tensor, grad_norms: Tensor | None):
        f, W_dec, rows, cols, norms, *group_parts = ctx.saved_tensors
        groups = FeatureGroups(*group_parts)
        grad_x_hat = grad_x_hat.contiguous()  # [n_rows, d_in]
        grad_f = grad_W_dec = grad_b_dec = None
        if ctx.needs_input_grad[0]:  # grad_x_hat[row] · W_dec[col] per entry, without gathering either: embedding_bag's
            grad_f = torch.ops.aten._embedding_bag_per_sample_weights_backward(  # own kernel (offset2bag = rows)
                grad_x_hat, W_dec, cols, bag_offsets(rows, len(grad_x_hat)), rows, 0)
        if ctx.needs_input_grad[1]:
            fired = feature_sums(groups, rows, grad_x_hat, f, ctx.grad_dtype)  # [U, d_in]
            if ctx.with_norms and grad_norms is not None:
                per_feature = norms.new_zeros(len(norms)).index_add_(0, groups.of_entry, grad_norms)  # [U]
                fired += (per_feature / norms.clamp_min(1e-12))[:, None] * W_dec.index_select(0, groups.features)
            grad_W_dec = torch.zeros_like(W_dec).index_copy_(0, groups.features, fired)
        if ctx.needs_input_grad[2]:
            grad_b_dec = grad_x_hat.sum(0)
        return grad_f, grad_W_dec, grad_b_dec, None, None, None, None, None, None


def sparse_decode(codes: Codes, f: Tensor, W_dec: Tensor, b_dec: Tensor,
                  grad_dtype: torch.dtype | None = None) -> Tensor:
    """x̂ = f W_dec + b_dec for sparse f given as values [nnz] at `codes`: → [n_rows, d_in] (W_dec's gradient sums
    read their products in `grad_dtype` if given)."""
    return _SparseDecode.apply(f, W_dec, b_dec, codes.rows, codes.cols, codes.n_rows, False, codes.groups,
                               grad_dtype)[0]


def sparse_decode_with_norms(codes: Codes, f: Tensor, W_dec: Tensor, b_dec: Tensor,
                             grad_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """(x̂ [n_rows, d_in], ‖W_dec[col]‖ at each entry [nnz]), both differentiable, for the norm-weighted L1."""
    return _SparseDecode.apply(f, W_dec, b_dec, codes.rows, codes.cols, codes.n_rows, True, codes.groups,
                               grad_dtype)


class _SelectedPreActs(torch.autograd.Function):
    """The pre-activations at chosen entries, with a backward that touches only those entries.

    forward(x, b_dec, W_enc, b_enc, rows, cols, values, groups, grad_dtype) returns `values` (computed by the caller
    from the dense no-grad encoder pass); backward gives W_enc, b_enc and b_dec their gradients (`groups`: the
    entries' FeatureGroups, or None to compute them there; W_enc's sums read their products in `grad_dtype`).
    """

    @staticmethod
    def forward(ctx, x, b_dec, W_enc, b_enc, rows, cols, values, groups, grad_dtype):
        ctx.save_for_backward(x, b_dec, W_enc, rows, cols)
        ctx.groups, ctx.grad_dtype = groups, grad_dtype
        return values.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, b_dec, W_enc, rows, cols = ctx.saved_tensors
        d_in, d_sae = W_enc.shape
        grad = grad.contiguous()
        grad_b_enc = torch.zeros(d_sae, dtype=grad.dtype, device=grad.device).index_add_(0, cols, grad)
        grad_W_enc = grad_b_dec = grad_x = None
        if ctx.needs_input_grad[2]:
            groups = ctx.groups if ctx.groups is not None else group_by_feature(cols)
            fired = transposed(feature_sums(groups, rows, x - b_dec, grad, ctx.grad_dtype))  # [d_in, U]
            grad_W_enc = W_enc.new_zeros(d_in, d_sae).scatter_(1, groups.features.expand(d_in, -1), fired)
        if ctx.needs_input_grad[1]:
            grad_b_dec = -(W_enc @ grad_b_enc)
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(cols, W_enc.T, bag_offsets(rows, x.shape[0]), mode="sum",
                                     per_sample_weights=grad)
        return grad_x, grad_b_dec, grad_W_enc, grad_b_enc, None, None, None, None, None


def selected_pre_acts(x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, codes: Codes,
                      values: Tensor, grad_dtype: torch.dtype | None = None) -> Tensor:
    """Differentiable pre-activations [nnz] at `codes`, given their values from a no-grad dense pass (W_enc's
    gradient sums read their products in `grad_dtype` if given)."""
    return _SelectedPreActs.apply(x, b_dec, W_enc, b_enc, codes.rows, codes.cols, values, codes.groups, grad_dtype)


WORD_BYTES = 8  # entries are scanned one 64-bit word at a time by `mask_entries` and `positive_codes`


def _scan_words(flat: Tensor, keep: Callable[[Tensor], Tensor]) -> Tensor | None:
    """Flat indices of the entries of `flat` [n] that `keep` accepts, where only entries in a non-zero 64-bit word
    can be accepted: the few such words are expanded and checked. None where the layout does not allow it (device,
    size, offset) or where more than one word in as many as a word holds entries is non-zero: a plain scan is then
    the faster."""
    per_word = WORD_BYTES // flat.element_size()
    words = flat.numel() // max(per_word, 1)
    if (flat.device.type != "cpu" or per_word < 1 or words == 0 or not flat.is_contiguous()
            or flat.numel() % per_word or flat.storage_offset() % per_word):
        return None
    hot = flat.view(torch.int64).nonzero().squeeze(1)
    if hot.numel() > words // per_word:
        return None
    candidates = (hot[:, None] * per_word + torch.arange(per_word)).reshape(-1)
    return candidates[keep(flat[candidates])]


def mask_entries(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(rows, cols) of the true entries of a bool mask [tokens, d_sae], row-major: what `nonzero` gives.

    A training mask is mostly false (a few active features per token). Read as 8-byte words, only the words holding
    a true entry need expanding: 5 ms instead of 22 for a [512, 16384] mask at 0.1 % on one CPU core. Where more
    than one word in WORD_BYTES holds one (about 2 % of entries true), plain `nonzero` is the faster."""
    entries = _scan_words(mask.reshape(-1), lambda v: v) if mask.dtype == torch.bool else None
    if entries is None:
        return mask.nonzero(as_tuple=True)
    return entries // mask.shape[1], entries % mask.shape[1]


def positive_codes(pre: Tensor) -> Codes:
    """Entries of pre [tokens, d_sae] above zero, row-major; `pre` is ReLU'd in place on the way.

    Once ReLU'd, a 64-bit word of `pre` is non-zero exactly when one of its entries is positive (or -0.0, or NaN:
    both rejected when checked), so the words can be scanned as in `mask_entries` without building a bool mask
    first (the comparison alone costs more than the scan: 17 ms for a bf16 [512, 16384] block on one CPU core)."""
    pre.relu_()
    entries = _scan_words(pre.reshape(-1), lambda v: v > 0) if pre.dtype.is_floating_point else None
    if entries is None:
        return codes_from_mask(pre > 0)
    return Codes(entries // pre.shape[1], entries % pre.shape[1], pre.shape[0])


def codes_from_mask(mask: Tensor) -> Codes:
    """Entries where mask [tokens, d_sae] is true, row-major (so sorted by token)."""
    rows, cols = mask_entries(mask)
    return Codes(rows, cols, mask.shape[0])


def codes_from_topk(indices: Tensor) -> Codes:
    """Entries from per-token indices [tokens, k]."""
    n, k = indices.shape
    rows = torch.arange(n, device=indices.device).repeat_interleave(k)
    return Codes(rows, indices.reshape(-1), n)


def codes_from_flat(flat_indices: Tensor, n_rows: int, d_sae: int) -> Codes:
    """Entries from indices into the flattened [tokens · d_sae] matrix (any order)."""
    flat = flat_indices.sort().values
    return Codes(flat // d_sae, flat % d_sae, n_rows)


def gather(pre: Tensor, codes: Codes) -> Tensor:
    """pre [tokens, d_sae] at the entries of `codes` → [nnz]."""
    return pre[codes.rows, codes.cols]
