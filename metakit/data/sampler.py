"""The TaskSampler interface: where the tasks of meta-learning come from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator, Literal

import torch

from metakit.task_batch import TaskBatch

Problem = Literal["classification", "regression"]


class TaskSampler(ABC):
    """Draws batches of tasks, deterministically given a ``torch.Generator``.

    A sampler declares what its tasks look like so that backbones and
    algorithms can be built for them without special cases:

    - ``input_shape``: the shape of one example, e.g. ``(1, 28, 28)`` or ``(1,)``
    - ``num_outputs``: logits per example (the number of ways) or regression outputs
    - ``problem``: ``"classification"`` (cross-entropy, labels ``0..ways-1``)
      or ``"regression"`` (mean squared error)
    """

    input_shape: tuple[int, ...]
    num_outputs: int
    problem: Problem

    @abstractmethod
    def sample(self, num_tasks: int, generator: torch.Generator) -> TaskBatch:
        """Draw ``num_tasks`` independent tasks, using only ``generator`` for randomness."""

    def batches(self, num_tasks: int, generator: torch.Generator) -> Iterator[TaskBatch]:
        """An endless stream of batches of ``num_tasks`` tasks."""
        while True:
            yield self.sample(num_tasks, generator)
