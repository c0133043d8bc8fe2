"""dictionary_learning checkpoints (Marks, Karvonen, Mueller et al.): `ae.pt` (a state dict) + `config.json`.

`config.json`'s "trainer" block names the class (`dict_class`); the state dict uses that class's names, with
nn.Linear weights stored [out, in]. Each class maps exactly onto a saekit architecture at inference:

    AutoEncoder             relu: ReLU((x − bias) Eᵀ + b_E), decoder weight Dᵀ, b_dec = bias
    AutoEncoderNew          relu without the pre-encoder bias; b_dec = decoder.bias
    GatedAutoEncoder        jumprelu: 1[x̄ Eᵀ + b_gate > 0] · ReLU(x̄ Eᵀ e^r + b_mag) = JumpReLU_θ(pre) with
                            W_enc = Eᵀ e^r, b_enc = b_mag, θ = b_mag − e^r b_gate (weight sharing makes it exact)
    AutoEncoderTopK         topk (k from the state dict)
    BatchTopKSAE, MatryoshkaBatchTopKSAE   batchtopk with the learned global threshold
    JumpReluAutoEncoder     jumprelu without the pre-encoder bias

`ae.pt` is read with torch.load(weights_only=True) only: a file needing any other pickled object is refused.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from saekit.formats.common import SAEFormatError, assemble, positive_int
from saekit.saes import SAE
from saekit.saes.provenance import Provenance

WEIGHTS_FILE = "ae.pt"
CONFIG_FILE = "config.json"


def is_dictionary_learning_folder(folder: Path) -> bool:
    """Whether `folder` holds a dictionary_learning checkpoint."""
    return (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file()


class Converted(NamedTuple):
    """A checkpoint in saekit's terms: the architecture, its tensors and how it encodes."""

    arch: str
    tensors: dict[str, Tensor]
    apply_b_dec_to_input: bool
    hyper: dict[str, Any]


def _topk_like(arch: str, sd: dict[str, Tensor], k: int) -> Converted:
    tensors = {"W_enc": sd["encoder.weight"].T, "b_enc": sd["encoder.bias"], "W_dec": sd["decoder.weight"].T,
               "b_dec": sd["b_dec"]}
    return _with_threshold(arch, tensors, sd, k)


def _with_threshold(arch: str, tensors: dict[str, Tensor], sd: dict[str, Tensor], k: int) -> Converted:
    if arch == "batchtopk":  # one learned threshold for every feature (−1 where training never set it)
        tensors["threshold"] = sd["threshold"].reshape(()).expand(tensors["W_enc"].shape[1]).to(tensors["W_enc"])
    return Converted(arch, tensors, True, {"k": k})


def _gated(sd: dict[str, Tensor]) -> Converted:
    scale = sd["r_mag"].exp()  # [d_sae]
    tensors = {"W_enc": sd["encoder.weight"].T * scale, "b_enc": sd["mag_bias"],
               "W_dec": sd["decoder.weight"].T, "b_dec": sd["decoder_bias"],
               "threshold": sd["mag_bias"] - scale * sd["gate_bias"]}
    return Converted("jumprelu", tensors, True, {})


# each class's state-dict keys, as its nn.Module names them
KEYS = {
    "AutoEncoder": ("bias", "encoder.weight", "encoder.bias", "decoder.weight"),
    "AutoEncoderNew": ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"),
    "GatedAutoEncoder": ("decoder_bias", "encoder.weight", "r_mag", "gate_bias", "mag_bias", "decoder.weight"),
    "AutoEncoderTopK": ("k", "threshold", "encoder.weight", "encoder.bias", "decoder.weight", "b_dec"),
    "BatchTopKSAE": ("k", "threshold", "encoder.weight", "encoder.bias", "decoder.weight", "b_dec"),
    "MatryoshkaBatchTopKSAE": ("k", "threshold", "W_enc", "b_enc", "W_dec", "b_dec"),
    "JumpReluAutoEncoder": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
}


def convert(dict_class: str, sd: dict[str, Tensor], source: Path) -> Converted:
    """The saekit architecture and tensors for a `dict_class` state dict."""
    if dict_class not in KEYS:
        raise SAEFormatError(f"{source}: dictionary class {dict_class!r} has no saekit architecture; "
                             f"saekit reads {sorted(KEYS)}")
    missing = [key for key in KEYS[dict_class] if key not in sd]
    if missing:
        raise SAEFormatError(f"{source}: a {dict_class} state dict needs {list(KEYS[dict_class])}; "
                             f"{missing} are missing (found {sorted(sd)})")

    def k() -> int:
        value = sd["k"]
        if value.numel() != 1 or value.is_floating_point():
            raise SAEFormatError(f"{source}: 'k' must be one integer, not a {value.dtype} tensor of shape "
                                 f"{tuple(value.shape)}")
        return positive_int(source, "k", int(value.item()))

    if dict_class == "AutoEncoder":
        return Converted("relu", {"W_enc": sd["encoder.weight"].T, "b_enc": sd["encoder.bias"],
                                  "W_dec": sd["decoder.weight"].T, "b_dec": sd["bias"]}, True, {})
    if dict_class == "AutoEncoderNew":
        return Converted("relu", {"W_enc": sd["encoder.weight"].T, "b_enc": sd["encoder.bias"],
                                  "W_dec": sd["decoder.weight"].T, "b_dec": sd["decoder.bias"]}, False, {})
    if dict_class == "GatedAutoEncoder":
        return _gated(sd)
    if dict_class == "AutoEncoderTopK":
        return _topk_like("topk", sd, k())
    if dict_class == "BatchTopKSAE":
        return _topk_like("batchtopk", sd, k())
    if dict_class == "MatryoshkaBatchTopKSAE":
        tensors = {name: sd[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
        return _with_threshold("batchtopk", tensors, sd, k())
    tensors = {name: sd[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
    return Converted("jumprelu", tensors, False, {})


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """`ae.pt` as a state dict, unpickled by torch's weights-only loader and nothing else."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SAEFormatError(f"{path} is not a plain PyTorch state dict (read with weights_only=True, which never "
                             f"runs pickled code): {first}") from None
    if isinstance(sd, dict) and "ae" in sd and "optimizer" in sd:
        raise SAEFormatError(f"{path} is a mid-training backup (state dict under 'ae', biases in normalised units): "
                             "load the ae.pt dictionary_learning writes when training ends")
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in sd.items()):
        raise SAEFormatError(f"{path} must hold a state dict (names → tensors), not {type(sd).__name__}")
    return sd


def _trainer_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SAEFormatError(f"{path} is missing: dictionary_learning writes it beside ae.pt, and it names the "
                             "dictionary's class")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SAEFormatError(f"{path} is not valid JSON: {e}") from None
    trainer = cfg.get("trainer") if isinstance(cfg, dict) else None
    if not isinstance(trainer, dict) or not isinstance(trainer.get("dict_class"), str):
        raise SAEFormatError(f"{path} needs a 'trainer' object naming its 'dict_class', as dictionary_learning "
                             "writes it")
    return trainer


def load_dictionary_learning(path: Path, *, dtype: torch.dtype | None = None,
                             allow_nonfinite: bool = False) -> SAE:
    """The SAE of a dictionary_learning checkpoint folder."""
    folder = Path(path)
    trainer = _trainer_config(folder / CONFIG_FILE)
    weights = folder / WEIGHTS_FILE
    arch, tensors, apply_b_dec, hyper = convert(trainer["dict_class"], read_state_dict(weights), weights)
    if arch == "jumprelu" and isinstance(trainer.get("bandwidth"), (int, float)) and trainer["bandwidth"] > 0:
        hyper = {"bandwidth": float(trainer["bandwidth"])}
    lm = trainer.get("lm_name")
    site = {key: trainer[key] for key in ("layer", "submodule_name") if trainer.get(key) is not None}
    provenance = Provenance(model=lm if isinstance(lm, str) else None,
                            extra={"dictionary_learning": site} if site else {})
    return assemble(arch, tensors, source=weights, apply_b_dec_to_input=apply_b_dec, hyper=hyper, dtype=dtype,
                    allow_nonfinite=allow_nonfinite, provenance=provenance)
