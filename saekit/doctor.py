"""`saekit doctor`: what is installed, what works, and for each missing piece the command that fixes it.

Versions are read from package metadata (nothing optional is imported), so the doctor runs, and exits 0,
in an install without any extra; only a broken core (saekit or one of its own dependencies) fails it.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["ok", "missing", "warning", "info", "error"]

CORE_FIX = "pip install --force-reinstall saekit"
DEMO_FIX = "saekit demo --profile quick"
# The notebook front-end packages ipywidgets 8 needs beside it: JupyterLab's and the classic notebook's.
WIDGET_FRONTENDS = ("jupyterlab_widgets", "widgetsnbextension")
# Used when saekit's own metadata cannot be read (run from a source tree that was never installed).
FALLBACK_REQUIREMENTS = (
    "torch", "nnsight", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "pyarrow", "tqdm", "scipy",
    'ipywidgets; extra == "notebooks"', 'plotly; extra == "notebooks"', 'anywidget; extra == "notebooks"',
    'umap-learn; extra == "notebooks"', 'jupyterlab; extra == "notebooks"',
)


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    section: str
    """Which part of the installation: "saekit", "core", "torch", "widgets", an extra's name, "demo"."""
    name: str
    """What was checked (a package, a device, the demo folder)."""
    status: Status
    """ok, missing (an optional piece), warning, info, or error (saekit itself cannot work)."""
    detail: str
    """The version or what was found."""
    fix: str = ""
    """The command that fixes it ("" when nothing needs fixing)."""


VersionLookup = Callable[[str], str | None]


def installed_version(name: str) -> str | None:
    """The installed version of distribution `name`, None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def saekit_requirements() -> list[str]:
    """saekit's Requires-Dist lines from its installed metadata (a fixed core list when it has none)."""
    try:
        found = importlib.metadata.requires("saekit")
    except importlib.metadata.PackageNotFoundError:
        found = None
    return list(found) if found else list(FALLBACK_REQUIREMENTS)


def _split(requirement: str) -> tuple[str, str, str | None]:
    """(name, version specifier, extra or None) of one Requires-Dist line."""
    spec, _, marker = requirement.partition(";")
    extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)", spec)
    if match is None:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    return match.group(1), match.group(2).strip(), extra.group(1) if extra else None


def _satisfies(version: str, specifier: str) -> bool | None:
    """Whether `version` meets `specifier`; None when `packaging` (to tell) is not installed."""
    if not specifier:
        return True
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion
    except ImportError:
        return None
    try:
        return SpecifierSet(specifier).contains(version, prereleases=True)
    except InvalidVersion:
        return None


def package_checks(requirements: Sequence[str], version_of: VersionLookup | None = None) -> list[Check]:
    """One check per required package: core ones fail the doctor when absent, an extra's only report its fix."""
    version_of = version_of or installed_version
    checks = []
    for requirement in requirements:
        name, specifier, extra = _split(requirement)
        version = version_of(name)
        section = f"extra {extra}" if extra else "core"
        fix = f"pip install 'saekit[{extra}]'" if extra else CORE_FIX
        if version is None:
            checks.append(Check(section, name, "missing" if extra else "error", "not installed", fix))
        elif _satisfies(version, specifier) is False:
            checks.append(Check(section, name, "warning" if extra else "error",
                                f"{version} installed, saekit needs {specifier}", fix))
        else:
            checks.append(Check(section, name, "ok", version))
    return checks


def widget_checks(version_of: VersionLookup | None = None,
                  requires_of: Callable[[str], Sequence[str]] | None = None) -> list[Check]:
    """Whether notebook widgets will render: ipywidgets 8, anywidget, and front-end packages that match."""
    version_of = version_of or installed_version
    requires_of = requires_of or (lambda name: importlib.metadata.requires(name) or [])
    fix = "pip install 'saekit[notebooks]'"
    checks = []
    ipywidgets = version_of("ipywidgets")
    if ipywidgets is None:
        checks.append(Check("widgets", "ipywidgets", "missing", "not installed: the notebook views cannot draw", fix))
    elif not ipywidgets.startswith("8."):
        checks.append(Check("widgets", "ipywidgets", "warning", f"{ipywidgets}: saekit's views need ipywidgets 8",
                            "pip install 'ipywidgets>=8.1,<9'"))
    else:
        checks.append(Check("widgets", "ipywidgets", "ok", ipywidgets))
    anywidget = version_of("anywidget")
    checks.append(Check("widgets", "anywidget", "ok", anywidget) if anywidget
                  else Check("widgets", "anywidget", "missing", "not installed: plotly figures will not show", fix))
    wanted = {}
    if ipywidgets is not None:
        for line in requires_of("ipywidgets"):
            name, specifier, extra = _split(line)
            if extra is None and name.replace("-", "_") in WIDGET_FRONTENDS:
                wanted[name.replace("-", "_")] = specifier
    present = [name for name in WIDGET_FRONTENDS if version_of(name)]
    if not present:
        checks.append(Check("widgets", "front end", "missing",
                            "neither jupyterlab_widgets nor widgetsnbextension: Jupyter cannot show widgets", fix))
    for name in present:
        version = version_of(name) or ""
        if _satisfies(version, wanted.get(name, "")) is False:
            checks.append(Check("widgets", name, "warning",
                                f"{version} does not match ipywidgets {ipywidgets} ({wanted[name]}): widgets will "
                                "not render", f"pip install 'ipywidgets=={ipywidgets}' '{name}{wanted[name]}'"))
        else:
            checks.append(Check("widgets", name, "ok", version))
    return checks


def torch_checks() -> list[Check]:
    """The torch build: its version, CPU or CUDA (with the CUDA version), and the devices it sees."""
    try:
        import torch
    except ImportError as error:
        return [Check("torch", "torch", "error", f"cannot import: {error}",
                      "pip install torch (see https://pytorch.org for your platform)")]
    cuda = torch.version.cuda
    build = f"CUDA {cuda}" if cuda else ("ROCm " + torch.version.hip if getattr(torch.version, "hip", None) else "CPU")
    checks = [Check("torch", "build", "info", f"{torch.__version__} ({build})")]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        checks.append(Check("torch", "devices", "info", f"{len(names)} GPU: " + ", ".join(names)))
    elif cuda:
        checks.append(Check("torch", "devices", "warning", "a CUDA build but no GPU visible: training runs on CPU"))
    else:
        mps = getattr(torch.backends, "mps", None)
        extra = ", MPS (Apple GPU)" if mps is not None and mps.is_available() else ""
        checks.append(Check("torch", "devices", "info", f"CPU ({torch.get_num_threads()} threads){extra}"))
    return checks


def saekit_checks() -> list[Check]:
    """saekit's version and a smoke test: a tiny SAE encodes and decodes."""
    try:
        import torch

        import saekit

        sae = saekit.SAE.create("topk", d_in=4, n_features=8, k=2)
        with torch.no_grad():
            out = sae.decode(sae.encode(torch.ones(3, 4)))
        if tuple(out.shape) != (3, 4):
            raise RuntimeError(f"a [3, 4] batch came back as {tuple(out.shape)}")
    except Exception as error:  # anything here means saekit itself is broken
        return [Check("saekit", "saekit", "error", f"does not work: {type(error).__name__}: {error}", CORE_FIX)]
    version = installed_version("saekit") or "not installed (run from a source tree)"
    where = Path(saekit.__file__).parent if saekit.__file__ else "?"
    return [Check("saekit", "saekit", "ok", f"{version} at {where}"),
            Check("saekit", "python", "ok" if sys.version_info >= (3, 10) else "error",
                  f"{platform.python_version()} ({sys.executable})")]


def demo_checks() -> list[Check]:
    """Where the demo lives and whether it is built (what the notebooks open)."""
    from saekit.demo import DemoNotFoundError, default_root, open_demo

    root = default_root()
    try:
        demo = open_demo()
    except DemoNotFoundError:
        return [Check("demo", "demo", "missing", f"not built under {root}", DEMO_FIX)]
    except Exception as error:  # a folder there that cannot be read: rebuilding it is the fix
        return [Check("demo", "demo", "warning", f"unreadable at {root}: {type(error).__name__}: {error}", DEMO_FIX)]
    return [Check("demo", "demo", "ok", f"{demo.profile} profile built at {demo.root} ({len(demo.sae_names())} SAEs)")]


def diagnose(version_of: VersionLookup | None = None, requirements: Sequence[str] | None = None) -> list[Check]:
    """Every check, in report order (`version_of` and `requirements` stand in for the installed metadata)."""
    reqs = saekit_requirements() if requirements is None else requirements
    packages = package_checks(reqs, version_of)
    core = [c for c in packages if c.section == "core"]
    extras = [c for c in packages if c.section != "core"]
    return [*saekit_checks(), *core, *torch_checks(), *widget_checks(version_of), *extras, *demo_checks()]


def healthy(checks: Sequence[Check]) -> bool:
    """saekit itself works: no check is an error (missing extras and an unbuilt demo are fine)."""
    return not any(c.status == "error" for c in checks)


def format_report(checks: Sequence[Check]) -> str:
    """The report as text: one `STATUS  section  name  detail` line per check, then the fixes."""
    lines = [f"{c.status.upper():<8} {c.section:<20} {c.name:<22} {c.detail}" for c in checks]
    fixes = list(dict.fromkeys(c.fix for c in checks if c.fix and c.status != "ok"))
    if fixes:
        lines += ["", "to fix:"] + [f"  {fix}" for fix in fixes]
    lines += ["", "saekit works" if healthy(checks) else "saekit is broken: run the fixes above"]
    return "\n".join(lines)


def run(json_output: bool = False, version_of: VersionLookup | None = None) -> int:
    """Print the report (text, or a JSON list of checks); exit status 0 when saekit itself works."""
    checks = diagnose(version_of)
    if json_output:
        import json
        from dataclasses import asdict

        print(json.dumps([asdict(c) for c in checks], indent=1))
    else:
        print(format_report(checks))
    return 0 if healthy(checks) else 1
