import pytest
import torch

import saekit
from saekit.synthetic import SparseDictionary
from saekit.training import precision


def test_explicit_choices_win_and_small_or_non_fp32_saes_keep_their_dtype():
    cpu = torch.device("cpu")
    assert precision.resolve_compute_dtype("bfloat16", torch.float32, cpu, 8, 8) == torch.bfloat16
    assert precision.resolve_compute_dtype("float32", torch.float32, cpu, 4096, 4096) == torch.float32
    assert precision.resolve_compute_dtype("auto", torch.float64, cpu, 4096, 4096) == torch.float64
    assert precision.resolve_compute_dtype("auto", torch.float32, cpu, 16, 64) == torch.float32


@pytest.mark.parametrize("fp32_s,bf16_s,expected", [(1.0, 0.5, torch.bfloat16), (1.0, 0.9, torch.float32),
                                                    (1.0, 3.0, torch.float32)])
def test_auto_takes_bf16_only_where_it_is_clearly_faster(monkeypatch, fp32_s, bf16_s, expected):
    seconds = {torch.float32: fp32_s, torch.bfloat16: bf16_s}
    monkeypatch.setattr(precision, "product_seconds", lambda dtype, *args, **kw: seconds[dtype])
    precision.fastest_product_dtype.cache_clear()
    try:
        assert precision.resolve_compute_dtype("auto", torch.float32, torch.device("cpu"), 1024, 1024) == expected
    finally:
        precision.fastest_product_dtype.cache_clear()


def test_product_timing_is_positive():
    assert precision.product_seconds(torch.float32, "cpu", 8, 16, batch=4, reps=1) > 0


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_training_with_bf16_products_ends_where_fp32_does(arch):
    """The numerics hold: same data, same seed, bf16 products vs fp32: final loss and L0 within a few %."""
    truth = SparseDictionary(d_in=32, n_features=64, p_active=0.03)
    ends = []
    for compute in ("float32", "bfloat16"):
        extra = {"k": 4} if arch == "topk" else {}
        sae = saekit.SAE.create(arch, 32, 128, seed=0, **extra)
        cfg = saekit.TrainConfig(total_tokens=1024 * 150, lr=3e-3, l1_coefficient=0.5, compute_dtype=compute)
        result = saekit.train(sae, truth.batches(1024, 150), cfg, progress=False)
        assert result.summary["compute_dtype"] == compute
        ends.append(result.history.iloc[-1])
    fp32, bf16 = ends
    assert bf16["fvu"] == pytest.approx(fp32["fvu"], rel=0.1, abs=0.005)
    assert bf16["l0"] == pytest.approx(fp32["l0"], rel=0.05)
