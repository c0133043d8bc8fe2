"""`saekit sweep`: several dictionaries from one pass, each saved as `saekit train` would save it."""

from __future__ import annotations

import pytest
import torch

import saekit
from saekit.activations import nnsight_api as api
from saekit.cli import main

from helpers import HOOK

OTHER = "transformer.h.0.mlp.c_proj"
SHARED = {"--tokens": 512, "--batch-size": 64, "--context-len": 16, "--buffer-mb": 4, "--seed": 2}
OWN = [
    {"name": "topk-32", "arch": "topk", "features": 32, "k": 4},
    {"name": "relu-48", "arch": "relu", "features": 48, "l1": 1.0, "lr": 1e-3},
    {"name": "topk-out", "arch": "topk", "features": 32, "k": 4, "hook": OTHER},
]


def _spec(tmp_path, model, text) -> str:
    lines = [f'model = "{model}"', f'hook = "{HOOK}"', f'text = "{text}"', "tokens = 512", "batch_size = 64",
             "context_len = 16", "buffer_mb = 4", "seed = 2"]
    for member in OWN:
        lines.append("[[dictionary]]")
        lines += [f"{k} = {v!r}".replace("'", '"') for k, v in member.items()]
    path = tmp_path / "sweep.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _alone(model, text, out, member) -> saekit.SAE:
    flags = {"--model": model, "--hook": member.get("hook", HOOK), "--text": text, **SHARED, "--out": out}
    flags.update({f"--{k}": v for k, v in member.items() if k not in ("name", "hook")})
    assert main(["train", *[str(x) for kv in flags.items() for x in kv], "--quiet"]) == 0
    return saekit.load_sae(out)


def test_a_sweep_reads_the_model_once_and_each_equals_its_own_train(tiny_lm_dir, text_dir, tmp_path, monkeypatch,
                                                                     capsys):
    forwards = []
    real = api.read_sites

    def counting(model, ids, mask, sites, logits=False):
        forwards.append(len(sites))
        return real(model, ids, mask, sites, logits)

    monkeypatch.setattr(api, "read_sites", counting)
    assert main(["sweep", _spec(tmp_path, tiny_lm_dir, text_dir), "--out", str(tmp_path / "sweep"), "--quiet"]) == 0
    assert set(forwards) == {2}  # every forward read both sites
    monkeypatch.setattr(api, "read_sites", real)
    printed = capsys.readouterr().out
    for member in OWN:
        assert f"saved {member['name']}" in printed
        swept = saekit.load_sae(tmp_path / "sweep" / member["name"])
        assert swept.provenance.hook == member.get("hook", HOOK)
        alone = _alone(tiny_lm_dir, text_dir, tmp_path / ("alone-" + member["name"]), member)
        for name, value in alone.state_dict().items():
            torch.testing.assert_close(swept.state_dict()[name], value, rtol=0, atol=0, msg=name)
    assert main(["sweep", str(tmp_path / "sweep.toml"), "--out", str(tmp_path / "sweep"), "--quiet"]) == 0
    assert capsys.readouterr().out.count("already trained") == 3


def test_a_sweep_over_a_cache_of_two_sites(tiny_lm_dir, text_dir, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["cache", "--model", str(tiny_lm_dir), "--hook", HOOK, "--hook", OTHER, "--text", str(text_dir),
                 "--tokens", "600", "--context-len", "16", "--out", str(cache), "--quiet"]) == 0
    flags = ["--tokens", "512", "--batch-size", "64", "--buffer-mb", "1", "--quiet"]
    assert main(["train", "--from-cache", str(cache), "--arch", "topk", "--k", "4", "--features", "32", *flags,
                 "--out", str(tmp_path / "x")]) == 1
    assert "pick one with --hook" in capsys.readouterr().err
    assert main(["train", "--from-cache", str(cache), "--hook", OTHER, "--arch", "topk", "--k", "4", "--features",
                 "32", *flags, "--out", str(tmp_path / "alone")]) == 0
    spec = tmp_path / "cached.toml"
    spec.write_text(f'from_cache = "{cache}"\ntokens = 512\nbatch_size = 64\nbuffer_mb = 1\n')
    assert main(["sweep", str(spec), "--dictionary", f"name=a arch=topk features=32 k=4 hook={HOOK}",
                 "--dictionary", f"name=b arch=topk features=32 k=4 hook={OTHER}", "--out", str(tmp_path / "s"),
                 "--quiet"]) == 0
    alone, swept = saekit.load_sae(tmp_path / "alone"), saekit.load_sae(tmp_path / "s" / "b")
    assert swept.provenance.hook == OTHER and saekit.load_sae(tmp_path / "s" / "a").d_in == 128
    torch.testing.assert_close(swept.W_dec, alone.W_dec, rtol=0, atol=0)


@pytest.mark.parametrize("extra, message", [
    (["--dictionary", "arch=topk features=32 model=other"], "every dictionary of a sweep shares"),
    (["--dictionary", "arch=topk features=32", "--dictionary", "arch=topk features=32"], "two dictionaries"),
    (["--dictionary", "arch topk"], "key=value"),
    (["--dictionary", "arch=nope features=32"], "unknown SAE architecture"),
])
def test_bad_sweeps_say_what_to_change(tiny_lm_dir, text_dir, tmp_path, capsys, extra, message):
    spec = tmp_path / "s.toml"
    spec.write_text(f'model = "{tiny_lm_dir}"\nhook = "{HOOK}"\ntext = "{text_dir}"\ntokens = 256\n')
    assert main(["sweep", str(spec), *extra, "--out", str(tmp_path / "out")]) == 1
    assert message in capsys.readouterr().err


def test_a_dictionary_names_its_own_site_of_the_shared_layer(tiny_lm_dir, text_dir, tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(f'model = "{tiny_lm_dir}"\nlayer = 0\nsite = "mlp_act"\ntext = "{text_dir}"\ntokens = 256\n'
                    "batch_size = 64\ncontext_len = 16\nbuffer_mb = 4\n")
    assert main(["sweep", str(spec), "--dictionary", "name=act arch=topk features=32 k=4",
                 "--dictionary", "name=out arch=topk features=32 k=4 site=mlp_out", "--out", str(tmp_path / "o"),
                 "--quiet"]) == 0
    sites = [(p.hook, p.hook_side) for p in (saekit.load_sae(tmp_path / "o" / n).provenance for n in ("act", "out"))]
    assert sites == [(OTHER, "input"), (OTHER, "output")]  # c_proj's input is the neurons, its output the MLP's
    capsys.readouterr()
    assert main(["sweep", str(spec), "--dictionary", "name=act arch=topk features=32 k=4",
                 "--dictionary", "name=out arch=topk features=32 k=4 site=mlp_out", "--out", str(tmp_path / "o"),
                 "--quiet"]) == 0
    assert capsys.readouterr().out.count("already trained") == 2
