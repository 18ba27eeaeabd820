"""Progress of a long loop (meta-training, meta-testing) on a terminal (a rich progress
bar) or in a log (periodic plain lines).

Output that is not a terminal (CI, nohup, a pipe) gets one line per
``interval`` seconds instead of a bar, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

SHORT_NAMES = {"tasks_per_second": "tasks/s"}


class Progress:
    """``with Progress(total, start) as bar: bar.update(iteration, {"loss": 0.3}); bar.log("...")``.
    ``label`` names the loop on the bar, ``unit`` its steps in the plain lines."""

    def __init__(
        self,
        total: int,
        start: int = 0,
        stream: TextIO | None = None,
        interval: float = 10.0,
        label: str = "meta-train",
        unit: str = "iteration",
    ):
        self.total, self.start = total, start
        self.label, self.unit = label, unit
        self.stream = stream or sys.stderr
        self.interval = interval
        self._bar: RichProgress | None = None
        self._began = self._last_line = time.monotonic()

    def __enter__(self) -> Progress:
        if self.stream.isatty():
            self._bar = RichProgress(
                TextColumn(f"[bold]{self.label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, completed=self.start, status="")
        return self

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, done: int, figures: dict[str, float] | None = None) -> None:
        status = "  ".join(
            f"{SHORT_NAMES.get(name, name)} {_format(value)}" for name, value in (figures or {}).items()
        )
        if self._bar is not None:
            self._bar.update(self._task, completed=done, status=status)
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval or done == self.total:
            self._last_line = now
            figures_part = f"  {status}" if status else ""
            self.log(f"{self.unit} {done}/{self.total}{figures_part}  ETA {self._eta(done, now)}")

    def log(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, highlight=False, markup=False)
        else:
            print(line, file=self.stream, flush=True)

    def _eta(self, done: int, now: float) -> str:
        since_start = done - self.start
        if since_start <= 0:
            return "?"
        seconds = int((now - self._began) / since_start * (self.total - done))
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _format(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
