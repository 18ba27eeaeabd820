"""Training precision: float32, or the meta-loss under bfloat16 autocast.

``bf16`` runs the forward passes of a meta-iteration (inner loop and query
loss) under ``torch.autocast``: convolutions and linear layers in bfloat16,
the meta-parameters, their gradients and the optimizer in float32. On the
2-core CPU of ``docs/benchmarks.md`` (AVX-512 BF16) it made a second-order
meta-iteration of conv4 1.2-1.4x faster. On a CPU without AVX-512, where oneDNN
emulates bfloat16, it was about 7x slower, so training warns there. Evaluation
always runs in float32.
"""

from __future__ import annotations

import contextlib
import warnings

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


def autocast_state(device_type: str) -> dict:
    """The caller's autocast settings on ``device_type`` as ``torch.autocast`` keywords: torch
    keeps them per thread, so a worker thread or process must enter them again."""
    return dict(
        device_type=device_type,
        dtype=torch.get_autocast_dtype(device_type),
        enabled=torch.is_autocast_enabled(device_type),
    )


def warn_if_emulated(precision: str, device: torch.device | str) -> None:
    """Warn when ``bf16`` is asked of a CPU on which oneDNN has no native bfloat16."""
    if precision == "bf16" and torch.device(device).type == "cpu" and not native_cpu_bf16():
        warnings.warn(
            "bf16 is emulated on this CPU (oneDNN has no native bfloat16 here) and runs several "
            "times slower than fp32; use --precision fp32",
            stacklevel=2,
        )


def native_cpu_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (on x86: AVX-512)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
