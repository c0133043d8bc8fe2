"""The registry: an architecture declares what the trainer and the formats need, so adding one is one file."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor

import saekit
from saekit.saes import SAE, LossContext, ReLUSAE, TopKSAE, register, registry
from saekit.synthetic import SparseDictionary


@pytest.fixture
def scratch_registry(monkeypatch):
    """Architectures registered in a test are gone after it."""
    monkeypatch.setattr(registry, "_ARCHITECTURES", dict(registry._ARCHITECTURES))


class ShiftedReLUSAE(SAE):
    """A new architecture written as a user would: f = ReLU(pre − 0.01), with an L1 penalty."""

    arch = "shifted_relu"
    sparsity_penalty = "l1"

    def activate(self, pre: Tensor) -> Tensor:
        return torch.relu(pre - 0.01)

    def sparsity_loss(self, f: Tensor, pre: Tensor, ctx: LossContext) -> Tensor:
        return f.sum(-1).mean()


class WideTopKSAE(TopKSAE):
    """A TopK variant under a new name: it keeps TopK's k, AuxK and SAELens keys without saying so again."""

    arch = "wide_topk"
    saelens_reads = ()


def _l0_after_training(arch: str, l1: float, **kw) -> float:
    truth = SparseDictionary(d_in=16, n_features=32, p_active=0.05)
    sae = saekit.SAE.create(arch, 16, 64, seed=0, **kw)
    cfg = saekit.TrainConfig(total_tokens=512 * 200, lr=3e-3, l1_coefficient=l1)
    return float(saekit.train(sae, truth.batches(512, 200), cfg, progress=False).summary["l0"])


def test_a_new_architectures_penalty_reaches_the_trainer(scratch_registry):
    register(ShiftedReLUSAE)
    assert "shifted_relu" in saekit.architectures()
    loose, sparse = _l0_after_training("shifted_relu", 0.0), _l0_after_training("shifted_relu", 3.0)
    assert sparse < 0.5 * loose, (loose, sparse)  # measured: L0 19.4 at λ 0, 7.4 at λ 3; alike with no penalty


def test_a_new_topk_keeps_its_k_and_auxk_through_training_and_save(scratch_registry, tmp_path):
    register(WideTopKSAE)
    assert WideTopKSAE.uses_aux_k and WideTopKSAE.hyperparameter_names() == ("k",)
    sae = saekit.SAE.create("wide_topk", 16, 64, k=3, seed=0)
    truth = SparseDictionary(d_in=16, n_features=32, p_active=0.05)
    cfg = saekit.TrainConfig(total_tokens=512 * 20, lr=3e-3, dead_window_tokens=512)
    saekit.train(sae, truth.batches(512, 20), cfg, progress=False)
    sae.save(tmp_path / "wide")
    cfg_json = json.loads((tmp_path / "wide" / "cfg.json").read_text())
    assert cfg_json["k"] == 3 and cfg_json["saekit"]["hyperparams"] == {"k": 3}
    loaded = saekit.load_sae(tmp_path / "wide")
    assert type(loaded) is WideTopKSAE and loaded.k == 3
    x = torch.randn(8, 16)
    assert torch.equal(loaded.encode(x), sae.encode(x)) and int((loaded.encode(x) > 0).sum(-1).max()) <= 3


def test_register_refuses_a_taken_name(scratch_registry):
    class Impostor(ReLUSAE):
        arch = "topk"

    with pytest.raises(ValueError, match="'topk' is taken by .*TopKSAE"):
        register(Impostor)
    assert registry.sae_class("topk") is TopKSAE
    register(TopKSAE)  # the same class again (a module reloaded) is fine


def test_register_refuses_a_saelens_name_already_read(scratch_registry):
    class AnotherStandard(ReLUSAE):
        arch = "relu2"

    with pytest.raises(ValueError, match="'standard' is read as 'relu' already: set AnotherStandard.saelens_reads"):
        register(AnotherStandard)
    assert "relu2" not in saekit.architectures()


def test_register_refuses_an_unknown_penalty(scratch_registry):
    class Odd(ReLUSAE):
        arch = "odd"
        saelens_reads = ()
        sparsity_penalty = "l2"

    with pytest.raises(ValueError, match="sparsity_penalty must be 'l1', 'l0' or None"):
        register(Odd)


@pytest.mark.parametrize("arch", saekit.architectures())
def test_every_architecture_declares_how_it_is_trained_and_saved(arch):
    cls = registry.sae_class(arch)
    assert cls.sparsity_penalty in (None, "l1", "l0") and isinstance(cls.uses_aux_k, bool)
    assert cls.sparsity_penalty is None or not cls.uses_aux_k  # a penalty or a fixed L0 kept alive by AuxK
    assert cls.saelens_architecture and all(registry.saelens_class(name) is cls for name in cls.saelens_reads)
    kw = {"k": 4} if "k" in cls.hyperparameter_names() else {}
    sae = saekit.SAE.create(arch, 8, 16, **kw)
    assert set(cls.hyperparameter_names()) >= set(sae.hyperparams())
