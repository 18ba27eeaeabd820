"""The speed and memory suite: every row of every configuration in its own process.

For each configuration and row: a ``gate`` process compares the row's float64
meta-gradient with metakit's (loop mapping, same order; the metakit loop rows
are that reference); a row that differs is reported ``WRONG`` and not timed.
Then a ``time`` process measures it, once per round: with several rounds the
rows of a configuration take turns (row 1, row 2, ..., row 1, row 2, ...), so
that a change in the machine's load between rows weighs on every row alike.
A process that runs past the timeout or the memory limit is reported as
``timeout`` or ``out of memory``, never waited for.

Every process runs with the same glibc malloc settings, ``MALLOC_TUNABLES``.
With glibc's adaptive defaults, whether a freed activation goes back to the
OS (and is page-faulted in again at the next meta-iteration) depends on the
order of earlier allocations: the same row moved by up to 30% between
processes here (metakit's loop 2.0-2.8 s in configuration A), and the rows
did not move together. Fixed thresholds keep freed blocks for reuse.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from metakit.bench.configs import CONFIGS, SpeedConfig
from metakit.bench.flops import meta_iteration_flops
from metakit.bench.gate import GATE_TOLERANCE
from metakit.bench.rows import ROWS
from metakit.engine.config import check_seed
from metakit.errors import MetakitError

REFERENCE_ROWS = ("metakit-loop", "metakit-loop-1st")
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"
"""Blocks up to 32 MiB come from the heap, and up to 1 GiB of free heap is kept
rather than returned to the OS. Ignored where the C library is not glibc; a
``GLIBC_TUNABLES`` already in the environment is kept instead."""


@dataclass
class SpeedSettings:
    """What to run. ``rounds``: timing processes per row, taken in turns with the other rows
    of the configuration (their iterations pooled); ``threads=0`` keeps torch's default;
    ``timeout_s`` bounds each process;
    ``memory_limit_gb`` caps each process's address space (CPU only); ``gate_tasks`` is how
    many of the batch's tasks the gate uses (0 = all); ``output=None`` writes nothing."""

    configs: tuple[SpeedConfig, ...] = tuple(CONFIGS.values())
    rows: tuple[str, ...] = tuple(ROWS)
    iterations: int = 10
    warmup: int = 2
    rounds: int = 1
    device: str = "cpu"
    threads: int = 0
    timeout_s: float | None = None
    memory_limit_gb: float | None = None
    gate_tasks: int = 4
    seed: int = 0
    output: Path | None = Path("docs/benchmarks.md")
    note: str = ""
    command: str = ""

    def validate(self) -> None:
        for name in self.rows:
            if name not in ROWS:
                raise MetakitError(f"unknown row '{name}'; use one of {', '.join(ROWS)}")
        if self.iterations < 1 or self.warmup < 0 or self.rounds < 1:
            raise MetakitError(
                "use --iterations >= 1 (10 or more for reported numbers), --warmup >= 0 and --rounds >= 1"
            )
        if self.timeout_s is not None and not 0 < self.timeout_s < math.inf:
            raise MetakitError(
                f"--timeout must be more than 0 seconds (leave it out: no limit), got {self.timeout_s}"
            )
        if self.memory_limit_gb is not None and not 0 < self.memory_limit_gb <= 2**30:
            raise MetakitError(
                "--memory-limit must be more than 0 and at most 2**30 GiB (leave it out: no limit), "
                f"got {self.memory_limit_gb}"
            )
        check_seed(self.seed)
        if self.threads < 0 or self.gate_tasks < 0:
            raise MetakitError("use --threads >= 0 (0: torch's default) and --gate-tasks >= 0 (0: all tasks)")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise MetakitError(f"device '{self.device}' is not available here; use --device cpu")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise MetakitError(f"unknown device '{self.device}'; use cpu or cuda[:index]")
        if self.memory_limit_gb and self.device != "cpu":
            raise MetakitError(
                "--memory-limit caps address space, which CUDA needs far more of; omit it on GPU"
            )


@dataclass
class RowResult:
    """One row of one configuration. ``status``: ``ok``, ``WRONG``, ``not installed``,
    ``timeout``, ``out of memory`` or ``failed: ...``; ``gate_error`` is ``None`` for
    the reference rows and rows that never reached the gate. ``times_ms`` pools the
    rounds' timed iterations; ``peak_rss_bytes`` is the highest of the rounds'."""

    config: str
    row: str
    second_order: bool
    status: str
    flops: int
    gate_error: float | None = None
    times_ms: list[float] = field(default_factory=list)
    peak_rss_bytes: int | None = None
    peak_cuda_bytes: int | None = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def gflops(self) -> float:
        return self.flops / self.median_ms / 1e6


@dataclass
class SuiteResult:
    machine: dict[str, Any]
    matmul_gflops: float
    rows: list[RowResult]


Launcher = Callable[[dict[str, Any], SpeedSettings], dict[str, Any]]


def launch(job: dict[str, Any], settings: SpeedSettings) -> dict[str, Any]:
    """Run ``job`` in a fresh ``python -m metakit.bench.worker`` and return its result."""
    limit = settings.memory_limit_gb

    def cap_memory() -> None:
        size = int(limit * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    try:
        done = subprocess.run(
            [sys.executable, "-m", "metakit.bench.worker"],
            input=json.dumps(job),
            env={"GLIBC_TUNABLES": MALLOC_TUNABLES, **os.environ},
            capture_output=True,
            text=True,
            timeout=settings.timeout_s,
            preexec_fn=cap_memory if limit else None,
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        killed = done.returncode == -9
        reason = "killed (out of memory?)" if killed else f"failed: exit {done.returncode}"
        return {"status": "out of memory" if limit and killed else reason, "stderr": done.stderr[-2000:]}
    return json.loads(lines[-1])


def gate_row(
    config: SpeedConfig, row_name: str, settings: SpeedSettings, launcher: Launcher = launch
) -> RowResult:
    """The row's result before timing: status ``ok`` when it may be timed, else why not."""
    row = ROWS[row_name]
    flops = meta_iteration_flops(config, row.second_order)
    result = RowResult(config.name, row_name, row.second_order, "ok", flops)
    if not row.installed():
        result.status = "not installed"
        return result
    if row_name not in REFERENCE_ROWS:
        job = {**_job(config, row_name, settings), "job": "gate", "gate_tasks": settings.gate_tasks}
        gate = launcher(job, settings)
        if gate["status"] != "ok":
            result.status = gate["status"]
            return result
        result.gate_error = gate["error"]
        if not result.gate_error <= GATE_TOLERANCE:
            result.status = "WRONG"
    return result


def time_row(config: SpeedConfig, result: RowResult, settings: SpeedSettings, launcher: Launcher = launch):
    """One timing process of a gated row; its iterations and peaks join ``result``'s."""
    timing = {"job": "time", "warmup": settings.warmup, "iterations": settings.iterations}
    timed = launcher({**_job(config, result.row, settings), **timing}, settings)
    result.status = timed["status"]
    result.times_ms += timed.get("times_ms", [])
    result.peak_rss_bytes = _highest(result.peak_rss_bytes, timed.get("peak_rss_bytes"))
    result.peak_cuda_bytes = _highest(result.peak_cuda_bytes, timed.get("peak_cuda_bytes"))


def _job(config: SpeedConfig, row_name: str, settings: SpeedSettings) -> dict[str, Any]:
    return {
        "config": asdict(config),
        "row": row_name,
        "device": settings.device,
        "threads": settings.threads,
        "seed": settings.seed,
    }


def _machine_failure(measured: dict[str, Any], settings: SpeedSettings) -> str:
    """What to do when the first process, which only measures the machine, did not finish."""
    status = measured["status"]
    if status == "timeout":
        return f"measuring the machine took more than --timeout {settings.timeout_s:g} s; raise it"
    if status == "out of memory":
        return f"measuring the machine ran out of --memory-limit {settings.memory_limit_gb:g} GiB; raise it"
    last = (measured.get("stderr") or "").strip().splitlines()[-1:] or ["no message"]
    return f"measuring the machine did not finish ({status}): {last[0]}"


def _highest(*values: int | None) -> int | None:
    return max((v for v in values if v is not None), default=None)


def run_speed_suite(
    settings: SpeedSettings, progress: Callable[[str], None] = print, launcher: Launcher = launch
) -> SuiteResult:
    """Measure the machine, then every row of every configuration, one process each: the
    gates first, then ``settings.rounds`` rounds of timing with the rows taking turns."""
    settings.validate()
    measured = launcher({"job": "machine", "device": settings.device, "threads": settings.threads}, settings)
    if measured["status"] != "ok":
        raise MetakitError(_machine_failure(measured, settings))
    rows = []
    for config in settings.configs:
        gated = [gate_row(config, row_name, settings, launcher) for row_name in settings.rows]
        for round_index in range(settings.rounds):
            for result in gated:
                if result.status == "ok":
                    time_row(config, result, settings, launcher)
                timing = f"{result.median_ms:.1f} ms" if result.status == "ok" else result.status
                label = f" (round {round_index + 1})" if settings.rounds > 1 else ""
                progress(f"{config.name:>10} {result.row:<17} {timing}{label}")
        rows += gated
    return SuiteResult(measured["machine"], measured["matmul_gflops"], rows)
