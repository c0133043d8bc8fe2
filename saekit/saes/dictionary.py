"""What every analysis reads of a dictionary, whatever kind it is: the `Dictionary` protocol that SAEs satisfy, and
`Neurons`, the identity dictionary that reads a model's neurons as its features (the baseline of every
comparison in the paper).

    f = encode(x)        [..., d_in] → [..., d_sae]        the features' activations
    x̂ = decode(f)        [..., d_sae] → [..., d_out]       what they write back
    W_enc [d_in, d_sae]  each feature's direction in (what it reads)
    W_dec [d_sae, d_out] each feature's direction out (what it writes)
    provenance           where it reads its model(s): model(s), hook, a transcoder's target hook, side, context

d_out = d_in except for a transcoder (it writes at another hook); a crosscoder reads n_models models side by side
(d_in = n_models · d) and writes each model's block of W_dec.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from saekit.saes.provenance import Provenance


@runtime_checkable
class Dictionary(Protocol):
    """A set of features over a model's activations at one hook: an SAE, a transcoder, a crosscoder, or the raw
    neurons."""

    d_in: int
    d_out: int
    d_sae: int
    n_models: int
    is_transcoder: bool
    provenance: Provenance

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, f: Tensor) -> Tensor: ...

    @property
    def W_enc(self) -> Tensor: ...

    @property
    def W_dec(self) -> Tensor: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...


class Neurons:
    """The identity dictionary: a model's neurons as the features (the baseline of every comparison)."""

    def __init__(self, d_in: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        self.d_in = self.d_out = self.d_sae = int(d_in)
        self.n_models, self.is_transcoder = 1, False
        self.dtype, self.device = dtype, torch.device(device)
        self.provenance = Provenance()

    def encode(self, x: Tensor) -> Tensor:
        return x

    def decode(self, f: Tensor) -> Tensor:
        return f

    @property
    def W_enc(self) -> Tensor:
        """[d, d] identity: neuron i reads the i-th unit vector."""
        return torch.eye(self.d_in, dtype=self.dtype, device=self.device)

    @property
    def W_dec(self) -> Tensor:
        """[d, d] identity: neuron i's direction in neuron space is the i-th unit vector."""
        return torch.eye(self.d_sae, dtype=self.dtype, device=self.device)
