import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convolutions: one intra-op thread is faster on a shared 2-core machine (no spin-waiting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
