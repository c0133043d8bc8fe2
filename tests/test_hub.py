"""Hub references resolve through huggingface_hub's local cache when offline (HF_HUB_OFFLINE=1, HF_HOME)."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from saekit.errors import InputError
from saekit.formats.hub import HubLocation, locate

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_repo(hf_home: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """Files of `repo_id` as huggingface_hub caches them: content-addressed blobs, a snapshot of symlinks to them
    for one commit, and refs/main naming that commit."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for rel, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / COMMIT / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


def _npz_bytes(tmp: Path, rng) -> tuple[bytes, dict]:
    p = {"W_enc": rng.normal(size=(6, 10)), "W_dec": rng.normal(size=(10, 6)), "b_enc": rng.normal(size=10),
         "b_dec": rng.normal(size=6), "threshold": rng.uniform(0, 0.5, size=10)}
    p = {k: v.astype(np.float32) for k, v in p.items()}
    np.savez(tmp / "params.npz", **p)
    return (tmp / "params.npz").read_bytes(), p


def _sparsify_files(tmp: Path, rng) -> tuple[dict[str, bytes], dict]:
    files, raw = {}, {}
    for hook in ("layers.0", "layers.1"):
        t = {"encoder.weight": rng.normal(size=(10, 6)), "encoder.bias": rng.normal(size=10),
             "W_dec": rng.normal(size=(10, 6)), "b_dec": rng.normal(size=6)}
        t = {k: torch.from_numpy(v.astype(np.float32)) for k, v in t.items()}
        save_file(t, tmp / "w.safetensors")
        files[f"{hook}/sae.safetensors"] = (tmp / "w.safetensors").read_bytes()
        files[f"{hook}/cfg.json"] = json.dumps({"activation": "topk", "num_latents": 10, "k": 3, "d_in": 6}).encode()
        raw[hook] = t
    return files, raw


SCRIPT = """
import sys, torch
from safetensors.torch import save_file
import saekit
from saekit.errors import InputError
out = {}
g = saekit.load_sae("gemma-scope-2b-pt-res/layer_3/width_16k/average_l0_50")
out["gemma_W_enc"], out["gemma_threshold"] = g.W_enc.detach(), g.threshold.detach()
s = saekit.load_sae("hf://EleutherAI/sae-tiny", hook="layers.1")
out["sparsify_W_enc"], out["sparsify_k"] = s.W_enc.detach(), torch.tensor(s.k)
try:
    saekit.load_sae("hf://nobody/not-cached/x")
except InputError as e:
    print("MISSING:", e)
save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[1])
"""


def test_offline_loads_from_the_local_cache(tmp_path):
    rng = np.random.default_rng(0)
    hf_home = tmp_path / "hf"
    npz, params = _npz_bytes(tmp_path, rng)
    cache_repo(hf_home, "google/gemma-scope-2b-pt-res", {"layer_3/width_16k/average_l0_50/params.npz": npz,
                                                          "layer_3/width_16k/average_l0_9/params.npz": b"unread"})
    files, raw = _sparsify_files(tmp_path, rng)
    cache_repo(hf_home, "EleutherAI/sae-tiny", files)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "out.safetensors")], env=env,
                            capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MISSING:" in result.stdout and "not in the local cache" in result.stdout
    out = load_file(tmp_path / "out.safetensors")
    np.testing.assert_array_equal(out["gemma_W_enc"].numpy(), params["W_enc"])
    np.testing.assert_array_equal(out["gemma_threshold"].numpy(), params["threshold"])
    torch.testing.assert_close(out["sparsify_W_enc"], raw["layers.1"]["encoder.weight"].T, rtol=0, atol=0)
    assert int(out["sparsify_k"]) == 3


def test_references_name_their_repository_and_path():
    assert locate("hf://EleutherAI/sae-pythia-70m-32k/layers.3") == HubLocation("EleutherAI/sae-pythia-70m-32k",
                                                                                  "layers.3")
    assert locate("hf://owner/repo") == HubLocation("owner/repo", "")
    assert locate("gpt2-small-res-jb/blocks.8.hook_resid_pre") == HubLocation(
        "jbloom/GPT2-Small-SAEs-Reformatted", "blocks.8.hook_resid_pre")
    assert locate("some_folder") is None
    with pytest.raises(InputError, match="hf://owner/repo"):
        locate("hf://onlyowner")


def test_releases_come_from_an_installed_saelens_directory(tmp_path, monkeypatch):
    package = tmp_path / "sae_lens"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('saekit must read the YAML, not import SAELens')\n")
    (package / "pretrained_saes.yaml").write_text(
        "my-release-canonical:\n  conversion_func: null\n  model: gpt2\n  repo_id: someone/saes\n  saes:\n"
        "  - id: layer_2/canonical\n    path: layer_2/width_16k/average_l0_40\n    l0: 40\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert locate("my-release-canonical/layer_2/canonical") == HubLocation("someone/saes",
                                                                           "layer_2/width_16k/average_l0_40")
    with pytest.raises(InputError, match="has no SAE 'layer_9/canonical'.*layer_2/canonical"):
        locate("my-release-canonical/layer_9/canonical")
    assert locate("other-release/x") is None
