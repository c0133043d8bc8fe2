from pathlib import Path

import pytest
import torch

from saekit.activations import nnsight_api as api

from helpers import build_tiny_bert, build_tiny_gpt2, write_text_folder

pytest_plugins = ("browser_helpers",)  # the `chromium` fixture, for every browser test module


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests are tiny: one thread avoids oversubscribing CI's two cores (module fixtures included)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seeded():
    """A fixed seed per test keeps random data stable."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def text_dir(tmp_path_factory) -> Path:
    return write_text_folder(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_lm_dir):
    return api.load_model(tiny_lm_dir)


# --- tests ----------------------------------------------------------------------------------------
