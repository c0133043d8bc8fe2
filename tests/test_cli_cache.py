"""`saekit cache` and `saekit train --from-cache`: a model read once, then trained on from disk and evaluated."""

from __future__ import annotations

import json

import pytest

import saekit
from saekit.activations.cache import open_cache
from saekit.cli import main

from helpers import HOOK

TRAIN = ["--arch", "topk", "--k", "4", "--features", "32", "--tokens", "512", "--batch-size", "64", "--buffer-mb", "1",
         "--quiet"]


@pytest.fixture(scope="module")
def cache(tiny_lm_dir, text_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "acts"
    args = ["cache", "--model", str(tiny_lm_dir), "--hook", HOOK, "--text", str(text_dir), "--tokens", "600",
            "--context-len", "16", "--shard-mb", "1", "--out", str(out), "--quiet"]
    assert main(args) == 0
    return out


def test_cache_writes_a_manifest_naming_model_hook_and_text(cache, tiny_lm_dir, text_dir, capsys):
    manifest = open_cache(cache)
    assert manifest.rows == 600 and manifest.widths == (128,) and manifest.dtype == "float32"
    prov = manifest.provenance
    assert (prov.model, prov.hook, prov.text, prov.context_len) == (str(tiny_lm_dir.resolve()), HOOK,
                                                                      str(text_dir.resolve()), 16)


def test_a_sae_trained_from_the_cache_evaluates_on_its_model(cache, tmp_path, capsys):
    out = tmp_path / "sae"
    assert main(["train", "--from-cache", str(cache), *TRAIN, "--out", str(out)]) == 0
    sae = saekit.load_sae(out)
    assert sae.provenance.hook == HOOK and sae.provenance.training["tokens"] >= 512
    record = json.loads((out / "run.json").read_text())
    assert record["settings"]["from_cache"] == str(cache.resolve()) and record["status"] == "done"
    capsys.readouterr()
    assert main(["eval", str(out), "--tokens", "256", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["hook"] == HOOK and 0 <= result["fvu"] < 1.5
    assert main(["train", "--from-cache", str(cache), *TRAIN, "--out", str(out)]) == 0
    assert "already trained" in capsys.readouterr().out


def test_from_cache_refuses_the_flags_the_cache_settles(cache, tiny_lm_dir, tmp_path, capsys):
    assert main(["train", "--from-cache", str(cache), "--model", str(tiny_lm_dir), *TRAIN,
                 "--out", str(tmp_path / "x")]) == 1
    assert "drop --model" in capsys.readouterr().err
    assert main(["train", "--from-cache", str(tmp_path / "nothing"), *TRAIN, "--out", str(tmp_path / "y")]) == 1
    assert "holds no activation cache" in capsys.readouterr().err
    assert main(["train", "--from-cache", str(cache), "--hook", "transformer.h.0.attn", *TRAIN,
                 "--out", str(tmp_path / "z")]) == 1
    assert f"holds no activations of 'transformer.h.0.attn': it holds {HOOK}" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_train_without_a_model_or_a_cache_says_what_to_pass(tmp_path, capsys):
    assert main(["train", *TRAIN, "--out", str(tmp_path / "z")]) == 1
    assert "--from-cache" in capsys.readouterr().err


def test_a_transcoder_cache_trains_a_transcoder(tiny_lm_dir, text_dir, tmp_path):
    out = tmp_path / "tc-cache"
    assert main(["cache", "--model", str(tiny_lm_dir), "--hook", "transformer.h.0.ln_2", "--target-hook",
                 "transformer.h.0.mlp", "--text", str(text_dir), "--tokens", "300", "--context-len", "16",
                 "--out", str(out), "--quiet"]) == 0
    assert main(["train", "--from-cache", str(out), *TRAIN, "--out", str(tmp_path / "tc")]) == 0
    sae = saekit.load_sae(tmp_path / "tc")
    assert sae.is_transcoder and sae.provenance.target_hook == "transformer.h.0.mlp"
