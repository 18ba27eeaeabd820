"""Map a per-task meta-objective over the tasks of a batch: a loop or ``torch.func.vmap``.

Each task's meta-gradient is taken *inside* the mapping
(``vmap(grad(task_objective))`` or ``grad(task_objective)`` per task), then
averaged. Differentiating a vmapped loss from outside the vmap gives wrong
second-order gradients through BatchNorm (functorch's batching rule treats
the saved batch statistics as constants; pytorch/functorch#534), and taking
gradients per task also frees each task's graph before the next task starts.

The averaged gradient is handed back as a loss whose ``.backward()`` writes
exactly that gradient into the meta-parameters' ``.grad``, so training code
stays ``loss.backward(); optimizer.step()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import Tensor

from metakit.errors import MetakitError
from metakit.task_batch import TaskBatch

Metrics = dict[str, Tensor]
TaskObjective = Callable[..., tuple[Tensor, Metrics]]
"""``(params, support_x, support_y, query_x, query_y) -> (loss, metrics)`` for one
task (no task dimension), differentiable w.r.t. ``params`` with ``torch.func``."""
MAPPINGS = ("auto", "loop", "vmap")


def resolve_mapping(mapping: str, device: torch.device) -> Literal["loop", "vmap"]:
    """``auto`` is a loop on the CPU (vmap is slower and needs several times
    the memory there) and vmap on accelerators (no per-task launch overhead)."""
    if mapping not in MAPPINGS:
        raise MetakitError(f"unknown task mapping '{mapping}'; use one of {', '.join(MAPPINGS)}")
    if mapping == "auto":
        return "loop" if device.type == "cpu" else "vmap"
    return mapping  # type: ignore[return-value]


def mapped_meta_loss(
    objective: TaskObjective,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    mapping: str = "auto",
) -> tuple[Tensor, Metrics]:
    """Mean of ``objective`` over the tasks of ``batch``, with its exact gradient.

    Returns ``(loss, metrics)``: ``loss`` is the mean task loss, a scalar whose
    gradient w.r.t. the tensors in ``params`` is the mean of the per-task
    meta-gradients; ``metrics`` are the per-task metrics averaged over tasks
    (detached).
    """
    leaves = {name: p.detach() for name, p in params.items()}
    per_task = torch.func.grad_and_value(objective, has_aux=True)
    if resolve_mapping(mapping, batch.support_x.device) == "vmap":
        grads, (losses, metrics) = torch.func.vmap(per_task, in_dims=(None, 0, 0, 0, 0))(
            leaves, *batch.tensors()
        )
        grads = {name: g.mean(0) for name, g in grads.items()}
        loss, metrics = losses.mean(), {k: v.mean(0) for k, v in metrics.items()}
    else:
        grads, loss, metrics = _loop(per_task, leaves, batch)
    names = list(params)
    return _WithGradient.apply(loss, [grads[n] for n in names], *params.values()), metrics


def _loop(per_task, leaves, batch: TaskBatch) -> tuple[dict[str, Tensor], Tensor, Metrics]:
    total_grads: dict[str, Tensor] = {}
    total_loss = torch.zeros((), device=batch.support_x.device)
    total_metrics: Metrics = {}
    for task in range(batch.num_tasks):
        grads, (loss, metrics) = per_task(leaves, *(t[task] for t in batch.tensors()))
        for name, g in grads.items():
            total_grads[name] = total_grads[name] + g if name in total_grads else g
        for key, value in metrics.items():
            total_metrics[key] = total_metrics.get(key, 0) + value.detach()
        total_loss = total_loss + loss.detach()
    n = batch.num_tasks
    return (
        {name: g / n for name, g in total_grads.items()},
        total_loss / n,
        {key: value / n for key, value in total_metrics.items()},
    )


class _WithGradient(torch.autograd.Function):
    """Identity on ``loss`` whose backward returns precomputed gradients for ``params``."""

    @staticmethod
    def forward(ctx, loss: Tensor, grads: list[Tensor], *params: Tensor) -> Tensor:
        ctx.grads = grads
        return loss.detach().clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        return (None, None, *(grad_output * g for g in ctx.grads))
