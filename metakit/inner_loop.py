"""The inner loop shared by every gradient-based algorithm: adapt weights to one task."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Union

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metakit.transforms import inside_functorch_transform

LossFn = Callable[[Tensor, Tensor], Tensor]
InnerLR = Union[float, Tensor, Mapping[str, Tensor]]
"""A scalar step size, or one tensor per adapted parameter (Meta-SGD: same shape
as the parameter, or anything that broadcasts to it). Tensors may require
grad: the step size is then meta-learned through the same graph."""


def adapt(
    model: nn.Module,
    params: Mapping[str, Tensor],
    frozen: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    steps: int,
    lr: InnerLR,
    first_order: bool,
) -> dict[str, Tensor]:
    """Take ``steps`` gradient steps on one task's support loss.

    ``theta_{s+1} = theta_s - lr * grad L_support(theta_s)`` for the tensors in
    ``params`` (the adapted subset: all weights for MAML, the head for ANIL);
    ``frozen`` holds the rest of the model's parameters and its buffers, used
    as they are. ``x: [n_support, *input_shape]``, ``y``: the matching targets.

    Second order (``first_order=False``) keeps the inner gradients in the
    graph, so differentiating the result w.r.t. the initial ``params``
    includes the Hessian-vector terms. First order detaches the inner
    gradients; that is the only difference between the two.

    Inside a ``torch.func`` transform (the vmap mapping) the inner gradient is
    ``torch.func.grad``, which composes with ``vmap`` and an outer
    ``torch.func.grad``. Outside one (the loop mapping, evaluation) it is
    ``torch.autograd.grad``: the same numbers, without the 77 MB that the first
    ``torch.func.grad`` call of a process adds by importing ``torch._dynamo``.
    """

    def support_loss(fast: dict[str, Tensor]) -> Tensor:
        return loss_fn(functional_call(model, {**frozen, **fast}, (x,)), y)

    return descend(support_loss, params, steps, lr, first_order)


def descend(
    loss_of: Callable[[dict[str, Tensor]], Tensor],
    params: Mapping[str, Tensor],
    steps: int,
    lr: InnerLR,
    first_order: bool,
) -> dict[str, Tensor]:
    """``steps`` gradient steps on ``loss_of(weights)`` from ``params``: the kernel of
    ``adapt``, for callers that compute the support loss themselves (several tasks at
    once, each with its own slice of the weights)."""
    gradient = _functorch_gradient if inside_functorch_transform() else _autograd_gradient
    fast = dict(params)
    for _ in range(steps):
        grads = gradient(loss_of, fast, first_order)
        fast = {name: w - _step_size(lr, name) * grads[name] for name, w in fast.items()}
    return fast


def _functorch_gradient(loss_fn, weights: dict[str, Tensor], first_order: bool) -> dict[str, Tensor]:
    grads = torch.func.grad(loss_fn)(weights)
    return {name: g.detach() for name, g in grads.items()} if first_order else grads


def _autograd_gradient(loss_fn, weights: dict[str, Tensor], first_order: bool) -> dict[str, Tensor]:
    """``torch.autograd.grad`` of ``loss_fn(weights)``; weights that do not require grad
    (detached, under ``torch.no_grad``) are differentiated from a fresh leaf."""
    with torch.enable_grad():
        weights = {name: w if w.requires_grad else w.detach().requires_grad_() for name, w in weights.items()}
        grads = torch.autograd.grad(
            loss_fn(weights), list(weights.values()), create_graph=not first_order, materialize_grads=True
        )
    return dict(zip(weights, grads))


def _step_size(lr: InnerLR, name: str) -> float | Tensor:
    return lr[name] if isinstance(lr, Mapping) else lr
