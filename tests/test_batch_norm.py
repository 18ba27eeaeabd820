"""conv4's BatchNorm: the values, gradients and second derivatives of nn.BatchNorm2d."""

import pytest
import torch
from torch import nn

from metakit.backbones.batch_norm import BatchNorm2d


def _derivatives(norm: nn.Module, x: torch.Tensor, probe: torch.Tensor):
    """Output, first derivatives and second derivatives (through the backward) w.r.t. the
    input, weight and bias of ``norm`` at ``x``."""
    x = x.clone().requires_grad_()
    inputs = (x, norm.weight, norm.bias)
    y = norm(x)
    grads = torch.autograd.grad((y * probe).sum() + (y**3).sum(), inputs, create_graph=True)
    # Weights every first derivative differently, as the outer loss of MAML does.
    outer = sum(((g * i) ** 2).sum() for i, g in enumerate(grads, start=1)) + (grads[0] * x).sum()
    seconds = torch.autograd.grad(outer, inputs)
    return (y, *grads, *seconds)


@pytest.mark.parametrize("shape", [(5, 8, 6, 6), (1, 3, 4, 4), (16, 2, 1, 1)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_equals_torch_batch_norm_to_second_order(shape, layout):
    """conv4 runs channels-last on the CPU; the gradients arriving there may be NCHW."""
    generator = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(shape, generator=generator, dtype=torch.float64) + 1
    x = x.contiguous(memory_format=layout)
    probe = torch.randn(shape, generator=generator, dtype=torch.float64)
    ours = BatchNorm2d(shape[1], track_running_stats=False).double()
    torch_norm = nn.BatchNorm2d(shape[1], track_running_stats=False).double()
    with torch.no_grad():
        for norm in (ours, torch_norm):
            norm.weight.copy_(torch.randn(shape[1], generator=torch.Generator().manual_seed(1)))
            norm.bias.copy_(torch.randn(shape[1], generator=torch.Generator().manual_seed(2)))
    for mine, theirs in zip(_derivatives(ours, x, probe), _derivatives(torch_norm, x, probe)):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-9)


def test_second_derivatives_pass_the_numerical_check():
    norm = BatchNorm2d(3, track_running_stats=False).double()
    x = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(
        lambda x, w, b: torch.func.functional_call(norm, {"weight": w, "bias": b}, (x,)),
        (x, norm.weight, norm.bias),
    )


def test_running_statistics_and_bad_shapes_behave_as_torch():
    x = torch.randn(4, 3, 5, 5)
    tracking, torch_tracking = BatchNorm2d(3), nn.BatchNorm2d(3)
    torch.testing.assert_close(tracking(x), torch_tracking(x))
    torch.testing.assert_close(tracking.running_mean, torch_tracking.running_mean)
    with pytest.raises(ValueError, match="expected 4D input"):
        BatchNorm2d(3, track_running_stats=False)(torch.randn(4, 3))


def test_a_third_derivative_is_refused_rather_than_wrong():
    norm = BatchNorm2d(2, track_running_stats=False).double()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad((norm(x) ** 3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="derivatives up to the second order only"):
        torch.autograd.grad((grad**2).sum(), x, create_graph=True)
