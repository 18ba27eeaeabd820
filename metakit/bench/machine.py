"""The machine a benchmark ran on, and the fp32 matrix-multiply rate it reaches."""

from __future__ import annotations

import os
import statistics
import time

import torch

from metakit.environment import cpu_model


def describe(device: str) -> dict[str, str | int]:
    """Torch version, CPU model, logical CPU count, torch's thread count, the glibc malloc
    tunables in force, and the GPU if used."""
    found: dict[str, str | int] = {
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpus": torch.multiprocessing.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": device,
        "malloc": os.environ.get("GLIBC_TUNABLES", "glibc defaults"),
    }
    if device.startswith("cuda"):
        found["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return found


MATMUL_SIZE = 2048
MATMUL_REPEATS = 5


def matmul_gflops(device: str) -> float:
    """Median GFLOP/s of ``MATMUL_REPEATS`` fp32 ``[n, n] @ [n, n]`` products (``2 n^3`` FLOPs,
    ``n = MATMUL_SIZE``) after one warm-up product."""
    size = MATMUL_SIZE
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    seconds = []
    for _ in range(MATMUL_REPEATS + 1):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(seconds[1:]) / 1e9


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))
