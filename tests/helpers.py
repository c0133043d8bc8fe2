"""Small builders shared by the tests (tests/ is on sys.path through conftest.py)."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

import saekit
from saekit.activations import nnsight_api as api
from saekit.activations.reading import keep_positions
from saekit.activations.windows import TokenWindows, special_token_ids, token_source
from saekit.analysis.features import StoreConfig, build_feature_store
from saekit.saes.provenance import Provenance
from saekit.saes.registry import sae_class

ARCHS = saekit.architectures()  # every registered architecture: a new one is tested wherever these are


def with_k(arch: str, k: int) -> dict:
    """`SAE.create` arguments for `arch`: k where the architecture takes one."""
    return {"k": k} if "k" in sae_class(arch).hyperparameter_names() else {}


def set_thresholds(sae: saekit.SAE, per_feature: tuple[float, float] = (0.0, 0.3), single: float = 0.15) -> None:
    """Non-zero thresholds for the architectures that have them: uniform in `per_feature` where each feature has
    its own (JumpReLU), `single` where one is shared (BatchTopK's inference threshold)."""
    threshold = getattr(sae, "threshold", None)
    if threshold is None:
        return
    with torch.no_grad():
        if threshold.numel() == sae.d_sae:
            threshold.uniform_(*per_feature)
        else:
            threshold.fill_(single)


def make_sae(arch: str, d_in: int = 16, d_sae: int = 48, **kw) -> saekit.SAE:
    """An SAE with non-trivial biases and thresholds, so every term of its equations matters."""
    sae = saekit.SAE.create(arch, d_in, d_sae, seed=1, **{**with_k(arch, 5), **kw})
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2)
        sae.b_dec.normal_(0, 0.5)
    set_thresholds(sae)
    return sae


HOOK = "transformer.h.0.mlp.act"  # GPT-2's MLP neurons: [batch, seq, 4 * n_embd]
TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Sparse autoencoders find features in superposition inside transformer MLP layers.",
    "def add(a, b):\n    return a + b\n",
    "Monosemantic features respond to one concept: DNA sequences, base64, Hebrew, legal text.",
    "Numbers 1 2 3 4 5 6 7 8 9 10 and symbols !? ; : ( ) [ ] { } appear in code and prose alike.",
] * 3


def build_tokenizer(texts: list[str] = TEXTS, vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with one special token, <|endoftext|> (BOS = EOS = PAD, id 0)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    eot = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eot, eos_token=eot, pad_token=eot)


def build_tiny_gpt2(folder: Path, seed: int = 0) -> Path:
    """A one-block GPT-2 (d_model 32, 128 MLP neurons) with its tokenizer, saved as a hub-style folder."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    config = GPT2Config(
        n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A one-layer BERT encoder (no LM head) with the same tokenizer."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    BertModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_topic_folder(folder: Path) -> Path:
    """Real English text shipped with Python: the documentation's topic pages, in two sub-folders."""
    from pydoc_data.topics import topics

    for i, (name, text) in enumerate(sorted(topics.items())):
        sub = folder / ("prose" if i % 2 else "reference")
        sub.mkdir(exist_ok=True)
        (sub / f"{name}.txt").write_text(text)
    return folder


def write_text_folder(folder: Path, texts: list[str] = TEXTS) -> Path:
    """Texts as numbered .txt files, split over a subfolder to exercise the recursive walk."""
    for i, text in enumerate(texts):
        sub = folder / ("part_b" if i % 2 else "part_a")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"doc_{i:03d}.txt").write_text(text, encoding="utf-8")
    return folder


# --- brute-force activations for the analysis tests ----------------------------------------------


def corpus(tiny_lm, context_len: int = 24) -> TokenWindows:
    return token_source(TEXTS, api.get_tokenizer(tiny_lm), context_len, batch_size=64).take(None)


def dense_acts(model, windows: TokenWindows) -> tuple[torch.Tensor, np.ndarray]:
    """All kept activations [tokens, d] at HOOK in one forward, and their flat token indices."""
    keep = keep_positions(windows, torch.tensor(special_token_ids(api.get_tokenizer(model))))
    acts = api.get_activations(model, windows.input_ids, windows.attention_mask, HOOK)
    return acts[keep], np.flatnonzero(keep.reshape(-1).numpy())


def sparse_sae(acts: torch.Tensor, d_sae: int, density: float = 0.15, seed: int = 1):
    """A ReLU SAE whose features fire on about `density` of the tokens (b_enc set from the data)."""
    sae = saekit.SAE.create("relu", acts.shape[-1], d_sae, seed=seed)
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0))
        sae.b_enc -= torch.quantile(sae.pre_acts(acts), 1 - density, dim=0)
        sae.b_enc[-1] = -1e3  # one dead feature
    sae.provenance = Provenance(hook=HOOK)
    return sae


def tiny_store(model, config: StoreConfig) -> SimpleNamespace:
    """The tiny model's windows, their activations, a sparse 40-feature SAE and its feature store."""
    windows = corpus(model)
    acts, _ = dense_acts(model, windows)
    sae = sparse_sae(acts, 40)
    store = build_feature_store(model, windows, sae, hook=HOOK, config=config, progress=False)
    return SimpleNamespace(windows=windows, acts=acts, sae=sae, store=store)


PAYLOAD = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(2)</script>"
MARKUP_TEXTS = [f"A page said {PAYLOAD} then {SCRIPT} and more {PAYLOAD} text." for _ in range(12)] + TEXTS
MARKUP_STORE = StoreConfig(n_top=6, n_per_interval=3, n_bins=128, n_logits=4, batch_size=8)


# --- a model whose tokens hold markup (escaping tests, headless and in the browser) ---------------


def build_markup_model(folder: Path, seed: int = 0) -> Path:
    """A tiny GPT-2 whose tokenizer holds the two markup strings as single tokens, so a corpus line with
    markup puts the whole `<img ... onerror=...>` into one token string: escaping must hold per token."""
    return _gpt2_with_tokens(folder, MARKUP_TEXTS, [PAYLOAD, SCRIPT], seed)


def _gpt2_with_tokens(folder: Path, texts: list[str], tokens: list[str], seed: int) -> Path:
    """A tiny GPT-2 whose tokenizer, trained on `texts`, also holds each of `tokens` as one token."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(texts)
    tokenizer.add_tokens(list(tokens))
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tokenizer),
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def markup_neuron_store(model):
    """The neuron store of the markup model over text full of markup."""
    return build_feature_store(model, MARKUP_TEXTS, None, hook=HOOK, context_len=32, config=MARKUP_STORE,
                               progress=False)


def markup_feature(store) -> int:
    """A unit whose top examples sit on the <img> token."""
    return int(store.search_token(PAYLOAD, exact=True)["feature"].iloc[0])


# --- every markup payload, in every widget ----------------------------------------------------------------

PAYLOADS = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "<svg onload=alert(1)>",
    '" onmouseover="alert(1)',  # breaks out of a double-quoted attribute
    "'><iframe src=javascript:alert(1)>",  # breaks out of a single-quoted attribute
    "</textarea><b>x</b>",
]
PAYLOAD_IDS = ["img-onerror", "script", "svg-onload", "dquote-breakout", "squote-iframe", "textarea-close"]
_WORDS = ["page", "said", "then", "and", "more", "text"]
PAYLOAD_TEXTS = [
    " ".join(f"{word} {p}" for word, p in zip(_WORDS, PAYLOADS[i % 6:] + PAYLOADS[: i % 6])) + "."
    for i in range(24)
] + [f"split {p.upper()} apart" for p in PAYLOADS] + TEXTS


def build_payload_model(folder: Path, seed: int = 0) -> Path:
    """A tiny GPT-2 whose tokenizer holds each of PAYLOADS as one token; PAYLOAD_TEXTS are mostly payloads,
    so most units' top examples sit on or next to them (the same tokenizer for every seed)."""
    return _gpt2_with_tokens(folder, PAYLOAD_TEXTS, PAYLOADS, seed)


def payload_windows(model, context_len: int = 32) -> TokenWindows:
    """PAYLOAD_TEXTS tokenized by the payload model."""
    return token_source(PAYLOAD_TEXTS, api.get_tokenizer(model), context_len, batch_size=64).take(None)


def units_on(store, token: str) -> list[int]:
    """The units with a top example on exactly `token`, most such examples first."""
    found = store.search_token(token, exact=True)
    return [int(f) for f in found.loc[found["n_top_examples"].fillna(0) > 0, "feature"]]


# --- a planted automaton: features that hand off along a phrase of the text -----------------------------------

CHAIN_WORDS = [" quick", " brown", " fox", " jumps"]  # consecutive single tokens of TEXTS
AUTOMATON_STORE = StoreConfig(n_top=8, n_per_interval=3, n_bins=128, n_logits=4, batch_size=8)


def planted_automaton(model, n_noise: int = 36, boost: float = 10.0) -> SimpleNamespace:
    """A ReLU SAE on the tiny model's MLP whose feature k fires exactly on CHAIN_WORDS[k] (a least-squares
    separator of that token's activations) and whose decoder makes it boost CHAIN_WORDS[k + 1] by `boost` nats at
    its mean activation, so features 0 → 1 → 2 → 3 hand off along the phrase; `n_noise` random sparse features
    with small random decoders around them. Returns the windows, activations, tokens, SAE and its store."""
    from saekit.analysis.logit_effects import logit_effect_matrix, output_weights

    windows = corpus(model)
    acts, flat = dense_acts(model, windows)
    tokens = windows.input_ids.reshape(-1).numpy()[flat]
    ids = [api.get_tokenizer(model)(w, add_special_tokens=False)["input_ids"] for w in CHAIN_WORDS]
    assert all(len(i) == 1 for i in ids), ids
    ids = [i[0] for i in ids]
    sae = saekit.SAE.create("relu", acts.shape[1], len(ids) + n_noise, seed=3)
    weights = output_weights(model, HOOK)
    X = torch.cat([acts, torch.ones(len(acts), 1)], 1).double()
    with torch.no_grad():
        sae.b_dec.zero_()
        sae.b_enc.copy_(-torch.quantile(acts @ sae.W_enc, 0.97, dim=0))
        for k, token in enumerate(ids):
            y = torch.as_tensor(tokens == token).double()
            w = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
            score = X @ w
            low, high = float(score[y == 0].max()), float(score[y > 0].min())
            assert high > low, f"{CHAIN_WORDS[k]!r} is not linearly separable at {HOOK}"
            cut, scale = (low + high) / 2, 1.0 / (high - (low + high) / 2)
            sae.W_enc[:, k] = (w[:-1] * scale).float()
            sae.b_enc[k] = float((w[-1] - cut) * scale)
        sae.W_dec.copy_(torch.randn(sae.d_sae, acts.shape[1], generator=torch.Generator().manual_seed(5)) / 128)
        f = sae.encode(acts)
        mean = torch.where(f > 0, f, torch.nan).nanmean(0)
        to_neurons = torch.linalg.pinv(weights.W_out)  # [d_model, d_mlp]: a residual direction → an MLP direction
        for k, token in enumerate(ids[1:]):
            u = weights.W_U[token] - weights.W_U[token].mean()
            d = (u / weights.norm_weight) @ to_neurons
            effect = logit_effect_matrix(d[None], weights)[0, token]
            sae.W_dec[k] = d * (boost / float(mean[k]) / float(effect))
    sae.provenance = Provenance(hook=HOOK)
    store = build_feature_store(model, windows, sae, hook=HOOK, config=AUTOMATON_STORE, progress=False)
    return SimpleNamespace(windows=windows, acts=acts, tokens=tokens, ids=ids, sae=sae, store=store)
