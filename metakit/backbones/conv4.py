"""The four-block convolutional network of few-shot learning (Vinyals et al. 2016)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from metakit.backbones.backbone import Backbone
from metakit.backbones.batch_norm import BatchNorm2d, batch_norm
from metakit.backbones.convolution import Conv2d, conv2d
from metakit.errors import MetakitError
from metakit.registry import register_backbone
from metakit.transforms import cpu_kernels_apply


@register_backbone("conv4")
class Conv4(Backbone):
    """4 x [Conv2d 3x3 (``hidden`` filters, padding 1), BatchNorm, ReLU, 2x2 max-pool] -> Linear.

    ``x: [batch, in_channels, image_size, image_size]``. At 28x28 the feature
    map ends at 1x1, so the feature is ``hidden``-dimensional. With
    ``strided=True`` (registered as ``conv4-strided``) the pools are replaced
    by stride-2 convolutions and the feature is the spatial mean, as in the
    MAML paper's Omniglot network.

    On the CPU the activations are channels-last (NHWC): there torch's
    convolution, BatchNorm and max-pool kernels for that layout ran 1.15x, 1.8-2.8x
    and 14x faster than for NCHW at conv4's sizes, and a meta-iteration of
    configuration A of ``metakit bench speed`` 1.5x faster (one thread). The
    results are those of the NCHW network (``tests/test_backbones.py``). Its
    convolutions and BatchNorms have cheaper second derivatives there
    (``convolution.py``, ``batch_norm.py``).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 28, 28),
        num_outputs: int = 5,
        hidden: int = 64,
        strided: bool = False,
    ):
        super().__init__(input_shape, num_outputs)
        if len(input_shape) != 3:
            raise MetakitError(
                f"conv4 takes images (channels, height, width), not inputs of shape {tuple(input_shape)}; "
                "pick another backbone, such as mlp"
            )
        if hidden < 1:
            raise MetakitError(f"conv4 needs hidden >= 1 filters, got {hidden}")
        in_channels, size, _ = input_shape
        blocks: list[nn.Module] = []
        for block in range(4):
            channels = in_channels if block == 0 else hidden
            stride = 2 if strided else 1
            blocks += [
                Conv2d(channels, hidden, 3, stride=stride, padding=1),
                BatchNorm2d(hidden, track_running_stats=False),
            ]
            # max-pool and ReLU commute (ReLU is monotone); pooling first runs the ReLU,
            # its backward and its double backward on a quarter of the activations.
            blocks += [nn.ReLU()] if strided else [nn.MaxPool2d(2), nn.ReLU()]
            size = (size + 1) // 2 if strided else size // 2
        self.strided = strided
        self.blocks = nn.Sequential(*blocks)
        feature_dim = hidden if strided else hidden * size * size
        self.head = nn.Linear(feature_dim, num_outputs)

    def features(self, x: Tensor) -> Tensor:
        h = self.blocks(_channels_last(x))
        return h.mean(dim=(-2, -1)) if self.strided else h.flatten(1)

    def forward_tasks(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """The tasks' images side by side as channels, ``[batch, tasks * channels, h, w]``:
        each convolution is one grouped convolution (a group per task), and BatchNorm over
        ``tasks * hidden`` channels normalises each task with its own statistics."""
        tasks, batch = x.shape[:2]
        h = _channels_last(x.transpose(0, 1).flatten(1, 2))
        for index, layer in enumerate(self.blocks):
            weight, bias = params.get(f"blocks.{index}.weight"), params.get(f"blocks.{index}.bias")
            if isinstance(layer, nn.Conv2d):
                weight, bias = weight.flatten(0, 1), bias.flatten()
                h = conv2d(h, weight, bias, layer.stride, layer.padding, groups=tasks)
            elif isinstance(layer, nn.BatchNorm2d):
                h = batch_norm(h, weight.flatten(), bias.flatten(), layer.eps)
            else:
                h = layer(h)
        h = h.mean(dim=(-2, -1)) if self.strided else h
        features = h.reshape(batch, tasks, -1).transpose(0, 1)
        head_weight, head_bias = params["head.weight"], params["head.bias"]
        return torch.baddbmm(head_bias.unsqueeze(1), features, head_weight.transpose(1, 2))


def _channels_last(x: Tensor) -> Tensor:
    """``x: [batch, channels, h, w]`` as channels-last on the CPU outside ``torch.func``
    transforms (which cannot batch that layout); as it is elsewhere. The strides are set
    even for one channel, where ``x.contiguous(memory_format=torch.channels_last)`` keeps
    the NCHW strides (both layouts describe it) and the first convolution would then
    write an NCHW output."""
    if not cpu_kernels_apply(x):
        return x
    batch, channels, height, width = x.shape
    nhwc = x.new_empty(batch, height, width, channels).permute(0, 3, 1, 2)
    return nhwc.copy_(x)


@register_backbone("conv4-strided")
def conv4_strided(
    input_shape: tuple[int, ...] = (1, 28, 28), num_outputs: int = 5, hidden: int = 64
) -> Conv4:
    """The MAML paper's Omniglot network: stride-2 convolutions, no max-pooling."""
    return Conv4(input_shape, num_outputs, hidden, strided=True)
