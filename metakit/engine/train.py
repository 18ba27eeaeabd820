"""Meta-training: ``train(config) -> Run``, with a run directory that can be resumed exactly.

One meta-iteration: draw ``meta_batch`` tasks from the task generator, take
the algorithm's meta-loss and its gradient, check both are finite, one Adam
step. Every ``checkpoint_every`` iterations (and on Ctrl-C, and at the end)
``last.pt`` records the meta-parameters, the optimizer, the iteration and
every RNG state, so that a resumed run on the CPU continues bit for bit as if
it had never stopped. Every ``eval_every`` iterations the algorithm is
evaluated on a fixed set of validation tasks and ``best.pt`` keeps the best.
"""

from __future__ import annotations

import dataclasses
import io
import platform
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from metakit.algorithms.algorithm import Algorithm
from metakit.engine.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from metakit.engine.components import (
    build_algorithm,
    build_sampler,
    load_algorithm_state,
    resolve,
    resolve_device,
)
from metakit.engine.config import TrainConfig
from metakit.engine.evaluate import EvalResult, evaluate, summarize, task_scores
from metakit.engine.progress import Progress
from metakit.engine.run_dir import RunDirectory, default_run_dir
from metakit.errors import MetakitError

TASK_SEED_OFFSET = 1_000_003
"""The task generator is seeded with ``seed + TASK_SEED_OFFSET`` so that its stream is not
the one that initialised the weights (the global RNG, seeded with ``seed``)."""
VALIDATION_SEED = 0


@dataclasses.dataclass
class Run:
    """A trained (or interrupted) run; usable wherever a run directory path is."""

    directory: Path
    config: TrainConfig
    algorithm: Algorithm
    iteration: int
    interrupted: bool
    result: EvalResult | None

    def __fspath__(self) -> str:
        return str(self.directory)


@dataclasses.dataclass
class _State:
    """What the loop carries from one iteration to the next, beside the model and optimizer."""

    iteration: int = 0
    wall_time: float = 0.0
    best_score: float | None = None
    window_tasks: int = 0
    window_seconds: float = 0.0
    window_sums: dict[str, float] = dataclasses.field(default_factory=dict)
    window_count: int = 0


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> Run:
    """Meta-train ``config`` in ``config.run_dir`` (a new, empty directory, or with
    ``resume`` the directory of the same run, continued from its ``last.pt``); then,
    with ``test_tasks > 0``, evaluate on the test split. Ctrl-C saves and returns a Run
    with ``interrupted=True``; a non-finite loss raises MetakitError, keeping the checkpoints."""
    device = resolve_device(config.device)
    config = resolve(config)
    if config.run_dir is None:
        if resume:
            raise MetakitError("resuming needs the run's directory: pass --run-dir")
        config = dataclasses.replace(config, run_dir=str(default_run_dir(config)))
    directory = RunDirectory(config.run_dir)
    if resume:
        directory.record()
    samplers = {"train": build_sampler(config, "train", config.queries, device)}
    if config.eval_every:
        samplers["validation"] = build_sampler(config, "validation", config.eval_queries, device)
    torch.manual_seed(config.seed)
    algorithm = build_algorithm(config, samplers["train"]).to(device)
    config = dataclasses.replace(config, hyperparameters=algorithm.hparams.to_dict())
    optimizer = torch.optim.Adam(algorithm.parameters(), lr=config.meta_lr)
    tasks = torch.Generator().manual_seed(config.seed + TASK_SEED_OFFSET)
    data = {split: sampler.fingerprint() for split, sampler in samplers.items()}
    if resume:
        directory.check_same_run(config, data)
        state = _restore(directory, algorithm, optimizer, tasks)
    else:
        directory.create(_record(config, device, data))
        state = _State()
    interrupted = _loop(config, directory, algorithm, optimizer, samplers, tasks, device, state, progress)
    result = None
    if config.test_tasks and not interrupted:
        checkpoint = "best" if config.eval_every else "last"
        result = evaluate(
            directory.path, config.test_tasks, "test", checkpoint=checkpoint, device=str(device)
        )
    return Run(directory.path, config, algorithm, state.iteration, interrupted, result)


def _loop(config, directory, algorithm, optimizer, samplers, tasks, device, state, show) -> bool:
    """Iterate until ``config.iterations`` or Ctrl-C; returns whether it was interrupted."""
    stream = None if show else io.StringIO()
    started = time.monotonic() - state.wall_time
    with Progress(config.iterations, state.iteration, stream) as bar, _interruptible() as stop:
        while state.iteration < config.iterations and not stop.is_set():
            began = time.perf_counter()
            batch = samplers["train"].sample(config.meta_batch, tasks).to(device)
            optimizer.zero_grad(set_to_none=True)
            loss, metrics = algorithm.meta_loss(batch)
            loss.backward()
            _check_finite(loss, algorithm, directory, state.iteration + 1)
            optimizer.step()
            state.iteration += 1
            state.window_seconds += time.perf_counter() - began
            state.window_tasks += config.meta_batch
            state.window_count += 1
            for name, value in metrics.items():
                state.window_sums[name] = state.window_sums.get(name, 0.0) + value.item()
            bar.update(state.iteration, _figures(state))
            state.wall_time = time.monotonic() - started
            _log_and_save(config, directory, algorithm, optimizer, samplers, tasks, device, state, bar, stop)
        if stop.is_set():
            bar.log(
                f"interrupted at iteration {state.iteration}; saved {directory.checkpoint('last')}; "
                f"continue with: metakit train --resume --run-dir {directory.path}"
            )
    return stop.is_set()


def _log_and_save(config, directory, algorithm, optimizer, samplers, tasks, device, state, bar, stop) -> None:
    i, last = state.iteration, state.iteration == config.iterations
    validate = config.eval_every and (i % config.eval_every == 0 or last)
    line: dict[str, Any] = {}
    if i % config.log_every == 0 or last or validate or stop.is_set():
        line = {"iteration": i, "wall_time": round(state.wall_time, 3), **_figures(state, prefix="train_")}
        state.window_sums, state.window_count, state.window_tasks, state.window_seconds = {}, 0, 0, 0.0
    if validate:
        metric, scores = task_scores(
            algorithm, samplers["validation"], config.eval_tasks, VALIDATION_SEED, "transductive", device
        )
        summary = summarize(scores)
        line |= {f"validation_{metric}": summary["mean"], f"validation_{metric}_ci95": summary["ci95"]}
        line["validation_tasks"] = config.eval_tasks
        bar.log(f"iteration {i}: validation {metric} {summary['mean']:.4f} ± {summary['ci95']:.4f}")
        score = summary["mean"] if metric == "accuracy" else -summary["mean"]
        if state.best_score is None or score > state.best_score:
            state.best_score = score
            _save(directory, "best", config, algorithm, optimizer, tasks, state)
    if line:
        directory.append_metrics(line)
    if i % config.checkpoint_every == 0 or last or stop.is_set():
        _save(directory, "last", config, algorithm, optimizer, tasks, state)


def _figures(state: _State, prefix: str = "") -> dict[str, float]:
    figures = {f"{prefix}{name}": total / state.window_count for name, total in state.window_sums.items()}
    if state.window_seconds > 0:
        figures["tasks_per_second"] = state.window_tasks / state.window_seconds
    return figures


def _check_finite(loss: torch.Tensor, algorithm: Algorithm, directory: RunDirectory, iteration: int) -> None:
    grads = [p.grad.abs().max() for p in algorithm.parameters() if p.grad is not None]
    if bool(torch.isfinite(torch.stack([loss.detach(), *grads])).all()):
        return
    path = directory.checkpoint("last")
    kept = f"the last good checkpoint {path} is kept" if path.exists() else "no checkpoint was written yet"
    raise MetakitError(
        f"the meta-loss or its gradient is not finite at iteration {iteration} (loss {loss.item()}); "
        f"training stopped and {kept}; try a smaller --meta-lr or --inner-lr"
    )


def _save(directory, which, config, algorithm, optimizer, tasks, state) -> None:
    save_checkpoint(
        directory.checkpoint(which),
        {
            "iteration": state.iteration,
            "wall_time": state.wall_time,
            "best_score": state.best_score,
            "algorithm": algorithm.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": capture_rng(tasks),
            "config": config.to_dict(),
        },
    )


def _restore(directory: RunDirectory, algorithm, optimizer, tasks: torch.Generator) -> _State:
    path = directory.checkpoint("last")
    checkpoint = load_checkpoint(path)
    load_algorithm_state(algorithm, checkpoint["algorithm"], str(path))
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
        restore_rng(checkpoint["rng"], tasks)
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        raise MetakitError(f"checkpoint {path} is incompatible with this run ({error})") from error
    directory.truncate_metrics(checkpoint["iteration"])
    return _State(checkpoint["iteration"], checkpoint["wall_time"], checkpoint["best_score"])


def _record(config: TrainConfig, device: torch.device, data: dict[str, Any]) -> dict[str, Any]:
    import metakit  # the package is fully imported by the time a run starts

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    environment = {
        "metakit": metakit.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": f"{device} ({name})",
        "threads": torch.get_num_threads(),
    }
    return {"config": config.to_dict(), "environment": environment, "data": data}


@contextmanager
def _interruptible() -> Iterator[threading.Event]:
    """The first Ctrl-C (SIGINT) sets the event, so the loop saves and stops after the
    current iteration; a second one interrupts at once. Only the main thread gets signals."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
