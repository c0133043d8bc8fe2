"""Explorers in a saved notebook: the widget state stored in its metadata (as JupyterLab's "save widget state"
and nbclient/`jupyter nbconvert --execute` store it) holds what each explorer shows, stays small, and
`jupyter nbconvert --to html` keeps the cards' last state in the page.

Each FigureWidget used to put plotly.js (~5 MB) into that state, once per histogram shown: three explorers on the
quick demo saved at 46 MB. The card now draws its histogram as HTML, so the state is the cards' text.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from saekit.activations import nnsight_api as api
from saekit.analysis.features import build_feature_store
from saekit.widgets import html as H

from helpers import HOOK, MARKUP_STORE, PAYLOADS, build_payload_model, payload_windows, units_on

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
REPO = Path(__file__).resolve().parents[1]
STATE = "application/vnd.jupyter.widget-state+json"
MAX_NOTEBOOK_BYTES = 1_000_000  # three explorers; one FigureWidget alone would be ~5 MB
MAX_WIDGET_BYTES = 100_000  # one widget's state: a card's HTML, never a plotly.js bundle or every card


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """A notebook with three explorers over a saved payload store, run by nbclient storing widget state; the
    units each one ends on."""
    folder = tmp_path_factory.mktemp("state")
    model = api.load_model(build_payload_model(folder / "model"))
    store = build_feature_store(model, payload_windows(model), None, hook=HOOK, config=MARKUP_STORE, progress=False)
    store.save(folder / "store")
    shown = [units_on(store, PAYLOADS[0])[0], units_on(store, PAYLOADS[1])[0]]
    cells = [
        f"from saekit.analysis.features import load_feature_store\nfrom saekit.widgets import FeatureExplorer\n"
        f"store = load_feature_store({str(folder / 'store')!r})",
        "e1 = FeatureExplorer(store)\ne1",
        "e2 = FeatureExplorer(store)\ne2",
        "e3 = FeatureExplorer(store)\ne3",
        f"for f in range(12):\n    e1.show(f)\ne1.show({shown[0]})\ne2.show({shown[1]})\ne3.search({PAYLOADS[2]!r});",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    old = os.environ.copy()
    os.environ.update(env)  # the kernel inherits it: it imports this checkout's saekit
    try:
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    path = folder / "explorers.ipynb"
    nbformat.write(nb, path)
    return nb, path, shown


def card_values(nb) -> list[str]:
    state = nb.metadata["widgets"][STATE]["state"]
    return [w["state"].get("value", "") for w in state.values() if w["model_name"] == "HTMLModel"]


def test_saved_notebook_stays_small(executed):
    nb, path, _ = executed
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert errors == []
    state = nb.metadata["widgets"][STATE]["state"]
    sizes = {w["model_name"]: 0 for w in state.values()}
    for w in state.values():
        sizes[w["model_name"]] = max(sizes[w["model_name"]], len(json.dumps(w)))
    print(f"notebook {path.stat().st_size / 1e3:.0f} kB, {len(state)} widgets; largest state per model: {sizes}")
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES
    assert max(sizes.values()) < MAX_WIDGET_BYTES
    assert "AnyModel" not in sizes  # no FigureWidget (each carries plotly.js)


def test_saved_state_holds_each_explorers_last_card(executed):
    nb, _, shown = executed
    values = card_values(nb)
    for feature in shown:
        assert any(f"neuron {feature}</h3>" in v for v in values)
    assert any(H.escape(repr(PAYLOADS[2])) in v for v in values)  # e3's search note
    views = [o.data["application/vnd.jupyter.widget-view+json"]["model_id"] for c in nb.cells for o in c.outputs
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    state = nb.metadata["widgets"][STATE]["state"]
    assert len(views) == 3 and all(state[v]["model_name"] == "VBoxModel" for v in views)


def test_nbconvert_html_keeps_the_cards(executed):
    HTMLExporter = pytest.importorskip("nbconvert").HTMLExporter

    nb, path, shown = executed
    page, _ = HTMLExporter().from_notebook_node(nbformat.read(path, as_version=4))
    assert f'<script type="{STATE}">' in page
    for feature in shown:
        assert f"neuron {feature}" in page
    assert page.count("application/vnd.jupyter.widget-view+json") >= 3
    # Widget state and views travel as JSON in <script type="application/vnd.jupyter.widget-...">, which the browser
    # never parses as markup (the picker's labels hold raw tokens, shown as text): only `</script` could end it.
    blocks = re.findall(r'<script type="application/vnd\.jupyter\.widget-[^"]*">(.*?)</script>', page, re.S)
    assert blocks and not any("</" in b for b in blocks)
    rest = re.sub(r'<script type="application/vnd\.jupyter\.widget-[^"]*">.*?</script>', "", page, flags=re.S)
    for p in PAYLOADS:
        assert p not in rest
