"""The Algorithm interface: a meta-learner that owns its meta-parameters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metakit.backbones.backbone import Backbone
from metakit.data.sampler import Problem
from metakit.errors import MetakitError
from metakit.hyperparameters import Hyperparameters
from metakit.task_batch import TaskBatch


class Algorithm(ABC, nn.Module):
    """A meta-learning algorithm over a backbone.

    Its meta-parameters are its ``nn.Module`` parameters (the backbone's, plus
    any of its own such as learned inner step sizes), so an optimizer, a
    checkpoint and a device move treat it like any module.

    Subclasses set ``Hyperparameters`` to their dataclass; the constructor
    takes the hyperparameters as keyword arguments, so
    ``create_algorithm("maml", backbone=b, problem="classification", inner_lr=0.4)``
    works for every algorithm.
    """

    Hyperparameters: ClassVar[type[Hyperparameters]]

    def __init__(self, backbone: Backbone, problem: Problem, **hyperparameters: Any):
        super().__init__()
        if problem not in ("classification", "regression"):
            raise MetakitError(f"problem must be 'classification' or 'regression', got '{problem}'")
        self.backbone = backbone
        self.problem = problem
        self.hparams = self.Hyperparameters.from_dict(hyperparameters)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy on ``[n, ways]`` logits and ``[n]`` labels, or MSE on ``[n, outputs]``."""
        if self.problem == "classification":
            return F.cross_entropy(outputs, targets)
        return F.mse_loss(outputs, targets)

    def metrics(self, outputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Detached per-task figures for logging: loss, and accuracy for classification."""
        with torch.no_grad():
            found = {"loss": self.loss(outputs, targets)}
            if self.problem == "classification":
                found["accuracy"] = (outputs.argmax(-1) == targets).float().mean()
            return found

    @abstractmethod
    def meta_loss(self, batch: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The meta-objective of a batch of tasks, and its metrics.

        ``loss`` is a scalar whose gradient w.r.t. ``self.parameters()`` is the
        algorithm's meta-gradient; ``metrics`` maps names to detached scalars
        (averaged over tasks), e.g. the query loss and accuracy after adaptation.
        """

    @abstractmethod
    def adapt(self, support_x: Tensor, support_y: Tensor) -> Any:
        """Adapt to one task (``support_x: [n_support, *input_shape]``); no meta-graph is kept."""

    @abstractmethod
    def predict(self, adapted: Any, query_x: Tensor) -> Tensor:
        """Outputs ``[n_query, num_outputs]`` for one task's ``query_x`` under ``adapted``."""
