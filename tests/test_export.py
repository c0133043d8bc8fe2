"""Feature cards exported as one self-contained HTML file (`saekit.widgets.export`, `saekit export`).

The corpus is full of markup payloads, each one token (tests/helpers.py PAYLOADS): the page must show them as
text. The page is opened in headless Chromium with every network request blocked: the cards render, the plotly
histograms draw and hold the unit's activation count, no dialog fires and nothing is fetched.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from saekit import cli
from saekit.activations import nnsight_api as api
from saekit.analysis.features import build_feature_store
from saekit.errors import InputError
from saekit.export_command import ExportError, parse_features
from saekit.widgets import html as H
from saekit.widgets.card import as_basis
from saekit.widgets.explorer import FeatureExplorer
from saekit.widgets.export import CARD_CLASS, cards_document, export_html

from browser_helpers import CHROMIUM
from helpers import HOOK, MARKUP_STORE, PAYLOADS, build_payload_model, dense_acts, payload_windows, units_on

PLOTLY_BANNER = re.compile(r"\* plotly\.js v\d")
SECTION = re.compile(r"<section class='" + CARD_CLASS + r"' id='neuron-(\d+)'>(.*?)</section>", re.S)
TOP_VALUE = re.compile(r'font-weight:bold;[^"]*" title="[^"]* activation ([-\d.e+]+)"')


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    """The payload model, its neuron store over PAYLOAD_TEXTS, the units whose top examples sit on each payload,
    and the exported page (every context token coloured: the basis has the model)."""
    folder = tmp_path_factory.mktemp("export")
    model = api.load_model(build_payload_model(folder / "model"))
    windows = payload_windows(model)
    store = build_feature_store(model, windows, None, hook=HOOK, config=MARKUP_STORE, progress=False)
    features = list(dict.fromkeys(units_on(store, p)[0] for p in PAYLOADS))
    path = export_html(as_basis(store, model=model), folder / "cards.html", features, progress=False)
    acts, _ = dense_acts(model, windows)
    return model, store, features, path, acts.numpy()


def without_plotly_js(page: str) -> str:
    """The page with its one inlined plotly.js script cut out."""
    scripts = [m for m in re.finditer(r"<script[^>]*>(.*?)</script>", page, re.S) if PLOTLY_BANNER.search(m[1])]
    assert len(scripts) == 1
    return page[: scripts[0].start()] + page[scripts[0].end():]


def test_page_embeds_plotly_once_and_refers_to_nothing_outside(payload):
    page = payload[3].read_text(encoding="utf-8")
    assert len(PLOTLY_BANNER.findall(page)) == 1
    rest = without_plotly_js(page)
    assert "http://" not in rest and "https://" not in rest
    assert not re.search(r"<(script|img|iframe|link|source|embed|object)\b[^>]*\b(src|href|data)\s*=", page, re.I)
    assert "@import" not in rest and "url(" not in rest
    assert page.count("Plotly.newPlot(") == len(payload[2])


def test_every_payload_is_shown_escaped_never_raw(payload):
    _, store, features, path, _ = payload
    page = path.read_text(encoding="utf-8")
    for p in PAYLOADS:
        assert p not in page
        assert H.escape(H.visible(p)) in page
    assert [int(f) for f, _ in SECTION.findall(page)] == features


def test_each_card_holds_the_units_values_computed_again(payload):
    """Top activations and the summary's counts against the neurons' activations recomputed by a plain forward."""
    _, store, features, path, acts = payload
    page = path.read_text(encoding="utf-8")
    for feature, body in SECTION.findall(page):
        column = acts[:, int(feature)]
        fires = int((column > 0).sum())
        assert f"neuron {feature}</h3>" in body
        assert f"fires on {fires:,} of {len(column):,} tokens" in body
        values = [float(v) for v in TOP_VALUE.findall(body.split("examples across activation intervals")[0])]
        expected = np.sort(column)[::-1][: len(values)]
        assert len(values) == min(10, MARKUP_STORE.n_top, fires)
        np.testing.assert_allclose(values, expected, rtol=1e-3)


def test_bad_feature_lists_say_what_to_change(payload, tmp_path):
    store = payload[1]
    with pytest.raises(InputError, match=r"out of range: this store has 128 \(0 to 127\)"):
        cards_document(store, [0, 128], progress=False)
    with pytest.raises(InputError, match="at least one"):
        cards_document(store, [], progress=False)
    with pytest.raises(InputError, match="is a folder"):
        export_html(store, tmp_path, [0], progress=False)


def test_the_explorer_exports_the_shown_feature_or_the_ones_named(payload, tmp_path):
    _, store, features, _, _ = payload
    explorer = FeatureExplorer(store, feature=features[1])
    page = explorer.export_html(tmp_path / "one.html").read_text(encoding="utf-8")
    assert [int(f) for f, _ in SECTION.findall(page)] == [features[1]]
    page = explorer.export_html(tmp_path / "two.html", [features[2], 0]).read_text(encoding="utf-8")
    assert [int(f) for f, _ in SECTION.findall(page)] == [features[2], 0]


# --- the command ---------------------------------------------------------------------------------------------


def test_feature_lists_parse_ids_and_ranges():
    assert parse_features("3, 10-12,3,0") == [3, 10, 11, 12, 0]
    for bad in ("a", "5-2", "", "1-b"):
        with pytest.raises(ExportError, match="--features"):
            parse_features(bad)


def test_saekit_export_writes_the_cards_of_a_saved_store(payload, tmp_path, capsys):
    store = payload[1]
    folder = store.save(tmp_path / "store")
    out = tmp_path / "page" / "cards.html"
    assert cli.main(["export", str(folder), "--features", "2,5-6", "--out", str(out), "--quiet"]) == 0
    assert [int(f) for f, _ in SECTION.findall(out.read_text(encoding="utf-8"))] == [2, 5, 6]
    assert "wrote 3 feature card(s)" in capsys.readouterr().out
    densest = store.feature_table()["feature"].head(12).tolist()
    assert cli.main(["export", str(folder), "--out", str(out), "--quiet"]) == 0
    assert [int(f) for f, _ in SECTION.findall(out.read_text(encoding="utf-8"))] == densest


@pytest.mark.parametrize("args, message", [
    (["--features", "999"], "out of range"),
    (["--features", "x"], "not a feature id"),
    (["--sae", "somewhere"], "--sae and --model together"),
], ids=["range", "not-an-id", "sae-alone"])
def test_saekit_export_bad_input_is_one_line(payload, tmp_path, capsys, args, message):
    folder = payload[1].save(tmp_path / "store")
    assert cli.main(["export", str(folder), "--out", str(tmp_path / "c.html"), "--quiet", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("saekit export: error:") and message in err and err.count("\n") == 1


# --- in a browser, offline -----------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")
def test_the_page_renders_offline_in_chromium(payload, chromium):
    _, store, features, path, acts = payload
    url = path.resolve().as_uri()
    requests: list[str] = []
    dialogs: list[str] = []

    def route(r) -> None:
        requests.append(r.request.url)
        r.continue_() if r.request.url == url else r.abort()

    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    try:
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.route("**/*", route)
        page.goto(url)
        page.wait_for_selector(".saekit-export-histogram .main-svg", timeout=20_000)
        found = page.evaluate("""() => [...document.querySelectorAll('section.saekit-export-card')].map(s => ({
            id: s.id,
            svg: s.querySelectorAll('.saekit-export-histogram svg.main-svg').length,
            bars: s.querySelectorAll('.saekit-export-histogram g.point').length,
            total: Array.from(s.querySelector('.js-plotly-plot')._fullData[0].y).reduce((a, b) => a + Number(b), 0),
            tokens: s.querySelectorAll('.saekit-tok').length,
            injected: [...s.querySelectorAll('img, script, iframe, svg, textarea, [onerror], [onload], '
                                              + '[onmouseover]')]
                      .filter(e => !e.closest('.saekit-export-histogram'))  // plotly's own script and svg
                      .concat([...s.querySelectorAll('b')].filter(e => e.textContent === 'x'))
                      .map(e => e.outerHTML.slice(0, 80)),
        }))""")
    finally:
        page.close()
    assert [f["id"] for f in found] == [f"neuron-{f}" for f in features]
    for feature, card in zip(features, found):
        assert card["svg"] >= 1 and card["bars"] >= 1 and card["tokens"] > 0 and card["injected"] == []
        assert card["total"] == int((acts[:, feature] > 0).sum())
    assert dialogs == [] and requests == [url]


def test_saekit_export_with_the_sae_and_model_colours_every_context_token(tiny_lm, tiny_lm_dir, tmp_path):
    """From the store alone only the firing tokens are coloured; with --sae and --model the contexts are too."""
    from saekit.analysis.features import StoreConfig

    from helpers import tiny_store

    tiny = tiny_store(tiny_lm, StoreConfig(n_top=4, n_per_interval=1, n_bins=128, n_logits=3, batch_size=16))
    store_dir, sae_dir = tiny.store.save(tmp_path / "store"), tmp_path / "sae"
    tiny.sae.save(sae_dir)
    feature = int(tiny.store.feature_table()["feature"].iloc[0])
    coloured = re.compile(r'<span class="saekit-tok" style="white-space:pre;border-radius:2px;background:rgba\('
                          r'255,120,0,0\.(?!000)\d+\);"')  # a coloured token that is not the outlined firing one
    plain, full = tmp_path / "plain.html", tmp_path / "full.html"
    common = ["export", str(store_dir), "--features", str(feature), "--quiet"]
    assert cli.main([*common, "--out", str(plain)]) == 0
    assert cli.main([*common, "--out", str(full), "--sae", str(sae_dir), "--model", str(tiny_lm_dir)]) == 0
    assert not coloured.search(plain.read_text(encoding="utf-8"))
    assert coloured.search(full.read_text(encoding="utf-8"))
