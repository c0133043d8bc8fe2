"""dictionary_learning checkpoints (ae.pt + config.json) load with the outputs of their own classes."""

import json
import pathlib

import pytest
import torch
from torch import nn

import saekit
from saekit.formats import SAEFormatError, detect_format

D, F, K = 10, 32, 4


def _rand(g, *shape, scale=1.0):
    return nn.Parameter(torch.randn(*shape, generator=g) * scale)


def _linear(g, d_in, d_out, bias=True):
    layer = nn.Linear(d_in, d_out, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(d_out, d_in, generator=g) / d_in**0.5)
        if bias:
            layer.bias.copy_(torch.randn(d_out, generator=g) * 0.3)
    return layer


def module(dict_class, seed=0):
    """An nn.Module with the parameters and buffers of `dict_class`, named as dictionary_learning names them."""
    g = torch.Generator().manual_seed(seed)
    m = nn.Module()
    if dict_class == "AutoEncoder":
        m.bias = _rand(g, D, scale=0.5)
        m.encoder, m.decoder = _linear(g, D, F), _linear(g, F, D, bias=False)
    elif dict_class == "AutoEncoderNew":
        m.encoder, m.decoder = _linear(g, D, F), _linear(g, F, D)
    elif dict_class == "GatedAutoEncoder":
        m.decoder_bias = _rand(g, D, scale=0.5)
        m.encoder = _linear(g, D, F, bias=False)
        m.r_mag, m.gate_bias, m.mag_bias = _rand(g, F, scale=0.5), _rand(g, F, scale=0.3), _rand(g, F, scale=0.3)
        m.decoder = _linear(g, F, D, bias=False)
    elif dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        m.register_buffer("k", torch.tensor(K, dtype=torch.int))
        m.register_buffer("threshold", torch.tensor(0.4 if dict_class == "BatchTopKSAE" else -1.0))
        m.decoder, m.encoder = _linear(g, F, D, bias=False), _linear(g, D, F)
        m.b_dec = _rand(g, D, scale=0.5)
    elif dict_class == "MatryoshkaBatchTopKSAE":
        m.register_buffer("k", torch.tensor(K, dtype=torch.int))
        m.register_buffer("threshold", torch.tensor(0.4))
        m.register_buffer("group_sizes", torch.tensor([8, 24]))
        m.W_enc, m.b_enc = _rand(g, D, F, scale=D**-0.5), _rand(g, F, scale=0.3)
        m.W_dec, m.b_dec = _rand(g, F, D, scale=D**-0.5), _rand(g, D, scale=0.5)
    elif dict_class == "JumpReluAutoEncoder":
        m.W_enc, m.b_enc = _rand(g, D, F, scale=D**-0.5), _rand(g, F, scale=0.3)
        m.W_dec, m.b_dec = _rand(g, F, D, scale=D**-0.5), _rand(g, D, scale=0.5)
        m.threshold = nn.Parameter(torch.rand(F, generator=g) * 0.5)
    return m


def reference(dict_class, sd, x):
    """(f, x̂) as each dictionary_learning class computes them, from the raw state dict (in float64)."""
    w = {name: t.double() for name, t in sd.items()}
    x = x.double()
    relu = torch.relu
    if dict_class == "AutoEncoder":
        f = relu((x - w["bias"]) @ w["encoder.weight"].T + w["encoder.bias"])
        return f, f @ w["decoder.weight"].T + w["bias"]
    if dict_class == "AutoEncoderNew":
        f = relu(x @ w["encoder.weight"].T + w["encoder.bias"])
        return f, f @ w["decoder.weight"].T + w["decoder.bias"]
    if dict_class == "GatedAutoEncoder":
        x_enc = (x - w["decoder_bias"]) @ w["encoder.weight"].T
        f = (x_enc + w["gate_bias"] > 0) * relu(w["r_mag"].exp() * x_enc + w["mag_bias"])
        return f, f @ w["decoder.weight"].T + w["decoder_bias"]
    if dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        post = relu((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])
        if dict_class == "AutoEncoderTopK":
            top = post.topk(int(sd["k"]), dim=-1)
            f = torch.zeros_like(post).scatter_(-1, top.indices, top.values)
        else:
            f = post * (post > w["threshold"])
        return f, f @ w["decoder.weight"].T + w["b_dec"]
    if dict_class == "MatryoshkaBatchTopKSAE":
        post = relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
        f = post * (post > w["threshold"])
        return f, f @ w["W_dec"] + w["b_dec"]
    pre = x @ w["W_enc"] + w["b_enc"]
    f = relu(pre * (pre > w["threshold"]))
    return f, f @ w["W_dec"] + w["b_dec"]


ARCH = {"AutoEncoder": "relu", "AutoEncoderNew": "relu", "GatedAutoEncoder": "jumprelu", "AutoEncoderTopK": "topk",
        "BatchTopKSAE": "batchtopk", "MatryoshkaBatchTopKSAE": "batchtopk", "JumpReluAutoEncoder": "jumprelu"}


def write_checkpoint(folder, dict_class, seed=0):
    """A trainer folder as dictionary_learning's trainSAE leaves it: ae.pt (CPU state dict) + config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu() for k, v in module(dict_class, seed).state_dict().items()}
    torch.save(sd, folder / "ae.pt")
    trainer = {"dict_class": dict_class, "trainer_class": "Trainer", "activation_dim": D, "dict_size": F,
               "lr": 1e-3, "steps": 100, "seed": seed, "device": "cpu", "layer": 3, "lm_name": "EleutherAI/pythia-70m",
               "wandb_name": "run", "submodule_name": "resid_post_layer_3"}
    if "TopK" in dict_class:
        trainer["k"] = K
    (folder / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {"d_submodule": D}}, indent=4))
    return sd


@pytest.mark.parametrize("dict_class", sorted(ARCH))
def test_checkpoint_matches_its_class(tmp_path, dict_class):
    sd = write_checkpoint(tmp_path, dict_class, seed=2)
    assert detect_format(tmp_path) == "dictionary_learning"
    sae = saekit.load_sae(tmp_path)
    assert sae.arch == ARCH[dict_class] and (sae.d_in, sae.d_sae) == (D, F)
    assert sae.provenance.model == "EleutherAI/pythia-70m"
    x = torch.randn(40, D) * 1.5
    f_ref, x_hat_ref = reference(dict_class, sd, x)
    assert 0 < int((f_ref > 0).sum()) < f_ref.numel()  # thresholds and gates cut some features, not all
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x).double(), f_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae.decode(f_ref.float()).double(), x_hat_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae(x).double(), x_hat_ref, atol=1e-5, rtol=1e-5)


class Payload:
    """Pickles as a call that creates a file: what a malicious ae.pt would run on an unguarded torch.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_a_malicious_pickle_is_refused_and_never_run(tmp_path):
    write_checkpoint(tmp_path, "AutoEncoder")
    marker = tmp_path / "pwned"
    torch.save({"encoder.weight": torch.zeros(F, D), "payload": Payload(str(marker))}, tmp_path / "ae.pt")
    with pytest.raises(SAEFormatError, match="weights_only=True"):
        saekit.load_sae(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "ae.pt").write_bytes(b"not a zip or a pickle"), "not a plain PyTorch state dict"),
    (lambda d: torch.save([torch.zeros(2)], d / "ae.pt"), "must hold a state dict"),
    (lambda d: torch.save({"ae": {}, "optimizer": {}, "step": 3}, d / "ae.pt"), "mid-training backup"),
    (lambda d: (d / "config.json").write_text('{"buffer": {}}'), "naming its 'dict_class'"),
    (lambda d: (d / "config.json").write_text('{"trainer": {"dict_class": "CrossCoder"}}'),
     "'CrossCoder' has no saekit architecture"),
    (lambda d: (d / "config.json").unlink(), "config.json is missing"),
    (lambda d: torch.save({"bias": torch.zeros(D)}, d / "ae.pt"), r"\['encoder.weight', 'encoder.bias', "),
    (lambda d: torch.save({**module("AutoEncoder").state_dict(), "bias": torch.zeros(D + 1)}, d / "ae.pt"),
     r"b_dec has shape \(11,\)"),
])
def test_damaged_checkpoints_give_clear_errors(tmp_path, damage, message):
    write_checkpoint(tmp_path, "AutoEncoder")
    damage(tmp_path)
    with pytest.raises(SAEFormatError, match=message):
        saekit.load_sae(tmp_path)
