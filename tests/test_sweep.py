"""train_many: several dictionaries from one pass over the batches, each ending where it would alone."""

from __future__ import annotations

import pytest
import torch

import saekit
from saekit.errors import InputError
from saekit.synthetic import SparseDictionary
from saekit.training import TrainConfig

D = 16


class Counted:
    """Batches that count how often they are iterated, and can be made to stop (as a kill would) after some."""

    def __init__(self, batches: list[torch.Tensor], stop_after: int | None = None) -> None:
        self.batches, self.stop_after, self.passes = batches, stop_after, 0

    def __iter__(self):
        self.passes += 1
        for i, batch in enumerate(self.batches):
            if self.stop_after is not None and i == self.stop_after:
                raise KeyboardInterrupt
            yield batch


def _batches(n=40, size=64) -> list[torch.Tensor]:
    return list(SparseDictionary(d_in=D, n_features=40, p_active=0.08, seed=0).batches(size, n, seed=1))


def _members():
    """Four architectures, two sizes, each with its own recipe (resampling for relu, whose first 8 features start
    dead; AuxK for the TopKs)."""
    saes = [saekit.SAE.create("relu", D, 48, seed=1), saekit.SAE.create("topk", D, 32, k=4, seed=2),
            saekit.SAE.create("batchtopk", D, 64, k=3, seed=3), saekit.SAE.create("jumprelu", D, 32, seed=4)]
    with torch.no_grad():
        saes[0].b_enc[:8] = -100.0
    configs = [TrainConfig(total_tokens=2560, lr=2e-3, resample_at=(0.5,), dead_window_tokens=640, seed=5),
               TrainConfig(total_tokens=2560, lr=1e-3, dead_window_tokens=320),
               TrainConfig(total_tokens=1280, lr=1e-3),  # stops halfway through the shared pass
               TrainConfig(total_tokens=2560, lr=1e-3, l0_coefficient=0.1)]
    return saes, configs


def _same(a: saekit.SAE, b: saekit.SAE) -> None:
    for name, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_a_sweep_reads_once_and_each_ends_as_it_would_alone():
    saes, configs = _members()
    batches = Counted(_batches())
    runs = saekit.train_many(saes, batches, configs, progress=False)
    assert batches.passes == 1
    for run, (sae, config) in zip(runs, zip(*_members())):
        alone = saekit.train(sae, _batches(), config, progress=False)
        _same(alone.sae, run.sae)
        assert run.summary["tokens"] == config.total_tokens
    assert runs[0].summary["resampled_features"] >= 8


def test_members_train_on_their_own_columns():
    wide = [torch.cat([b, b.flip(1)], 1) for b in _batches()]
    first, second = saekit.SAE.create("topk", D, 32, k=4, seed=1), saekit.SAE.create("topk", D, 32, k=4, seed=1)
    config = TrainConfig(total_tokens=1280, lr=1e-3)
    saekit.train_many([first, second], wide, config, columns=[slice(0, D), slice(D, 2 * D)], progress=False)
    for sae, part in ((first, slice(0, D)), (second, slice(D, 2 * D))):
        alone = saekit.train(saekit.SAE.create("topk", D, 32, k=4, seed=1), [b[:, part] for b in wide], config,
                             progress=False)
        _same(alone.sae, sae)
    assert not torch.equal(first.W_dec, second.W_dec)
    with pytest.raises(ValueError, match="d_in=16"):
        saekit.train_many([saekit.SAE.create("topk", D, 32, k=4)], wide, config, progress=False)


def test_a_killed_sweep_resumes_to_the_same_weights(tmp_path):
    saes, configs = _members()
    configs = [c.replace(checkpoint_dir=str(tmp_path / str(i)), checkpoint_every_tokens=640)
               for i, c in enumerate(configs)]
    with pytest.raises(KeyboardInterrupt):
        saekit.train_many(saes, Counted(_batches(), stop_after=23), configs, progress=False)
    fresh, _ = _members()
    resumed = saekit.train_many(fresh, _batches(), configs, resume=[c.checkpoint_dir for c in configs],
                                progress=False)
    whole, _ = _members()
    expected = saekit.train_many(whole, _batches(), [c.replace(checkpoint_dir=None, checkpoint_every_tokens=None)
                                                     for c in configs], progress=False)
    for a, b in zip(expected, resumed):
        _same(a.sae, b.sae)


def _refitting():
    """Three dictionaries whose decoder refits read different stretches of the shared pass: two stop training at
    the same batch (each refits on the batches after it, not after the other's refit), one trains longer."""
    saes = [saekit.SAE.create("relu", D, 48, seed=1), saekit.SAE.create("relu", D, 32, seed=2),
            saekit.SAE.create("topk", D, 32, k=4, seed=3)]
    configs = [TrainConfig(total_tokens=1280, lr=2e-3, decoder_refit_tokens=640),
               TrainConfig(total_tokens=1280, lr=1e-3, decoder_refit_tokens=640),
               TrainConfig(total_tokens=1920, lr=1e-3, decoder_refit_tokens=320)]
    return saes, configs


def test_each_decoder_refit_reads_the_batches_after_its_own_training():
    saes, configs = _refitting()
    runs = saekit.train_many(saes, _batches(), configs, progress=False)
    for run, (sae, config) in zip(runs, zip(*_refitting())):
        alone = saekit.train(sae, _batches(), config, progress=False)
        assert run.summary["decoder_refit"]["tokens"] == config.decoder_refit_tokens
        assert run.summary["decoder_refit"] == alone.summary["decoder_refit"]
        _same(alone.sae, run.sae)


@pytest.mark.parametrize("stop_after", [22, 27])  # during the first two's refits; during the third's training
def test_a_sweep_killed_during_a_refit_resumes_to_the_same_weights(tmp_path, stop_after):
    saes, configs = _refitting()
    configs = [c.replace(checkpoint_dir=str(tmp_path / str(i)), checkpoint_every_tokens=640)
               for i, c in enumerate(configs)]
    with pytest.raises(KeyboardInterrupt):
        saekit.train_many(saes, Counted(_batches(), stop_after=stop_after), configs, progress=False)
    fresh, _ = _refitting()
    resumed = saekit.train_many(fresh, _batches(), configs, resume=[c.checkpoint_dir for c in configs],
                                progress=False)
    whole, plain = _refitting()
    for run, sae, config in zip(resumed, whole, plain):
        _same(saekit.train(sae, _batches(), config, progress=False).sae, run.sae)


def test_bad_sweeps_say_what_to_change():
    saes, configs = _members()
    with pytest.raises(InputError, match="one config"):
        saekit.train_many(saes, _batches(), configs[:2], progress=False)
    shared = [c.replace(checkpoint_dir="same") for c in configs]
    with pytest.raises(InputError, match="checkpoint_dir"):
        saekit.train_many(saes, _batches(), shared, progress=False)
