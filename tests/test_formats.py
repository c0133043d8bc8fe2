import json
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

import saekit
from saekit.formats import CFG_FILE, WEIGHTS_FILE, SAEFormatError
from saekit.saes.provenance import Provenance

from helpers import ARCHS
from helpers import make_sae as make


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_same_encodings_and_provenance(tmp_path, arch):
    sae = make(arch)
    sae.provenance = Provenance(model="gpt2", hook="transformer.h.0.mlp.act", context_len=64,
                                training={"tokens": 7}, extra={"from_a_later_version": [1, 2]})
    sae.save(tmp_path / "sae")
    back = saekit.load_sae(tmp_path / "sae")
    assert type(back) is type(sae) and back.hyperparams() == sae.hyperparams()
    assert back.provenance == sae.provenance
    x = torch.randn(30, sae.d_in)
    with torch.no_grad():
        torch.testing.assert_close(back.encode(x), sae.encode(x))
        torch.testing.assert_close(back(x), sae(x))


@pytest.mark.parametrize("arch,expected", [("relu", "standard"), ("topk", "topk"), ("jumprelu", "jumprelu"),
                                           ("batchtopk", "jumprelu")])
def test_folder_is_in_saelens_layout(tmp_path, arch, expected):
    sae = make(arch)
    sae.save(tmp_path)
    cfg = json.loads((tmp_path / CFG_FILE).read_text())
    assert cfg["architecture"] == expected and cfg["d_in"] == sae.d_in and cfg["d_sae"] == sae.d_sae
    assert cfg["metadata"]["sae_lens_version"].startswith("6")
    w = load_file(tmp_path / WEIGHTS_FILE)
    assert w["W_enc"].shape == (sae.d_in, sae.d_sae) and w["W_dec"].shape == (sae.d_sae, sae.d_in)
    if expected == "jumprelu":
        assert w["threshold"].shape == (sae.d_sae,)
    if arch == "topk":
        assert cfg["k"] == sae.k and cfg["rescale_acts_by_decoder_norm"] is False


def write_saelens_folder(folder, arch, tensors, **extra):
    """A folder shaped exactly like SAELens 6 writes it (no saekit keys)."""
    folder.mkdir(parents=True)
    cfg = {"d_in": tensors["W_enc"].shape[0], "d_sae": tensors["W_enc"].shape[1], "dtype": "float32",
           "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
           "reshape_activations": "none", "metadata": {"sae_lens_version": "6.54.12"}, "architecture": arch,
           **extra}
    (folder / CFG_FILE).write_text(json.dumps(cfg))
    save_file(tensors, folder / WEIGHTS_FILE)


def random_tensors(d_in=8, d_sae=20, threshold=False):
    g = torch.Generator().manual_seed(5)
    t = {"W_enc": torch.randn(d_in, d_sae, generator=g), "W_dec": torch.randn(d_sae, d_in, generator=g),
         "b_enc": torch.randn(d_sae, generator=g) * 0.3, "b_dec": torch.randn(d_in, generator=g)}
    if threshold:
        t["threshold"] = torch.rand(d_sae, generator=g)
    return t


def test_loads_saelens_standard_and_jumprelu(tmp_path):
    t = random_tensors(threshold=True)
    x = torch.randn(12, 8)
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    write_saelens_folder(tmp_path / "std", "standard", {k: v for k, v in t.items() if k != "threshold"})
    torch.testing.assert_close(saekit.load_sae(tmp_path / "std").encode(x), torch.relu(pre), check_dtype=False)
    write_saelens_folder(tmp_path / "jr", "jumprelu", t)
    sae = saekit.load_sae(tmp_path / "jr")
    assert sae.arch == "jumprelu"
    torch.testing.assert_close(sae.encode(x), torch.relu(pre) * (pre > t["threshold"]))


def test_loads_saelens_topk_with_decoder_norm_rescaling(tmp_path):
    """SAELens TopK with rescale_acts_by_decoder_norm scales pre by ‖W_dec_i‖ and divides it back on decode."""
    t = random_tensors()
    write_saelens_folder(tmp_path / "tk", "topk", t, k=3, rescale_acts_by_decoder_norm=True)
    sae = saekit.load_sae(tmp_path / "tk")
    x = torch.randn(12, 8)
    norms = t["W_dec"].norm(dim=1)
    pre = ((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]) * norms
    top = pre.topk(3, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    x_hat = (f / norms) @ t["W_dec"] + t["b_dec"]
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), f)
        torch.testing.assert_close(sae(x), x_hat)


def test_no_pickle_is_ever_read(tmp_path):
    sae = make("relu")
    sae.save(tmp_path)
    torch.save(sae.state_dict(), tmp_path / WEIGHTS_FILE)  # a pickle where safetensors belongs
    with pytest.raises(SAEFormatError, match="not a readable safetensors"):
        saekit.load_sae(tmp_path)


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / CFG_FILE).write_text("{not json"), "cfg.json is not valid JSON"),
    (lambda d: (d / CFG_FILE).unlink(), "cfg.json is missing"),
    (lambda d: (d / WEIGHTS_FILE).unlink(), "sae_weights.safetensors is missing"),
    (lambda d: (d / WEIGHTS_FILE).write_bytes(b"\x00" * 40), "not a readable safetensors"),
    (lambda d: _edit_cfg(d, d_sae=99), "needs"),
    (lambda d: _edit_cfg(d, d_in="eight"), "'d_in' is missing or not an integer"),
    (lambda d: _edit_cfg(d, saekit=None, architecture="gated"), "'gated' is not supported"),
    (lambda d: _edit_cfg(d, saekit=None, normalize_activations="expected_average_only_in"), "normalize_act"),
    (lambda d: save_file({"W_enc": torch.zeros(16, 48)}, d / WEIGHTS_FILE), "has no tensor 'W_dec'"),
    (lambda d: _edit_cfg(d, saekit=[1, 2]), "'saekit' must hold a JSON object"),
    (lambda d: _edit_cfg(d, saekit={"arch": "relu", "hyperparams": [["k", 3]]}), "hyperparams a JSON object"),
    (lambda d: _edit_cfg(d, saekit={"arch": ["relu"]}), "saekit.arch must be a name"),
    (lambda d: _edit_cfg(d, saekit={"arch": "relu", "hyperparams": {"k": 3}}), "cannot build a 'relu' SAE"),
])
def test_damaged_folders_give_clear_errors(tmp_path, damage, message):
    make("relu").save(tmp_path)
    damage(tmp_path)
    with pytest.raises(SAEFormatError, match=message):
        saekit.load_sae(tmp_path)


def _edit_cfg(folder, **changes):
    cfg = json.loads((folder / CFG_FILE).read_text())
    cfg.update(changes)
    (folder / CFG_FILE).write_text(json.dumps(cfg))


def test_missing_folder_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass a folder holding cfg.json"):
        saekit.load_sae(tmp_path / "nowhere")


def test_save_keeps_other_files_and_overwrites_atomically(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    make("topk").save(tmp_path)
    make("topk").save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "notes.txt", "sae_weights.safetensors"]


# --- hardened loading -----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("d_sae", [10**12, 2**30])
def test_cfg_claiming_huge_dictionary_fails_before_allocating(tmp_path, arch, d_sae):
    """10^12 is out of range; 2^30 is in range, so only the weights' header (48 features) can refuse it."""
    make(arch).save(tmp_path)
    _edit_cfg(tmp_path, d_sae=d_sae)
    start = time.perf_counter()
    with pytest.raises(SAEFormatError, match=str(d_sae)) as info:
        saekit.load_sae(tmp_path)
    assert time.perf_counter() - start < 0.5
    if d_sae == 2**30:
        assert "(16, 48)" in str(info.value) or "(48, 16)" in str(info.value)


@pytest.mark.parametrize("key,value", [("d_in", 0), ("d_sae", -4), ("d_in", True), ("d_sae", 2**40)])
def test_widths_must_be_positive_and_sane(tmp_path, key, value):
    make("relu").save(tmp_path)
    _edit_cfg(tmp_path, **{key: value})
    with pytest.raises(SAEFormatError, match=key):
        saekit.load_sae(tmp_path)


def test_weights_stored_as_integers_are_refused(tmp_path):
    sae = make("relu")
    sae.save(tmp_path)
    tensors = {k: v.detach().clone() for k, v in sae.saelens_tensors().items()}
    tensors["b_enc"] = tensors["b_enc"].to(torch.int64)
    save_file(tensors, tmp_path / WEIGHTS_FILE)
    with pytest.raises(SAEFormatError, match="'b_enc' is stored as I64"):
        saekit.load_sae(tmp_path)
    _edit_cfg(tmp_path, dtype="int64")
    with pytest.raises(SAEFormatError, match="floating dtype 'int64'"):
        saekit.load_sae(tmp_path)


def test_extra_tensors_in_the_file_are_ignored(tmp_path):
    sae = make("relu")
    sae.save(tmp_path)
    save_file({**{k: v.detach() for k, v in sae.saelens_tensors().items()}, "scaling_factor": torch.ones(48)},
              tmp_path / WEIGHTS_FILE)
    x = torch.randn(5, sae.d_in)
    with torch.no_grad():
        torch.testing.assert_close(saekit.load_sae(tmp_path)(x), sae(x))


@pytest.mark.parametrize("arch", ARCHS)
def test_nonfinite_weights_are_refused_unless_allowed(tmp_path, arch):
    sae = make(arch)
    tensors = {k: v.detach().clone() for k, v in sae.saelens_tensors().items()}
    tensors["W_dec"][3, :2] = float("nan")
    tensors["b_enc"][7] = float("inf")
    sae.save(tmp_path)
    save_file(tensors, tmp_path / WEIGHTS_FILE)
    with pytest.raises(SAEFormatError, match=r"NaN/inf .*W_dec: 2 of 768, b_enc: 1 of 48") as info:
        saekit.load_sae(tmp_path)
    assert "allow_nonfinite=True" in str(info.value) and "\n" not in str(info.value)
    back = saekit.load_sae(tmp_path, allow_nonfinite=True)
    assert int(back.W_dec.isnan().sum()) == 2 and bool(back.b_enc[7].isinf())


def test_format_errors_are_input_errors():
    assert issubclass(SAEFormatError, saekit.InputError)
