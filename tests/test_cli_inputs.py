"""`saekit train`/`eval` refuse bad arguments in one line, before any model loads; bugs keep their traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import saekit
from saekit import cli
from saekit.activations import nnsight_api as api
from saekit.cli import main
from saekit.saes.provenance import Provenance

from helpers import HOOK


def _train_args(model, text, out, **over) -> list[str]:
    args = {
        "--model": model, "--hook": HOOK, "--arch": "topk", "--k": 4, "--features": 32, "--tokens": 256,
        "--text": text, "--out": out, "--batch-size": 64, "--context-len": 16, "--buffer-mb": 1,
    }
    args.update(over)
    return ["train", *[str(x) for kv in args.items() if kv[1] is not None for x in kv], "--quiet"]


def _one_line_error(capsys, argv, *needles) -> str:
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith(f"saekit {argv[0]}: error: "), last
    for needle in needles:
        assert needle in last, (needle, last)
    return last


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model load fails the test: the checks under test must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(api, "load_model", refuse)


# --- classification -------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [
    cli.CliError("bad flag"), saekit.InputError("bad value"), FileNotFoundError("no such file"),
    FileExistsError("in the way"), NotADirectoryError("not a folder"), IsADirectoryError("a folder"),
    PermissionError("not allowed"), api.ModelNotFoundError("no model"), api.UnknownHookError("no hook"),
])
def test_input_errors_print_one_line(monkeypatch, capsys, error):
    def fail(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "eval", fail)
    last = _one_line_error(capsys, ["eval", "x"], str(error))
    assert last == f"saekit eval: error: {error}"


@pytest.mark.parametrize("error", [TypeError("bug"), KeyError("bug"), ImportError("bug"), ValueError("bug"),
                                   RuntimeError("bug"), OSError("disk on fire")])
def test_other_errors_are_bugs_with_a_traceback(monkeypatch, error):
    def fail(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "eval", fail)
    with pytest.raises(type(error)):
        main(["eval", "x"])


def test_traceback_flag_shows_input_errors_in_full(monkeypatch):
    def fail(args):
        raise cli.CliError("bad flag")

    monkeypatch.setitem(cli.COMMANDS, "eval", fail)
    with pytest.raises(cli.CliError):
        main(["--traceback", "eval", "x"])


def test_multiline_message_keeps_its_first_line(monkeypatch, capsys):
    def fail(args):
        raise saekit.InputError("first line\nsecond line")

    monkeypatch.setitem(cli.COMMANDS, "eval", fail)
    assert _one_line_error(capsys, ["eval", "x"]) == "saekit eval: error: first line"


def test_format_errors_and_remote_code_are_input_errors():
    from saekit.formats import SAEFormatError

    assert issubclass(SAEFormatError, saekit.InputError) and issubclass(cli.CliError, saekit.InputError)
    assert issubclass(api.RemoteCodeError, saekit.InputError)


# --- train argument checks -------------------------------------------------------------------------


@pytest.mark.parametrize("over,needles", [
    ({"--k": 40}, ["--k 40 is larger than --features 32", "--k at most 32"]),
    ({"--k": None, "--features": 16}, ["--k 32 is larger than --features 16"]),  # topk's default k
    ({"--arch": "relu"}, ["--k applies to", "drop --k for --arch relu"]),
    ({"--arch": "jumprelu"}, ["drop --k for --arch jumprelu"]),
    ({"--arch": "sparsemax"}, ["unknown SAE architecture 'sparsemax'", "relu"]),
    ({"--features": 0}, ["--features must be a positive integer (got 0)"]),
    ({"--tokens": -5}, ["--tokens must be a positive integer (got -5)"]),
    ({"--batch-size": 0}, ["--batch-size must be a positive integer"]),
    ({"--context-len": 0}, ["--context-len must be a positive integer"]),
    ({"--buffer-mb": -1}, ["--buffer-mb must be a positive integer"]),
    ({"--k": 0}, ["--k must be a positive integer"]),
    ({"--arch": "relu", "--k": None, "--l1": -1}, ["--l1 must be a number ≥ 0 (got -1.0)"]),
    ({"--arch": "relu", "--k": None, "--l1": "nan"}, ["--l1 must be a number"]),
    ({"--lr": 0}, ["--lr must be a positive number (got 0.0)"]),
    ({"--refit-tokens": -1}, ["--refit-tokens must be ≥ 0 (got -1)"]),
    ({"--lr": -1e-3}, ["--lr must be a positive number"]),
    ({"--dtype": "int64"}, ["--dtype 'int64' is not a floating dtype", "float32"]),
    ({"--dtype": "float33"}, ["--dtype 'float33'"]),
    ({"--device": "gpu"}, ["--device 'gpu' is not a torch device", "cuda:N"]),
    ({"--device": "meta"}, ["--device meta", "pass cpu"]),
    ({"--checkpoint-every": -1}, ["--checkpoint-every must be ≥ 0"]),
])
def test_bad_train_arguments(no_model_loads, tmp_path, text_dir, capsys, over, needles):
    _one_line_error(capsys, _train_args("gpt2", text_dir, tmp_path / "out", **over), *needles)
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file(no_model_loads, tmp_path, text_dir, capsys):
    (tmp_path / "taken").write_text("mine")
    _one_line_error(capsys, _train_args("gpt2", text_dir, tmp_path / "taken"), "--out", "is an existing file")
    assert (tmp_path / "taken").read_text() == "mine"


def test_text_problems(no_model_loads, tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("not a .txt")
    _one_line_error(capsys, _train_args("gpt2", tmp_path / "empty", out), "holds no .txt files")
    (tmp_path / "a.txt").write_text("a file, not a folder")
    _one_line_error(capsys, _train_args("gpt2", tmp_path / "a.txt", out), "is a file", "folder of .txt")
    _one_line_error(capsys, _train_args("gpt2", tmp_path / "missing.npy", out), "does not exist")
    np.save(tmp_path / "floats.npy", np.zeros(10, dtype=np.float32))
    _one_line_error(capsys, _train_args("gpt2", tmp_path / "floats.npy", out), "integer array")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _one_line_error(capsys, _train_args("gpt2", tmp_path / "objects.npy", out), "integer array")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    _one_line_error(capsys, _train_args("gpt2", tmp_path / "junk.npy", out), "not a readable .npy")


def test_missing_datasets_package_says_what_to_install(no_model_loads, monkeypatch, tmp_path, capsys):
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name))
    argv = _train_args("gpt2", None, tmp_path / "out")
    argv = [a for a in argv if a not in ("--text", "None")] + ["--dataset", "wikitext"]
    _one_line_error(capsys, argv, "--dataset needs the optional package `datasets`", "pip install datasets")


# --- devices ---------------------------------------------------------------------------------------


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize("device,needle", [("cuda", "--device cuda: "), ("cuda:0", "pass --device cpu"),
                                           ("mps", "MPS is not available")])
def test_unavailable_device_train_and_eval(no_model_loads, cpu_only, tmp_path, text_dir, capsys, device, needle):
    _one_line_error(capsys, _train_args("gpt2", text_dir, tmp_path / "out", **{"--device": device}), needle)
    _one_line_error(capsys, ["eval", str(tmp_path / "no_sae"), "--device", device], needle)


def test_gpu_index_past_the_visible_ones(no_model_loads, monkeypatch, tmp_path, text_dir, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    _one_line_error(capsys, _train_args("gpt2", text_dir, tmp_path / "out", **{"--device": "cuda:3"}),
                    "only 2 CUDA GPU(s) are visible", "cuda:0 to cuda:1")
    cli.check_device("cuda:1")  # within range: accepted


def test_real_devices_of_this_machine():
    cli.check_device("cpu")
    if torch.cuda.is_available():
        cli.check_device(f"cuda:{torch.cuda.device_count() - 1}")
        with pytest.raises(cli.CliError, match="only"):
            cli.check_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(cli.CliError, match="pass --device cpu"):
            cli.check_device("cuda")


# --- eval ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag,value", [("--tokens", "0"), ("--batch-size", "-2")])
def test_bad_eval_sizes(no_model_loads, tmp_path, capsys, flag, value):
    _one_line_error(capsys, ["eval", str(tmp_path), flag, value], f"{flag} must be a positive integer")


@pytest.fixture
def saved_sae(tmp_path, tiny_lm_dir, text_dir):
    """A relu SAE on the tiny model's MLP neurons (d_in 128), saved with the provenance `saekit train` writes."""
    sae = saekit.SAE.create("relu", d_in=128, n_features=32, seed=0)
    sae.provenance = Provenance(model=str(tiny_lm_dir.resolve()), hook=HOOK, text=str(text_dir.resolve()),
                                context_len=16)
    sae.save(tmp_path / "sae")
    return tmp_path / "sae"


def test_eval_sae_width_must_match_the_hook(saved_sae, tiny_lm_dir, capsys):
    """The MLP block's output is d_model = 32 wide; the SAE reads the 128 neurons."""
    last = _one_line_error(capsys, ["eval", str(saved_sae), "--hook", "transformer.h.0.mlp", "--quiet"])
    assert last.endswith(f"the SAE reads d_in=128 but hook transformer.h.0.mlp of model {tiny_lm_dir.resolve()} "
                         "gives width 32: pass the --model/--hook the SAE was trained on")


def test_eval_token_ids_outside_the_vocabulary(saved_sae, tiny_lm_dir, tmp_path, capsys):
    vocab = json.loads((tiny_lm_dir / "config.json").read_text())["vocab_size"]
    np.save(tmp_path / "ids.npy", np.arange(vocab - 20, vocab + 20, dtype=np.int64))
    _one_line_error(capsys, ["eval", str(saved_sae), "--text", str(tmp_path / "ids.npy"), "--quiet"],
                    f"token id {vocab + 19} is outside the model's vocabulary of {vocab} ids", "tokenizer")


def test_eval_nonfinite_weights(saved_sae, capsys):
    from safetensors.torch import load_file, save_file

    tensors = load_file(saved_sae / "sae_weights.safetensors")
    tensors["b_dec"][0] = float("nan")
    save_file(tensors, saved_sae / "sae_weights.safetensors")
    _one_line_error(capsys, ["eval", str(saved_sae), "--quiet"], "NaN/inf", "b_dec: 1 of 128")


def test_eval_text_gone_from_provenance(saved_sae, tmp_path, capsys):
    cfg = json.loads((saved_sae / "cfg.json").read_text())
    cfg["saekit"]["text"] = str(tmp_path / "deleted_corpus")
    (saved_sae / "cfg.json").write_text(json.dumps(cfg))
    _one_line_error(capsys, ["eval", str(saved_sae), "--quiet"], "no longer there", "pass --text DIR")


# --- remote code -----------------------------------------------------------------------------------


def test_remote_code_model_refused_in_one_line(tmp_path, text_dir, capsys):
    from test_nnsight_api import _remote_code_model

    marker = tmp_path / "marker.txt"
    folder = _remote_code_model(tmp_path / "custom", marker)
    _one_line_error(capsys, _train_args(folder, text_dir, tmp_path / "out"), "--trust-remote-code",
                    "only if you trust")
    assert not marker.exists()


@pytest.mark.parametrize("trust", [False, True])
def test_trust_remote_code_flag_reaches_load_model(monkeypatch, tmp_path, text_dir, saved_sae, capsys, trust):
    seen = []

    def spy(model, **kwargs):
        seen.append(kwargs["trust_remote_code"])
        raise cli.CliError("stop here")

    monkeypatch.setattr(api, "load_model", spy)
    flag = ["--trust-remote-code"] if trust else []
    _one_line_error(capsys, _train_args("gpt2", text_dir, tmp_path / "out") + flag, "stop here")
    _one_line_error(capsys, ["eval", str(saved_sae), *flag], "stop here")
    assert seen == [trust, trust]
