import pytest

from saekit.training.schedules import lr_factor, warmup_factor


@pytest.mark.parametrize("progress,expected", [(0.0, 0.0), (0.05, 0.5), (0.1, 1.0), (0.5, 1.0), (0.9, 0.5),
                                               (1.0, 0.0)])
def test_lr_warmup_flat_decay(progress, expected):
    assert lr_factor(progress, warmup=0.1, decay=0.2) == pytest.approx(expected)


def test_no_warmup_no_decay_is_flat():
    assert lr_factor(0.0, 0.0, 0.0) == lr_factor(1.0, 0.0, 0.0) == 1.0


def test_warmup_factor():
    assert warmup_factor(0.025, 0.05) == pytest.approx(0.5)
    assert warmup_factor(0.9, 0.05) == 1.0 and warmup_factor(0.0, 0.0) == 1.0
