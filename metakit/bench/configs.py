"""The benchmark settings: task shapes of each configuration, with seeded synthetic tasks and weights.

Every row of a configuration builds its network and its batch from the same
seed, so all rows start from identical weights and see identical tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metakit.backbones.backbone import Backbone
from metakit.errors import MetakitError
from metakit.registry import create_backbone
from metakit.task_batch import TaskBatch


@dataclass(frozen=True)
class SpeedConfig:
    """``ways``-way ``shots``-shot classification, ``queries`` query images per class,
    ``tasks`` tasks per meta-batch, ``inner_steps`` SGD steps of size ``inner_lr``,
    on conv4 (``hidden`` filters) over ``1 x image_size x image_size`` inputs."""

    name: str
    ways: int
    shots: int
    queries: int
    tasks: int
    inner_steps: int
    inner_lr: float
    hidden: int = 64
    image_size: int = 28

    def describe(self) -> str:
        return (
            f"{self.ways}-way {self.shots}-shot, {self.queries} query image{'s' if self.queries > 1 else ''} "
            f"per class, {self.tasks} tasks, "
            f"{self.inner_steps} inner step{'s' if self.inner_steps > 1 else ''} (lr {self.inner_lr}), "
            f"conv4 hidden {self.hidden}, {self.image_size}x{self.image_size}"
        )

    def backbone(self, seed: int, dtype: torch.dtype, device: str) -> Backbone:
        """conv4 with the weights that ``seed`` gives, identical in every process."""
        torch.manual_seed(seed)
        shape = (1, self.image_size, self.image_size)
        backbone = create_backbone("conv4", input_shape=shape, num_outputs=self.ways, hidden=self.hidden)
        return backbone.to(device=device, dtype=dtype)

    def batch(self, seed: int, dtype: torch.dtype, device: str) -> TaskBatch:
        """Gaussian-noise images; labels ``0..ways-1``, each repeated ``shots`` (``queries``) times.

        ``support_x: [tasks, ways*shots, 1, size, size]``, ``query_x: [tasks, ways*queries, 1, size, size]``.
        """
        generator = torch.Generator().manual_seed(seed)
        image = (1, self.image_size, self.image_size)
        support_x = torch.randn(self.tasks, self.ways * self.shots, *image, generator=generator, dtype=dtype)
        query_x = torch.randn(self.tasks, self.ways * self.queries, *image, generator=generator, dtype=dtype)
        support_y = torch.arange(self.ways).repeat_interleave(self.shots).expand(self.tasks, -1)
        query_y = torch.arange(self.ways).repeat_interleave(self.queries).expand(self.tasks, -1)
        return TaskBatch(support_x, support_y.contiguous(), query_x, query_y.contiguous()).to(device)


CONFIGS = {
    config.name: config
    for config in (
        SpeedConfig("A", ways=5, shots=1, queries=15, tasks=32, inner_steps=1, inner_lr=0.4),
        SpeedConfig("B", ways=5, shots=1, queries=15, tasks=32, inner_steps=5, inner_lr=0.4),
        SpeedConfig("C", ways=20, shots=1, queries=5, tasks=16, inner_steps=5, inner_lr=0.1),
        SpeedConfig("paper-5w", ways=5, shots=1, queries=1, tasks=32, inner_steps=1, inner_lr=0.4),
        SpeedConfig("paper-20w", ways=20, shots=1, queries=1, tasks=16, inner_steps=5, inner_lr=0.1),
    )
}
"""The issue's configurations A, B, C and the MAML paper's Omniglot settings (queries = shots)."""


def configs_named(names: list[str]) -> tuple[SpeedConfig, ...]:
    """The configurations called ``names``, in that order."""
    for name in names:
        if name not in CONFIGS:
            raise MetakitError(f"unknown config '{name}'; use one of {', '.join(CONFIGS)}")
    return tuple(CONFIGS[name] for name in names)
