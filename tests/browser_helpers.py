"""What the browser tests share: where Chromium is, how it is launched, a free loopback port, a notebook
written from code cells, and what a page shows (highlighted tokens, elements that markup would inject)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("SAEKIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """One headless Chromium per test module (Playwright's sync API cannot nest); import it into a module to use it."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path, cells: list[str]) -> Path:
    """A code-only notebook with the python3 kernelspec."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)
    return path


def highlighted_tokens(page, scope: str) -> int:
    """How many token spans under `scope` are drawn with a non-transparent background."""
    return page.evaluate(
        """scope => Array.from(document.querySelectorAll(scope + ' .saekit-tok'))
             .filter(e => { const c = getComputedStyle(e).backgroundColor;
                            return c !== 'rgba(0, 0, 0, 0)' && !/, 0\\)$/.test(c); }).length""", scope)


def injected(page, scope: str) -> list[str]:
    """Elements under `scope` that markup in the shown text would have made: img, script, iframe, svg or
    textarea inside an HTML widget, <b>x</b>, and any element carrying an on* attribute."""
    return page.evaluate(
        """scope => {
             const found = [];
             for (const root of document.querySelectorAll(scope)) {
               for (const e of root.querySelectorAll('.widget-html-content img, .widget-html-content script, '
                    + '.widget-html-content iframe, .widget-html-content svg, .widget-html-content textarea'))
                 found.push(e.outerHTML.slice(0, 120));
               for (const e of root.querySelectorAll('b'))
                 if (e.textContent === 'x') found.push(e.outerHTML);
               for (const e of root.querySelectorAll('*'))
                 for (const a of e.attributes)
                   if (a.name.startsWith('on')) found.push(e.tagName + ' ' + a.name);
             }
             return found;
           }""", scope)
