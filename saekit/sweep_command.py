"""`saekit sweep`: several dictionaries from one pass over a model's activations (or one read of a cache).

A sweep is a small TOML file: settings every dictionary shares, as `saekit train` flags (`model`, `layer` and
`site` or `hook`, `text` or `from_cache`, `tokens`, `batch_size`, ...), and one `[[dictionary]]` table per
dictionary with what is its own (`name`, `arch`, `features`, `k`, `l1`, `lr`, `recipe`, `tokens`, and its site:
`hook`/`hook_side` or `layer`/`site`). `--dictionary "arch=topk features=4096 k=32"` adds one from the command line.
Each dictionary is saved in OUT/NAME as `saekit train --out OUT/NAME` would save it, with the same run record, so
rerunning the sweep resumes the unfinished ones from their checkpoints and leaves the finished ones alone.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import tomllib

from saekit.errors import InputError

OWN = frozenset({"name", "arch", "features", "k", "l1", "lr", "recipe", "tokens", "refit_tokens", "hook", "hook_side",
                 "layer", "site"})
"""Settings a dictionary of a sweep may set for itself; all others are the sweep's, shared by every dictionary."""


class SweepError(InputError):
    """A sweep spec that cannot run: one line saying what to change."""


def read_spec(path: Path | None, extra: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(shared settings, one dict per dictionary) from a TOML file and `--dictionary "key=value ..."` strings."""
    shared: dict[str, Any] = {}
    members: list[dict[str, Any]] = []
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise SweepError(f"cannot read the sweep spec {path}: {error}") from None
        members = list(data.pop("dictionary", []))
        shared = data
    for text in extra:
        member = {}
        for word in shlex.split(text):
            key, sep, value = word.partition("=")
            if not sep:
                raise SweepError(f"--dictionary {text!r}: write each setting as key=value, e.g. "
                                 "--dictionary \"arch=topk features=4096 k=32\"")
            member[key] = _value(value)
        members.append(member)
    if not members:
        raise SweepError("the sweep names no dictionary: add [[dictionary]] tables to the spec or --dictionary "
                         "\"arch=... features=...\"")
    for member in members:
        bad = sorted(set(member) - OWN)
        if bad:
            raise SweepError(f"a dictionary sets {', '.join(bad)}, which every dictionary of a sweep shares: set "
                             f"{'it' if len(bad) == 1 else 'them'} at the top of the spec (a dictionary may set "
                             f"{', '.join(sorted(OWN))})")
    return {k.replace("-", "_"): v for k, v in shared.items()}, members


def _value(text: str) -> Any:
    """A command-line value as TOML would read it (numbers, booleans), else the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def member_name(member: dict[str, Any], index: int) -> str:
    """The folder a dictionary is saved in: its `name`, else arch-features (numbered when that repeats)."""
    name = str(member.get("name") or f"{member.get('arch', 'sae')}-{member.get('features', index)}")
    if "/" in name or name.startswith("."):
        raise SweepError(f"dictionary name {name!r} is not a plain folder name: use letters, digits, - and _")
    return name


def train_argv(settings: dict[str, Any], out: Path) -> list[str]:
    """The `saekit train` arguments for one dictionary's settings."""
    argv = ["train"]
    for key, value in settings.items():
        if key == "name":
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return [*argv, "--out", str(out)]


def parse_members(parser: argparse.ArgumentParser, shared: dict[str, Any], members: list[dict[str, Any]],
                  out: Path) -> list[tuple[str, argparse.Namespace]]:
    """Each dictionary's `saekit train` namespace, checked as `saekit train` checks its flags."""
    named: list[tuple[str, argparse.Namespace]] = []
    for i, member in enumerate(members):
        name = member_name(member, i)
        if name in (n for n, _ in named):
            raise SweepError(f"two dictionaries are named {name!r}: give each its own name")
        own = dict(shared)
        if "hook" in member:  # a dictionary's own module path replaces the shared site
            own = {k: v for k, v in own.items() if k not in ("hook", "layer", "site")}
        elif "site" in member or "layer" in member:  # its own site (of the shared layer unless it names one)
            own.pop("hook", None)
        argv = train_argv({**own, **member}, out / name)
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            raise SweepError(f"dictionary {name!r}: its settings are not valid saekit train flags "
                             f"({' '.join(argv[1:])})") from None
        named.append((name, args))
    return named
