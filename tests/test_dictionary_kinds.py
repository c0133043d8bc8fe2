"""Transcoders (d_out: read one hook, reconstruct another) and crosscoders (n_models: several models' activations
side by side), for every architecture: losses and gradients against plain autograd, the trainer's scale fold-back,
resampling, the decoder refit, save/load, the activation source and the evaluation against torch forward hooks."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import saekit
from saekit.activations.source import ActivationConfig, ActivationSource
from saekit.evaluation import evaluate
from saekit.formats import load_sae
from saekit.saes import LossContext
from saekit.saes.provenance import Provenance
from saekit.training import TrainConfig, train
from saekit.training.decoder_refit import refit_decoder
from saekit.training.resampling import resample_dead

from helpers import ARCHS, TEXTS, build_tiny_gpt2, build_tokenizer, make_sae, with_k

D_IN, D_OUT, D_SAE = 16, 12, 48
LN_2, MLP, MLP_ACT = "transformer.h.0.ln_2", "transformer.h.0.mlp", "transformer.h.0.mlp.act"


def transcoder(arch: str, **kw) -> saekit.SAE:
    return make_sae(arch, D_IN, D_SAE, d_out=D_OUT, **kw)


def crosscoder(arch: str, **kw) -> saekit.SAE:
    return make_sae(arch, 2 * D_IN, D_SAE, n_models=2, **kw)


def plain_loss(sae: saekit.SAE, x, y, l1: float, weighted: bool):
    """mse + λ·L1 written out with plain torch ops on the SAE's weights: ReLU or TopK, no b_dec subtracted for a
    transcoder, the crosscoder's L1 weighted by Σ_m ‖W_dec_i^m‖."""
    x_bar = x - sae.b_dec if sae.apply_b_dec_to_input else x
    pre = x_bar @ sae.W_enc + sae.b_enc
    if sae.arch == "topk":
        top = pre.topk(sae.k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    else:
        f = pre.relu()
    y_hat = f @ sae.W_dec + sae.b_dec
    mse = (y_hat - y).pow(2).sum(-1).mean()
    blocks = sae.W_dec.view(D_SAE, sae.n_models, -1)
    norms = torch.stack([blocks[:, m].norm(dim=1) for m in range(sae.n_models)]).sum(0)
    sparsity = (f * norms).sum(-1).mean() if weighted else f.sum(-1).mean()
    return mse + l1 * sparsity, mse, sparsity


def grads_of(sae, total):
    sae.zero_grad(set_to_none=True)
    total.backward()
    return {n: p.grad.clone() for n, p in sae.named_parameters()}


@pytest.mark.parametrize("path", ["reference", "dense", "sparse"])
@pytest.mark.parametrize("kind", ["transcoder", "crosscoder"])
@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_losses_and_gradients_match_plain_autograd(arch, kind, path):
    torch.manual_seed(0)
    weighted = arch == "relu"
    sae = transcoder(arch) if kind == "transcoder" else crosscoder(arch)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 1.5, D_SAE)[:, None])
    x = torch.randn(64, sae.d_in) * 2
    y = torch.randn(64, D_OUT) if kind == "transcoder" else x
    ctx = LossContext(sparsity_coefficient=0.3 if arch == "relu" else 0.0, l1_weighted_by_decoder_norm=weighted)
    total, mse, sparsity = plain_loss(sae, x, y, ctx.sparsity_coefficient, weighted)
    expected = grads_of(sae, total)
    out = sae.reference_loss(x, ctx, y) if path == "reference" else sae.loss(x, ctx, sparse=path == "sparse", target=y)
    torch.testing.assert_close(out.mse, mse, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.sparsity if arch == "relu" else sparsity * 0, sparsity * (arch == "relu"),
                               rtol=1e-5, atol=1e-5)
    got = grads_of(sae, out.total)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)
    assert out.x_hat.shape == y.shape


@pytest.mark.parametrize("kind", ["transcoder", "crosscoder"])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_path_of_every_architecture_agrees_with_its_reference(arch, kind):
    """Dense and sparse paths give the reference's loss and gradients for both kinds (thresholds and AuxK included)."""
    torch.manual_seed(1)
    x = torch.randn(64, D_IN if kind == "transcoder" else 2 * D_IN) * 2
    y = torch.randn(64, D_OUT) * 3 if kind == "transcoder" else None
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::3] = True
    ctx = LossContext(sparsity_coefficient=0.3, l1_weighted_by_decoder_norm=True, dead=dead, aux_coefficient=0.5,
                      aux_k=4)
    results = []
    for path in ("reference", "dense", "sparse"):
        torch.manual_seed(2)  # make_sae draws the biases from the global RNG: the same SAE for every path
        kw = {"bandwidth": 0.2} if arch == "jumprelu" else {}
        sae = transcoder(arch, **kw) if kind == "transcoder" else crosscoder(arch, **kw)
        out = sae.reference_loss(x, ctx, y) if path == "reference" else \
            sae.loss(x, ctx, sparse=path == "sparse", target=y)
        results.append((out, grads_of(sae, out.total)))
    (ref, ref_grads), others = results[0], results[1:]
    for out, grads in others:
        for part in ("total", "mse", "sparsity", "auxiliary", "x_hat"):
            torch.testing.assert_close(getattr(out, part), getattr(ref, part), rtol=1e-5, atol=1e-5, msg=part)
        for name in ref_grads:
            torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_a_transcoder_has_no_pre_encoder_bias_and_a_decoder_of_its_own_width():
    sae = transcoder("topk")
    assert (sae.W_enc.shape, sae.W_dec.shape, sae.b_dec.shape) == ((D_IN, D_SAE), (D_SAE, D_OUT), (D_OUT,))
    assert not sae.apply_b_dec_to_input and sae.batch_width == D_IN + D_OUT
    with pytest.raises(saekit.errors.InputError, match="b_dec"):
        saekit.SAE.create("relu", D_IN, D_SAE, d_out=D_OUT, apply_b_dec_to_input=True)
    with pytest.raises(saekit.errors.InputError, match="n_models"):
        saekit.SAE.create("relu", 15, D_SAE, n_models=2)
    with pytest.raises(saekit.errors.InputError, match="not both"):
        saekit.SAE.create("relu", 16, D_SAE, n_models=2, d_out=4)


def sparse_pairs(n: int, seed: int = 0, target_scale: float = 1.0):
    """[n, D_IN + D_OUT] rows [x, y]: x and y written by the same sparse codes through two random dictionaries."""
    g = torch.Generator().manual_seed(seed)
    d_in, d_out = torch.randn(24, D_IN, generator=g), torch.randn(24, D_OUT, generator=g)
    codes = torch.rand(n, 24, generator=g) * (torch.rand(n, 24, generator=g) < 0.1)
    return torch.cat([codes @ d_in + 0.5, (codes @ d_out - 1.0) * target_scale], dim=1)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_transcoder_learns_a_map_and_works_in_the_targets_own_units(arch):
    """The trainer scales input and target each to its own norm and folds both back: trained on targets 300x
    larger, the transcoder is the same map scaled, to rounding, and explains the target on the raw data."""
    fvus = []
    for target_scale in (1.0, 300.0):
        data = sparse_pairs(40_960, target_scale=target_scale)
        sae = saekit.SAE.create(arch, D_IN, 64, d_out=D_OUT, seed=0, **with_k(arch, 4))
        cfg = TrainConfig(total_tokens=len(data), lr=3e-3, l1_coefficient=1.0, l0_coefficient=0.1, resample_at=())
        run = train(sae, data.split(256), cfg, progress=False)
        x, y = data[:4096, :D_IN], data[:4096, D_IN:]
        with torch.no_grad():
            fvus.append(float((sae(x) - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum()))
            untrained = saekit.SAE.create(arch, D_IN, 64, d_out=D_OUT, seed=0, **with_k(arch, 4))
            before = float((untrained(x) - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
        assert fvus[-1] < 0.75 and fvus[-1] < 0.5 * before, f"{arch}: fvu {fvus[-1]:.3f} (untrained {before:.3f})"
        assert run.history["fvu"].iloc[-1] == pytest.approx(fvus[-1], abs=0.1)  # batchtopk trains on batch top-k
    assert run.summary["target_scale"] != run.summary["activation_scale"]
    assert fvus[1] == pytest.approx(fvus[0], abs=2e-3)


def test_resampling_a_transcoder_reads_the_input_and_writes_the_target():
    sae = transcoder("relu")
    optimizer = torch.optim.Adam(sae.parameters())
    pool = sparse_pairs(512, seed=3)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[:5] = True
    ids = resample_dead(sae, optimizer, pool, dead, torch.Generator().manual_seed(0))
    x, y = pool[:, :D_IN], pool[:, D_IN:]
    for i in ids.tolist():
        dec = sae.W_dec[i] / sae.W_dec[i].norm()
        row = int(((y / y.norm(dim=1, keepdim=True)) @ dec).argmax())  # the pool row it came from
        torch.testing.assert_close(dec, y[row] / y[row].norm())
        enc = sae.W_enc[:, i] / sae.W_enc[:, i].norm()
        torch.testing.assert_close(enc, x[row] / x[row].norm())


def test_the_decoder_refit_of_a_transcoder_is_least_squares_on_the_target():
    sae = transcoder("relu")
    data = sparse_pairs(2048, seed=5)
    refit_decoder(sae, iter(data.split(512)), len(data), ridge=0.0)
    x, y = data[:, :D_IN], data[:, D_IN:]
    with torch.no_grad():
        f = sae.encode(x).double()
    fired = (f > 0).any(0)
    design = torch.cat([f[:, fired], torch.ones(len(f), 1, dtype=torch.float64)], 1).numpy()
    solution = np.linalg.lstsq(design, y.double().numpy(), rcond=None)[0]
    np.testing.assert_allclose(sae.W_dec[fired].detach().numpy(), solution[:-1], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(sae.b_dec.detach().numpy(), solution[-1], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kind", ["transcoder", "crosscoder"])
@pytest.mark.parametrize("arch", ARCHS)
def test_save_and_load_keep_the_kind_and_the_outputs(arch, kind, tmp_path):
    sae = transcoder(arch) if kind == "transcoder" else crosscoder(arch)
    sae.provenance = Provenance(hook=LN_2, target_hook=MLP) if kind == "transcoder" else \
        Provenance(hook=MLP_ACT, models=("a", "b"))
    sae.save(tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert (loaded.d_in, loaded.d_out, loaded.n_models, loaded.is_transcoder) == \
        (sae.d_in, sae.d_out, sae.n_models, sae.is_transcoder)
    assert loaded.provenance == sae.provenance
    x = torch.randn(32, sae.d_in) * 2
    torch.testing.assert_close(loaded(x), sae(x))
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    expected = {"relu": "transcoder", "jumprelu": "jumprelu_transcoder"}.get(arch, sae.saelens_architecture)
    assert cfg["architecture"] == (expected if kind == "transcoder" else sae.saelens_architecture)
    if kind == "transcoder":  # what SAELens's TranscoderConfig reads (it refuses apply_b_dec_to_input)
        assert cfg["d_out"] == D_OUT and cfg["apply_b_dec_to_input"] is False
        assert cfg["metadata"]["hook_name"] == LN_2 and cfg["metadata"]["hook_name_out"] == MLP
    else:
        assert "d_out" not in cfg and cfg["saekit"]["n_models"] == 2


def test_a_saelens_transcoder_folder_loads_and_computes_its_map(tmp_path):
    """A folder laid out as SAELens's `Transcoder` saves it: ReLU(x W_enc + b_enc) W_dec + b_dec, no input bias."""
    g = torch.Generator().manual_seed(0)
    w = {"W_enc": torch.randn(D_IN, D_SAE, generator=g), "b_enc": torch.randn(D_SAE, generator=g),
         "W_dec": torch.randn(D_SAE, D_OUT, generator=g), "b_dec": torch.randn(D_OUT, generator=g)}
    folder = tmp_path / "tc"
    folder.mkdir()
    save_file(w, folder / "sae_weights.safetensors")
    (folder / "cfg.json").write_text(json.dumps({
        "architecture": "transcoder", "d_in": D_IN, "d_sae": D_SAE, "d_out": D_OUT, "dtype": "float32",
        "apply_b_dec_to_input": False, "normalize_activations": "none",
        "metadata": {"hook_name": "blocks.0.ln2.hook_normalized"}}))
    sae = load_sae(folder)
    x = torch.randn(8, D_IN, generator=g)
    torch.testing.assert_close(sae(x), F.relu(x @ w["W_enc"] + w["b_enc"]) @ w["W_dec"] + w["b_dec"])


# --- reading models ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    return build_tiny_gpt2(root / "a", seed=0), build_tiny_gpt2(root / "b", seed=1)


def hooked_outputs(folder: Path, ids: torch.Tensor, modules: list[str]) -> dict[str, torch.Tensor]:
    """Module outputs of one forward of the bare transformers model, through torch forward hooks (no nnsight)."""
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    out, handles = {}, []
    for name in modules:
        module = model.get_submodule(name)
        handles.append(module.register_forward_hook(lambda m, i, o, name=name: out.__setitem__(name, o.detach())))
    with torch.no_grad():
        model(input_ids=ids)
    for h in handles:
        h.remove()
    return out


def test_the_source_reads_input_and_target_or_every_model_side_by_side(two_models):
    a, b = two_models
    ids = torch.tensor(build_tokenizer()(TEXTS[0])["input_ids"][:16])[None]
    cfg = ActivationConfig(hook=LN_2, target_hook=MLP, context_len=16, batch_size=8, repeat=False,
                           exclude_special_tokens=False)
    src = ActivationSource(str(a), ids, cfg, progress=False)
    assert (src.d_in, src.d_out) == (32, 32)
    rows = next(src.activations())
    hooked = hooked_outputs(a, ids, [LN_2, MLP])
    torch.testing.assert_close(rows, torch.cat([hooked[LN_2][0], hooked[MLP][0]], dim=1))
    assert src.provenance().target_hook == MLP

    cfg = ActivationConfig(hook=MLP_ACT, context_len=16, batch_size=8, repeat=False, exclude_special_tokens=False)
    src = ActivationSource([str(a), str(b)], ids, cfg, progress=False)
    assert (src.d_in, src.d_out) == (256, None)
    rows = next(src.activations())
    expected = torch.cat([hooked_outputs(m, ids, [MLP_ACT])[MLP_ACT][0] for m in (a, b)], dim=1)
    torch.testing.assert_close(rows, expected)
    assert src.provenance().models == (str(a), str(b))


def test_a_crosscoder_refuses_models_with_other_tokenizers(two_models, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    other = tmp_path / "other"
    tokenizer = build_tokenizer(TEXTS[:3], vocab_size=290)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64,
                               vocab_size=len(tokenizer))).save_pretrained(other)
    tokenizer.save_pretrained(other)
    with pytest.raises(saekit.errors.InputError, match="different tokenizers"):
        ActivationSource([str(two_models[0]), str(other)], TEXTS, ActivationConfig(hook=MLP_ACT), progress=False)


def spliced_loss(folder: Path, ids: torch.Tensor, module: str, replace) -> float:
    """Mean next-token loss with `module`'s output replaced by replace(output), through a torch forward hook."""
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    handle = model.get_submodule(module).register_forward_hook(lambda m, i, o: replace(o))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    handle.remove()
    return float(F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()))


def test_evaluation_splices_a_transcoder_at_its_target_and_a_crosscoder_into_each_model(two_models):
    a, b = two_models
    ids = torch.tensor(build_tokenizer()(" ".join(TEXTS))["input_ids"][:48]).view(3, 16)
    tc = saekit.SAE.create("topk", 32, 64, d_out=32, k=8, seed=0)
    tc.provenance = Provenance(hook=LN_2, target_hook=MLP, exclude_special_tokens=False)
    result = evaluate(tc, str(a), ids, context_len=16, progress=False)
    hooked = hooked_outputs(a, ids, [LN_2, MLP])
    with torch.no_grad():
        y_hat = tc(hooked[LN_2])
    assert result.loss_spliced == pytest.approx(spliced_loss(a, ids, MLP, lambda o: y_hat), rel=1e-5)
    y = hooked[MLP].flatten(0, 1)
    fvu = float((y_hat.flatten(0, 1) - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
    assert result.fvu == pytest.approx(fvu, rel=1e-4)

    cc = saekit.SAE.create("relu", 256, 64, n_models=2, seed=0)
    cc.provenance = Provenance(hook=MLP_ACT, models=(str(a), str(b)), exclude_special_tokens=False)
    result = evaluate(cc, None, ids, context_len=16, progress=False)
    acts = [hooked_outputs(m, ids, [MLP_ACT])[MLP_ACT] for m in (a, b)]
    with torch.no_grad():
        x_hat = cc(torch.cat(acts, dim=-1))
    assert list(result.per_model) == [str(a), str(b)]
    for m, (name, folder) in enumerate(zip(result.per_model, (a, b))):
        block = x_hat[..., m * 128 : (m + 1) * 128]
        expected = spliced_loss(folder, ids, MLP_ACT, lambda o, block=block: block)
        assert result.per_model[name].loss_spliced == pytest.approx(expected, rel=1e-5)
    means = [np.mean([getattr(r, k) for r in result.per_model.values()]) for k in ("loss_clean", "loss_spliced")]
    assert result.loss_increase == pytest.approx(means[1] - means[0], rel=1e-6)
    assert set(result.to_dict()["per_model"]) == {str(a), str(b)}


# --- the command line ---------------------------------------------------------------------------------------


def test_the_cli_trains_and_evaluates_a_transcoder_and_a_crosscoder(two_models, tmp_path, capsys):
    from saekit.cli import main

    a, b = two_models
    text = tmp_path / "text"
    text.mkdir()
    for i, t in enumerate(TEXTS * 3):
        (text / f"{i}.txt").write_text(t)
    common = ["--arch", "topk", "--k", "4", "--features", "64", "--tokens", "2048", "--context-len", "16",
              "--text", str(text), "--quiet"]
    assert main(["train", "--model", str(a), "--hook", LN_2, "--target-hook", MLP, *common, "--out",
                 str(tmp_path / "tc")]) == 0
    assert "batch size 256 (chosen for 2,048 tokens" in capsys.readouterr().out
    assert main(["train", "--model", str(a), "--model", str(b), "--hook", MLP_ACT, *common, "--out",
                 str(tmp_path / "cc")]) == 0
    capsys.readouterr()
    rows = {}
    for name in ("tc", "cc"):
        assert main(["eval", str(tmp_path / name), "--tokens", "256", "--json", "--quiet"]) == 0
        rows[name] = json.loads(capsys.readouterr().out)
    assert rows["tc"]["kind"] == "transcoder" and rows["tc"]["target_hook"] == MLP
    assert rows["cc"]["kind"] == "crosscoder" and rows["cc"]["model"] == [str(a), str(b)]
    assert set(rows["cc"]["per_model"]) == {str(a), str(b)}
    assert all(r["loss_increase"] is not None for r in rows["cc"]["per_model"].values())
    tc = load_sae(tmp_path / "tc")
    assert tc.is_transcoder and tc.provenance.target_hook == MLP and tc.d_out == 32


@pytest.mark.parametrize("extra,message", [
    (["--model", "B", "--target-hook", MLP], "reads one model"),
    (["--model", "A"], "the same model twice"),
    (["--target-hook", MLP, "--finetune-tokens", "100"], "do not take it yet"),
])
def test_the_cli_refuses_kinds_it_cannot_build(two_models, tmp_path, capsys, extra, message):
    from saekit.cli import main

    a, b = two_models
    extra = [str(b) if e == "B" else str(a) if e == "A" else e for e in extra]
    (tmp_path / "one.txt").write_text(TEXTS[0])
    code = main(["train", "--model", str(a), "--hook", LN_2, "--arch", "topk", "--k", "4", "--features", "8",
                 "--tokens", "512", "--text", str(tmp_path), "--out", str(tmp_path / "out"), *extra])
    assert code == 1 and message in capsys.readouterr().err


def test_a_crosscoder_feature_store_reads_every_model_and_the_explorer_opens_it(two_models):
    """The store's per-feature maxima equal a brute-force encoding of both models' hooked activations side by side;
    the explorer shows its features with every example's context activations (both models rerun)."""
    from saekit.analysis import StoreConfig, build_feature_store
    from saekit.analysis.browsing import context_values
    from saekit.widgets import FeatureExplorer

    a, b = two_models
    ids = torch.tensor(build_tokenizer()(" ".join(TEXTS))["input_ids"][:48]).view(3, 16)
    cc = saekit.SAE.create("relu", 256, 32, n_models=2, seed=0)
    cc.provenance = Provenance(hook=MLP_ACT, models=(str(a), str(b)), exclude_special_tokens=False)
    with pytest.raises(saekit.InputError, match="2 model"):
        build_feature_store(str(a), ids, cc, progress=False)
    store = build_feature_store([str(a), str(b)], ids, cc, config=StoreConfig(n_top=3, n_per_interval=1),
                                progress=False)
    acts = torch.cat([hooked_outputs(m, ids, [MLP_ACT])[MLP_ACT] for m in (a, b)], dim=-1).flatten(0, 1)
    with torch.no_grad():
        expected = cc.encode(acts).max(0).values
    table = store.feature_table().set_index("feature").sort_index()
    np.testing.assert_allclose(table["max_activation"].to_numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    feature = int(expected.argmax())
    examples = store.top_examples(feature, context=3)
    values = context_values(store, cc, [str(a), str(b)], feature, examples)
    assert values is not None and float(values[0].max()) == pytest.approx(float(expected[feature]), rel=1e-5)
    explorer = FeatureExplorer(store, cc, [str(a), str(b)], name="crosscoder")
    explorer.show(feature)


def test_the_viewers_data_opens_transcoders_and_crosscoders(two_models):
    """Explorer, map and splitting data for a family of each kind (sizes 16 and 32)."""
    from saekit.analysis.browsing import explorer_data, map_stores, splitting_data

    a, b = two_models
    ids = torch.tensor(build_tokenizer()(" ".join(TEXTS))["input_ids"][:48]).view(3, 16)
    transcoders = [saekit.SAE.create("topk", 32, n, d_out=32, k=4, seed=0) for n in (16, 32)]
    crosscoders = [saekit.SAE.create("topk", 256, n, n_models=2, k=4, seed=0) for n in (16, 32)]
    for sae in transcoders:
        sae.provenance = Provenance(hook=LN_2, target_hook=MLP, exclude_special_tokens=False)
    for sae in crosscoders:
        sae.provenance = Provenance(hook=MLP_ACT, models=(str(a), str(b)), exclude_special_tokens=False)
    for family, model in ((transcoders, str(a)), (crosscoders, [str(a), str(b)])):
        split = splitting_data(model, family, ids, progress=False)
        assert len(split.stores) == 2 and {"size_from", "size_to"} <= set(split.edges.columns)
        stores = map_stores({"small": family[0]}, model, ids)
        assert stores["small"].n_features == 16
        data = explorer_data(family[1], model, ids, progress=False)
        assert data.features.n_features == 32 and data.neurons.n_features == (32 if family is transcoders else 128)
