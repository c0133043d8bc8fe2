"""The widgets use only what every front end renders (ipywidgets 8 and anywidget: JupyterLab, Notebook 7, Voilà,
VS Code, Colab): no iframes, no local servers, no `IPython.display.Javascript`, no require.js-era notebook APIs.

The source of saekit/widgets/ is read as Python syntax: imports and names, and string literals other than
docstrings (which may name markup as an example)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WIDGETS = Path(__file__).resolve().parents[1] / "saekit" / "widgets"

# modules and names that draw through a channel only the classic notebook had, or open one of their own
FORBIDDEN_MODULES = ("http.server", "socketserver", "notebook", "jupyter_server", "tornado", "flask")
FORBIDDEN_NAMES = {"Javascript", "IFrame", "display_javascript", "publish_display_data", "_repr_javascript_",
                   "init_notebook_mode", "enable_mpl_offline", "iplot"}
# in string literals: markup and APIs that need a page the notebook does not give (case-insensitive)
FORBIDDEN_TEXT = ("<iframe", "<script", "require(", "requirejs", "define(", "jupyter.notebook", "ipython.notebook",
                  "nbextensions", "localhost", "127.0.0.1", "application/javascript")
# export.py writes a standalone HTML file (never shown in a notebook) that inlines plotly.js in a <script>
ALLOWED = {("export.py", "<script")}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def nonstandard(source: str, name: str = "<source>") -> list[str]:
    """What in `source` would not render in every front end: (name:line what) for each finding."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        modules: list[str] = []
        names: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules, names = [node.module or ""], [alias.name for alias in node.names]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.FunctionDef):
            names = [node.name]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value.lower()
            found += [f"{name}:{node.lineno} {t!r}" for t in FORBIDDEN_TEXT if t in text and (name, t) not in ALLOWED]
        found += [f"{name}:{node.lineno} import {m}" for m in modules
                  if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_MODULES)]
        found += [f"{name}:{node.lineno} {n}" for n in names if n in FORBIDDEN_NAMES]
    return found


@pytest.mark.parametrize("snippet", [
    "from IPython.display import Javascript, display\ndisplay(Javascript('alert(1)'))",
    "import IPython.display\nIPython.display.IFrame('x.html', 400, 300)",
    "import http.server",
    "from socketserver import TCPServer",
    "html = \"<iframe src='x'></iframe>\"",
    "js = f\"require(['plotly'], function (Plotly) {{ {1} }})\"",
    "url = 'http://localhost:8888/'",
    "class View:\n    def _repr_javascript_(self):\n        return ''",
    "from plotly.offline import init_notebook_mode",
    "w.value = '<SCRIPT>Jupyter.notebook.kernel.execute(1)</SCRIPT>'",
])
def test_the_scan_finds_each_nonstandard_channel(snippet):
    assert nonstandard(snippet) != []


def test_the_scan_passes_standard_widget_code():
    source = '''"""A view; corpus text may hold <script> or <iframe>: escaped."""
import ipywidgets as widgets
import plotly.graph_objects as go
from saekit.widgets import html as H

class View(widgets.VBox):
    """Shows <iframe> as text."""
    def __init__(self, text):
        super().__init__([widgets.HTML(H.escape(text)), go.FigureWidget()])
'''
    assert nonstandard(source) == []


def test_no_widget_uses_a_nonstandard_channel():
    files = sorted(WIDGETS.glob("*.py"))
    assert len(files) >= 10  # the explorer, map, universality, splitting, steering, ... all read
    found = [f for path in files for f in nonstandard(path.read_text(encoding="utf-8"), path.name)]
    assert found == []
