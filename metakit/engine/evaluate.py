"""Meta-test evaluation: adapt to each of a fixed, seeded set of tasks and score its query set.

Two protocols, which differ only in what a query prediction may see:

- ``transductive`` (the MAML paper's): the whole query set goes through the
  adapted network at once, so BatchNorm normalises it with its own statistics
  and query examples inform each other's predictions.
- ``non-transductive``: each query example is classified in a batch made of
  the support set plus that one example (its output is the batch's last row),
  so no query example can inform another. Done for any algorithm, with
  ``torch.func.vmap`` over the query examples on accelerators and a loop on the CPU.

The result is the mean score over tasks with a 95% confidence interval
``1.96 * std / sqrt(tasks)`` (population std over tasks, as in the MAML code).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from metakit.algorithms.algorithm import Algorithm
from metakit.data.sampler import TaskSampler
from metakit.engine.checkpoint import load_checkpoint
from metakit.engine.components import (
    build_algorithm,
    build_sampler,
    factory_options,
    load_algorithm_state,
    resolve_device,
)
from metakit.engine.config import check_count, check_seed
from metakit.engine.progress import Progress
from metakit.engine.run_dir import RunDirectory
from metakit.errors import MetakitError
from metakit.registry import samplers

PROTOCOLS = ("transductive", "non-transductive")
SPLITS = ("train", "validation", "test")
RESULT_KEY = ("split", "protocol", "checkpoint", "inner_steps", "tasks", "queries", "seed")


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """``metric`` is ``accuracy`` (a fraction) for classification, ``mse`` for regression;
    ``mean`` and ``ci95`` are over ``tasks`` tasks of ``split``; ``data`` is the sampler's
    fingerprint (which data, with its hash)."""

    metric: str
    mean: float
    ci95: float
    std: float
    tasks: int
    split: str
    protocol: str
    inner_steps: int | None
    checkpoint: str
    iteration: int
    ways: int
    shots: int
    queries: int
    seed: int
    run_dir: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        if self.metric == "accuracy":
            value = f"{100 * self.mean:.2f}% ± {100 * self.ci95:.2f}%"
            shape = f"{self.ways}-way {self.shots}-shot, {self.queries} queries per class"
        else:
            value = f"{self.mean:.4g} ± {self.ci95:.2g}"
            shape = f"{self.shots} support and {self.queries} query points"
        steps = "" if self.inner_steps is None else f", {self.inner_steps} inner steps"
        return (
            f"{self.split} {self.metric} {value} (95% CI over {self.tasks} tasks; {shape}{steps}; "
            f"{self.protocol}; checkpoint {self.checkpoint} at iteration {self.iteration})"
        )


def evaluate(
    run: str | os.PathLike,
    tasks: int = 600,
    split: str = "test",
    protocol: str = "transductive",
    inner_steps: int | None = None,
    checkpoint: str = "best",
    queries: int | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = False,
    data_dir: str | os.PathLike | None = None,
) -> EvalResult:
    """Evaluate a trained run (a ``Run`` or its directory) and add the result to its
    ``results.json``. ``inner_steps`` overrides the algorithm's ``eval_inner_steps``;
    ``queries`` (per class) defaults to the run's ``eval_queries``; ``device`` to its device.
    The tasks are the same for the same ``seed``, whatever the run. ``progress`` shows the
    tasks done, with an ETA, on stderr. ``data_dir`` is where the sampler's data is now, if it
    moved since training (the result records the data's fingerprint)."""
    if split not in SPLITS:
        raise MetakitError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    if protocol not in PROTOCOLS:
        raise MetakitError(f"unknown protocol '{protocol}'; use one of {', '.join(PROTOCOLS)}")
    if tasks < 1:
        raise MetakitError(f"evaluation needs at least 1 task, got {tasks}")
    check_seed(seed)
    if queries is not None and queries < 1:
        raise MetakitError(f"evaluation needs at least 1 query example per class, got {queries}")
    check_count("queries", queries)
    directory = RunDirectory(run)
    config = directory.config()
    if data_dir is not None:
        takes = factory_options(samplers.get(config.sampler))
        if takes is not None and "data_dir" not in takes:
            raise MetakitError(f"sampler '{config.sampler}' reads no data_dir; drop --data-dir")
        moved = {"data_dir": str(Path(data_dir).expanduser().resolve())}
        config = dataclasses.replace(config, sampler_options=config.sampler_options | moved)
    directory.results()  # a damaged results.json is refused before the tasks are run
    path = directory.checkpoint(checkpoint)
    if checkpoint == "best" and not path.is_file() and directory.checkpoint("last").is_file():
        why = "stopped before its first validation" if config.eval_every else "was trained without validation"
        raise MetakitError(f"no checkpoint {path}: the run {why}; pick 'last'")
    state = load_checkpoint(path)
    directory.check_own_checkpoint(state, path)
    target = resolve_device(config.device if device is None else device)
    queries = queries or config.eval_queries
    sampler = build_sampler(config, split, queries, target)
    overrides = {} if inner_steps is None else {"eval_inner_steps": inner_steps}
    if overrides and "eval_inner_steps" not in config.hyperparameters:
        raise MetakitError(f"algorithm '{config.algorithm}' has no inner steps to set; drop --inner-steps")
    algorithm = build_algorithm(config, sampler, **overrides)
    load_algorithm_state(algorithm, state["algorithm"], str(path))
    algorithm.to(target)
    stream = None if progress else io.StringIO()  # as training does: a sink when not shown
    with Progress(tasks, stream=stream, label="meta-test", unit="task") as bar:
        metric, scores = task_scores(algorithm, sampler, tasks, seed, protocol, target, bar.update)
    result = EvalResult(
        metric=metric,
        **summarize(scores),
        tasks=tasks,
        split=split,
        protocol=protocol,
        inner_steps=getattr(algorithm.hparams, "eval_inner_steps", None),
        checkpoint=checkpoint,
        iteration=state["iteration"],
        ways=config.ways,
        shots=config.shots,
        queries=queries,
        seed=seed,
        run_dir=str(Path(run)),
        data=sampler.fingerprint(),
    )
    directory.add_result(result.to_dict(), RESULT_KEY)
    return result


def summarize(scores: Tensor) -> dict[str, float]:
    """``mean``, ``std`` and ``ci95 = 1.96 * std / sqrt(n)`` of per-task scores ``[n]``."""
    std = scores.double().std(correction=0).item()
    return {"mean": scores.double().mean().item(), "std": std, "ci95": 1.96 * std / math.sqrt(len(scores))}


def task_scores(
    algorithm: Algorithm,
    sampler: TaskSampler,
    tasks: int,
    seed: int,
    protocol: str,
    device: torch.device,
    on_task: Callable[[int], None] | None = None,
) -> tuple[str, Tensor]:
    """``(metric, scores [tasks])``: each fixed task's query accuracy (or MSE) after
    adaptation; ``on_task(n)`` is called after the ``n``-th task."""
    metric = "accuracy" if sampler.problem == "classification" else "mse"
    scores = []
    for batch in sampler.fixed_tasks(tasks, seed):
        batch = batch.to(device)
        for support_x, support_y, query_x, query_y in zip(*batch.tensors()):
            adapted = algorithm.adapt(support_x, support_y)
            with torch.no_grad():
                outputs = predict_queries(algorithm, adapted, support_x, query_x, protocol)
            if metric == "accuracy":
                scores.append((outputs.argmax(-1) == query_y).double().mean())
            else:
                scores.append(F.mse_loss(outputs.double(), query_y.double()))
            if on_task:
                on_task(len(scores))
    return metric, torch.stack(scores).cpu()


def predict_queries(
    algorithm: Algorithm,
    adapted: Any,
    support_x: Tensor,
    query_x: Tensor,
    protocol: str,
    vectorized: bool | None = None,
) -> Tensor:
    """Outputs ``[n_query, num_outputs]`` for one task under ``protocol``. Non-transductive
    predictions are vectorised with ``vmap`` (``vectorized=None``: except on the CPU, where a
    loop measured 1.7x faster)."""
    if protocol == "transductive":
        return algorithm.predict(adapted, query_x)

    def predict_alone(example: Tensor) -> Tensor:
        return algorithm.predict(adapted, torch.cat([support_x, example[None]]))[-1]

    if vectorized is None:
        vectorized = query_x.device.type != "cpu"
    if vectorized:
        return torch.func.vmap(predict_alone)(query_x)
    return torch.stack([predict_alone(example) for example in query_x])
