import pytest

import saekit


@pytest.mark.parametrize("bad,match", [
    (dict(total_tokens=0), "total_tokens"),
    (dict(lr=-1.0), "lr"),
    (dict(lr_warmup_fraction=1.5), "share of training"),
    (dict(lr_warmup_fraction=0.6, lr_decay_fraction=0.6), "must not exceed 1"),
    (dict(l1_coefficient=-1.0), "l1_coefficient"),
    (dict(resample_at=(0.5, 0.2)), "increasing fractions"),
    (dict(resample_at=(0.1,), total_tokens=1000, dead_window_tokens=500), "before the first resample"),
    (dict(checkpoint_every_tokens=100), "needs checkpoint_dir"),
    (dict(dense_threshold=0.0), "firing rate"),
    (dict(aux_k=0), "aux_k"),
])
def test_bad_settings_say_what_to_change(bad, match):
    with pytest.raises(ValueError, match=match):
        saekit.TrainConfig(**bad)


def test_defaults_work_and_config_is_frozen():
    cfg = saekit.TrainConfig()
    with pytest.raises(AttributeError):
        cfg.lr = 1.0
    assert cfg.replace(lr=1e-3).lr == 1e-3


def test_presets():
    paper = saekit.TrainConfig.towards_monosemanticity(total_tokens=1_000_000)
    assert paper.resample_at == (0.1, 0.2, 0.3, 0.4) and paper.decoder_norm == "unit"
    assert paper.dead_window_tokens <= 0.1 * 1_000_000
    april = saekit.TrainConfig.april_2024(total_tokens=1_000_000, lr=5e-5)
    assert april.decoder_norm == "free" and april.l1_weighted_by_decoder_norm and not april.resample_at
    assert april.lr == 5e-5 and april.decoder_init_norm == 0.1


def test_batch_size_for_gives_a_thousand_steps_where_the_budget_allows():
    from saekit.training.config import MIN_STEPS, batch_size_for

    assert batch_size_for(1_000_000) == 512  # 1,953 steps; 1024 would give 976
    assert batch_size_for(MIN_STEPS * 4096) == 4096
    assert batch_size_for(10**9) == 4096
    assert batch_size_for(1000) == 256  # the smallest it chooses, even for a few steps
    sizes = [batch_size_for(n) for n in range(100_000, 5_000_000, 50_000)]
    assert sizes == sorted(sizes)
    for n, size in zip(range(100_000, 5_000_000, 50_000), sizes):
        assert size == 256 or n // size >= MIN_STEPS
        assert size == 4096 or n // (2 * size) < MIN_STEPS


def test_the_dead_window_defaults_to_a_tenth_of_the_run():
    assert saekit.TrainConfig(total_tokens=200_000).dead_window == 20_000
    assert saekit.TrainConfig(total_tokens=100_000_000).dead_window == 1_000_000
    assert saekit.TrainConfig(total_tokens=200_000, resample_at=(0.05,)).dead_window == 10_000
    assert saekit.TrainConfig(total_tokens=200_000, dead_window_tokens=5).dead_window == 5
