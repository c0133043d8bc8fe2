"""The `saekit` command: train an SAE on a model's activations, evaluate one, or build the demo.

Commands parse, call the library and print; the work lives in `saekit.training`, `saekit.evaluation`
and `saekit.activations`. Bad input ends with one line on stderr and exit status 1 (`--traceback`
shows the full error instead).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  saekit demo --profile quick
  saekit train --model gpt2 --hook transformer.h.0.mlp.act --arch topk --k 32 \\
      --features 4096 --tokens 2000000 --text corpus/ --out runs/gpt2-l0-topk
  saekit train --model ./my-model --hook transformer.h.0.mlp.act --arch relu --l1 5 \\
      --features 1024 --tokens 500000 --text corpus/ --out runs/relu-1k
  saekit eval runs/gpt2-l0-topk --json
  saekit eval runs/gpt2-l0-topk --text heldout/ --tokens 50000
"""

RECIPES = ("default", "towards_monosemanticity", "april_2024")


class CliError(Exception):
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
    _add_eval(commands)
    return parser


def _add_demo(commands) -> None:
    demo = commands.add_parser("demo", help="build the offline demo: corpus, tokenizer, models, SAEs, table")
    demo.add_argument("--profile", choices=("quick", "full"), default="quick", help="quick (CI, minutes) or full")
    demo.add_argument("--out", type=Path, default=None, metavar="DIR", help="cache folder for what the demo builds")


def _add_text_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--text", type=Path, metavar="DIR", help="folder of .txt files, or a .npy token array")
    group.add_argument("--dataset", metavar="NAME", help="Hugging Face dataset name (needs `pip install datasets`)")
    parser.add_argument("--text-column", default="text", metavar="COLUMN", help="dataset text column (default: text)")
    parser.add_argument("--split", default="train", help="dataset split (default: train)")


def _add_train(commands) -> None:
    train = commands.add_parser("train", help="train an SAE on a model's activations at one hook")
    train.add_argument("--model", required=True, metavar="NAME_OR_DIR", help="Hugging Face hub name or model folder")
    train.add_argument("--hook", required=True, metavar="MODULE.PATH", help="module path, e.g. transformer.h.0.mlp.act")
    train.add_argument("--arch", required=True, metavar="ARCH", help="relu, topk, batchtopk or jumprelu")
    train.add_argument("--features", type=int, required=True, metavar="N", help="dictionary size (number of features)")
    train.add_argument("--tokens", type=int, required=True, metavar="N", help="activation vectors to train on")
    _add_text_args(train, required=True)
    train.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to save the SAE in")
    train.add_argument("--k", type=int, default=None, help="topk/batchtopk: active features per token")
    train.add_argument("--l1", type=float, default=None, help="relu: L1 coefficient")
    train.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default: 3e-4)")
    train.add_argument("--recipe", choices=RECIPES, default="default", help="training recipe preset")
    train.add_argument("--batch-size", type=int, default=4096, help="activations per step (default: 4096)")
    train.add_argument("--context-len", type=int, default=128, help="tokens per context window (default: 128)")
    train.add_argument("--hook-side", choices=("output", "input"), default="output", help="module output or input")
    train.add_argument("--include-special-tokens", action="store_true", help="keep BOS/EOS/PAD positions")
    train.add_argument("--buffer-mb", type=int, default=256, help="shuffle buffer budget in MiB (default: 256)")
    train.add_argument("--dtype", default="float32", help="activation and SAE dtype (default: float32)")
    train.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    train.add_argument("--seed", type=int, default=0, help="seed for the SAE init and the shuffle")
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_eval(commands) -> None:
    ev = commands.add_parser("eval", help="evaluate a saved SAE: reconstruction, sparsity, spliced loss")
    ev.add_argument("sae_dir", type=Path, metavar="SAE_DIR", help="folder written by `saekit train` or sae.save()")
    _add_text_args(ev, required=False)
    ev.add_argument("--tokens", type=int, default=16_384, metavar="N", help="tokens to evaluate on (default: 16384)")
    ev.add_argument("--model", default=None, metavar="NAME_OR_DIR", help="model (default: the SAE's metadata)")
    ev.add_argument("--hook", default=None, metavar="MODULE.PATH", help="hook (default: the SAE's metadata)")
    ev.add_argument("--batch-size", type=int, default=8, help="context windows per forward (default: 8)")
    ev.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")


# --- commands -------------------------------------------------------------------------------------


def _text(args: argparse.Namespace) -> Any:
    """The documents named on the command line: a text folder or a dataset; None if neither."""
    from saekit.activations.text import HFDataset, TextFolder

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


def _train_config(args: argparse.Namespace):
    from saekit.training import TrainConfig

    kwargs: dict[str, Any] = {"total_tokens": args.tokens, "lr": args.lr, "seed": args.seed}
    if args.l1 is not None:
        kwargs["l1_coefficient"] = args.l1
    if args.recipe == "default":
        return TrainConfig(**kwargs)
    return getattr(TrainConfig, args.recipe)(**kwargs)


def cmd_train(args: argparse.Namespace) -> int:
    from saekit.activations.nnsight_api import load_model
    from saekit.activations.source import ActivationConfig, ActivationSource, check_dtype, torch_dtype
    from saekit.saes import SAE, sae_class
    from saekit.training import train

    sae_class(args.arch)  # cheap checks first: an unknown architecture or text fails before the model loads
    train_cfg = _train_config(args)
    text = _text(args)
    config = ActivationConfig(
        hook=args.hook, hook_side=args.hook_side, context_len=args.context_len, batch_size=args.batch_size,
        buffer_bytes=args.buffer_mb * 2**20, dtype=args.dtype, device=args.device,
        exclude_special_tokens=not args.include_special_tokens, total_tokens=args.tokens, seed=args.seed,
    )
    source = ActivationSource(load_model(args.model, device=args.device), text, config, progress=False)
    sae_kwargs = {"k": args.k} if args.k is not None else {}
    sae = SAE.create(
        args.arch, d_in=source.d_in, n_features=args.features, seed=args.seed,
        dtype=torch_dtype(args.dtype), device=args.device, **sae_kwargs,
    )
    check_dtype(sae, source)
    sae.metadata.update(source.metadata())
    run = train(sae, source, train_cfg, progress=not args.quiet)
    run.sae.save(args.out)
    run.history.to_csv(Path(args.out) / "history.csv", index=False)
    print(f"saved {args.arch} SAE ({run.sae.d_sae} features on {args.hook}) to {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from saekit.evaluation import evaluate
    from saekit.formats import load_sae

    sae = load_sae(args.sae_dir, device=args.device)
    model = args.model or sae.metadata.get("model")
    if not model:
        raise CliError(f"{args.sae_dir}: the SAE's metadata names no model; pass --model NAME_OR_DIR")
    text = _text(args) or _metadata_text(sae.metadata.get("text"), args.sae_dir)
    result = evaluate(
        sae, _load(model, args.device), text, hook=args.hook, max_tokens=args.tokens, batch_size=args.batch_size,
        progress=not args.quiet,
    )
    row = {"sae": str(args.sae_dir), "model": model, "hook": args.hook or sae.metadata.get("hook"), "arch": sae.arch,
           "n_features": sae.d_sae, **result.to_dict()}
    if args.json:
        print(json.dumps(row))
    else:
        import pandas as pd

        print(pd.Series(row, dtype=object).to_string())
    return 0


def _load(model: str, device: str):
    from saekit.activations.nnsight_api import load_model

    return load_model(model, device=device)


def _metadata_text(text: str | None, sae_dir: Path) -> Any:
    """The training text recorded in the SAE's metadata: a folder, else a dataset name."""
    from saekit.activations.text import HFDataset, TextFolder

    if not text:
        raise CliError(f"{sae_dir}: the SAE's metadata names no text; pass --text DIR")
    if text.endswith(".npy"):
        return text  # a saved token array (the demo records its token files)
    return TextFolder(Path(text)) if Path(text).is_dir() else HFDataset(text)


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "eval": cmd_eval}
# What counts as bad input rather than a bug: missing files, unknown names, bad values, wrong dtypes.
INPUT_ERRORS = (CliError, ValueError, OSError, TypeError, ImportError, KeyError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except INPUT_ERRORS as error:
        if args.traceback:
            raise
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        print(f"saekit {args.command}: error: {message.splitlines()[0] if message else type(error).__name__}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
