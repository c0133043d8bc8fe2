"""The nnsight seam, checked against plain PyTorch forward hooks on the same checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertModel, GPT2LMHeadModel

from saekit.activations import nnsight_api as api
from saekit.errors import InputError

from helpers import HOOK


def _batch(seed: int = 0, batch: int = 3, seq: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 300, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, -3:] = 0  # a right-padded row
    return ids, mask


def _reference(folder: Path) -> GPT2LMHeadModel:
    return GPT2LMHeadModel.from_pretrained(folder).eval()


def test_load_model_from_folder(tiny_lm):
    module = api.underlying_module(tiny_lm)
    assert not module.training
    assert api.has_lm_head(tiny_lm)
    assert api.get_tokenizer(tiny_lm) is not None
    assert HOOK in api.module_paths(tiny_lm)


@pytest.mark.parametrize("side", ["output", "input"])
def test_get_activations_match_plain_forward_hook(tiny_lm, tiny_lm_dir, side):
    ids, mask = _batch()
    ref_model = _reference(tiny_lm_dir)
    seen = {}
    act_module = ref_model.get_submodule(HOOK)
    handle = act_module.register_forward_hook(lambda m, args, out: seen.update(output=out, input=args[0]))
    with torch.no_grad():
        ref_model(input_ids=ids, attention_mask=mask)
    handle.remove()

    acts = api.get_activations(tiny_lm, ids, mask, HOOK, side=side)
    assert acts.shape == (3, 10, 128)
    torch.testing.assert_close(acts, seen[side])


def test_get_activations_stops_after_the_hook(tiny_lm):
    calls = []
    handle = api.underlying_module(tiny_lm).lm_head.register_forward_hook(lambda *a: calls.append(1))
    try:
        api.get_activations(tiny_lm, *_batch(), HOOK)
        assert calls == []
        api.activations_and_logits(tiny_lm, *_batch(), HOOK)
        assert calls == [1]
    finally:
        handle.remove()


def test_spliced_logits_match_plain_forward_hook(tiny_lm, tiny_lm_dir):
    ids, mask = _batch(seed=1)

    def replace(acts):
        return acts * 0.5 + 1.0

    ref_model = _reference(tiny_lm_dir)
    handle = ref_model.get_submodule(HOOK).register_forward_hook(lambda m, args, out: replace(out))
    with torch.no_grad():
        expected = ref_model(input_ids=ids, attention_mask=mask).logits
    handle.remove()
    with torch.no_grad():
        clean = ref_model(input_ids=ids, attention_mask=mask).logits

    logits = api.spliced_logits(tiny_lm, ids, mask, HOOK, replace)
    torch.testing.assert_close(logits, expected)
    assert not torch.allclose(logits, clean)
    # the splice does not leak into later traces
    _, after = api.activations_and_logits(tiny_lm, ids, mask, HOOK)
    torch.testing.assert_close(after, clean)


def test_unknown_hook_lists_close_matches(tiny_lm):
    with pytest.raises(api.UnknownHookError) as info:
        api.get_activations(tiny_lm, *_batch(), "transformer.h.0.mlp.actt")
    assert HOOK in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(api.UnknownHookError, match="transformer.h.0"):
        api.check_hook(tiny_lm, "transformer.h.1.mlp.act")


def test_encoder_model_without_lm_head(tiny_bert_dir):
    model = api.load_model(tiny_bert_dir)
    assert not api.has_lm_head(model)
    ids, mask = _batch()
    # BertOutput is a module named "output", which nnsight serves under another name
    acts = api.get_activations(model, ids, mask, "encoder.layer.0.output")
    ref = BertModel.from_pretrained(tiny_bert_dir).eval()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state  # the layer's output is the last
    torch.testing.assert_close(acts, expected)
    assert api.get_activations(model, ids, mask, "encoder.layer.0.intermediate").shape == (3, 10, 64)


def test_plain_torch_module():
    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 8)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 50))

        def forward(self, input_ids):
            return self.mlp(self.embed(input_ids))

    torch.manual_seed(0)
    toy = Toy().train()
    model = api.load_model(toy)
    assert not toy.training  # always eval mode
    assert not api.has_lm_head(model)
    ids = torch.randint(0, 50, (2, 5))
    acts = api.get_activations(model, ids, torch.ones_like(ids), "mlp.1")
    torch.testing.assert_close(acts, torch.relu(toy.mlp[0](toy.embed(ids))))
    out = api.spliced_logits(model, ids, None, "mlp.1", torch.zeros_like)
    torch.testing.assert_close(out, toy.mlp[2].bias.expand(2, 5, 50))


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(api.ModelNotFoundError, match="does not exist"):
        api.load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(api.ModelNotFoundError, match="config.json"):
        api.load_model(tmp_path / "empty")


# --- hardened inputs ------------------------------------------------------------------------------


def _remote_code_model(folder: Path, marker: Path) -> Path:
    """A GPT-2 folder whose config asks for its own code (auto_map, unknown model_type); the code writes `marker`."""
    from helpers import build_tiny_gpt2

    build_tiny_gpt2(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="saekit_custom", architectures=["CustomModel"],
               auto_map={"AutoConfig": "custom.CustomConfig", "AutoModel": "custom.CustomModel",
                         "AutoModelForCausalLM": "custom.CustomModel"})
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "custom.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('executed')\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "class CustomConfig(GPT2Config):\n    model_type = 'saekit_custom'\n"
        "class CustomModel(GPT2LMHeadModel):\n    config_class = CustomConfig\n"
    )
    return folder


def test_remote_code_is_refused_unless_trusted(tmp_path):
    marker = tmp_path / "marker.txt"
    folder = _remote_code_model(tmp_path / "custom_model", marker)
    with pytest.raises(api.RemoteCodeError, match="--trust-remote-code") as info:
        api.load_model(folder)
    assert isinstance(info.value, InputError) and "trust_remote_code=True" in str(info.value)
    assert not marker.exists()
    model = api.load_model(folder, trust_remote_code=True)  # the flag reaches transformers: the code runs
    assert marker.read_text() == "executed"
    assert type(api.underlying_module(model)).__name__ == "CustomModel"


def _all_entry_points(model, ids):
    mask = torch.ones_like(ids)
    yield lambda: api.get_activations(model, ids, mask, HOOK)
    yield lambda: api.activations_and_logits(model, ids, mask, HOOK)
    yield lambda: api.spliced_logits(model, ids, mask, HOOK, lambda a: a)
    yield lambda: api.clean_logits(model, ids, mask)
    yield lambda: api.generate(model, ids, mask, max_new_tokens=1)


@pytest.mark.parametrize("bad", [-1, "vocab"])
def test_out_of_vocabulary_ids_are_refused_everywhere(tiny_lm, bad):
    vocab = GPT2LMHeadModel.config_class.from_pretrained(tiny_lm.repo_id).vocab_size
    assert api.vocab_size(tiny_lm) == vocab
    bad_id = vocab if bad == "vocab" else bad
    ids = torch.tensor([[1, 2, bad_id, 3]])
    for call in _all_entry_points(tiny_lm, ids):
        with pytest.raises(InputError, match=f"token id {bad_id} is outside .* {vocab} ids") as info:
            call()
        assert "tokenizer" in str(info.value)
    ok = torch.tensor([[0, 1, vocab - 1]])
    assert api.clean_logits(tiny_lm, ok, None).shape == (1, 3, vocab)


def test_vocab_size_of_a_plain_module_without_embeddings_is_unknown():
    model = api.load_model(torch.nn.Linear(4, 4))
    assert api.vocab_size(model) is None
    api.check_token_ids(model, torch.tensor([[10**6]]))  # nothing to check against
    with pytest.raises(InputError, match="token id -2"):
        api.check_token_ids(model, torch.tensor([[-2]]))


def test_unknown_hook_and_bad_side_are_input_errors(tiny_lm):
    assert issubclass(api.UnknownHookError, InputError)
    with pytest.raises(InputError, match="side"):
        api.get_activations(tiny_lm, *_batch(), HOOK, side="middle")
    with pytest.raises(InputError, match="hub name"):
        api.load_model(12345)


def test_pickle_only_weights_are_refused_never_unpickled(tmp_path, monkeypatch):
    """A folder whose weights are only pytorch_model.bin is refused before torch.load could run."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=32))
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(api.PickleWeightsError, match="saekit never unpickles"):
        api.load_model(tmp_path)
    assert loads == []
