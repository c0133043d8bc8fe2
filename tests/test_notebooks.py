"""The notebooks: committed clean (no outputs, python3 kernelspec), and each runs top to bottom with
nbclient against a quick demo, as CI runs them.

The run uses the demo at $SAEKIT_DEMO_DIR / the default location when one is built, else builds the
quick one there once per session (minutes). Deselect these with `-m "not notebooks"`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ["00_quickstart", "01_feature_explorer", "02_feature_map", "03_universality", "04_feature_splitting",
            "05_steering", "06_paper_figures", "07_transcoders_and_crosscoders", "08_autointerp",
            "09_specificity_and_automata", "10_superposition", "11_the_sae_loss"]
NO_DEMO = {"10_superposition", "11_the_sae_loss"}  # they train toy models of their own and open no demo
WITH_SOLUTIONS = EXPECTED  # exercises with folded solutions
CELL_TIMEOUT_S = 300
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

nbformat = pytest.importorskip("nbformat")


# --- committed form (fast) ----------------------------------------------------------------------------------


def test_every_notebook_is_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean_with_its_kernelspec(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec") == KERNELSPEC
    assert nb.metadata.get("language_info", {}).get("name") == "python"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} holds outputs"
    assert nb.cells[0].cell_type == "markdown"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    if path.stem in NO_DEMO:
        assert "open_demo" not in first_code.source
    else:
        assert "open_demo()" in first_code.source and "saekit demo --profile quick" in first_code.source


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem in WITH_SOLUTIONS],
                         ids=[p.stem for p in NOTEBOOKS if p.stem in WITH_SOLUTIONS])
def test_notebook_ends_with_exercises_and_folded_solutions(path):
    """Two or three exercises, then per exercise a "Solution" heading and a code cell whose input JupyterLab and
    Notebook 7 fold (metadata jupyter.source_hidden)."""
    nb = nbformat.read(path, as_version=4)
    start = max(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith("## Exercises"))
    questions = [line for line in nb.cells[start].source.splitlines() if line[:1].isdigit() and ". " in line[:4]]
    assert 2 <= len(questions) <= 3
    tail = nb.cells[start + 1:]
    assert len(tail) == 2 * len(questions), f"{path.name}: a heading and a code cell per solution, nothing after"
    for n, (heading, solution) in enumerate(zip(tail[::2], tail[1::2]), 1):
        assert heading.cell_type == "markdown" and heading.source == f"#### Solution {n}"
        assert solution.cell_type == "code" and solution.source.strip()
        assert solution.metadata.get("jupyter", {}).get("source_hidden") is True


# --- running them (minutes) ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_root() -> Path:
    """A built demo: the one the notebooks would find, else the quick one built there now."""
    try:
        from saekit.demo import DemoNotFoundError, open_demo, run_demo
    except ImportError as error:
        pytest.skip(f"saekit.demo is not importable yet ({error}); the notebooks need the demo")
    try:
        return open_demo().root
    except DemoNotFoundError:
        return run_demo("quick", progress=False, log=lambda *args: None).root


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, demo_root, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("SAEKIT_DEMO_DIR", str(demo_root))  # the kernel inherits it
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    print(f"{path.name}: {seconds:.1f}s")
