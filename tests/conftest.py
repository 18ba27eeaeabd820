import pytest
import torch


@pytest.fixture(autouse=True)
def _float32_default():
    """Tests that switch to float64 must not leak it into the next test."""
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)
