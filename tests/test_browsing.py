"""What the viewers show, computed without widgets (no ipywidgets or plotly needed): checked against brute force
on a tiny GPT-2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saekit.activations import nnsight_api as api
from saekit.analysis import browsing
from saekit.analysis.features import StoreConfig
from saekit.saes.dictionary import Neurons

from helpers import HOOK, TEXTS, tiny_store

CONFIG = StoreConfig(n_top=6, n_per_interval=3, n_bins=128, n_logits=4, batch_size=8)


@pytest.fixture(scope="module")
def tiny(tiny_lm):
    return tiny_store(tiny_lm, CONFIG)


def _codes(model, sae, input_ids: torch.Tensor) -> torch.Tensor:
    """The SAE's codes at every position of one window [positions, features], straight from the model."""
    with torch.no_grad():
        return sae.encode(api.get_activations(model, input_ids[None], None, HOOK)[0])


def test_nearest_features_by_decoder_cosine_match_brute_force(tiny):
    W = tiny.sae.W_dec.detach()
    unit = W / W.norm(dim=1, keepdim=True)
    cos = unit @ unit[5]
    cos[5] = -2
    expected = sorted(range(len(cos)), key=lambda i: -float(cos[i]))[:8]
    near = browsing.nearest_features(tiny.sae, 5, 8)
    assert near["feature"].tolist() == expected
    np.testing.assert_allclose(near["cosine"], cos[expected].numpy(), rtol=1e-5)
    assert browsing.nearest_features(Neurons(16), 3).empty and browsing.nearest_features(None, 3).empty


def test_context_values_are_the_features_activation_on_every_shown_token(tiny, tiny_lm):
    feature = int(tiny.store.feature_table()["feature"].iloc[0])
    examples = tiny.store.top_examples(feature, 4)
    values = browsing.context_values(tiny.store, tiny.sae, tiny_lm, feature, examples)
    assert len(values) == len(examples)
    for row, shown in zip(examples.itertuples(index=False), values):
        codes = _codes(tiny_lm, tiny.sae, tiny.windows.input_ids[row.window])[:, feature]
        start = row.position - len(row.left)
        np.testing.assert_allclose(shown, codes[start : row.position + 1 + len(row.right)].numpy(), rtol=1e-4,
                                   atol=1e-6)
        assert shown[len(row.left)] == pytest.approx(row.activation, rel=1e-3)
    assert browsing.context_values(tiny.store, tiny.sae, None, feature, examples) is None


def test_text_search_ranks_the_features_by_their_peak_on_the_text(tiny, tiny_lm):
    text = "The quick brown fox"
    found = browsing.text_search(tiny.store, tiny.sae, tiny_lm, text, k=5)
    ids = api.get_tokenizer(tiny_lm)(text, add_special_tokens=False)["input_ids"]
    codes = _codes(tiny_lm, tiny.sae, torch.tensor(ids))
    peak = codes.max(0).values
    expected = [int(i) for i in peak.argsort(descending=True, stable=True)[:5] if peak[i] > 0]
    assert found["feature"].tolist() == expected
    np.testing.assert_allclose(found["activation"], peak[expected].numpy(), rtol=1e-5)
    assert found["token"].tolist() == [tiny.store.vocab[ids[int(codes[:, f].argmax())]] for f in expected]
    with pytest.raises(ValueError, match="needs the model and the dictionary"):
        browsing.text_search(tiny.store, tiny.sae, None, text)


def test_explorer_data_reads_features_and_neurons_on_the_same_windows(tiny, tiny_lm):
    data = browsing.explorer_data(tiny.sae, tiny_lm, TEXTS[:5], max_tokens=200, context_len=32, config=CONFIG,
                                  progress=False)
    assert data.features.meta["kind"] == "sae" and data.neurons.meta["kind"] == "neurons"
    assert np.array_equal(data.features.token_ids, data.neurons.token_ids)
    assert data.neurons.n_features == tiny.sae.d_in
    assert browsing.explorer_data(tiny.sae, tiny_lm, TEXTS[:5], max_tokens=200, context_len=32, config=CONFIG,
                                  neurons=False, progress=False).neurons is None
