"""Whether code is running inside a ``torch.func`` transform (``grad``, ``vmap``).

The inner loop switches its gradient function on it, and conv4's CPU kernels
(convolution, BatchNorm) fall back to torch's layers under a transform, which
cannot batch or differentiate their custom autograd functions.
"""

from __future__ import annotations

import torch


def inside_functorch_transform() -> bool:
    return torch._C._functorch.peek_interpreter_stack() is not None
