"""conv4's convolution: the values, gradients and second derivatives of torch's conv2d."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metakit.backbones.convolution import Conv2d, conv2d


def _derivatives(convolve, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """Output, first derivatives and second derivatives (through the backward) w.r.t. the
    tensors among ``x, weight, bias`` that require grad."""
    inputs = [t for t in (x, weight, bias) if t is not None and t.requires_grad]
    y = convolve(x, weight, bias)
    probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
    grads = torch.autograd.grad((y * probe).sum() + (y**3).sum(), inputs, create_graph=True)
    # Weights every first derivative differently, as the outer loss of MAML does, and
    # reaches each of them through both of the tensors it is a product of.
    outer = sum(((g * i) ** 2).sum() + (g * t).sum() for i, (g, t) in enumerate(zip(grads, inputs), 1))
    return (y, *grads, *torch.autograd.grad(outer, inputs))


@pytest.mark.parametrize("input_grad", [False, True], ids=["images", "activations"])
@pytest.mark.parametrize(("stride", "groups"), [(1, 1), (2, 1), (1, 2), (2, 2)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_equals_torch_conv2d_to_second_order(input_grad, stride, groups, bias, layout):
    """An input that needs no gradient is the first layer's images, whose term the closed
    form skips; grouped convolutions are how conv4 runs several tasks in one forward."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 7, 7, generator=generator, dtype=torch.float64).contiguous(memory_format=layout)
    x.requires_grad_(input_grad)
    weight = torch.randn(6, 4 // groups, 3, 3, generator=generator, dtype=torch.float64).requires_grad_()
    b = torch.randn(6, generator=generator, dtype=torch.float64).requires_grad_() if bias else None

    def ours(x, w, b):
        return conv2d(x, w, b, (stride, stride), (1, 1), groups)

    def torchs(x, w, b):
        return F.conv2d(x, w, b, stride, 1, 1, groups)

    expected = _derivatives(torchs, x, weight, b)
    for mine, theirs in zip(_derivatives(ours, x, weight, b), expected, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-9)


def test_second_derivatives_pass_the_numerical_check():
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w, b: conv2d(x, w, b, (2, 2), (1, 1)), (x, weight, bias))


def test_the_module_is_nn_conv2d_with_the_same_results():
    torch.manual_seed(0)
    ours, theirs = Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 3, padding=1)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 2, 6, 6)
    torch.testing.assert_close(ours(x), theirs(x))
    dilated = Conv2d(2, 3, 3, padding=2, dilation=2)  # not covered by the closed form: torch's own
    assert dilated(x).grad_fn.name() == "ConvolutionBackward0"


def test_a_third_derivative_is_refused_rather_than_wrong():
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad((conv2d(x, weight, None, (1, 1), (1, 1)) ** 3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="derivatives up to the second order only"):
        torch.autograd.grad((grad**2).sum(), x, create_graph=True)
