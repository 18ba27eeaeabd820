"""Model-Agnostic Meta-Learning (Finn, Abbeel, Levine 2017) and its first-order variant."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from torch import Tensor
from torch.func import functional_call

from metakit.algorithms.algorithm import Algorithm
from metakit.backbones.backbone import Backbone
from metakit.data.sampler import Problem
from metakit.errors import MetakitError
from metakit.hyperparameters import Hyperparameters
from metakit.inner_loop import adapt
from metakit.registry import register_algorithm
from metakit.task_batch import TaskBatch
from metakit.task_mapping import check_mapping, mapped_meta_loss


@dataclass
class MAMLHyperparameters(Hyperparameters):
    """``inner_lr``/``inner_steps``: the inner SGD; ``eval_inner_steps``: steps when
    adapting at evaluation; ``first_order``: drop second derivatives (FOMAML);
    ``task_mapping``: ``auto``, ``loop``, ``threads`` or ``vmap`` over the tasks of a batch."""

    inner_lr: float = 0.4
    inner_steps: int = 1
    eval_inner_steps: int = 3
    first_order: bool = False
    task_mapping: str = "auto"


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
        check_mapping(self.hparams.task_mapping)

    def _adapt(self, params: dict[str, Tensor], x: Tensor, y: Tensor, steps: int, first_order: bool):
        buffers = dict(self.backbone.named_buffers())
        return adapt(
            self.backbone, params, buffers, x, y, self.loss, steps, self.hparams.inner_lr, first_order
        )

    def _task_objective(self, params, support_x, support_y, query_x, query_y):
        fast = self._adapt(params, support_x, support_y, self.hparams.inner_steps, self.hparams.first_order)
        outputs = self.predict(fast, query_x)
        return self.loss(outputs, query_y), self.metrics(outputs, query_y)

    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        params = dict(self.backbone.named_parameters())
        return mapped_meta_loss(
            self._task_objective, params, batch, self.hparams.task_mapping, replicate=self._replica_objective
        )

    def _replica_objective(self):
        return copy.deepcopy(self)._task_objective

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
