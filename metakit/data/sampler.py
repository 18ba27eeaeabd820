"""The TaskSampler interface: where the tasks of meta-learning come from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, Literal

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
        """Draw ``num_tasks`` independent tasks, using only ``generator`` (a CPU
        generator) for randomness, so the same seed gives the same tasks on any device."""

    def fingerprint(self) -> dict[str, Any]:
        """What this sampler draws from (JSON values), recorded with every run and result:
        e.g. the split, its seed and a hash of the data actually used."""
        return {"sampler": type(self).__name__}

    def batches(self, num_tasks: int, generator: torch.Generator) -> Iterator[TaskBatch]:
        """An endless stream of batches of ``num_tasks`` tasks."""
        while True:
            yield self.sample(num_tasks, generator)

    def fixed_tasks(self, count: int, seed: int, batch_size: int = 50) -> Iterator[TaskBatch]:
        """The same ``count`` tasks for the same ``seed``, every time: an evaluation set
        on which two runs can be compared. Drawn lazily in batches of ``batch_size``."""
        generator = torch.Generator().manual_seed(seed)
        for start in range(0, count, batch_size):
            yield self.sample(min(batch_size, count - start), generator)
