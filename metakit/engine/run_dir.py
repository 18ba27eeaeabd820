"""A run directory: the files of one training run, and the rules that keep them safe.

``config.json`` (the resolved config, versions, device, data fingerprints),
``metrics.jsonl`` (one JSON object per logging step), ``last.pt`` and
``best.pt`` (checkpoints), ``results.json`` (evaluations) and ``curves.png``.
A new run only starts in a missing or empty directory, and a run is only
continued with a config that describes the same run, so one run's files are
never overwritten by another's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from metakit.atomic_file import atomic_write, write_failure
from metakit.engine.config import TrainConfig
from metakit.errors import MetakitError

RESUMABLE_CHANGES = (
    # What may differ when a run is continued: none of these changes what is learnt.
    "iterations",
    "device",
    "eval_every",
    "eval_tasks",
    "test_tasks",
    "log_every",
    "checkpoint_every",
    "minutes",
    "run_dir",
    # Where the data is read from: the data fingerprint, checked separately, guards its content.
    "sampler_options.data_dir",
    "sampler_options.cache_dir",
    "sampler_options.download",
)


def default_run_dir(config: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.algorithm}-{config.sampler}-{config.ways}w{config.shots}s-{stamp}"


class RunDirectory:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_file = self.path / "config.json"
        self.metrics_file = self.path / "metrics.jsonl"
        self.results_file = self.path / "results.json"
        self.plot_file = self.path / "curves.png"

    def checkpoint(self, which: str) -> Path:
        if which not in ("last", "best"):
            raise MetakitError(f"checkpoint must be 'last' or 'best', got '{which}'")
        return self.path / f"{which}.pt"

    def create(self, record: dict[str, Any]) -> None:
        """Start a new run here with ``config.json`` = ``record``; refuses a non-empty directory."""
        if self.path.exists() and not self.path.is_dir():
            raise MetakitError(f"run dir {self.path} is a file; choose another --run-dir")
        if self.path.is_dir() and any(self.path.iterdir()):
            if self.config_file.exists() and not self.checkpoint("last").exists():
                raise MetakitError(
                    f"run dir {self.path} holds a run that stopped before its first checkpoint; "
                    "delete the folder or choose another --run-dir"
                )
            if self.config_file.exists():
                raise MetakitError(
                    f"run dir {self.path} already holds a run; pass --resume to continue it "
                    "or choose another --run-dir"
                )
            raise MetakitError(f"run dir {self.path} is not empty; choose another --run-dir")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise MetakitError(
                f"cannot create run dir {self.path} ({error.strerror}); choose another --run-dir"
            ) from error
        self._write_json(self.config_file, record)

    def record(self) -> dict[str, Any]:
        """The ``config.json`` of an existing run."""
        if not self.config_file.is_file():
            raise MetakitError(f"{self.path} holds no metakit run (no config.json); check the path")
        try:
            record = json.loads(self.config_file.read_text())
            TrainConfig.from_dict(record["config"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:  # bad JSON or UTF-8
            raise MetakitError(f"{self.config_file} is corrupt ({error}); the run cannot be used") from error
        except MetakitError as error:
            raise MetakitError(f"{self.config_file}: {error}") from error
        return record

    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.record()["config"], source=str(self.config_file))

    def check_same_run(self, config: TrainConfig, data: dict[str, Any]) -> None:
        """Refuse to continue this run with a config or data that describe another run."""
        self.check_same_config(config)
        saved_data = self.record().get("data", {})
        if any(saved_data.get(split, fingerprint) != fingerprint for split, fingerprint in data.items()):
            raise MetakitError(
                f"run dir {self.path} was trained on other data than this sampler now reads "
                "(see its config.json 'data'); point the sampler at the same data or start a new run"
            )

    def check_same_config(self, config: TrainConfig, ignored: tuple[str, ...] = ()) -> None:
        """Refuse to continue this run with a config that describes another run; the options
        in ``ignored`` (e.g. ``hyperparameters``, before the algorithm fills in its defaults)
        are not compared."""
        difference = _first_difference(self.record()["config"], config.to_dict(), ignored)
        if difference:
            name, saved, given = difference
            raise MetakitError(
                f"run dir {self.path} holds a different run ({name} is {saved} there, {given} here); "
                "choose another --run-dir"
            )

    def check_own_checkpoint(self, checkpoint: dict[str, Any], path: Path) -> None:
        """Refuse a checkpoint that another run wrote (copied here by hand, say)."""
        difference = _first_difference(self.record()["config"], checkpoint["config"])
        if difference:
            name, saved, given = difference
            raise MetakitError(
                f"checkpoint {path} belongs to another run ({name} is {saved} in {self.config_file.name}, "
                f"{given} in the checkpoint); put this run's own checkpoint back"
            )

    def append_metrics(self, line: dict[str, Any]) -> None:
        try:
            with self.metrics_file.open("a") as file:
                file.write(json.dumps(line) + "\n")
        except OSError as error:
            raise write_failure(self.metrics_file, error.strerror or str(error)) from error

    def metrics(self) -> list[dict[str, Any]]:
        """The logged lines. A last line that lacks its newline and does not parse was cut by a
        crash while it was written, after the last checkpoint: it is left out (a resumed run
        logs it again)."""
        if not self.metrics_file.exists():
            return []
        try:
            text = self.metrics_file.read_text()
        except (OSError, ValueError) as error:
            raise MetakitError(f"{self.metrics_file} cannot be read ({error}); move it away") from error
        *lines, unterminated = text.split("\n")
        parsed = [self._metrics_line(line, number) for number, line in enumerate(lines, 1) if line.strip()]
        if unterminated.strip():
            try:
                parsed.append(self._metrics_line(unterminated, len(lines) + 1))
            except MetakitError:
                pass
        return parsed

    def _metrics_line(self, line: str, number: int) -> dict[str, Any]:
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            entry = None
        if not isinstance(entry, dict) or not isinstance(entry.get("iteration"), int):
            raise MetakitError(
                f"{self.metrics_file} is corrupt at line {number}; delete that line or start a new run"
            )
        return entry

    def truncate_metrics(self, iteration: int) -> None:
        """Drop the lines logged after ``iteration`` (by a run killed after its last
        checkpoint), which the resumed run is about to log again."""
        kept = [line for line in self.metrics() if line["iteration"] <= iteration]
        text = "".join(json.dumps(line) + "\n" for line in kept)
        atomic_write(self.metrics_file, lambda file: file.write(text.encode()))

    def results(self) -> list[dict[str, Any]]:
        """The evaluations in ``results.json`` (none if there is no such file)."""
        if not self.results_file.exists():
            return []
        try:
            results = json.loads(self.results_file.read_text())
        except (OSError, ValueError, RecursionError) as error:
            raise MetakitError(f"{self.results_file} is corrupt ({error}); move it away") from error
        if not isinstance(results, list) or not all(isinstance(result, dict) for result in results):
            raise MetakitError(f"{self.results_file} is not a list of results; move it away")
        return results

    def add_result(self, result: dict[str, Any], key: tuple) -> None:
        """Add an evaluation to ``results.json``, replacing one with the same ``key`` fields."""
        results = self.results()
        results = [old for old in results if tuple(old.get(k) for k in key) != tuple(result[k] for k in key)]
        self._write_json(self.results_file, results + [result])

    @staticmethod
    def _write_json(path: Path, value: Any) -> None:
        text = json.dumps(value, indent=2) + "\n"
        atomic_write(path, lambda file: file.write(text.encode()))


def _first_difference(
    saved: dict[str, Any], given: dict[str, Any], ignored: tuple[str, ...] = ()
) -> tuple[str, str, str] | None:
    """``(option, saved value, given value)`` of the first option, in name order, that the two
    configs set differently and that a resumed run may not change; values as JSON."""
    saved, given = _flat(saved), _flat(given)
    for name in sorted(set(saved) | set(given)):
        if name in RESUMABLE_CHANGES or name.split(".")[0] in RESUMABLE_CHANGES + ignored:
            continue
        if saved.get(name) != given.get(name):
            return name, json.dumps(saved.get(name)), json.dumps(given.get(name))
    return None


def _flat(values: dict[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: a difference is named down to the option."""
    flat = {}
    for name, value in values.items():
        if isinstance(value, dict):
            flat |= {f"{name}.{key}": inner for key, inner in _flat(value).items()}
        else:
            flat[name] = value
    return flat
