"""The task mappings' bookkeeping: which threads or processes run which tasks, failures, and the
choice of ``auto``."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from metakit import MetakitError, TaskBatch, task_mapping, worker_processes
from metakit.task_mapping import mapped_meta_loss, resolve_mapping, task_groups


def _batch(tasks: int, image: bool = True) -> TaskBatch:
    shape = (tasks, 2, 1, 4, 4) if image else (tasks, 2, 1)
    x = torch.arange(tasks, dtype=torch.float64).view(-1, *[1] * (len(shape) - 1)).expand(shape)
    y = torch.zeros(tasks, 2, dtype=torch.long)
    return TaskBatch(x.contiguous(), y, x.contiguous(), y)


class _Recorder:
    """A task objective ``w * task_index^2``: gradient ``task_index^2``, metric ``task_index``."""

    def __init__(self, seen: dict[int, str], fail_on: int | None = None):
        self.seen, self.fail_on = seen, fail_on

    def __call__(self, params, support_x, support_y, query_x, query_y):
        task = int(support_x.flatten()[0])
        self.seen[task] = threading.current_thread().name  # unique, unlike idents
        if task == self.fail_on:
            raise ValueError(f"task {task} failed")
        return params["w"].sum() * task**2, {"task": torch.tensor(float(task))}


@pytest.fixture
def three_torch_threads(torch_threads):
    torch_threads(3)


def test_threads_split_tasks_over_torch_threads_and_restore_the_count(three_torch_threads):
    seen: dict[int, str] = {}
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    loss, metrics = mapped_meta_loss(
        _Recorder(seen), {"w": w}, _batch(7), "threads", replicate=lambda: _Recorder(seen)
    )
    loss.backward()
    expected = sum(t**2 for t in range(7)) / 7
    assert torch.allclose(w.grad, torch.full((2,), float(expected), dtype=torch.float64))
    assert metrics["task"].item() == pytest.approx(3.0)
    assert len(set(seen.values())) == 3
    assert [seen[t] for t in range(3)] == [seen[t] for t in range(3, 6)]
    assert torch.get_num_threads() == 3


DEADLOCK_PROBE = """
import torch
from metakit import TaskBatch
from metakit.task_mapping import mapped_meta_loss

class Twice(torch.autograd.Function):
    forward = staticmethod(lambda ctx, x: x * 2)
    backward = staticmethod(lambda ctx, grad: grad * 2)

def objective(params, support_x, support_y, query_x, query_y):
    w = params["w"]
    for _ in range(5000):  # each result dropped at once: the weight's gradient edge is made anew
        Twice.apply(w)
        w * 0.5
    return w.sum(), {}

torch.set_num_threads(2)
x, y = torch.zeros(2, 1, 1, 4, 4), torch.zeros(2, 1, dtype=torch.long)
w = torch.zeros(3, requires_grad=True)
for _ in range(5):
    mapped_meta_loss(objective, {"w": w}, TaskBatch(x, y, x, y), "threads", replicate=lambda: objective)
print("finished")
"""


def test_threads_survive_python_autograd_functions_on_the_weights():
    """With one leaf per weight shared by the threads, this deadlocked torch 2.13 within
    seconds, every time (see ``_threaded``); it runs in a process of its own because a
    deadlocked thread holds the GIL."""
    try:
        probe = [sys.executable, "-c", DEADLOCK_PROBE]
        done = subprocess.run(probe, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("the threads mapping deadlocked")
    assert done.stdout.strip() == "finished", done.stderr[-2000:]


def test_a_failing_task_in_a_worker_thread_raises_in_the_caller(three_torch_threads):
    seen: dict[int, str] = {}
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="task 4 failed"):
        mapped_meta_loss(
            _Recorder(seen), {"w": w}, _batch(6), "threads", replicate=lambda: _Recorder(seen, fail_on=4)
        )
    assert torch.get_num_threads() == 3


def test_auto_is_processes_for_images_on_a_multithreaded_cpu(three_torch_threads):
    assert resolve_mapping("auto", _batch(4)) == "processes"
    assert resolve_mapping("auto", _batch(1)) == "loop"
    assert resolve_mapping("auto", _batch(4, image=False)) == "vmap"
    torch.set_num_threads(1)
    assert resolve_mapping("auto", _batch(4)) == "loop"


@pytest.mark.parametrize(("tasks", "per_call", "workers"), [(32, 6, 2), (5, 3, 1), (3, 8, 2), (7, 2, 3)])
def test_task_groups_cover_every_task_once_in_balanced_groups(tasks, per_call, workers):
    groups = task_groups(tasks, per_call, workers)
    covered = [t for group in groups for t in range(tasks)[group]]
    assert covered == list(range(tasks))
    assert max(g.stop - g.start for g in groups) <= per_call
    per_worker = [sum(g.stop - g.start for g in groups[w::workers]) for w in range(workers)]
    assert max(per_worker) - min(per_worker) <= max(1, per_call - 1)
    assert task_groups(tasks, 1, workers) == list(range(tasks))


def _grouped(params, support_x, support_y, query_x, query_y):
    """A grouped objective: one loss and one metric per task of its slice."""
    tasks = support_x.flatten(1)[:, 0]
    return params["w"].sum() * tasks**2, {"task": tasks}


def test_grouped_calls_get_slices_and_their_per_task_results_are_averaged(three_torch_threads):
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    for mapping in ("loop", "threads", "processes"):
        w.grad = None
        loss, metrics = mapped_meta_loss(
            _grouped, {"w": w}, _batch(7), mapping, replicate=lambda: _grouped, tasks_per_call=3
        )
        loss.backward()
        assert torch.allclose(w.grad, torch.full((2,), sum(t**2 for t in range(7)) / 7, dtype=torch.float64))
        assert metrics["task"].item() == pytest.approx(3.0)


def test_vmap_in_chunks_calls_the_objective_once_per_chunk_with_the_same_result():
    """The objective sees a chunk of tasks as one batched call: 7 tasks in chunks of 3 make
    3 calls; the mean gradient and metrics are those of one call over all 7."""
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    calls = []

    def objective(params, support_x, support_y, query_x, query_y):
        calls.append(1)
        task = support_x.flatten()[0]
        return params["w"].sum() * task**2, {"task": task}

    for chunk_size, expected_calls in ((None, 1), (3, 3)):
        w.grad, calls[:] = None, []
        loss, metrics = mapped_meta_loss(objective, {"w": w}, _batch(7), "vmap", vmap_chunk_size=chunk_size)
        loss.backward()
        assert len(calls) == expected_calls
        assert torch.allclose(w.grad, torch.full((2,), sum(t**2 for t in range(7)) / 7, dtype=torch.float64))
        assert metrics["task"].item() == pytest.approx(3.0)


def _in_caller(params, support_x, support_y, query_x, query_y):
    """``w * task^2``, with the metric ``in_caller``: 1 where the task ran in the process
    whose id the batch's query labels carry."""
    task = int(support_x.flatten()[0])
    if task == int(support_y.flatten()[0]) > 0:
        raise ValueError(f"task {task} failed")
    in_caller = float(int(query_y.flatten()[0]) == os.getpid())
    metrics = {"task": torch.tensor(float(task)), "in_caller": torch.tensor(in_caller)}
    return params["w"].sum() * task**2, metrics


def _labelled_batch(tasks: int, fail_on: int = 0) -> TaskBatch:
    batch = _batch(tasks)
    support_y = torch.full_like(batch.support_y, fail_on)
    return TaskBatch(batch.support_x, support_y, batch.query_x, torch.full_like(batch.query_y, os.getpid()))


def _processes(objective, batch: TaskBatch, tasks_per_call: int = 1):
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    loss, metrics = mapped_meta_loss(objective, {"w": w}, batch, "processes", tasks_per_call=tasks_per_call)
    loss.backward()
    return w.grad, metrics


def test_processes_split_tasks_like_threads_over_worker_processes(three_torch_threads):
    """7 tasks over 3 workers: tasks 0, 3 and 6 in the caller, the others in two worker
    processes; the gradient and metrics are the means over all tasks."""
    grad, metrics = _processes(_in_caller, _labelled_batch(7))
    assert torch.equal(grad, torch.full((2,), sum(t**2 for t in range(7)) / 7, dtype=torch.float64))
    assert metrics["task"].item() == pytest.approx(3.0)
    assert metrics["in_caller"].item() == pytest.approx(3 / 7)
    assert len(worker_processes.pool(2).workers) == 2
    assert torch.get_num_threads() == 3


def test_a_failing_task_in_a_worker_process_raises_in_the_caller_and_the_next_batch_runs(
    three_torch_threads,
):
    with pytest.raises(ValueError, match="task 4 failed"):
        _processes(_in_caller, _labelled_batch(6, fail_on=4))
    assert torch.get_num_threads() == 3
    grad, _ = _processes(_in_caller, _labelled_batch(6))
    assert torch.equal(grad, torch.full((2,), sum(t**2 for t in range(6)) / 6, dtype=torch.float64))


def test_a_dead_worker_process_is_a_one_line_error_and_the_next_batch_starts_a_new_one(three_torch_threads):
    _processes(_in_caller, _labelled_batch(4))
    workers = worker_processes.pool(2).workers
    os.kill(workers[0][0].pid, signal.SIGINT)  # ignored: the caller decides what an interrupt means
    _processes(_in_caller, _labelled_batch(4))
    for worker in (0, 1):  # killed while idle, then while it computes
        if worker == 1:
            worker_processes.pool(2).run(worker_processes.payloads(time.sleep, (), [(0,), (60,)]))
        worker_processes.pool(2).workers[worker][0].kill()
        with pytest.raises(MetakitError, match=r"a task worker process exited \(code -9\)"):
            _processes(_in_caller, _labelled_batch(4)) if worker == 0 else worker_processes.pool(2).results()
        _, metrics = _processes(_in_caller, _labelled_batch(4))
        assert metrics["in_caller"].item() == pytest.approx(2 / 4)


def test_processes_refuse_an_objective_a_worker_cannot_load(three_torch_threads, tmp_path, monkeypatch):
    def local(params, support_x, support_y, query_x, query_y):
        return params["w"].sum(), {}

    with pytest.raises(MetakitError, match="cannot send this objective to a worker process.*importable"):
        _processes(local, _batch(4))
    _processes(_in_caller, _labelled_batch(4))  # workers started with the sys.path of now
    (tmp_path / "late_objective.py").write_text(
        "def objective(params, support_x, support_y, query_x, query_y):\n    return params['w'].sum(), {}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from late_objective import objective

    with pytest.raises(MetakitError, match="a worker process cannot load the objective.*importable module"):
        _processes(objective, _batch(4))


def test_auto_runs_threads_for_an_objective_that_processes_cannot_send(three_torch_threads):
    """A closure cannot be pickled, and a function of a script's ``__main__`` cannot be
    loaded by a worker: ``processes`` refuses both before starting a worker, and ``auto``
    runs them in threads of the caller."""

    def local(params, support_x, support_y, query_x, query_y):
        return _in_caller(params, support_x, support_y, query_x, query_y)

    def scripted(params, support_x, support_y, query_x, query_y):
        return _in_caller(params, support_x, support_y, query_x, query_y)

    scripted.__module__ = "__main__"
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    for objective, reason in ((local, "Can't pickle local object"), (scripted, "defined in __main__")):
        with pytest.raises(MetakitError, match=reason):
            _processes(objective, _labelled_batch(4))
        w.grad = None
        loss, metrics = mapped_meta_loss(
            objective, {"w": w}, _labelled_batch(4), "auto", lambda o=objective: o
        )
        loss.backward()
        assert torch.equal(w.grad, torch.full((2,), sum(t**2 for t in range(4)) / 4, dtype=torch.float64))
        assert metrics["in_caller"].item() == 1.0


def test_off_posix_auto_is_threads_and_processes_are_refused(three_torch_threads, monkeypatch):
    monkeypatch.setattr(task_mapping.os, "name", "nt")
    assert resolve_mapping("auto", _batch(4)) == "threads"
    with pytest.raises(MetakitError, match="needs a POSIX system"):
        _processes(_in_caller, _labelled_batch(4))


def test_processes_run_on_the_cpu_only(three_torch_threads):
    batch = TaskBatch(*(t.to("meta") for t in _batch(4).tensors()))
    with pytest.raises(MetakitError, match="runs on the CPU; use vmap"):
        _processes(_in_caller, batch)
