"""conv4's 2x2 max-pool: the values, gradients and second derivatives of nn.MaxPool2d."""

import pytest
import torch
import torch.nn.functional as F

from metakit.backbones.max_pool import MaxPool2x2


def _derivatives(pool, x: torch.Tensor, probe: torch.Tensor):
    """Output, first derivative and a second derivative (through the backward) of ``pool`` at ``x``."""
    x = x.clone().requires_grad_()
    y = pool(x)
    (grad,) = torch.autograd.grad((y * probe).sum() + 0.5 * (y**2).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad((grad**2 * x).sum(), x)
    return y, grad, second


@pytest.mark.parametrize("shape", [(3, 64, 28, 28), (5, 64, 7, 7), (2, 3, 3, 3), (4, 1, 14, 14)])
def test_equals_torch_max_pool_with_ties(shape):
    """Integer-valued inputs make most windows tie; the pooled position must be torch's."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(-2, 3, shape, generator=generator).double()
    pooled_shape = (*shape[:2], shape[2] // 2, shape[3] // 2)
    probe = torch.randn(pooled_shape, generator=generator, dtype=torch.float64)
    ours = _derivatives(MaxPool2x2(), x, probe)
    reference = _derivatives(lambda t: F.max_pool2d(t, 2), x, probe)
    for mine, theirs in zip(ours, reference):
        assert torch.equal(mine, theirs)


def test_nan_propagates_like_torch():
    x = torch.randn(2, 4, 6, 6)
    x[0, 1, 2, 3] = float("nan")
    ours, reference = MaxPool2x2()(x), F.max_pool2d(x, 2)
    assert torch.equal(ours.isnan(), reference.isnan()) and ours.isnan().sum() == 1
    assert torch.equal(ours.nan_to_num(), reference.nan_to_num())


def test_output_is_contiguous_and_input_layout_is_left_alone():
    x = torch.randn(2, 8, 10, 10)
    y = MaxPool2x2()(x)
    assert y.is_contiguous() and x.is_contiguous()
