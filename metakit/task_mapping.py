"""Map a per-task meta-objective over the tasks of a batch: a loop, threads, processes or
``torch.func.vmap``.

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

import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from metakit import worker_processes
from metakit.errors import MetakitError
from metakit.precision import autocast_state
from metakit.task_batch import TaskBatch

Metrics = dict[str, Tensor]
TaskObjective = Callable[..., tuple[Tensor, Metrics]]
"""``(params, support_x, support_y, query_x, query_y) -> (loss, metrics)`` for one
task (no task dimension), differentiable w.r.t. ``params`` with ``torch.func``; or,
called with ``tasks_per_call > 1``, for several tasks at once (a leading task
dimension on the tensors, the loss and every metric)."""
MAPPINGS = ("auto", "loop", "threads", "processes", "vmap")


def check_mapping(mapping: str) -> None:
    if mapping not in MAPPINGS:
        raise MetakitError(f"unknown task_mapping '{mapping}'; use one of {', '.join(MAPPINGS)}")


def resolve_mapping(mapping: str, batch: TaskBatch) -> Literal["loop", "threads", "processes", "vmap"]:
    """``auto`` is vmap on accelerators (no per-task launch overhead) and for vector
    inputs on the CPU (small models, where per-task overhead dominates: vmap was 12x
    faster for the sinusoid MLP). For images on the CPU, where vmap was measured 2-3x
    slower for conv4 and needed several times the memory, it is ``processes`` when torch
    may use more than one thread (``threads`` off POSIX systems, and for an objective that
    cannot be pickled for worker processes: see ``mapped_meta_loss``), else ``loop``. On
    a 2-core CPU processes were 1.01-1.12x as fast as threads in the speed suite, for
    1.07-1.48x the peak RSS."""
    check_mapping(mapping)
    if mapping == "auto":
        on_cpu = batch.support_x.device.type == "cpu"
        images = batch.support_x.dim() > 3
        if not (on_cpu and images):
            return "vmap"
        if torch.get_num_threads() == 1 or batch.num_tasks == 1:
            return "loop"
        return "processes" if os.name == "posix" else "threads"
    return mapping  # type: ignore[return-value]


def mapped_meta_loss(
    objective: TaskObjective,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    mapping: str = "auto",
    replicate: Callable[[], TaskObjective] | None = None,
    tasks_per_call: int = 1,
    vmap_chunk_size: int | None = None,
) -> tuple[Tensor, Metrics]:
    """Mean of ``objective`` over the tasks of ``batch``, with its exact gradient.

    Returns ``(loss, metrics)``: ``loss`` is the mean task loss, a scalar whose
    gradient w.r.t. the tensors in ``params`` is the mean of the per-task
    meta-gradients; ``metrics`` are the per-task metrics averaged over tasks
    (detached). The ``threads`` mapping calls ``replicate()`` for an objective
    of its own per worker thread (``functional_call`` swaps a module's
    parameters while it runs, so two threads must not share a module); a
    replica must take every tensor it differentiates from ``params``, never
    from its own (copied) state. Without ``replicate`` it runs as ``loop``. The
    ``processes`` mapping pickles ``objective`` to its worker processes instead; where
    ``auto`` picked it and the objective cannot be pickled for them (it comes from a
    script's ``__main__``, or holds a lambda), ``auto`` runs ``threads``. The loop,
    threads and processes mappings call ``objective`` on consecutive groups of at most
    ``tasks_per_call`` tasks when it is above 1 (the vmap mapping ignores it). The vmap
    mapping maps ``objective`` over all tasks at once, or over consecutive chunks of
    ``vmap_chunk_size`` tasks (``torch.func.vmap``'s ``chunk_size``): the same gradient,
    with one chunk's graphs alive at a time instead of every task's.
    """
    resolved = resolve_mapping(mapping, batch)
    if resolved == "vmap":
        grads, loss, metrics = _vmapped(objective, params, batch, vmap_chunk_size)
    elif resolved == "processes":
        try:
            grads, loss, metrics = _in_processes(objective, params, batch, tasks_per_call)
        except worker_processes.CannotSend:
            if mapping != "auto":
                raise
            grads, loss, metrics = _threaded(objective, replicate, params, batch, tasks_per_call)
    elif resolved == "threads":
        grads, loss, metrics = _threaded(objective, replicate, params, batch, tasks_per_call)
    else:
        grads, loss, metrics = _looped(objective, params, batch, tasks_per_call)
    return _WithGradient.apply(loss, [grads[name] for name in params], *params.values()), metrics


def _vmapped(
    objective: TaskObjective, params: Mapping[str, Tensor], batch: TaskBatch, chunk_size: int | None
):
    leaves = {name: p.detach() for name, p in params.items()}
    per_task = torch.func.grad_and_value(objective, has_aux=True)
    mapped = torch.func.vmap(per_task, in_dims=(None, 0, 0, 0, 0), chunk_size=chunk_size)
    grads, (losses, metrics) = mapped(leaves, *batch.tensors())
    mean = {name: g.mean(0) for name, g in grads.items()}
    return mean, losses.mean(), {key: value.mean(0) for key, value in metrics.items()}


def _looped(objective: TaskObjective, params: Mapping[str, Tensor], batch: TaskBatch, tasks_per_call: int):
    """One task (or group) at a time, the outer gradient by plain autograd: without vmap
    there is nothing for a functorch outer transform to do, and it costs 10-25% per task."""
    leaves = _leaves(params)
    calls = task_groups(batch.num_tasks, tasks_per_call, workers=1)
    return _mean(leaves, [_accumulate(objective, leaves, batch, calls)], batch.num_tasks)


def _threaded(
    objective: TaskObjective,
    replicate: Callable[[], TaskObjective] | None,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    tasks_per_call: int,
):
    """The loop split over ``torch.get_num_threads()`` Python threads, task (or group)
    ``i`` to thread ``i mod threads``, each running torch on one thread. On a 2-core CPU this
    was 1.2x faster than one loop on two intra-op threads, which idle through the
    many small operations of a few-shot task. Results do not depend on scheduling:
    each thread sums its tasks in order, and the sums are added in thread order. The
    caller's autocast state (thread-local in torch) is set in every thread.

    Every thread differentiates its own leaf tensors (views of the same weights): with
    leaves shared between threads, torch 2.13 deadlocked after some hundred meta-iterations
    (one thread holding the GIL inside a Python autograd Function and waiting for a leaf's
    autograd lock, the other holding that lock and waiting for the GIL). Without
    ``replicate``, ``_looped``."""
    if replicate is None:
        return _looped(objective, params, batch, tasks_per_call)
    torch_threads = torch.get_num_threads()
    device = batch.support_x.device.type
    autocast = autocast_state(device)  # entered once per thread: an autocast object keeps per-entry state
    workers = min(torch_threads, batch.num_tasks)
    objectives = [objective] + [replicate() for _ in range(workers - 1)]
    calls = task_groups(batch.num_tasks, tasks_per_call, workers)
    leaves = [_leaves(params) for _ in range(workers)]
    parts: list = [None] * workers
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        torch.set_num_threads(1)
        try:
            with torch.autocast(**autocast):
                parts[worker] = _accumulate(objectives[worker], leaves[worker], batch, calls[worker::workers])
        except BaseException as error:  # re-raised in the calling thread
            failures.append(error)

    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(1, workers)]
    for thread in threads:
        thread.start()
    try:
        work(0)
        for thread in threads:
            thread.join()
    finally:
        torch.set_num_threads(torch_threads)
    if failures:
        raise failures[0]
    return _mean(leaves[0], parts, batch.num_tasks)


def _in_processes(
    objective: TaskObjective, params: Mapping[str, Tensor], batch: TaskBatch, tasks_per_call: int
):
    """The threads mapping's split with worker processes (``metakit.worker_processes``) in
    place of its extra threads: each has an interpreter of its own, so no two workers
    take turns on one GIL between small operators. The same calls, sums and order as
    ``threads``, so the same result; it costs a second torch in memory per worker, and
    per meta-iteration one pickled copy of the objective and the meta-parameters for all
    workers and, for each, its own tasks. Raises ``CannotSend`` before any worker starts
    where the objective cannot be pickled for them."""
    if batch.support_x.device.type != "cpu":
        raise MetakitError("task_mapping=processes runs on the CPU; use vmap (or auto) on an accelerator")
    if os.name != "posix":
        raise MetakitError("task_mapping=processes needs a POSIX system (Linux, macOS); use threads")
    torch_threads = torch.get_num_threads()
    workers = min(torch_threads, batch.num_tasks)
    if workers == 1:
        return _looped(objective, params, batch, tasks_per_call)
    calls = task_groups(batch.num_tasks, tasks_per_call, workers)
    leaves = _leaves(params)
    shares = [_share(batch, calls[w::workers]) for w in range(1, workers)]
    messages = worker_processes.payloads(_accumulate, (objective, leaves), shares)
    helpers = worker_processes.pool(workers - 1)
    helpers.run(messages)
    torch.set_num_threads(1)
    try:
        mine = _accumulate(objective, leaves, batch, calls[0::workers])
    except BaseException:
        helpers.close()
        raise
    finally:
        torch.set_num_threads(torch_threads)
    return _mean(leaves, [mine, *helpers.results()], batch.num_tasks)


def _share(batch: TaskBatch, calls: Sequence[int | slice]) -> tuple[TaskBatch, list[int | slice]]:
    """The tasks of ``calls`` as a batch of their own, and ``calls`` renumbered into it."""
    tasks: list[int] = []
    renumbered: list[int | slice] = []
    for call in calls:
        group = range(batch.num_tasks)[call] if isinstance(call, slice) else [call]
        renumbered.append(
            slice(len(tasks), len(tasks) + len(group)) if isinstance(call, slice) else len(tasks)
        )
        tasks.extend(group)
    index = torch.tensor(tasks, dtype=torch.long)
    return TaskBatch(*(t[index] for t in batch.tensors())), renumbered


def task_groups(tasks: int, per_call: int, workers: int) -> list[int] | list[slice]:
    """The calls of a mapping: every task index when ``per_call`` is 1; otherwise
    consecutive groups of at most ``per_call`` tasks, of near-equal sizes, their number a
    multiple of ``workers`` where there are enough tasks, so that call ``i`` going to
    worker ``i mod workers`` gives every worker about the same number of tasks."""
    if per_call <= 1:
        return list(range(tasks))
    count = min(tasks, workers * math.ceil(math.ceil(tasks / workers) / per_call))
    sizes = [tasks // count + (i < tasks % count) for i in range(count)]
    starts = [sum(sizes[:i]) for i in range(count)]
    return [slice(start, start + size) for start, size in zip(starts, sizes)]


def _leaves(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {name: p.detach().requires_grad_() for name, p in params.items()}


def _accumulate(
    objective: TaskObjective, leaves: dict[str, Tensor], batch: TaskBatch, calls: Sequence[int | slice]
):
    """``(gradient sums, task losses, metric sums)`` of ``objective`` over ``calls`` (task
    indices, or slices of tasks run together), one call's graph alive at a time."""
    grad_sums = [torch.zeros_like(p) for p in leaves.values()]
    losses = []
    metric_sums: Metrics = {}
    for call in calls:
        loss, metrics = objective(leaves, *(t[call] for t in batch.tensors()))
        for total, g in zip(grad_sums, torch.autograd.grad(loss.sum(), list(leaves.values()))):
            total.add_(g)
        for key, value in metrics.items():
            metric_sums[key] = metric_sums.get(key, 0) + (value.sum(0) if isinstance(call, slice) else value)
        losses.append(loss.detach().reshape(-1))
    return grad_sums, losses, metric_sums


def _mean(leaves: dict[str, Tensor], parts: list, tasks: int):
    """Task means of the ``_accumulate`` results ``parts``, added in order."""
    grad_sums, losses, metric_sums = parts[0]
    for more_grads, more_losses, more_metrics in parts[1:]:
        grad_sums = [a + b for a, b in zip(grad_sums, more_grads)]
        losses = losses + more_losses
        metric_sums = {key: value + more_metrics[key] for key, value in metric_sums.items()}
    grads = {name: total / tasks for name, total in zip(leaves, grad_sums)}
    return grads, torch.cat(losses).mean(), {key: value / tasks for key, value in metric_sums.items()}


class _WithGradient(torch.autograd.Function):
    """Identity on ``loss`` whose backward returns precomputed gradients for ``params``."""

    @staticmethod
    def forward(ctx, loss: Tensor, grads: list[Tensor], *params: Tensor) -> Tensor:
        ctx.grads = grads
        return loss.detach().clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        return (None, None, *(grad_output * g for g in ctx.grads))
