"""Specificity: the proxies on hand-written text, the log-likelihood ratio against a hand computation, tracking
against brute-force numpy, and the finder on a tiny model whose dictionary has a unit planted on a proxy's tokens."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from saekit.activations import nnsight_api as api
from saekit.activations.windows import token_source, windows_from_tokens
from saekit.analysis import proxies as P
from saekit.analysis.likelihood_ratio import base64_text, llr_proxy, llr_table
from saekit.analysis.specificity import (
    LevelCounts,
    TrackingConfig,
    best_levels,
    best_per_basis,
    find_tracking_units,
    proxy_distribution,
    proxy_histogram,
    tracking_curves,
    unit_activations,
)
from saekit.analysis.token_text import WindowTexts, decode_window, token_bytes
from saekit.errors import InputError
from saekit.saes.provenance import Provenance

from helpers import HOOK, TEXTS, build_tokenizer, dense_acts

PEM_LINE = "MIIGFDCCA/ygAwIBAgIIG3Dp0v+ubHEwDQYJKoZIhvcNAQELBQAwUTELMAkGA1UE"


def window(tokens: list[str]):
    """A window whose tokens are the given strings (their UTF-8 bytes), decoded as the proxies see windows."""
    return decode_window(range(len(tokens)), [t.encode("utf-8") for t in tokens])


def holds(proxy: P.Proxy, tokens: list[str]) -> list[bool]:
    return proxy.holds(proxy.values(window(tokens))).tolist()


# --- tokens as text -------------------------------------------------------------------------------


def test_a_character_split_over_tokens_is_in_each_of_them():
    han = "日".encode()  # three bytes
    w = decode_window([0, 1, 2, 3], [han[:2], han[2:], b"x", "\u00e9".encode()])
    assert w.text == "日xé"
    assert w.tokens == ["日", "日", "x", "é"]
    cut = decode_window([0], [han[:2]])  # a window ending inside a character
    assert cut.text == "\ufffd" and cut.tokens == ["\ufffd"]


def test_token_bytes_rebuild_the_text_of_a_byte_level_tokenizer():
    tokenizer = build_tokenizer()
    tokenizer.add_tokens(["<b>bold</b>"])
    text = "def add(a, b): 日本語 파이썬 <b>bold</b> MIIG+/=="
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    table = token_bytes(tokenizer)
    assert b"".join(table[i] for i in ids).decode("utf-8") == text
    assert table[tokenizer.convert_tokens_to_ids("<b>bold</b>")] == b"<b>bold</b>"
    assert any(len(table[i]) == 1 and table[i][0] >= 0x80 for i in ids)  # some CJK token holds a lone byte
    w = decode_window(ids, table)
    assert w.text == text
    assert set("日本語파이썬") <= set("".join(w.tokens))


def other_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """A WordPiece (BERT-like) or a SentencePiece-like (▁ for spaces, byte fallback) tokenizer."""
    texts = ["hello world wonderful worlds", "日本 hello"] * 5
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.Whitespace(), decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=80, special_tokens=["[UNK]"])
    else:
        tok = Tokenizer(models.BPE(byte_fallback=True))
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Sequence(
            [decoders.Metaspace(), decoders.ByteFallback()])
        trainer = trainers.BpeTrainer(vocab_size=80, special_tokens=["[UNK]"] + [f"<0x{b:02X}>" for b in range(256)])
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_token_bytes_of_wordpiece_and_sentencepiece_vocabularies():
    wordpiece = other_tokenizer("wordpiece")
    ids = wordpiece("hello worlds", add_special_tokens=False)["input_ids"]
    assert decode_window(ids, token_bytes(wordpiece)).text == " hello worlds"  # a space before each word
    sentencepiece = other_tokenizer("metaspace")
    ids = sentencepiece("hello 語", add_special_tokens=False)["input_ids"]  # 語 was never seen: its three bytes
    assert [t for t in sentencepiece.convert_ids_to_tokens(ids) if t.startswith("<0x")] == ["<0xE8>", "<0xAA>",
                                                                                            "<0x9E>"]
    w = decode_window(ids, token_bytes(sentencepiece))
    assert w.text == " hello 語" and w.tokens[-3:] == ["語"] * 3


def test_window_texts_follow_the_flat_token_index_through_padding(tiny_lm):
    tokenizer = api.get_tokenizer(tiny_lm)
    ids = torch.tensor(tokenizer("one two three four five", add_special_tokens=False)["input_ids"])
    windows = windows_from_tokens(ids, 4)  # the last window is padded
    texts = WindowTexts.of(windows, tokenizer)
    assert "".join(t.text for t in texts.texts) == "one two three four five"
    assert texts.tokens() == [tokenizer.decode([i]) for i in ids.tolist()]
    flat = texts.scatter([np.arange(len(t.ids), dtype=np.float32) + 1 for t in texts.texts], fill=-1)
    mask = windows.attention_mask.numpy().reshape(-1).astype(bool)
    assert (flat[~mask] == -1).all() and (flat[mask] > 0).all()
    assert texts.tokens(np.array([5])) == [tokenizer.decode([ids[5].item()])]


# --- the built-in proxies -------------------------------------------------------------------------


def test_base64_holds_on_base64_and_not_on_words_identifiers_or_hex():
    proxy = P.base64()
    assert all(holds(proxy, [PEM_LINE[:20], PEM_LINE[20:41], PEM_LINE[41:], "\n", "QAwUTELMAkGA1UE+abc/9=="]))
    random_lines = base64_text(300, seed=3).splitlines()
    assert all(holds(proxy, [line for line in random_lines if len(line) >= 20]))
    assert not any(holds(proxy, ["The quick brown", " fox jumps over the lazy dog", "."]))
    assert not any(holds(proxy, ["internationalization", "Characterization", "Responsibilities"]))
    assert not any(holds(proxy, ["ThisIsAVeryLongCamelCaseIdentifier", " = ", "get_groupby_method_args"]))
    assert not any(holds(proxy, ["c9b2c6af59a7f2499630f4280d45088f561939b9"]))  # hex: no upper case
    assert not any(holds(proxy, ["ab1C", "=="]))  # too short
    mixed = holds(proxy, ["-----BEGIN CERTIFICATE-----", "\n", PEM_LINE, "\n", "-----END"])
    assert mixed == [False, False, True, False, False]


def test_scripts_by_unicode_block_including_tokens_holding_part_of_a_character():
    assert holds(P.script("cjk"), ["日本語", " 파", "이", "썬", "abc", " ", "カタカナ"]) == [
        True, True, True, True, False, False, True]
    assert holds(P.script("arabic"), ["مرحبا", "hello"]) == [True, False]
    assert holds(P.script("hebrew"), ["שלום", "שלום abc def"]) == [True, False]
    assert holds(P.script("cyrillic"), ["Привет", "Privet"]) == [True, False]
    assert holds(P.script("devanagari"), ["नमस्ते", "日本"]) == [True, False]
    assert holds(P.script("greek"), ["αβγ", "abc"]) == [True, False]
    han = "日".encode()
    split = decode_window([0, 1, 2], [b"a" + han[:1], han[1:], b"b"])  # "a" + part of 日, the rest, "b"
    assert P.script("cjk").values(split).tolist() == [0.5, 1.0, 0.0]
    with pytest.raises(InputError, match="unknown script"):
        P.script("klingon")


def test_python_code_marks_statement_lines():
    proxy = P.python_code()
    code = ["def", " add", "(a, b):", "\n    ", "return", " a + b", "\n"]
    assert all(holds(proxy, code))
    assert all(holds(proxy, ["import", " os", "\n", "from typing import", " Any", "\n", "x", " = ", "3", "\n"]))
    assert all(holds(proxy, ["@property", "\n", "class", " Foo", "(Base):", "\n"]))
    prose = ["For example", ", if you want this", ": read on", ".", "\n", "The", " return", " of", " the king"]
    assert not any(holds(proxy, prose))
    assert holds(proxy, ["Some prose here", ".\n", "if x", " > 1:", "\n"]) == [False, False, True, True, True]


def test_markup_marks_tags_entities_links_and_roles_not_comparisons():
    proxy = P.markup()
    assert holds(proxy, ['<div class="a">', "hi", "</div>"]) == [True, False, True]
    assert holds(proxy, ["fish ", "&amp;", " chips"]) == [False, True, False]
    assert holds(proxy, ["see ", "[the docs](https://x.org)", " now"]) == [False, True, False]
    assert holds(proxy, ["use ", ":func:`len`", " or ", "``x``"]) == [False, True, False, True]
    assert holds(proxy, ["<?xml version='1.0'?>", "<!-- note -->", "<br/>"]) == [True, True, True]
    assert holds(proxy, ["Title", "\n", "=====", "\n"]) == [False, False, True, False]
    assert not any(holds(proxy, ["if a < b", " and c > d", ":", " # Comment"]))


def test_legal_text_marks_sentences_of_licence_language():
    proxy = P.legal_text()
    mit = ["Permission is hereby granted", ", free of charge", ", to any person", "."]
    warranty = [" THE SOFTWARE IS PROVIDED", " WITHOUT WARRANTY OF ANY KIND", ", EXPRESS OR IMPLIED", "."]
    assert all(holds(proxy, mit)) and all(holds(proxy, warranty))
    assert not any(holds(proxy, ["The quick brown fox", " jumps over the lazy dog", "."]))
    assert holds(proxy, ["See the license", ".", " Permission is hereby granted", "."]) == [False, False, True, True]


def test_a_users_regex_and_predicate():
    assert P.regex(r"\d+").values(window(["ab", " 12", "3", "x4"])).tolist() == [0.0, 1.0, 1.0, 0.5]
    assert P.regex(r"\d+").name == r"regex \d+"
    upper = P.predicate(str.isupper)
    assert upper.name == "isupper" and holds(upper, ["ABC", "abc", "Ab"]) == [True, False, False]
    lengths = P.predicate(len, name="length", threshold=3)
    assert lengths.values(window(["ab", "abcd"])).tolist() == [2.0, 4.0]
    assert holds(lengths, ["ab", "abcd"]) == [False, True]
    assert P.predicate(lambda t: t == "a").name == "predicate"
    broken = P.Proxy("broken", lambda w: [1.0])
    with pytest.raises(InputError, match="one value per token"):
        broken.values(window(["a", "b"]))


# --- the log-likelihood ratio ---------------------------------------------------------------------


def test_llr_table_against_a_hand_computation():
    table = llr_table([0, 0, 1], [0, 1, 1, 2], vocab_size=3)
    # add-one: P(t | hypothesis) = (2+1, 1+1, 0+1) / (3 + 3), P(t | corpus) = (1+1, 2+1, 1+1) / (4 + 3)
    expected = [math.log((3 / 6) / (2 / 7)), math.log((2 / 6) / (3 / 7)), math.log((1 / 6) / (2 / 7))]
    assert table["llr"].to_numpy() == pytest.approx(expected)
    assert table["hypothesis_count"].tolist() == [2, 1, 0] and table["corpus_count"].tolist() == [1, 2, 1]
    half = llr_table([0, 0, 1], [0, 1, 1, 2], vocab_size=4, smoothing=0.5)
    assert half["llr"].iloc[3] == pytest.approx(math.log((0.5 / 5) / (0.5 / 6)))
    with pytest.raises(InputError, match="vocab_size"):
        llr_table([5], [0], vocab_size=3)


def test_llr_proxy_from_text_and_windows(tiny_lm):
    tokenizer = api.get_tokenizer(tiny_lm)
    windows = token_source(TEXTS, tokenizer, 24, batch_size=64).take(None)
    hypothesis = base64_text(600, seed=1)
    table = llr_table(hypothesis, windows, tokenizer)
    hyp = np.bincount(tokenizer(hypothesis, add_special_tokens=False)["input_ids"], minlength=len(tokenizer))
    kept = windows.input_ids[windows.attention_mask.bool()].numpy()
    corpus = np.bincount(kept[kept != tokenizer.eos_token_id], minlength=len(tokenizer))  # separators left out
    v = len(tokenizer)
    expected = np.log((hyp + 1) / (hyp.sum() + v)) - np.log((corpus + 1) / (corpus.sum() + v))
    assert table["llr"].to_numpy() == pytest.approx(expected)
    assert table["token"].iloc[5] == tokenizer.decode([5])
    proxy = llr_proxy(table, name="base64 llr", threshold=0.5)
    texts = WindowTexts.of(windows, tokenizer)
    values = P.proxy_values(proxy, texts)
    flat_ids = windows.input_ids.numpy().reshape(-1)
    mask = windows.attention_mask.numpy().reshape(-1).astype(bool)
    assert values[mask] == pytest.approx(expected[flat_ids[mask]].astype(np.float32))


def test_base64_text_is_seeded_random_bytes_in_lines():
    import base64

    text = base64_text(1000, seed=7, line_length=64)
    assert text == base64_text(1000, seed=7, line_length=64) != base64_text(1000, seed=8)
    lines = text.splitlines()
    assert all(len(line) == 64 for line in lines[:-1])
    assert base64.b64decode("".join(lines)) == np.random.default_rng(7).bytes(1000)


# --- tracking against brute force -----------------------------------------------------------------


def brute_force_curves(acts: np.ndarray, holds: np.ndarray, thresholds: np.ndarray) -> list[tuple]:
    """(n_above, n_proxy_above, precision, recall) per (unit, level), by plain loops over tokens."""
    rows = []
    for u in range(acts.shape[1]):
        for level, t in enumerate(thresholds[u]):
            n_above = n_pos = 0
            for value, h in zip(acts[:, u], holds):
                if value > 0 and (level == 0 or value >= t):
                    n_above += 1
                    n_pos += int(h)
            precision = n_pos / n_above if n_above else float("nan")
            rows.append((n_above, n_pos, precision, n_pos / holds.sum()))
    return rows


def sparse_random(n_tokens: int, n_units: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    holds = rng.random(n_tokens) < 0.3
    scale = rng.uniform(0.1, 7.0, n_units)
    acts = rng.exponential(1.0, (n_tokens, n_units)) * scale + holds[:, None] * rng.uniform(0, 2, n_units)
    acts[rng.random((n_tokens, n_units)) < 0.6] = 0.0
    acts[:, -1] = 0.0  # a unit that never fires
    return acts.astype(np.float32), holds


def test_tracking_curves_match_a_brute_force_count():
    acts, holds = sparse_random(600, 6, seed=0)
    config = TrackingConfig(n_levels=11, n_bins=128)
    curves = tracking_curves(acts, holds, config)
    assert len(curves) == 6 * 11 and curves["fraction"].iloc[:11].tolist() == pytest.approx(np.arange(11) / 11)
    thresholds = curves["threshold"].to_numpy().reshape(6, 11)
    top = acts.max(0)
    for u in range(5):  # each threshold is a fine-bin edge within one bin of its fraction of the max
        width = 2.0 ** math.ceil(math.log2(top[u] * (1 + 1e-12))) / 128
        assert np.all(np.abs(thresholds[u] - np.arange(11) / 11 * top[u]) <= width / 2 + 1e-6)
    expected = brute_force_curves(acts, holds, thresholds)
    got = curves[["n_above", "n_proxy_above", "precision", "recall"]].to_numpy()
    np.testing.assert_allclose(got, np.array(expected, dtype=np.float64), rtol=1e-12, equal_nan=True)
    p, r = got[:, 2], got[:, 3]
    f1 = np.where(np.isnan(p), np.nan, np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0))
    np.testing.assert_allclose(curves["f1"].to_numpy(), f1, equal_nan=True)
    dead = curves[curves["unit"] == 5]
    assert dead["threshold"].isna().all() and (dead["recall"] == 0).all() and dead["f1"].isna().all()


def test_counts_in_batches_equal_counts_at_once():
    acts, holds = sparse_random(900, 5, seed=1)
    order = np.argsort(acts.max(1))  # rising maxima: every unit's range grows batch after batch
    acts, holds = acts[order], holds[order]
    streamed = LevelCounts(5, 128)
    for start in range(0, 900, 100):
        streamed.update(torch.from_numpy(acts[start : start + 100]), torch.from_numpy(holds[start : start + 100]))
    pd.testing.assert_frame_equal(streamed.curves(11), tracking_curves(acts, holds, TrackingConfig(11, 128)))


def test_best_levels_pick_the_highest_f1():
    acts, holds = sparse_random(400, 4, seed=2)
    curves = tracking_curves(acts, holds, TrackingConfig(n_levels=5, n_bins=64))
    best = best_levels(curves)
    for u in range(3):
        part = curves[curves["unit"] == u]
        row = part.loc[part["f1"].idxmax()]
        got = best[best["unit"] == u].iloc[0]
        assert (got["level"], got["f1"], got["precision"]) == (row["level"], row["f1"], row["precision"])
        firing = part[part["level"] == 0].iloc[0]
        assert (got["n_fires"], got["firing_precision"]) == (firing["n_above"], firing["precision"])
        assert got["n_fires"] == (acts[:, u] > 0).sum()
    assert math.isnan(best[best["unit"] == 3]["f1"].iloc[0])


def test_tracking_refuses_proxy_values_that_are_not_booleans():
    with pytest.raises(InputError, match="proxy.holds"):
        tracking_curves(np.ones((3, 2)), np.array([0.1, 0.9, 0.5]))
    with pytest.raises(InputError, match="one value per token"):
        tracking_curves(np.ones((3, 2)), np.array([True, False]))
    with pytest.raises(InputError, match="power of two"):
        TrackingConfig(n_bins=100)


# --- the finder on a tiny model -------------------------------------------------------------------


class PlantedDictionary:
    """A dictionary over the tiny model's MLP: unit PLANTED fires (at 1 + a little, varying) exactly on the stored
    activations of the proxy's tokens, the other units are ReLUs of random directions (polysemantic)."""

    PLANTED = 3

    def __init__(self, proxy_acts: torch.Tensor, d_in: int, d_sae: int = 8) -> None:
        self.d_in, self.d_out, self.d_sae, self.n_models, self.is_transcoder = d_in, d_in, d_sae, 1, False
        self.provenance = Provenance(hook=HOOK)
        self.dtype, self.device = torch.float32, torch.device("cpu")
        self.stored = proxy_acts
        self.directions = torch.randn(d_in, d_sae, generator=torch.Generator().manual_seed(0))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(x @ self.directions)
        distance = torch.cdist(x, self.stored, compute_mode="donot_use_mm_for_euclid_dist").min(-1).values
        f[:, self.PLANTED] = torch.where(distance < 1e-3, 1.0 + x.abs().mean(-1), 0.0)
        return f

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.directions.T

    @property
    def W_enc(self) -> torch.Tensor:
        return self.directions

    @property
    def W_dec(self) -> torch.Tensor:
        return self.directions.T


B64_TEXTS = TEXTS + [f"key: {base64_text(90, seed=s)}end of key." for s in range(4)]
# a proxy of the token alone: the model's activations tell its tokens apart (a proxy of the context may not, e.g.
# on the first token of a window, whose activation is that of its token whatever the text around it)
DIGITS = P.predicate(lambda token: any(c.isdigit() for c in token), name="digits")


@pytest.fixture(scope="module")
def planted(tiny_lm):
    tokenizer = api.get_tokenizer(tiny_lm)
    windows = token_source(B64_TEXTS, tokenizer, 32, batch_size=64).take(None)
    acts, token_index = dense_acts(tiny_lm, windows)
    texts = WindowTexts.of(windows, tokenizer)
    holds = DIGITS.holds(P.proxy_values(DIGITS, texts))[token_index]
    assert 20 < holds.sum() < len(holds) / 2
    return windows, acts, token_index, holds, PlantedDictionary(acts[torch.from_numpy(holds)], acts.shape[1])


def test_the_planted_unit_ranks_first_and_the_neurons_below_it(tiny_lm, planted):
    windows, acts, _, holds, dictionary = planted
    table = find_tracking_units(tiny_lm, windows, DIGITS, dictionary, progress=False,
                                config=TrackingConfig(batch_size=3))
    top = table.iloc[0]
    assert (top["basis"], top["unit"], top["f1"], top["precision"], top["recall"]) == ("features", 3, 1.0, 1.0, 1.0)
    assert (top["firing_precision"], top["n_fires"]) == (1.0, holds.sum())
    assert table.attrs == {"proxy": "digits", "n_tokens": len(holds), "n_proxy_tokens": int(holds.sum())}
    neurons = table[table["basis"] == "neurons"]
    assert len(neurons) == acts.shape[1] and (neurons["f1"].dropna() < 1).all()
    assert table["rank"].tolist() == list(range(len(table)))
    assert table["f1"].dropna().is_monotonic_decreasing
    best = best_per_basis(table)
    assert best["basis"].tolist() == ["features", "neurons"]
    # the best neuron's numbers, counted again from one dense forward
    neuron, threshold = int(best["unit"].iloc[1]), float(best["threshold"].iloc[1])
    column = acts[:, neuron].numpy()
    above = (column > 0) & ((column >= threshold) if best["level"].iloc[1] > 0 else True)
    assert best["n_above"].iloc[1] == above.sum()
    assert best["precision"].iloc[1] == pytest.approx(holds[above].mean())
    assert best["recall"].iloc[1] == pytest.approx(above[holds].mean())
    assert best["density"].iloc[1] == pytest.approx((column > 0).mean())


def test_unit_activations_keep_the_chosen_units_on_the_same_tokens(tiny_lm, planted):
    windows, acts, token_index, holds, dictionary = planted
    features = unit_activations(tiny_lm, windows, dictionary, units=[3, 0], progress=False, batch_size=4)
    assert features.basis == "features" and features.units.tolist() == [3, 0]
    np.testing.assert_array_equal(features.token_index, token_index)
    np.testing.assert_allclose(features.values, dictionary.encode(acts)[:, [3, 0]].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(features.column(3) > 0, holds)
    assert (DIGITS.holds(features.proxy(DIGITS)) == holds).all()
    tokenizer = api.get_tokenizer(tiny_lm)
    ids = windows.input_ids.numpy().reshape(-1)[token_index]
    assert "".join(features.tokens) == tokenizer.decode(ids.tolist())
    neurons = unit_activations(tiny_lm, windows, hook=HOOK, units=[5], progress=False)
    assert neurons.basis == "neurons"
    np.testing.assert_allclose(neurons.column(5), acts[:, 5].numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="not kept"):
        neurons.column(6)
    with pytest.raises(InputError, match=r"units must lie in \[0, 128\)"):
        unit_activations(tiny_lm, windows, hook=HOOK, units=[128], progress=False)


# --- tables for the figures -----------------------------------------------------------------------


def test_proxy_histogram_counts_each_firing_token_once_in_its_cell():
    rng = np.random.default_rng(4)
    acts = np.where(rng.random(500) < 0.5, rng.exponential(2.0, 500), 0.0)
    values = rng.uniform(-3, 3, 500)
    tokens = [f"t{i % 7}" for i in range(500)]
    table = proxy_histogram(acts, values, tokens, bins=10, buckets=[-3, -1, 1, 3])
    assert len(table) == 10 * 3 and table["count"].sum() == (acts > 0).sum()
    top = acts.max()
    for row in table.itertuples():
        inside = (acts > 0) & (values >= row.bucket_start) & ((values < row.bucket_end) | (row.bucket == 2))
        in_bin = (acts >= row.bin_start) & ((acts < row.bin_end) | (row.bin == 9))
        assert row.count == (inside & in_bin).sum(), row
        cell = Counter(t for t, i, b in zip(tokens, inside, in_bin) if i and b)
        assert row.examples == [t for t, _ in sorted(cell.items(), key=lambda kv: (-kv[1], kv[0]))][:3]
    assert table["bin_end"].iloc[-1] == pytest.approx(top)
    default = proxy_histogram(acts, rng.uniform(0, 1, 500))
    assert default["bucket_start"].min() == 0 and default["bucket_end"].max() == 1 and default["examples"].map(
        len).sum() == 0


def test_proxy_distribution_splits_tokens_by_firing():
    acts = np.array([0.0, 0.0, 1.0, 2.0, 0.5])
    values = np.array([0.0, 0.1, 0.9, 1.0, 0.2])
    table = proxy_distribution(acts, values, bins=2, value_range=(0.0, 1.0))
    firing = table[table["firing"]]
    assert firing["count"].tolist() == [1, 2] and firing["fraction"].tolist() == pytest.approx([1 / 3, 2 / 3])
    assert table[~table["firing"]]["count"].tolist() == [2, 0]
    assert proxy_distribution(acts, values, firing_threshold=0.7, bins=2)[lambda t: t["firing"]]["count"].sum() == 2
