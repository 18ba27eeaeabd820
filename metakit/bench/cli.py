"""``metakit bench``: the benchmark suites as a Typer sub-app."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from metakit.bench.accuracy import (
    ALGORITHMS,
    DATA_PROTOCOLS,
    DEFAULT_ROOT,
    FULL_BUDGET,
    SETTINGS,
    AccuracySettings,
    format_accuracy_report,
    run_accuracy_suite,
    select_cells,
)
from metakit.bench.configs import CONFIGS, configs_named
from metakit.bench.report import append_report, check_appendable, format_report
from metakit.bench.rows import ROWS
from metakit.bench.speed import SpeedSettings, run_speed_suite
from metakit.errors import MetakitError
from metakit.precision import PRECISIONS

bench_app = typer.Typer(no_args_is_help=True)
DEFAULT_CONFIGS = list(CONFIGS)
DEFAULT_ROWS = list(ROWS)
CONFIG_HELP = f"Configuration, repeatable: {', '.join(CONFIGS)}."
ROW_HELP = f"Row, repeatable: {', '.join(ROWS)}."


@bench_app.callback()
def bench() -> None:
    """Benchmark suites: speed and memory against peer implementations, accuracy against the papers."""


@bench_app.command("speed")
def speed(
    config: Annotated[list[str], typer.Option("--config", "-c", help=CONFIG_HELP)] = DEFAULT_CONFIGS,
    row: Annotated[list[str], typer.Option("--row", "-r", help=ROW_HELP)] = DEFAULT_ROWS,
    iterations: Annotated[int, typer.Option(help="Timed meta-iterations per row.")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed meta-iterations before timing.")] = 2,
    rounds: Annotated[
        int, typer.Option(help="Timing processes per row, the rows taking turns (for a noisy machine).")
    ] = 1,
    device: Annotated[str, typer.Option(help="cpu or cuda[:index].")] = "cpu",
    threads: Annotated[int, typer.Option(help="torch threads per process (0: torch's default).")] = 0,
    timeout: Annotated[float | None, typer.Option(help="Seconds per process before 'timeout'.")] = None,
    memory_limit: Annotated[
        float | None, typer.Option(help="GiB of address space per process (CPU only).")
    ] = None,
    gate_tasks: Annotated[int, typer.Option(help="Tasks the gradient gate uses (0: all).")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and the tasks.")] = 0,
    output: Annotated[
        str, typer.Option(help="Markdown file to append to; '-': stdout only.")
    ] = "docs/benchmarks.md",
    note: Annotated[str, typer.Option(help="Added to the section title, e.g. 'measured under load'.")] = "",
) -> None:
    """Time one MAML meta-iteration of metakit and its peers; print the table and append it to OUTPUT."""
    try:
        settings = SpeedSettings(
            configs=configs_named(config),
            rows=tuple(row),
            iterations=iterations,
            warmup=warmup,
            rounds=rounds,
            device=device,
            threads=threads,
            timeout_s=timeout,
            memory_limit_gb=memory_limit,
            gate_tasks=gate_tasks,
            seed=seed,
            output=None if output == "-" else Path(output),
            note=note,
            command=_command_line(),
        )
        check_appendable(settings.output)
        report = format_report(
            run_speed_suite(settings, progress=lambda line: typer.echo(line, err=True)), settings
        )
    except MetakitError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(report)
    _append(settings.output, report)


DEFAULT_ALGORITHMS = list(ALGORITHMS)
DEFAULT_SETTINGS = list(SETTINGS)
DEFAULT_PROTOCOLS = list(DATA_PROTOCOLS)


@bench_app.command("omniglot")
def omniglot(
    algorithm: Annotated[
        list[str], typer.Option("--algorithm", "-a", help=f"Repeatable: {', '.join(ALGORITHMS)}.")
    ] = DEFAULT_ALGORITHMS,
    setting: Annotated[
        list[str], typer.Option("--setting", "-s", help=f"Repeatable: {', '.join(SETTINGS)}.")
    ] = DEFAULT_SETTINGS,
    protocol: Annotated[
        list[str], typer.Option("--protocol", "-p", help=f"Repeatable: {', '.join(DATA_PROTOCOLS)}.")
    ] = DEFAULT_PROTOCOLS,
    budget: Annotated[
        int, typer.Option(help=f"Meta-iterations per cell ({FULL_BUDGET}: the paper's full run).")
    ] = FULL_BUDGET,
    minutes: Annotated[
        float,
        typer.Option(
            help="Training minutes per cell in this run (0: until the budget); the next run resumes."
        ),
    ] = 0.0,
    root: Annotated[Path, typer.Option(help="Folder of the cells' run directories.")] = DEFAULT_ROOT,
    data_dir: Annotated[Path | None, typer.Option(help="Folder of the Omniglot zips.")] = None,
    download: Annotated[
        bool, typer.Option("--download/--no-download", help="Fetch missing Omniglot zips into it.")
    ] = True,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    eval_tasks: Annotated[int, typer.Option(help="Test tasks per evaluation.")] = 600,
    seed: Annotated[int, typer.Option(help="Training seed of every cell.")] = 0,
    precision: Annotated[
        str, typer.Option(help=f"Training precision: {', '.join(PRECISIONS)} (evaluation: fp32).")
    ] = "fp32",
    backbone: Annotated[
        str | None,
        typer.Option(
            help="Network of every cell (default: conv4-strided, the MAML paper's, under paper; "
            "conv4, with max-pool, under official)."
        ),
    ] = None,
    table_only: Annotated[
        bool, typer.Option("--table-only", help="Neither train nor evaluate: table what the runs hold.")
    ] = False,
    output: Annotated[
        str, typer.Option(help="Markdown file to append to; '-': stdout only.")
    ] = "docs/benchmarks.md",
) -> None:
    """Train MAML and FOMAML on Omniglot cell by cell (resuming runs under ROOT), evaluate each both
    transductively and not, and table the accuracies beside the published ones."""
    try:
        settings = AccuracySettings(
            cells=select_cells(algorithm, setting, protocol),
            budget=budget,
            minutes=minutes,
            root=root,
            data_dir=data_dir,
            download=download,
            device=device,
            eval_tasks=eval_tasks,
            seed=seed,
            precision=precision,
            backbone=backbone,
            table_only=table_only,
            output=None if output == "-" else Path(output),
            command=_command_line(),
        )
        check_appendable(settings.output)
        results = run_accuracy_suite(settings, log=lambda line: typer.echo(line, err=True))
        report = format_accuracy_report(results, settings)
    except MetakitError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(report)
    if any(result.interrupted for result in results):
        typer.echo("interrupted: nothing appended; run the same command again to resume", err=True)
        raise typer.Exit(130)
    _append(settings.output, report)


def _append(output: Path | None, report: str) -> None:
    """Append the printed ``report`` to ``output`` (None: stdout only)."""
    if output is None:
        return
    try:
        append_report(output, report)
    except MetakitError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"appended to {output}", err=True)


def _command_line() -> str:
    """How this run was started, for the report: ``metakit bench speed ...`` or ``python script.py ...``."""
    program = sys.argv[0]
    program = f"python {program}" if program.endswith(".py") else Path(program).name
    return " ".join([program, shlex.join(sys.argv[1:])])
