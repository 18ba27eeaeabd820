"""Python worker processes that run functions for the ``processes`` task mapping.

A worker is a Python interpreter running ``serve()`` on two pipes: it reads a call
(``payloads()``: a pickled ``(function, shared, autocast)`` and a pickled ``own``), runs
``function(*shared, *own)`` on one torch thread under that autocast state and writes
back the pickled result (or the exception it raised) with the worker's peak RSS.
Functions and their arguments cross by plain pickle (tensors by value): nothing is moved
into shared memory behind the caller's back, and every class and function in a call must
be importable by the worker, so none may come from a script's ``__main__``
(``payloads()`` raises ``CannotSend`` before anything starts).

Workers are started with ``subprocess`` rather than ``multiprocessing`` so that a user's
script is never imported again in a worker (on POSIX systems: they inherit the pipes by
descriptor); they ignore SIGINT (the caller decides what an interrupt means) and exit
when their input pipe closes, so they end with the caller even when it is killed.
"""

from __future__ import annotations

import atexit
import io
import os
import pickle
import signal
import struct
import subprocess
import sys
import types
from collections.abc import Callable
from typing import Any, BinaryIO

import torch

from metakit.errors import MetakitError
from metakit.precision import autocast_state

_HEADER = struct.Struct("<Q")
_ADVICE = "define the algorithm in an importable module, or use task_mapping=threads"


class CannotSend(MetakitError):
    """A call that a worker process could not load: nothing was sent."""


class _Pickler(pickle.Pickler):
    """Refuses what pickle would send by a name that a worker cannot import."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType)) and obj.__module__ == "__main__":
            raise pickle.PicklingError(f"{obj.__qualname__} is defined in __main__")
        return NotImplemented


def payloads(function: Callable[..., Any], shared: tuple, each: list[tuple]) -> list[tuple[bytes, bytes]]:
    """The calls ``function(*shared, *own)``, one per ``own`` in ``each``, pickled for the
    workers: ``function``, ``shared`` and the caller's CPU autocast state once for all."""
    common = _dumps((function, shared, autocast_state("cpu")))
    return [(common, _dumps(own)) for own in each]


def _dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise CannotSend(
            f"task_mapping=processes cannot send this objective to a worker process ({error}); {_ADVICE}"
        ) from None
    return buffer.getvalue()


def _send(stream: BinaryIO, data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream: BinaryIO) -> bytes:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return data


class WorkerPool:
    """``count`` worker processes. ``run(calls)`` sends ``calls[i]`` (from ``payloads()``)
    to worker ``i``; ``results()`` returns their results in that order,
    raising the first worker's exception if any raised. After any failure, or an interrupt
    between the two, the pool is closed: its workers' state is unknown."""

    def __init__(self, count: int):
        self.workers: list[tuple[subprocess.Popen, BinaryIO, BinaryIO]] = []
        self.peak_rss_bytes = [0] * count
        try:
            for _ in range(count):
                self.workers.append(self._start())
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _start() -> tuple[subprocess.Popen, BinaryIO, BinaryIO]:
        worker_in, to_worker = os.pipe()
        from_worker, worker_out = os.pipe()
        command = "from metakit.worker_processes import serve; serve()"
        process = subprocess.Popen(  # the caller's sys.path, to import what it imported
            [sys.executable, "-c", command, str(worker_in), str(worker_out)],
            pass_fds=(worker_in, worker_out),
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        os.close(worker_in)
        os.close(worker_out)
        return process, open(to_worker, "wb"), open(from_worker, "rb")

    def run(self, calls: list[tuple[bytes, bytes]]) -> None:
        try:
            for (common, own), (process, to_worker, _) in zip(calls, self.workers):
                try:
                    _send(to_worker, common)
                    _send(to_worker, own)
                except BrokenPipeError:
                    raise _exited(process) from None
        except BaseException:
            self.close()
            raise

    def results(self) -> list[Any]:
        replies = []
        try:
            for index, (process, _, from_worker) in enumerate(self.workers):
                try:
                    ok, value, peak = pickle.loads(_receive(from_worker))
                except EOFError:
                    raise _exited(process) from None
                self.peak_rss_bytes[index] = peak
                replies.append((ok, value))
        except BaseException:
            self.close()
            raise
        for ok, value in replies:
            if not ok:
                self.close()
                raise value
        return [value for _, value in replies]

    def close(self) -> None:
        for process, to_worker, from_worker in self.workers:
            to_worker.close()
            from_worker.close()
            process.kill()
            process.wait()
        self.workers = []


def _exited(process: subprocess.Popen) -> MetakitError:
    return MetakitError(
        f"a task worker process exited (code {process.wait()}); if the machine ran out of memory, "
        "use fewer tasks per batch or task_mapping=loop"
    )


_pool: WorkerPool | None = None


def pool(count: int) -> WorkerPool:
    """The process's pool of ``count`` workers, started on first use and again after a
    failure closed it; it is closed at exit."""
    global _pool
    if _pool is None or len(_pool.workers) != count:
        if _pool is not None:
            _pool.close()
        _pool = WorkerPool(count)
    return _pool


def peak_rss_bytes() -> int:
    """The sum of the peak RSS of this process's workers, as each last reported it."""
    return sum(_pool.peak_rss_bytes) if _pool is not None else 0


@atexit.register
def _close_pool() -> None:
    if _pool is not None:
        _pool.close()


def serve() -> None:
    """A worker's loop, on the pipes whose descriptors are ``sys.argv[1:3]``."""
    import resource  # POSIX only, like the workers: importing metakit must work on any system

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    reader, writer = open(int(sys.argv[1]), "rb"), open(int(sys.argv[2]), "wb")
    while True:
        try:
            common, own = _receive(reader), _receive(reader)
        except EOFError:
            return
        try:
            function, shared, autocast = _load_call(common)
            with torch.autocast(**autocast):
                reply = (True, function(*shared, *_load_call(own)))
        except Exception as error:  # raised again in the caller
            reply = (False, error)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        try:
            data = pickle.dumps((*reply, peak), protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError):
            data = pickle.dumps((False, RuntimeError(f"in a task worker process: {reply[1]!r}"), peak))
        _send(writer, data)


def _load_call(data: bytes) -> Any:
    try:
        return pickle.loads(data)
    except (AttributeError, ImportError) as error:
        raise MetakitError(
            f"task_mapping=processes: a worker process cannot load the objective ({error}); {_ADVICE}"
        ) from None
