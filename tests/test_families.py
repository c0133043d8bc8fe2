"""Every common family at every friendly site, end to end: tiny random models of real `transformers` classes go
through `saekit train` → `saekit eval` → the feature store and explorer → steering, and each number is checked
against one computed here from plain torch forward hooks on the raw model."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as T

import saekit
from saekit.activations.sites import SITES
from saekit.cli import main

from helpers import build_tokenizer

HIDDEN, INNER, CTX, K, FEATURES = 32, 48, 16, 4, 64
# --buffer-mb 1: the shuffle buffer fills a whole block (cycling the text) before its first batch, whatever --tokens.
TRAIN = ["--arch", "topk", "--k", str(K), "--features", str(FEATURES), "--tokens", "2048", "--batch-size", "64",
         "--buffer-mb", "1", "--context-len", str(CTX), "--lr", "3e-3", "--quiet", "--checkpoint-every", "0"]


def _config(name: str, vocab: int) -> T.PretrainedConfig:
    common = dict(num_hidden_layers=2, hidden_size=HIDDEN, num_attention_heads=2, intermediate_size=INNER,
                  vocab_size=vocab, max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    gqa = dict(num_key_value_heads=2, **common)
    return {
        "gpt2": lambda: T.GPT2Config(n_layer=2, n_embd=HIDDEN, n_head=2, n_inner=INNER, vocab_size=vocab,
                                     n_positions=64, bos_token_id=0, eos_token_id=0),
        "gpt_neox": lambda: T.GPTNeoXConfig(**common),
        "llama": lambda: T.LlamaConfig(**gqa),
        "mistral": lambda: T.MistralConfig(**gqa),
        "qwen2": lambda: T.Qwen2Config(**gqa),
        "gemma": lambda: T.GemmaConfig(head_dim=16, **gqa),
        "gemma2": lambda: T.Gemma2Config(head_dim=16, **gqa),
        "gemma3": lambda: T.Gemma3TextConfig(head_dim=16, **gqa),
        "phi": lambda: T.PhiConfig(**common),
        "bert": lambda: T.BertConfig(**common),
    }[name]()


CLASSES = {"gpt2": T.GPT2LMHeadModel, "gpt_neox": T.GPTNeoXForCausalLM, "llama": T.LlamaForCausalLM,
           "mistral": T.MistralForCausalLM, "qwen2": T.Qwen2ForCausalLM, "gemma": T.GemmaForCausalLM,
           "gemma2": T.Gemma2ForCausalLM, "gemma3": T.Gemma3ForCausalLM, "phi": T.PhiForCausalLM,
           "bert": T.BertModel}
FAMILIES = sorted(CLASSES)
LMS = [f for f in FAMILIES if f != "bert"]

# Where each family's sites are, written out by hand: (blocks, attention output projection, MLP output projection).
PATHS = {
    "gpt2": ("transformer.h", "attn.c_proj", "mlp.c_proj"),
    "gpt_neox": ("gpt_neox.layers", "attention.dense", "mlp.dense_4h_to_h"),
    "llama": ("model.layers", "self_attn.o_proj", "mlp.down_proj"),
    "mistral": ("model.layers", "self_attn.o_proj", "mlp.down_proj"),
    "qwen2": ("model.layers", "self_attn.o_proj", "mlp.down_proj"),
    "gemma": ("model.layers", "self_attn.o_proj", "mlp.down_proj"),
    "gemma2": ("model.layers", "self_attn.o_proj", "mlp.down_proj"),
    "gemma3": ("model.layers", "self_attn.o_proj", "mlp.down_proj"),
    "phi": ("model.layers", "self_attn.dense", "mlp.fc2"),
    "bert": ("encoder.layer", "attention.output.dense", "output.dense"),
}


def expected_site(family: str, site: str) -> tuple[str, str]:
    blocks, attn, mlp = PATHS[family]
    block = f"{blocks}.1"
    return {"resid_pre": (block, "input"), "resid_post": (block, "output"), "attn_out": (f"{block}.{attn}", "output"),
            "mlp_act": (f"{block}.{mlp}", "input"), "mlp_out": (f"{block}.{mlp}", "output")}[site]


# --- fixtures: each model saved once, each SAE trained once ---------------------------------------------------


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Every family's tiny model and the shared tokenizer, saved as hub-style folders."""
    tokenizer = build_tokenizer()
    root = tmp_path_factory.mktemp("families")
    out = {}
    for i, name in enumerate(FAMILIES):
        torch.manual_seed(i)
        model = CLASSES[name](_config(name, len(tokenizer))).eval()
        out[name] = root / name
        model.save_pretrained(out[name])
        tokenizer.save_pretrained(out[name])
    return out


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    """Held-out windows as a token file: [6, CTX] ids with no special token, so every position is measured."""
    ids = np.random.default_rng(0).integers(1, 300, size=(6, CTX)).astype(np.int64)
    path = tmp_path_factory.mktemp("held") / "tokens.npy"
    np.save(path, ids)
    return path


class Trained:
    """The SAEs `saekit train` saves at layer 1's sites, each trained once per module, with what the command printed."""

    def __init__(self, folders: dict[str, Path], text_dir: Path, root: Path) -> None:
        self.folders, self.text_dir, self.root = folders, text_dir, root
        self.runs: dict[tuple[str, str], tuple[Path, str]] = {}

    def __call__(self, family: str, site: str) -> tuple[Path, str]:
        if (family, site) not in self.runs:
            out = self.root / f"{family}-{site}"
            args = ["train", "--model", str(self.folders[family]), "--layer", "1", "--site", site,
                    "--text", str(self.text_dir), "--out", str(out), *TRAIN]
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                assert main(args) == 0
            self.runs[family, site] = out, printed.getvalue()
        return self.runs[family, site]


@pytest.fixture(scope="module")
def trained(folders, text_dir, tmp_path_factory) -> Trained:
    return Trained(folders, text_dir, tmp_path_factory.mktemp("saes"))


# --- independent computations: plain torch hooks on the raw model ----------------------------------------------


def raw_model(folder: Path) -> torch.nn.Module:
    encoder = T.AutoConfig.from_pretrained(folder).architectures == ["BertModel"]
    return (T.AutoModel if encoder else T.AutoModelForCausalLM).from_pretrained(folder).eval()


def hooked_acts(module: torch.nn.Module, path: str, side: str, ids: torch.Tensor) -> torch.Tensor:
    """Activations [batch, seq, d] at `path` (`side`) through a plain forward hook."""
    seen: list[torch.Tensor] = []
    target = module.get_submodule(path)

    def first(value):
        return value if isinstance(value, torch.Tensor) else value[0]

    if side == "input":
        handle = target.register_forward_pre_hook(
            lambda m, args, kwargs: seen.append(first(args) if args else kwargs["hidden_states"]), with_kwargs=True)
    else:
        handle = target.register_forward_hook(lambda m, args, out: seen.append(first(out)))
    with torch.no_grad():
        module(input_ids=ids, attention_mask=torch.ones_like(ids))
    handle.remove()
    return seen[0]


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    x, x_hat = x.double(), x_hat.double()
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


# --- train → eval at every site of every family ----------------------------------------------------------------

EVAL_KEYS = {"sae", "kind", "model", "hook", "arch", "n_features", "n_tokens", "mse", "fvu", "l0", "dead_fraction",
             "dense_fraction", "loss_clean", "loss_spliced", "loss_zero_ablated", "loss_mean_ablated",
             "loss_recovered", "loss_increase"}
LOSSES = ("loss_clean", "loss_spliced", "loss_zero_ablated", "loss_mean_ablated", "loss_recovered", "loss_increase")


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("family", FAMILIES)
def test_train_then_eval_at_every_site(family, site, folders, held_out, trained, capsys):
    out, printed = trained(family, site)
    hook, side = expected_site(family, site)
    assert f"site {site} of layer 1: {hook} ({side})" in printed
    sae = saekit.load_sae(out)
    assert (sae.provenance.hook, sae.provenance.hook_side) == (hook, side)
    assert main(["eval", str(out), "--text", str(held_out), "--tokens", "96", "--json", "--quiet"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert EVAL_KEYS <= set(row), EVAL_KEYS - set(row)
    assert (row["hook"], row["arch"], row["n_features"], row["n_tokens"]) == (hook, "topk", FEATURES, 96)
    for key in ("mse", "fvu", "l0", "dead_fraction", "dense_fraction"):
        assert np.isfinite(row[key]), key
    assert 0 < row["l0"] <= K and 0 <= row["dead_fraction"] < 1

    model = raw_model(folders[family])
    ids = torch.as_tensor(np.load(held_out))
    x = hooked_acts(model, hook, side, ids).reshape(-1, sae.d_in)
    with torch.no_grad():
        direct = fvu(x, sae.decode(sae.encode(x)))
    assert row["fvu"] == pytest.approx(direct, rel=1e-4, abs=1e-6)
    assert 0 < row["fvu"] < 0.9, "2,048 tokens of training explain part of the variance"

    if family == "bert":
        assert all(row[key] is None for key in LOSSES), "an encoder has no next-token loss"
        return
    for key in LOSSES:
        assert np.isfinite(row[key]), key
    with torch.no_grad():
        clean = float(model(input_ids=ids, labels=ids).loss)
    assert row["loss_clean"] == pytest.approx(clean, rel=1e-4)
    assert row["loss_increase"] == pytest.approx(row["loss_spliced"] - row["loss_clean"], abs=1e-6)


# --- the feature store and the explorer at every site ----------------------------------------------------------

STORE = saekit.StoreConfig(n_top=5, n_per_interval=2, n_bins=128, n_logits=5, batch_size=8)
FINAL_NORMS = {"gpt2": "transformer.ln_f", "gpt_neox": "gpt_neox.final_layer_norm", "phi": "model.final_layernorm"}


@torch.no_grad()
def direct_logit_effects(model: torch.nn.Module, family: str, site: str, directions: torch.Tensor) -> torch.Tensor:
    """Median-centred effects [n, vocab] of decoder rows on the logits through the final norm's linear part, from
    the raw model's weights: the MLP's output projection for its neurons, nothing for a residual-width site."""
    resid = directions.double()
    if site == "mlp_act":
        proj = model.get_submodule(expected_site(family, site)[0])
        W = proj.weight.double()  # Conv1D [in, out]; Linear [out, in]
        resid = resid @ (W if isinstance(proj, T.pytorch_utils.Conv1D) else W.T)
    norm = model.get_submodule(FINAL_NORMS.get(family, "model.norm"))
    if isinstance(norm, torch.nn.LayerNorm):
        resid = resid - resid.mean(-1, keepdim=True)
    gamma = norm.weight.double() + (1.0 if family.startswith("gemma") else 0.0)  # Gemma's RMSNorm scales by 1 + w
    effects = resid * gamma @ model.get_output_embeddings().weight.double().T
    return effects - effects.quantile(0.5, dim=-1, keepdim=True)  # the middle two's mean for an even vocabulary


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("family", FAMILIES)
def test_feature_store_at_every_site(family, site, folders, held_out, trained):
    sae = saekit.load_sae(trained(family, site)[0])
    ids = np.load(held_out)
    store = saekit.build_feature_store(saekit.load_model(folders[family]), ids, sae, config=STORE, progress=False)
    assert (store.meta["hook"], store.meta["side"], store.meta["n_tokens"]) == (*expected_site(family, site), ids.size)

    model = raw_model(folders[family])
    x = hooked_acts(model, *expected_site(family, site), torch.as_tensor(ids)).reshape(-1, sae.d_in)
    with torch.no_grad():
        f = sae.encode(x)
    np.testing.assert_array_equal(store.features["n_fires"], (f > 0).sum(0).numpy())
    np.testing.assert_allclose(store.features["max_activation"], f.max(0).values.clamp_min(0).numpy(), rtol=1e-5)
    best = int(f.max(0).values.argmax())
    assert store.top_examples(best)["token_id"].iloc[0] == ids.reshape(-1)[int(f[:, best].argmax())]

    if family == "bert":
        assert store.logits.empty and "no output embedding" in store.meta["logit_effects_note"]
        return
    alive = np.flatnonzero(store.features["n_fires"].to_numpy())[:4]
    expected = direct_logit_effects(model, family, site, sae.W_dec.detach()[alive])
    for row, feature in enumerate(alive):
        boosts = store.logit_effects(int(feature)).query("direction == 'boost'")
        top = expected[row].topk(len(boosts))
        np.testing.assert_allclose(boosts["logit"], top.values.numpy(), rtol=1e-3, atol=1e-5)
        assert int(boosts["token_id"].iloc[0]) == int(top.indices[0])


# --- steering: pin a feature, next to the same edit made with a plain torch hook --------------------------------

PROMPT = [5, 17, 33, 9, 40, 2, 77]


def edited(module: torch.nn.Module, path: str, side: str, edit):
    """A handle that replaces the activations at `path` (`side`) by `edit(acts)` in every forward."""
    target = module.get_submodule(path)
    if side == "output":
        def after(m, args, out):
            return edit(out) if isinstance(out, torch.Tensor) else (edit(out[0]), *out[1:])
        return target.register_forward_hook(after)

    def before(m, args, kwargs):
        if args:
            return (edit(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}
    return target.register_forward_pre_hook(before, with_kwargs=True)


def pin(sae, feature: int, value: float):
    """x + (value − f_i(x)) · W_dec[i] at every position."""
    def edit(x: torch.Tensor) -> torch.Tensor:
        f = sae.encode(x.reshape(-1, x.shape[-1]))[:, feature]
        return x + ((value - f)[:, None] * sae.W_dec[feature]).reshape(x.shape)
    return edit


@torch.no_grad()
def greedy(module: torch.nn.Module, ids: list[int], n: int) -> list[int]:
    """n greedy tokens, each from a full forward over everything so far (no cache)."""
    ids = list(ids)
    for _ in range(n):
        ids.append(int(module(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("family", LMS)
def test_pinning_a_feature_steers_as_a_plain_hook_does(family, site, folders, held_out, trained):
    from saekit.analysis.steering import FeatureEdit, next_token_shift, steer_generate

    sae = saekit.load_sae(trained(family, site)[0])
    model, raw = saekit.load_model(folders[family]), raw_model(folders[family])
    path, side = expected_site(family, site)
    x = hooked_acts(raw, path, side, torch.as_tensor(np.load(held_out))).reshape(-1, sae.d_in)
    with torch.no_grad():
        peak = sae.encode(x).max(0).values
    feature, value = int(peak.argmax()), 10 * float(peak.max())
    edit = FeatureEdit(feature, value, "pin")

    shift = next_token_shift(model, sae, PROMPT, edit, k=5)
    with torch.no_grad():
        before = raw(input_ids=torch.tensor([PROMPT])).logits[0, -1].softmax(-1)
        handle = edited(raw, path, side, pin(sae, feature, value))
        after = raw(input_ids=torch.tensor([PROMPT])).logits[0, -1].softmax(-1)
        handle.remove()
    chosen = torch.as_tensor(shift["token_id"].to_numpy())
    np.testing.assert_allclose(shift["p_before"], before[chosen].numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(shift["p_after"], after[chosen].numpy(), rtol=1e-3, atol=1e-6)
    moved = float((after.log() - before.log()).abs().max())
    assert moved > 1e-3, "pinning a feature at 10x its peak moves the next-token distribution (nearly flat here)"

    result = steer_generate(model, sae, PROMPT, edit, max_new_tokens=4)
    assert result.clean_ids.tolist() == greedy(raw, PROMPT, 4)
    handle = edited(raw, path, side, pin(sae, feature, value))
    try:
        assert result.steered_ids.tolist() == greedy(raw, PROMPT, 4)
    finally:
        handle.remove()


# --- the explorer and the steering widget, once per family -----------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_explorer_and_steering_widget(family, folders, held_out, trained):
    from saekit.analysis.browsing import explorer_data
    from saekit.widgets import FeatureExplorer, SteeringView

    sae = saekit.load_sae(trained(family, "mlp_act")[0])
    data = explorer_data(sae, folders[family], np.load(held_out), config=STORE, progress=False)
    assert data.neurons.n_features == INNER and data.features.n_features == FEATURES
    np.testing.assert_array_equal(data.neurons.token_ids, data.features.token_ids)
    explorer = FeatureExplorer(data.features, sae, data.model, neurons=data.neurons)
    feature = int(data.features.features["max_activation"].idxmax())
    explorer.show(feature)
    assert f"{data.features.features['max_activation'].iloc[feature]:.3g}"[:4] in explorer.card.summary.value
    explorer.show(0, basis="neurons")
    view = SteeringView(data.model, sae, store=data.features, feature=feature, prompt="The quick", max_new_tokens=2)
    if family == "bert":
        assert "no output embedding" in explorer.card.logits.value
        assert view.button.disabled and "no language-model head" in view.output.value
        with pytest.raises(saekit.InputError, match="no language-model head"):
            view.run()
        return
    explorer.show(feature, basis="features")
    boost = data.features.logit_effects(feature).query("direction == 'boost'")["logit"].iloc[0]
    assert f"{boost:+.2f}" in explorer.card.logits.value
    run = view.run()
    assert len(run.result.clean_ids) == len(run.result.steered_ids) == len(run.result.clean_ids[:-2]) + 2
    assert not run.shift.empty and np.isfinite(run.shift["delta"]).all()
