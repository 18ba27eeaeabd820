"""The four-block convolutional network of few-shot learning (Vinyals et al. 2016)."""

from __future__ import annotations

from torch import Tensor, nn

from metakit.backbones.backbone import Backbone
from metakit.backbones.batch_norm import BatchNorm2d
from metakit.backbones.max_pool import MaxPool2x2
from metakit.registry import register_backbone


@register_backbone("conv4")
class Conv4(Backbone):
    """4 x [Conv2d 3x3 (``hidden`` filters, padding 1), BatchNorm, ReLU, 2x2 max-pool] -> Linear.

    ``x: [batch, in_channels, image_size, image_size]``. At 28x28 the feature
    map ends at 1x1, so the feature is ``hidden``-dimensional. With
    ``strided=True`` (registered as ``conv4-strided``) the pools are replaced
    by stride-2 convolutions and the feature is the spatial mean, as in the
    MAML paper's Omniglot network.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 28, 28),
        num_outputs: int = 5,
        hidden: int = 64,
        strided: bool = False,
    ):
        super().__init__(input_shape, num_outputs)
        in_channels, size, _ = input_shape
        blocks: list[nn.Module] = []
        for block in range(4):
            channels = in_channels if block == 0 else hidden
            stride = 2 if strided else 1
            blocks += [
                nn.Conv2d(channels, hidden, 3, stride=stride, padding=1),
                BatchNorm2d(hidden, track_running_stats=False),
            ]
            # max-pool and ReLU commute (ReLU is monotone); pooling first runs the ReLU,
            # its backward and its double backward on a quarter of the activations.
            blocks += [nn.ReLU()] if strided else [MaxPool2x2(), nn.ReLU()]
            size = (size + 1) // 2 if strided else size // 2
        self.strided = strided
        self.blocks = nn.Sequential(*blocks)
        feature_dim = hidden if strided else hidden * size * size
        self.head = nn.Linear(feature_dim, num_outputs)

    def features(self, x: Tensor) -> Tensor:
        h = self.blocks(x)
        return h.mean(dim=(-2, -1)) if self.strided else h.flatten(1)


@register_backbone("conv4-strided")
def conv4_strided(
    input_shape: tuple[int, ...] = (1, 28, 28), num_outputs: int = 5, hidden: int = 64
) -> Conv4:
    """The MAML paper's Omniglot network: stride-2 convolutions, no max-pooling."""
    return Conv4(input_shape, num_outputs, hidden, strided=True)
