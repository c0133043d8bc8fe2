"""The local-pile corpus builder on a small fake Python installation (and one smoke test on the real one)."""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
from pathlib import Path, PurePosixPath

import pandas as pd
import pytest

from saekit.embedded.corpus import CorpusConfig, build_corpus, iter_documents, load_corpus, subset_mix
from saekit.embedded.documents import sha256_text
from saekit.embedded.installed import (
    CORE_DISTRIBUTIONS,
    classify,
    find_distributions,
    installed_candidates,
    read_pickle_strings,
)
from saekit.embedded.mixing import allot_bytes, feasible_total, is_heldout

CAPS = (
    ("python_code", 0.5),
    ("prose", 0.2),
    ("legal", 0.2),
    ("base64", 0.1),
    ("multilingual", 0.2),
    ("markup", 0.2),
)
CJK = "中文字符編碼測試，這是一段用於測試的繁體中文文字。" * 6
PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    + "MIIFazCCA1OgAwIBAgIRAIIQz7DSQONZRGPgu2OCiwAwDQYJKoZIhvcNAQELBQAw\n" * 12
)


def python_module(i: int) -> str:
    return f'"""Module {i}: helpers."""\n\n\ndef f{i}(x):\n    # add {i}\n    return x + {i}\n' + (
        f"\nVALUE_{i} = {i} * 2  # a comment that makes the file longer than the minimum size\n" * 20
    )


FILES: dict[str, str | bytes] = {
    **{f"python3.11/mod{i:02d}.py": python_module(i) for i in range(40)},
    "python3.11/copy_of_mod00.py": python_module(0),  # exact duplicate: dropped
    "python3.11/generated.py": "X = '" + "a" * 5000 + "'\n",  # very long line: dropped
    "python3.11/binary.py": b"\x00\x01\x02" * 100,  # NUL bytes: dropped
    "python3.11/LICENSE.txt": "Permission is hereby granted, free of charge, to any person... " * 10,
    "python3.11/pydoc_data/topics.py": "topics = {'for': '"
    + "The for statement iterates over a sequence. " * 5
    + "', 'if': '"
    + "The if statement is used for conditional execution. " * 5
    + "'}\n",
    "python3.11/test/cjkencodings/big5-utf8.txt": CJK,
    "python3.11/test/cjkencodings/big5.txt": CJK.encode("big5"),  # same text once decoded: dropped
    "python3.11/site-packages/ignored.py": python_module(99),  # the base interpreter's: not walked
    "site-packages/pkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: pkg\n\n"
    + "Pkg is a small package that does useful things for its users. " * 10,
    "site-packages/pkg-1.0.dist-info/licenses/LICENSE": "BSD 3-Clause License. Redistribution and use... "
    * 8,
    "site-packages/pkg-1.0.dist-info/RECORD": "pkg/__init__.py,sha256=abc,10\n" * 20,
    "site-packages/pkg/README.md": "# Pkg\n\nThis package shows how documentation is written in prose. " * 6,
    "site-packages/pkg/data.json": json.dumps({"key": list(range(40)), "name": "value"}, indent=1),
    "site-packages/pkg/style.css": "body { margin: 0; padding: 0; color: #333; }\n" * 10,
    "site-packages/pkg/numbers.txt": "1.0 2.0 3.0 4.0 5.0 6.0\n" * 20,  # not English prose: dropped
    "site-packages/pkg/locale/zh.po": 'msgid "File"\nmsgstr "文件"\n' * 20,
    "site-packages/babel/locale-data/ja.dat": pickle.dumps(
        {"languages": {"en": "英語", "ja": "日本語"} | {f"x{i}": f"言語{i}" for i in range(60)}}
    ),
    "site-packages/certifi/cacert.pem": PEM,
    "site-packages/pkg/image.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 200,  # not corpus material
}


def make_installation(root: Path, reverse: bool = False) -> tuple[Path, ...]:
    """The fake installation's roots; `reverse` creates the files in the opposite order."""
    for rel, content in sorted(FILES.items(), reverse=reverse):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return (root / "python3.11", root / "site-packages")


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, ...]:
    return make_installation(tmp_path / "install")


def config(roots: tuple[Path, ...], **overrides: object) -> CorpusConfig:
    values: dict[str, object] = {"roots": roots, "target_bytes": 1_000_000, "max_share": CAPS, "distributions": ()}
    return CorpusConfig(**(values | overrides))  # type: ignore[arg-type]


def test_classify_by_path() -> None:
    expect = {
        "python3.11/json/decoder.py": "python_code",
        "site-packages/a-1.dist-info/METADATA": "prose",
        "site-packages/a/README.rst": "prose",
        "site-packages/a-1.dist-info/licenses/NOTICE": "legal",
        "python3.11/LICENSE.txt": "legal",
        "site-packages/certifi/cacert.pem": "base64",
        "python3.11/test/cjkencodings/gbk.txt": "multilingual",
        "site-packages/babel/locale-data/ar.dat": "multilingual",
        "site-packages/a/schema.json": "markup",
        "site-packages/a/index.html": "markup",
        "site-packages/a/module.so": None,
        "site-packages/a-1.dist-info/entry_points.txt": None,
    }
    assert {p: classify(PurePosixPath(p)) for p in expect} == expect


def test_pickle_strings_are_read_without_unpickling() -> None:
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    text = read_pickle_strings(pickle.dumps({"a": "日本語", "b": Boom()}))
    assert text is not None and "日本語" in text


def test_caps_hold_and_python_is_capped(roots: tuple[Path, ...], tmp_path: Path) -> None:
    corpus = build_corpus(config(roots), tmp_path / "c", progress=False)
    mix = corpus.mix().set_index("subset")
    caps = dict(CAPS)
    assert set(mix.index) == set(caps)
    for subset, share in mix["share"].items():
        assert share <= caps[subset] + 1e-9, subset
    available_python = sum(len(python_module(i).encode()) for i in range(40))
    assert mix.loc["python_code", "bytes"] < available_python  # the cap, not the supply, limited it


def test_duplicates_noise_and_non_corpus_files_are_dropped(roots: tuple[Path, ...], tmp_path: Path) -> None:
    uncapped = config(roots, max_share=tuple((s, 1.0) for s, _ in CAPS))
    names = set(build_corpus(uncapped, tmp_path / "c", progress=False).manifest["document"])
    assert ("python3.11/mod00.py" in names) != ("python3.11/copy_of_mod00.py" in names)
    assert "python3.11/test/cjkencodings/big5-utf8.txt" in names
    assert "python3.11/test/cjkencodings/big5.txt" not in names  # same text, other encoding
    dropped = {"generated.py", "binary.py", "numbers.txt", "image.png", "RECORD", "ignored.py"}
    assert not {n for n in names if PurePosixPath(n).name in dropped}
    assert {"python3.11/pydoc_data/topics.py#for", "python3.11/pydoc_data/topics.py#if"} <= names


def test_documents_are_decoded_and_written(roots: tuple[Path, ...], tmp_path: Path) -> None:
    corpus = build_corpus(config(roots, heldout_fraction=0.3), tmp_path / "c", progress=False)
    docs = [*iter_documents(corpus.path, "train"), *iter_documents(corpus.path, "heldout")]
    by_name = {d.name: d for d in docs}
    assert len(docs) == len(corpus.manifest) == len(by_name)
    for row in corpus.manifest.itertuples():
        assert sha256_text(by_name[row.document].text) == row.sha256
        assert by_name[row.document].subset == row.subset
    assert by_name["python3.11/test/cjkencodings/big5-utf8.txt"].text == CJK
    metadata = by_name["site-packages/pkg-1.0.dist-info/METADATA"].text
    assert metadata.startswith("Pkg is a small package") and "Metadata-Version" not in metadata


def test_manifest_hash_is_deterministic(tmp_path: Path) -> None:
    first = build_corpus(config(make_installation(tmp_path / "a")), tmp_path / "c1", progress=False)
    again = build_corpus(config(make_installation(tmp_path / "a")), tmp_path / "c2", progress=False)
    reordered = make_installation(tmp_path / "b", reverse=True)  # other paths, other creation order
    third = build_corpus(config(reordered), tmp_path / "c3", progress=False)
    assert first.manifest_hash == again.manifest_hash == third.manifest_hash
    assert first.manifest_hash == load_corpus(tmp_path / "c1").manifest_hash
    other_seed = build_corpus(config(reordered, seed=1), tmp_path / "c4", progress=False)
    assert other_seed.manifest_hash != first.manifest_hash  # capped python code is a seeded sample


def test_heldout_split_is_disjoint_and_stable(roots: tuple[Path, ...], tmp_path: Path) -> None:
    big = build_corpus(config(roots, heldout_fraction=0.3), tmp_path / "big", progress=False).manifest
    small = build_corpus(
        config(roots, heldout_fraction=0.3, target_bytes=40_000, seed=3), tmp_path / "small", progress=False
    ).manifest
    assert not big["document"].duplicated().any()
    assert {"train", "heldout"} == set(big["split"])
    both = big.merge(small, on="document", suffixes=("_big", "_small"))
    assert len(both) > 0 and (both["split_big"] == both["split_small"]).all()
    assert all(is_heldout(d, 0.3) == (s == "heldout") for d, s in zip(big["document"], big["split"]))


def test_subset_mix_table(roots: tuple[Path, ...], tmp_path: Path) -> None:
    corpus = build_corpus(config(roots), tmp_path / "c", progress=False)
    mix = corpus.mix()
    assert list(mix.columns) == ["subset", "documents", "bytes", "share"]
    assert mix["bytes"].sum() == corpus.total_bytes == corpus.manifest["bytes"].sum()
    assert mix["documents"].sum() == len(corpus.manifest)
    assert mix["share"].sum() == pytest.approx(1.0)
    assert subset_mix(pd.read_csv(corpus.path / "manifest.csv")).equals(mix)


def test_same_config_reopens_the_built_corpus(roots: tuple[Path, ...], tmp_path: Path) -> None:
    built = build_corpus(config(roots), tmp_path / "c", progress=False)
    (tmp_path / "c" / "train" / "python_code.jsonl").unlink()  # a rebuild would write it again
    assert build_corpus(config(roots), tmp_path / "c", progress=False).manifest_hash == built.manifest_hash
    assert not (tmp_path / "c" / "train" / "python_code.jsonl").exists()
    build_corpus(config(roots), tmp_path / "c", progress=False, rebuild=True)
    assert (tmp_path / "c" / "train" / "python_code.jsonl").exists()


def test_candidates_do_not_depend_on_filesystem_order(tmp_path: Path) -> None:
    first = installed_candidates(make_installation(tmp_path / "a"))
    second = installed_candidates(make_installation(tmp_path / "b", reverse=True))
    assert [(c.subset, c.name, c.size) for c in first] == [(c.subset, c.name, c.size) for c in second]


def test_mix_arithmetic() -> None:
    available = {"code": 1000, "prose": 100, "legal": 50}
    caps = {"code": 0.6, "prose": 0.3, "legal": 0.2}
    # prose and legal saturate (150 bytes); code may then be 0.6 X: X = 150 / 0.4 = 375
    assert feasible_total(available, caps, 10_000) == 375
    assert allot_bytes(available, caps, 10_000) == {"code": 225, "prose": 100, "legal": 50}
    assert feasible_total(available, caps, 200) == 200
    small = allot_bytes(available, caps, 200)
    assert sum(small.values()) <= 200 and all(small[s] <= caps[s] * 200 for s in caps)
    # prose saturates at X = 200; then X = 100 + 0.7 X gives X = 333
    assert feasible_total(available, {"code": 0.7, "prose": 0.5}, 10_000) == 333
    assert feasible_total(available, {"code": 0.5, "prose": 0.4}, 10_000) == 0  # caps sum < 1


def test_folder_source(tmp_path: Path) -> None:
    for rel in ("news/a.txt", "news/b.txt", "code/c.py", "top.txt"):
        (tmp_path / "f" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "f" / rel).write_text(f"The text of {rel}. " * 20, encoding="utf-8")
    (tmp_path / "f" / "code" / "blob.bin").write_bytes(b"\x00" * 300)
    corpus = build_corpus(
        CorpusConfig(source="folder", folder=tmp_path / "f"), tmp_path / "c", progress=False
    )
    assert dict(zip(corpus.manifest["document"], corpus.manifest["subset"])) == {
        "code/c.py": "code",
        "news/a.txt": "news",
        "news/b.txt": "news",
        "top.txt": "text",
    }


@pytest.mark.parametrize("layout", ["save_to_disk", "jsonl"])
def test_hf_dataset_source(tmp_path: Path, layout: str) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [
        {"text": f"Document number {i} says hello. " * 10, "meta": {"set": "ab"[i % 2]}} for i in range(30)
    ]
    if layout == "save_to_disk":
        datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    else:  # a folder of data files, streamed by load_dataset like a hub dataset
        (tmp_path / "ds").mkdir()
        (tmp_path / "ds" / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    cfg = CorpusConfig(source="hf", hf_dataset=str(tmp_path / "ds"), hf_subset_column="meta.set")
    corpus = build_corpus(cfg, tmp_path / "c", progress=False)
    assert set(corpus.manifest["subset"]) == {"a", "b"} and len(corpus.manifest) == 30
    assert corpus.manifest["document"].str.startswith("ds/train/").all()


def test_config_errors_say_what_to_change(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="target_bytes"):
        CorpusConfig(target_bytes=0)
    with pytest.raises(ValueError, match="heldout_fraction"):
        CorpusConfig(heldout_fraction=1.0)
    with pytest.raises(ValueError, match="raise max_share"):
        CorpusConfig(max_share=tuple((s, 0.1) for s, _ in CAPS))
    with pytest.raises(ValueError, match="folder="):
        CorpusConfig(source="folder", folder=tmp_path / "missing")
    with pytest.raises(ValueError, match="hf_dataset="):
        CorpusConfig(source="hf")


def test_real_installation_smoke(tmp_path: Path) -> None:
    corpus = build_corpus(CorpusConfig(target_bytes=300_000), tmp_path / "c", progress=False)
    mix = corpus.mix().set_index("subset")
    assert {"python_code", "prose", "legal", "markup"} <= set(mix.index)
    assert 200_000 < corpus.total_bytes <= 300_000
    caps = CorpusConfig().caps
    assert all(share <= caps[s] + 1e-9 for s, share in mix["share"].items())


def pip_install(site: Path, name: str, version: str, files: dict[str, str]) -> None:
    """Lay out a distribution in `site` as pip does: its files, and a .dist-info with METADATA, a license and
    a RECORD listing every file with its hash and size."""
    info = f"{name}-{version}.dist-info"
    files = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n"
        + f"{name} is a package that does many useful things for the people who use it. " * 8,
        f"{info}/licenses/LICENSE": f"MIT License. Copyright {name} authors. Permission is granted... " * 6,
        f"{info}/INSTALLER": "pip\n",
    }
    lines = []
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text, encoding="utf-8")
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        lines.append(f"{rel},sha256={digest},{len(text.encode())}")
    lines.append(f"{info}/RECORD,,")
    (site / info / "RECORD").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_installing_an_unrelated_package_changes_nothing(tmp_path: Path) -> None:
    stdlib = make_installation(tmp_path / "install")[0]
    site = tmp_path / "venv" / "site-packages"
    pip_install(site, "declared", "1.0", {f"declared/m{i}.py": python_module(i) for i in range(5)}
                | {"declared/README.md": "The declared package is documented in plain English prose. " * 6})
    cfg = config((stdlib,), distributions=("declared", "not-installed"), distribution_paths=(site,),
                 max_share=tuple((s, 1.0) for s, _ in CAPS))
    before = [(c.subset, c.name, c.size) for c in installed_candidates((stdlib,), find_distributions(
        cfg.distributions, cfg.distribution_paths))]
    corpus = build_corpus(cfg, tmp_path / "c1", progress=False)
    names = set(corpus.manifest["document"])
    assert {"site-packages/declared/m0.py", "site-packages/declared-1.0.dist-info/METADATA",
            "site-packages/declared-1.0.dist-info/licenses/LICENSE"} <= names  # the declared files are read
    pip_install(site, "unrelated", "2.0", {f"unrelated/u{i}.py": python_module(100 + i) for i in range(5)}
                | {"unrelated/README.md": "Unrelated is another package with its own documentation. " * 6})
    after = [(c.subset, c.name, c.size) for c in installed_candidates((stdlib,), find_distributions(
        cfg.distributions, cfg.distribution_paths))]
    assert after == before
    again = build_corpus(cfg, tmp_path / "c2", progress=False)
    assert again.manifest_hash == corpus.manifest_hash
    recorded = json.loads((tmp_path / "c1" / "corpus.json").read_text(encoding="utf-8"))
    assert recorded["config"]["distributions"] == ["declared", "not-installed"]
    walked = installed_candidates((stdlib, site))  # what scanning the whole site-packages would have read
    assert any("unrelated" in c.name for c in walked)


def test_core_distributions_are_saekits_dependencies() -> None:
    assert {"torch", "nnsight", "transformers", "tokenizers", "numpy", "pandas"} <= set(CORE_DISTRIBUTIONS)
    found = {d.metadata["Name"].lower() for d in find_distributions(CORE_DISTRIBUTIONS)}
    assert {"torch", "numpy", "transformers"} <= found
    assert "pytest" not in found and "saekit" not in found


def test_a_killed_build_never_leaves_a_corpus_that_opens(roots: tuple[Path, ...], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import saekit.embedded.corpus as corpus_module

    def killed(out, *args):
        (out / "train").mkdir(parents=True)
        (out / "train" / "python_code.jsonl").write_text("{half", encoding="utf-8")
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus_module, "write_corpus", killed)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(config(roots), tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()
    monkeypatch.undo()
    built = build_corpus(config(roots), tmp_path / "c", progress=False)
    assert len(list(iter_documents(built.path))) == (built.manifest["split"] == "train").sum()
