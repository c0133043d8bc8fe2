"""The widgets in a real browser: Voilà serves a notebook on 127.0.0.1, headless Chromium (Debian's, through
Playwright; never `playwright install`) drives it.

- the explorer: selecting a feature updates the card with highlighted tokens;
- a document holding `<img src=x onerror=alert(1)>` and `<script>` shows them as text and runs nothing;
- every markup payload of tests/helpers.py (`<img onerror>`, `<script>`, `<svg onload>`, attribute breakouts,
  `</textarea>`) as corpus tokens, a basis name, a map dictionary's name and hover, and a steering prompt:
  shown as text, no element injected, no dialog;
- on request (`SAEKIT_SCREENSHOTS=docs/screenshots`, with a built demo): screenshots of the explorer, map,
  universality view and a splitting tree for the README (about a minute: the map runs UMAP).

Skipped, with the reason, when Chromium, Playwright or Voilà is missing (`make browser-deps` installs them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from browser_helpers import CHROMIUM, free_port, highlighted_tokens, injected, write_notebook

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = os.environ.get("SAEKIT_SCREENSHOTS")  # a folder: take the README screenshots there
SERVER_START_S = 45  # Voilà's own start
PAGE_READY_MS = 60_000  # the kernel runs the notebook before the page shows widgets
STEP_MS = 20_000  # one interaction's round trip

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; "
                       "or `make browser-deps`)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
pytest.importorskip("voila", reason="needs voila (pip install voila)")
pytest.importorskip("anywidget", reason="plotly's FigureWidget needs anywidget")

from helpers import (  # noqa: E402
    HOOK,
    MARKUP_STORE,
    PAYLOAD,
    PAYLOADS,
    SCRIPT,
    build_markup_model,
    build_payload_model,
    markup_feature,
    markup_neuron_store,
    payload_windows,
)

# --- serving and browsing ----------------------------------------------------------------------------






@contextmanager
def voila(notebook: Path) -> Iterator[str]:
    """Serve `notebook` with Voilà on loopback; yields its URL; stops the server afterwards."""
    port = free_port()
    log = (notebook.parent / f"{notebook.stem}.voila.log").open("w")
    command = [sys.executable, "-m", "voila", notebook.name, "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
               "--show_tracebacks=True", "--Voila.port_retries=0"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    server = subprocess.Popen(command, cwd=notebook.parent, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"voila exited: {(notebook.parent / log.name).read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url + "no-such-page", timeout=2)  # the root would run the notebook
            except urllib.error.HTTPError:
                break  # the server answers (404 here)
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"voila did not start within {SERVER_START_S}s") from None
                time.sleep(0.3)
            else:
                break
        yield url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()



@contextmanager
def browser_page(browser, height: int = 1000) -> Iterator[tuple[object, list[str]]]:
    """A page 1400 px wide and the list that collects every dialog (alert, confirm) it raises."""
    page = browser.new_page(viewport={"width": 1400, "height": height})
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        yield page, dialogs
    finally:
        page.close()


def open_notebook(page, url: str, ready: str) -> None:
    """Load the Voilà page and wait until `ready` (a CSS selector) is visible."""
    page.goto(url, timeout=PAGE_READY_MS)
    page.wait_for_selector(ready, state="visible", timeout=PAGE_READY_MS)




def card_title(page) -> str:
    return page.locator(".saekit-card h3").first.inner_text()


# a map with points on a grid (no UMAP: that is tested elsewhere), opening a second explorer on click
MAP_CELL = """import numpy as np, pandas as pd
n = store.n_features
grid = pd.DataFrame({"dictionary": "neurons", "size": n, "feature": np.arange(n), "x": np.arange(n) % 16,
                     "y": np.arange(n) // 16, "hover": [f"neuron {i}" for i in range(n)], "cluster": -1})
FeatureMap(grid, FeatureExplorer(store, model=model, feature=0))"""


# --- the explorer on a corpus full of markup -------------------------------------------------------------


@pytest.fixture(scope="module")
def explorer_page(tmp_path_factory, chromium):
    folder = tmp_path_factory.mktemp("browser")
    model_dir = build_markup_model(folder / "model")
    from saekit.activations import load_model

    store = markup_neuron_store(load_model(model_dir))
    store.save(folder / "store")
    cells = [
        "from saekit import FeatureStore, load_model\nfrom saekit.widgets import FeatureExplorer, FeatureMap",
        f"store = FeatureStore.load({str(folder / 'store')!r})\nmodel = load_model({str(model_dir)!r})",
        "FeatureExplorer(store, model=model, feature=0)",
        MAP_CELL,
    ]
    notebook = write_notebook(folder / "explorer.ipynb", cells)
    with voila(notebook) as url, browser_page(chromium) as (page, dialogs):
        open_notebook(page, url, ".saekit-card .saekit-tok")
        yield page, dialogs, store, folder


def test_selecting_a_feature_updates_the_card(explorer_page):
    page, dialogs, store, folder = explorer_page
    assert card_title(page).endswith("neuron 0")
    feature = int(store.feature_table()["feature"].iloc[5])
    box = page.locator(".saekit-feature-id input").first
    box.fill(str(feature))
    box.press("Enter")
    page.wait_for_function("f => document.querySelector('.saekit-card h3').innerText.endsWith('neuron ' + f)",
                           arg=feature, timeout=STEP_MS)
    top = store.top_examples(feature)
    # the card's parts are separate widgets, each its own message: wait for the examples, not only the title
    page.wait_for_function("v => document.querySelector('.saekit-card .saekit-example').innerText.includes(v)",
                           arg=f"{top['activation'].iloc[0]:.3g}", timeout=STEP_MS)
    assert page.locator(".saekit-card .saekit-example").count() >= min(10, len(top))
    assert highlighted_tokens(page, ".saekit-card") >= len(top.head(10))  # every context coloured by the model
    page.locator(".saekit-explorer").first.screenshot(path=str(folder / "explorer-markup.png"))
    assert dialogs == []


def test_markup_in_a_document_shows_as_text_and_runs_nothing(explorer_page):
    page, dialogs, store, folder = explorer_page
    feature = markup_feature(store)
    search = page.locator(".saekit-search input").first
    search.fill(PAYLOAD)
    search.press("Enter")
    button = page.locator(".saekit-results").first.locator("button", has_text=f"#{feature} ")
    button.first.wait_for(timeout=STEP_MS)
    button.first.click()
    page.wait_for_function("f => document.querySelector('.saekit-card h3').innerText.endsWith('neuron ' + f)",
                           arg=feature, timeout=STEP_MS)
    page.wait_for_function("v => document.querySelector('.saekit-card').innerText.includes(v)", arg=PAYLOAD,
                           timeout=STEP_MS)  # drawn as its characters
    card = page.locator(".saekit-card").first.inner_text()
    shown = store.top_examples(feature, 12).head(10)
    if any(SCRIPT in [*row.left, row.token, *row.right] for row in shown.itertuples()):
        assert SCRIPT in card
    assert page.locator(".saekit-explorer img").count() == 0
    assert page.locator(".saekit-explorer script").count() == 0
    page.wait_for_timeout(300)  # an onerror would fire as soon as the img failed to load
    assert dialogs == []
    page.locator(".saekit-explorer").first.screenshot(path=str(folder / "explorer-xss.png"))


def test_clicking_a_map_point_opens_it_in_the_explorer(explorer_page):
    page, dialogs, store, folder = explorer_page
    points = page.locator(".saekit-map .scatterlayer .trace .points path")
    assert points.count() == store.n_features
    target = 37
    page.locator(".saekit-map .js-plotly-plot").first.scroll_into_view_if_needed()
    box = points.nth(target).bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector(".saekit-map .hoverlayer .hovertext", timeout=STEP_MS)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    title = ".saekit-map .saekit-card h3"
    page.wait_for_function("([sel, f]) => document.querySelector(sel).innerText.endsWith('neuron ' + f)",
                           arg=[title, target], timeout=STEP_MS)
    assert highlighted_tokens(page, ".saekit-map .saekit-card") > 0
    assert dialogs == []


# --- every markup payload in the explorer, the map and the steering view -----------------------------------


PAYLOAD_CELLS = [
    "from saekit import FeatureStore, load_model\nfrom saekit.widgets import *\nfrom saekit.analysis.maps import "
    "hover_labels\nimport numpy as np, pandas as pd\nfrom helpers import PAYLOADS, HOOK, make_sae\n"
    "from saekit.saes.provenance import Provenance",
    "store = FeatureStore.load({store!r})\nmodel = load_model({model!r})",
    "FeatureExplorer({{PAYLOADS[0]: store, 'neurons': store}}, model=model, feature={feature})",
    "n = store.n_features\n"
    "grid = pd.DataFrame({{'dictionary': PAYLOADS[2], 'size': n, 'feature': np.arange(n), 'x': np.arange(n) % 16,"
    " 'y': np.arange(n) // 16, 'hover': hover_labels(store, 6), 'cluster': -1}})\n"
    "other = pd.DataFrame({{'dictionary': 'other', 'size': 1, 'feature': [0], 'x': [20], 'y': [0], 'hover': [''],"
    " 'cluster': -1}})  # a smaller second trace for the legend, drawn after the grid's points\n"
    "FeatureMap(pd.concat([grid, other]))",
    "sae = make_sae('relu', 128, 64)\nsae.provenance = Provenance(hook=HOOK)\n"
    "view = SteeringView(model, sae, prompt=' '.join(PAYLOADS), max_new_tokens=3, k=4)\nview.run()\nview",
]
PAYLOAD_VIEWS = ".saekit-explorer, .saekit-map, .saekit-steering"



def shown_tokens(store, feature: int) -> set[str]:
    """The tokens of the top examples (with their contexts) that the explorer's card shows for `feature`."""
    rows = store.top_examples(feature, 12).head(10).itertuples()
    return {token for row in rows for token in [*row.left, row.token, *row.right]}


@pytest.fixture(scope="module")
def payload_page(tmp_path_factory, chromium):
    folder = tmp_path_factory.mktemp("payload_browser")
    model_dir = build_payload_model(folder / "model")
    from saekit.activations import load_model
    from saekit.analysis.features import build_feature_store

    model = load_model(model_dir)
    store = build_feature_store(model, payload_windows(model), None, hook=HOOK, config=MARKUP_STORE, progress=False)
    store.save(folder / "store")
    feature = next(f for f in range(store.n_features) if set(PAYLOADS) <= shown_tokens(store, f))
    cells = [c.format(store=str(folder / "store"), model=str(model_dir), feature=feature) for c in PAYLOAD_CELLS]
    notebook = write_notebook(folder / "payloads.ipynb", cells)
    with voila(notebook) as url, browser_page(chromium, height=2400) as (page, dialogs):
        open_notebook(page, url, ".saekit-steering .saekit-continuations")
        page.wait_for_selector(".saekit-card .saekit-tok", state="visible", timeout=PAGE_READY_MS)
        page.wait_for_selector(".saekit-map .scatterlayer .trace .points path", timeout=PAGE_READY_MS)
        yield page, dialogs, store, folder


def test_every_payload_shows_as_text_and_runs_nothing(payload_page):
    page, dialogs, store, folder = payload_page
    card = page.locator(".saekit-explorer .saekit-card").first.inner_text()
    output = page.locator(".saekit-steering .saekit-continuations").first.inner_text()
    for payload in PAYLOADS:
        assert payload in card, payload  # corpus tokens, drawn as their characters
        assert payload in output, payload  # the user's prompt
    basis = page.locator(".saekit-explorer .saekit-basis button").first
    assert basis.inner_text().strip() == PAYLOADS[0]  # a basis named by markup, on its toggle
    assert PAYLOADS[0] in page.locator(".saekit-explorer .saekit-card h3").first.inner_text()
    assert PAYLOADS[2] in page.locator(".saekit-map .legend").first.text_content()  # a dictionary name in plotly
    page.wait_for_timeout(500)  # an onerror or onload would fire as soon as its element appeared
    assert injected(page, PAYLOAD_VIEWS) == []
    for selector in ("img[src=x]", "iframe", "svg[onload]", "[onmouseover]", "[onerror]"):
        assert page.query_selector(selector) is None, selector
    assert page.locator(".saekit-steering textarea").count() == 1  # the prompt box only
    assert dialogs == []
    page.locator(".saekit-explorer").first.screenshot(path=str(folder / "explorer-payloads.png"))


def test_markup_in_a_plotly_hover_shows_as_text(payload_page):
    page, dialogs, store, folder = payload_page
    from saekit.analysis.maps import hover_labels

    labels = hover_labels(store, 6)
    target = next(f for f, label in enumerate(labels) if sum(repr(p) in label for p in PAYLOADS) >= 2)
    page.locator(".saekit-map .js-plotly-plot").first.scroll_into_view_if_needed()
    box = page.locator(".saekit-map .scatterlayer .trace .points path").nth(target).bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    hover = page.locator(".saekit-map .hoverlayer .hovertext").first
    hover.wait_for(timeout=STEP_MS)
    text = hover.text_content()
    assert PAYLOADS[2] in text  # the dictionary's name, in bold
    for payload in PAYLOADS:
        if repr(payload) in labels[target]:
            assert repr(payload) in text, payload
    assert page.query_selector(".saekit-map .hoverlayer a") is None
    page.wait_for_timeout(300)
    assert injected(page, PAYLOAD_VIEWS) == [] and dialogs == []


# --- the demo's views, for the README -------------------------------------------------------------------------


DEMO_CELLS = [
    "from saekit.demo import open_demo\nfrom saekit.widgets import *\nfrom saekit.analysis import MapConfig\n"
    "demo = open_demo()\na1 = demo.a1_name\nmodel = demo.model('A')",
    "FeatureExplorer(demo.feature_store(a1), demo.sae(a1), model, neurons=demo.feature_store('A-neurons'),"
    " name='A/1', feature=int(demo.feature_store(a1).feature_table()['feature'].iloc[40]))",
    "names = demo.family_names('A')[:2]\n"
    "FeatureMap.from_saes({n: demo.sae(n) for n in names}, {n: demo.feature_store(n) for n in names}, model,"
    " explorer=False, config=MapConfig(n_neighbors=10))",
    "b1 = a1.replace('A-', 'B-')\n"
    "UniversalityView(demo.universality(), Basis(demo.feature_store(a1), demo.sae(a1), model),"
    " Basis(demo.feature_store(b1), demo.sae(b1), demo.model('B')), reference=PAPER)",
    "SplittingView(demo.splitting_edges(), [demo.feature_store(n) for n in demo.family_names('A')])",
]
VIEWS = {"explorer": ".saekit-explorer", "map": ".saekit-map", "universality": ".saekit-universality",
         "splitting": ".saekit-splitting"}


def built_demo() -> str | None:
    try:
        from saekit.demo import DemoNotFoundError, open_demo
    except ImportError:
        return None
    try:
        return str(open_demo().root)
    except DemoNotFoundError:
        return None


@pytest.mark.screenshots
@pytest.mark.skipif(not SCREENSHOTS, reason="set SAEKIT_SCREENSHOTS=docs/screenshots to take the README screenshots")
def test_screenshots_of_the_demo_views(tmp_path, chromium):
    if built_demo() is None:
        pytest.skip("no built demo (run `saekit demo --profile quick`)")
    folder = Path(SCREENSHOTS).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    notebook = write_notebook(tmp_path / "views.ipynb", DEMO_CELLS)
    with voila(notebook) as url, browser_page(chromium, height=2000) as (page, dialogs):
        open_notebook(page, url, ".saekit-splitting .js-plotly-plot")
        assert highlighted_tokens(page, ".saekit-explorer .saekit-card") > 0
        for name, selector in VIEWS.items():
            view = page.locator(selector).first
            view.scroll_into_view_if_needed()
            drawn = ".saekit-histogram .saekit-hist-bar" if name == "explorer" else ".js-plotly-plot .main-svg"
            view.locator(drawn).first.wait_for(state="visible", timeout=STEP_MS)  # the card's histogram is HTML
            page.wait_for_timeout(500)  # plotly draws after the element appears
            view.screenshot(path=str(folder / f"{name}.png"))
        assert dialogs == []
