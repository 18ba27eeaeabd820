"""The Backbone interface: a network split into a feature extractor and a head."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

from torch import Tensor, nn


class Backbone(ABC, nn.Module):
    """Maps ``x: [batch, *input_shape]`` to ``[batch, num_outputs]``.

    A backbone is an ordinary ``nn.Module`` whose state lives in its
    parameters and buffers only, so it can be run functionally with
    ``torch.func.functional_call(backbone, {**params, **buffers}, x)``, which
    is how every algorithm runs it with adapted (fast) weights. Its last layer
    is the linear ``head`` (parameters ``head.*``), so algorithms that adapt
    only the head (ANIL) or replace it (Prototypical Networks) can find it by
    name. Normalisation layers must not keep running statistics: meta-learning
    normalises with the statistics of the batch at hand.
    """

    head: nn.Linear

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_outputs = num_outputs

    @abstractmethod
    def features(self, x: Tensor) -> Tensor:
        """``x: [batch, *input_shape]`` -> ``[batch, feature_dim]``."""

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward_tasks(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Several tasks at once, each with weights of its own: ``params[name]: [tasks,
        *shape]`` for every parameter, ``x: [tasks, batch, *input_shape]`` ->
        ``[tasks, batch, num_outputs]``, task ``t`` being ``functional_call(self,
        {name: w[t]}, x[t])``. Optional: conv4 has one (grouped convolutions); without
        it, algorithms run the tasks of a batch one at a time."""
        raise NotImplementedError(f"{type(self).__name__} has no task-batched forward")

    @property
    def batches_tasks(self) -> bool:
        """Whether this backbone implements ``forward_tasks``."""
        return type(self).forward_tasks is not Backbone.forward_tasks
