import pandas as pd
import pytest
import torch

import saekit
from saekit.synthetic import SparseDictionary, matched_fraction

from helpers import ARCHS, with_k

TRUTH = SparseDictionary(d_in=32, n_features=64, p_active=0.03)


def run(arch, n_batches=300, batch=1024, cfg=None, **kw):
    sae = saekit.SAE.create(arch, 32, 128, seed=0, **with_k(arch, 4))
    cfg = cfg or saekit.TrainConfig(total_tokens=batch * n_batches, lr=3e-3, l1_coefficient=0.5, **kw)
    return saekit.train(sae, TRUTH.batches(batch, n_batches), cfg, progress=False)


@pytest.mark.parametrize(("arch", "recipe", "max_fvu"), [("relu", dict(lr=1e-2, l1_coefficient=3.0), 0.25),
                                                          ("topk", dict(lr=3e-3), 0.15)])
def test_recovers_known_sparse_dictionary(arch, recipe, max_fvu):
    """More true directions (64) than dimensions (32), each active on 3 % of tokens: ≥ 90 % found at cos ≥ 0.9,
    from an initialisation that matches none (seed 1: seed 0 draws the true directions themselves)."""
    sae = saekit.SAE.create(arch, 32, 128, seed=1, **with_k(arch, 4))
    assert matched_fraction(sae.W_dec.detach(), TRUTH.directions, 0.9) == 0.0
    result = saekit.train(sae, TRUTH.batches(1024, 300), saekit.TrainConfig(total_tokens=1024 * 300, **recipe),
                          progress=False)
    assert matched_fraction(result.sae.W_dec.detach(), TRUTH.directions, 0.9) >= 0.9
    assert result.history["fvu"].iloc[-1] < max_fvu


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_learns_and_logs(arch):
    result = run(arch, n_batches=60)
    h = result.history
    assert isinstance(h, pd.DataFrame)
    assert {"step", "tokens", "lr", "loss", "mse", "fvu", "sparsity", "auxiliary", "l0", "dead_fraction",
            "dense_fraction"} <= set(h.columns)
    assert h["mse"].iloc[-1] < 0.5 * h["mse"].iloc[0]
    assert h["tokens"].iloc[-1] == 60 * 1024
    assert result.sae.provenance.training["tokens"] == 60 * 1024
    if arch == "topk":
        assert (h["l0"] <= 4).all()


def test_returned_sae_works_on_unscaled_inputs():
    """Training normalises inputs to E‖x‖ = √d_in and folds the scale back: 50× the data, 50× the output."""
    cfg = saekit.TrainConfig(total_tokens=1024 * 100, lr=3e-3)
    small = saekit.SAE.create("topk", 32, 128, k=4, seed=0)
    saekit.train(small, TRUTH.batches(1024, 100), cfg, progress=False)
    big = saekit.SAE.create("topk", 32, 128, k=4, seed=0)
    result = saekit.train(big, (x * 50.0 for x in TRUTH.batches(1024, 100)), cfg, progress=False)
    assert result.summary["activation_scale"] == pytest.approx(32**0.5 / (50 * 1.19), rel=0.25)
    x = TRUTH.sample(2048, torch.Generator().manual_seed(9))
    with torch.no_grad():
        fvu = lambda sae, x: ((sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()  # noqa: E731
        assert fvu(big, 50 * x) == pytest.approx(fvu(small, x), abs=0.01)
        assert fvu(big, 50 * x) < 0.3
        torch.testing.assert_close(big.encode(50 * x).sum(-1), 50 * small.encode(x).sum(-1), rtol=0.02, atol=0.5)


def test_unit_decoder_norm_kept_and_free_norm_preset_differs():
    unit = run("relu", n_batches=20).sae
    torch.testing.assert_close(unit.W_dec.norm(dim=1), torch.ones(128))
    cfg = saekit.TrainConfig.april_2024(total_tokens=20 * 1024, lr=3e-3, l1_coefficient=0.5)
    free = run("relu", cfg=cfg).sae
    assert not torch.allclose(free.W_dec.norm(dim=1), torch.ones(128), atol=1e-3)


def test_b_dec_starts_at_geometric_median():
    sae = saekit.SAE.create("relu", 32, 128, seed=0)
    first = next(TRUTH.batches(1024, 1))
    cfg = saekit.TrainConfig(total_tokens=1024, normalize_activations=False, lr=1e-12)
    saekit.train(sae, [first], cfg, progress=False)
    d = lambda y: (first - y).norm(dim=1).sum()  # noqa: E731
    gm = sae.b_dec.detach()
    for _ in range(5):
        assert d(gm) <= d(gm + 0.05 * torch.randn(32)) + 1e-3


def test_batches_of_wrong_shape_or_dtype_are_rejected():
    sae = saekit.SAE.create("relu", 32, 64)
    with pytest.raises(ValueError, match=r"\[batch, d_in=32\]"):
        saekit.train(sae, [torch.zeros(8, 31)], saekit.TrainConfig(total_tokens=8), progress=False)
    with pytest.raises(TypeError, match="create the SAE with dtype"):
        saekit.train(sae, [torch.zeros(8, 32, dtype=torch.float64)], saekit.TrainConfig(total_tokens=8),
                     progress=False)


def test_running_out_of_batches_stops_cleanly():
    result = run("relu", n_batches=5, cfg=saekit.TrainConfig(total_tokens=10 * 1024))
    assert result.summary["tokens"] == 5 * 1024


def with_dead_features(sae, n=20):
    """Features 0..n-1 can never fire: their encoder bias is far below any pre-activation."""
    with torch.no_grad():
        sae.b_enc[:n] = -1e3
    return sae


def _interrupting(batches, after):
    for i, x in enumerate(batches):
        if i == after:
            raise KeyboardInterrupt
        yield x


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path, arch):
    """Resampling, AuxK, LR/λ schedules, Adam state and RNG all survive a checkpoint exactly."""
    n, batch = 80, 512
    extra = with_k(arch, 4)

    def cfg(folder):
        return saekit.TrainConfig.towards_monosemanticity(
            total_tokens=n * batch, lr=3e-3, l1_coefficient=0.5, dead_window_tokens=2048,
            checkpoint_dir=str(folder), checkpoint_every_tokens=20 * batch)

    whole = with_dead_features(saekit.SAE.create(arch, 32, 128, seed=0, **extra))
    full = saekit.train(whole, TRUTH.batches(batch, n), cfg(tmp_path / "a"), progress=False)
    assert full.summary["resampled_features"] >= 20

    part = with_dead_features(saekit.SAE.create(arch, 32, 128, seed=0, **extra))
    with pytest.raises(KeyboardInterrupt):
        saekit.train(part, _interrupting(TRUTH.batches(batch, n), 12), cfg(tmp_path / "b"), progress=False)
    assert saekit.load_sae(tmp_path / "b" / "tokens_000000006144").d_sae == 128  # a usable SAE folder
    resumed = saekit.SAE.create(arch, 32, 128, seed=123, **extra)
    out = saekit.train(resumed, TRUTH.batches(batch, n), cfg(tmp_path / "b"), resume=tmp_path / "b",
                       progress=False)
    for name, p in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], p, rtol=0, atol=0, msg=name)
    pd.testing.assert_frame_equal(out.history, full.history)


def test_resume_from_nothing_says_what_to_pass(tmp_path):
    sae = saekit.SAE.create("relu", 32, 64)
    with pytest.raises(FileNotFoundError, match="checkpoint_dir"):
        saekit.train(sae, [], saekit.TrainConfig(total_tokens=8), resume=tmp_path, progress=False)


def test_checkpoint_holds_loadable_sae_in_input_units(tmp_path):
    sae = saekit.SAE.create("relu", 32, 128, seed=0)
    batches = [x * 20 for x in TRUTH.batches(1024, 30)]
    saekit.train(sae, batches, saekit.TrainConfig(total_tokens=30 * 1024, lr=3e-3, l1_coefficient=0.5,
                                                  checkpoint_dir=str(tmp_path)), progress=False)
    final = saekit.load_sae(sorted(tmp_path.glob("tokens_*"))[-1])
    x = batches[0]
    with torch.no_grad():
        torch.testing.assert_close(final(x), sae(x))


def test_auxk_revives_dead_features_in_a_short_run_with_the_default_window():
    """With a window as long as the run (the old default of 1M tokens) AuxK never saw a dead feature."""
    from saekit.synthetic import SparseDictionary

    sae = saekit.SAE.create("topk", 16, 48, k=4, seed=0)
    with torch.no_grad():
        sae.b_enc[:12] = -3.0
    batches = list(SparseDictionary(d_in=16, n_features=40, p_active=0.08).batches(256, 80, seed=1))
    run = saekit.train(sae, batches, saekit.TrainConfig(total_tokens=256 * 80, lr=1e-3), progress=False)
    assert run.history["auxiliary"].max() > 0
