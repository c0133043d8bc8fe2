"""The `saekit` command: train an SAE on a model's activations, evaluate one, or build the demo.

Commands parse, call the library and print; the work lives in `saekit.training`, `saekit.evaluation`
and `saekit.activations`. Bad input (an `InputError`, or a path that is missing, in the way or not
allowed) ends with one line on stderr and exit status 1 (`--traceback` shows the full error instead);
anything else is a bug and keeps its traceback.

`saekit train` keeps a record of its run in OUT/run.json ("running", then "done" once the SAE is saved)
and checkpoints in OUT/checkpoints, so rerunning the same command resumes a killed run and leaves a
finished one alone.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saekit.activations.sites import SITES
from saekit.errors import InputError

if TYPE_CHECKING:
    from saekit.training import TrainConfig

EPILOG = """\
examples:
  saekit demo --profile quick
  saekit train --model gpt2 --hook transformer.h.0.mlp.act --arch topk --k 32 \\
      --features 4096 --tokens 2000000 --text corpus/ --out runs/gpt2-l0-topk
  saekit train --model ./my-model --hook transformer.h.0.mlp.act --arch relu --l1 5 \\
      --features 1024 --tokens 500000 --text corpus/ --out runs/relu-1k
  saekit eval runs/gpt2-l0-topk --json
  saekit eval runs/gpt2-l0-topk --text heldout/ --tokens 50000
  saekit export features/stores/A-relu-4096 --features 3,10-12 --out cards.html
  saekit cache --model gpt2 --hook transformer.h.6 --text corpus/ --tokens 10000000 --out cache/gpt2-l6
  saekit train --from-cache cache/gpt2-l6 --arch topk --features 16384 --tokens 10000000 --out runs/l6
  torchrun --nproc-per-node 2 -m saekit train --from-cache cache/gpt2-l6 ... (or saekit train --nproc 2 ...)

A killed `saekit train` resumes from its last checkpoint when the same command is run again; a
finished one is left as it is.
"""

RECIPES = ("default", "towards_monosemanticity", "april_2024")
RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"


class CliError(InputError):
    """Bad command-line input: printed as one line, exit status 1."""


# --- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saekit",
        description="Sparse autoencoders on transformer activations (Towards Monosemanticity, reproduced).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--traceback", action="store_true", help="show the full error instead of one line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(commands)
    _add_train(commands)
    _add_sweep(commands)
    _add_cache(commands)
    _add_eval(commands)
    _add_export(commands)
    _add_doctor(commands)
    return parser


def _add_demo(commands) -> None:
    demo = commands.add_parser("demo", help="build the offline demo: corpus, tokenizer, models, SAEs, table")
    demo.add_argument("--profile", choices=("quick", "full"), default="quick", help="quick (CI, minutes) or full")
    demo.add_argument("--out", type=Path, default=None, metavar="DIR", help="cache folder for what the demo builds")


def _add_export(commands) -> None:
    export = commands.add_parser("export", help="feature cards of a feature store as one self-contained HTML file")
    export.add_argument("store", type=Path, metavar="STORE", help="a feature store folder (FeatureStore.save)")
    export.add_argument("--features", default=None, metavar="IDS", help="ids and ranges, e.g. 3,10-12 "
                        "(default: the 12 densest)")
    export.add_argument("--out", type=Path, required=True, metavar="FILE.html", help="the HTML file to write")
    export.add_argument("--sae", type=Path, default=None, metavar="DIR", help="the store's SAE (with --model: "
                        "colour every context token)")
    export.add_argument("--model", default=None, metavar="NAME_OR_DIR", help="the model the store was built on")
    export.add_argument("--title", default=None, help="the page's title")
    export.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_site_args(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """Where the model is read: --hook (repeated, where `many` sites are read in one forward), or --layer with
    --site; a transcoder's --target-hook."""
    if many:
        parser.add_argument("--hook", default=None, action="append", metavar="MODULE.PATH",
                            help="module path, e.g. transformer.h.0.mlp.act (or --layer and --site); repeat it to "
                                 "read several sites in one forward, for a sweep over sites")
    else:
        parser.add_argument("--hook", default=None, metavar="MODULE.PATH",
                            help="module path, e.g. transformer.h.0.mlp.act (or --layer and --site); with "
                                 "--from-cache, which of the cache's sites to train on")
    parser.add_argument("--layer", type=int, default=None, metavar="N",
                        help="with --site: the block to read (negative counts from the end)")
    parser.add_argument("--site", choices=SITES, default=None,
                        help="with --layer: a site any common family has, resolved to its module path (printed)")
    parser.add_argument("--hook-side", choices=("output", "input"), default="output", help="module output or input")
    parser.add_argument("--target-hook", default=None, metavar="MODULE.PATH",
                        help="a transcoder's: read --hook, reconstruct this module's activations (e.g. --hook "
                             "transformer.h.0.ln_2 --target-hook transformer.h.0.mlp)")
    parser.add_argument("--target-side", choices=("output", "input"), default="output",
                        help="the target module's output (default) or input")


def _add_text_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--text", type=Path, metavar="DIR", help="folder of .txt files, or a .npy token array")
    group.add_argument("--dataset", metavar="NAME", help="Hugging Face dataset name (needs `pip install datasets`)")
    parser.add_argument("--text-column", default="text", metavar="COLUMN", help="dataset text column (default: text)")
    parser.add_argument("--split", default="train", help="dataset split (default: train)")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or mps (default: cpu)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let a model folder or hub repo run its own Python code (only for code you trust)")
    parser.add_argument("--remote", nargs="?", const="ndif", default=None, choices=("ndif", "local"),
                        help="run the model's forwards on NDIF through nnsight (a hub name NDIF hosts; the key from "
                             "NDIF_API_KEY; only config and tokenizer load here), or 'local': nnsight's dry run of "
                             "that path on a model loaded here")


def _loading(args: argparse.Namespace) -> dict[str, Any]:
    """load_model's options from the command line: remote code, and where the forwards run."""
    remote = {"ndif": True, "local": "local", None: False}[getattr(args, "remote", None)]
    return {"trust_remote_code": args.trust_remote_code, "remote": remote}


def _add_train(commands) -> None:
    train = commands.add_parser(
        "train", help="train an SAE on a model's activations at one hook",
        description="Train an SAE. OUT gets the SAE folder, history.csv and run.json (the run's settings; "
                    "'done' once finished). Checkpoints go to OUT/checkpoints and are deleted once the final SAE "
                    "is saved. Rerunning the same command resumes from the last checkpoint, or, for a finished "
                    "run, changes nothing; a command with other settings and the same --out is refused.",
    )
    train.add_argument("--model", action="append", metavar="NAME_OR_DIR",
                       help="Hugging Face hub name or model folder; repeat it to train a crosscoder over several "
                            "models (they must share a tokenizer)")
    _add_site_args(train)
    train.add_argument("--from-cache", type=Path, default=None, metavar="DIR",
                       help="train on the activations `saekit cache` wrote to DIR (instead of --model, the site and "
                            "--text: the cache records them; a transcoder or crosscoder cache trains one)")
    train.add_argument("--arch", required=True, metavar="ARCH", help="relu, topk, batchtopk or jumprelu")
    train.add_argument("--features", type=int, required=True, metavar="N", help="dictionary size (number of features)")
    train.add_argument("--tokens", type=int, required=True, metavar="N", help="activation vectors to train on")
    _add_text_args(train, required=False)
    train.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to save the SAE in")
    train.add_argument("--k", type=int, default=None, help="topk/batchtopk: active features per token (default: 32)")
    train.add_argument("--l1", type=float, default=None, help="relu: L1 coefficient")
    train.add_argument("--lr", type=float, default=None,
                       help="Adam learning rate (default: chosen from the input width and --features, 8e-4 at "
                            "d_in 512: see saekit.training.config.lr_for; printed)")
    train.add_argument("--recipe", choices=RECIPES, default="default", help="training recipe preset")
    train.add_argument("--refit-tokens", type=int, default=0, metavar="N",
                       help="after training, refit the decoder by least squares on the codes of N more tokens "
                            "(undoes the L1's shrinkage; the features stay as trained; default 0: no refit)")
    train.add_argument("--finetune-tokens", type=int, default=0, metavar="N",
                       help="then tune the decoder on the KL from the model's next-token distribution to the one with "
                            "the SAE spliced in, over the text's first N tokens (codes fixed; needs an LM head; "
                            "default 0: none)")
    train.add_argument("--log-to", action="append", choices=("tensorboard", "wandb"), default=None,
                       help="also send the training history to TensorBoard or Weights & Biases (offline unless "
                            "WANDB_MODE or WANDB_API_KEY says otherwise); repeatable; logs go to OUT/logs")
    train.add_argument("--batch-size", type=int, default=None,
                       help="activations per step (default: 4096, or smaller where --tokens would give under 1,000 "
                            "steps: see saekit.training.config.batch_size_for)")
    train.add_argument("--context-len", type=int, default=None,
                       help="tokens per context window (default: 128, or the model's longest context if shorter)")
    train.add_argument("--include-special-tokens", action="store_true", help="keep BOS/EOS/PAD positions")
    train.add_argument("--buffer-mb", type=int, default=256, help="shuffle buffer budget in MiB (default: 256)")
    train.add_argument("--dtype", default="float32", help="activation and SAE dtype (default: float32)")
    _add_model_args(train)
    train.add_argument("--seed", type=int, default=0, help="seed for the SAE init and the shuffle")
    train.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                       help="tokens between checkpoints in OUT/checkpoints (default: a tenth of --tokens, at least "
                            "one batch, in whole batches; 0: no checkpoints, so a killed run starts over)")
    train.add_argument("--resume", type=Path, default=None, metavar="DIR",
                       help="resume from this checkpoint (or the latest in this folder) instead of OUT/checkpoints")
    train.add_argument("--nproc", type=int, default=1, metavar="N",
                       help="train data-parallel on N processes (torchrun on this machine: gloo on CPU, one GPU per "
                            "process with --device cuda); --batch-size stays the global batch (default: 1)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_sweep(commands) -> None:
    sweep = commands.add_parser(
        "sweep", help="train several SAEs from one pass over the activations (sizes, architectures, sparsities, sites)",
        description="Train every dictionary of a sweep spec (TOML: shared `saekit train` settings at the top, one "
                    "[[dictionary]] table each with its own name, arch, features, k, l1, lr, tokens or site) from "
                    "one pass over the model's activations, or one read of a cache. Each is saved in OUT/NAME as "
                    "`saekit train` saves it; rerunning resumes the unfinished ones.",
    )
    sweep.add_argument("spec", nargs="?", type=Path, default=None, metavar="SPEC.toml", help="the sweep spec")
    sweep.add_argument("--dictionary", action="append", default=[], metavar='"KEY=VALUE ..."',
                       help='one more dictionary, e.g. "arch=topk features=4096 k=32" (repeatable)')
    sweep.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the dictionaries")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_cache(commands) -> None:
    cache = commands.add_parser(
        "cache", help="write a model's activations to disk, for `saekit train --from-cache`",
        description="Read the model(s) at the site over the text once and write the activations to OUT in shards "
                    "(safetensors) with a manifest. Rerunning the same command continues a killed cache and leaves a "
                    "finished one alone.",
    )
    cache.add_argument("--model", required=True, action="append", metavar="NAME_OR_DIR",
                       help="hub name or model folder; repeat it for a crosscoder's models (same tokenizer)")
    _add_site_args(cache, many=True)
    cache.add_argument("--tokens", type=int, required=True, metavar="N", help="activation vectors to write")
    _add_text_args(cache, required=True)
    cache.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write the cache in")
    cache.add_argument("--context-len", type=int, default=None,
                       help="tokens per context window (default: 128, or the model's longest context if shorter)")
    cache.add_argument("--include-special-tokens", action="store_true", help="keep BOS/EOS/PAD positions")
    cache.add_argument("--dtype", default="float32", help="stored dtype (default: float32; bfloat16 halves the disk)")
    cache.add_argument("--shard-mb", type=int, default=128, help="MiB per shard file (default: 128)")
    cache.add_argument("--model-batch-size", type=int, default=32, help="context windows per forward (default: 32)")
    _add_model_args(cache)
    cache.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_eval(commands) -> None:
    ev = commands.add_parser("eval", help="evaluate a saved SAE: reconstruction, sparsity, spliced loss")
    ev.add_argument("sae_dir", type=Path, metavar="SAE_DIR", help="folder written by `saekit train` or sae.save()")
    _add_text_args(ev, required=False)
    ev.add_argument("--tokens", type=int, default=16_384, metavar="N", help="tokens to evaluate on (default: 16384)")
    ev.add_argument("--model", default=None, action="append", metavar="NAME_OR_DIR",
                    help="model (default: the SAE's provenance); a crosscoder's: once per model, in training order")
    ev.add_argument("--hook", default=None, metavar="MODULE.PATH", help="hook (default: the SAE's provenance)")
    ev.add_argument("--layer", type=int, default=None, metavar="N", help="with --site: the block to read, instead of "
                    "--hook (e.g. to evaluate an SAE at the same site of another model)")
    ev.add_argument("--site", choices=SITES, default=None, help="with --layer: a site resolved to its module path")
    ev.add_argument("--target-hook", default=None, metavar="MODULE.PATH",
                    help="a transcoder's target hook (default: its provenance's)")
    ev.add_argument("--batch-size", type=int, default=8, help="context windows per forward (default: 8)")
    _add_model_args(ev)
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")


# --- argument checks (cheap: before any model loads) -----------------------------------------------


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_positive(args: argparse.Namespace, names: Sequence[str]) -> None:
    """Integer options that must be at least 1 (None means "not given" and passes)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise CliError(f"{_option(name)} must be a positive integer (got {value}): pass 1 or more")


def check_device(name: str) -> None:
    """Raise CliError unless `name` is a torch device this machine has (checked before loading anything)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CliError(f"--device {name!r} is not a torch device: pass cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return
    if device.type == "cuda":
        _check_cuda(name, device.index)
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise CliError(f"--device {name}: MPS is not available on this machine or torch build: pass --device cpu")
    else:
        backend = getattr(torch, device.type, None)
        if not (callable(getattr(backend, "is_available", None)) and backend.is_available()):
            raise CliError(f"--device {name}: no {device.type} device is available: pass cpu, cuda or mps")


def _check_cuda(name: str, index: int | None) -> None:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise CliError(f"--device {name}: {why}: pass --device cpu (or install a CUDA build of torch)")
    if index is not None and index >= count:
        raise CliError(f"--device {name}: only {count} CUDA GPU(s) are visible: pass cuda:0 to cuda:{count - 1}")


def check_dtype_name(name: str) -> None:
    """--dtype must name a floating torch dtype."""
    import torch

    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise CliError(f"--dtype {name!r} is not a floating dtype: pass float32, bfloat16 or float16")


def check_text(args: argparse.Namespace) -> None:
    """The text named by --text or --dataset exists and can be read, before the model loads."""
    if getattr(args, "dataset", None):
        _check_datasets_installed("--dataset")
    if getattr(args, "text", None) is None:
        return
    path = Path(args.text).expanduser()
    if str(path).endswith(".npy"):
        check_token_file(path)
    elif not path.exists():
        raise CliError(f"text folder {str(path)!r} does not exist: pass a folder of .txt files or a .npy token array")
    elif not path.is_dir():
        raise CliError(f"--text {path} is a file: pass a folder of .txt files or a .npy token array")
    elif next((p for p in path.rglob("*.txt") if p.is_file()), None) is None:
        raise CliError(f"text folder {str(path)!r} holds no .txt files: pass a folder of .txt files")


def _check_datasets_installed(what: str) -> None:
    if importlib.util.find_spec("datasets") is None:
        raise CliError(f"{what} needs the optional package `datasets`: run pip install datasets (or pass --text DIR)")


def check_token_file(path: Path) -> None:
    """A .npy token array: an integer array of 1 or 2 dimensions, read from its header only (never unpickled)."""
    import numpy as np

    if not path.is_file():
        raise CliError(f"token file {str(path)!r} does not exist: pass a .npy array of token ids or a text folder")
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(file)
    except (ValueError, OSError, SyntaxError) as error:
        raise CliError(f"{path} is not a readable .npy file ({error}): save token ids with numpy.save") from None
    if dtype.kind not in "iu" or len(shape) not in (1, 2):
        raise CliError(f"{path} holds a {len(shape)}-d {dtype} array: pass token ids as a 1-d or 2-d integer array")


def check_out(out: Path) -> None:
    """--out is a folder to create or an existing folder, never an existing file."""
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is an existing file: pass a folder path (new, or an earlier run's)")


def _takes_k(arch: str) -> bool:
    from saekit.saes import sae_class

    return "k" in inspect.signature(sae_class(arch).__init__).parameters


def _default_k(arch: str) -> int:
    from saekit.saes import sae_class

    return int(inspect.signature(sae_class(arch).__init__).parameters["k"].default)


def _effective_k(args: argparse.Namespace) -> int | None:
    """--k, or the architecture's default when it takes one and none was given; None when it takes none."""
    if args.k is not None or not _takes_k(args.arch):
        return args.k
    return _default_k(args.arch)


def check_arch(args: argparse.Namespace) -> None:
    """A known architecture, and --k only where it applies and no larger than --features."""
    from saekit.saes.registry import architectures

    if args.arch not in architectures():
        raise CliError(f"unknown SAE architecture {args.arch!r}: pass --arch one of {', '.join(architectures())}")
    if not _takes_k(args.arch):
        if args.k is not None:
            takes = [a for a in architectures() if _takes_k(a)]
            raise CliError(f"--k applies to {' and '.join(takes)} only: drop --k for --arch {args.arch}")
        return
    k = _effective_k(args)
    if k > args.features:
        raise CliError(f"--k {k} is larger than --features {args.features}: pass --k at most {args.features}")


def check_rates(args: argparse.Namespace) -> None:
    """--lr positive and --l1 non-negative, both finite."""
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise CliError(f"--lr must be a positive number (got {args.lr}): pass e.g. --lr 3e-4")
    if args.l1 is not None and not (math.isfinite(args.l1) and args.l1 >= 0):
        raise CliError(f"--l1 must be a number ≥ 0 (got {args.l1}): pass e.g. --l1 5")
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise CliError(f"--checkpoint-every must be ≥ 0 tokens (got {args.checkpoint_every}): 0 turns checkpoints off")


def check_train_args(args: argparse.Namespace) -> None:
    """Every check `saekit train` can make before loading a model."""
    check_positive(args, ("features", "tokens", "batch_size", "context_len", "buffer_mb", "k", "nproc"))
    check_arch(args)
    check_rates(args)
    if args.refit_tokens < 0:
        raise CliError(f"--refit-tokens must be ≥ 0 (got {args.refit_tokens}): 0 trains without a decoder refit")
    if args.finetune_tokens < 0:
        raise CliError(f"--finetune-tokens must be ≥ 0 (got {args.finetune_tokens}): 0 trains without the decoder's "
                       "fine-tune")
    check_dtype_name(args.dtype)
    check_out(args.out)
    check_device(args.device)
    if args.from_cache is not None:
        check_cache_use(args)
        return
    if not args.model:
        raise CliError("pass --model NAME_OR_DIR (with --hook and --text), or --from-cache DIR")
    if args.text is None and args.dataset is None:
        raise CliError("pass --text DIR or --dataset NAME: the text to read the model on (or train --from-cache DIR)")
    check_text(args)
    check_where(args)
    check_dictionary_kind(args)


def check_cache_use(args: argparse.Namespace) -> None:
    """--from-cache names a complete cache, and the flags the cache already settles are left out."""
    from saekit.activations.cache import open_cache

    given = [_option(name) for name in ("model", "layer", "site", "target_hook", "text", "dataset")
             if getattr(args, name) is not None]
    if given:
        raise CliError(f"--from-cache reads where the cache was written from: drop {', '.join(given)}")
    if args.finetune_tokens:
        raise CliError("--finetune-tokens runs the model, which a cache does not hold: drop it (--refit-tokens works)")
    sites = open_cache(args.from_cache).sites
    if sites and args.hook is None:
        raise CliError(f"the cache holds {len(sites)} sites ({', '.join(s[0] for s in sites)}): pick one with --hook, "
                       "or train one SAE per site with saekit sweep")


def check_cache_args(args: argparse.Namespace) -> None:
    """Every check `saekit cache` can make before loading a model."""
    check_positive(args, ("tokens", "context_len", "shard_mb", "model_batch_size"))
    check_dtype_name(args.dtype)
    check_out(args.out)
    check_device(args.device)
    check_text(args)
    check_where(argparse.Namespace(**{**vars(args), "hook": args.hook[0] if args.hook else None}))
    hooks = args.hook or []
    if len(set(hooks)) < len(hooks):
        raise CliError(f"--hook names the same module twice ({', '.join(hooks)}): name each site once")
    if (len(args.model) > 1 or len(hooks) > 1) and args.target_hook is not None:
        raise CliError("--target-hook reads one model at one hook (a transcoder's): pass one --model and one "
                       "--hook, or drop --target-hook")
    if len(args.model) > 1 and len(hooks) > 1:
        raise CliError("several --model read one hook (a crosscoder's): pass one --hook, or one --model")


def check_where(args: argparse.Namespace) -> None:
    """Where to read: --hook, or --layer with --site."""
    if (args.layer is None) != (args.site is None):
        raise CliError("--layer and --site go together: pass both (e.g. --layer 6 --site resid_post), or --hook")
    if (args.hook is None) == (args.site is None):
        raise CliError("pass --hook MODULE.PATH, or --layer N --site " + "|".join(SITES) + " (one of the two)")


def with_site_resolved(args: argparse.Namespace, model: Any) -> argparse.Namespace:
    """`args` with --layer/--site turned into --hook and --hook-side for `model` (printed); as given otherwise."""
    from saekit.activations.sites import resolve_site

    if args.site is None:
        return args
    hook, side = resolve_site(model, args.layer, args.site)
    say(f"site {args.site} of layer {args.layer}: {hook} ({side})")
    return argparse.Namespace(**{**vars(args), "hook": hook, "hook_side": side})


DEFAULT_CONTEXT = 128


def with_context_resolved(args: argparse.Namespace, model: Any) -> argparse.Namespace:
    """`args` with --context-len set: as given (refused if longer than the model's context), else 128 or the model's
    longest context, whichever is shorter."""
    from saekit.activations.nnsight_api import context_length

    longest = context_length(model)
    if args.context_len is not None:
        if longest is not None and args.context_len > longest:
            raise CliError(f"--context-len {args.context_len} is longer than the model's context ({longest} "
                           f"positions): pass --context-len {longest} or less")
        return args
    chosen = min(DEFAULT_CONTEXT, longest or DEFAULT_CONTEXT)
    if chosen < DEFAULT_CONTEXT:
        say(f"context length {chosen} (the model's longest; pass --context-len to set it)")
    return argparse.Namespace(**{**vars(args), "context_len": chosen})


def check_dictionary_kind(args: argparse.Namespace) -> None:
    """A transcoder reads one model; a crosscoder several, each once; the decoder fine-tune is the SAE's."""
    if len(args.model) > 1 and args.target_hook is not None:
        raise CliError("--target-hook trains a transcoder, which reads one model: pass one --model, or drop "
                       "--target-hook to train a crosscoder over the models")
    if len(set(map(_resolved, args.model))) < len(args.model):
        raise CliError(f"--model names the same model twice ({', '.join(args.model)}): a crosscoder compares "
                       "different models")
    if args.finetune_tokens and (len(args.model) > 1 or args.target_hook is not None):
        raise CliError("--finetune-tokens tunes an SAE's decoder at the hook it reads; transcoders and crosscoders "
                       "do not take it yet: drop the flag (--refit-tokens works for them)")


def check_eval_args(args: argparse.Namespace) -> None:
    """Every check `saekit eval` can make before loading the SAE and the model."""
    check_positive(args, ("tokens", "batch_size"))
    check_device(args.device)
    check_text(args)
    if (args.layer is None) != (args.site is None):
        raise CliError("--layer and --site go together: pass both (e.g. --layer 6 --site resid_post), or --hook")
    if args.site is not None and args.hook is not None:
        raise CliError("pass --hook MODULE.PATH or --layer N --site SITE, not both")


# --- the run record: OUT/run.json -----------------------------------------------------------------


def _resolved(path: str | Path | None) -> str | None:
    """An existing local path as an absolute path (so reruns from elsewhere compare equal); else as given."""
    if path is None:
        return None
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else str(path)


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings that decide the trained SAE: recorded in OUT/run.json and compared when a command is rerun.

    Where it runs (--device, --nproc), checkpoint spacing, --resume and display options are left out."""
    if args.from_cache is not None:
        return {"from_cache": _resolved(args.from_cache), "cache_shards": cache_digest(args.from_cache),
                **({"hook": args.hook} if args.hook else {}), "arch": args.arch, "features": args.features,
                "k": _effective_k(args), "l1": args.l1, "lr": args.lr,
                "recipe": args.recipe, "tokens": args.tokens, "batch_size": args.batch_size,
                "buffer_mb": args.buffer_mb, "dtype": args.dtype, "seed": args.seed,
                **({"refit_tokens": args.refit_tokens} if args.refit_tokens else {})}
    return {
        "model": _resolved(args.model[0]) if len(args.model) == 1 else [_resolved(m) for m in args.model],
        "hook": args.hook, "hook_side": args.hook_side, "arch": args.arch,
        **({"layer": args.layer, "site": args.site} if args.site else {}),
        **({"target_hook": args.target_hook, "target_side": args.target_side} if args.target_hook else {}),
        "features": args.features, "k": _effective_k(args), "l1": args.l1, "lr": args.lr, "recipe": args.recipe,
        "tokens": args.tokens, "text": _resolved(args.text), "dataset": args.dataset,
        "text_column": args.text_column, "split": args.split, "batch_size": args.batch_size,
        "context_len": args.context_len, "include_special_tokens": args.include_special_tokens,
        "buffer_mb": args.buffer_mb, "dtype": args.dtype, "seed": args.seed,
        **({"refit_tokens": args.refit_tokens} if args.refit_tokens else {}),
        **({"finetune_tokens": args.finetune_tokens} if args.finetune_tokens else {}),
    }


def cache_digest(folder: Path) -> str:
    """A digest of a cache's shard hashes: a rerun on a cache written again from other activations differs."""
    from saekit.activations.cache import open_cache

    shards = [shard.sha256 for shard in open_cache(folder).shards]
    return hashlib.sha256(" ".join(shards).encode()).hexdigest()[:16]


def read_run_record(out: Path) -> dict[str, Any] | None:
    """OUT/run.json, or None when OUT holds none."""
    path = out / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CliError(f"{path} is not valid JSON ({error}): delete {out} or pass another --out") from None
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        raise CliError(f"{path} is not a saekit run record: delete {out} or pass another --out")
    return record


def write_run_record(out: Path, status: str, settings: dict[str, Any], extra: dict[str, Any]) -> None:
    """Write OUT/run.json atomically (a kill never leaves it half written)."""
    from saekit.formats import atomic_write, saekit_version

    record = {"status": status, "settings": settings, **extra, "saekit_version": saekit_version()}
    text = json.dumps(record, indent=2, default=str)
    atomic_write(out / RUN_FILE, lambda tmp: Path(tmp).write_text(text))


def differing_settings(recorded: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """'name: recorded → new' for each setting that differs (compared as JSON stores them)."""
    from saekit.training.checkpoint import config_differences

    return config_differences(recorded, settings, ignore=frozenset())


def _is_sae_folder(folder: Path) -> bool:
    from saekit.formats import CFG_FILE, WEIGHTS_FILE

    return (folder / CFG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def check_existing_run(out: Path, settings: dict[str, Any]) -> bool:
    """True when OUT already holds this command's finished SAE. Refuses an OUT whose earlier run had other
    settings and left something (a finished SAE or a checkpoint) that this command would overwrite."""
    record = read_run_record(out)
    if record is None:
        if _is_sae_folder(out):
            raise CliError(f"--out {out} already holds an SAE without a run record ({RUN_FILE}): "
                           "pass another --out or delete it")
        return False
    from saekit.training.checkpoint import has_checkpoint

    done = record.get("status") == "done" and _is_sae_folder(out)
    differ = differing_settings(record["settings"], settings)
    if differ and (done or has_checkpoint(out / CHECKPOINTS)):
        raise CliError(f"--out {out} holds a {'finished' if done else 'started'} run with other settings "
                       f"({'; '.join(differ)}): use another --out or delete it")
    return done and not differ


# --- commands -------------------------------------------------------------------------------------


def _text(args: argparse.Namespace) -> Any:
    """The documents named on the command line: a text folder or a dataset; None if neither."""
    from saekit.activations.windows import HFDataset, TextFolder

    if args.dataset:
        return HFDataset(args.dataset, split=args.split, text_column=args.text_column)
    if args.text and str(args.text).endswith(".npy"):
        return str(args.text)  # pre-tokenized ids [n_tokens]
    return TextFolder(args.text) if args.text else None


def cmd_demo(args: argparse.Namespace) -> int:
    from saekit.demo import run_demo

    demo = run_demo(args.profile, args.out)
    print(f"demo ready in {demo.root}; open the notebooks with: jupyter lab notebooks/")
    return 0


def checkpoint_every(args: argparse.Namespace) -> int | None:
    """Tokens between checkpoints: --checkpoint-every, else a tenth of --tokens (at least a batch) rounded up
    to whole batches; None when turned off with 0."""
    if args.checkpoint_every == 0:
        return None
    every = args.checkpoint_every or max(args.tokens // 10, args.batch_size)
    return -(-every // args.batch_size) * args.batch_size


def _train_config_from_args(args: argparse.Namespace, checkpoint_dir: Path | None,
                            every: int | None, out: Path) -> TrainConfig:
    """The TrainConfig `saekit train`'s flags ask for (preset, coefficients, schedule, checkpoints; trackers
    writing into OUT/logs)."""
    from saekit.training import TrainConfig

    kwargs: dict[str, Any] = {"total_tokens": args.tokens, "lr": args.lr, "seed": args.seed,
                              "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None,
                              "checkpoint_every_tokens": every, "decoder_refit_tokens": args.refit_tokens,
                              "log_to": tuple(getattr(args, "log_to", None) or ()), "log_dir": str(out / "logs")}
    if args.l1 is not None:
        kwargs["l1_coefficient"] = args.l1
    try:
        if args.recipe == "default":
            return TrainConfig(**kwargs)
        return getattr(TrainConfig, args.recipe)(**kwargs)
    except ValueError as error:
        if isinstance(error, InputError):
            raise
        raise CliError(str(error)) from error


def _resume_point(args: argparse.Namespace, checkpoints: Path) -> Path | None:
    """--resume's checkpoint, else OUT/checkpoints when it holds a complete one, else None (a fresh start)."""
    from saekit.training.checkpoint import find_checkpoint, has_checkpoint

    if args.resume is not None:
        return find_checkpoint(args.resume)
    return checkpoints if has_checkpoint(checkpoints) else None


def cmd_train(args: argparse.Namespace) -> int:
    from saekit.folder_lock import folder_lock
    from saekit.training.distributed import DataParallel

    check_train_args(args)
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch_ranks(args)
    args = with_chosen_defaults(args)
    out = Path(args.out)
    parallel = DataParallel.from_environment(args.device)
    if parallel is None:
        with folder_lock(out, "saekit train"):
            return _train_in(out, args, None)
    try:
        if not parallel.is_main:
            return _train_in(out, args, parallel)
        with folder_lock(out, "saekit train"):
            return _train_in(out, args, parallel)
    finally:
        parallel.close()


def launch_ranks(args: argparse.Namespace) -> int:
    """`saekit train --nproc N ...`: the same command under torchrun, N processes on this machine."""
    argv, skip = [], False
    for word in args.argv:
        if skip:
            skip = False
        elif word == "--nproc":
            skip = True
        elif not word.startswith("--nproc="):
            argv.append(word)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
               "-m", "saekit", *argv]
    print(f"launching {args.nproc} ranks: torchrun --standalone --nproc-per-node={args.nproc} -m saekit "
          + " ".join(argv), flush=True)
    return subprocess.call(command)


def is_main_process() -> bool:
    """Whether this process prints: the only one, or rank 0 under torchrun."""
    return os.environ.get("RANK", "0") == "0"


def say(message: str) -> None:
    if is_main_process():
        print(message, flush=True)


def with_chosen_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with the batch size chosen from --tokens where not given (printed, and recorded with the run like any
    flag); the learning rate is chosen once the input width is known (`with_chosen_lr`)."""
    return with_chosen_batch_size(args)


def with_chosen_batch_size(args: argparse.Namespace) -> argparse.Namespace:
    from saekit.training.config import batch_size_for

    if args.batch_size is not None:
        return args
    chosen = argparse.Namespace(**{**vars(args), "batch_size": batch_size_for(args.tokens)})
    say(f"batch size {chosen.batch_size} (chosen for {args.tokens:,} tokens: "
        f"{args.tokens // chosen.batch_size:,} steps; pass --batch-size to set it)")
    return chosen


def with_chosen_lr(args: argparse.Namespace, d_in: int) -> argparse.Namespace:
    """`args` with --lr chosen for the input width and dictionary size where not given (printed; the run record
    keeps lr None, which the same command on the same model chooses alike, and the summary the rate chosen)."""
    from saekit.training.config import lr_for

    if args.lr is not None:
        return args
    chosen = argparse.Namespace(**{**vars(args), "lr": lr_for(d_in, args.features)})
    say(f"learning rate {chosen.lr:.3g} (chosen for d_in {d_in:,} and {args.features:,} features; pass --lr to "
        "set it)")
    return chosen


def _train_in(out: Path, args: argparse.Namespace, parallel: Any) -> int:
    """`saekit train` with the output folder locked (by rank 0 alone under torchrun): resume, skip a finished run,
    or train from scratch. Rank 0 decides and tells the other ranks; it alone writes."""
    import torch

    from saekit.activations.nnsight_api import get_tokenizer, load_model
    from saekit.activations.source import torch_dtype
    from saekit.activations.windows import token_source
    from saekit.saes import SAE
    from saekit.training import train
    from saekit.training.decoder_finetune import finetune_decoder

    writer = parallel is None or parallel.is_main
    settings = run_settings(args)
    every = checkpoint_every(args)
    checkpoints = out / CHECKPOINTS
    finished = check_existing_run(out, settings) if writer else None
    resume = None if finished or not writer else _resume_point(args, checkpoints)
    if parallel is not None:
        finished, resume = parallel.broadcast((finished, resume))
    if finished:
        say(f"already trained: {out} holds the finished {args.arch} SAE of this command "
            "(delete it or pass another --out to train again)")
        return 0
    device = str(parallel.device) if parallel is not None else args.device
    models = [] if args.from_cache else \
        [load_model(m, device=device, **_loading(args)) for m in args.model]
    if models:
        args = with_context_resolved(with_site_resolved(args, models[0]), models[0])
    source = _training_source(args, models, device, parallel)
    sae_kwargs = {"k": args.k} if args.k is not None else {}
    provenance = source.provenance()
    args = with_chosen_lr(args, source.d_in)
    train_cfg = _train_config_from_args(args, checkpoints if every else None, every, out)
    sae = SAE.create(
        args.arch, d_in=source.d_in, n_features=args.features, d_out=source.d_out,
        n_models=max(1, len(provenance.models)), seed=args.seed, dtype=torch_dtype(args.dtype), device=device,
        **sae_kwargs,
    )
    sae.provenance = provenance
    extra = {"device": args.device, "checkpoint_every_tokens": every, **({"nproc": parallel.world_size}
                                                                         if parallel else {})}
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        write_run_record(out, "running", settings, extra)
    run = train(sae, source, train_cfg, resume=resume, progress=not args.quiet and writer, parallel=parallel)
    if not writer:
        return 0
    if args.finetune_tokens:
        model, text = models[0], _text(args)
        windows = token_source(text, get_tokenizer(model), args.context_len, batch_size=64).take(args.finetune_tokens)
        tuned = finetune_decoder(run.sae, model, windows, args.hook, args.finetune_tokens, side=args.hook_side,
                                 compute_dtype=getattr(torch, run.summary["compute_dtype"]), progress=not args.quiet)
        run.summary["decoder_finetune"] = tuned._asdict()
    save_run(out, run, settings, extra)
    where = sae.provenance
    print(f"saved {args.arch} {dictionary_kind(run.sae)} ({run.sae.d_sae} features on {where.hook}"
          f"{' → ' + where.target_hook if where.target_hook else ''}) to {out}")
    return 0


def _training_source(args: argparse.Namespace, models: list[Any], device: str, parallel: Any, *,
                     sites: Sequence[tuple[str, str]] = (), total: int | None = None) -> Any:
    """The training batches: this rank's share of the cache's or the models' activations, at --hook or, for a
    sweep, at every one of `sites` side by side (a cache gives all its sites then); `total` rows (default: --tokens
    and --refit-tokens)."""
    from saekit.activations.cache import CachedBatches
    from saekit.activations.nnsight_api import has_lm_head
    from saekit.activations.source import ActivationConfig, ActivationSource, torch_dtype

    ranks = {"rank": parallel.rank, "world_size": parallel.world_size} if parallel else {}
    total = total or args.tokens + args.refit_tokens
    if args.from_cache is not None:
        return CachedBatches(args.from_cache, batch_size=args.batch_size, total_tokens=total,
                             buffer_bytes=args.buffer_mb * 2**20, seed=args.seed, dtype=torch_dtype(args.dtype),
                             device=device, hook=None if sites else args.hook, **ranks)
    if args.finetune_tokens and not has_lm_head(models[0]):
        raise CliError(f"--finetune-tokens needs next-token logits and {args.model[0]} has no language-model head: "
                       "drop the flag (--refit-tokens fits the decoder without one)")
    (hook, side), *more = sites or [(args.hook, args.hook_side)]
    config = ActivationConfig(
        hook=hook, hook_side=side, target_hook=args.target_hook, target_side=args.target_side, more_sites=tuple(more),
        context_len=args.context_len, batch_size=args.batch_size,
        buffer_bytes=args.buffer_mb * 2**20, dtype=args.dtype, device=device,
        exclude_special_tokens=not args.include_special_tokens, total_tokens=total, seed=args.seed,
    )
    return ActivationSource(models, _text(args), config, progress=False, **ranks)


def cmd_sweep(args: argparse.Namespace) -> int:
    from saekit.folder_lock import folder_lock
    from saekit.sweep_command import parse_members, read_spec

    shared, specs = read_spec(args.spec, args.dictionary)
    members = parse_members(build_parser(), shared, specs, args.out)
    for name, member in members:
        try:
            check_train_args(member)
        except CliError as error:
            raise CliError(f"dictionary {name!r}: {error}") from None
        if member.finetune_tokens or member.nproc > 1:
            raise CliError(f"dictionary {name!r}: a sweep trains in one process without the decoder's fine-tune: "
                           "drop finetune_tokens and nproc (train that one alone with saekit train)")
    longest = max((m for _, m in members), key=lambda m: m.tokens)
    batch = with_chosen_batch_size(longest).batch_size  # a shared setting: given for all, or chosen for the longest
    members = [(name, argparse.Namespace(**{**vars(m), "batch_size": batch})) for name, m in members]
    _check_shared(members)
    with folder_lock(args.out, "saekit sweep"):
        return _sweep_in(args.out, members, quiet=args.quiet)


def _check_shared(members: list[tuple[str, argparse.Namespace]]) -> None:
    """The dictionaries of a sweep read the same activations: only their own settings may differ."""
    from saekit.sweep_command import OWN

    first_name, first = members[0]
    base = {k: v for k, v in run_settings(first).items() if k not in OWN}
    for name, member in members[1:]:
        differ = differing_settings(base, {k: v for k, v in run_settings(member).items() if k not in OWN})
        if differ:
            raise CliError(f"dictionaries {first_name!r} and {name!r} read different activations ({'; '.join(differ)})"
                           ": set these at the top of the spec, once for all")


def _sweep_in(out: Path, members: list[tuple[str, argparse.Namespace]], quiet: bool) -> int:
    """Train the sweep's unfinished dictionaries together; save each as `saekit train` would."""
    from saekit.activations.nnsight_api import load_model
    from saekit.activations.source import torch_dtype
    from saekit.saes import SAE
    from saekit.training import train_many

    settings = {name: run_settings(member) for name, member in members}  # as given: a rerun compares these
    pending = []
    for name, member in members:
        if check_existing_run(out / name, settings[name]):
            print(f"already trained: {name}")
        else:
            pending.append((name, member))
    if not pending:
        return 0
    first = pending[0][1]
    models = [] if first.from_cache is not None else \
        [load_model(m, device=first.device, **_loading(first)) for m in first.model]
    if models:
        pending = [(name, with_context_resolved(with_site_resolved(m, models[0]), models[0])) for name, m in pending]
    sites = list(dict.fromkeys((m.hook, m.hook_side) for _, m in pending))
    source = _training_source(pending[0][1], models, first.device, None, sites=sites,
                              total=max(m.tokens + m.refit_tokens for _, m in pending))
    columns = {(hook, side): part for hook, side, part in source.site_columns()}
    saes, configs, parts, resumes, records = [], [], [], [], []
    for name, member in pending:
        site = (member.hook, member.hook_side) if member.hook else next(iter(columns))
        if site not in columns:
            raise CliError(f"dictionary {name!r} reads {site[0]} ({site[1]}), which the cache does not hold: it holds "
                           f"{', '.join(h for h, _ in columns)}")
        part = columns[site]
        width = part.stop - part.start
        provenance = source.provenance().replace(hook=site[0], hook_side=site[1]) if len(columns) > 1 \
            else source.provenance()
        d_out = None if len(columns) > 1 else source.d_out
        sae = SAE.create(member.arch, d_in=width - (d_out or 0), n_features=member.features, d_out=d_out,
                         n_models=max(1, len(provenance.models)), seed=member.seed, dtype=torch_dtype(member.dtype),
                         device=member.device, **({"k": member.k} if member.k is not None else {}))
        sae.provenance = provenance
        folder = out / name
        every = checkpoint_every(member)
        configs.append(_train_config_from_args(with_chosen_lr(member, width - (d_out or 0)),
                                               folder / CHECKPOINTS if every else None, every, folder))
        resumes.append(_resume_point(member, folder / CHECKPOINTS))
        extra = {"device": member.device, "checkpoint_every_tokens": every, "sweep": str(out)}
        folder.mkdir(parents=True, exist_ok=True)
        write_run_record(folder, "running", settings[name], extra)
        saes.append(sae)
        parts.append(None if width == source.width else part)
        records.append((name, member, extra))
    runs = train_many(saes, source, configs, columns=parts, resume=resumes, progress=not quiet)
    for (name, member, extra), run in zip(records, runs):
        save_run(out / name, run, settings[name], extra)
        summary = run.summary
        print(f"saved {name}: {member.arch} {summary['d_sae']} features on {run.sae.provenance.hook}, "
              f"{summary['tokens']:,} tokens, FVU {summary.get('fvu', float('nan')):.3f}, L0 "
              f"{summary.get('l0', float('nan')):.1f}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from saekit.activations.cache import write_cache
    from saekit.activations.nnsight_api import load_model
    from saekit.activations.source import ActivationConfig, ActivationSource
    from saekit.folder_lock import folder_lock

    check_cache_args(args)
    models = [load_model(m, device=args.device, **_loading(args)) for m in args.model]
    hooks = args.hook or [None]
    args = with_context_resolved(with_site_resolved(argparse.Namespace(**{**vars(args), "hook": hooks[0]}), models[0]),
                                 models[0])
    config = ActivationConfig(
        hook=args.hook, hook_side=args.hook_side, target_hook=args.target_hook, target_side=args.target_side,
        more_sites=tuple((hook, args.hook_side) for hook in hooks[1:]),
        context_len=args.context_len, model_batch_size=args.model_batch_size, dtype=args.dtype, device=args.device,
        exclude_special_tokens=not args.include_special_tokens, repeat=False,
    )
    source = ActivationSource(models, _text(args), config, progress=False)
    with folder_lock(args.out, "saekit cache"):
        manifest = write_cache(source, args.out, args.tokens, shard_bytes=args.shard_mb * 2**20,
                               progress=not args.quiet)
    short = f" (the text ran out: {manifest.rows:,} of {args.tokens:,})" if manifest.rows < args.tokens else ""
    sites = f" from {len(manifest.sites)} sites" if manifest.sites else ""
    print(f"cached {manifest.rows:,} activations{short} of width {manifest.width} ({manifest.dtype}){sites} in "
          f"{len(manifest.shards)} shards at {args.out}")
    return 0


def save_run(out: Path, run: Any, settings: dict[str, Any], extra: dict[str, Any]) -> None:
    """Save the SAE and its history, then mark the run done, then drop the checkpoints: a kill at any point
    leaves either a run marked done with everything in place or one that the same command resumes."""
    from saekit.formats import atomic_write

    run.sae.save(out)
    atomic_write(out / "history.csv", lambda tmp: run.history.to_csv(tmp, index=False))
    write_run_record(out, "done", settings, {**extra, "summary": getattr(run, "summary", {})})
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)


def cmd_eval(args: argparse.Namespace) -> int:
    from saekit.activations.nnsight_api import load_model
    from saekit.evaluation import evaluate
    from saekit.formats import load_sae

    check_eval_args(args)
    sae = load_sae(args.sae_dir, device=args.device)
    names = args.model or list(sae.provenance.model_names)
    if not names:
        raise CliError(f"{args.sae_dir}: the SAE's provenance names no model; pass --model NAME_OR_DIR")
    if len(names) != sae.n_models:
        raise CliError(f"{args.sae_dir} is a crosscoder over {sae.n_models} models and {len(names)} were given: "
                       "pass --model once per model, in its training order" if sae.n_models > 1 else
                       f"{args.sae_dir} reads one model and {len(names)} were given: pass one --model")
    text = _text(args) or _provenance_text(sae.provenance.text, args.sae_dir)
    models = [load_model(name, device=args.device, **_loading(args)) for name in names]
    side = None
    if args.site is not None:
        resolved = with_site_resolved(argparse.Namespace(**{**vars(args), "hook_side": None}), models[0])
        args, side = resolved, resolved.hook_side
    result = evaluate(
        sae, models if sae.n_models > 1 else models[0], text, hook=args.hook, side=side, target_hook=args.target_hook,
        max_tokens=args.tokens, batch_size=args.batch_size, progress=not args.quiet,
    )
    target = args.target_hook or sae.provenance.target_hook
    row = {"sae": str(args.sae_dir), "kind": dictionary_kind(sae), "model": names[0] if len(names) == 1 else names,
           "hook": args.hook or sae.provenance.hook, **({"target_hook": target} if target else {}),
           "arch": sae.arch, "n_features": sae.d_sae, **result.to_dict()}
    if args.json:
        print(json.dumps(row))
    else:
        import pandas as pd

        print(pd.Series(row, dtype=object).to_string())
    return 0


def dictionary_kind(sae: Any) -> str:
    """"SAE", "transcoder" or "crosscoder"."""
    return "transcoder" if sae.is_transcoder else "crosscoder" if sae.n_models > 1 else "SAE"


def _provenance_text(text: Any, sae_dir: Path) -> Any:
    """The training text recorded in the SAE's provenance: a token file, a folder, else a dataset name."""
    from saekit.activations.windows import HFDataset, TextFolder

    if not text or not isinstance(text, str):
        raise CliError(f"{sae_dir}: the SAE's provenance names no text; pass --text DIR")
    path = Path(text).expanduser()
    if text.endswith(".npy"):
        check_token_file(path)
        return text  # a saved token array (the demo records its token files)
    if path.is_dir():
        return TextFolder(path)
    if path.is_absolute() or path.exists():
        raise CliError(f"{sae_dir}: the SAE was trained on text at {text}, which is no longer there; pass --text DIR")
    _check_datasets_installed(f"the SAE's text (dataset {text!r})")
    return HFDataset(text)


def cmd_export(args: argparse.Namespace) -> int:
    from saekit.export_command import run

    return run(args)


def _add_doctor(commands) -> None:
    doc = commands.add_parser("doctor", help="check the installation: versions, torch build, widgets, demo; and fixes")
    doc.add_argument("--json", action="store_true", help="print the checks as a JSON list")


def cmd_doctor(args: argparse.Namespace) -> int:
    from saekit.doctor import run

    return run(json_output=args.json)


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "sweep": cmd_sweep, "cache": cmd_cache, "eval": cmd_eval,
            "export": cmd_export, "doctor": cmd_doctor}
# Bad input rather than a bug: saekit's InputError (CliError, SAEFormatError, ...) and paths that are
# missing, in the way or not allowed.
INPUT_ERRORS = (InputError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
                PermissionError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return COMMANDS[args.command](args)
    except INPUT_ERRORS as error:
        if args.traceback:
            raise
        message = str(error).strip()
        print(f"saekit {args.command}: error: {message.splitlines()[0] if message else type(error).__name__}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.traceback:
            raise
        again = "; run the same command again to resume from its last checkpoint" if args.command == "train" else ""
        print(f"saekit {args.command}: interrupted{again}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
