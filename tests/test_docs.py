"""The API reference builds with warnings as errors (`make docs`), and its pages hold the public API."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("saekit", "saekit.saes", "saekit.training", "saekit.activations", "saekit.analysis",
           "saekit.analysis.autointerp", "saekit.llm", "saekit.widgets", "saekit.formats")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _anchors(page: Path) -> set[str]:
    return set(re.findall(r'id="(saekit[\w.]*)"', page.read_text(encoding="utf-8")))


def test_every_module_has_a_page_with_its_public_names(site):
    import saekit
    import saekit.saes
    import saekit.training

    pages = {m: site / "api" / (m.rsplit(".", 1)[-1] if m != "saekit" else "saekit") / "index.html" for m in MODULES}
    for module, page in pages.items():
        assert module in _anchors(page), f"{module}: no heading on {page}"
    # names each package exports are documented under it (checked against the packages' own __all__)
    for module in (saekit, saekit.saes, saekit.training):
        page = pages[module.__name__]
        documented = {a.rsplit(".", 1)[-1] for a in _anchors(page) if a.count(".") == module.__name__.count(".") + 1}
        missing = {name for name in module.__all__ if getattr(module, name).__doc__} - documented
        assert not missing, f"{module.__name__}: {sorted(missing)} not on its page"


def test_index_points_to_the_readme_sections(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    readme = (site / "readme" / "index.html").read_text(encoding="utf-8")
    targets = re.findall(r'href="readme/#([\w-]+)"', index)
    assert {"quick-start", "the-embedded-demo", "python", "notebooks"} <= set(targets)
    for anchor in targets:
        assert f'id="{anchor}"' in readme
    for image in re.findall(r'<img[^>]*src="([^"]+)"', readme):
        assert (site / "readme" / image).resolve().is_file(), image
