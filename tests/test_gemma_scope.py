"""Gemma Scope params.npz loads as a JumpReLU SAE with Gemma Scope's outputs."""

import numpy as np
import pytest
import torch

import saekit
from saekit.formats import SAEFormatError, detect_format

D, F = 12, 36


def write_params(folder, seed=0, dtype=np.float32, **changes):
    """A Gemma Scope SAE folder: params.npz with its five arrays, as the release ships them."""
    rng = np.random.default_rng(seed)
    params = {"W_enc": rng.normal(size=(D, F)) / D**0.5, "W_dec": rng.normal(size=(F, D)) / F**0.5,
              "b_enc": rng.normal(size=F) * 0.3, "b_dec": rng.normal(size=D) * 0.5,
              "threshold": rng.uniform(0, 0.6, size=F)}
    params = {k: v.astype(dtype) for k, v in params.items()}
    params.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "params.npz", **params)
    return params


def reference(p, x):
    """Gemma Scope's JumpReLU from the raw arrays: no pre-encoder bias, ReLU(pre) where pre > θ."""
    pre = x @ p["W_enc"] + p["b_enc"]
    f = (pre > p["threshold"]) * np.maximum(pre, 0)
    return f, f @ p["W_dec"] + p["b_dec"]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_params_npz_matches_gemma_scope(tmp_path, dtype):
    p = write_params(tmp_path / "layer_0/width_16k/average_l0_105", seed=4, dtype=dtype)
    folder = tmp_path / "layer_0/width_16k/average_l0_105"
    assert detect_format(folder) == "gemma_scope"
    sae = saekit.load_sae(folder, dtype=torch.float64)
    assert (sae.arch, sae.d_in, sae.d_sae, sae.apply_b_dec_to_input) == ("jumprelu", D, F, False)
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    x = np.random.default_rng(1).normal(size=(30, D)) * 2
    f_ref, x_hat_ref = reference(p64, x)
    assert 0 < (f_ref > 0).sum() < f_ref.size
    with torch.no_grad():
        np.testing.assert_allclose(sae.encode(torch.from_numpy(x)).numpy(), f_ref, atol=1e-10)
        np.testing.assert_allclose(sae.decode(torch.from_numpy(f_ref)).numpy(), x_hat_ref, atol=1e-10)
        np.testing.assert_allclose(sae(torch.from_numpy(x)).numpy(), x_hat_ref, atol=1e-10)
    assert saekit.load_sae(folder / "params.npz").dtype == torch.from_numpy(p["W_enc"]).dtype  # the file itself


@pytest.mark.parametrize("change,message", [
    ({"threshold": np.zeros(F + 1, np.float32)}, r"threshold has shape \(37,\)"),
    ({"b_enc": np.zeros(F, np.int32)}, r"\['b_enc'\] are not floating-point"),
    ({"W_enc": np.array([{"a": 1}], dtype=object)}, "not a readable .npz"),
])
def test_inconsistent_arrays_are_refused(tmp_path, change, message):
    write_params(tmp_path, **change)
    with pytest.raises(SAEFormatError, match=message):
        saekit.load_sae(tmp_path)


def test_missing_arrays_and_garbage_are_refused(tmp_path):
    np.savez(tmp_path / "params.npz", W_enc=np.zeros((D, F), np.float32))
    with pytest.raises(SAEFormatError, match=r"\['W_dec', 'b_enc', 'b_dec', 'threshold'\] are missing"):
        saekit.load_sae(tmp_path)
    (tmp_path / "params.npz").write_bytes(b"garbage")
    with pytest.raises(SAEFormatError, match="not a readable .npz"):
        saekit.load_sae(tmp_path)
