"""Model-Agnostic Meta-Learning (Finn, Abbeel, Levine 2017) and its first-order variant."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from metakit.algorithms.algorithm import Algorithm
from metakit.backbones.backbone import Backbone
from metakit.data.sampler import Problem
from metakit.errors import MetakitError
from metakit.hyperparameters import Hyperparameters
from metakit.inner_loop import adapt, descend
from metakit.registry import register_algorithm
from metakit.task_batch import TaskBatch
from metakit.task_mapping import check_mapping, mapped_meta_loss, resolve_mapping


@dataclass
class MAMLHyperparameters(Hyperparameters):
    """``inner_lr``/``inner_steps``: the inner SGD; ``eval_inner_steps``: steps when
    adapting at evaluation; ``first_order``: drop second derivatives (FOMAML);
    ``task_mapping``: ``auto``, ``loop``, ``threads``, ``processes`` or ``vmap`` over the tasks
    of a batch; ``tasks_per_forward``: tasks the loop, threads and processes mappings run
    through the backbone together (its ``forward_tasks``), 0 = as many as make up about
    ``EXAMPLES_PER_FORWARD`` support and query examples; under vmap, tasks per vmapped
    chunk, 0 = all tasks at once (fewer: less memory, one chunk's graphs alive at a time)."""

    inner_lr: float = 0.4
    inner_steps: int = 1
    eval_inner_steps: int = 3
    first_order: bool = False
    task_mapping: str = "auto"
    tasks_per_forward: int = 0


EXAMPLES_PER_FORWARD = 64
"""Measured with conv4 on a 2-core CPU (threads mapping, second order): in the paper's
5-way setting (10 examples per task) groups of 4-8 tasks made a meta-iteration 1.44x
faster than one task at a time (696 -> 483 ms); at 40 examples per task (the paper's
20-way setting) groups of 2 gained nothing, and at 80 (configuration A) groups of 4
were slower: the activations of a large group no longer fit the caches."""


@register_algorithm("maml")
class MAML(Algorithm):
    """Meta-learns an initialisation from which a few SGD steps on a task's support set
    fit its query set: ``min_theta sum_tasks L_query(adapt(theta, support))``."""

    Hyperparameters = MAMLHyperparameters
    hparams: MAMLHyperparameters

    def __init__(self, backbone: Backbone, problem: Problem, **hyperparameters: Any):
        super().__init__(backbone, problem, **hyperparameters)
        if self.hparams.inner_steps < 1 or self.hparams.eval_inner_steps < 0:
            raise MetakitError("MAML needs inner_steps >= 1 and eval_inner_steps >= 0")
        if not math.isfinite(self.hparams.inner_lr):
            raise MetakitError(f"MAML needs a finite inner_lr, got {self.hparams.inner_lr}")
        check_mapping(self.hparams.task_mapping)
        if self.hparams.tasks_per_forward < 0:
            raise MetakitError("tasks_per_forward must be 0 (automatic) or more")
        chunked_vmap = self.hparams.task_mapping == "vmap"  # needs no forward_tasks
        if self.hparams.tasks_per_forward > 1 and not backbone.batches_tasks and not chunked_vmap:
            raise MetakitError(
                f"backbone {type(backbone).__name__} cannot run several tasks in one forward; "
                "use tasks_per_forward=1, or task_mapping=vmap to map tasks in chunks"
            )

    def _adapt(self, params: dict[str, Tensor], x: Tensor, y: Tensor, steps: int, first_order: bool):
        buffers = dict(self.backbone.named_buffers())
        return adapt(
            self.backbone, params, buffers, x, y, self.loss, steps, self.hparams.inner_lr, first_order
        )

    def _task_objective(self, params, support_x, support_y, query_x, query_y):
        fast = self._adapt(params, support_x, support_y, self.hparams.inner_steps, self.hparams.first_order)
        outputs = self.predict(fast, query_x)
        return self.loss(outputs, query_y), self.metrics(outputs, query_y)

    def _tasks_objective(self, params, support_x, support_y, query_x, query_y):
        """``_task_objective`` of several tasks in one forward each: ``[tasks, ...]`` inputs,
        per-task losses and metrics. Each task adapts its own copy of ``params``."""
        tasks = support_x.shape[0]

        def support_loss(fast: dict[str, Tensor]) -> Tensor:
            outputs = self.backbone.forward_tasks(fast, support_x)
            return tasks * self.loss(outputs.flatten(0, 1), support_y.flatten(0, 1))  # sum of task means

        copies = {name: p.expand(tasks, *p.shape) for name, p in params.items()}
        fast = descend(
            support_loss, copies, self.hparams.inner_steps, self.hparams.inner_lr, self.hparams.first_order
        )
        outputs = self.backbone.forward_tasks(fast, query_x)
        losses = torch.stack([self.loss(out, y) for out, y in zip(outputs, query_y)])
        metrics = [self.metrics(out, y) for out, y in zip(outputs, query_y)]
        return losses, {key: torch.stack([m[key] for m in metrics]) for key in metrics[0]}

    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        params = dict(self.backbone.named_parameters())
        per_call = self._tasks_per_forward(batch)
        name = "_task_objective" if per_call == 1 else "_tasks_objective"
        return mapped_meta_loss(
            getattr(self, name),
            params,
            batch,
            self.hparams.task_mapping,
            replicate=lambda: getattr(copy.deepcopy(self), name),
            tasks_per_call=per_call,
            vmap_chunk_size=self.hparams.tasks_per_forward or None,
        )

    def _tasks_per_forward(self, batch: TaskBatch) -> int:
        if resolve_mapping(self.hparams.task_mapping, batch) == "vmap" or not self.backbone.batches_tasks:
            return 1
        if self.hparams.tasks_per_forward:
            return self.hparams.tasks_per_forward
        examples = batch.support_x.shape[1] + batch.query_x.shape[1]
        return max(1, EXAMPLES_PER_FORWARD // examples)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> dict[str, Tensor]:
        params = {name: p.detach() for name, p in self.backbone.named_parameters()}
        return self._adapt(params, support_x, support_y, self.hparams.eval_inner_steps, first_order=True)

    def predict(self, adapted: dict[str, Tensor], query_x: Tensor) -> Tensor:
        buffers = dict(self.backbone.named_buffers())
        return functional_call(self.backbone, {**buffers, **adapted}, (query_x,))


@dataclass
class FOMAMLHyperparameters(MAMLHyperparameters):
    first_order: bool = True


@register_algorithm("fomaml")
class FOMAML(MAML):
    """First-order MAML: MAML with the inner gradients treated as constants."""

    Hyperparameters = FOMAMLHyperparameters
