"""Document sources and packing into context windows, checked against a hand-built token stream."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

import saekit
from saekit.activations import windows as T

from helpers import TEXTS, build_tokenizer, write_text_folder


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _hand_stream(docs, tokenizer) -> list[int]:
    stream = []
    for doc in docs:
        stream += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return stream


def test_text_folder_is_recursive_sorted_and_repeatable(text_dir):
    folder = T.TextFolder(text_dir)
    files = folder.files()
    assert len(files) == len(TEXTS)
    assert files == sorted(files)
    assert {f.parent.name for f in files} == {"part_a", "part_b"}
    assert list(folder) == list(folder) == [f.read_text() for f in files]
    assert folder.describe() == str(text_dir.resolve())


def test_text_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        T.TextFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        T.TextFolder(tmp_path / "empty")


def test_as_documents():
    assert list(T.as_documents(["a", "b"])) == ["a", "b"]
    with pytest.raises(TypeError, match="folder path"):
        T.as_documents(42)


def test_packing_matches_hand_stream(tokenizer):
    docs = TEXTS[:6]
    ctx = 16
    windows = T.token_source(docs, tokenizer, ctx, batch_size=1000).take(None)
    stream = _hand_stream(docs, tokenizer)
    n_full = len(stream) // ctx
    assert windows.input_ids.shape == (n_full + 1, ctx)
    assert windows.input_ids.flatten()[: len(stream)].tolist() == stream
    # only the last window is padded, and the mask says where
    assert windows.attention_mask[:-1].all()
    assert windows.attention_mask[-1].sum() == len(stream) - n_full * ctx
    assert windows.n_tokens == len(stream)


def test_streaming_batches_concatenate_to_the_whole(tokenizer):
    docs = TEXTS
    whole = T.token_source(docs, tokenizer, 8, batch_size=10_000).take(None)
    batches = list(T.token_source(docs, tokenizer, 8, batch_size=5))
    assert all(len(b) == 5 for b in batches[:-1]) and 1 <= len(batches[-1]) <= 5
    torch.testing.assert_close(torch.cat([b.input_ids for b in batches]), whole.input_ids)


def test_take_bounds_tokens(tokenizer):
    source = T.token_source(TEXTS, tokenizer, 8, batch_size=2)
    taken = source.take(20)
    assert 20 <= taken.n_tokens < 20 + 8  # whole windows, no more than needed


def test_pretokenized_streams_and_rows():
    flat = np.arange(23)
    windows = T.token_source(flat, None, 10, batch_size=2).take(None)
    assert windows.input_ids.shape == (3, 10)
    assert windows.input_ids.flatten()[:23].tolist() == list(range(23))
    assert windows.attention_mask.sum() == 23
    rows = torch.arange(12).reshape(3, 4)
    as_rows = T.windows_from_tokens(rows, context_len=99)
    torch.testing.assert_close(as_rows.input_ids, rows)
    assert as_rows.attention_mask.all()


def test_text_needs_a_tokenizer():
    with pytest.raises(ValueError, match="no tokenizer"):
        T.token_source(["hello"], None, 8, batch_size=2)


def test_special_token_ids(tokenizer):
    assert T.special_token_ids(tokenizer) == [tokenizer.eos_token_id]
    assert T.special_token_ids(None) == []
    assert T.separator_id(tokenizer) == tokenizer.eos_token_id


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="the optional `datasets` package")
def test_hf_dataset_from_disk(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"body": TEXTS[:3], "n": [1, 2, 3]}).save_to_disk(str(tmp_path / "ds"))
    source = T.HFDataset(str(tmp_path / "ds"), text_column="body")
    assert list(source) == TEXTS[:3]
    with pytest.raises(ValueError, match="no column"):
        list(T.HFDataset(str(tmp_path / "ds"), text_column="text"))


def test_hf_dataset_hub_path_with_a_stand_in_package(monkeypatch):
    """The hub branch's calls, checked with a stand-in `datasets` (the real one may not be installed)."""
    calls = []

    class Rows(list):
        column_names = ["content", "id"]

    def load_dataset(name, config_name, split, streaming):
        calls.append((name, config_name, split, streaming))
        return Rows([{"content": "first", "id": 1}, {"content": "second", "id": 2}])

    fake = types.ModuleType("datasets")
    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    source = T.HFDataset("org/corpus", split="validation", text_column="content", config_name="en", streaming=True)
    assert list(source) == ["first", "second"]
    assert calls == [("org/corpus", "en", "validation", True)]
    assert source.describe() == "org/corpus"


def test_hf_dataset_without_datasets_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("no datasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(saekit.InputError, match="pip install datasets"):
        list(T.HFDataset("some/dataset"))


def test_write_text_folder_roundtrip(tmp_path, tokenizer):
    folder = write_text_folder(tmp_path / "t", ["one doc", "two doc"])
    windows = T.token_source(folder, tokenizer, 4, batch_size=8).take(None)
    assert windows.n_tokens == len(_hand_stream(["one doc", "two doc"], tokenizer))


def test_npy_token_file_is_read_as_tokens(tmp_path):
    ids = np.arange(1, 51, dtype=np.uint16)
    np.save(tmp_path / "tokens.npy", ids)
    windows = T.token_source(str(tmp_path / "tokens.npy"), None, context_len=16, batch_size=8).take(None)
    assert windows.input_ids.shape == (4, 16)
    assert windows.input_ids[windows.attention_mask.bool()].tolist() == list(range(1, 51))
