"""Decoder refit: the least-squares decoder for fixed codes, checked against numpy's own least squares, for every
architecture; the codes never change; silent features keep their rows; the trainer's refit resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import saekit
from saekit.training.decoder_refit import refit_decoder

from helpers import ARCHS, make_sae


def _inputs(d_in: int = 16, n: int = 600, seed: int = 0) -> torch.Tensor:
    """Inputs with structure (a few directions, sparse, plus noise), so codes are sparse and informative."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(24, d_in, generator=g)
    coef = torch.rand(n, 24, generator=g) * (torch.rand(n, 24, generator=g) < 0.15)
    return coef @ dirs + 0.05 * torch.randn(n, d_in, generator=g)


def _batches(x: torch.Tensor, size: int = 64):
    return iter(x.split(size))


@pytest.mark.parametrize("arch", ARCHS)
def test_refit_is_the_least_squares_decoder_and_keeps_the_codes(arch):
    sae = make_sae(arch)
    with torch.no_grad():
        sae.b_enc[:6] = -1e3  # six features that never fire: their decoder rows must stay
    x = _inputs()
    codes = sae.encode(x).detach()
    silent_rows = sae.W_dec[:6].detach().clone()
    fired = (codes != 0).any(0).numpy()

    result = refit_decoder(sae, _batches(x), tokens=len(x), ridge=0.0)

    design = np.concatenate([codes.numpy()[:, fired], np.ones((len(x), 1))], axis=1).astype(np.float64)
    expected, *_ = np.linalg.lstsq(design, x.numpy().astype(np.float64), rcond=None)
    np.testing.assert_allclose(sae.W_dec.detach().numpy()[fired], expected[:-1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sae.b_dec.detach().numpy(), expected[-1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sae.encode(x), codes, rtol=1e-5, atol=1e-5)  # the same features, as strong
    torch.testing.assert_close(sae.W_dec[:6], silent_rows)
    assert result.tokens == len(x) and result.features == int(fired.sum())

    mse_after = (x - sae.decode(sae.encode(x))).pow(2).mean().item()
    assert result.mse_after == pytest.approx(mse_after, rel=1e-4)
    residual = x.numpy() - design @ expected
    assert result.mse_after == pytest.approx(float((residual**2).mean()), rel=1e-4)
    assert result.mse_after < result.mse_before


def test_the_ridge_keeps_rarely_firing_features_near_their_trained_rows():
    """With the default ridge, a feature that fires on a single token stays near its trained direction (exact least
    squares would fit that one token), and the reported MSE is still the new decoder's own."""
    x = _inputs()
    sae = make_sae("relu")
    with torch.no_grad():
        sae.b_enc[0] = -1e3
        sae.W_enc[:, 0] = x[0] - sae.b_dec  # feature 0 fires on x[0] (and on little else)
        sae.b_enc[0] = -0.9 * (x[0] - sae.b_dec).pow(2).sum()
    codes = sae.encode(x)
    assert 1 <= int((codes[:, 0] > 0).sum()) <= 3
    trained = sae.W_dec[0].detach().clone()
    exact = make_sae("relu")
    exact.load_state_dict(sae.state_dict())
    refit_decoder(exact, _batches(x), len(x), ridge=0.0)
    result = refit_decoder(sae, _batches(x), len(x))
    moved, moved_exact = (sae.W_dec[0] - trained).norm(), (exact.W_dec[0] - trained).norm()
    assert moved < 0.5 * moved_exact
    mse = (x - sae.decode(sae.encode(x))).pow(2).mean().item()
    assert result.mse_after == pytest.approx(mse, rel=1e-4)


def test_refit_reads_only_the_tokens_asked_for_and_tolerates_a_short_stream():
    x = _inputs(n=300)
    sae = make_sae("relu")
    stream = _batches(x, 64)
    assert refit_decoder(sae, stream, tokens=100).tokens == 100  # cuts the second batch
    assert next(stream).shape[0] == 64  # the stream is left after the batches it read
    assert refit_decoder(make_sae("relu"), _batches(x[:50]), tokens=100).tokens == 50
    untouched = make_sae("relu")
    before = untouched.W_dec.detach().clone()
    assert refit_decoder(untouched, iter([]), tokens=100).tokens == 0
    torch.testing.assert_close(untouched.W_dec, before)


def _train(x: torch.Tensor, folder, resume=None, total: int = 1024) -> saekit.TrainResult:
    sae = saekit.SAE.create("relu", 16, 48, seed=3)
    cfg = saekit.TrainConfig.april_2024(total_tokens=total, lr=3e-3, l1_coefficient=2.0, decoder_refit_tokens=512,
                                        checkpoint_dir=str(folder), checkpoint_every_tokens=512)
    return saekit.train(sae, _batches(x), cfg, resume=resume, progress=False)


def test_trainer_refits_after_training_and_a_resumed_run_ends_the_same(tmp_path):
    x = _inputs(n=1024 + 512)
    full = _train(x, tmp_path / "full")
    refit = full.summary["decoder_refit"]
    assert refit["tokens"] == 512 and refit["mse_after"] < refit["mse_before"]
    plain = saekit.train(saekit.SAE.create("relu", 16, 48, seed=3), _batches(x),
                         saekit.TrainConfig.april_2024(total_tokens=1024, lr=3e-3, l1_coefficient=2.0), progress=False)
    torch.testing.assert_close(plain.sae.W_enc, full.sae.W_enc)  # the refit leaves the encoder's weights
    assert not torch.allclose(plain.sae.W_dec, full.sae.W_dec)

    # a run killed after its last training step (checkpoint written, refit not yet done) ends identically
    _train(x, tmp_path / "part", total=1024)
    resumed = _train(x, tmp_path / "again", resume=tmp_path / "part")
    for name, value in full.sae.state_dict().items():
        torch.testing.assert_close(resumed.sae.state_dict()[name], value, rtol=0, atol=0)
