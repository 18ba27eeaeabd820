"""A batch of few-shot tasks, stacked along a leading task dimension."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TaskBatch:
    """Support and query sets of ``tasks`` tasks.

    Shapes (``n_support = ways * shots`` and ``n_query = ways * queries`` for
    classification, the number of points for regression):

    - ``support_x``: ``[tasks, n_support, *input_shape]``
    - ``support_y``: ``[tasks, n_support]`` class indices (int64) for
      classification, ``[tasks, n_support, outputs]`` for regression
    - ``query_x``: ``[tasks, n_query, *input_shape]``
    - ``query_y``: like ``support_y`` with ``n_query``
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor

    @property
    def num_tasks(self) -> int:
        return self.support_x.shape[0]

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(*(t.to(device) for t in self.tensors()))

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (self.support_x, self.support_y, self.query_x, self.query_y)

    def task(self, index: int) -> TaskBatch:
        """Task ``index`` alone, keeping a task dimension of 1."""
        return TaskBatch(*(t[index : index + 1] for t in self.tensors()))
