import pytest
import torch

import saekit
from saekit.synthetic import SparseDictionary
from saekit.training import precision

from helpers import with_k


def test_explicit_choices_win_and_small_or_non_fp32_saes_keep_their_dtype():
    cpu = torch.device("cpu")
    assert precision.resolve_compute_dtype("bfloat16", torch.float32, cpu, 8, 8) == torch.bfloat16
    assert precision.resolve_compute_dtype("float32", torch.float32, cpu, 4096, 4096) == torch.float32
    assert precision.resolve_compute_dtype("auto", torch.float64, cpu, 4096, 4096) == torch.float64
    assert precision.resolve_compute_dtype("auto", torch.float32, cpu, 16, 64) == torch.float32


@pytest.fixture
def hardware(monkeypatch):
    """Pretend the CPU has (or lacks) native bf16 products, and a CUDA device of a given capability."""
    def set_hardware(flags=frozenset(), capability=(7, 5)):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
        precision._native_bf16.cache_clear()
    yield set_hardware
    precision._native_bf16.cache_clear()


@pytest.mark.parametrize("flags,expected", [({"avx512f", "avx512_bf16"}, torch.bfloat16),
                                            ({"amx_bf16"}, torch.bfloat16), ({"avx2", "avx512f"}, torch.float32)])
def test_auto_on_cpu_takes_bf16_only_with_native_bf16_products(hardware, flags, expected):
    hardware(flags)
    assert precision.resolve_compute_dtype("auto", torch.float32, torch.device("cpu"), 1024, 1024) == expected


@pytest.mark.parametrize("capability,expected", [((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16),
                                                 ((7, 5), torch.float32)])
def test_auto_on_cuda_takes_bf16_from_compute_capability_8(hardware, capability, expected):
    hardware(capability=capability)
    assert precision.resolve_compute_dtype("auto", torch.float32, torch.device("cuda:0"), 1024, 1024) == expected


def test_auto_does_not_time_anything_so_load_cannot_flip_it(hardware, monkeypatch):
    hardware({"avx512_bf16"})
    monkeypatch.setattr(torch, "mm", lambda *a, **k: pytest.fail("auto must not time products"))
    choices = {precision.resolve_compute_dtype("auto", torch.float32, torch.device("cpu"), 512, 4096)
               for _ in range(5)}
    assert choices == {torch.bfloat16}


def test_cpu_flags_are_read_from_cpuinfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512_bf16 amx_bf16\n\nprocessor\t: 1\n")
    monkeypatch.setattr(precision.sys, "platform", "linux")
    assert {"avx512_bf16", "amx_bf16", "fpu"} <= precision.cpu_flags(str(info))
    assert precision.cpu_flags(str(tmp_path / "missing")) == frozenset()
    monkeypatch.setattr(precision.sys, "platform", "darwin")
    assert precision.cpu_flags(str(info)) == frozenset()


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_training_with_bf16_products_ends_where_fp32_does(arch):
    """The numerics hold: same data, same seed, bf16 products vs fp32: final loss and L0 within a few %."""
    truth = SparseDictionary(d_in=32, n_features=64, p_active=0.03)
    ends = []
    for compute in ("float32", "bfloat16"):
        sae = saekit.SAE.create(arch, 32, 128, seed=0, **with_k(arch, 4))
        cfg = saekit.TrainConfig(total_tokens=1024 * 150, lr=3e-3, l1_coefficient=0.5, compute_dtype=compute)
        result = saekit.train(sae, truth.batches(1024, 150), cfg, progress=False)
        assert result.summary["compute_dtype"] == compute
        ends.append(result.history.iloc[-1])
    fp32, bf16 = ends
    assert bf16["fvu"] == pytest.approx(fp32["fvu"], rel=0.1, abs=0.005)
    assert bf16["l0"] == pytest.approx(fp32["l0"], rel=0.05)
