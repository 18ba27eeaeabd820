"""Peer implementations of one second-order MAML meta-iteration, written independently of metakit.

Each builder takes the shared conv4 ``backbone`` and returns ``step(batch)``,
which adds the meta-gradient ``(1/tasks) sum_i d L_query_i(adapt_i(theta)) / d theta``
to the backbone's ``.grad``. All three take each task's backward pass as soon
as its query loss exists, so only one task's graph is alive at a time (the
strongest form of these loops; summing all task losses before one backward
keeps every task's graph and needs several times the memory).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from metakit.backbones.backbone import Backbone
from metakit.bench.configs import SpeedConfig
from metakit.task_batch import TaskBatch

MetaStep = Callable[[TaskBatch], None]


def plain_loop(backbone: Backbone, config: SpeedConfig) -> MetaStep:
    """The style of most published PyTorch MAML code: a loop over tasks and inner steps,
    ``torch.autograd.grad(..., create_graph=True)`` for the inner gradients."""
    names = [name for name, _ in backbone.named_parameters()]
    theta = [p for _, p in backbone.named_parameters()]

    def step(batch: TaskBatch) -> None:
        for i in range(batch.num_tasks):
            fast = theta
            for _ in range(config.inner_steps):
                logits = functional_call(backbone, dict(zip(names, fast)), (batch.support_x[i],))
                loss = F.cross_entropy(logits, batch.support_y[i])
                grads = torch.autograd.grad(loss, fast, create_graph=True)
                fast = [w - config.inner_lr * g for w, g in zip(fast, grads)]
            logits = functional_call(backbone, dict(zip(names, fast)), (batch.query_x[i],))
            (F.cross_entropy(logits, batch.query_y[i]) / batch.num_tasks).backward()

    return step


def higher_loop(backbone: Backbone, config: SpeedConfig) -> MetaStep:
    """``higher.innerloop_ctx`` with its differentiable SGD, one context per task."""
    import higher

    inner_optimizer = torch.optim.SGD(backbone.parameters(), lr=config.inner_lr)

    def step(batch: TaskBatch) -> None:
        for i in range(batch.num_tasks):
            with higher.innerloop_ctx(backbone, inner_optimizer, copy_initial_weights=False) as (
                model,
                optimizer,
            ):
                for _ in range(config.inner_steps):
                    optimizer.step(F.cross_entropy(model(batch.support_x[i]), batch.support_y[i]))
                (F.cross_entropy(model(batch.query_x[i]), batch.query_y[i]) / batch.num_tasks).backward()

    return step


def learn2learn_maml(backbone: Backbone, config: SpeedConfig) -> MetaStep:
    """learn2learn's ``MAML`` wrapper: ``clone()`` per task, ``adapt(loss)`` per inner step."""
    import learn2learn

    maml = learn2learn.algorithms.MAML(backbone, lr=config.inner_lr, first_order=False)

    def step(batch: TaskBatch) -> None:
        for i in range(batch.num_tasks):
            learner = maml.clone()
            for _ in range(config.inner_steps):
                learner.adapt(F.cross_entropy(learner(batch.support_x[i]), batch.support_y[i]))
            (F.cross_entropy(learner(batch.query_x[i]), batch.query_y[i]) / batch.num_tasks).backward()

    return step
