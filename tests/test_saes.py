import numpy as np
import pytest
import torch

import saekit
from saekit.saes import LossContext, SAELoss, architectures

from helpers import ARCHS, make_sae

D_IN, D_SAE = 16, 48


def make(arch, **kw):
    return make_sae(arch, D_IN, D_SAE, **kw)


def reference_encode(sae, x):
    """The architectures' equations written out independently of the classes."""
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    if sae.arch == "relu":
        return torch.relu(pre)
    if sae.arch == "topk":
        kth = pre.sort(dim=-1, descending=True).values[:, sae.k - 1 : sae.k]
        return torch.where(pre >= kth, torch.relu(pre), torch.zeros_like(pre))
    if sae.arch in ("batchtopk", "jumprelu"):
        return torch.where(pre > sae.threshold, torch.relu(pre), torch.zeros_like(pre))
    raise AssertionError(sae.arch)


def test_all_architectures_registered():
    assert set(ARCHS) <= set(architectures())


def test_unknown_architecture_lists_choices():
    with pytest.raises(ValueError, match="choose one of"):
        saekit.SAE.create("gated-ish", D_IN, D_SAE)


@pytest.mark.parametrize("arch", ARCHS)
def test_encode_decode_match_equations(arch):
    sae = make(arch)
    x = torch.randn(64, D_IN)
    with torch.no_grad():
        f = sae.encode(x)
        assert f.shape == (64, D_SAE)
        torch.testing.assert_close(f, reference_encode(sae, x))
        torch.testing.assert_close(sae.decode(f), f @ sae.W_dec + sae.b_dec)
        torch.testing.assert_close(sae(x), sae.decode(f))
        assert (f >= 0).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_init_unit_decoder_and_tied_encoder(arch):
    sae = saekit.SAE.create(arch, D_IN, D_SAE, seed=3)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE))
    torch.testing.assert_close(sae.W_enc, sae.W_dec.T)
    again = saekit.SAE.create(arch, D_IN, D_SAE, seed=3)
    assert torch.equal(sae.W_dec, again.W_dec)


@pytest.mark.parametrize("arch", ARCHS)
def test_scale_activations_is_exact_refolding(arch):
    """After scale_activations(c), the SAE on c·x gives c·(features) and c·(reconstruction)."""
    sae = make(arch)
    x = torch.randn(32, D_IN)
    with torch.no_grad():
        f, x_hat = sae.encode(x), sae(x)
        sae.scale_activations(3.0)
        torch.testing.assert_close(sae.encode(3.0 * x), 3.0 * f)
        torch.testing.assert_close(sae(3.0 * x), 3.0 * x_hat)


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_parts_and_gradients(arch):
    sae = make(arch)
    x = torch.randn(32, D_IN)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[:10] = True
    out = sae.loss(x, LossContext(sparsity_coefficient=0.1, dead=dead, aux_coefficient=1 / 32, aux_k=4))
    mse = (out.x_hat - x).pow(2).sum(-1).mean()
    torch.testing.assert_close(out.mse, mse)
    torch.testing.assert_close(out.total, out.mse + 0.1 * out.sparsity + out.auxiliary / 32)
    out.total.backward()
    assert sae.W_enc.grad is not None and torch.isfinite(sae.W_enc.grad).all()
    if arch == "relu":
        torch.testing.assert_close(out.sparsity, out.f.sum(-1).mean())
    if arch == "jumprelu":
        torch.testing.assert_close(out.sparsity, (out.f > 0).float().sum(-1).mean())
        assert sae.threshold.grad is not None
    if arch in ("topk", "batchtopk"):
        assert out.auxiliary > 0


def test_relu_l1_weighted_by_decoder_norm():
    sae = make("relu")
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, D_SAE)[:, None])
    x = torch.randn(8, D_IN)
    out = sae.loss(x, LossContext(sparsity_coefficient=1.0, l1_weighted_by_decoder_norm=True))
    expected = (out.f * sae.W_dec.norm(dim=1)).sum(-1).mean()
    torch.testing.assert_close(out.sparsity, expected)


def test_topk_keeps_k_and_auxk_is_zero_without_dead():
    sae = make("topk")
    x = torch.randn(20, D_IN)
    assert ((sae.encode(x) > 0).sum(-1) <= sae.k).all()
    out = sae.loss(x, LossContext(dead=torch.zeros(D_SAE, dtype=torch.bool), aux_coefficient=1.0, aux_k=4))
    assert out.auxiliary == 0


@pytest.mark.parametrize("density", [0.0, 0.0005, 0.003, 0.05, 0.5])
@pytest.mark.parametrize("rows,width,start", [(512, 4096, 0), (64, 1000, 0), (32, 12, 2), (33, 12, 1), (7, 5, 0)])
def test_mask_entries_are_numpys_nonzero(density, rows, width, start):
    """The word-at-a-time scan of a sparse mask, its fallbacks (dense, odd sizes, offsets) against numpy."""
    from saekit.saes.sparse import mask_entries

    g = torch.Generator().manual_seed(rows + width)
    mask = (torch.rand(rows + start, width, generator=g) < density)[start:]  # start: a view at a storage offset
    r, c = mask_entries(mask)
    want_r, want_c = np.nonzero(mask.numpy())
    assert np.array_equal(r.numpy(), want_r) and np.array_equal(c.numpy(), want_c)
    assert r.dtype == c.dtype == torch.int64


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("density", [0.0, 0.001, 0.05, 0.5])
@pytest.mark.parametrize("rows,width,start", [(512, 4096, 0), (33, 12, 1), (7, 5, 0)])
def test_positive_codes_are_numpys_nonzero(dtype, density, rows, width, start):
    """The positive entries of a pre-activation block (with zeros, negative zeros and NaNs among them) against
    numpy, and the block ReLU'd in place."""
    from saekit.saes.sparse import positive_codes

    g = torch.Generator().manual_seed(rows + width)
    pre = torch.where(torch.rand(rows + start, width, generator=g) < density, 1.0, -1.0)
    pre *= torch.rand(pre.shape, generator=g)
    pre.view(-1)[::97] = -0.0
    pre.view(-1)[::101] = 0.0
    pre.view(-1)[::103] = float("nan")
    pre = pre.to(dtype)[start:]  # start: a view at a storage offset
    want = np.nonzero(pre.float().numpy() > 0)
    relu = torch.relu(pre)
    codes = positive_codes(pre)
    assert np.array_equal(codes.rows.numpy(), want[0]) and np.array_equal(codes.cols.numpy(), want[1])
    assert codes.n_rows == pre.shape[0]
    torch.testing.assert_close(pre, relu, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width,k", [(1024, 32), (4096, 32), (16384, 32), (1024, 3), (1000, 8), (64, 32), (512, 32)])
def test_grouped_topk_selects_exactly_the_k_largest(dtype, width, k):
    from saekit.saes.topk import grouped_topk

    g = torch.Generator().manual_seed(width + k)
    values = torch.randn(64, width, generator=g).to(dtype)
    values[:8] = torch.randint(-3, 4, (8, width), generator=g).to(dtype)  # rows full of ties
    values[8] = 1.0
    top, idx = grouped_topk(values, k)
    assert torch.equal(values.gather(1, idx), top)
    assert (idx.sort(-1).values.diff(dim=-1) > 0).all()  # k distinct entries per row
    assert torch.equal(top.sort(-1).values, values.topk(k, dim=-1).values.sort(-1).values)


def test_auxk_matches_hand_computation():
    sae = make("topk")
    x = torch.randn(10, D_IN)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[[1, 5, 7, 9]] = True
    out = sae.loss(x, LossContext(dead=dead, aux_coefficient=1.0, aux_k=2))
    with torch.no_grad():
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        e = x - out.x_hat
        acts = torch.zeros_like(pre)
        for t in range(10):
            cand = sorted(((pre[t, i].item(), i) for i in (1, 5, 7, 9)), reverse=True)[:2]
            for v, i in cand:
                acts[t, i] = max(v, 0.0)
        e_hat = acts @ sae.W_dec
        expected = ((e_hat - e) ** 2).sum(-1).mean() / ((e - e.mean(0)) ** 2).sum(-1).mean()
    torch.testing.assert_close(out.auxiliary, expected)


def test_batchtopk_training_uses_k_per_token_on_average_and_learns_threshold():
    sae = make("batchtopk")
    x = torch.randn(40, D_IN)
    f = sae.train_activate(sae.pre_acts(x))
    assert (f > 0).sum().item() <= sae.k * 40
    assert (f > 0).sum(-1).float().mean().item() == pytest.approx(sae.k, abs=0.5)
    sae.threshold.zero_()
    sae.after_step(SAELoss(*[torch.zeros(())] * 4, x_hat=torch.zeros(40, D_IN), f=f))
    assert sae.threshold.item() == pytest.approx(f[f > 0].min().item())


def test_jumprelu_straight_through_gradients():
    """∂f/∂θ = −(θ/ε)·1[|pre − θ| < ε/2] and ∂L0/∂θ = −(1/ε)·1[...], summed over the batch."""
    sae = make("jumprelu", bandwidth=0.5)
    x = torch.randn(16, D_IN)
    pre = sae.pre_acts(x).detach()
    f = sae.train_activate(pre)
    f.sum().backward()
    near = ((pre - sae.threshold).abs() < 0.25).float()
    torch.testing.assert_close(sae.threshold.grad, -(sae.threshold.detach() / 0.5) * near.sum(0))
    sae.threshold.grad = None
    sae.sparsity_loss(f, pre, LossContext()).backward()
    torch.testing.assert_close(sae.threshold.grad, -(1 / 0.5) * near.sum(0) / 16)


def test_parallel_gradient_removed_and_decoder_renormalised():
    sae = make("relu")
    sae.W_dec.grad = torch.randn_like(sae.W_dec)
    sae.remove_parallel_decoder_grad()
    dots = (sae.W_dec.grad * sae.W_dec).sum(1)
    torch.testing.assert_close(dots, torch.zeros(D_SAE), atol=1e-5, rtol=0)
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.normalize_decoder()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE))


@pytest.mark.parametrize("bad", [dict(d_in=0), dict(k=0), dict(k=10_000)])
def test_bad_sizes_rejected(bad):
    args = {"d_in": D_IN, "n_features": D_SAE, **bad}
    with pytest.raises(ValueError):
        saekit.SAE.create("topk", **args)


@pytest.mark.parametrize("arch,weighted", [(a, False) for a in ARCHS] + [("relu", True)])
def test_sparse_path_matches_dense_reference(arch, weighted):
    """Fused dense and sparse paths: the reference's loss parts, activations and gradients, to tolerance."""
    x = torch.randn(64, D_IN) * 2
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::3] = True
    ctx = LossContext(sparsity_coefficient=0.3, l1_weighted_by_decoder_norm=weighted, dead=dead,
                      aux_coefficient=0.5, aux_k=4)
    grads, outs = [], []
    for path in ("reference", "dense", "sparse"):
        torch.manual_seed(0)
        sae = make(arch, bandwidth=0.2) if arch == "jumprelu" else make(arch)
        with torch.no_grad():
            sae.W_dec.mul_(torch.linspace(0.5, 1.5, D_SAE)[:, None])
        out = sae.reference_loss(x, ctx) if path == "reference" else sae.loss(x, ctx, sparse=path == "sparse")
        out.total.backward()
        outs.append(out)
        grads.append({n: p.grad.clone() for n, p in sae.named_parameters()})
    assert outs[2].f is None and outs[2].codes is not None
    for out, grad in zip(outs[1:], grads[1:]):
        for part in ("total", "mse", "sparsity", "auxiliary", "x_hat"):
            torch.testing.assert_close(getattr(out, part), getattr(outs[0], part), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.fired(D_SAE), outs[0].fired(D_SAE))
        torch.testing.assert_close(out.l0(), outs[0].l0())
        for name in grads[0]:
            torch.testing.assert_close(grad[name], grads[0][name], rtol=1e-4, atol=1e-5, msg=name)
    if arch == "jumprelu":
        assert grads[2]["threshold"].abs().sum() > 0


def _cosine(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-30))


@pytest.mark.parametrize("path", ["sparse", "dense"])
@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_products_follow_the_fp32_reference(arch, path):
    """With bf16 products (fp32 weights, sums and loss), loss parts and gradients stay within bf16's rounding
    (relu's dense path is the fused function; the others' run the reference under autocast)."""
    x = torch.randn(256, D_IN) * 2
    ctx = LossContext(sparsity_coefficient=0.3, l1_weighted_by_decoder_norm=arch == "relu")
    outs, grads = [], []
    for compute in (None, torch.bfloat16):
        torch.manual_seed(0)
        sae = make(arch, bandwidth=0.2) if arch == "jumprelu" else make(arch)
        out = (sae.reference_loss(x, ctx) if compute is None
               else sae.loss(x, ctx._replace(compute_dtype=compute), sparse=path == "sparse"))
        out.total.backward()
        outs.append(out)
        grads.append({n: p.grad.clone() for n, p in sae.named_parameters()})
    ref, low = outs
    for part in ("mse", "sparsity"):
        torch.testing.assert_close(getattr(low, part), getattr(ref, part), rtol=3e-2, atol=1e-3)
    assert low.x_hat.dtype == torch.float32
    if path == "dense":
        assert low.f.dtype == torch.bfloat16  # the products did run in bf16
        assert torch.is_autocast_enabled("cpu") is False
    assert abs(float(low.l0()) - float(ref.l0())) <= 0.05 * float(ref.l0()) + 0.1
    for name, g in grads[0].items():
        if g.abs().sum() > 0:
            assert _cosine(grads[1][name], g) > 0.99, name
            assert grads[1][name].dtype == torch.float32


@pytest.mark.parametrize("d_sae", [7, 4096, 40_000, 2**31 + 5])
def test_group_by_feature_matches_a_stable_argsort(d_sae):
    """Entries grouped by feature in a stable order, whatever integer width the sort narrows them to."""
    from saekit.saes.sparse import group_by_feature

    g = torch.Generator().manual_seed(d_sae % 1000)
    cols = torch.randint(0, 50, (3000,), generator=g) * (d_sae // 50) + torch.randint(0, 2, (3000,), generator=g)
    cols[0] = d_sae - 1
    groups = group_by_feature(cols)
    order = np.argsort(cols.numpy(), kind="stable")
    assert np.array_equal(groups.order.numpy(), order)
    features, counts = np.unique(cols.numpy(), return_counts=True)
    assert groups.features.dtype == torch.int64 and np.array_equal(groups.features.numpy(), features)
    assert np.array_equal(groups.offsets.numpy(), np.cumsum(counts) - counts)
    assert np.array_equal(groups.features[groups.of_entry].numpy(), cols.numpy())
