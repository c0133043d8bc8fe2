"""Provenance: typed, checked, and saved and read back whole (keys of later versions included)."""

import json

import pytest

import saekit
from saekit.saes.provenance import Provenance


def test_json_round_trip_keeps_every_field_and_unknown_keys():
    prov = Provenance(model="m", models=("a", "b"), hook="h", hook_side="input", target_hook=None, context_len=64,
                      text="t.npy", exclude_special_tokens=False, training={"tokens": 3}, extra={"later": 1})
    saved = json.loads(json.dumps(prov.to_json()))
    assert saved["later"] == 1 and saved["models"] == ["a", "b"] and "target_hook" not in saved
    assert Provenance.from_json(saved) == prov


def test_model_names_cover_one_model_and_a_crosscoders():
    assert Provenance(model="a").model_names == ("a",)
    assert Provenance(model="a", models=("a", "b")).model_names == ("a", "b")
    assert Provenance().model_names == ()


@pytest.mark.parametrize("bad", [dict(hook_side="middle"), dict(target_side="x"), dict(context_len=0)])
def test_bad_values_are_refused(bad):
    with pytest.raises(ValueError, match="Provenance"):
        Provenance(**bad)


def test_an_unreadable_saved_provenance_names_the_file(tmp_path):
    sae = saekit.SAE.create("relu", 8, 16, seed=0)
    sae.save(tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    cfg["saekit"]["hook_side"] = "sideways"
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(saekit.SAEFormatError, match="cfg.json.*provenance"):
        saekit.load_sae(tmp_path / "sae")
