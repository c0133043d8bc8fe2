"""What a user gets from `pip install saekit`: the wheel built from this checkout, and a bare `import saekit`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("ipywidgets", "plotly", "umap", "anthropic", "openai", "wordllama", "anywidget", "playwright", "mkdocs")


def _checkout_files() -> list[Path]:
    """The files of the checkout as git sees them (tracked and new, not ignored), relative to ROOT."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell its files from build leftovers")
    return [Path(p) for p in listed.stdout.decode().split("\0") if p and (ROOT / p).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel `pip wheel --no-deps` builds from a copy of the checkout (no stale build/ folder can leak in)."""
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for rel in _checkout_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            str(src), "-w", str(dist)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = dist.glob("saekit-*.whl")
    return zipfile.ZipFile(path)


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (member,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(member).decode()


def test_wheel_holds_every_module_and_data_file_and_nothing_else(wheel):
    names = set(wheel.namelist())
    package = {p.as_posix() for p in _checkout_files() if p.parts[0] == "saekit" and "__pycache__" not in p.parts}
    assert any(p.endswith("embedded/installed.py") for p in package)
    missing = package - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    # every package folder is importable from the wheel (no folder without its __init__)
    folders = {str(Path(p).parent) for p in package if p.endswith(".py")}
    assert {f"{f}/__init__.py" for f in folders} <= names
    payload = {n for n in names if ".dist-info/" not in n}
    assert payload == package, f"unexpected files in the wheel: {sorted(payload - package)}"
    assert not [n for n in names if n.startswith(("tests/", "notebooks/", "benchmarks/", "docs/")) or n.endswith(
        (".ipynb", ".pyc"))]


def test_wheel_declares_the_entry_point_and_the_extras(wheel):
    import tomllib

    entry_points = _dist_info(wheel, "entry_points.txt")
    assert "[console_scripts]" in entry_points and "saekit = saekit.cli:main" in entry_points
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    metadata = Parser().parsestr(_dist_info(wheel, "METADATA"))
    assert metadata["Name"] == "saekit" and metadata["Version"] == project["version"]
    assert set(metadata.get_all("Provides-Extra")) == set(project["optional-dependencies"])
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist")]
    for extra, packages in project["optional-dependencies"].items():
        declared = {_key(r) for r in requires if r.marker and r.marker.evaluate({"extra": extra})}
        assert declared == {_key(Requirement(p)) for p in packages}, extra
    core = {_key(r) for r in requires if r.marker is None}
    assert core == {_key(Requirement(p)) for p in project["dependencies"]}


def _key(requirement: Requirement) -> tuple[str, frozenset[str], frozenset[str]]:
    """A requirement without its marker, in a form that ignores spelling (order of specifiers, case)."""
    return (requirement.name.lower(), frozenset(map(str, requirement.specifier)), frozenset(requirement.extras))


def test_import_saekit_loads_no_optional_package():
    code = f"import sys, saekit; print(' '.join(m for m in {OPTIONAL!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == []
    # the probe itself works: importing one of them is seen
    seen = subprocess.run([sys.executable, "-c", code.replace("import sys, saekit", "import sys, saekit, plotly")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert seen.stdout.split() == ["plotly"]


def test_lock_pins_every_dependency_make_venv_installs():
    """requirements.lock covers pyproject's dependencies and the extras `make lock` names, within their ranges
    (a package added to pyproject without `make lock` fails here, not in someone's fresh venv)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (extras,) = re.findall(r"^LOCK_EXTRAS \?= (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    lock = (ROOT / "requirements.lock").read_text()
    pins = {canonicalize_name(n): v for n, v in re.findall(r"^([A-Za-z0-9._-]+)==(\S+) \\$", lock, re.MULTILINE)}
    lines = lock.splitlines()
    entries = [i for i, line in enumerate(lines) if line and not line.lstrip().startswith(("#", "--hash"))]
    assert len(entries) == len(pins) > 100  # nothing but exact pins
    assert all(lines[i + 1].startswith("    --hash=sha256:") for i in entries)  # each with its hashes
    wanted = [*project["dependencies"], *(p for e in extras.split(",") for p in project["optional-dependencies"][e])]
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == "torch":
            assert name not in pins  # installed first from TORCH_SPEC
            continue
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {line}"
