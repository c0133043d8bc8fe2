"""The sparse training paths give the same gradients every time, even with the other core busy: no kernel whose
float sums depend on thread timing (torch's CPU scatter-add behind `tensor[index]`'s backward is one)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import saekit
from saekit.saes import LossContext
from saekit.synthetic import SparseDictionary

from helpers import ARCHS, with_k


@pytest.fixture
def busy_core_and_two_threads():
    """Two torch threads while another process keeps a core busy: threads get preempted mid-kernel."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)
    hog.kill()
    hog.wait()


@pytest.mark.parametrize("arch", ARCHS)
def test_sparse_gradients_do_not_depend_on_timing(arch, busy_core_and_two_threads):
    x = SparseDictionary(d_in=256, n_features=1024, p_active=0.02).sample(1024, torch.Generator().manual_seed(0))
    sae = saekit.SAE.create(arch, 256, 2048, seed=0, **with_k(arch, 64))
    ctx = LossContext(sparsity_coefficient=0.4, l1_weighted_by_decoder_norm=True, dead=torch.arange(2048) < 512,
                      aux_coefficient=1 / 32, aux_k=128)

    def gradients() -> dict[str, torch.Tensor]:
        sae.zero_grad(set_to_none=True)
        sae.loss(x * 3, ctx, sparse=True).total.backward()
        return {name: p.grad.clone() for name, p in sae.named_parameters() if p.grad is not None}

    first = gradients()
    for _ in range(12):
        again = gradients()
        for name, grad in first.items():
            assert torch.equal(again[name], grad), f"{arch}: the gradient of {name} changed between identical steps"
