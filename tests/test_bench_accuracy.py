"""The Omniglot accuracy suite: cell selection and option errors, train/resume/skip and
evaluate-once logic (with the engine's train and evaluate replaced by fakes that keep real run
directories), and the table writer's rows for full, budgeted and missing cells."""

import dataclasses
import datetime
import json
import math
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from metakit import EvalResult, MetakitError
from metakit.bench import accuracy
from metakit.bench.accuracy import (
    AccuracySettings,
    Cell,
    CellResult,
    format_accuracy_report,
    run_accuracy_suite,
    select_cells,
)
from metakit.bench.cli import bench_app
from metakit.bench.published import Published, published
from metakit.data import omniglot
from metakit.engine.checkpoint import load_checkpoint, save_checkpoint
from metakit.engine.evaluate import RESULT_KEY
from metakit.engine.run_dir import RunDirectory

DATE = datetime.date(2026, 11, 28)


def test_cells_are_named_and_selected_in_the_suites_order():
    assert (
        len(select_cells(["maml", "fomaml"], ["5w1s", "5w5s", "20w1s", "20w5s"], ["paper", "official"])) == 16
    )
    cells = select_cells(["fomaml", "maml"], ["20w1s", "5w1s"], ["official"])
    assert [cell.name for cell in cells] == [
        "maml-5w1s-official",
        "maml-20w1s-official",
        "fomaml-5w1s-official",
        "fomaml-20w1s-official",
    ]


@pytest.mark.parametrize(
    "algorithms, settings, protocols, message",
    [
        (["reptile"], ["5w1s"], ["paper"], "unknown algorithm 'reptile'; use one of maml, fomaml"),
        (["maml"], ["5w2s"], ["paper"], "unknown setting '5w2s'; use one of 5w1s, 5w5s, 20w1s, 20w5s"),
        (["maml"], ["5w1s"], ["vinyals"], "unknown protocol 'vinyals'; use one of paper, official"),
        (["maml"], [], ["paper"], "choose at least one setting of 5w1s, 5w5s, 20w1s, 20w5s"),
    ],
)
def test_unknown_or_missing_cell_names_are_one_line_errors(algorithms, settings, protocols, message):
    with pytest.raises(MetakitError) as error:
        select_cells(algorithms, settings, protocols)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "options, message",
    [
        (["--budget", "0"], "error: --budget must be at least 1 iteration (60000 is a full run)\n"),
        (["--minutes", "-1"], "error: --minutes must be 0 (no limit) or more, got -1.0\n"),
        (["--eval-tasks", "0"], "error: --eval-tasks must be at least 1 (600 in the paper), got 0\n"),
        (["-p", "papers"], "error: unknown protocol 'papers'; use one of paper, official\n"),
        (["--device", "tpu"], "error: unknown device 'tpu'; use auto, cpu or cuda\n"),
        (
            ["--backbone", "conv5"],
            "error: unknown backbone 'conv5'. Did you mean 'conv4'? Known: conv4, conv4-strided, mlp\n",
        ),
    ],
)
def test_bad_command_options_print_one_line_and_exit_1(tmp_path, options, message):
    result = CliRunner().invoke(bench_app, ["omniglot", "--root", str(tmp_path), "--output", "-", *options])
    assert result.exit_code == 1
    assert result.output == message


def test_a_root_that_is_a_file_is_refused(tmp_path):
    root = tmp_path / "runs"
    root.write_text("mine")
    result = CliRunner().invoke(bench_app, ["omniglot", "--root", str(root), "--output", "-"])
    assert result.output == f"error: --root {root} is a file; give a folder for the cells' run directories\n"
    assert root.read_text() == "mine"


@pytest.mark.parametrize("download", [True, False])
def test_missing_zips_are_fetched_unless_no_download_and_no_run_is_left(tmp_path, monkeypatch, download):
    monkeypatch.setattr(omniglot, "ARCHIVE_URL", "http://127.0.0.1:9/{name}.zip")  # nothing listens on port 9
    zips, root = tmp_path / "zips", tmp_path / "runs"
    flag = [] if download else ["--no-download"]  # fetching is the command line's default
    cell = ["-a", "fomaml", "-s", "5w1s", "-p", "official", "--budget", "1"]
    places = ["--data-dir", str(zips), "--root", str(root), "--output", "-"]
    result = CliRunner().invoke(bench_app, ["omniglot", *cell, *places, *flag])
    assert result.exit_code == 1
    error = result.output.splitlines()[-1]
    if download:
        assert error.startswith("error: could not download http://127.0.0.1:9/images_background.zip (")
        assert list(zips.iterdir()) == []  # no partial zip
    else:
        assert error.startswith("error: images_background.zip is missing: put images_background.zip and")
    assert not (root / "fomaml-5w1s-official").exists()  # so the same command starts afresh later


SECONDS_PER_ITERATION = 36.0


class FakeEngine:
    """``train`` and ``evaluate`` that keep real run directories (config.json through the
    engine's RunDirectory, checkpoints, results.json) without training anything."""

    def __init__(self, interrupt=()):
        self.trained, self.evaluated, self.interrupt = [], [], set(interrupt)

    def train(self, config, resume=False, progress=True):
        directory = RunDirectory(config.run_dir)
        if resume:
            directory.check_same_run(config, {})
            assert load_checkpoint(directory.checkpoint("last"))["iteration"] < config.iterations
        else:
            directory.create(
                {"config": config.to_dict(), "environment": {"device": "cpu (fake)"}, "data": {}}
            )
        self.trained.append((directory.path.name, resume, config.iterations))
        stop = directory.path.name in self.interrupt
        iteration = config.iterations - 1 if stop else config.iterations
        if config.minutes:  # as the engine: stop once the run's wall time reaches the limit
            iteration = min(iteration, math.ceil(60 * config.minutes / SECONDS_PER_ITERATION))
        for which in ("last", "best"):
            save_checkpoint(
                directory.checkpoint(which),
                {
                    "iteration": iteration,
                    "wall_time": SECONDS_PER_ITERATION * iteration,
                    "best_score": None,
                    "algorithm": {},
                    "config": config.to_dict(),
                },
            )
        return SimpleNamespace(interrupted=stop, iteration=iteration)

    def evaluate(self, run, tasks, split, protocol, checkpoint, seed, device, progress):
        assert progress  # an evaluation can take an hour: the suite shows how far it is
        directory = RunDirectory(run)
        config = directory.config()
        iteration = load_checkpoint(directory.checkpoint(checkpoint))["iteration"]
        self.evaluated.append((directory.path.name, protocol, iteration))
        result = EvalResult(
            "accuracy", 0.9 if protocol == "transductive" else 0.8, 0.01, 0.1, tasks, split, protocol,
            None, checkpoint, iteration, config.ways, config.shots, config.eval_queries, seed, str(run), {},
        )  # fmt: skip
        directory.add_result(result.to_dict(), RESULT_KEY)
        return result


@pytest.fixture
def engine(monkeypatch):
    fake = FakeEngine()
    monkeypatch.setattr(accuracy, "train", fake.train)
    monkeypatch.setattr(accuracy, "evaluate", fake.evaluate)
    return fake


def _settings(tmp_path, budget, names=("maml-5w1s-paper", "fomaml-20w5s-official"), **changes):
    cells = tuple(Cell(*name.split("-")) for name in names)
    values = dict(budget=budget, root=tmp_path / "runs", device="cpu", eval_tasks=7) | changes
    return AccuracySettings(cells, **values)


def _quiet(line):
    pass


def test_cells_train_with_the_protocols_data_and_are_evaluated_both_ways(tmp_path, engine):
    settings = _settings(tmp_path, budget=3, data_dir=tmp_path / "zips")
    results = run_accuracy_suite(settings, log=_quiet)
    assert engine.trained == [("maml-5w1s-paper", False, 3), ("fomaml-20w5s-official", False, 3)]
    paper = RunDirectory(settings.root / "maml-5w1s-paper").config()
    official = RunDirectory(settings.root / "fomaml-20w5s-official").config()
    assert (paper.algorithm, paper.ways, paper.shots, paper.test_tasks) == ("maml", 5, 1, 0)
    assert (paper.backbone, official.backbone) == ("conv4-strided", "conv4")  # each figure's network
    assert paper.sampler_options == {
        "convention": "maml-1200",
        "rotation": "per-task",
        "data_dir": str(tmp_path / "zips"),
    }
    assert (official.algorithm, official.ways, official.shots) == ("fomaml", 20, 5)
    assert official.sampler_options["convention"] == "background-evaluation"
    assert official.sampler_options["rotation"] == "none"
    assert sorted(engine.evaluated) == sorted(
        (name, protocol, 3)
        for name in ("maml-5w1s-paper", "fomaml-20w5s-official")
        for protocol in ("transductive", "non-transductive")
    )
    means = [(r.results["transductive"].mean, r.results["non-transductive"].mean) for r in results]
    assert [r.iterations for r in results] == [3, 3] and means == [(0.9, 0.8), (0.9, 0.8)]


def test_a_chosen_backbone_is_every_cells_and_a_run_of_another_is_refused(tmp_path, engine):
    names = ["fomaml-5w1s-paper", "fomaml-5w1s-official"]
    default = _settings(tmp_path, budget=3, names=names, output=None)
    assert "Training: conv4-strided under `paper`, conv4 under `official`, fp32" in format_accuracy_report(
        run_accuracy_suite(default, log=_quiet), default
    )
    settings = dataclasses.replace(default, root=tmp_path / "other", backbone="conv4-strided")
    results = run_accuracy_suite(settings, log=_quiet)
    assert [RunDirectory(settings.root / name).config().backbone for name in names] == ["conv4-strided"] * 2
    assert [r.iterations for r in results] == [3, 3]
    assert "Training: conv4-strided, fp32" in format_accuracy_report(results, settings)
    with pytest.raises(MetakitError, match=r"\(fomaml on conv4-strided in fp32, 5w1s.*give its --backbone"):
        run_accuracy_suite(dataclasses.replace(settings, backbone="conv4", budget=4), log=_quiet)


def test_finished_cells_are_skipped_short_ones_resumed_and_only_new_checkpoints_evaluated(tmp_path, engine):
    run_accuracy_suite(_settings(tmp_path, budget=3), log=_quiet)
    engine.trained.clear(), engine.evaluated.clear()

    again = run_accuracy_suite(_settings(tmp_path, budget=3), log=_quiet)
    assert engine.trained == [] and engine.evaluated == []
    assert all(r.iterations == 3 and len(r.results) == 2 for r in again)

    more = run_accuracy_suite(_settings(tmp_path, budget=5), log=_quiet)
    assert engine.trained == [("maml-5w1s-paper", True, 5), ("fomaml-20w5s-official", True, 5)]
    assert sorted({iteration for _, _, iteration in engine.evaluated}) == [5] and len(engine.evaluated) == 4
    assert all(r.iterations == 5 and r.results["transductive"].iteration == 5 for r in more)
    engine.trained.clear(), engine.evaluated.clear()

    fewer = run_accuracy_suite(_settings(tmp_path, budget=4), log=_quiet)
    assert engine.trained == [] and engine.evaluated == []
    assert [r.iterations for r in fewer] == [5, 5]

    other_tasks = run_accuracy_suite(_settings(tmp_path, budget=5, eval_tasks=9), log=_quiet)
    assert len(engine.evaluated) == 4 and all(r.results["transductive"].tasks == 9 for r in other_tasks)


def test_minutes_bound_each_invocation_and_the_next_resumes(tmp_path, engine):
    settings = _settings(tmp_path, budget=10, names=["maml-5w1s-paper"], minutes=2.0)
    stopped = []
    for expected in (4, 8, 10, 10):  # 36 s per iteration: 2 minutes more each time, up to the budget
        (result,) = run_accuracy_suite(settings, log=stopped.append)
        assert result.iterations == expected and result.results["transductive"].iteration == expected
    assert [config[2] for config in engine.trained] == [10, 10, 10]
    assert [line for line in stopped if "--minutes" in line] == [
        "maml-5w1s-paper: stopped at iteration 4 by --minutes; the same command resumes it",
        "maml-5w1s-paper: stopped at iteration 8 by --minutes; the same command resumes it",
    ]


def test_table_only_neither_trains_nor_evaluates(tmp_path, engine):
    run_accuracy_suite(_settings(tmp_path, budget=3, names=["maml-5w1s-paper"]), log=_quiet)
    engine.trained.clear(), engine.evaluated.clear()
    names = ["maml-5w1s-paper", "maml-20w1s-paper"]
    results = run_accuracy_suite(_settings(tmp_path, budget=9, names=names, table_only=True), log=_quiet)
    assert engine.trained == [] and engine.evaluated == []
    assert [(r.iterations, len(r.results)) for r in results] == [(3, 2), (None, 0)]
    unevaluated = run_accuracy_suite(
        _settings(tmp_path, budget=3, names=names[:1], table_only=True, eval_tasks=600), log=_quiet
    )
    assert unevaluated[0].iterations == 3 and unevaluated[0].results == {}


def test_after_an_interrupted_cell_the_others_are_only_read(tmp_path, monkeypatch):
    fake = FakeEngine(interrupt={"maml-5w1s-paper"})
    monkeypatch.setattr(accuracy, "train", fake.train)
    monkeypatch.setattr(accuracy, "evaluate", fake.evaluate)
    results = run_accuracy_suite(_settings(tmp_path, budget=3), log=_quiet)
    assert fake.trained == [("maml-5w1s-paper", False, 3)] and fake.evaluated == []
    assert [(r.interrupted, r.iterations) for r in results] == [(True, 2), (False, None)]


def test_a_run_dir_of_another_run_or_without_checkpoint_is_refused_and_kept(tmp_path, engine):
    settings = _settings(tmp_path, budget=3, names=["maml-5w1s-paper"])
    run_accuracy_suite(dataclasses.replace(settings, root=tmp_path / "elsewhere"), log=_quiet)
    stranger = RunDirectory(tmp_path / "elsewhere" / "maml-5w1s-paper")
    record = stranger.record()
    record["config"]["ways"] = 20
    stranger.config_file.write_text(json.dumps(record))
    with pytest.raises(
        MetakitError, match=r"holds another run \(maml on conv4-strided in fp32, 20w1s, omniglot maml-1200"
    ):
        run_accuracy_suite(dataclasses.replace(settings, root=tmp_path / "elsewhere"), log=_quiet)
    record["config"] |= {"ways": 5, "precision": "bf16"}
    stranger.config_file.write_text(json.dumps(record))
    with pytest.raises(MetakitError, match=r"holds another run \(maml on conv4-strided in bf16, 5w1s"):
        run_accuracy_suite(dataclasses.replace(settings, root=tmp_path / "elsewhere"), log=_quiet)
    record["config"]["precision"] = "fp32"
    stranger.checkpoint("last").unlink()
    record["config"]["ways"] = 5
    stranger.config_file.write_text(json.dumps(record))
    with pytest.raises(MetakitError, match="stopped before its first checkpoint; move it away"):
        run_accuracy_suite(dataclasses.replace(settings, root=tmp_path / "elsewhere"), log=_quiet)
    assert sorted(p.name for p in stranger.path.iterdir()) == ["best.pt", "config.json", "results.json"]


def test_a_damaged_results_file_of_a_cell_is_a_one_line_error_and_is_kept(tmp_path, engine):
    settings = _settings(tmp_path, budget=3, names=["maml-5w1s-paper"])
    run_accuracy_suite(settings, log=_quiet)
    results = RunDirectory(settings.root / "maml-5w1s-paper").results_file
    without_mean = [
        {k: v for k, v in entry.items() if k != "mean"} for entry in json.loads(results.read_text())
    ]
    for text, message in [
        ('{"mean": 0.9}', "is not a list of results; move it away"),
        (json.dumps(without_mean), "holds a damaged entry; move it away"),
    ]:
        results.write_text(text)
        with pytest.raises(MetakitError, match=message):
            run_accuracy_suite(dataclasses.replace(settings, table_only=True), log=_quiet)
        assert results.read_text() == text


def test_published_targets_are_within_the_ci_or_above():
    paper = published("maml", "paper", "5w1s")
    assert paper == Published(98.7, 0.4, "MAML paper, Table 1")
    assert paper.met_by(98.3) and not paper.met_by(98.29)
    reproduction = published("fomaml", "official", "20w1s")
    assert reproduction.mean == 84.3 and not reproduction.met_by(84.3) and reproduction.met_by(84.31)
    assert published("fomaml", "paper", "20w1s").mean == 89.4
    assert published("maml", "official", "5w5s") is None


def _result(name, iterations, transductive=None, non_transductive=None):
    algorithm, setting, protocol = name.split("-")
    found = {}
    for key, value in (("transductive", transductive), ("non-transductive", non_transductive)):
        if value is not None:
            found[key] = EvalResult(
                "accuracy",
                value[0],
                value[1],
                0.1,
                600,
                "test",
                key,
                3,
                "best",
                value[2],
                5,
                1,
                15,
                0,
                "r",
                {},
            )
    return CellResult(Cell(algorithm, setting, protocol), iterations, "cuda (H100)", 5400.0, found)


def test_the_table_marks_full_budgeted_and_missing_cells_and_checks_full_ones_against_the_paper():
    results = [
        _result("maml-5w1s-paper", 60000, (0.9871, 0.0035, 59500), (0.9612, 0.0051, 59500)),
        _result("maml-20w1s-paper", 60000, (0.9549, 0.003, 60000), (0.93, 0.004, 60000)),
        _result("fomaml-5w1s-official", 500, (0.991, 0.002, 500), (0.95, 0.004, 500)),
        _result("maml-5w5s-official", 1200),
        CellResult(Cell("maml", "20w5s", "paper")),
    ]
    settings = AccuracySettings(tuple(r.cell for r in results), budget=60000, device="cpu", command="cmd x")
    report = format_accuracy_report(results, settings, DATE)
    lines = report.splitlines()
    assert lines[0] == "## Omniglot accuracy, 2026-11-28"
    assert "Command: `cmd x`" in lines
    header = lines.index(
        "| cell | iterations | transductive % | non-transductive % | published % | target (transductive) "
        "| trained on |"
    )
    assert lines[header + 2 : header + 7] == [
        "| maml-5w1s-paper | 60000 (full) | 98.71 ± 0.35 (it. 59500) | 96.12 ± 0.51 (it. 59500) "
        "| 98.7 ± 0.4 (MAML paper, Table 1) | met | cuda (H100), 1.50 h |",
        "| maml-20w1s-paper | 60000 (full) | 95.49 ± 0.30 (it. 60000) | 93.00 ± 0.40 (it. 60000) "
        "| 95.8 ± 0.3 (MAML paper, Table 1) | MISSED | cuda (H100), 1.50 h |",
        "| fomaml-5w1s-official | 500 (budgeted) | 99.10 ± 0.20 (it. 500) | 95.00 ± 0.40 (it. 500) "
        "| 97.2 (public reproduction, first order) | n/a (budgeted) | cuda (H100), 1.50 h |",
        "| maml-5w5s-official | 1200 (budgeted) | not evaluated | not evaluated | - | - "
        "| cuda (H100), 1.50 h |",
        "| maml-20w5s-paper | not run | not evaluated | not evaluated "
        "| 98.9 ± 0.2 (MAML paper, Table 1) | - | - |",
    ]
    assert lines[header + 8] == (
        "Full-budget cells (60000 iterations): maml-5w1s-paper, maml-20w1s-paper. "
        "Budgeted cells (iterations): fomaml-5w1s-official (500), maml-5w5s-official (1200). "
        "Not run: maml-20w5s-paper."
    )


def test_the_command_prints_the_table_and_appends_it_keeping_earlier_sections(tmp_path, engine):
    output = tmp_path / "docs" / "benchmarks.md"
    output.parent.mkdir()
    output.write_text("# Benchmarks\n\nearlier section\n")
    options = ["omniglot", "-a", "fomaml", "-s", "20w1s", "-p", "official", "--budget", "2"]
    options += [
        "--root",
        str(tmp_path / "runs"),
        "--device",
        "cpu",
        "--eval-tasks",
        "5",
        "--output",
        str(output),
    ]
    result = CliRunner().invoke(bench_app, options)
    assert result.exit_code == 0, result.output
    row = (
        "| fomaml-20w1s-official | 2 (budgeted) | 90.00 ± 1.00 (it. 2) | 80.00 ± 1.00 (it. 2) "
        "| 84.3 (public reproduction, first order) | n/a (budgeted) | cpu (fake), 0.02 h |"
    )
    assert row in result.output.splitlines()
    text = output.read_text()
    assert text.startswith("# Benchmarks\n\nearlier section\n") and row in text.splitlines()
    assert engine.trained == [("fomaml-20w1s-official", False, 2)]
