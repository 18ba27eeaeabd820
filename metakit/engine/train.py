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
from metakit.data.sampler import TaskSampler
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
from metakit.environment import cpu_model
from metakit.errors import MetakitError, out_of_memory
from metakit.precision import autocast, warn_if_emulated

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


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> Run:
    """Meta-train ``config`` in ``config.run_dir`` (a new, empty directory, or with
    ``resume`` the directory of the same run, continued from its ``last.pt``); then,
    with ``test_tasks > 0``, evaluate on the test split. Ctrl-C saves and returns a Run
    with ``interrupted=True``; a non-finite loss or a failed allocation raises MetakitError,
    keeping the checkpoints."""
    device = resolve_device(config.device)
    warn_if_emulated(config.precision, device)
    config = resolve(config)
    if config.run_dir is None:
        if resume:
            raise MetakitError("resuming needs the run's directory: pass --run-dir")
        config = dataclasses.replace(config, run_dir=str(default_run_dir(config)))
    directory = RunDirectory(config.run_dir)
    if resume:  # before any data is read or fetched; hyperparameters once the algorithm has filled them in
        directory.check_same_config(config, ignored=("hyperparameters",))
        directory.results()  # a damaged results.json is refused before training, not after
    samplers = {"train": build_sampler(config, "train", config.queries, device)}
    if config.eval_every:
        samplers["validation"] = _evaluation_sampler(config, "validation", device)
    if config.test_tasks:
        _evaluation_sampler(config, "test", device)  # impossible test tasks are refused before training
    torch.manual_seed(config.seed)
    algorithm = build_algorithm(config, samplers["train"]).to(device)
    config = dataclasses.replace(config, hyperparameters=algorithm.hparams.to_dict())
    trainer = _Trainer(config, directory, algorithm, samplers, device)
    data = {split: sampler.fingerprint() for split, sampler in samplers.items()}
    if resume:
        directory.check_same_run(config, data)
        trainer.restore()
    else:
        directory.create(_record(config, device, data))
    interrupted = trainer.run(progress)
    result = None
    if config.test_tasks and not interrupted:
        checkpoint = "best" if config.eval_every else "last"
        result = evaluate(
            directory.path, config.test_tasks, "test", checkpoint=checkpoint, device=str(device)
        )
    return Run(directory.path, config, algorithm, trainer.iteration, interrupted, result)


class _Trainer:
    """The loop's state: model, optimizer, task generator, counters, and the logging window
    (sums of the meta-train metrics since the last line of ``metrics.jsonl``)."""

    def __init__(self, config, directory: RunDirectory, algorithm: Algorithm, samplers, device):
        self.config, self.directory, self.algorithm = config, directory, algorithm
        self.samplers, self.device = samplers, device
        self.optimizer = torch.optim.Adam(algorithm.parameters(), lr=config.meta_lr)
        self.tasks = torch.Generator().manual_seed(config.seed + TASK_SEED_OFFSET)
        self.iteration, self.wall_time, self.best_score = 0, 0.0, None
        self._clear_window()

    def run(self, show: bool) -> bool:
        """Iterate until ``config.iterations`` or Ctrl-C; returns whether it was interrupted."""
        stream = None if show else io.StringIO()
        started = time.monotonic() - self.wall_time
        stopping = False
        with Progress(self.config.iterations, self.iteration, stream) as bar, _interruptible() as stop:
            while not self._finished() and not stopping:
                self._step()
                bar.update(self.iteration, self._figures())
                self.wall_time = time.monotonic() - started
                # Read the flag once: a Ctrl-C that lands while this iteration is logged and
                # saved stops the loop after the next one, which saves.
                stopping = stop.is_set()
                self._log_and_save(bar, stopping)
            if stopping:
                bar.log(
                    f"interrupted at iteration {self.iteration}; saved {self.directory.checkpoint('last')}; "
                    f"continue with: metakit train --resume --run-dir {self.directory.path}"
                )
        return stopping

    def _finished(self) -> bool:
        out_of_time = self.config.minutes and self.wall_time >= 60 * self.config.minutes
        return self.iteration >= self.config.iterations or bool(out_of_time)

    def _step(self) -> None:
        began = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        try:
            batch = self.samplers["train"].sample(self.config.meta_batch, self.tasks).to(self.device)
            with autocast(self.config.precision, self.device):
                loss, metrics = self.algorithm.meta_loss(batch)
            loss.backward()
        except RuntimeError as error:
            if not out_of_memory(error):
                raise
            raise MetakitError(
                f"out of memory at iteration {self.iteration + 1} with {self.config.meta_batch} tasks "
                f"per meta-batch; training stopped and {self._kept()}; try a smaller --meta-batch"
            ) from None
        self._check_finite(loss)
        self.optimizer.step()
        self.iteration += 1
        self._seconds += time.perf_counter() - began
        self._count += 1
        for name, value in metrics.items():
            self._sums[name] = self._sums.get(name, 0.0) + value.item()

    def _check_finite(self, loss: torch.Tensor) -> None:
        grads = [p.grad.abs().max() for p in self.algorithm.parameters() if p.grad is not None]
        if bool(torch.isfinite(torch.stack([loss.detach(), *grads])).all()):
            return
        raise MetakitError(
            f"the meta-loss or its gradient is not finite at iteration {self.iteration + 1} "
            f"(loss {loss.item()}); training stopped and {self._kept()}; "
            "try a smaller --meta-lr or --inner-lr"
        )

    def _kept(self) -> str:
        path = self.directory.checkpoint("last")
        if path.exists():
            return f"the last good checkpoint {path} is kept"
        return "no checkpoint was written yet"

    def _log_and_save(self, bar: Progress, stopping: bool) -> None:
        config, i = self.config, self.iteration
        last = self._finished()
        validate = config.eval_every and (i % config.eval_every == 0 or last)
        line: dict[str, Any] = {}
        if i % config.log_every == 0 or last or validate or stopping:
            line = {"iteration": i, "wall_time": round(self.wall_time, 3), **self._figures(prefix="train_")}
            self._clear_window()
        if validate:
            line |= self._validate(bar)
        if line:
            with self._stopping_if_unwritable():
                self.directory.append_metrics(line)
        if i % config.checkpoint_every == 0 or last or stopping:
            self._save("last")

    def _validate(self, bar: Progress) -> dict[str, Any]:
        """Score the fixed validation tasks; keep ``best.pt`` if they improved."""
        metric, scores = task_scores(
            self.algorithm,
            self.samplers["validation"],
            self.config.eval_tasks,
            VALIDATION_SEED,
            "transductive",
            self.device,
        )
        summary = summarize(scores)
        bar.log(
            f"iteration {self.iteration}: validation {metric} {summary['mean']:.4f} ± {summary['ci95']:.4f}"
        )
        score = summary["mean"] if metric == "accuracy" else -summary["mean"]
        if self.best_score is None or score > self.best_score:
            self.best_score = score
            self._save("best")
        return {
            f"validation_{metric}": summary["mean"],
            f"validation_{metric}_ci95": summary["ci95"],
            "validation_tasks": self.config.eval_tasks,
        }

    def _figures(self, prefix: str = "") -> dict[str, float]:
        figures = {f"{prefix}{name}": total / self._count for name, total in self._sums.items()}
        if self._seconds > 0:
            figures["tasks_per_second"] = self._count * self.config.meta_batch / self._seconds
        return figures

    def _clear_window(self) -> None:
        self._sums: dict[str, float] = {}
        self._count, self._seconds = 0, 0.0

    def _save(self, which: str) -> None:
        state = {
            "iteration": self.iteration,
            "wall_time": self.wall_time,
            "best_score": self.best_score,
            "algorithm": self.algorithm.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": capture_rng(self.tasks),
            "config": self.config.to_dict(),
        }
        with self._stopping_if_unwritable():
            save_checkpoint(self.directory.checkpoint(which), state)

    @contextmanager
    def _stopping_if_unwritable(self) -> Iterator[None]:
        """A failed write stops training, saying how to continue once files can be written."""
        try:
            yield
        except MetakitError as error:
            if self.directory.checkpoint("last").exists():
                then = f"then continue with: metakit train --resume --run-dir {self.directory.path}"
            else:
                then = f"then delete {self.directory.path} and start again"
            raise MetakitError(
                f"training stopped at iteration {self.iteration}: {error}; {self._kept()}; {then}"
            ) from None

    def restore(self) -> None:
        """Continue from ``last.pt``, dropping the metrics logged after it."""
        path = self.directory.checkpoint("last")
        if not path.is_file():
            raise MetakitError(
                f"run dir {self.directory.path} stopped before its first checkpoint; "
                "there is nothing to resume: start again with another --run-dir"
            )
        checkpoint = load_checkpoint(path)
        self.directory.check_own_checkpoint(checkpoint, path)
        load_algorithm_state(self.algorithm, checkpoint["algorithm"], str(path))
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            restore_rng(checkpoint["rng"], self.tasks)
        except (KeyError, ValueError, RuntimeError, TypeError) as error:
            raise MetakitError(f"checkpoint {path} is incompatible with this run ({error})") from error
        self.iteration, self.wall_time = checkpoint["iteration"], checkpoint["wall_time"]
        self.best_score = checkpoint["best_score"]
        self.directory.truncate_metrics(self.iteration)


def _evaluation_sampler(config: TrainConfig, split: str, device: torch.device) -> TaskSampler:
    """The sampler of ``split``'s evaluation tasks; its errors name ``eval_queries``, which
    no command-line option sets."""
    try:
        return build_sampler(config, split, config.eval_queries, device)
    except MetakitError as error:
        raise MetakitError(
            f"{split} tasks (eval_queries = {config.eval_queries} query examples per class): {error}"
        ) from error


def _record(config: TrainConfig, device: torch.device, data: dict[str, Any]) -> dict[str, Any]:
    import metakit  # the package is fully imported by the time a run starts

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
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
