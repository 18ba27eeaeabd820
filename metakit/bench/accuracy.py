"""The Omniglot accuracy suite: MAML and FOMAML per setting and data protocol, trained one cell
at a time (resumable), evaluated both transductively and not, tabled beside the published numbers.

A cell is ``algorithm x setting x protocol`` and its run lives in ``root/<cell name>``
(e.g. ``root/maml-5w1s-paper``). For each selected cell, in order:

1. no run there: train a new one for ``budget`` iterations; a run that stopped short of
   ``budget`` is resumed up to it (the engine continues it exactly); a run at ``budget`` or
   beyond is left as it is. With ``minutes``, each cell trains for at most that long in
   this invocation and is evaluated where it stopped; the next invocation resumes it;
2. evaluate its checkpoint (``best`` by validation) on ``eval_tasks`` test tasks with each
   evaluation protocol, unless its ``results.json`` already holds that evaluation of that
   checkpoint.

With ``table_only`` nothing is trained or evaluated: the table shows what the runs hold.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Iterable
from pathlib import Path

from metakit.bench.machine import describe
from metakit.bench.published import Published, published
from metakit.engine import EvalResult, TrainConfig, evaluate, train
from metakit.engine.checkpoint import load_checkpoint
from metakit.engine.components import resolve_device
from metakit.engine.config import PAPER_SETTINGS, check_seed
from metakit.engine.evaluate import PROTOCOLS as EVAL_PROTOCOLS
from metakit.engine.run_dir import RunDirectory
from metakit.errors import MetakitError
from metakit.registry import backbones

FULL_BUDGET = 60000  # the MAML paper's meta-iterations
EVAL_SEED = 0  # the same test tasks for every run
ALGORITHMS = ("maml", "fomaml")
SETTINGS = {"5w1s": (5, 1), "5w5s": (5, 5), "20w1s": (20, 1), "20w5s": (20, 5)}
DATA_PROTOCOLS = {
    "paper": {"convention": "maml-1200", "rotation": "per-task"},
    "official": {"convention": "background-evaluation", "rotation": "none"},
}
NETWORKS = {"paper": "conv4-strided", "official": "conv4"}
"""Each protocol's network unless one is chosen for every cell: the one behind the figures the
protocol compares with. The MAML paper's Omniglot network has stride-2 convolutions and no
max-pool; the public reproduction's has max-pool."""
DEFAULT_ROOT = Path("runs/omniglot-accuracy")


@dataclasses.dataclass(frozen=True)
class Cell:
    algorithm: str
    setting: str
    protocol: str

    @property
    def name(self) -> str:
        return f"{self.algorithm}-{self.setting}-{self.protocol}"


def select_cells(
    algorithms: Iterable[str], settings: Iterable[str], protocols: Iterable[str]
) -> tuple[Cell, ...]:
    """The cells of every chosen algorithm, setting and protocol, in the suite's order."""
    chosen = {
        "algorithm": _known("algorithm", algorithms, ALGORITHMS),
        "setting": _known("setting", settings, SETTINGS),
        "protocol": _known("protocol", protocols, DATA_PROTOCOLS),
    }
    return tuple(
        Cell(algorithm, setting, protocol)
        for algorithm in ALGORITHMS
        for setting in SETTINGS
        for protocol in DATA_PROTOCOLS
        if (algorithm, setting, protocol) in _product(chosen)
    )


def _known(kind: str, names: Iterable[str], known: Iterable[str]) -> set[str]:
    names, known = set(names), list(known)
    for name in sorted(names):
        if name not in known:
            raise MetakitError(f"unknown {kind} '{name}'; use one of {', '.join(known)}")
    if not names:
        raise MetakitError(f"choose at least one {kind} of {', '.join(known)}")
    return names


def _product(chosen: dict[str, set[str]]) -> set[tuple[str, str, str]]:
    return {(a, s, p) for a in chosen["algorithm"] for s in chosen["setting"] for p in chosen["protocol"]}


@dataclasses.dataclass
class AccuracySettings:
    """What to run: ``budget`` meta-iterations per cell, trained for at most ``minutes`` per cell
    in this invocation (0: no limit); runs under ``root``; ``data_dir`` holds the Omniglot zips
    (``None``: the sampler's default), fetched there when missing if ``download``; ``backbone``
    is every cell's network (``None``: each protocol's, ``NETWORKS``); ``output=None`` appends
    nothing."""

    cells: tuple[Cell, ...]
    budget: int = FULL_BUDGET
    minutes: float = 0.0
    root: Path = DEFAULT_ROOT
    data_dir: Path | None = None
    download: bool = False
    device: str = "auto"
    eval_tasks: int = 600
    seed: int = 0
    precision: str = TrainConfig.precision
    backbone: str | None = None
    table_only: bool = False
    output: Path | None = Path("docs/benchmarks.md")
    command: str = ""

    def validate(self) -> None:
        if self.budget < 1:
            raise MetakitError(f"--budget must be at least 1 iteration ({FULL_BUDGET} is a full run)")
        if not self.minutes >= 0:  # nan too; inf is no limit
            raise MetakitError(f"--minutes must be 0 (no limit) or more, got {self.minutes}")
        check_seed(self.seed)
        if self.eval_tasks < 1:
            raise MetakitError(f"--eval-tasks must be at least 1 (600 in the paper), got {self.eval_tasks}")
        if self.root.exists() and not self.root.is_dir():
            raise MetakitError(f"--root {self.root} is a file; give a folder for the cells' run directories")
        resolve_device(self.device)
        if self.backbone is not None:
            backbones.get(self.backbone)

    def network(self, protocol: str) -> str:
        return self.backbone or NETWORKS[protocol]

    def config(self, cell: Cell) -> TrainConfig:
        """The cell's run: the engine's defaults (the paper's hyperparameters for the number of
        ways) on Omniglot under the cell's data protocol; meta-testing is done by the suite."""
        ways, shots = SETTINGS[cell.setting]
        options = dict(DATA_PROTOCOLS[cell.protocol])
        if self.data_dir is not None:
            options["data_dir"] = str(self.data_dir)
        if self.download:
            options["download"] = True
        return TrainConfig(
            algorithm=cell.algorithm,
            backbone=self.network(cell.protocol),
            sampler="omniglot",
            ways=ways,
            shots=shots,
            iterations=self.budget,
            seed=self.seed,
            device=self.device,
            precision=self.precision,
            test_tasks=0,
            run_dir=str(self.root / cell.name),
            sampler_options=options,
        )


@dataclasses.dataclass
class CellResult:
    """What a cell's run holds: ``iterations`` trained (``None``: no run yet), the device and
    seconds it trained for, and its evaluation per protocol (absent: not evaluated)."""

    cell: Cell
    iterations: int | None = None
    trained_on: str = ""
    train_seconds: float = 0.0
    results: dict[str, EvalResult] = dataclasses.field(default_factory=dict)
    interrupted: bool = False

    @property
    def full(self) -> bool:
        return self.iterations == FULL_BUDGET


def run_accuracy_suite(settings: AccuracySettings, log: Callable[[str], None] = print) -> list[CellResult]:
    """Every selected cell, one at a time; after a Ctrl-C the remaining cells are only read."""
    settings.validate()
    results: list[CellResult] = []
    for cell in settings.cells:
        stopped = any(result.interrupted for result in results)
        if settings.table_only or stopped:
            results.append(read_cell(cell, settings))
        else:
            results.append(run_cell(cell, settings, log))
    return results


def run_cell(cell: Cell, settings: AccuracySettings, log: Callable[[str], None]) -> CellResult:
    """Train (or resume) ``cell`` up to the budget, then evaluate what is not evaluated yet."""
    directory = RunDirectory(settings.root / cell.name)
    trained = _trained(directory, settings.config(cell))
    directory.results()  # a damaged results.json is refused before training, not after
    if trained is None or trained[0] < settings.budget:
        start = "training" if trained is None else f"resuming at iteration {trained[0]}"
        log(f"{cell.name}: {start} up to {settings.budget} in {directory.path}")
        config = settings.config(cell)
        if settings.minutes:  # the engine's limit counts the run's earlier wall time too
            earlier_seconds = trained[1] if trained else 0.0
            config = dataclasses.replace(config, minutes=earlier_seconds / 60 + settings.minutes)
        run = train(config, resume=trained is not None)
        if run.interrupted:
            return dataclasses.replace(read_cell(cell, settings), interrupted=True)
        if run.iteration < settings.budget:
            log(
                f"{cell.name}: stopped at iteration {run.iteration} by --minutes; the same command resumes it"
            )
    else:
        log(f"{cell.name}: {trained[0]} iterations trained (budget {settings.budget}); not trained further")
    config = directory.config()
    for protocol in EVAL_PROTOCOLS:
        if _evaluation(directory, config, protocol, settings) is None:
            log(f"{cell.name}: evaluating ({protocol}) on {settings.eval_tasks} test tasks")
            evaluate(
                directory.path,
                settings.eval_tasks,
                "test",
                protocol,
                checkpoint=_checkpoint_name(config),
                seed=EVAL_SEED,
                device=settings.device,
                progress=True,
            )
    return read_cell(cell, settings)


def read_cell(cell: Cell, settings: AccuracySettings) -> CellResult:
    """What ``cell``'s run directory holds, without training or evaluating."""
    directory = RunDirectory(settings.root / cell.name)
    trained = _trained(directory, settings.config(cell))
    if trained is None:
        return CellResult(cell)
    config = directory.config()
    found = {protocol: _evaluation(directory, config, protocol, settings) for protocol in EVAL_PROTOCOLS}
    return CellResult(
        cell,
        iterations=trained[0],
        trained_on=directory.record().get("environment", {}).get("device", "?"),
        train_seconds=trained[1],
        results={protocol: result for protocol, result in found.items() if result is not None},
    )


def _trained(directory: RunDirectory, expected: TrainConfig) -> tuple[int, float] | None:
    """``(iteration, wall seconds)`` of the run's ``last.pt``; ``None`` if there is no run.
    A run of another cell, or one without a checkpoint, is an error: it is never touched."""
    if not directory.config_file.exists():
        return None
    saved = directory.config()
    fields = ("algorithm", "backbone", "sampler", "ways", "shots", "precision")
    options = ("convention", "rotation")
    if any(getattr(saved, f) != getattr(expected, f) for f in fields) or any(
        saved.sampler_options.get(o) != expected.sampler_options[o] for o in options
    ):
        raise MetakitError(
            f"run dir {directory.path} holds another run ({saved.algorithm} on {saved.backbone} in "
            f"{saved.precision}, {saved.ways}w{saved.shots}s, {saved.sampler} "
            f"{saved.sampler_options.get('convention')}, "
            f"rotation {saved.sampler_options.get('rotation')}); move it away, choose another --root, "
            "or give its --backbone and --precision"
        )
    last = directory.checkpoint("last")
    if not last.is_file():
        raise MetakitError(
            f"run dir {directory.path} holds a run that stopped before its first checkpoint; "
            "move it away to train this cell afresh"
        )
    checkpoint = load_checkpoint(last)
    return checkpoint["iteration"], checkpoint["wall_time"]


def _checkpoint_name(config: TrainConfig) -> str:
    return "best" if config.eval_every else "last"


def _evaluation(
    directory: RunDirectory, config: TrainConfig, protocol: str, settings: AccuracySettings
) -> EvalResult | None:
    """The recorded evaluation of the run's current checkpoint that the suite asks for, if any."""
    checkpoint = _checkpoint_name(config)
    path = directory.checkpoint(checkpoint)
    recorded = directory.results()
    if not path.is_file() or not recorded:
        return None
    wanted = {
        "split": "test",
        "protocol": protocol,
        "checkpoint": checkpoint,
        "iteration": load_checkpoint(path)["iteration"],
        "tasks": settings.eval_tasks,
        "queries": config.eval_queries,
        "inner_steps": config.hyperparameters.get("eval_inner_steps"),
        "seed": EVAL_SEED,
    }
    for entry in recorded:
        if all(entry.get(name) == value for name, value in wanted.items()):
            try:
                return EvalResult(**entry)
            except TypeError as error:
                raise MetakitError(f"{directory.results_file} holds a damaged entry; move it away") from error
    return None


def format_accuracy_report(
    results: list[CellResult], settings: AccuracySettings, date: datetime.date | None = None
) -> str:
    """A markdown section: how the cells were run and evaluated, then one row per cell."""
    date = date or datetime.date.today()
    machine = describe(str(resolve_device(settings.device)))
    gpu = f", GPU {machine['gpu']}" if "gpu" in machine else ""
    header = ["cell", "iterations", "transductive %", "non-transductive %", "published %"]
    header += ["target (transductive)", "trained on"]
    lines = [
        f"## Omniglot accuracy, {date.isoformat()}",
        "",
        f"Command: `{settings.command}`" if settings.command else "",
        "",
        f"Machine: {machine['cpu']} ({machine['cpus']} logical CPUs){gpu}; torch {machine['torch']}; "
        f"{machine['threads']} threads; device {machine['device']}. Runs in `{settings.root}`.",
        "",
        _protocol_text(settings),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(_row(result)) + " |" for result in results),
        "",
        _budget_summary(results),
    ]
    return "\n".join(lines) + "\n"


def _protocol_text(settings: AccuracySettings) -> str:
    paper = PAPER_SETTINGS["omniglot"]
    per_ways = "; ".join(
        f"{ways}-way: meta-batch {p['meta_batch']}, {p['inner_steps']} inner step(s) of {p['inner_lr']}, "
        f"{p['eval_inner_steps']} at test"
        for ways, p in paper.items()
    )
    defaults = TrainConfig()
    return (
        f"Training: {_networks(settings)}, {settings.precision}, Adam {defaults.meta_lr}, "
        f"seed {settings.seed}, queries = shots, "
        f"the MAML paper's settings per ways ({per_ways}); `paper` = maml-1200 split with each class "
        "of a task rotated by a random multiple of 90 degrees, `official` = background/evaluation "
        f"split, no rotations (validation classes held out of training in both). The checkpoint "
        f"that was best on validation is tested on {settings.eval_tasks} test tasks (seed {EVAL_SEED}, "
        f"{defaults.eval_queries} queries per class): mean ± 1.96·std/√tasks. Transductive: the query "
        "set is one BatchNorm batch (the paper's way); non-transductive: each query is classified "
        f"alone with the support set. A cell is full when it trained the paper's {FULL_BUDGET} "
        "iterations; a budgeted cell trained fewer and its figures are not comparable with the "
        "published ones."
    )


def _networks(settings: AccuracySettings) -> str:
    if settings.backbone is not None:
        return settings.backbone
    protocols = dict.fromkeys(cell.protocol for cell in settings.cells)
    return ", ".join(f"{settings.network(protocol)} under `{protocol}`" for protocol in protocols)


def _row(result: CellResult) -> list[str]:
    cell = result.cell
    reference = published(cell.algorithm, cell.protocol, cell.setting)
    cells = [cell.name, _iterations(result)]
    cells += [_accuracy(result.results.get(protocol)) for protocol in EVAL_PROTOCOLS]
    cells += [str(reference) if reference else "-", _target(result, reference)]
    trained = (
        f"{result.trained_on}, {result.train_seconds / 3600:.2f} h" if result.iterations is not None else "-"
    )
    return cells + [trained]


def _iterations(result: CellResult) -> str:
    if result.iterations is None:
        return "not run"
    return f"{result.iterations} ({'full' if result.full else 'budgeted'})"


def _accuracy(result: EvalResult | None) -> str:
    if result is None:
        return "not evaluated"
    return f"{100 * result.mean:.2f} ± {100 * result.ci95:.2f} (it. {result.iteration})"


def _target(result: CellResult, reference: Published | None) -> str:
    transductive = result.results.get("transductive")
    if reference is None or transductive is None:
        return "-"
    if not result.full:
        return "n/a (budgeted)"
    return "met" if reference.met_by(100 * transductive.mean) else "MISSED"


def _budget_summary(results: list[CellResult]) -> str:
    full = [r.cell.name for r in results if r.full]
    budgeted = [f"{r.cell.name} ({r.iterations})" for r in results if r.iterations is not None and not r.full]
    missing = [r.cell.name for r in results if r.iterations is None]
    parts = [
        f"Full-budget cells ({FULL_BUDGET} iterations): {', '.join(full) or 'none'}.",
        f"Budgeted cells (iterations): {', '.join(budgeted) or 'none'}.",
    ]
    if missing:
        parts.append(f"Not run: {', '.join(missing)}.")
    return " ".join(parts)
