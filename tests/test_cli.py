"""The `saekit` command line, run in-process on a tiny model folder and a tiny text folder."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

import saekit
from saekit.cli import main

from helpers import HOOK

REQUIRED = (
    "mse", "fvu", "l0", "dead_fraction", "loss_clean", "loss_spliced", "loss_zero_ablated",
    "loss_mean_ablated", "loss_recovered", "loss_increase",
)


def _train_args(model, text, out, **over) -> list[str]:
    args = {
        "--model": model, "--hook": HOOK, "--arch": "topk", "--k": 4, "--features": 32, "--tokens": 256,
        "--text": text, "--out": out, "--batch-size": 64, "--context-len": 16, "--buffer-mb": 1,
    }
    args.update(over)
    return ["train", *[str(x) for kv in args.items() for x in kv], "--quiet"]


@pytest.fixture(scope="module")
def trained(tiny_lm_dir, text_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "sae"
    assert main(_train_args(tiny_lm_dir, text_dir, out)) == 0
    return out


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for word in ("demo", "train", "eval", "examples:"):
        assert word in text


def test_train_saves_a_loadable_sae_with_its_provenance(trained, tiny_lm_dir, text_dir):
    sae = saekit.load_sae(trained)
    assert (sae.arch, sae.d_in, sae.d_sae) == ("topk", 128, 32)
    prov = sae.provenance
    assert prov.model == str(tiny_lm_dir.resolve()) and prov.hook == HOOK
    assert prov.text == str(text_dir.resolve()) and prov.context_len == 16
    assert prov.training["tokens"] >= 256
    assert (trained / "history.csv").is_file()


def test_train_refits_the_decoder_on_further_tokens(tiny_lm_dir, text_dir, tmp_path):
    out = tmp_path / "refit"
    args = _train_args(tiny_lm_dir, text_dir, out, **{"--arch": "relu", "--l1": 1.0, "--refit-tokens": 128})
    k = args.index("--k")
    assert main(args[:k] + args[k + 2:]) == 0
    training = saekit.load_sae(out).provenance.training
    assert training["decoder_refit"]["tokens"] == 128 and training["tokens"] >= 256
    assert training["decoder_refit"]["mse_after"] <= training["decoder_refit"]["mse_before"]
    assert json.loads((out / "run.json").read_text())["settings"]["refit_tokens"] == 128


def test_train_finetunes_the_decoder_on_the_kl(trained, tiny_lm_dir, text_dir, tmp_path):
    out = tmp_path / "tuned"
    assert main(_train_args(tiny_lm_dir, text_dir, out, **{"--finetune-tokens": 512})) == 0
    plain, tuned = saekit.load_sae(trained), saekit.load_sae(out)
    record = tuned.provenance.training["decoder_finetune"]
    assert record["tokens"] >= 512 and record["steps"] >= 2
    assert json.loads((out / "run.json").read_text())["settings"]["finetune_tokens"] == 512
    assert (plain.W_enc == tuned.W_enc).all() and not (plain.W_dec == tuned.W_dec).all()  # the same run, then tuned
    assert record["kl_start"] > 0 and record["kl_end"] > 0  # the KL itself falls in tests/test_decoder_finetune.py


def test_finetune_without_an_lm_head_stops_before_training(tiny_bert_dir, text_dir, tmp_path, capsys):
    out = tmp_path / "bert"
    args = _train_args(tiny_bert_dir, text_dir, out, **{"--hook": "encoder.layer.0.intermediate",
                                                        "--finetune-tokens": 256})
    assert main(args) != 0
    assert "no language-model head" in capsys.readouterr().err
    assert not (out / "cfg.json").exists()


def test_eval_json_from_provenance_alone(trained, capsys):
    capsys.readouterr()
    assert main(["eval", str(trained), "--json", "--tokens", "64", "--quiet"]) == 0
    row = json.loads(capsys.readouterr().out)
    for key in REQUIRED:
        assert isinstance(row[key], float), key
    assert row["l0"] == pytest.approx(4)
    recovered = (row["loss_zero_ablated"] - row["loss_spliced"]) / (row["loss_zero_ablated"] - row["loss_clean"])
    assert row["loss_recovered"] == pytest.approx(recovered)
    assert row["loss_increase"] == pytest.approx(row["loss_spliced"] - row["loss_clean"])


def test_eval_text_override_and_table(trained, tmp_path, capsys):
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "a.txt").write_text("Held-out text about sparse features and dictionaries. " * 4)
    capsys.readouterr()
    assert main(["eval", str(trained), "--text", str(tmp_path / "held"), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "loss_recovered" in table and "fvu" in table


def _one_line_error(capsys, argv, match):
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()  # may start with transformers' own loading bars
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith(f"saekit {argv[0]}: error: ") and match in last
    return last


def test_bad_input_is_one_line(tiny_lm_dir, text_dir, tmp_path, capsys):
    out = tmp_path / "sae"
    _one_line_error(capsys, _train_args(tmp_path / "no_model", text_dir, out), "does not exist")
    _one_line_error(capsys, _train_args(tiny_lm_dir, tmp_path / "no_text", out), "does not exist")
    _one_line_error(capsys, _train_args(tiny_lm_dir, text_dir, out, **{"--arch": "sparsemax"}), "unknown SAE")
    err = _one_line_error(capsys, _train_args(tiny_lm_dir, text_dir, out, **{"--hook": "transformer.h.0.mlp.akt"}),
                          "no module")
    assert HOOK in err
    _one_line_error(capsys, ["eval", str(tmp_path / "nothing"), "--json"], "no SAE folder")
    assert not out.exists()


def test_demo_calls_run_demo(monkeypatch, capsys, tmp_path):
    calls = []
    fake = types.ModuleType("saekit.demo")
    fake.run_demo = lambda profile, out: calls.append((profile, out)) or types.SimpleNamespace(root=tmp_path)
    monkeypatch.setitem(sys.modules, "saekit.demo", fake)
    assert main(["demo", "--profile", "full", "--out", "cache"]) == 0
    assert calls == [("full", Path("cache"))]
    assert "jupyter lab notebooks/" in capsys.readouterr().out


def test_eval_at_a_friendly_site(trained, capsys):
    """mlp_act resolves to GPT-2's c_proj input: the same neurons the SAE was trained on at mlp.act's output."""
    capsys.readouterr()
    assert main(["eval", str(trained), "--tokens", "256", "--json", "--quiet"]) == 0
    plain = json.loads(capsys.readouterr().out)
    argv = ["eval", str(trained), "--layer", "0", "--site", "mlp_act", "--tokens", "256", "--json", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    at_site = json.loads(out.strip().splitlines()[-1])
    assert "site mlp_act of layer 0: transformer.h.0.mlp.c_proj (input)" in out
    assert at_site["hook"] == "transformer.h.0.mlp.c_proj"
    for key in ("fvu", "l0", "loss_spliced"):
        assert at_site[key] == pytest.approx(plain[key], rel=1e-5), key
    assert main(["eval", str(trained), "--layer", "0", "--tokens", "256"]) == 1
    assert "--layer and --site go together" in capsys.readouterr().err


def test_train_logs_to_tensorboard_in_the_output_folder(tiny_lm_dir, text_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "logged"
    assert main(_train_args(tiny_lm_dir, text_dir, out) + ["--log-to", "tensorboard"]) == 0
    [run] = [p for p in (out / "logs").iterdir() if p.is_dir()]
    events = EventAccumulator(str(run))
    events.Reload()
    assert len(events.Scalars("train/fvu")) >= 1
    assert "log_to" not in json.loads((out / "run.json").read_text())["settings"]  # where it logs, not what it trains
