"""Crash-safe training: a resumed run ends bit for bit where an uninterrupted one does, for every architecture;
half-written checkpoints, other settings, NaN inputs and Ctrl-C are each handled without losing saved work."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
import torch

import saekit
from saekit.activations import nnsight_api as api
from saekit.activations.source import ActivationConfig, ActivationSource
from saekit.training.checkpoint import ResumeMismatchError, checkpoint_name, checkpoints
from saekit.training.trainer import NonFiniteError

from helpers import ARCHS, HOOK, with_k

BATCH, STEPS = 64, 48
TOTAL = BATCH * STEPS


def _source(lm, text_dir) -> ActivationSource:
    """16 batches per buffer block, 3 blocks in all."""
    config = ActivationConfig(hook=HOOK, context_len=16, batch_size=BATCH, model_batch_size=4,
                              buffer_bytes=16 * BATCH * 128 * 4 + 3 * 4 * 16 * 128 * 4, total_tokens=TOTAL, seed=2)
    return ActivationSource(lm, text_dir, config, progress=False)


def _sae(arch: str, seed: int = 0) -> saekit.SAE:
    sae = saekit.SAE.create(arch, 128, 256, seed=seed, **with_k(arch, 8))
    with torch.no_grad():
        sae.b_enc[:16] = -1e3  # 16 features that cannot fire: resampling has work to do
    return sae


def _config(folder, **kw) -> saekit.TrainConfig:
    return saekit.TrainConfig.towards_monosemanticity(
        total_tokens=TOTAL, lr=3e-3, l1_coefficient=1.0, dead_window_tokens=512, resample_pool_tokens=128,
        resample_at=(0.2, 0.5, 0.7),  # two of three after the resume point (step 20 of 48)
        checkpoint_dir=str(folder), checkpoint_every_tokens=20 * BATCH, keep_checkpoints=0, **kw)


class Interrupted:
    """A source that raises KeyboardInterrupt when asked for batch `at` (as a crash between steps would)."""

    def __init__(self, source: ActivationSource, at: int) -> None:
        self.source, self.at = source, at

    def __iter__(self):
        return self.batches_from(0)

    def batches_from(self, first: int):
        for i, x in enumerate(self.source.batches_from(first), start=first):
            if i == self.at:
                raise KeyboardInterrupt
            yield x


def _same_weights(a: saekit.SAE, b: saekit.SAE) -> None:
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name


@pytest.mark.parametrize("arch", ARCHS)
def test_resumed_run_is_bit_identical_and_skips_the_seen_text(tiny_lm, text_dir, tmp_path, monkeypatch, arch):
    forwards: list[int] = []  # tokens the model ran on
    real = api.get_activations
    monkeypatch.setattr("saekit.activations.nnsight_api.get_activations",
                        lambda model, ids, *a, **k: forwards.append(ids.numel()) or real(model, ids, *a, **k))
    whole = _sae(arch)
    full = saekit.train(whole, _source(tiny_lm, text_dir), _config(tmp_path / "a"), progress=False)
    assert full.summary["resampled_features"] >= 16
    full_forwards = sum(forwards)

    with pytest.raises(KeyboardInterrupt):
        saekit.train(_sae(arch), Interrupted(_source(tiny_lm, text_dir), 30), _config(tmp_path / "b"), progress=False)
    saved = [p.name for p in checkpoints(tmp_path / "b")]
    assert saved == [checkpoint_name(t * BATCH) for t in (20, 30)]
    shutil.rmtree(tmp_path / "b" / saved[-1])  # as if killed: the last periodic checkpoint is at step 20
    partial = tmp_path / "b" / (checkpoint_name(40 * BATCH) + ".partial")  # a checkpoint write killed midway
    partial.mkdir()
    (partial / "trainer_state.json").write_text("{not json")

    forwards.clear()
    resumed = _sae(arch, seed=99)
    out = saekit.train(resumed, _source(tiny_lm, text_dir), _config(tmp_path / "b"), resume=tmp_path / "b",
                       progress=False)
    _same_weights(whole, resumed)
    assert out.history.equals(full.history)
    assert out.summary["resampled_features"] == full.summary["resampled_features"]
    # steps 17-19 refill the resampling pool: the model reruns from block 1 (row 1024 of 3072) on, not from the start
    assert sum(forwards) < 0.75 * full_forwards
    if arch == "jumprelu":
        assert resumed.bandwidth == whole.bandwidth  # scaled with the inputs, restored from the checkpoint


def test_resume_with_other_settings_is_refused_naming_them(tiny_lm, text_dir, tmp_path):
    saekit.train(_sae("relu"), _source(tiny_lm, text_dir), _config(tmp_path), progress=False)
    before = {p.name: (p / "trainer_state.safetensors").read_bytes() for p in checkpoints(tmp_path)}
    with pytest.raises(ResumeMismatchError, match=r"lr: 0\.003 → 0\.001.*") as info:
        saekit.train(_sae("relu"), _source(tiny_lm, text_dir), _config(tmp_path).replace(lr=1e-3, seed=4),
                     resume=tmp_path, progress=False)
    assert "seed: 0 → 4" in str(info.value)
    assert isinstance(info.value, saekit.InputError)
    # the checkpoint interval and logging are bookkeeping: changing them still resumes
    saekit.train(_sae("relu"), _source(tiny_lm, text_dir), _config(tmp_path).replace(log_every_steps=3),
                 resume=tmp_path, progress=False)
    assert {p.name: (p / "trainer_state.safetensors").read_bytes() for p in checkpoints(tmp_path)} == before


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    batches = [torch.randn(64, 16) for _ in range(10)]
    cfg = saekit.TrainConfig(total_tokens=640, checkpoint_dir=str(tmp_path), checkpoint_every_tokens=128)
    saekit.train(saekit.SAE.create("relu", 16, 32, seed=0), batches, cfg, progress=False)
    assert [p.name for p in checkpoints(tmp_path)] == [checkpoint_name(512), checkpoint_name(640)]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_activations_stop_training_naming_the_step(tmp_path, bad):
    batches = [torch.randn(64, 16) for _ in range(6)]
    batches[4][3, 7] = bad
    sae = saekit.SAE.create("relu", 16, 32, seed=0)
    cfg = saekit.TrainConfig(total_tokens=384, checkpoint_dir=str(tmp_path), checkpoint_every_tokens=64)
    with pytest.raises(NonFiniteError, match=r"batch 4 \(256 tokens in\) holds 1 NaN or infinite"):
        saekit.train(sae, batches, cfg, progress=False)
    assert all(torch.isfinite(p).all() for p in sae.parameters())
    assert checkpoints(tmp_path)[-1].name == checkpoint_name(256)
    assert all(torch.isfinite(t).all() for t in saekit.load_sae(checkpoints(tmp_path)[-1]).state_dict().values())


@pytest.mark.parametrize("value", [1e30, 3e37])  # 3e37: finite inputs whose sum overflows are not taken for NaNs
def test_divergence_stops_before_the_weights_change(value):
    sae = saekit.SAE.create("relu", 16, 32, seed=0)
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    with pytest.raises(NonFiniteError, match="training diverged; lower the learning rate"):
        saekit.train(sae, [torch.full((8, 16), value)],
                     saekit.TrainConfig(total_tokens=8, normalize_activations=False, init_b_dec="keep",
                                            decoder_norm="free"), progress=False)
    assert all(torch.equal(v, before[k]) for k, v in sae.state_dict().items())


def test_ctrl_c_stops_after_the_step_and_saves_it(tmp_path):
    def batches():
        for i in range(20):
            if i == 5:
                os.kill(os.getpid(), signal.SIGINT)  # arrives while the trainer runs: taken after this step
            yield torch.randn(64, 16, generator=torch.Generator().manual_seed(i))

    cfg = saekit.TrainConfig(total_tokens=20 * 64, checkpoint_dir=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        saekit.train(saekit.SAE.create("relu", 16, 32, seed=0), batches(), cfg, progress=False)
    assert [p.name for p in checkpoints(tmp_path)] == [checkpoint_name(6 * 64)]  # step 6 finished, then saved
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sae_create_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = saekit.SAE.create("relu", 16, 32)
    b = saekit.SAE.create("relu", 16, 32)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not torch.equal(a.W_dec, b.W_dec)  # unseeded SAEs still differ
