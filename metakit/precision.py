"""Training precision: float32, or the meta-loss under bfloat16 autocast.

``bf16`` runs the forward passes of a meta-iteration (inner loop and query
loss) under ``torch.autocast``: convolutions and linear layers in bfloat16,
the meta-parameters, their gradients and the optimizer in float32. On the
2-core CPU of ``docs/benchmarks.md`` (AVX-512 BF16) it made a second-order
meta-iteration of conv4 1.2-1.4x faster. Evaluation always runs in float32.
"""

from __future__ import annotations

import contextlib

import torch

from metakit.errors import MetakitError

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise MetakitError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context in which a meta-loss of ``precision`` is computed on ``device``."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
