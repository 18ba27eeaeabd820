"""2-d convolution with cheaper second derivatives on the CPU.

Second-order MAML differentiates the backward pass of every convolution once
more. PyTorch's double backward for it (torch 2.13) computes the weight term as
a convolution of batch-transposed tensors whose kernel is the whole feature map,
and computes the input term even when the input needs no gradient, as the images
at conv4's first layer do. Measured with one thread, channels-last, at conv4's
sizes: the weight term took 7.1 ms for 20 images at 14x14 against 2.5 ms for
oneDNN's backward-weights kernel, and the unneeded input term of the first layer
2.5 ms, seven times that layer's forward. Here the first backward is PyTorch's
fused ``convolution_backward``, and its backward is the closed form below, which
calls the same fused kernel and skips the terms nobody asked for. Measured side by
side in one process (configuration C of ``metakit bench speed``, second order): a
meta-iteration 1.08x faster with the threads mapping and with the loop mapping.

For ``y = conv(x, W) + b`` the backward is ``dx = D_x(dy; W)``, ``dW = D_W(dy; x)``,
``db = sum(dy)``, where ``D_x(dy; W)`` and ``D_W(dy; x)`` are the input and weight
gradients of a convolution with weight ``W`` and input ``x``. ``dx`` is bilinear in
``(dy, W)``, ``dW`` in ``(dy, x)``, so for output gradients ``(gdx, gdW, gdb)``:

- ``g_dy = conv(gdx, W) + conv(x, gdW) + gdb``
- ``g_x = D_x(dy; gdW)``
- ``g_W = D_W(dy; gdx)``

Derivatives go up to the second order, which is what second-order MAML takes;
asking for a third is an error. Under ``torch.func`` transforms, off the CPU and
under autocast this is ``torch.nn.functional.conv2d`` itself.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metakit.transforms import cpu_kernels_apply


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and results) with the cheaper double backward where
    it applies: zero padding given as numbers, no dilation."""

    def forward(self, x: Tensor) -> Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str) or self.dilation != (1, 1):
            return super().forward(x)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups)


class _Geometry(NamedTuple):
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    groups: int


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    groups: int = 1,
) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, groups=groups)``, with the cheaper
    double backward where it applies."""
    geometry = _Geometry(tuple(stride), tuple(padding), groups)
    if not cpu_kernels_apply(x) or torch.is_autocast_enabled("cpu"):
        return _convolve(x, weight, bias, geometry)
    return _Conv2d.apply(x, weight, bias, geometry)


def _convolve(x: Tensor, weight: Tensor, bias: Tensor | None, geometry: _Geometry) -> Tensor:
    return F.conv2d(x, weight, bias, geometry.stride, geometry.padding, 1, geometry.groups)


def _fused_backward(grad: Tensor, x: Tensor, weight: Tensor, geometry: _Geometry, mask: list[bool]):
    """``(dx, dW, db)`` of ``conv(x, weight)`` for output gradient ``grad``; ``None`` where
    ``mask`` is false."""
    bias_sizes = [weight.shape[0]] if mask[2] else None
    return torch.ops.aten.convolution_backward(
        grad, x, weight, bias_sizes, geometry.stride, geometry.padding, [1, 1], False, [0, 0],
        geometry.groups, mask,
    )  # fmt: skip


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, geometry: _Geometry) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.geometry = geometry
        return _convolve(x, weight, bias, geometry)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        x, weight = ctx.saved_tensors
        mask = list(ctx.needs_input_grad[:3])
        if torch.is_grad_enabled():  # a graph of the backward, for second derivatives
            grads = _Conv2dBackward.apply(grad_output, x, weight, ctx.geometry, mask)
        else:
            grads = _fused_backward(grad_output, x, weight, ctx.geometry, mask)
        return *grads, None


class _Conv2dBackward(torch.autograd.Function):
    """``(dy, x, W) -> (dx, dW, db)``, each ``None`` where ``mask`` says it is not needed."""

    @staticmethod
    def forward(ctx, grad_output: Tensor, x: Tensor, weight: Tensor, geometry: _Geometry, mask: list[bool]):
        ctx.save_for_backward(grad_output, x, weight)
        ctx.geometry = geometry
        ctx.set_materialize_grads(False)  # an unused output costs no convolution of zeros
        return tuple(_fused_backward(grad_output, x, weight, geometry, mask))

    @staticmethod
    def backward(ctx, g_dx: Tensor | None, g_dweight: Tensor | None, g_dbias: Tensor | None):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "metakit's Conv2d has derivatives up to the second order only; "
                "use torch.nn.Conv2d for higher orders"
            )
        dy, x, weight = ctx.saved_tensors
        geometry = ctx.geometry
        need_dy, need_x, need_weight = ctx.needs_input_grad[:3]
        grad_dy = grad_x = grad_weight = None
        if need_dy and g_dx is not None:
            grad_dy = _convolve(g_dx, weight, g_dbias, geometry)
        elif need_dy and g_dbias is not None:
            grad_dy = g_dbias.view(1, -1, 1, 1).expand_as(dy)
        if need_dy and g_dweight is not None:
            from_weight = _convolve(x, g_dweight, None, geometry)
            grad_dy = from_weight if grad_dy is None else grad_dy + from_weight
        if need_x and g_dweight is not None:
            grad_x = _fused_backward(dy, x, g_dweight, geometry, [True, False, False])[0]
        if need_weight and g_dx is not None:
            grad_weight = _fused_backward(dy, g_dx, weight, geometry, [False, True, False])[1]
        return grad_dy, grad_x, grad_weight, None, None
