"""load_sae detects the format, takes one named by the caller, and says what it looked for."""

import numpy as np
import pytest
import torch

import saekit
from saekit.formats import SAEFormatError, detect_format, formats

from helpers import make_sae


def test_every_format_can_be_named():
    assert sorted(formats()) == ["dictionary_learning", "gemma_scope", "saekit", "saelens", "sparsify"]


def test_a_folder_of_nothing_says_what_each_format_needs(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SAEFormatError) as e:
        saekit.load_sae(tmp_path)
    for needs in ("params.npz", "ae.pt", "config.json", "sae.safetensors", "sae_weights.safetensors"):
        assert needs in str(e.value)


def test_named_format_overrides_detection(tmp_path):
    sae = make_sae("relu", d_in=6, d_sae=10)
    sae.save(tmp_path)
    assert detect_format(tmp_path) == "saelens"
    back = saekit.load_sae(tmp_path, format="saekit")
    torch.testing.assert_close(back.W_enc, sae.W_enc)
    with pytest.raises(SAEFormatError, match="params.npz"):
        saekit.load_sae(tmp_path, format="gemma_scope")
    with pytest.raises(SAEFormatError, match="unknown SAE format 'pickle'.*'sparsify'"):
        saekit.load_sae(tmp_path, format="pickle")


def test_hook_only_applies_to_sparsify(tmp_path):
    make_sae("topk", d_in=6, d_sae=10).save(tmp_path)
    with pytest.raises(SAEFormatError, match="hook='layers.0' picks a hookpoint of a sparsify run"):
        saekit.load_sae(tmp_path, hook="layers.0")


def test_gemma_scope_wins_over_a_stray_partial_file(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "params.npz", W_enc=rng.normal(size=(4, 8)).astype(np.float32),
             W_dec=rng.normal(size=(8, 4)).astype(np.float32), b_enc=np.zeros(8, np.float32),
             b_dec=np.zeros(4, np.float32), threshold=np.zeros(8, np.float32))
    (tmp_path / "cfg.json").write_text("{}")  # a stray file of another format
    assert detect_format(tmp_path) == "gemma_scope"
    assert saekit.load_sae(tmp_path, device="meta").device.type == "meta"
