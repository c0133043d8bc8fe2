"""Models too big to load: nnsight's remote execution. Everything up to the network runs here: nnsight's dry run of
the remote path (each trace serialized and run with saekit's modules hidden, as NDIF would) gives what a local model
gives, and a remote model that cannot reach NDIF fails with one clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import saekit
from saekit.activations import nnsight_api as api
from saekit.activations.cache import open_cache
from saekit.cli import main
from saekit.errors import InputError

from helpers import HOOK

OTHER = "transformer.h.0.mlp.c_proj"


@pytest.fixture(scope="module")
def models(tiny_lm_dir):
    return api.load_model(str(tiny_lm_dir)), api.load_model(str(tiny_lm_dir), remote="local")


def _ids():
    ids = torch.randint(1, 300, (2, 8), generator=torch.Generator().manual_seed(0))
    return ids, torch.ones_like(ids)


def test_the_remote_dry_run_reads_what_the_local_model_reads(models):
    local, remote = models
    assert api.remote_mode(remote) == "local" and api.remote_mode(local) is False
    ids, mask = _ids()
    assert torch.equal(api.get_activations(remote, ids, mask, HOOK), api.get_activations(local, ids, mask, HOOK))
    sites = [(OTHER, "output"), (HOOK, "output")]
    for a, b in zip(api.read_sites(remote, ids, mask, sites)[0], api.read_sites(local, ids, mask, sites)[0]):
        assert torch.equal(a, b)
    acts, logits = api.activations_and_logits(remote, ids, mask, HOOK)
    torch.testing.assert_close(logits, api.clean_logits(local, ids, mask))


def test_an_sae_spliced_and_steered_through_the_remote_path(models):
    """The SAE travels with the request (by value): spliced logits and steered generations match."""
    local, remote = models
    ids, mask = _ids()
    sae = saekit.SAE.create("topk", 128, 32, k=4, seed=1)
    torch.testing.assert_close(api.spliced_logits(remote, ids, mask, HOOK, sae),
                               api.spliced_logits(local, ids, mask, HOOK, sae))
    pin = lambda acts: acts + sae.W_dec[3] * 5.0  # noqa: E731
    assert torch.equal(api.generate(remote, ids, mask, max_new_tokens=3, hook=HOOK, replace=pin),
                       api.generate(local, ids, mask, max_new_tokens=3, hook=HOOK, replace=pin))


def test_cache_through_the_remote_dry_run_writes_the_local_bytes(tiny_lm_dir, text_dir, tmp_path):
    args = ["cache", "--model", str(tiny_lm_dir), "--hook", HOOK, "--text", str(text_dir), "--tokens", "300",
            "--context-len", "16", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--remote", "local", "--out", str(tmp_path / "remote")]) == 0
    hashes = [[s.sha256 for s in open_cache(tmp_path / name).shards] for name in ("local", "remote")]
    assert hashes[0] == hashes[1]


def test_a_remote_model_is_named_by_hub_name_and_needs_a_key(tiny_lm_dir, monkeypatch):
    with pytest.raises(InputError, match="hub name"):
        api.load_model(str(tiny_lm_dir), remote=True)
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    import nnsight

    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", None)
    with pytest.raises(api.RemoteUnavailableError, match="NDIF_API_KEY"):
        api.load_model("someone/some-model", remote=True)


UNREACHABLE = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from helpers import build_tiny_gpt2
hub = Path({home!r}) / "hub" / "models--saekit-test--tiny-gpt2"
snapshot = hub / "snapshots" / ("0" * 40)
build_tiny_gpt2(snapshot)
(hub / "refs").mkdir()
(hub / "refs" / "main").write_text(snapshot.name)
import nnsight
nnsight.CONFIG.API.HOST = "http://127.0.0.1:9"
from saekit.cli import main
sys.exit(main(["cache", "--model", "saekit-test/tiny-gpt2", "--remote", "--hook", "transformer.h.0.mlp.act",
               "--text", {text!r}, "--tokens", "100", "--out", {out!r}, "--quiet"]))
"""


def test_without_a_network_a_remote_run_fails_with_one_clear_line(text_dir, tmp_path):
    """A hub cache laid out as huggingface_hub lays it out gives the config and tokenizer (no weights are read);
    the run then fails where it would reach NDIF, saying what to check."""
    home = tmp_path / "hf"
    script = UNREACHABLE.format(tests=str(Path(__file__).parent), home=str(home), text=str(text_dir),
                                out=str(tmp_path / "cache"))
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "NDIF_API_KEY": "test-key"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("saekit cache: error: NDIF at http://127.0.0.1:9 could not run the request")
    assert "drop --remote" in last and not (tmp_path / "cache" / "shard-00000.safetensors").exists()


def test_eval_through_the_remote_dry_run_gives_the_local_numbers(tiny_lm_dir, text_dir, tmp_path, capsys):
    import json

    out = tmp_path / "sae"
    assert main(["train", "--model", str(tiny_lm_dir), "--hook", HOOK, "--text", str(text_dir), "--arch", "topk",
                 "--k", "4", "--features", "32", "--tokens", "256", "--batch-size", "64", "--context-len", "16",
                 "--buffer-mb", "1", "--quiet", "--out", str(out)]) == 0
    results = []
    for extra in ([], ["--remote", "local"]):
        capsys.readouterr()
        assert main(["eval", str(out), "--tokens", "128", "--json", "--quiet", *extra]) == 0
        results.append(json.loads(capsys.readouterr().out))
    for key in ("fvu", "l0", "loss_clean", "loss_spliced", "loss_zero_ablated", "loss_mean_ablated"):
        assert results[1][key] == pytest.approx(results[0][key], rel=1e-5), key
