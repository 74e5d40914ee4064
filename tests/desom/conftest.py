"""Fixtures shared by the desom library tests."""
import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared 2-core box: one thread avoids OpenMP spin-waits against other
    jobs, and makes seeded runs repeat bit for bit whatever the machine's thread default."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
