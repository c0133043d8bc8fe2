"""Small builders shared by the tests (tests/ is on sys.path through conftest.py)."""

import torch

import saekit

ARCHS = ["relu", "topk", "batchtopk", "jumprelu"]


def make_sae(arch: str, d_in: int = 16, d_sae: int = 48, **kw) -> saekit.SAE:
    """An SAE with non-trivial biases and thresholds, so every term of its equations matters."""
    extra = {"k": 5} if arch in ("topk", "batchtopk") else {}
    sae = saekit.SAE.create(arch, d_in, d_sae, seed=1, **{**extra, **kw})
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2)
        sae.b_dec.normal_(0, 0.5)
        if arch == "jumprelu":
            sae.threshold.uniform_(0.0, 0.3)
        if arch == "batchtopk":
            sae.threshold.fill_(0.15)
    return sae
