"""The `metakit` command through Typer's runner: what it writes, and one-line errors that
leave an existing run untouched."""

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from metakit.cli import app

SINUSOID = ["--sampler", "sinusoid", "--backbone", "mlp", "--shots", "5"]
HUGE = "99999999999999999999"  # past 2**63: torch's sizes overflow


pytestmark = pytest.mark.usefixtures("one_thread")


def _invoke(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    result = _invoke(
        "train", "maml", *SINUSOID, "--iterations", 4, "--eval-every", 2, "--test-tasks", 5, "--run-dir", run
    )
    assert result.exit_code == 0, result.output
    return run, result


def _snapshot(run):
    return {path.name: path.read_bytes() for path in sorted(run.iterdir())}


def test_help_and_list():
    result = _invoke("--help")
    assert result.exit_code == 0
    assert all(command in result.stdout for command in ("train", "eval", "list", "plot"))
    result = _invoke("list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    maml = lines.index(next(line for line in lines if line.startswith("  maml:")))
    assert "inner_lr=0.4, inner_steps=1, eval_inner_steps=3, first_order=False" in lines[maml + 1]
    assert any(line.startswith("  conv4:") for line in lines)
    assert "shots=10, queries=None, amplitude=(0.1, 5.0)" in result.stdout


def test_train_eval_plot_write_every_file_of_the_run(trained):
    run, train = trained
    assert train.stdout.splitlines()[0] == f"run directory: {run}"
    assert train.stdout.splitlines()[1].startswith("test mse ")
    assert (
        "(95% CI over 5 tasks; 5 support and 15 query points, 10 inner steps; transductive; " in train.stdout
    )

    record = json.loads((run / "config.json").read_text())
    assert record["config"]["sampler"] == "sinusoid" and record["config"]["meta_batch"] == 25
    assert record["environment"]["torch"] == torch.__version__
    assert record["environment"]["device"].startswith("cpu") or torch.cuda.is_available()
    assert record["data"]["train"]["sampler"] == "sinusoid"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [2, 4]  # validations; log_every (10) not reached
    assert {"wall_time", "tasks_per_second", "train_loss", "validation_mse", "validation_mse_ci95"} <= set(
        lines[1]
    )
    for name in ("last", "best"):
        checkpoint = torch.load(run / f"{name}.pt", weights_only=True)
        assert checkpoint["iteration"] == 4 and set(checkpoint["rng"]) >= {"torch", "tasks"}
        assert checkpoint["optimizer"]["state"] and checkpoint["config"] == record["config"]

    result = _invoke("eval", run, "--tasks", 7, "--protocol", "non-transductive", "--checkpoint", "last")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("test mse ")
    assert "7 tasks" in result.stdout and "non-transductive; checkpoint last at iteration 4)" in result.stdout
    assert "task 7/7  ETA" in result.stderr  # progress, on stderr
    results = json.loads((run / "results.json").read_text())
    assert [(r["tasks"], r["protocol"]) for r in results] == [(5, "transductive"), (7, "non-transductive")]

    result = _invoke("plot", run)
    assert result.exit_code == 0 and result.stdout == f"wrote {run / 'curves.png'}\n"
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


ERRORS = [
    (
        ["train", "mamll", *SINUSOID, "--run-dir", "{tmp}/new"],
        "unknown algorithm 'mamll'. Did you mean 'maml'?",
    ),
    (
        ["train", "maml", *SINUSOID[:2], "--backbone", "conv5"],
        "unknown backbone 'conv5'. Did you mean 'conv4'?",
    ),
    (["train", "maml", "--sampler", "sinusiod"], "unknown sampler 'sinusiod'. Did you mean 'sinusoid'?"),
    (
        ["train", "maml", *SINUSOID, "--run-dir", "{run}"],
        "run dir {run} already holds a run; pass --resume to continue it or choose another --run-dir",
    ),
    (
        ["train", "--resume", "--run-dir", "{run}", "--meta-lr", "0.01"],
        "run dir {run} holds a different run (meta_lr is 0.001 there, 0.01 here); choose another --run-dir",
    ),
    (
        ["train", "--resume", "--run-dir", "{run}", "--inner-lr", "0.5"],
        "run dir {run} holds a different run (hyperparameters.inner_lr is 0.01 there, 0.5 here); "
        "choose another --run-dir",
    ),
    (["train", "maml", *SINUSOID, "--resume"], "resuming needs the run's directory: pass --run-dir"),
    (
        ["train", "maml", *SINUSOID, "--split", "maml-1200"],
        "sampler 'sinusoid' has no option convention; its options: amplitude, phase, x_range",
    ),
    (["train", "maml", *SINUSOID, "--ways", "0"], "option ways must be at least 1, got 0"),
    (
        ["train", "maml", *SINUSOID, "--task-mapping", "threadz"],
        "unknown task_mapping 'threadz'; use one of auto, loop, threads, processes, vmap",
    ),
    (["train", "maml", *SINUSOID, "--precision", "fp16"], "unknown precision 'fp16'; use one of fp32, bf16"),
    (["train", "--config", "{tmp}/missing.toml"], "cannot read config file {tmp}/missing.toml: No such file"),
    (
        ["eval", "{run}", "--protocol", "inductive"],
        "unknown protocol 'inductive'; use one of transductive, non-transductive",
    ),
    (["eval", "{run}", "--split", "val"], "unknown split 'val'; use one of train, validation, test"),
    (["eval", "{tmp}/missing"], "{tmp}/missing holds no metakit run (no config.json); check the path"),
    (["eval", "{run}", "--checkpoint", "first"], "checkpoint must be 'last' or 'best', got 'first'"),
    (["plot", "{tmp}"], "{tmp} holds no metakit run (no config.json); check the path"),
    (
        ["plot", "{run}", "--output", "{run}/config.json/curves.png"],
        "cannot write {run}/config.json/curves.png (File exists); choose a writable path",
    ),
    (["eval", "{run}", "--queries", "0"], "evaluation needs at least 1 query example per class, got 0"),
    (["eval", "{run}", "--device", ""], "unknown device ''; use auto, cpu or cuda"),
    (
        ["eval", "{run}", "--seed", "9223372036854775808"],
        "the seed must be between -2**63 and 2**63 - 1, got 9223372036854775808",
    ),
    (
        ["train", "maml", *SINUSOID, "--meta-lr", "inf", "--run-dir", "{tmp}/new"],
        "option meta_lr must be a positive number, got inf",
    ),
    (
        ["train", "maml", *SINUSOID, "--inner-lr", "nan", "--run-dir", "{tmp}/new"],
        "MAML needs a finite inner_lr, got nan",
    ),
    (
        ["train", "maml", *SINUSOID, "--device", "meta", "--run-dir", "{tmp}/new"],
        "metakit does not run on device 'meta'; use auto, cpu or cuda",
    ),
    (
        ["train", "maml", "--sampler", "sinusoid", "--run-dir", "{tmp}/new"],
        "conv4 takes images (channels, height, width), not inputs of shape (1,); pick another backbone",
    ),
    (
        ["train", "maml", "--sampler", "image-folder", "--run-dir", "{tmp}/new"],
        "sampler 'image-folder' needs option root: set it in the [sampler_options] table of a --config file",
    ),
    (
        ["show-tasks", "--data-dir", "{tmp}/new/zips", "--no-download", "--output", "{tmp}/new/tasks.png"],
        "images_background.zip is missing: put images_background.zip and images_evaluation.zip",
    ),
    (
        ["show-tasks", "--tasks", "0", "--output", "{tmp}/new/tasks.png"],
        "--tasks must be between 1 and 1,099,511,627,776, got 0",
    ),
    (
        ["show-tasks", "--tasks", HUGE, "--output", "{tmp}/new/tasks.png"],
        f"--tasks must be between 1 and 1,099,511,627,776, got {HUGE}",
    ),
    (
        ["train", "maml", *SINUSOID, "--queries", HUGE, "--run-dir", "{tmp}/new"],
        f"option queries must be at most 1,099,511,627,776, got {HUGE}",
    ),
    (["eval", "{run}", "--data-dir", "{tmp}/new"], "sampler 'sinusoid' reads no data_dir; drop --data-dir"),
    (["eval", "{run}", "--queries", HUGE], f"option queries must be at most 1,099,511,627,776, got {HUGE}"),
    (
        ["plot", "{run}", "--output", "{tmp}/new/curves.pgf"],
        "cannot write {tmp}/new/curves.pgf (no format 'pgf'); name a .png, .svg or .pdf file",
    ),
]


@pytest.mark.parametrize(("args", "message"), ERRORS)
def test_user_errors_are_one_line_and_leave_the_run_untouched(trained, tmp_path, args, message):
    run, _ = trained
    before = _snapshot(run)
    result = _invoke(*(arg.format(run=run, tmp=tmp_path) for arg in args))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: " + message.format(run=run, tmp=tmp_path))
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert _snapshot(run) == before
    assert not (tmp_path / "new").exists()


def test_a_meta_batch_too_large_for_memory_is_a_one_line_error(tmp_path):
    run = tmp_path / "run"  # 10**12 sinusoid tasks need 4 TB for their amplitudes alone
    result = _invoke("train", "maml", *SINUSOID, "--meta-batch", 10**12, "--run-dir", run)
    assert result.exit_code == 1
    assert result.stderr == (
        "error: out of memory at iteration 1 with 1000000000000 tasks per meta-batch; training stopped "
        "and no checkpoint was written yet; try a smaller --meta-batch\n"
    )
    assert sorted(path.name for path in run.iterdir()) == ["config.json"]


def test_the_task_mapping_option_reaches_the_algorithm(tmp_path):
    run = tmp_path / "run"
    result = _invoke(
        "train", "maml", *SINUSOID, "--task-mapping", "loop", "--iterations", 1, "--eval-every", 0,
        "--test-tasks", 0, "--run-dir", run,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        json.loads((run / "config.json").read_text())["config"]["hyperparameters"]["task_mapping"] == "loop"
    )


def test_a_corrupt_checkpoint_is_a_one_line_error(trained, tmp_path):
    run, _ = trained
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, content in _snapshot(run).items():
        (copy / name).write_bytes(content)
    (copy / "best.pt").write_bytes((copy / "best.pt").read_bytes()[:100])
    result = _invoke("eval", copy)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: checkpoint {copy / 'best.pt'} is corrupt or not a metakit checkpoint"
    )
    assert result.stderr.count("\n") == 1


def test_plot_writes_the_named_file_in_the_format_of_its_suffix_png_without_one(trained, tmp_path):
    for name, magic in [("curves", b"\x89PNG"), ("curves.svg", b"<?xml")]:
        result = _invoke("plot", trained[0], "--output", tmp_path / name)
        assert result.exit_code == 0 and result.stdout == f"wrote {tmp_path / name}\n"
        assert (tmp_path / name).read_bytes().startswith(magic)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["curves", "curves.svg"]
    result = _invoke("plot", trained[0], "--output", tmp_path / "curves.json")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert (
        "(no format 'json'); name a .png, .svg or .pdf file (or one of avif, eps," in result.stderr
        and not (tmp_path / "curves.json").exists()
    )


def test_a_plot_that_cannot_be_written_leaves_the_old_file(trained, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def disk_full(figure, path, **options):
        Path(path).write_bytes(b"half a plot")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    (tmp_path / "curves.png").write_bytes(b"the old plot")
    result = _invoke("plot", trained[0], "--output", tmp_path / "curves.png")
    assert result.stderr == (
        f"error: cannot write {tmp_path / 'curves.png'} (No space left on device); choose a writable path\n"
    )
    assert [path.name for path in tmp_path.iterdir()] == ["curves.png"]
    assert (tmp_path / "curves.png").read_bytes() == b"the old plot"


def test_a_config_file_nested_too_deep_is_a_one_line_error(tmp_path):
    config = tmp_path / "deep.toml"
    config.write_text("ways = " + "[" * 5000 + "]" * 5000 + "\n")
    result = _invoke("train", "maml", "--config", config, "--run-dir", tmp_path / "run")
    assert result.stderr.startswith(f"error: config file {config} is not valid TOML: maximum recursion depth")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "run").exists()


def test_plot_without_matplotlib_says_what_to_install(trained, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = _invoke("plot", trained[0])
    assert result.exit_code == 1
    assert result.stderr == "error: plotting needs matplotlib: pip install matplotlib\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="only without a GPU")
def test_asking_for_cuda_without_a_gpu(tmp_path):
    result = _invoke("train", "maml", *SINUSOID, "--device", "cuda", "--run-dir", tmp_path / "run")
    assert result.stderr == (
        "error: device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto\n"
    )
    assert not (tmp_path / "run").exists()


def test_devices_torch_does_not_see_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for device, message in [
        ("mps", "device mps was asked for but torch sees no MPS (Apple) GPU; use --device cpu or auto"),
        (
            "cuda:2",
            "device cuda:2 was asked for but torch sees 2 CUDA GPU(s), numbered from 0; use cuda or auto",
        ),
    ]:
        result = _invoke("train", "maml", *SINUSOID, "--device", device, "--run-dir", tmp_path / "run")
        assert result.stderr == f"error: {message}\n"
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[backbone_options]\nhidden = 40", "backbone 'mlp': option hidden must be a list, got 40"),
        (
            "[sampler_options]\namplitude = 5",
            "sampler 'sinusoid': option amplitude must be a list of 2, got 5",
        ),
        (
            '[sampler_options]\nx_range = [-5, "5"]',
            "sampler 'sinusoid': option x_range must be a list of 2, got [-5, '5']",
        ),
    ],
)
def test_option_values_of_the_wrong_type_in_a_config_file_are_one_line_errors(tmp_path, table, message):
    config = tmp_path / "run.toml"
    config.write_text(f'sampler = "sinusoid"\nbackbone = "mlp"\nshots = 5\n{table}\n')
    result = _invoke("train", "maml", "--config", config, "--run-dir", tmp_path / "run")
    assert result.stderr == f"error: {message}\n"
    assert not (tmp_path / "run").exists()


def test_show_tasks_takes_the_sampler_and_its_options_from_a_config_file(tmp_path):
    from data_synthetic import write_collection
    from PIL import Image

    write_collection(tmp_path / "data", groups=2, classes=4, drawings=4, size=8)
    config = tmp_path / "folder.toml"
    config.write_text(
        f'sampler = "image-folder"\nways = 3\nshots = 2\n[sampler_options]\nroot = "{tmp_path / "data"}"\n'
        f'image_size = 8\ncache_dir = "{tmp_path / "cache"}"\n'
    )
    output = tmp_path / "tasks.png"
    result = _invoke("show-tasks", "--config", config, "--tasks", 1, "--queries", 1, "--output", output)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote 1 3-way 2-shot tasks (train part) to {output}\n"
    assert Image.open(output).size[0] > 0
    without = _invoke("show-tasks", "--sampler", "image-folder", "--output", tmp_path / "no.png")
    assert without.stderr == (
        "error: sampler 'image-folder' needs option root: "
        "set it in the [sampler_options] table of a --config file\n"
    )
