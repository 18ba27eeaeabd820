"""Peer implementations of one second-order MAML meta-iteration, written independently of metakit.

Each builder takes a conv4 ``backbone`` and returns ``step(batch)``,
which adds the meta-gradient ``(1/tasks) sum_i d L_query_i(adapt_i(theta)) / d theta``
to the backbone's ``.grad``. All three take each task's backward pass as soon
as its query loss exists, so only one task's graph is alive at a time (the
strongest form of these loops; summing all task losses before one backward
keeps every task's graph and needs several times the memory). The suite runs
them on ``textbook_conv4``: the network their users write, with metakit's
weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metakit.backbones.conv4 import Conv4
from metakit.bench.configs import SpeedConfig
from metakit.task_batch import TaskBatch

MetaStep = Callable[[TaskBatch], None]
PeerBuilder = Callable[[nn.Module, SpeedConfig], MetaStep]


def textbook_conv4(backbone: Conv4) -> nn.Sequential:
    """``backbone``'s parameters (so their ``.grad``) in the layers peer code writes for
    conv4, all of them torch's: [Conv2d, BatchNorm2d, ReLU, MaxPool2d(2)] x 4 -> flatten ->
    Linear, as in learn2learn's OmniglotCNN and higher's MAML example. The same function
    as metakit's conv4, which pools before its ReLU and has its own convolution and
    BatchNorm (cheaper second derivatives)."""
    convs = [m for m in backbone.blocks if isinstance(m, nn.Conv2d)]
    norms = [m for m in backbone.blocks if isinstance(m, nn.BatchNorm2d)]
    layers: list[nn.Module] = []
    for conv, norm in zip(convs, norms):
        torch_conv = nn.Conv2d(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding
        )
        torch_conv.weight, torch_conv.bias = conv.weight, conv.bias
        torch_norm = nn.BatchNorm2d(norm.num_features, norm.eps, track_running_stats=False)
        torch_norm.weight, torch_norm.bias = norm.weight, norm.bias
        layers += [torch_conv, torch_norm, nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten(), backbone.head)


def on_textbook_conv4(build: PeerBuilder) -> PeerBuilder:
    """``build`` run on ``textbook_conv4(backbone)`` instead of metakit's conv4."""
    return lambda backbone, config: build(textbook_conv4(backbone), config)


def plain_loop(backbone: nn.Module, config: SpeedConfig) -> MetaStep:
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


def higher_loop(backbone: nn.Module, config: SpeedConfig) -> MetaStep:
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


def learn2learn_maml(backbone: nn.Module, config: SpeedConfig) -> MetaStep:
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
