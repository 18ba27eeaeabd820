"""The ``metakit`` command: a thin Typer layer over the library (train, eval, list, plot,
show-tasks, bench).

Each command turns its options into the library's typed arguments and calls
one library function. A MetakitError (a mistake the user can fix) becomes one
line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from metakit import registry
from metakit.bench.cli import bench_app
from metakit.data.task_grid import save_task_grid
from metakit.engine import TrainConfig, evaluate, load_config, train
from metakit.engine.components import build_sampler, factory_options, hyperparameter_class
from metakit.engine.config import MAX_COUNT, PAPER_SETTINGS, check_seed
from metakit.engine.plot import plot
from metakit.engine.run_dir import RunDirectory
from metakit.errors import MetakitError

INTERRUPTED_EXIT_CODE = 130  # the shell's code for a process stopped by SIGINT

app = typer.Typer(
    help="Pluggable meta-learning for PyTorch: train, evaluate and plot meta-learners.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(bench_app, name="bench")


def _user_errors(command):
    """Print a MetakitError as one line on stderr and exit 1."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MetakitError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None

    return run


@app.command("train")
@_user_errors
def train_command(
    algorithm: Annotated[str | None, typer.Argument(help="e.g. maml, fomaml (see `metakit list`)")] = None,
    backbone: Annotated[str | None, typer.Option(help="(default: conv4)")] = None,
    sampler: Annotated[str | None, typer.Option(help="(default: omniglot)")] = None,
    ways: Annotated[int | None, typer.Option(help="(default: 5)")] = None,
    shots: Annotated[int | None, typer.Option(help="(default: 1)")] = None,
    queries: Annotated[int | None, typer.Option(help="query examples per class (default: shots)")] = None,
    meta_batch: Annotated[
        int | None, typer.Option(help="tasks per meta-iteration (default: paper's)")
    ] = None,
    iterations: Annotated[int | None, typer.Option(help="(default: 60000)")] = None,
    minutes: Annotated[
        float | None, typer.Option(help="stop after this much training wall time (default: no limit)")
    ] = None,
    inner_steps: Annotated[int | None, typer.Option(help="(default: paper's for the ways)")] = None,
    inner_lr: Annotated[float | None, typer.Option(help="(default: paper's for the ways)")] = None,
    meta_lr: Annotated[float | None, typer.Option(help="Adam's learning rate (default: 0.001)")] = None,
    first_order: Annotated[
        bool | None, typer.Option("--first-order/--second-order", help="(default: second order)")
    ] = None,
    task_mapping: Annotated[
        str | None,
        typer.Option(
            help="how a batch's tasks run: auto, loop (least memory), threads, processes or vmap "
            "(default: auto)"
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="split convention: background-evaluation or maml-1200")
    ] = None,
    rotation: Annotated[str | None, typer.Option(help="augmentation: none, per-task or classes")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="where the dataset is")] = None,
    download: Annotated[
        bool | None, typer.Option("--download/--no-download", help="fetch a missing dataset (default: yes)")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (default: auto)")] = None,
    precision: Annotated[
        str | None, typer.Option(help="fp32, or bf16 autocast for training (default: fp32)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="(default: 0)")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="(default: runs/<name>-<time>)")] = None,
    config: Annotated[Path | None, typer.Option(help="a TOML file of these options")] = None,
    eval_every: Annotated[int | None, typer.Option(help="validate every K iterations, 0 = never")] = None,
    test_tasks: Annotated[int | None, typer.Option(help="meta-test tasks at the end, 0 = none")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --run-dir")] = False,
) -> None:
    """Meta-train an algorithm (the MAML paper's Omniglot setup by default), then meta-test it."""
    if config is not None:
        base = load_config(config)
    elif resume and run_dir is not None:
        base = RunDirectory(run_dir).config()
    else:
        base = TrainConfig()
    overrides = {
        "algorithm": algorithm,
        "backbone": backbone,
        "sampler": sampler,
        "ways": ways,
        "shots": shots,
        "queries": queries,
        "meta_batch": meta_batch,
        "iterations": iterations,
        "minutes": minutes,
        "meta_lr": meta_lr,
        "device": device,
        "precision": precision,
        "seed": seed,
        "run_dir": None if run_dir is None else str(run_dir),
        "eval_every": eval_every,
        "test_tasks": test_tasks,
        "hyperparameters": _given(
            inner_steps=inner_steps, inner_lr=inner_lr, first_order=first_order, task_mapping=task_mapping
        ),
        "sampler_options": _given(
            convention=split,
            rotation=rotation,
            data_dir=None if data_dir is None else str(data_dir),
            download=download,
        ),
    }
    run = train(_downloading(base.merged(overrides)), resume=resume)
    if run.interrupted:
        raise typer.Exit(INTERRUPTED_EXIT_CODE)
    typer.echo(f"run directory: {run.directory}")
    if run.result is not None:
        typer.echo(str(run.result))


@app.command("eval")
@_user_errors
def eval_command(
    run_dir: Annotated[Path, typer.Argument(help="a run directory made by `metakit train`")],
    tasks: Annotated[int, typer.Option(help="number of fixed, seeded tasks")] = 600,
    split: Annotated[str, typer.Option(help="train, validation or test")] = "test",
    inner_steps: Annotated[int | None, typer.Option(help="(default: the run's eval_inner_steps)")] = None,
    protocol: Annotated[str, typer.Option(help="transductive or non-transductive")] = "transductive",
    checkpoint: Annotated[str, typer.Option(help="best or last")] = "best",
    queries: Annotated[int | None, typer.Option(help="per class (default: the run's eval_queries)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the task set")] = 0,
    device: Annotated[str | None, typer.Option(help="(default: the run's)")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="where the dataset is, if it moved since training (default: the run's)"),
    ] = None,
) -> None:
    """Meta-test a trained run: mean accuracy ± 1.96·std/sqrt(tasks); adds it to results.json."""
    result = evaluate(
        run_dir, tasks, split, protocol, inner_steps, checkpoint, queries, seed, device,
        progress=True, data_dir=data_dir,
    )  # fmt: skip
    typer.echo(str(result))


@app.command("list")
@_user_errors
def list_command() -> None:
    """Registered algorithms, backbones and samplers with their options and defaults."""
    typer.echo("algorithms (hyperparameters; `train` fills inner_lr, inner_steps, eval_inner_steps")
    typer.echo(f"  and meta_batch with the paper's settings for {', '.join(PAPER_SETTINGS)} when not given):")
    for name in registry.list_algorithms():
        factory = registry.algorithms.get(name)
        found = hyperparameter_class(factory)
        options = {f.name: f.default for f in dataclasses.fields(found)} if found else {}
        _entry(name, factory, options)
    for kind, known in (("backbones", registry.backbones), ("samplers", registry.samplers)):
        typer.echo(f"{kind}:")
        for name in known.names():
            factory = known.get(name)
            _entry(name, factory, factory_options(factory) or {})


@app.command("plot")
@_user_errors
def plot_command(
    run_dir: Annotated[Path, typer.Argument(help="a run directory made by `metakit train`")],
    output: Annotated[Path | None, typer.Option(help="(default: RUN_DIR/curves.png)")] = None,
) -> None:
    """Learning curves (PNG): meta-train loss/accuracy and validation accuracy with its 95% CI."""
    typer.echo(f"wrote {plot(run_dir, output)}")


@app.command("show-tasks")
@_user_errors
def show_tasks_command(
    output: Annotated[Path, typer.Option(help="the PNG to write")] = Path("tasks.png"),
    sampler: Annotated[
        str | None, typer.Option(help="an image classification sampler (default: omniglot)")
    ] = None,
    ways: Annotated[int | None, typer.Option(help="(default: 5)")] = None,
    shots: Annotated[int | None, typer.Option(help="(default: 1)")] = None,
    queries: Annotated[int, typer.Option(help="query examples per class")] = 3,
    part: Annotated[str, typer.Option(help="train, validation or test")] = "train",
    split: Annotated[str | None, typer.Option(help="split convention (omniglot)")] = None,
    rotation: Annotated[str | None, typer.Option(help="none, per-task or classes (omniglot)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="where the dataset is")] = None,
    download: Annotated[
        bool | None, typer.Option("--download/--no-download", help="fetch a missing dataset (default: yes)")
    ] = None,
    tasks: Annotated[int, typer.Option(help="how many tasks to draw")] = 4,
    seed: Annotated[int, typer.Option(help="seed of the task generator")] = 0,
    config: Annotated[
        Path | None,
        typer.Option(help="a `metakit train` TOML file: its sampler, sampler options, ways and shots"),
    ] = None,
) -> None:
    """Save a PNG of a few sampled tasks: a column per label, support rows above query rows."""
    for option, count in (("--tasks", tasks), ("--queries", queries)):
        if not 1 <= count <= MAX_COUNT:
            raise MetakitError(f"{option} must be between 1 and {MAX_COUNT:,}, got {count}")
    check_seed(seed)
    options = _given(
        convention=split,
        rotation=rotation,
        data_dir=None if data_dir is None else str(data_dir),
        download=download,
    )
    base = TrainConfig() if config is None else load_config(config)
    overrides = {"sampler": sampler, "ways": ways, "shots": shots, "sampler_options": options}
    chosen = _downloading(base.merged(overrides))
    drawn = build_sampler(chosen, part, queries, torch.device("cpu"))
    batch = drawn.sample(tasks, torch.Generator().manual_seed(seed))
    path = save_task_grid(batch, output, max_tasks=tasks, max_query_rows=queries)
    typer.echo(f"wrote {tasks} {chosen.ways}-way {chosen.shots}-shot tasks ({part} part) to {path}")


def _downloading(config: TrainConfig) -> TrainConfig:
    """On the command line a missing dataset is downloaded unless --no-download says
    otherwise (the library downloads only when asked)."""
    takes = factory_options(registry.samplers.get(config.sampler))
    if takes is not None and "download" in takes and "download" not in config.sampler_options:
        return config.merged({"sampler_options": {"download": True}})
    return config


def _given(**options: Any) -> dict[str, Any]:
    return {name: value for name, value in options.items() if value is not None}


def _entry(name: str, factory, options: dict[str, Any]) -> None:
    summary = (inspect.getdoc(factory) or "").split("\n")[0]
    typer.echo(f"  {name}: {summary}")
    shown = [
        f"{option}={'(required)' if default is inspect.Parameter.empty else repr(default)}"
        for option, default in options.items()
        if option not in ("backbone", "problem")
    ]
    if shown:
        typer.echo(f"      {', '.join(shown)}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except MetakitError as error:  # raised outside a command, e.g. by a broken plugin
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
