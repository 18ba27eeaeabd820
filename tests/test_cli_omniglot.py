"""End to end on real Omniglot: `metakit train` + `metakit eval` + `metakit plot`, as a user runs them.

The threshold: chance is 20% (5-way), and the network at its random initialisation, adapted with
the same 3 steps, scores about 30% on these 100 test tasks (measured: 29.6 +- 1.8%). After 100
meta-iterations of 8 tasks (about a minute on 2 cores) the run reached 58.8 +- 3.4% (transductive)
and 56.6 +- 3.5% (non-transductive) when this test was written. 45% is far above what an
initialisation that was not meta-learned reaches, and about 4 confidence intervals below what
the meta-learned one did.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metakit.cli import app

METAKIT = str(Path(sys.executable).parent / "metakit")
THRESHOLD = 0.45


def _run(*args, env, cwd=None):
    command = [METAKIT, *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _accuracy(line):
    return float(re.match(r"test accuracy ([\d.]+)% ± ([\d.]+)%", line).group(1)) / 100


def test_train_eval_plot_on_omniglot(omniglot_dir, omniglot_cache_dir, tmp_path):
    env = {**os.environ, "METAKIT_CACHE_DIR": str(omniglot_cache_dir), "OMP_NUM_THREADS": "1"}
    config = tmp_path / "short.toml"
    config.write_text(
        "meta_batch = 8\niterations = 100\neval_every = 50\neval_tasks = 20\ntest_tasks = 100\n"
    )
    run = tmp_path / "run"
    train = _run(
        "train",
        "maml",
        "--backbone",
        "conv4",
        "--config",
        config,
        "--data-dir",
        omniglot_dir.name,  # relative, and the eval below runs from another folder
        "--run-dir",
        run,
        env=env,
        cwd=omniglot_dir.parent,
    ).splitlines()
    assert train[1].endswith(
        "(95% CI over 100 tasks; 5-way 1-shot, 15 queries per class, 3 inner steps; transductive; "
        "checkpoint best at iteration 100)"
    )
    assert _accuracy(train[1]) > THRESHOLD

    evaluation = _run("eval", run, "--tasks", 50, "--protocol", "non-transductive", env=env)
    assert "50 tasks" in evaluation and "non-transductive" in evaluation
    assert _accuracy(evaluation) > THRESHOLD
    _run("plot", run, env=env)

    assert sorted(path.name for path in run.iterdir()) == [
        "best.pt",
        "config.json",
        "curves.png",
        "last.pt",
        "metrics.jsonl",
        "results.json",
    ]
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["hyperparameters"]["inner_lr"] == 0.4
    assert record["config"]["sampler_options"]["convention"] == "background-evaluation"
    assert record["config"]["sampler_options"]["data_dir"] == str(omniglot_dir.resolve())
    assert [record["data"][split]["split"] for split in ("train", "validation")] == ["train", "validation"]
    results = json.loads((run / "results.json").read_text())
    assert [(r["protocol"], r["data"]["split"]) for r in results] == [
        ("transductive", "test"),
        ("non-transductive", "test"),
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--ways", "1000"], "ways=1000 is more than the 864 classes of split 'train'; use ways <= 864"),
        (
            ["--shots", "6", "--queries", "1"],
            "validation tasks (eval_queries = 15 query examples per class): shots + queries = 6 + 15 is "
            "more than the 20 images of the smallest class of split 'validation'; use shots + queries <= 20",
        ),
        (
            ["--split", "maml-1200", "--ways", "500", "--eval-every", "0", "--iterations", "1"],
            "test tasks (eval_queries = 15 query examples per class): ways=500 is more than the 423 "
            "classes of split 'test'; use ways <= 423",
        ),
    ],
)
def test_impossible_tasks_are_one_line_errors_before_training(
    omniglot_dir, omniglot_cache_dir, tmp_path, monkeypatch, options, message
):
    monkeypatch.setenv("METAKIT_CACHE_DIR", str(omniglot_cache_dir))
    result = CliRunner().invoke(
        app, ["train", "maml", *options, "--data-dir", str(omniglot_dir), "--run-dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 1
    assert result.stderr == f"error: {message}\n"
    assert not (tmp_path / "r").exists()


def test_show_tasks_draws_the_requested_grid(omniglot_dir, omniglot_cache_dir, tmp_path, monkeypatch):
    """One column per label and, per task, ``shots`` support rows plus ``queries`` query rows."""
    from PIL import Image

    monkeypatch.setenv("METAKIT_CACHE_DIR", str(omniglot_cache_dir))
    output = tmp_path / "tasks.png"
    common = ["--data-dir", str(omniglot_dir), "--part", "test", "--rotation", "per-task"]
    small = CliRunner().invoke(app, ["show-tasks", "--output", str(output), "--tasks", "1", *common])
    assert small.exit_code == 0, small.stderr
    narrow = Image.open(output).size
    wide = CliRunner().invoke(
        app,
        ["show-tasks", "--output", str(output), "--tasks", "2", "--ways", "10", "--queries", "4", *common],
    )
    assert wide.exit_code == 0, wide.stderr
    assert "2 10-way 1-shot tasks (test part)" in wide.stdout
    width, height = Image.open(output).size
    assert width > 1.8 * narrow[0] and height > 2 * narrow[1]


def test_eval_reads_data_that_moved_from_where_it_is_told(
    omniglot_dir, omniglot_cache_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("METAKIT_CACHE_DIR", str(omniglot_cache_dir))
    first, moved = tmp_path / "first", tmp_path / "moved"
    first.mkdir()
    for name in ("images_background.zip", "images_evaluation.zip"):
        (first / name).symlink_to(omniglot_dir / name)
    run = tmp_path / "run"
    options = [
        "--iterations",
        "1",
        "--eval-every",
        "0",
        "--test-tasks",
        "0",
        "--meta-batch",
        "2",
        "--no-download",
    ]
    trained = CliRunner().invoke(
        app, ["train", "fomaml", *options, "--data-dir", str(first), "--run-dir", str(run)]
    )
    assert trained.exit_code == 0, trained.stderr
    first.rename(moved)
    lost = CliRunner().invoke(app, ["eval", str(run), "--checkpoint", "last", "--tasks", "2"])
    assert lost.exit_code == 1 and lost.stderr.startswith("error: images_background.zip is missing")
    found = CliRunner().invoke(
        app, ["eval", str(run), "--checkpoint", "last", "--tasks", "2", "--data-dir", str(moved)]
    )
    assert found.exit_code == 0, found.stderr
    assert found.stdout.startswith("test accuracy ") and "over 2 tasks" in found.stdout
    assert json.loads((run / "config.json").read_text())["config"]["sampler_options"]["data_dir"] == str(
        first
    )
