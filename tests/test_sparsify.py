"""sparsify checkpoints load as saekit TopK SAEs (and transcoders) with sparsify's outputs."""

import json

import pytest
import torch
from safetensors.torch import save_file, save_model
from torch import nn

import saekit
from saekit.formats import SAEFormatError, detect_format

D_IN, N_LATENTS, K = 12, 40, 4


class SparseCoderLike(nn.Module):
    """sparsify's SparseCoder parameters under its names: encoder nn.Linear, W_dec [num_latents, d_in], b_dec."""

    def __init__(self, seed: int, dtype=torch.float32, skip=False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.encoder = nn.Linear(D_IN, N_LATENTS, dtype=dtype)
        with torch.no_grad():
            self.encoder.weight.copy_(torch.randn(N_LATENTS, D_IN, generator=g))
            self.encoder.bias.copy_(torch.randn(N_LATENTS, generator=g) * 0.3)
        w = torch.randn(N_LATENTS, D_IN, generator=g)
        self.W_dec = nn.Parameter((w / w.norm(dim=1, keepdim=True)).to(dtype))
        self.b_dec = nn.Parameter((torch.randn(D_IN, generator=g) * 0.5).to(dtype))
        if skip:
            self.W_skip = nn.Parameter(torch.zeros(D_IN, D_IN, dtype=dtype))


def write_hook(folder, seed=0, dtype=torch.float32, **cfg_changes):
    """One hookpoint's folder as SparseCoder.save_to_disk writes it: save_model + cfg.json (cfg fields + d_in)."""
    coder = SparseCoderLike(seed, dtype, skip=cfg_changes.get("skip_connection", False))
    folder.mkdir(parents=True)
    save_model(coder, str(folder / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": N_LATENTS,
           "k": K, "multi_topk": False, "skip_connection": False, "transcode": False, **cfg_changes, "d_in": D_IN}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return coder


def reference(coder, x, transcode):
    """sparsify's encode/decode, written from its raw tensors: TopK of ReLU(x̄ Eᵀ + b), then f W_dec + b_dec."""
    w = {name: p.detach().double() for name, p in coder.named_parameters()}
    x = x.double()
    x_bar = x if transcode else x - w["b_dec"]
    pre = torch.relu(x_bar @ w["encoder.weight"].T + w["encoder.bias"])
    top = pre.topk(K, dim=-1)
    f = torch.zeros_like(pre).scatter_(-1, top.indices, top.values)
    return f, f @ w["W_dec"] + w["b_dec"]


@pytest.mark.parametrize("variant", [{}, {"multi_topk": True}, {"transcode": True}])
def test_hook_folder_matches_sparsify(tmp_path, variant):
    coder = write_hook(tmp_path / "layers.1", seed=3, **variant)
    sae = saekit.load_sae(tmp_path / "layers.1")
    assert detect_format(tmp_path / "layers.1") == "sparsify"
    assert (sae.arch, sae.k, sae.d_in, sae.d_sae) == ("topk", K, D_IN, N_LATENTS)
    assert sae.is_transcoder == bool(variant.get("transcode"))
    x = torch.randn(25, D_IN) * 2
    f_ref, x_hat_ref = reference(coder, x, variant.get("transcode", False))
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x).double(), f_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae.decode(f_ref.float()).double(), x_hat_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae(x).double(), x_hat_ref, atol=1e-5, rtol=1e-5)


def test_bfloat16_checkpoint_keeps_its_dtype(tmp_path):
    write_hook(tmp_path / "h", dtype=torch.bfloat16)
    assert saekit.load_sae(tmp_path / "h").dtype == torch.bfloat16
    assert saekit.load_sae(tmp_path / "h", dtype=torch.float32).dtype == torch.float32


def test_run_folder_picks_the_named_hook(tmp_path):
    coders = {name: write_hook(tmp_path / name, seed=i) for i, name in enumerate(["layers.0", "layers.2.mlp"])}
    with pytest.raises(SAEFormatError, match=r"2 hookpoints \['layers.0', 'layers.2.mlp'\].*hook="):
        saekit.load_sae(tmp_path)
    with pytest.raises(SAEFormatError, match="no sparsify hookpoint 'layers.9'"):
        saekit.load_sae(tmp_path, hook="layers.9")
    sae = saekit.load_sae(tmp_path, hook="layers.2.mlp", format="sparsify")
    torch.testing.assert_close(sae.W_dec.detach(), coders["layers.2.mlp"].W_dec.detach())
    assert sae.provenance.extra == {"sparsify_hookpoint": "layers.2.mlp"}


def test_a_run_with_one_hook_needs_no_name(tmp_path):
    coder = write_hook(tmp_path / "only")
    torch.testing.assert_close(saekit.load_sae(tmp_path).W_enc.detach(), coder.encoder.weight.detach().T)


@pytest.mark.parametrize("change,message", [
    ({"activation": "groupmax"}, "'groupmax' has no saekit architecture"),
    ({"skip_connection": True}, "skip connection"),
    ({"num_latents": 41}, r"'encoder.weight' has shape \(40, 12\), but cfg.json .* needs \(41, 12\)"),
    ({"k": 0}, "k=0 must be a positive integer"),
])
def test_unsupported_or_inconsistent_checkpoints_are_refused(tmp_path, change, message):
    write_hook(tmp_path / "h", **change)
    with pytest.raises(SAEFormatError, match=message):
        saekit.load_sae(tmp_path / "h")


def test_garbage_weights_are_refused(tmp_path):
    write_hook(tmp_path / "h")
    (tmp_path / "h" / "sae.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(SAEFormatError, match="not a readable safetensors"):
        saekit.load_sae(tmp_path / "h")
    save_file({"encoder.weight": torch.zeros(N_LATENTS, D_IN)}, tmp_path / "h" / "sae.safetensors")
    with pytest.raises(SAEFormatError, match="no tensor 'encoder.bias'"):
        saekit.load_sae(tmp_path / "h")
