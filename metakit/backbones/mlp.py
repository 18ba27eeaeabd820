"""A fully connected network: sinusoid regression and the MAML paper's MLP baseline."""

from __future__ import annotations

import math

from torch import Tensor, nn

from metakit.backbones.backbone import Backbone
from metakit.errors import MetakitError
from metakit.registry import register_backbone


@register_backbone("mlp")
class MLP(Backbone):
    """Flatten -> [Linear, (BatchNorm), ReLU] per hidden size -> Linear.

    ``hidden=(40, 40)`` without batch norm is the MAML sinusoid network;
    ``hidden=(256, 128, 64, 64)`` with ``batch_norm=True`` is the paper's
    non-convolutional Omniglot baseline.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1,),
        num_outputs: int = 1,
        hidden: tuple[int, ...] = (40, 40),
        batch_norm: bool = False,
    ):
        super().__init__(input_shape, num_outputs)
        if any(size < 1 for size in hidden):
            raise MetakitError(f"mlp needs hidden sizes >= 1, got {list(hidden)}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size, track_running_stats=False))
            layers.append(nn.ReLU())
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_outputs)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)
