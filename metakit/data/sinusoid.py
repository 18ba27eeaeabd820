"""Sinusoid regression, the MAML paper's toy problem (Finn et al. 2017, section 5.1)."""

from __future__ import annotations

import math

import torch

from metakit.data.sampler import TaskSampler
from metakit.errors import MetakitError
from metakit.registry import register_sampler
from metakit.task_batch import TaskBatch


@register_sampler("sinusoid")
class SinusoidSampler(TaskSampler):
    """Tasks ``y = A sin(x - phase)`` with ``A ~ U[0.1, 5]``, ``phase ~ U[0, pi]``.

    Each task has ``shots`` support and ``queries`` query points with
    ``x ~ U[-5, 5]``; ``x`` and ``y`` are ``[tasks, points, 1]``.
    """

    input_shape = (1,)
    num_outputs = 1
    problem = "regression"

    def __init__(
        self,
        shots: int = 10,
        queries: int | None = None,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
    ):
        queries = shots if queries is None else queries
        if shots < 1 or queries < 1:
            raise MetakitError(f"sinusoid tasks need shots >= 1 and queries >= 1, got {shots} and {queries}")
        self.shots, self.queries = shots, queries
        self.amplitude, self.phase, self.x_range = amplitude, phase, x_range

    def sample(self, num_tasks: int, generator: torch.Generator) -> TaskBatch:
        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            u = torch.rand(*shape, generator=generator, device=generator.device)
            return low + (high - low) * u

        amplitude = uniform(*self.amplitude, num_tasks, 1, 1)
        phase = uniform(*self.phase, num_tasks, 1, 1)
        x = uniform(*self.x_range, num_tasks, self.shots + self.queries, 1)
        y = amplitude * torch.sin(x - phase)
        return TaskBatch(x[:, : self.shots], y[:, : self.shots], x[:, self.shots :], y[:, self.shots :])

    def fingerprint(self) -> dict[str, object]:
        return {
            "sampler": "sinusoid",
            "shots": self.shots,
            "queries": self.queries,
            "amplitude": self.amplitude,
            "phase": self.phase,
            "x_range": self.x_range,
        }
