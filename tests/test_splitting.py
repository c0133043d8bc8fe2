"""Feature splitting: cosines against brute force, and trees from dictionaries built to split exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import saekit
from saekit.analysis import splitting as S

from helpers import corpus, dense_acts, sparse_sae


def _doubled(sae) -> saekit.SAE:
    """A dictionary twice as large in which feature i splits into i (same) and i + n (half as strong)."""
    n = sae.d_sae
    big = saekit.SAE.create("relu", sae.d_in, 2 * n)
    with torch.no_grad():
        big.W_enc.copy_(torch.cat([sae.W_enc, 0.5 * sae.W_enc], 1))
        big.b_enc.copy_(torch.cat([sae.b_enc, 0.5 * sae.b_enc]))
        big.W_dec.copy_(torch.cat([sae.W_dec, sae.W_dec]))
        big.b_dec.copy_(sae.b_dec)
    big.provenance = sae.provenance
    return big


@pytest.fixture(scope="module")
def split(tiny_lm):
    windows = corpus(tiny_lm)
    acts, _ = dense_acts(tiny_lm, windows)
    small = sparse_sae(acts, 12)
    saes = [_doubled(_doubled(small)), small, _doubled(small)]  # any order
    result = S.split_similarities(tiny_lm, windows, saes, batch_size=2, progress=False)
    return acts, S.by_size(saes), result


def test_cosines_match_brute_force(split):
    acts, saes, result = split
    assert result.sizes == (12, 24, 48)
    for level, (a, b) in enumerate(zip(saes, saes[1:])):
        with torch.no_grad():
            f_a, f_b = a.encode(acts).double().numpy(), b.encode(acts).double().numpy()
        either = (f_a[:, :, None] > 0) | (f_b[:, None, :] > 0)  # the paper's "tokens where either fires"
        dots = np.einsum("ta,tb,tab->ab", f_a, f_b, either)
        norms = np.sqrt(np.einsum("ta,tab->ab", f_a**2, either) * np.einsum("tb,tab->ab", f_b**2, either))
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = dots / norms
        np.testing.assert_allclose(result.activation[level].numpy(), expected, rtol=1e-5, atol=1e-6)
        W_a, W_b = a.W_dec.detach().numpy(), b.W_dec.detach().numpy()
        decoder = (W_a @ W_b.T) / np.outer(np.linalg.norm(W_a, axis=1), np.linalg.norm(W_b, axis=1))
        np.testing.assert_allclose(result.decoder[level].numpy(), decoder, rtol=1e-5, atol=1e-6)


def test_edges_link_each_child_to_its_parent(split):
    _, _, result = split
    edges = S.split_edges(result)
    assert list(edges.columns) == S.EDGE_COLUMNS
    alive_small = 11  # sparse_sae kills its last feature, and the dead one's children never fire
    assert len(edges) == 2 * alive_small + 4 * alive_small
    first = edges[edges.size_from == 12]
    assert (first.feature_to % 12 == first.feature_from).all()
    np.testing.assert_allclose(first.activation_cosine, 1.0, atol=1e-5)
    np.testing.assert_allclose(first.decoder_cosine, 1.0, atol=1e-5)
    assert len(S.split_edges(result, threshold=1.01)) == 0
    assert len(S.split_edges(result, link_by="decoder")) == 2 * 12 + 4 * 12  # decoders exist for dead ones too


def test_feature_family_spans_three_sizes(split):
    _, _, result = split
    edges = S.split_edges(result)
    tree = S.feature_family(edges, 12, 3)
    nodes = sorted(map(tuple, tree[["size", "feature"]].astype(int).values.tolist()))
    assert nodes == [(12, 3), (24, 3), (24, 15), (48, 3), (48, 15), (48, 27), (48, 39)]
    assert tree["depth"].tolist() == [0, 1, 1, 2, 2, 2, 2]
    assert tree["parent_size"].isna().tolist() == [True] + [False] * 6
    assert tree["is_query"].tolist() == [True] + [False] * 6
    # asked from a leaf: the same tree, the leaf marked
    from_leaf = S.feature_family(edges, 48, 39)
    pd.testing.assert_frame_equal(from_leaf.drop(columns="is_query"), tree.drop(columns="is_query"))
    assert from_leaf.loc[from_leaf.is_query, "feature"].tolist() == [39]
    roots = S.families(edges, min_sizes=3)
    assert len(roots) == 11 and (roots["n_descendants"] == 6).all()


def test_sizes_must_differ(split):
    acts, saes, _ = split
    with pytest.raises(ValueError, match="different sizes"):
        S.by_size([saes[0], saes[0]])


def test_shared_pass_gives_split_similarities(split, tiny_lm):
    """Splitting from the shared pass's pair sums equals `split_similarities` over the same windows."""
    from saekit.activations.reading import open_reading
    from saekit.analysis.harvest import PairJob, Reader, shared_pass

    _, saes, expected = split
    windows = corpus(tiny_lm)
    readers = {f"s{sae.d_sae}": Reader("m", sae) for sae in reversed(saes)}  # encoded largest first
    pairs = {f"p{a.d_sae}": PairJob(f"s{a.d_sae}", f"s{b.d_sae}", len(windows)) for a, b in zip(saes, saes[1:])}
    shared = shared_pass({"m": open_reading(tiny_lm, windows, saes[0])}, readers, pairs=pairs, batch_size=2,
                         progress=False)
    result = S.splitting_from_sums(saes, [shared.pairs[f"p{a.d_sae}"].sums for a in saes[:-1]])
    assert result.sizes == expected.sizes
    for got, want in zip(result.activation + result.decoder, expected.activation + expected.decoder):
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
