"""`saekit doctor`: its report parsed line by line, with missing or mismatched packages simulated."""

from __future__ import annotations

import importlib.metadata
import json
import platform

import pytest
import torch

from saekit import doctor
from saekit.cli import main


@pytest.fixture(autouse=True)
def _no_demo(tmp_path, monkeypatch):
    """An empty demo root: the report must say the demo is not built and how to build it."""
    monkeypatch.setenv("SAEKIT_DEMO_DIR", str(tmp_path / "demo"))


def _lines(out: str) -> dict[tuple[str, str], tuple[str, str]]:
    """{(section, name): (STATUS, detail)} from the report's check lines (columns are fixed-width)."""
    table = {}
    for line in out.split("\n\n")[0].splitlines():
        status, section, name, detail = line[:8].strip(), line[9:29].strip(), line[30:52].strip(), line[53:]
        table[(section, name)] = (status, detail)
    return table


def test_report_with_a_missing_extra_exits_0_and_names_the_fix(monkeypatch, capsys):
    real = doctor.installed_version
    monkeypatch.setattr(doctor, "installed_version", lambda name: None if name == "plotly" else real(name))
    monkeypatch.setattr(doctor, "saekit_requirements", lambda: [
        "torch>=2.4", "numpy>=1.26", 'plotly>=5.20; extra == "notebooks"', 'pytest>=8; extra == "test"',
        'mkdocstrings[python]>=0.26; extra == "docs"'])
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    rows = _lines(out)
    assert rows[("extra notebooks", "plotly")] == ("MISSING", "not installed")
    assert rows[("core", "torch")] == ("OK", importlib.metadata.version("torch"))
    assert rows[("core", "numpy")][0] == "OK"
    assert rows[("extra test", "pytest")] == ("OK", importlib.metadata.version("pytest"))
    assert rows[("saekit", "python")][1].startswith(platform.python_version() + " ")
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
    assert rows[("torch", "build")] == ("INFO", f"{torch.__version__} ({build})")
    assert rows[("demo", "demo")][0] == "MISSING"
    fixes = out.split("to fix:\n")[1].split("\n\n")[0].split("\n")
    assert "  pip install 'saekit[notebooks]'" in fixes
    assert "  saekit demo --profile quick" in fixes
    assert out.rstrip().endswith("saekit works")


def test_missing_core_package_fails(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "saekit_requirements", lambda: ["torch>=2.4", "not-a-real-package-xyz>=1"])
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert _lines(out)[("core", "not-a-real-package-xyz")] == ("ERROR", "not installed")
    assert doctor.CORE_FIX in out
    assert out.rstrip().endswith("saekit is broken: run the fixes above")


def test_too_old_core_package_fails_naming_the_range(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "saekit_requirements", lambda: ["torch>=99"])
    assert main(["doctor"]) == 1
    status, detail = _lines(capsys.readouterr().out)[("core", "torch")]
    assert (status, detail) == ("ERROR", f"{importlib.metadata.version('torch')} installed, saekit needs >=99")


def test_json_lists_every_check(capsys):
    assert main(["doctor", "--json"]) == 0
    checks = json.loads(capsys.readouterr().out)
    assert {"section", "name", "status", "detail", "fix"} == set(checks[0])
    by_name = {(c["section"], c["name"]): c for c in checks}
    assert by_name[("saekit", "saekit")]["status"] == "ok"
    assert by_name[("demo", "demo")] == {
        "section": "demo", "name": "demo", "status": "missing", "fix": "saekit demo --profile quick",
        "detail": f"not built under {doctor_demo_root()}"}


def doctor_demo_root():
    from saekit.demo import default_root

    return default_root()


def test_widgets_report_missing_and_mismatched_front_ends():
    installed = {"ipywidgets": "8.1.5", "anywidget": "0.9.13", "jupyterlab_widgets": "3.0.9"}
    requires = {"ipywidgets": ["comm>=0.1.3", "widgetsnbextension~=4.0.14", "jupyterlab_widgets~=3.0.15",
                               'pytest>=3.6.0; extra == "test"']}
    checks = doctor.widget_checks(installed.get, requires.get)
    by_name = {c.name: c for c in checks}
    assert by_name["ipywidgets"].status == "ok"
    assert by_name["jupyterlab_widgets"].status == "warning"  # 3.0.9 is below ~=3.0.15: the front end is stale
    assert "jupyterlab_widgets~=3.0.15" in by_name["jupyterlab_widgets"].fix
    assert "widgetsnbextension" not in by_name  # absent, and JupyterLab's front end alone is enough

    installed.update(jupyterlab_widgets="3.0.15")
    assert all(c.status == "ok" for c in doctor.widget_checks(installed.get, requires.get))

    none = doctor.widget_checks({}.get, requires.get)
    assert [(c.name, c.status) for c in none] == [
        ("ipywidgets", "missing"), ("anywidget", "missing"), ("front end", "missing")]
    assert {c.fix for c in none} == {"pip install 'saekit[notebooks]'"}

    old = doctor.widget_checks({"ipywidgets": "7.8.1", "anywidget": "0.9", "widgetsnbextension": "3.6.6"}.get,
                               {"ipywidgets": ["widgetsnbextension~=3.6.6"]}.get)
    assert old[0].status == "warning" and "ipywidgets 8" in old[0].detail


def test_requirement_lines_are_read_with_extras_and_markers():
    assert doctor._split('mkdocstrings[python]>=0.26; extra == "docs"') == ("mkdocstrings", ">=0.26", "docs")
    assert doctor._split("nnsight<0.9,>=0.8.1") == ("nnsight", "<0.9,>=0.8.1", None)
    assert doctor._split("fiona<=1.9.6; (python_version <= '3.8') and extra == 'dev'") == ("fiona", "<=1.9.6", "dev")
