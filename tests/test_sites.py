"""Friendly sites on tiny random models of every common family: the resolved paths read activations of the right
width, and the residual stream adds up (resid_post − resid_pre = attn_out + mlp_out where no norm follows them)."""

import pytest
import torch
import transformers as T

from saekit.activations import nnsight_api as api
from saekit.activations.sites import SITES, resolve_site
from saekit.errors import InputError

HIDDEN, INNER = 16, 40
COMMON = dict(num_hidden_layers=2, hidden_size=HIDDEN, num_attention_heads=2, intermediate_size=INNER, vocab_size=64)
FAMILIES = {
    "gpt2": (T.GPT2LMHeadModel, T.GPT2Config(n_layer=2, n_embd=HIDDEN, n_head=2, n_inner=INNER, vocab_size=64)),
    "gpt_neox": (T.GPTNeoXForCausalLM, T.GPTNeoXConfig(**COMMON)),
    "llama": (T.LlamaForCausalLM, T.LlamaConfig(num_key_value_heads=2, **COMMON)),
    "mistral": (T.MistralForCausalLM, T.MistralConfig(num_key_value_heads=2, **COMMON)),
    "qwen2": (T.Qwen2ForCausalLM, T.Qwen2Config(num_key_value_heads=2, **COMMON)),
    "gemma": (T.GemmaForCausalLM, T.GemmaConfig(num_key_value_heads=2, head_dim=8, **COMMON)),
    "gemma2": (T.Gemma2ForCausalLM, T.Gemma2Config(num_key_value_heads=2, head_dim=8, **COMMON)),
    "gemma3": (T.Gemma3ForCausalLM, T.Gemma3TextConfig(num_key_value_heads=2, head_dim=8, **COMMON)),
    "phi": (T.PhiForCausalLM, T.PhiConfig(**COMMON)),
    "bert": (T.BertModel, T.BertConfig(**COMMON)),
}
ADDS_UP = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "phi")  # no norm after the sublayers' outputs


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    cls, config = FAMILIES[request.param]
    torch.manual_seed(0)
    module = cls(config).eval()
    return request.param, api.load_model(module)


def read(model, layer, site):
    ids = torch.arange(1, 25).view(2, 12) % 60 + 1
    hook, side = resolve_site(model, layer, site)
    return api.get_activations(model, ids, torch.ones_like(ids), hook, side).float()


def test_every_site_reads_activations_of_its_width(family):
    name, model = family
    for layer in (0, -1):
        widths = {site: read(model, layer, site).shape[-1] for site in SITES}
        assert widths == {"resid_pre": HIDDEN, "resid_post": HIDDEN, "attn_out": HIDDEN, "mlp_act": INNER,
                          "mlp_out": HIDDEN}, name


def test_the_residual_stream_adds_up(family):
    name, model = family
    torch.testing.assert_close(read(model, 0, "resid_post"), read(model, 1, "resid_pre"))
    if name in ADDS_UP:
        change = read(model, 1, "resid_post") - read(model, 1, "resid_pre")
        torch.testing.assert_close(change, read(model, 1, "attn_out") + read(model, 1, "mlp_out"),
                                   rtol=1e-4, atol=1e-5)


def test_gpt2_sites_are_the_usual_paths():
    cls, config = FAMILIES["gpt2"]
    model = api.load_model(cls(config).eval())
    assert resolve_site(model, 1, "mlp_act") == ("transformer.h.1.mlp.c_proj", "input")
    assert resolve_site(model, 0, "attn_out") == ("transformer.h.0.attn.c_proj", "output")
    assert resolve_site(model, -1, "resid_post") == ("transformer.h.1", "output")


def test_bad_sites_and_layers_say_what_exists(family):
    _, model = family
    with pytest.raises(InputError, match="resid_post"):
        resolve_site(model, 0, "residual")
    with pytest.raises(InputError, match="2 blocks"):
        resolve_site(model, 2, "mlp_out")


def test_the_cli_trains_at_a_friendly_site_and_records_the_path(tiny_lm_dir, text_dir, tmp_path, capsys):
    import saekit
    from saekit.cli import main

    args = ["train", "--model", str(tiny_lm_dir), "--layer", "-1", "--site", "mlp_act", "--arch", "topk", "--k", "4",
            "--features", "32", "--tokens", "1024", "--text", str(text_dir), "--context-len", "16", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "sae")]) == 0
    assert "site mlp_act of layer -1: transformer.h.0.mlp.c_proj (input)" in capsys.readouterr().out
    prov = saekit.load_sae(tmp_path / "sae").provenance
    assert (prov.hook, prov.hook_side) == ("transformer.h.0.mlp.c_proj", "input")
    assert main(["train", "--model", str(tiny_lm_dir), "--site", "mlp_act", "--arch", "relu", "--features", "8",
                 "--tokens", "512", "--text", str(text_dir), "--out", str(tmp_path / "x")]) == 1
    assert "--layer and --site go together" in capsys.readouterr().err
