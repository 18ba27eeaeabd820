"""Whether code is running inside a ``torch.func`` transform (``grad``, ``vmap``).

The inner loop switches its gradient function on it, and conv4's CPU kernels
(convolution, BatchNorm) fall back to torch's layers under a transform, which
cannot batch or differentiate their custom autograd functions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def inside_functorch_transform() -> bool:
    return torch._C._functorch.peek_interpreter_stack() is not None


def cpu_kernels_apply(x: Tensor) -> bool:
    """Whether conv4's CPU kernels may run on ``x``: on the CPU, outside transforms."""
    return x.device.type == "cpu" and not inside_functorch_transform()
