"""MkDocs hook: the README becomes the site's readme.md page, its screenshot links rewritten for docs/."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files


def on_files(files: Files, config) -> Files:
    """Add readme.md, generated from the repository's README.md (which lives outside docs/)."""
    readme = Path(config["config_file_path"]).parent / "README.md"
    text = readme.read_text(encoding="utf-8").replace("](docs/", "](")
    files.append(File.generated(config, "readme.md", content=text))
    return files
