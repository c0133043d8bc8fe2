"""Universality: do two models' dictionaries learn the same features? (the paper's 0.72 vs 0.46 neurons)

Features of SAE_A on model A and SAE_B on model B are compared on the SAME token windows by the
Pearson correlation of their activations across tokens, for all pairs at once. One streaming pass
accumulates (float64) Σf_a, Σf_b, Σf_a², Σf_b² and the cross products Σ f_a f_bᵀ [d_a, d_b]:

    corr = (S_ab/N − μ_a μ_bᵀ) / (σ_a σ_bᵀ)

The cross products exploit sparsity: with a few active features per token, f_aᵀ f_b is a product
of two sparse matrices whose cost grows with Σ_t nnz_a(t)·nnz_b(t), not with d_a·d_b per token
(scipy's sparse product, one block of rows per thread, when scipy is installed, else torch's), taken
over groups of PENDING_TOKENS tokens. Dense units (raw neurons) use a dense matmul. The same sums
give activation cosines (`CoactivationSums.cosine`, used by feature splitting): zeros add nothing to
a dot product, so the cosine over all tokens equals the cosine over the tokens where either unit fires.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from saekit.activations import nnsight_api as api
from saekit.activations.reading import (
    DEFAULT_READ_TOKENS,
    Reading,
    open_reading,
    provenance_of,
    reading_activations,
)
from saekit.analysis.encoding import encode, fired
from saekit.saes.dictionary import Dictionary
from saekit.saes.sparse import Codes

Method = Literal["auto", "sparse", "dense"]
DENSE_ABOVE = 1e-3  # "auto" multiplies densely when density_a · density_b exceeds this (measured per batch)
ROW_CHUNK = 1024  # rows of the [d_a, d_b] result computed at a time (bounds float64 temporaries)
PENDING_TOKENS = 16_384  # sparse cross products are taken over groups of this many tokens (fewer passes over cross)
SLAB_ROWS = 256  # rows of a sparse cross product made dense at a time before adding (8 MiB at 4096 columns)


# --- the accumulation -----------------------------------------------------------------------------


class CoactivationSums:
    """Running first and second moments of two sets of units over the same tokens (float64)."""

    def __init__(self, d_a: int, d_b: int, method: Method = "auto") -> None:
        if method not in ("auto", "sparse", "dense"):
            raise ValueError(f"method must be 'auto', 'sparse' or 'dense', got {method!r}")
        self.method = method
        self.n = 0
        self.sum_a, self.sum_b = torch.zeros(d_a, dtype=torch.float64), torch.zeros(d_b, dtype=torch.float64)
        self.sq_a, self.sq_b = torch.zeros(d_a, dtype=torch.float64), torch.zeros(d_b, dtype=torch.float64)
        self._cross = torch.zeros(d_a, d_b, dtype=torch.float64)  # Σ_t f_a[t]ᵀ f_b[t], less what is pending
        self._pending: list[tuple[Codes, Tensor, Codes, Tensor]] = []  # sparse batches not yet in _cross
        self._pending_tokens = 0

    @property
    def cross(self) -> Tensor:
        """`Σ_t f_a[t]ᵀ f_b[t]`, [d_a, d_b] (float64), over every token added so far."""
        self._flush()
        return self._cross

    def update(self, f_a: Tensor, f_b: Tensor) -> None:
        """f_a: [tokens, d_a] and f_b: [tokens, d_b] activations of the same tokens."""
        f_a, f_b = f_a.detach().float().cpu(), f_b.detach().float().cpu()
        if f_a.shape[0] != f_b.shape[0]:
            raise ValueError(f"the two sides cover different tokens ({f_a.shape[0]} vs {f_b.shape[0]})")
        if self.uses_dense(f_a, f_b):
            self.n += f_a.shape[0]
            self._add_dense(f_a, f_b)
        else:
            self.add_entries(fired(f_a, positive=False), fired(f_b, positive=False))

    def add_entries(self, entries_a: tuple[Codes, Tensor], entries_b: tuple[Codes, Tensor]) -> None:
        """`update`'s sparse way from the non-zero entries (`fired(f, positive=False)`) of both sides: a shared
        pass finds each dictionary's entries once for several analyses."""
        if entries_a[0].n_rows != entries_b[0].n_rows:
            raise ValueError(f"the two sides cover different tokens ({entries_a[0].n_rows} vs {entries_b[0].n_rows})")
        self.n += entries_a[0].n_rows
        self._add_sparse(*entries_a, *entries_b)

    def uses_dense(self, f_a: Tensor, f_b: Tensor) -> bool:
        """Whether `update` adds this batch by a dense product (else from the firing entries)."""
        return self.method == "dense" or (
            self.method == "auto" and probe_density(f_a) * probe_density(f_b) > DENSE_ABOVE)

    def _add_dense(self, f_a: Tensor, f_b: Tensor) -> None:
        for f, total, squares in ((f_a, self.sum_a, self.sq_a), (f_b, self.sum_b, self.sq_b)):
            total += f.sum(0).double()
            squares += f.pow(2).sum(0).double()
        self._cross += (f_a.T @ f_b).double()

    def _add_sparse(self, codes_a: Codes, values_a: Tensor, codes_b: Codes, values_b: Tensor) -> None:
        for codes, values, total, squares in ((codes_a, values_a, self.sum_a, self.sq_a),
                                              (codes_b, values_b, self.sum_b, self.sq_b)):
            values = values.double()
            total.index_add_(0, codes.cols, values)
            squares.index_add_(0, codes.cols, values * values)
        self._pending.append((codes_a, values_a, codes_b, values_b))
        self._pending_tokens += codes_a.n_rows
        if self._pending_tokens >= PENDING_TOKENS:
            self._flush()

    def _flush(self) -> None:
        """Add the pending sparse batches' cross products, as one product over all their tokens."""
        if not self._pending:
            return
        a = _stacked([(codes_a, values_a) for codes_a, values_a, _, _ in self._pending])
        b = _stacked([(codes_b, values_b) for _, _, codes_b, values_b in self._pending])
        add_sparse_cross(self._cross, *a, *b)
        self._pending, self._pending_tokens = [], 0

    def correlation(self) -> Tensor:
        """Pearson correlation [d_a, d_b] (float32); NaN where a unit is constant over the tokens."""
        n = max(self.n, 1)
        mean_a, mean_b = self.sum_a / n, self.sum_b / n
        std_a = (self.sq_a / n - mean_a**2).clamp_min(0).sqrt()
        std_b = (self.sq_b / n - mean_b**2).clamp_min(0).sqrt()
        std_a, std_b = _nan_where_zero(std_a), _nan_where_zero(std_b)

        def block(rows: slice) -> Tensor:
            return (self.cross[rows] / n - mean_a[rows, None] * mean_b) / (std_a[rows, None] * std_b)

        return self._rows(block)

    def cosine(self) -> Tensor:
        """Cosine similarity [d_a, d_b] (float32) of the units' activation vectors; NaN for silent units."""
        norm_a, norm_b = _nan_where_zero(self.sq_a.sqrt()), _nan_where_zero(self.sq_b.sqrt())
        return self._rows(lambda rows: self.cross[rows] / (norm_a[rows, None] * norm_b))

    def _rows(self, block) -> Tensor:
        out = torch.empty(self.cross.shape, dtype=torch.float32)
        for start in range(0, out.shape[0], ROW_CHUNK):
            rows = slice(start, start + ROW_CHUNK)
            out[rows] = block(rows).float()
        return out


def _stacked(batches: list[tuple[Codes, Tensor]]) -> tuple[Codes, Tensor]:
    """Sparse batches (codes, values) as one: each batch's rows shifted past the tokens of those before it."""
    offsets = np.cumsum([0] + [codes.n_rows for codes, _ in batches])
    rows = torch.cat([codes.rows + int(offset) for (codes, _), offset in zip(batches, offsets)])
    cols = torch.cat([codes.cols for codes, _ in batches])
    return Codes(rows, cols, int(offsets[-1])), torch.cat([values for _, values in batches])


PROBE_ROWS = 256  # tokens `probe_density` looks at


def probe_density(f: Tensor, probe_rows: int = PROBE_ROWS) -> float:
    """The fraction of non-zero entries, estimated on the first `probe_rows` tokens (cheap)."""
    probe = f[:probe_rows]
    return int(torch.count_nonzero(probe)) / max(probe.numel(), 1)


def _nan_where_zero(values: Tensor) -> Tensor:
    return values.where(values > 0, torch.tensor(float("nan"), dtype=values.dtype))


def add_sparse_cross(cross: Tensor, codes_a: Codes, values_a: Tensor, codes_b: Codes, values_b: Tensor) -> None:
    """cross [d_a, d_b] += f_aᵀ f_b for sparse f_a, f_b given as entries (values [nnz] at codes) of the
    same tokens; products in float64."""
    if values_a.numel() == 0 or values_b.numel() == 0:
        return
    shape_a, shape_b = (codes_a.n_rows, cross.shape[0]), (codes_b.n_rows, cross.shape[1])
    args = (codes_a.rows, codes_a.cols, values_a.double(), shape_a, codes_b.rows, codes_b.cols, values_b.double(),
            shape_b)
    if _has_scipy() and cross.dtype == torch.float64 and cross.is_contiguous():
        _scipy_cross_into(cross.numpy(), *args)
        return
    rows, cols, values = _torch_cross(*args)
    cross.view(-1).index_add_(0, rows * cross.shape[1] + cols, values)


def _has_scipy() -> bool:
    try:
        import scipy.sparse  # noqa: F401
    except ImportError:
        return False
    return True


def _scipy_cross_into(cross: np.ndarray, rows_a, cols_a, vals_a, shape_a, rows_b, cols_b, vals_b, shape_b) -> None:
    """cross += aᵀ b by scipy's sparse-sparse product (which releases the GIL), one block of A's units per
    thread, a slab of rows at a time made dense and added (cheaper than scattering the entries)."""
    import scipy.sparse as sp

    a_t = sp.csr_matrix((vals_a.numpy(), (cols_a.numpy(), rows_a.numpy())), shape=(shape_a[1], shape_a[0]))
    b = sp.csr_matrix((vals_b.numpy(), (rows_b.numpy(), cols_b.numpy())), shape=shape_b)
    n_blocks = max(1, min(torch.get_num_threads(), a_t.shape[0] // SLAB_ROWS))
    edges = np.linspace(0, a_t.shape[0], n_blocks + 1).astype(int)

    def add_block(block: int) -> None:
        slab = np.empty((SLAB_ROWS, cross.shape[1]))  # reused: a fresh block costs page faults
        for start in range(edges[block], edges[block + 1], SLAB_ROWS):
            stop = min(start + SLAB_ROWS, edges[block + 1])
            (a_t[start:stop] @ b).toarray(out=slab[: stop - start])
            cross[start:stop] += slab[: stop - start]

    if n_blocks == 1:
        add_block(0)
        return
    with ThreadPoolExecutor(n_blocks) as pool:
        list(pool.map(add_block, range(n_blocks)))


def _torch_cross(rows_a, cols_a, vals_a, shape_a, rows_b, cols_b, vals_b, shape_b) -> tuple[Tensor, Tensor, Tensor]:
    """The same product with torch's sparse CSR matmul (slower; used when scipy is missing)."""
    a_t = torch.sparse_coo_tensor(torch.stack([cols_a, rows_a]), vals_a, (shape_a[1], shape_a[0]),
                                  check_invariants=False).coalesce()
    b = torch.sparse_coo_tensor(torch.stack([rows_b, cols_b]), vals_b, shape_b, check_invariants=False).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*beta.*")
        product = torch.sparse.mm(a_t, b).coalesce()
    return product.indices()[0], product.indices()[1], product.values()


# --- two models, same windows ---------------------------------------------------------------------


def second_reading(reading: Reading, model: Any, hook: str | None = None) -> Reading:
    """`reading` read through another model (at `hook`, default the same path): same windows, same skips."""
    model = api.load_model(model)
    hook = hook or reading.hook
    api.check_hook(model, hook)
    return reading._replace(model=model, hook=hook)


def paired_activations(reading_a: Reading, reading_b: Reading, batch_size: int, progress: bool) -> Iterator[
        tuple[Tensor, Tensor]]:
    """Activations [tokens, d] of both models on the same windows, batch by batch."""
    if not torch.equal(reading_a.windows.input_ids, reading_b.windows.input_ids) or (
            reading_a.special_ids != reading_b.special_ids):
        raise ValueError("the two readings must share their token windows and skipped special tokens")
    stream_a = reading_activations(reading_a, batch_size, progress, desc="universality")
    stream_b = reading_activations(reading_b, batch_size, progress=False)
    for chunk_a, chunk_b in zip(stream_a, stream_b):
        yield chunk_a.acts, chunk_b.acts


class Correlations(NamedTuple):
    """Activation correlations between model A's units and model B's."""

    features: Tensor  # [d_sae_a, d_sae_b] Pearson correlation of SAE features
    neurons: Tensor  # [d_in_a, d_in_b] the same for raw neurons (the baseline)
    density_a: Tensor  # [d_sae_a] firing rate of A's features
    density_b: Tensor  # [d_sae_b]


def correlate(
    model_a: Any,
    model_b: Any,
    text: Any,
    sae_a: Dictionary,
    sae_b: Dictionary,
    *,
    hook_b: str | None = None,
    max_tokens: int | None = DEFAULT_READ_TOKENS,
    batch_size: int = 32,
    method: Method = "auto",
    tokenizer: Any = None,
    progress: bool = True,
    **settings: Any,
) -> Correlations:
    """One pass over `text` through both models: feature–feature and neuron–neuron correlations.

    Hook, side and context default to sae_a's provenance (`settings` overrides them: hook, side,
    context_len, exclude_special_tokens); model B is read at `hook_b` (default: sae_b's hook, else A's).
    """
    reading_a = open_reading(model_a, text, sae_a, max_tokens=max_tokens, tokenizer=tokenizer, **settings)
    reading_b = second_reading(reading_a, model_b, hook_b or provenance_of(sae_b).hook)
    features = neurons = None
    fires_a, fires_b = torch.zeros(sae_a.d_sae), torch.zeros(sae_b.d_sae)
    for acts_a, acts_b in paired_activations(reading_a, reading_b, batch_size, progress):
        if features is None:
            features = CoactivationSums(sae_a.d_sae, sae_b.d_sae, method)
            neurons = CoactivationSums(acts_a.shape[-1], acts_b.shape[-1], method)
        f_a, f_b = encode(sae_a, acts_a), encode(sae_b, acts_b)
        features.update(f_a, f_b)
        neurons.update(acts_a, acts_b)
        fires_a += (f_a != 0).sum(0).cpu()
        fires_b += (f_b != 0).sum(0).cpu()
    if features is None:
        raise ValueError("the text yields no tokens to read (all padded or special); pass more text")
    return Correlations(features.correlation(), neurons.correlation(), fires_a / features.n, fires_b / features.n)


# --- summaries ------------------------------------------------------------------------------------


def best_matches(corr: Tensor, density: Tensor | None = None) -> pd.DataFrame:
    """Per row unit (of A): its best-correlated unit of B and that correlation (NaN for silent units).

    Columns: unit, best_match, correlation (and density when given), in unit order.
    """
    filled = torch.nan_to_num(corr, nan=-float("inf"))
    best = filled.max(dim=1)
    valid = torch.isfinite(best.values)
    table = pd.DataFrame({
        "unit": np.arange(corr.shape[0]),
        "best_match": pd.array(np.where(valid.numpy(), best.indices.numpy(), 0), dtype="Int64"),
        "correlation": np.where(valid.numpy(), best.values.numpy(), np.nan),
    })
    table.loc[~valid.numpy(), "best_match"] = pd.NA
    if density is not None:
        table["density"] = density.numpy()
    return table


class Universality(NamedTuple):
    """Best-match tables for features and for neurons (A's units against B's)."""

    features: pd.DataFrame  # unit, best_match, correlation, density
    neurons: pd.DataFrame  # unit, best_match, correlation


def best_match_tables(correlations: Correlations) -> Universality:
    """Best matches of A's features among B's, and of A's neurons among B's neurons."""
    return Universality(best_matches(correlations.features, correlations.density_a),
                        best_matches(correlations.neurons))


def best_match_histogram(result: Universality, bins: int = 40) -> pd.DataFrame:
    """Histogram data of best-match correlations over [-1, 1]: basis, bin_start, bin_end, count, fraction."""
    edges = np.linspace(-1.0, 1.0, bins + 1)
    parts = []
    for basis, table in (("features", result.features), ("neurons", result.neurons)):
        values = table["correlation"].dropna().to_numpy()
        counts, _ = np.histogram(np.clip(values, -1.0, 1.0), bins=edges)
        parts.append(pd.DataFrame({"basis": basis, "bin_start": edges[:-1], "bin_end": edges[1:], "count": counts,
                                   "fraction": counts / max(len(values), 1)}))
    return pd.concat(parts, ignore_index=True)


def universality_summary(result: Universality) -> pd.DataFrame:
    """Median and mean best-match correlation per basis (the paper: 0.72 features, 0.46 neurons)."""
    rows = []
    for basis, table in (("features", result.features), ("neurons", result.neurons)):
        values = table["correlation"].dropna()
        rows.append({"basis": basis, "n_units": len(values), "median": values.median(), "mean": values.mean()})
    return pd.DataFrame(rows)


DENSITY_EDGES = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""Density buckets of `universality_by_density`: a decade each, the paper's log-density axis."""


def universality_by_density(result: Universality, edges: tuple[float, ...] = DENSITY_EDGES) -> pd.DataFrame:
    """Best-match correlation of A's features per density bucket (low, high]: where universality is won or lost.

    Columns: density_from, density_to, n_features, median, mean (NaN where a bucket is empty); silent
    features (density 0) are counted in no bucket, as they have no correlation."""
    table = result.features
    if "density" not in table:
        raise ValueError("the features table has no density column: build it with best_match_tables(correlate(...))")
    rows = []
    for low, high in zip(edges, edges[1:]):
        values = table.loc[(table["density"] > low) & (table["density"] <= high), "correlation"].dropna()
        rows.append({"density_from": low, "density_to": high, "n_features": len(values),
                     "median": values.median() if len(values) else np.nan,
                     "mean": values.mean() if len(values) else np.nan})
    return pd.DataFrame(rows)
