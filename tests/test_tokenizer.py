"""Byte-level BPE: round trips, special tokens, the Hugging Face folder, and the token arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from saekit.embedded.corpus import Corpus, CorpusConfig, build_corpus
from saekit.embedded.tokenizer import EOT, PAD, TokenizerConfig, train_tokenizer
from saekit.embedded.tokens import load_tokenized, tokenize_corpus

TEXTS = {
    "code/a.py": "def add(x, y):\n    return x + y\n\n\nclass Point:\n    x: int = 0\n" * 8,
    "code/b.py": "import os\n\nfor name in os.listdir('.'):\n    print(name)  # list the folder\n" * 8,
    "prose/c.txt": "The quick brown fox jumps over the lazy dog. It was a bright cold day in April. " * 8,
    "multi/d.txt": "Привет, мир! 你好，世界！ こんにちは世界 مرحبا بالعالم שלום עולם " * 8,
}


@pytest.fixture
def corpus(tmp_path: Path) -> Corpus:
    for rel, text in TEXTS.items():
        (tmp_path / "text" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "text" / rel).write_text(text, encoding="utf-8")
    config = CorpusConfig(source="folder", folder=tmp_path / "text", heldout_fraction=0.0)
    return build_corpus(config, tmp_path / "corpus", progress=False)


def test_round_trip_and_special_tokens(corpus: Corpus, tmp_path: Path) -> None:
    tok = train_tokenizer(corpus, tmp_path / "tok", TokenizerConfig(vocab_size=400), progress=False)
    assert len(tok) == 400
    assert tok.eos_token == tok.bos_token == EOT and tok.pad_token == PAD
    assert tok.eos_token_id != tok.pad_token_id
    for text in [*TEXTS.values(), "unseen: ☃ 🐍 ünïcödé \t\r\n", ""]:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
    special = tok(f"a{EOT}b{PAD}")["input_ids"]
    assert tok.eos_token_id in special and tok.pad_token_id in special
    assert len(tok("def add(x, y):")["input_ids"]) < len("def add(x, y):")  # merges were learned


def test_folder_loads_through_auto_tokenizer(corpus: Corpus, tmp_path: Path) -> None:
    tok = train_tokenizer(corpus, tmp_path / "tok", TokenizerConfig(vocab_size=300), progress=False)
    settings = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert settings["tokenizer_class"] == "PreTrainedTokenizerFast"  # loadable by transformers 4.x too
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    text = TEXTS["multi/d.txt"]
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.eos_token_id == tok.eos_token_id and loaded.pad_token_id == tok.pad_token_id
    batch = loaded(["a", "a longer text"], padding=True)
    assert batch["input_ids"][0][-1] == loaded.pad_token_id


def test_tokenize_corpus_writes_documents_between_eot(corpus: Corpus, tmp_path: Path) -> None:
    tok = train_tokenizer(corpus, tmp_path / "tok", TokenizerConfig(vocab_size=300), progress=False)
    tokens = tokenize_corpus(corpus, tok, tmp_path / "tokens", progress=False)
    train = tokens.tokens("train")
    assert train.dtype == np.uint16 and tokens.eot_id == tok.eos_token_id
    assert train[0] == tokens.eot_id and (train == tokens.eot_id).sum() == len(TEXTS)
    starts = np.flatnonzero(train == tokens.eot_id)
    pieces = np.split(train, starts[1:])
    decoded = sorted(tok.decode(piece[1:].tolist()) for piece in pieces)
    assert decoded == sorted(TEXTS.values())
    assert tokens.n_tokens == {"train": len(train), "heldout": 0}
    assert load_tokenized(tmp_path / "tokens").mix()["train"].sum() == len(train)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        TokenizerConfig(vocab_size=100)
    with pytest.raises(ValueError, match="min_frequency"):
        TokenizerConfig(min_frequency=0)


def test_tokens_killed_before_their_record_are_rebuilt_not_trusted(corpus: Corpus, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import saekit.embedded.build as embedded_build
    import saekit.embedded.tokens as tokens_module

    config = TokenizerConfig(vocab_size=300)
    out = tmp_path / "demo"
    first = embedded_build.tokens_for(corpus, out, config, progress=False)
    first_train = np.array(first.tokens("train"))
    stamp = (out / "tokens" / "train.npy").stat().st_mtime_ns
    assert embedded_build.tokens_for(corpus, out, config, progress=False).n_tokens == first.n_tokens
    assert (out / "tokens" / "train.npy").stat().st_mtime_ns == stamp  # reused

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the arrays are written, their record is not

    monkeypatch.setattr(tokens_module, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        embedded_build.tokens_for(corpus, out, TokenizerConfig(vocab_size=310), progress=False)
    assert not (out / "tokens" / "tokens.json").exists()  # the old record went first: nothing to trust
    monkeypatch.undo()
    again = embedded_build.tokens_for(corpus, out, config, progress=False)
    assert again.n_tokens == first.n_tokens
    assert np.array_equal(again.tokens("train"), first_train)
    meta = json.loads((out / "tokens" / "tokens.json").read_text())
    assert meta["tokenizer"]["vocab_size"] == 300 and "/" in meta["code_version"]
