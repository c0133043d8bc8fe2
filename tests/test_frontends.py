"""The widgets in JupyterLab 4 and Notebook 7, driven through their own UI in headless Chromium.

For each front end, one server (`jupyter lab` / `jupyter notebook`) on a free loopback port with a token opens a
notebook holding an explorer, a feature map and a splitting tree over the markup model of tests/helpers.py (whose
tokens are whole `<img onerror>` and `<script>` strings). The page runs every cell from the Run menu (both front
ends at once, so their kernels start side by side); then:

- the explorer's card draws highlighted tokens, and selecting another feature changes it;
- the map's and the tree's plotly figures draw, and the tree's labels lie inside the notebook's output area;
- no dialog fires and no markup becomes an element.

Skipped, with the reason, when Chromium, Playwright, JupyterLab or Notebook 7 is missing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from browser_helpers import CHROMIUM, free_port, highlighted_tokens, injected, write_notebook

REPO = Path(__file__).resolve().parents[1]
SERVER_START_S = 60  # a server's own start, on two busy cores
PAGE_READY_MS = 90_000  # the kernel starts and runs the notebook before the widgets draw
STEP_MS = 20_000  # one interaction's round trip
HEIGHT = 2400  # a tall window: every output on screen at once, none left undrawn

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; "
                       "or `make browser-deps`)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
pytest.importorskip("anywidget", reason="plotly's FigureWidget needs anywidget")

from helpers import PAYLOAD, build_markup_model, markup_neuron_store  # noqa: E402

# the front end's python module, the path that opens a notebook in it, and a window width that gives an output
# area of 800-1000 px (JupyterLab's file browser takes the left of the window)
FRONT_ENDS = {"jupyterlab": ("jupyterlab", "lab/tree/", 1280), "notebook7": ("notebook", "notebooks/", 1100)}
SIZES = (64, 128, 256, 512)  # the tree's four columns


def _has(module: str, major: int) -> str | None:
    """Why `module` (at least version `major`) cannot serve, or None when it can."""
    try:
        version = __import__(module).__version__
    except ImportError:
        return f"needs {module} (pip install '{module}>={major}')"
    return None if int(version.split(".")[0]) >= major else f"needs {module}>={major}, found {version}"


@contextmanager
def jupyter(module: str, folder: Path) -> Iterator[tuple[str, str]]:
    """Serve `folder` with `python -m module` (jupyterlab or notebook) on loopback; yields (URL, token).
    Settings, workspaces and runtime files live in `folder`, so the user's own are neither read nor written."""
    port, token = free_port(), secrets.token_hex(16)
    home = folder / ".jupyter"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    command = [sys.executable, "-m", module, "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])]  # CI containers
    log_path = folder / f"{module}.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + SERVER_START_S
            while not _answers(f"{url}api/status?token={token}"):
                if server.poll() is not None:
                    raise RuntimeError(f"{module} exited: {log_path.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{module} did not start within {SERVER_START_S}s")
                time.sleep(0.3)
            yield url, token
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except (urllib.error.URLError, OSError):
        return False
    return True


def kernel_idle(url: str, token: str) -> bool:
    """Whether the server runs a kernel and it is idle (through the REST API, the same for every front end)."""
    import json

    try:
        kernels = json.load(urllib.request.urlopen(f"{url}api/kernels?token={token}", timeout=2))
    except (urllib.error.URLError, OSError):
        return False
    return bool(kernels) and all(k["execution_state"] == "idle" for k in kernels)


def tree_edges(store) -> tuple[list[dict], int]:
    """A four-size family written by hand (rows as split_edges returns them) in which the unit whose top token is
    the `<img onerror>` markup sits in every column but the first: the widest labels the tree can get.
    Returns the rows and the root's feature."""
    table = store.feature_table()
    long = int(table.loc[table["top_token"] == PAYLOAD, "feature"].iloc[0])
    a, b, c, d, e = [int(f) for f in table["feature"] if int(f) != long][:5]
    links = [(0, a, long), (0, a, b), (1, long, long), (1, b, c), (2, long, long), (2, long, d), (2, c, e)]
    rows = [{"size_from": SIZES[level], "feature_from": parent, "size_to": SIZES[level + 1], "feature_to": child,
             "activation_cosine": 0.9 - 0.1 * i, "decoder_cosine": 0.8 - 0.1 * i}
            for i, (level, parent, child) in enumerate(links)]
    return rows, a


@pytest.fixture(scope="module")
def notebook_folder(tmp_path_factory) -> Path:
    """A folder holding the markup model, its neuron store and the notebook that shows them."""
    folder = tmp_path_factory.mktemp("frontends")
    model_dir = build_markup_model(folder / "model")
    from saekit.activations import load_model

    store = markup_neuron_store(load_model(model_dir))
    store.save(folder / "store")
    rows, root = tree_edges(store)
    cells = [
        "import numpy as np, pandas as pd\nfrom saekit import FeatureStore, load_model\n"
        "from saekit.widgets import FeatureExplorer, FeatureMap, SplittingView",
        f"store = FeatureStore.load({str(folder / 'store')!r})\nmodel = load_model({str(model_dir)!r})",
        "FeatureExplorer(store, model=model, feature=0)",
        "n = store.n_features\nFeatureMap(pd.DataFrame({'dictionary': 'neurons', 'size': n, 'feature': np.arange(n),"
        " 'x': np.arange(n) % 16, 'y': np.arange(n) // 16, 'hover': [f'neuron {i}' for i in range(n)],"
        " 'cluster': -1}))",
        f"SplittingView(pd.DataFrame({rows!r}), {{size: store for size in {SIZES!r}}}, feature=({SIZES[0]}, {root}))",
    ]
    write_notebook(folder / "frontends.ipynb", cells)
    return folder



class Session(NamedTuple):
    """A front end's page on the notebook, and the dialogs the page raised."""

    name: str
    page: Any
    dialogs: list[str]
    url: str
    token: str


@pytest.fixture(scope="module")
def running(notebook_folder, chromium) -> Iterator[dict[str, Session | str]]:
    """Every front end at once, its own copy of the notebook open and run from the Run menu: the kernels run side
    by side. A front end that cannot serve maps to the reason."""
    found: dict[str, Session | str] = {}
    with ExitStack() as stack:
        for name, (module, path, width) in FRONT_ENDS.items():
            reason = _has(module, 4 if module == "jupyterlab" else 7)
            if reason:
                found[name] = reason
                continue
            shutil.copy(notebook_folder / "frontends.ipynb", notebook_folder / f"{name}.ipynb")
            url, token = stack.enter_context(jupyter(module, notebook_folder))
            page = chromium.new_page(viewport={"width": width, "height": HEIGHT})
            stack.callback(page.close)
            dialogs: list[str] = []
            page.on("dialog", lambda dialog, seen=dialogs: (seen.append(dialog.message), dialog.dismiss()))
            page.goto(f"{url}{path}{name}.ipynb?token={token}", timeout=PAGE_READY_MS)
            found[name] = Session(name, page, dialogs, url, token)
        for session in found.values():
            if isinstance(session, Session):
                run_all_cells(session)
        yield found


def run_all_cells(session: Session) -> None:
    """Once the notebook shows and its kernel is idle, Run → Run All Cells."""
    page = session.page
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=PAGE_READY_MS)
    deadline = time.monotonic() + PAGE_READY_MS / 1000
    while not kernel_idle(session.url, session.token):
        assert time.monotonic() < deadline, f"the kernel did not start in {session.name}"
        time.sleep(0.3)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").click()


@pytest.fixture(scope="module", params=list(FRONT_ENDS))
def front_end(request, running) -> Session:
    """One front end's page once every widget has drawn."""
    session = running[request.param]
    if isinstance(session, str):
        pytest.skip(session)
    page = session.page
    page.wait_for_selector(".saekit-card .saekit-tok", state="visible", timeout=PAGE_READY_MS)
    page.wait_for_selector(".saekit-map .js-plotly-plot .scatterlayer .points path", timeout=PAGE_READY_MS)
    page.wait_for_selector(".saekit-splitting .js-plotly-plot .textpoint", timeout=PAGE_READY_MS)
    return session


def card_title(page) -> str:
    return page.locator(".saekit-card h3").first.inner_text()


def test_explorer_draws_and_follows_a_selection(front_end, notebook_folder):
    page, dialogs, name = front_end.page, front_end.dialogs, front_end.name
    assert card_title(page).endswith("neuron 0")
    assert highlighted_tokens(page, ".saekit-card") > 0
    box = page.locator(".saekit-feature-id input").first
    box.fill("5")
    box.press("Enter")
    page.wait_for_function("() => document.querySelector('.saekit-card h3').innerText.endsWith('neuron 5')",
                           timeout=STEP_MS)
    assert highlighted_tokens(page, ".saekit-card") > 0
    page.locator(".saekit-explorer").first.screenshot(path=str(notebook_folder / f"{name}-explorer.png"))
    assert dialogs == []


def test_plotly_figures_draw_and_the_tree_fits_the_output_area(front_end, notebook_folder):
    page, dialogs, name = front_end.page, front_end.dialogs, front_end.name
    points = page.locator(".saekit-map .scatterlayer .trace .points path")
    assert points.count() == 128
    boxes = page.evaluate(
        """() => {
             const view = document.querySelector('.saekit-splitting');
             const area = view.closest('.jp-OutputArea-output').getBoundingClientRect();
             const labels = Array.from(view.querySelectorAll('.js-plotly-plot .textpoint')).map(t => {
               const r = t.getBoundingClientRect();
               return {text: t.textContent, left: r.left, right: r.right};
             });
             const figure = view.querySelector('.js-plotly-plot .main-svg').getBoundingClientRect();
             return {left: area.left, right: area.right, figure: [figure.left, figure.right], labels};
           }""")
    page.locator(".saekit-splitting").first.screenshot(path=str(notebook_folder / f"{name}-splitting.png"))
    width = boxes["right"] - boxes["left"]
    assert 800 <= width <= 1000, boxes  # a notebook's output area
    assert boxes["left"] <= boxes["figure"][0] and boxes["figure"][1] <= boxes["right"]
    node_labels = [label for label in boxes["labels"] if label["text"].startswith("#")]
    assert len(node_labels) == 8  # every node drawn: 1 + 2 + 2 + 3
    assert any(PAYLOAD[:10] in label["text"] for label in node_labels)  # the longest tokens, in the last column
    left, right = boxes["figure"]  # inside the output area, as checked above
    outside = [label for label in node_labels if label["left"] < left or label["right"] > right]
    assert outside == [], (left, right)
    assert dialogs == []


def test_no_markup_runs_or_becomes_an_element(front_end):
    page, dialogs = front_end.page, front_end.dialogs
    page.wait_for_timeout(300)  # an onerror or onload would fire as soon as its element appeared
    assert injected(page, ".saekit-explorer, .saekit-map, .saekit-splitting") == []
    for selector in ("img[src=x]", "[onerror]", "[onload]"):
        assert page.query_selector(selector) is None, selector
    assert PAYLOAD in page.locator(".saekit-splitting").first.inner_text()  # the listing, as text
    assert dialogs == []
