import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_seeded():
    """Tests are tiny: one thread avoids oversubscribing CI's two cores; a fixed seed keeps them stable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
