"""The speed table: markdown to stdout, appended to ``docs/benchmarks.md``."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from metakit.bench.configs import SpeedConfig
from metakit.bench.flops import meta_iteration_flops
from metakit.bench.gate import GATE_TOLERANCE
from metakit.bench.machine import MATMUL_SIZE
from metakit.bench.rows import ROWS
from metakit.bench.speed import RowResult, SpeedSettings, SuiteResult
from metakit.errors import MetakitError

MB = 2**20


def format_report(suite: SuiteResult, settings: SpeedSettings, date: datetime.date | None = None) -> str:
    """A markdown section: machine, settings, then one table per configuration."""
    date = date or datetime.date.today()
    machine = suite.machine
    gpu = f", GPU {machine['gpu']}" if "gpu" in machine else ""
    gate_tasks = f"the first {settings.gate_tasks} tasks" if settings.gate_tasks else "all tasks"
    lines = [
        f"## Speed and memory, {date.isoformat()}" + (f" ({settings.note})" if settings.note else ""),
        "",
        f"Command: `{settings.command}`" if settings.command else "",
        "",
        f"Machine: {machine['cpu']} ({machine['cpus']} logical CPUs){gpu}; torch {machine['torch']}; "
        f"{machine['threads']} thread(s); device {machine['device']}; malloc: {machine.get('malloc', '-')}. "
        f"fp32 matmul ({MATMUL_SIZE} x {MATMUL_SIZE}): {suite.matmul_gflops:.1f} GFLOP/s.",
        "",
        _sampling(settings) + "A meta-iteration is the meta-gradient of one batch into `.grad` "
        "(no optimizer step). Gate: float64 meta-gradient against metakit's loop mapping of the same order, "
        "one task per forward, "
        f"on {gate_tasks} of the batch, tolerance {GATE_TOLERANCE:g} of the largest entry (metakit's loop "
        "mapping is itself tested against independent references in `tests/test_maml_gradients.py`). "
        "GFLOP/s counts convolutions and the head (forward, backward, second-order terms; "
        "`metakit/bench/flops.py`). Ratios are this row over second-order metakit with the task mapping "
        "that `auto` picks for images on this machine (processes on a CPU with more than one torch thread, "
        "vmap on CUDA), tasks grouped as `tasks_per_forward=0` chooses (`metakit-threads-1`: one task per "
        "forward; the loop rows too; `metakit-vmap-8`: chunks of 8 tasks through vmap, the others all "
        "tasks at once). Peers run the conv4 "
        "their users write ([Conv2d, BatchNorm2d, ReLU, MaxPool2d] x 4, torch's layers) with metakit's "
        "weights; `plain-loop-metakit-conv4` is the plain loop on metakit's conv4, a diagnostic that "
        "separates the network's share of a difference from the algorithm's. `metakit-bf16` is "
        "metakit's `auto` mapping with the meta-loss under bfloat16 autocast (`--precision bf16` of "
        "`metakit train`); the float64 gate does not see the autocast, so it checks the algorithm only, "
        "and `metakit bench omniglot --precision bf16` measures what the precision costs in accuracy. "
        "`metakit-processes` splits the tasks as `metakit-threads` does, over worker processes instead "
        "of threads (`task_mapping=processes`); its peak RSS is the sum of its processes' peaks, which "
        "counts the libraries they share once per process.",
        "",
    ]
    for config in settings.configs:
        rows = [r for r in suite.rows if r.config == config.name]
        lines += _config_table(config, rows, suite.matmul_gflops, machine)
    return "\n".join(lines) + "\n"


def _sampling(settings: SpeedSettings) -> str:
    if settings.rounds == 1:
        return (
            f"Median of {settings.iterations} meta-iterations after {settings.warmup} warm-up, one process "
            "per row (peak RSS is the process's). "
        )
    return (
        f"Median of {settings.rounds} x {settings.iterations} meta-iterations: {settings.rounds} rounds in "
        "which the rows of a configuration take turns, one process per row and round, each after "
        f"{settings.warmup} warm-up (peak RSS is the highest of the row's processes). "
    )


def _config_table(config: SpeedConfig, rows: list[RowResult], matmul: float, machine: dict) -> list[str]:
    cuda = machine["device"] != "cpu"
    second, first = (meta_iteration_flops(config, order) / 1e9 for order in (True, False))
    header = ["row", "order", "gate", "median ms", "min-max ms", "peak RSS MB"]
    header += ["peak CUDA MB"] if cuda else []
    header += ["GFLOP/s (of matmul)", "time / metakit", "RSS / metakit"]
    baseline = _baseline(rows, machine)
    table = [
        f"### {config.name}: {config.describe()}",
        "",
        f"{second:.2f} GFLOP per second-order meta-iteration, {first:.2f} first order.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    table += ["| " + " | ".join(_cells(row, baseline, matmul, cuda)) + " |" for row in rows]
    return table + ["", *_summary(rows, baseline), ""]


def _baseline(rows: list[RowResult], machine: dict) -> RowResult | None:
    """The second-order metakit row that ``task_mapping="auto"`` runs for image tasks on
    this machine (vmap on CUDA; on the CPU processes, or a loop with one torch thread), if
    it was timed."""
    if machine["device"] != "cpu":
        name = "metakit-vmap"
    else:
        name = "metakit-processes" if machine["threads"] > 1 else "metakit-loop"
    return next((r for r in rows if r.row == name and r.status == "ok"), None)


def _cells(row: RowResult, baseline: RowResult | None, matmul: float, cuda: bool) -> list[str]:
    gate = "reference" if row.gate_error is None and row.status == "ok" else _gate(row)
    cells = [row.row, "2nd" if row.second_order else "1st", gate]
    if row.status != "ok":
        return cells + [row.status] + ["-"] * (6 if cuda else 5)
    cells += [
        f"{row.median_ms:.1f}",
        f"{min(row.times_ms):.1f}-{max(row.times_ms):.1f}",
        f"{row.peak_rss_bytes / MB:.0f}",
    ]
    cells += [f"{row.peak_cuda_bytes / MB:.0f}"] if cuda else []
    cells.append(f"{row.gflops:.1f} ({100 * row.gflops / matmul:.0f}%)")
    if baseline is None or not row.second_order:
        return cells + ["-", "-"]
    return cells + [
        f"{row.median_ms / baseline.median_ms:.2f}",
        f"{row.peak_rss_bytes / baseline.peak_rss_bytes:.2f}",
    ]


def _gate(row: RowResult) -> str:
    if row.gate_error is None:
        return "-"
    return f"{row.gate_error:.1e}" + (" WRONG" if row.status == "WRONG" else "")


def _summary(rows: list[RowResult], baseline: RowResult | None) -> list[str]:
    timed = [r for r in rows if r.status == "ok"]
    peers = [r for r in timed if ROWS[r.row].role == "peer"]
    if baseline is None or not peers:
        return []
    fastest = min(peers, key=lambda r: r.median_ms)
    leanest = min(peers, key=lambda r: r.peak_rss_bytes)
    mb = baseline.peak_rss_bytes / MB, leanest.peak_rss_bytes / MB
    ratio = fastest.median_ms / baseline.median_ms
    lines = [
        f"metakit ({baseline.row}) {baseline.median_ms:.1f} ms vs fastest peer ({fastest.row}) "
        f"{fastest.median_ms:.1f} ms: peer / metakit time {ratio:.2f}; peak RSS "
        f"{mb[0]:.0f} MB vs lowest peer ({leanest.row}) {mb[1]:.0f} MB."
    ]
    for row in (r for r in timed if ROWS[r.row].precision != "fp32" and r.second_order):
        lines.append(
            f"metakit in {ROWS[row.row].precision} autocast ({row.row}) {row.median_ms:.1f} ms: "
            f"peer / metakit time {fastest.median_ms / row.median_ms:.2f}; "
            f"peak RSS {row.peak_rss_bytes / MB:.0f} MB."
        )
    for row in (r for r in timed if ROWS[r.row].role == "diagnostic"):
        lines.append(
            f"Diagnostic {row.row} (a peer on metakit's conv4): {row.median_ms:.1f} ms, "
            f"time / metakit {row.median_ms / baseline.median_ms:.2f}."
        )
    return lines


def check_appendable(path: Path | None) -> None:
    """Refuse, before a suite runs for minutes or hours, an output it could not append to
    (``None``: stdout only)."""
    if path is None:
        return
    try:
        if path.exists():
            writable = path.is_file() and os.access(path, os.W_OK)
        else:
            ancestor = next(parent for parent in path.absolute().parents if parent.exists())
            writable = ancestor.is_dir() and os.access(ancestor, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        raise MetakitError(f"cannot append to {path}; give --output a writable markdown file, or '-'")


def append_report(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (created with a title if missing); earlier content is kept."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists()
        with path.open("a") as file:
            if fresh:
                file.write("# Benchmarks\n\n")
            file.write(text if fresh else "\n" + text)
    except OSError as error:
        raise MetakitError(
            f"cannot append to {path} ({error.strerror}); the table is on stdout above"
        ) from error
