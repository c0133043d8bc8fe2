"""SAEs on the Hugging Face Hub: `"hf://owner/repo/path/in/repo"` or SAELens's `"release/sae_id"`.

A release maps to a repository and a path in it. saekit knows a few releases whose SAE ids are their paths
(`KNOWN_RELEASES`); where SAELens is installed, its `pretrained_saes.yaml` names every release and its paths.
Files come through huggingface_hub's `snapshot_download` (only the SAE's folder), and from its local cache
(HF_HOME) where there is no network or HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import NamedTuple

from saekit.errors import InputError

HF_PREFIX = "hf://"

# SAELens releases whose sae_id is the SAE's folder in the repository
KNOWN_RELEASES = {
    "gemma-scope-2b-pt-res": "google/gemma-scope-2b-pt-res",
    "gemma-scope-2b-pt-mlp": "google/gemma-scope-2b-pt-mlp",
    "gemma-scope-2b-pt-att": "google/gemma-scope-2b-pt-att",
    "gemma-scope-9b-pt-res": "google/gemma-scope-9b-pt-res",
    "gpt2-small-res-jb": "jbloom/GPT2-Small-SAEs-Reformatted",
}


class HubLocation(NamedTuple):
    """Where an SAE lives on the Hub: a repository and the folder in it ("" for its root)."""

    repo_id: str
    path: str


def _saelens_release(release: str, sae_id: str) -> HubLocation | None:
    """The release's entry in an installed SAELens's directory (read as YAML; SAELens is not imported)."""
    spec = importlib.util.find_spec("sae_lens")
    if spec is None or not spec.origin:
        return None
    directory = Path(spec.origin).parent / "pretrained_saes.yaml"
    if not directory.is_file():
        return None
    import yaml  # SAELens depends on PyYAML

    with directory.open() as f:
        releases = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    entry = releases.get(release) if isinstance(releases, dict) else None
    if not isinstance(entry, dict):
        return None
    paths = {str(s.get("id")): str(s.get("path")) for s in entry.get("saes", []) if isinstance(s, dict)}
    if sae_id not in paths:
        raise InputError(f"SAELens release {release!r} has no SAE {sae_id!r}; it has e.g. {sorted(paths)[:5]}")
    return HubLocation(str(entry["repo_id"]), paths[sae_id])


def locate(ref: str) -> HubLocation | None:
    """Where `ref` ("hf://owner/repo[/path]" or "release/sae_id") lives on the Hub; None if it names neither."""
    if ref.startswith(HF_PREFIX):
        parts = [p for p in ref.removeprefix(HF_PREFIX).split("/") if p]
        if len(parts) < 2:
            raise InputError(f"{ref!r}: a Hub reference is hf://owner/repo or hf://owner/repo/path/in/repo")
        return HubLocation("/".join(parts[:2]), "/".join(parts[2:]))
    release, _, sae_id = ref.partition("/")
    if not sae_id:
        return None
    if release in KNOWN_RELEASES:
        return HubLocation(KNOWN_RELEASES[release], sae_id)
    return _saelens_release(release, sae_id)


def download(location: HubLocation, sub_folder: str | None = None) -> Path:
    """The local folder of `location` (and of `sub_folder` in it, e.g. a sparsify hookpoint), downloaded where
    there is a network and read from huggingface_hub's cache where there is none."""
    from huggingface_hub import snapshot_download

    prefix = "/".join(p for p in (location.path, sub_folder) if p)
    patterns = [prefix, f"{prefix}/*"] if prefix else None
    try:
        root = snapshot_download(location.repo_id, allow_patterns=patterns)
    except Exception:  # no network, the Hub refused, or HF_HUB_OFFLINE: whatever the cause, try the cache
        try:
            root = snapshot_download(location.repo_id, allow_patterns=patterns, local_files_only=True)
        except Exception as e:
            raise InputError(
                f"cannot fetch {location.repo_id!r} from the Hugging Face Hub and it is not in the local cache "
                f"({type(e).__name__}): connect to the network once, or set HF_HOME to a cache that holds it"
            ) from None
    folder = Path(root) / location.path
    if not folder.exists():
        raise InputError(f"the Hub repository {location.repo_id!r} has no {location.path!r}")
    return folder
