import torch

import saekit
from saekit.synthetic import SparseDictionary
from saekit.training.resampling import reconstruction_errors, resample_dead

from helpers import make_sae


def test_resample_dead_follows_the_paper():
    sae = make_sae("relu", d_in=8, d_sae=24)
    opt = torch.optim.Adam(sae.parameters())
    sae.loss(torch.randn(16, 8), saekit.saes.LossContext()).total.backward()
    opt.step()
    before = {k: v.clone() for k, v in opt.state[sae.W_dec].items()}
    dead = torch.zeros(24, dtype=torch.bool)
    dead[[2, 7, 11]] = True
    pool = torch.randn(500, 8)
    pool[123] *= 100  # by far the worst reconstructed input: p ∝ error² makes it almost certain
    live_enc_norm = sae.W_enc[:, ~dead].norm(dim=0).mean()
    ids = resample_dead(sae, opt, pool, dead, torch.Generator().manual_seed(0))
    assert ids.tolist() == [2, 7, 11]
    expected_dir = pool[123] / pool[123].norm()
    with torch.no_grad():
        assert any(torch.allclose(sae.W_dec[i], expected_dir) for i in ids)
        torch.testing.assert_close(sae.W_dec[ids].norm(dim=1), torch.ones(3))
        torch.testing.assert_close(sae.W_enc[:, ids].T, sae.W_dec[ids] * 0.2 * live_enc_norm)
        assert (sae.b_enc[ids] == 0).all()
    state = opt.state[sae.W_dec]
    assert (state["exp_avg"][ids] == 0).all() and (state["exp_avg_sq"][ids] == 0).all()
    keep = ~dead
    assert torch.equal(state["exp_avg"][keep], before["exp_avg"][keep])
    assert (opt.state[sae.W_enc]["exp_avg"][:, ids] == 0).all()


def test_reconstruction_errors_per_input():
    sae = make_sae("topk", d_in=8, d_sae=24)
    x = torch.randn(10, 8)
    with torch.no_grad():
        torch.testing.assert_close(reconstruction_errors(sae, x, chunk=3), ((sae(x) - x) ** 2).sum(-1))


def test_resampling_revives_dead_features():
    truth = SparseDictionary(d_in=32, n_features=64, p_active=0.03)
    results = {}
    for resample in (False, True):
        sae = saekit.SAE.create("relu", 32, 128, seed=0)
        with torch.no_grad():
            sae.b_enc[:30] = -1e3  # 30 features that cannot fire
        cfg = saekit.TrainConfig(total_tokens=150 * 1024, lr=3e-3, l1_coefficient=0.5, dead_window_tokens=10_240,
                                 resample_at=(0.25, 0.5) if resample else ())
        saekit.train(sae, truth.batches(1024, 150), cfg, progress=False)
        x = truth.sample(20_000, torch.Generator().manual_seed(3))
        with torch.no_grad():
            results[resample] = (sae.encode(x)[:, :30] > 0).any(0).float().mean().item()
    assert results[False] == 0.0
    assert results[True] >= 0.9
