"""The inner loop shared by every gradient-based algorithm: adapt weights to one task."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Union

import torch
from torch import Tensor, nn
from torch.func import functional_call

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

    Written with ``torch.func.grad`` so that it composes with an outer
    ``torch.func.grad`` and with ``torch.func.vmap`` over tasks.
    """

    def support_loss(fast: dict[str, Tensor]) -> Tensor:
        return loss_fn(functional_call(model, {**frozen, **fast}, (x,)), y)

    fast = dict(params)
    for _ in range(steps):
        grads = torch.func.grad(support_loss)(fast)
        if first_order:
            grads = {name: g.detach() for name, g in grads.items()}
        fast = {name: w - _step_size(lr, name) * grads[name] for name, w in fast.items()}
    return fast


def _step_size(lr: InnerLR, name: str) -> float | Tensor:
    return lr[name] if isinstance(lr, Mapping) else lr
