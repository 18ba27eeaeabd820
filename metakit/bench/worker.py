"""The child process of the speed suite: one job per process, so peak memory is the job's own.

Run as ``python -m metakit.bench.worker``; reads one JSON job from stdin and
writes one JSON result line to stdout. Jobs:

- ``machine``: describe the machine and measure fp32 matmul GFLOP/s.
- ``gate``: float64 meta-gradient error of a row against metakit's loop mapping
  of the same order.
- ``time``: warm-up, then timed meta-iterations of a row in float32; peak RSS
  (``ru_maxrss``) of this process plus its task worker processes' (``metakit-processes``)
  and, on CUDA, ``torch.cuda.max_memory_allocated``.

A meta-iteration is ``step(batch)`` from zeroed gradients to the meta-gradient
in ``.grad``. Neither zeroing the gradients nor an optimizer step is timed: both
are the same for every row and take well under a millisecond for conv4.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

import torch

from metakit import worker_processes
from metakit.bench import machine
from metakit.bench.configs import SpeedConfig
from metakit.bench.gate import gate_error
from metakit.bench.rows import ROWS, metakit_maml
from metakit.errors import out_of_memory


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    device = job["device"]
    if job["job"] == "machine":
        return {"machine": machine.describe(device), "matmul_gflops": machine.matmul_gflops(device)}
    config = SpeedConfig(**job["config"])
    row = ROWS[job["row"]]
    if job["job"] == "gate":
        reference = metakit_maml("loop", first_order=not row.second_order, tasks_per_forward=1)
        return {"error": gate_error(row.build, reference, config, job["seed"], device, job["gate_tasks"])}
    return _time_row(row.build, config, job)


def _time_row(build, config: SpeedConfig, job: dict[str, Any]) -> dict[str, Any]:
    device = job["device"]
    backbone = config.backbone(job["seed"], torch.float32, device)
    batch = config.batch(job["seed"], torch.float32, device)
    step = build(backbone, config)

    def once() -> float:
        for p in backbone.parameters():
            p.grad = None
        machine.synchronize(device)
        start = time.perf_counter()
        step(batch)
        machine.synchronize(device)
        return (time.perf_counter() - start) * 1e3

    for _ in range(job["warmup"]):
        once()
    times = [once() for _ in range(job["iterations"])]
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {"times_ms": times, "peak_rss_bytes": own_peak + worker_processes.peak_rss_bytes()}
    if device.startswith("cuda"):
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(torch.device(device))
    return result


def main() -> None:
    job = json.loads(sys.stdin.read())
    try:
        result = {"status": "ok", **run_job(job)}
    except Exception as error:  # reported in the row, so that one row's failure does not end the suite
        status = "out of memory" if out_of_memory(error) else f"failed: {type(error).__name__}: {error}"
        result = {"status": status}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
