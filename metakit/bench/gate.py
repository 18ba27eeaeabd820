"""The gradient-agreement gate: a row is timed only if its meta-gradient equals metakit's."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from metakit.backbones.backbone import Backbone
from metakit.bench.configs import SpeedConfig
from metakit.bench.peers import MetaStep
from metakit.task_batch import TaskBatch

GATE_TOLERANCE = 1e-9
"""Largest accepted error, relative to the largest reference gradient entry, in float64.
Exact implementations agree to about 1e-13; a dropped second-order term or a
mis-scaled loss shows up at 1e-3 or more."""

Builder = Callable[[Backbone, SpeedConfig], MetaStep]


def meta_gradient(build: Builder, config: SpeedConfig, batch: TaskBatch, seed: int) -> dict[str, Tensor]:
    """The meta-gradient ``{name: tensor}`` that ``build``'s step writes for ``batch``, from the
    seeded initial weights, in the dtype and on the device of ``batch``."""
    backbone = config.backbone(seed, batch.support_x.dtype, str(batch.support_x.device))
    build(backbone, config)(batch)
    return {name: p.grad.clone() for name, p in backbone.named_parameters()}


def gradient_error(found: dict[str, Tensor], expected: dict[str, Tensor]) -> float:
    """``max_name max|found - expected| / max_name max|expected|``: relative to the largest entry,
    since some entries are zero in exact arithmetic (a convolution bias before BatchNorm)."""
    scale = max(g.abs().max().item() for g in expected.values())
    return max((found[name] - expected[name]).abs().max().item() for name in expected) / scale


def gate_error(
    build: Builder, reference: Builder, config: SpeedConfig, seed: int, device: str, tasks: int
) -> float:
    """Error of ``build``'s float64 meta-gradient against ``reference``'s on the first ``tasks``
    tasks (all when 0) of the benchmark batch, from the same initial weights."""
    batch = config.batch(seed, torch.float64, device)
    if 0 < tasks < batch.num_tasks:
        batch = TaskBatch(*(t[:tasks] for t in batch.tensors()))
    expected = meta_gradient(reference, config, batch, seed)
    return gradient_error(meta_gradient(build, config, batch, seed), expected)
