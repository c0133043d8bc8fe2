"""The Dictionary protocol: every architecture and the raw neurons are read the same way by the analyses."""

from __future__ import annotations

import pytest
import torch

import saekit
from saekit.saes.dictionary import Dictionary, Neurons

from helpers import ARCHS, make_sae


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_is_a_dictionary(arch):
    sae = make_sae(arch)
    assert isinstance(sae, Dictionary)
    assert sae.W_enc.shape == (sae.d_in, sae.d_sae) and sae.W_dec.shape == (sae.d_sae, sae.d_in)


def test_neurons_are_the_identity_dictionary():
    neurons = Neurons(6)
    assert isinstance(neurons, Dictionary) and neurons.d_in == neurons.d_sae == 6
    x = torch.randn(3, 6)
    assert torch.equal(neurons.encode(x), x)
    assert torch.equal(neurons.W_enc, torch.eye(6)) and torch.equal(neurons.W_dec, torch.eye(6))
    assert torch.equal(x @ neurons.W_enc @ neurons.W_dec, x)


def test_something_without_an_encoder_is_not_a_dictionary():
    class DecoderOnly:
        d_in = d_sae = 4
        metadata: dict = {}
        W_dec = torch.eye(4)

    assert not isinstance(DecoderOnly(), Dictionary)
    assert isinstance(saekit.SAE.create("relu", 4, 8), Dictionary)
