"""TrainConfig: every option of a training run, one typed object for the CLI, the library and the run."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import typing
from pathlib import Path
from typing import Any

from metakit.errors import MetakitError
from metakit.hyperparameters import json_value
from metakit.precision import check_precision

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PAPER_SETTINGS: dict[str, dict[int, dict[str, Any]]] = {
    # Finn et al. 2017 (docs REFERENCE.md section 1): keyed by sampler, then by ways.
    "omniglot": {
        5: {"meta_batch": 32, "inner_steps": 1, "inner_lr": 0.4, "eval_inner_steps": 3},
        20: {"meta_batch": 16, "inner_steps": 5, "inner_lr": 0.1, "eval_inner_steps": 5},
    },
    # Section 5.1 of the paper: 25 tasks per meta-batch, one step of 0.01.
    "sinusoid": {1: {"meta_batch": 25, "inner_steps": 1, "inner_lr": 0.01, "eval_inner_steps": 10}},
}
DEFAULT_META_BATCH = 32
MAX_COUNT = 2**40  # about 10**12: far above any real run, far below the 2**63 that overflows torch


@dataclasses.dataclass
class TrainConfig:
    """A training run. ``None`` means "the paper's setting for this sampler and number of ways"
    (see ``PAPER_SETTINGS``; the nearest ``ways`` listed is used), filled in by ``resolved()``.

    ``queries`` is per class (points for regression); ``None`` = ``shots``, as in the paper.
    ``hyperparameters`` go to the algorithm's ``Hyperparameters`` dataclass, ``sampler_options``
    and ``backbone_options`` to the sampler and backbone factories (beside the task shape,
    which the engine passes itself). ``eval_every``, ``eval_tasks``: validation during
    training (0 = never); ``test_tasks``: the meta-test evaluation at the end (0 = none);
    ``precision``: ``fp32``, or ``bf16`` autocast for the meta-loss (see ``metakit.precision``);
    ``eval_queries``: query examples per class when evaluating. ``minutes``: stop
    training after this much wall time (validation included, summed over resumes) even
    before ``iterations``; 0 = no limit.
    """

    algorithm: str = "maml"
    backbone: str = "conv4"
    sampler: str = "omniglot"
    ways: int = 5
    shots: int = 1
    queries: int | None = None
    meta_batch: int | None = None
    iterations: int = 60000
    minutes: float = 0.0
    meta_lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    eval_every: int = 500
    eval_tasks: int = 100
    eval_queries: int = 15
    test_tasks: int = 600
    log_every: int = 10
    checkpoint_every: int = 100
    run_dir: str | None = None
    hyperparameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    sampler_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    backbone_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        positive = ["ways", "shots", "iterations", "eval_queries", "log_every", "checkpoint_every"]
        for name in positive + ["queries", "meta_batch"]:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise MetakitError(f"option {name} must be at least 1, got {value}")
        for name in ("eval_every", "eval_tasks", "test_tasks"):
            if getattr(self, name) < 0:
                raise MetakitError(f"option {name} must be 0 or more, got {getattr(self, name)}")
        for name in ("ways", "shots", "queries", "meta_batch", "eval_queries"):  # tensor sizes
            check_count(name, getattr(self, name))
        if not self.minutes >= 0:  # nan too; inf is no limit
            raise MetakitError(f"option minutes must be 0 (no limit) or more, got {self.minutes}")
        if not 0 < self.meta_lr < math.inf:
            raise MetakitError(f"option meta_lr must be a positive number, got {self.meta_lr}")
        check_seed(self.seed)
        if self.eval_every and not self.eval_tasks:
            raise MetakitError("validation (eval_every > 0) needs eval_tasks >= 1")
        check_precision(self.precision)

    def paper_settings(self) -> dict[str, Any]:
        """The paper's settings for this sampler at the nearest listed number of ways ({} if none)."""
        by_ways = PAPER_SETTINGS.get(self.sampler, {})
        if not by_ways:
            return {}
        return by_ways[min(by_ways, key=lambda ways: abs(ways - self.ways))]

    def resolved(self, hyperparameter_names: typing.Iterable[str]) -> TrainConfig:
        """A copy without ``None``s: ``queries`` = ``shots``, and the paper's ``meta_batch``
        and those of its algorithm settings that the algorithm has (``hyperparameter_names``)
        unless set explicitly."""
        paper = self.paper_settings()
        hyperparameters = {
            name: paper[name] for name in hyperparameter_names if name in paper
        } | self.hyperparameters
        return dataclasses.replace(
            self,
            queries=self.shots if self.queries is None else self.queries,
            meta_batch=self.meta_batch or paper.get("meta_batch", DEFAULT_META_BATCH),
            hyperparameters=hyperparameters,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON values only (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Checked: an unknown option or a value of the wrong type is a MetakitError."""
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(values) - set(hints))
        if unknown:
            raise MetakitError(
                f"{source}: unknown option {', '.join(unknown)}; known: {', '.join(sorted(hints))}"
            )
        try:
            checked = {name: json_value(name, value, hints[name]) for name, value in values.items()}
        except MetakitError as error:
            raise MetakitError(f"{source}: {error}") from None
        return cls(**checked)

    def merged(self, overrides: dict[str, Any]) -> TrainConfig:
        """This config with the non-``None`` ``overrides`` applied; dict options are updated
        key by key, so ``--inner-lr`` keeps the other hyperparameters of a config file."""
        values = self.to_dict()
        for name, value in overrides.items():
            if value is None:
                continue
            values[name] = values[name] | value if isinstance(value, dict) else value
        return TrainConfig.from_dict(values)


def check_count(name: str, value: int | None) -> None:
    """A count that sets a tensor's size, small enough for torch (2**63 overflows it)."""
    if value is not None and value > MAX_COUNT:
        raise MetakitError(f"option {name} must be at most {MAX_COUNT:,}, got {value}")


def check_seed(seed: int) -> None:
    """A seed that torch's generators take, with room for the offsets added to it."""
    if not -(2**63) <= seed < 2**63:
        raise MetakitError(f"the seed must be between -2**63 and 2**63 - 1, got {seed}")


def load_config(path: str | Path) -> TrainConfig:
    """A TrainConfig from a TOML (``.toml``) or JSON file whose keys are its option names;
    the dict options are TOML tables (``[hyperparameters]``)."""
    path = Path(path)
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    try:
        text = path.read_text()
    except OSError as error:
        raise MetakitError(f"cannot read config file {path}: {error.strerror}") from error
    except ValueError as error:
        raise MetakitError(f"config file {path} is not text ({error}); give a {kind} file") from error
    try:
        values = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (ValueError, RecursionError) as error:  # TOMLDecodeError, JSONDecodeError; nesting too deep
        raise MetakitError(f"config file {path} is not valid {kind}: {error}") from error
    if not isinstance(values, dict):
        raise MetakitError(f"config file {path} must hold a table of options")
    return TrainConfig.from_dict(values, source=str(path))
