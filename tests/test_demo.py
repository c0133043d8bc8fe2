"""The demo pipeline end to end on a tiny profile: caching, rebuilding what changed, resuming, reading it back."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from saekit import demo as D
from saekit.cached_steps import DONE
from saekit.embedded import CorpusConfig, EmbeddedConfig, LMConfig, TokenizerConfig

from helpers import write_topic_folder


def tiny_profile(text_folder, **changes) -> D.DemoProfile:
    lm = LMConfig(d_model=32, n_mlp=64, n_head=2, context=32, tokens=16_384, batch_size=8, eval_tokens=4096,
                  threads=1, log_every=20)
    embedded = EmbeddedConfig(CorpusConfig(source="folder", folder=text_folder, target_bytes=400_000),
                              TokenizerConfig(vocab_size=320), lm)
    relu = lambda model, n: D.SAESpec(model, "relu", n, 8192, lr=3e-3, l1_coefficient=1.0,  # noqa: E731
                                      recipe="april_2024", refit_tokens=1024,
                                      finetune_tokens=2048)
    saes = (relu("A", 32), relu("A", 64), relu("A", 128), D.SAESpec("A", "topk", 128, 8192, lr=3e-3, k=4),
            relu("B", 128), D.SAESpec("A", "topk", 128, 8192, lr=3e-3, k=4, kind="transcoder"),
            D.SAESpec("A", "topk", 128, 8192, lr=3e-3, k=8, kind="crosscoder"))
    profile = D.DemoProfile("tiny", saes, batch_size=512, eval_tokens=2048, store_tokens=4096,
                            family_store_tokens=2048, universality_tokens=4096, splitting_tokens=4096,
                            a1_features=128, embedded=embedded)
    return dataclasses.replace(profile, **changes)


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory) -> Path:
    return write_topic_folder(tmp_path_factory.mktemp("docs"))


@pytest.fixture(scope="module")
def built(text_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    logs: list[str] = []
    demo = D.run_demo(tiny_profile(text_folder), out, progress=False, log=logs.append)
    return out, demo, logs


def test_builds_everything_the_notebooks_open(built):
    out, demo, logs = built
    table = demo.eval_table()
    assert {"model", "arch", "n_features", "l0", "dead_fraction", "fvu", "loss_recovered", "loss_increase",
            "loss_clean", "loss_mean_ablated", "name"} <= set(table.columns)
    assert len(table) == 7 and set(table["model"]) == {"A", "B", "A+B"}
    assert list(table["kind"]) == ["sae"] * 5 + ["transcoder", "crosscoder"]
    cross = table.set_index("name").loc["AB-topk-128-crosscoder"]
    assert cross["loss_increase"] == pytest.approx((cross["loss_increase_A"] + cross["loss_increase_B"]) / 2, abs=1e-9)
    assert demo.sae("A-topk-128-transcoder").is_transcoder and demo.sae("AB-topk-128-crosscoder").n_models == 2
    assert demo.sae("A-topk-128-transcoder").provenance.target_hook == D.MLP_OUTPUT_HOOK
    assert (table["loss_increase"] > -0.5).all() and table["fvu"].between(0, 2).all()
    assert demo.a1_name == "A-relu-128" and demo.family_names("A") == ["A-relu-32", "A-relu-64", "A-relu-128"]
    assert demo.sae("A-topk-128").k == 4
    assert demo.density("A-relu-128").shape == (128,)
    store = demo.feature_store("A-relu-128")
    assert store.feature_table().shape[0] == 128
    assert demo.feature_store("A-relu-64").token_ids.shape == (2048 // 32, 32)  # family_store_tokens honoured
    assert demo.feature_store("A-neurons").feature_table().shape[0] == 64
    assert len(demo.universality().features) == 128 and len(demo.universality().neurons) == 64
    assert set(demo.splitting_edges()["size_to"]) <= {64, 128}
    assert not demo.models_table().empty
    assert any("evaluation table" in line for line in logs)
    assert D.open_demo(out).sae_names() == demo.sae_names()


def test_second_run_is_cached_and_a_change_rebuilds_only_what_depends_on_it(built, text_folder, tmp_path):
    out, _, _ = built
    logs: list[str] = []
    D.run_demo(tiny_profile(text_folder), out, progress=False, log=logs.append)
    assert all("cached" in line for line in logs if line.startswith("[saekit] SAE"))
    changed = tiny_profile(text_folder)
    saes = list(changed.saes)
    saes[3] = dataclasses.replace(saes[3], tokens=4096)  # the topk SAE only
    logs.clear()
    copy = shutil.copytree(out, tmp_path / "demo")  # the module's demo stays as built, for the tests after this one
    D.run_demo(dataclasses.replace(changed, saes=tuple(saes)), copy, progress=False, log=logs.append)
    rebuilt = [line for line in logs if line.startswith("[saekit]") and "building" in line]
    assert any("A-topk-128" in line for line in rebuilt) and any("evaluation" in line for line in rebuilt)
    assert not any("A-relu" in line or "B-relu" in line for line in rebuilt)


def test_interrupted_sae_training_resumes(built, text_folder, tmp_path, monkeypatch):
    """Stopped mid-pass (Ctrl-C inside the activations), the SAEs of a stream resume from their checkpoints and
    end with the uninterrupted build's weights, byte for byte."""
    from saekit.activations.source import ActivationSource

    out, demo, _ = built
    original = ActivationSource.batches_from
    calls = []

    def interrupt_first_pass(self, first_batch):
        for i, batch in enumerate(original(self, first_batch)):
            if not calls and i == 10:  # checkpoints every 4 batches of 512: two written
                calls.append(i)
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(ActivationSource, "batches_from", interrupt_first_pass)
    monkeypatch.setattr(D, "available_cores", lambda: 1)  # SAEs in this process, where the patch reaches
    with pytest.raises(KeyboardInterrupt):
        D.run_demo(tiny_profile(text_folder), tmp_path, progress=False, log=lambda m: None)
    first = "A-relu-128"  # the costliest stream, the A family's, trains first
    assert (tmp_path / "saes" / first / "checkpoints").is_dir() and not (tmp_path / "saes" / first / DONE).exists()
    logs: list[str] = []
    D.run_demo(tiny_profile(text_folder), tmp_path, progress=False, log=logs.append)
    assert any(f"{first}: resuming" in line for line in logs)
    for name in demo.sae_names():
        weights = "sae_weights.safetensors"
        assert (tmp_path / "saes" / name / weights).read_bytes() == (out / "saes" / name / weights).read_bytes(), name


def test_saes_of_one_stream_train_from_one_pass_as_each_would_alone(built, text_folder, tmp_path):
    """The A family (one model, hook and token budget) trains from one pass: each dictionary equals, byte for byte,
    the same spec trained by itself; the others trained apart. The step records who shared the pass."""
    out, _, _ = built
    profile = tiny_profile(text_folder)
    family = ["A-relu-32", "A-relu-64", "A-relu-128"]
    for name in family:
        assert json.loads((out / "saes" / name / DONE).read_text())["outputs"]["trained_with"] == family
    assert json.loads((out / "saes" / "A-topk-128" / DONE).read_text())["outputs"]["trained_with"] == ["A-topk-128"]
    spec = next(s for s in profile.saes if s.name == "A-relu-64")
    folders = [out / f"model_{m}" for m in spec.models]
    alone = D.train_demo_sae(spec, folders, out / "tokens" / "train.npy", profile, tmp_path / spec.name,
                             progress=False)
    assert alone["tokens"] >= spec.tokens
    weights = "sae_weights.safetensors"
    assert (tmp_path / spec.name / weights).read_bytes() == (out / "saes" / spec.name / weights).read_bytes()


def test_missing_demo_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv(D.DEMO_DIR_ENV, str(tmp_path / "nothing"))
    with pytest.raises(D.DemoNotFoundError, match="saekit demo --profile quick"):
        D.open_demo()


def test_profiles_are_checked(text_folder):
    with pytest.raises(ValueError, match="universality"):
        tiny_profile(text_folder, a1_features=999)
    assert D.PROFILES["quick"].a1.name == "A-relu-4096"
    assert [s.n_features for s in D.PROFILES["full"].family()] == [512, 1024, 2048, 4096, 8192, 16384]


def test_recipes_reach_the_trainer(tmp_path):
    relu = D.SAESpec("A", "relu", 256, 100_000, l1_coefficient=1.5, recipe="april_2024", resample=True)
    cfg = D.spec_train_config(relu, tmp_path)
    assert cfg.l1_weighted_by_decoder_norm and cfg.decoder_norm == "free"  # the 2024 loss
    assert cfg.resample_at == (0.1, 0.2, 0.3, 0.4) and cfg.dead_window_tokens == 5_000  # the 2023 resampling
    assert cfg.resample_pool_tokens == 100_000 // D.RESAMPLE_POOL_SHARE  # drawn from the run's latest inputs
    assert cfg.l1_coefficient == 1.5 and cfg.total_tokens == 100_000 and cfg.compute_dtype == "auto"
    topk = D.spec_train_config(D.SAESpec("A", "topk", 256, 100_000, k=8), tmp_path)
    assert topk.resample_at == () and not topk.l1_weighted_by_decoder_norm and topk.dead_window_tokens == 5_000
    full = D.PROFILES["full"]
    a1, b1 = full.a1, next(s for s in full.saes if s.name == "B-relu-4096")
    assert (a1.arch, a1.n_features, a1.recipe, a1.resample) == ("relu", 4096, "april_2024", False)
    # B/1 is trained exactly as A/1, as in the paper (its decoder is not fine-tuned: only its codes are read)
    assert dataclasses.replace(b1, model="A", finetune_tokens=a1.finetune_tokens) == a1
    cfg = D.spec_train_config(a1, tmp_path)
    assert cfg.decoder_refit_tokens == a1.refit_tokens > 0 and cfg.resample_at == ()
    assert a1.finetune_tokens > 0
    with pytest.raises(ValueError, match="finetune_tokens must be >= 0"):
        D.SAESpec("A", "relu", 256, 100_000, finetune_tokens=-1)


def test_finetuned_decoders_are_recorded(built):
    """The tiny profile's relu dictionaries get the decoder's KL fine-tune after training: recorded in the step."""
    out, _, _ = built

    tuned = json.loads((out / "saes" / "A-relu-128" / DONE).read_text())["outputs"]["decoder_finetune"]
    assert tuned["tokens"] >= 2048 and tuned["kl_end"] < tuned["kl_start"]
    assert D.open_demo(out).sae("A-relu-128").provenance.training["decoder_finetune"] == tuned  # saved with it
    assert "decoder_finetune" not in json.loads((out / "saes" / "A-topk-128" / DONE).read_text())["outputs"]


def test_saes_side_by_side_equal_one_at_a_time(built, text_folder, tmp_path, monkeypatch):
    """Each demo SAE trains with SAE_THREADS threads wherever it runs: the side-by-side build (the fixture, on a
    machine with 2+ cores) and a one-at-a-time build give the same weights, byte for byte."""
    out, demo, _ = built
    if D.available_cores() < 2:
        pytest.skip("one core: the fixture built the SAEs one at a time too")
    monkeypatch.setattr(D, "available_cores", lambda: 1)
    alone = tmp_path / "alone"
    D.run_demo(tiny_profile(text_folder), alone, progress=False, log=lambda m: None)
    for name in demo.sae_names():
        weights = "sae_weights.safetensors"
        assert (alone / "saes" / name / weights).read_bytes() == (out / "saes" / name / weights).read_bytes(), name


def test_shared_passes_equal_one_computation_per_dictionary(built, text_folder):
    """The evaluation and feature data steps read each model once for all dictionaries; recomputed the plain way
    (one `evaluate`, `build_feature_store`, `correlate`, `split_similarities` call each), they agree."""
    import numpy as np

    from saekit.activations.nnsight_api import load_model
    from saekit.analysis.features import build_feature_store
    from saekit.analysis.splitting import split_edges, split_similarities
    from saekit.analysis.universality import best_match_tables, correlate
    from saekit.evaluation import evaluate

    out, demo, _ = built
    profile = tiny_profile(text_folder)
    models = {m: load_model(out / f"model_{m}") for m in ("A", "B")}
    windows = D.mixed_heldout_windows(out / "tokens" / "heldout.npy", models["A"], profile.seed)
    saes = {name: demo.sae(name) for name in demo.sae_names()}

    table = demo.eval_table().set_index("name")
    eval_windows = D.first_windows(windows, profile.eval_tokens)
    for spec in profile.saes:
        read = [models[m] for m in spec.models]
        alone = evaluate(saes[spec.name], read if len(read) > 1 else read[0], eval_windows,
                         hook=D.MLP_HOOK if spec.kind == "sae" else None, max_tokens=None, batch_size=D.EVAL_BATCH,
                         progress=False)
        for key, value in alone.to_dict().items():
            if isinstance(value, float):
                assert table.loc[spec.name, key] == pytest.approx(value, rel=1e-12, abs=1e-12), (spec.name, key)
        assert (demo.density(spec.name) == alone.densities).all()

    budgets = {"A-relu-128": profile.store_tokens, "A-neurons": profile.store_tokens}
    for name in ("A-relu-32", "A-relu-64", "B-relu-128", "B-neurons"):
        budgets[name] = profile.family_store_tokens
    for name, tokens in budgets.items():
        model = models[name[0]]
        expected = build_feature_store(model, D.first_windows(windows, tokens), saes.get(name), hook=D.MLP_HOOK,
                                       progress=False)
        got = demo.feature_store(name)
        for part in ("features", "top", "intervals", "histograms"):
            pd.testing.assert_frame_equal(getattr(got, part), getattr(expected, part), check_dtype=False)
        np.testing.assert_array_equal(got.token_ids, expected.token_ids)

    corr = correlate(models["A"], models["B"], D.first_windows(windows, profile.universality_tokens),
                     saes["A-relu-128"], saes["B-relu-128"], hook=D.MLP_HOOK, progress=False)
    universal = best_match_tables(corr)
    # float32 products summed per batch, and the two passes batch differently (the refit relu codes are not sparse
    # enough here for the sums to come out exact, as the neurons' never are)
    pd.testing.assert_frame_equal(demo.universality().features, universal.features, check_exact=False, rtol=1e-4)
    pd.testing.assert_frame_equal(demo.universality().neurons, universal.neurons, check_exact=False, rtol=1e-4)
    family = [saes[n] for n in demo.family_names("A")]
    split = split_similarities(models["A"], D.first_windows(windows, profile.splitting_tokens), family, hook=D.MLP_HOOK,
                               progress=False)
    pd.testing.assert_frame_equal(demo.splitting_edges(), split_edges(split))
