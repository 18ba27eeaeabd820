"""The speed suite: its gradient gate, its FLOP count, its runner's verdicts and its table writer."""

import datetime
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from metakit import MetakitError
from metakit.bench import peers, rows
from metakit.bench.cli import bench_app
from metakit.bench.configs import SpeedConfig
from metakit.bench.flops import layer_flops, meta_iteration_flops
from metakit.bench.gate import GATE_TOLERANCE, gate_error
from metakit.bench.report import append_report, format_report
from metakit.bench.speed import (
    MALLOC_TUNABLES,
    RowResult,
    SpeedSettings,
    SuiteResult,
    gate_row,
    launch,
    run_speed_suite,
)
from metakit.bench.worker import run_job

TINY = SpeedConfig(
    "tiny", ways=3, shots=1, queries=2, tasks=2, inner_steps=2, inner_lr=0.3, hidden=8, image_size=16
)


def _silently_first_order(backbone, config):
    """A loop that forgets ``create_graph``: it trains, but its meta-gradient is FOMAML's."""
    names = [name for name, _ in backbone.named_parameters()]
    theta = list(backbone.parameters())

    def step(batch):
        for i in range(batch.num_tasks):
            fast = theta
            for _ in range(config.inner_steps):
                loss = F.cross_entropy(
                    functional_call(backbone, dict(zip(names, fast)), (batch.support_x[i],)),
                    batch.support_y[i],
                )
                fast = [w - config.inner_lr * g for w, g in zip(fast, torch.autograd.grad(loss, fast))]
            logits = functional_call(backbone, dict(zip(names, fast)), (batch.query_x[i],))
            (F.cross_entropy(logits, batch.query_y[i]) / batch.num_tasks).backward()

    return step


def _summed_over_tasks(backbone, config):
    """The plain loop with the task mean forgotten: gradients ``tasks`` times too large."""
    mean_step = peers.plain_loop(backbone, config)

    def step(batch):
        for i in range(batch.num_tasks):
            mean_step(batch.task(i))

    return step


REFERENCE = rows.metakit_maml("loop", first_order=False)


@pytest.mark.parametrize("wrong", [_silently_first_order, _summed_over_tasks])
def test_gate_flags_a_wrong_implementation(wrong):
    assert gate_error(wrong, REFERENCE, TINY, seed=0, device="cpu", tasks=0) > 1e-3


@pytest.mark.parametrize("peer", [peers.plain_loop, peers.higher_loop, rows.metakit_maml("vmap", False)])
def test_gate_passes_correct_implementations(peer):
    assert gate_error(peer, REFERENCE, TINY, seed=0, device="cpu", tasks=2) < GATE_TOLERANCE


@pytest.mark.parametrize("second_order", [False, True])
def test_flop_count_matches_torch_flop_counter(second_order):
    """Exactly what torch counts, in both orders: metakit's convolution skips the first-layer
    product, ``F_1(n_support)`` per task and step, that torch's double backward computes."""
    backbone = TINY.backbone(0, torch.float32, "cpu")
    step = rows.metakit_maml("loop", first_order=not second_order, tasks_per_forward=1)(backbone, TINY)
    with FlopCounterMode(display=False) as counter:
        step(TINY.batch(0, torch.float32, "cpu"))
    assert counter.get_total_flops() == meta_iteration_flops(TINY, second_order)


def test_the_peers_pay_torchs_unneeded_first_layer_product():
    """The same count for the plain loop on torch's layers is higher by that product."""
    backbone = TINY.backbone(0, torch.float32, "cpu")
    step = peers.on_textbook_conv4(peers.plain_loop)(backbone, TINY)
    with FlopCounterMode(display=False) as counter:
        step(TINY.batch(0, torch.float32, "cpu"))
    unneeded = TINY.tasks * TINY.inner_steps * layer_flops(TINY, TINY.ways * TINY.shots)[0]
    assert counter.get_total_flops() == meta_iteration_flops(TINY, True) + unneeded


def _in_process(job, settings):
    return {"status": "ok", **run_job(job)}


def test_a_row_whose_gradient_differs_is_reported_wrong_and_not_timed():
    launched = []

    def launcher(job, settings):
        launched.append(job["job"])
        if job["job"] == "machine":
            return {"status": "ok", "machine": {}, "matmul_gflops": 1.0}
        return {"status": "ok", "error": 2e-3}

    settings = SpeedSettings(configs=(TINY,), rows=("plain-loop",), output=None)
    (result,) = run_speed_suite(settings, progress=lambda line: None, launcher=launcher).rows
    assert (result.status, result.gate_error, result.times_ms, launched) == (
        "WRONG",
        2e-3,
        [],
        ["machine", "gate"],
    )


def test_suite_gates_and_times_every_row(monkeypatch):
    missing = rows.Row("learn2learn", True, peers.learn2learn_maml, requires="metakit_no_such_package")
    monkeypatch.setitem(rows.ROWS, "learn2learn", missing)
    names = ("metakit-loop", "metakit-vmap-1st", "plain-loop", "plain-loop-metakit-conv4", "learn2learn")
    settings = SpeedSettings(configs=(TINY,), rows=names, iterations=2, warmup=1, output=None)
    suite = run_speed_suite(settings, progress=lambda line: None, launcher=_in_process)
    found = {r.row: r for r in suite.rows}
    assert [r.status for r in suite.rows] == ["ok", "ok", "ok", "ok", "not installed"]
    assert found["metakit-loop"].gate_error is None
    assert found["metakit-vmap-1st"].gate_error < GATE_TOLERANCE
    assert found["plain-loop"].gate_error < GATE_TOLERANCE
    assert found["plain-loop-metakit-conv4"].gate_error < GATE_TOLERANCE
    assert all(len(found[name].times_ms) == 2 for name in names[:4])
    assert suite.matmul_gflops > 0


@pytest.mark.parametrize(
    ("measured", "message"),
    [
        ({"status": "timeout"}, "measuring the machine took more than --timeout 30 s; raise it"),
        ({"status": "out of memory"}, "measuring the machine ran out of --memory-limit 0.5 GiB; raise it"),
        (
            {"status": "failed: exit 1", "stderr": "Traceback ...\nModuleNotFoundError: No module named 'x'"},
            "measuring the machine did not finish (failed: exit 1): ModuleNotFoundError: No module named 'x'",
        ),
    ],
)
def test_a_machine_measurement_that_does_not_finish_says_what_to_change(measured, message):
    settings = SpeedSettings(configs=(TINY,), timeout_s=30, memory_limit_gb=0.5, output=None)
    with pytest.raises(MetakitError) as error:
        run_speed_suite(settings, progress=lambda line: None, launcher=lambda job, settings: measured)
    assert str(error.value) == message


def test_rounds_take_turns_and_pool_every_rounds_iterations():
    """Two rounds: each row gated once, then timed row by row, twice; iterations pooled,
    the highest peak kept, and a row that failed its gate never timed."""
    launched = []

    def launcher(job, settings):
        launched.append((job["job"], job.get("row")))
        if job["job"] == "machine":
            machine = {"cpu": "test CPU", "cpus": 2, "torch": "2", "threads": 1, "device": "cpu"}
            return {"status": "ok", "machine": machine, "matmul_gflops": 1.0}
        if job["job"] == "gate":
            return {"status": "ok", "error": 1.0 if job["row"] == "higher" else 0.0}
        timed = sum(1 for kind, row in launched if (kind, row) == ("time", job["row"]))
        return {"status": "ok", "times_ms": [10.0 * timed] * 2, "peak_rss_bytes": 100 * (3 - timed)}

    names = ("metakit-loop", "plain-loop", "higher")
    settings = SpeedSettings(configs=(TINY,), rows=names, iterations=2, rounds=2, output=None)
    suite = run_speed_suite(settings, progress=lambda line: None, launcher=launcher)
    timed = [row for kind, row in launched if kind == "time"]
    assert timed == ["metakit-loop", "plain-loop", "metakit-loop", "plain-loop"]
    found = {r.row: r for r in suite.rows}
    assert found["plain-loop"].times_ms == [10.0, 10.0, 20.0, 20.0]
    assert found["plain-loop"].peak_rss_bytes == 200
    assert (found["higher"].status, found["higher"].times_ms) == ("WRONG", [])
    report = format_report(suite, settings, datetime.date(2026, 12, 1))
    assert "Median of 2 x 2 meta-iterations: 2 rounds" in report


def test_peers_textbook_conv4_is_metakits_conv4_in_the_textbook_order():
    """Same parameters (so the same ``.grad``), torch's own layers throughout, ReLU first."""
    backbone = TINY.backbone(0, torch.float64, "cpu")
    textbook = peers.textbook_conv4(backbone)
    assert [type(m) for m in textbook[:4]] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    assert {id(p) for p in textbook.parameters()} == {id(p) for p in backbone.parameters()}
    x = torch.randn(6, 1, TINY.image_size, TINY.image_size, dtype=torch.float64)
    torch.testing.assert_close(textbook(x), backbone(x), rtol=1e-12, atol=1e-12)


def test_every_process_runs_with_the_same_malloc_tunables(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    found = launch({"job": "machine", "device": "cpu", "threads": 1}, SpeedSettings())
    assert found["machine"]["malloc"] == MALLOC_TUNABLES


def test_a_process_past_its_timeout_is_reported_not_waited_for():
    settings = SpeedSettings(timeout_s=0.05)
    assert gate_row(TINY, "plain-loop", settings, launch).status == "timeout"


def _result(row, times, rss, gate=None, status="ok", second_order=True):
    flops = meta_iteration_flops(TINY, second_order)
    return RowResult("tiny", row, second_order, status, flops, gate, times, rss)


def test_table_writer_writes_what_it_is_given(tmp_path):
    mb = 2**20
    suite = SuiteResult(
        {"torch": "9.9", "cpu": "Test CPU", "cpus": 2, "threads": 2, "device": "cpu", "malloc": "m=1"},
        100.0,
        [
            _result("metakit-loop", [14.0, 14.0, 14.0], 90 * mb),
            _result("metakit-processes", [10.0, 12.0, 11.0], 100 * mb, gate=0.0),
            _result("metakit-vmap", [30.0, 30.0, 30.0], 400 * mb, gate=3e-15),
            _result("plain-loop", [20.0, 25.0, 22.0], 50 * mb, gate=1e-14),
            _result("plain-loop-metakit-conv4", [15.0, 15.0, 15.0], 40 * mb, gate=1e-14),
            _result("metakit-bf16", [8.0, 8.0, 8.0], 70 * mb, gate=0.0),
            _result("higher", [], None, gate=4e-3, status="WRONG"),
            _result("learn2learn", [], None, status="not installed"),
        ],
    )
    settings = SpeedSettings(configs=(TINY,), iterations=3, warmup=1, note="under load", command="metakit x")
    text = format_report(suite, settings, date=datetime.date(2026, 1, 2))
    gflops = meta_iteration_flops(TINY, True) / 22.0 / 1e6
    assert "## Speed and memory, 2026-01-02 (under load)" in text
    assert "Command: `metakit x`" in text
    assert (
        "Test CPU (2 logical CPUs); torch 9.9; 2 thread(s); device cpu; malloc: m=1. "
        "fp32 matmul (2048 x 2048): 100.0" in text
    )
    assert "| metakit-loop | 2nd | reference | 14.0 | 14.0-14.0 | 90 |" in text
    assert "| metakit-processes | 2nd | 0.0e+00 | 11.0 | 10.0-12.0 | 100 |" in text
    assert "metakit (metakit-processes) 11.0 ms vs fastest peer" in text
    assert (
        f"| plain-loop | 2nd | 1.0e-14 | 22.0 | 20.0-25.0 | 50 | {gflops:.1f} ({gflops:.0f}%) | 2.00 | 0.50 |"
        in text
    )
    assert "| higher | 2nd | 4.0e-03 WRONG | WRONG | - |" in text
    assert "| learn2learn | 2nd | - | not installed | - |" in text
    assert "fastest peer (plain-loop) 22.0 ms: peer / metakit time 2.00;" in text
    assert "vs lowest peer (plain-loop) 50 MB." in text
    diagnostic = "plain-loop-metakit-conv4 (a peer on metakit's conv4): 15.0 ms, time / metakit 1.36."
    assert diagnostic in text
    assert "metakit in bf16 autocast (metakit-bf16) 8.0 ms: peer / metakit time 2.75; peak RSS 70 MB." in text

    path = tmp_path / "docs" / "benchmarks.md"
    append_report(path, text)
    path.write_text(path.read_text() + "notes a user wrote\n")
    append_report(path, text)
    written = path.read_text()
    assert written.startswith("# Benchmarks\n\n" + text)
    assert written.endswith("notes a user wrote\n\n" + text)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--config", "D"], "error: unknown config 'D'; use one of A, B, C, paper-5w, paper-20w"),
        (["--row", "jax"], "error: unknown row 'jax'; use one of " + ", ".join(rows.ROWS)),
        *(
            (
                [option, "0" if option != "--warmup" else "-1"],
                "error: use --iterations >= 1 (10 or more for reported numbers), --warmup >= 0 "
                "and --rounds >= 1",
            )
            for option in ("--iterations", "--warmup", "--rounds")
        ),
        (
            ["--timeout", "0"],
            "error: --timeout must be more than 0 seconds (leave it out: no limit), got 0.0",
        ),
        (
            ["--timeout", "nan"],
            "error: --timeout must be more than 0 seconds (leave it out: no limit), got nan",
        ),
        (
            ["--memory-limit", "nan"],
            "error: --memory-limit must be more than 0 and at most 2**30 GiB (leave it out: no limit), "
            "got nan",
        ),
        (
            ["--seed", "9223372036854775808"],
            "error: the seed must be between -2**63 and 2**63 - 1, got 9223372036854775808",
        ),
        *(
            (
                ["--memory-limit", value],
                "error: --memory-limit must be more than 0 and at most 2**30 GiB (leave it out: no limit), "
                f"got {float(value)}",
            )
            for value in ("-1", "1e10")
        ),
        *(
            (
                [option, "-1"],
                "error: use --threads >= 0 (0: torch's default) and --gate-tasks >= 0 (0: all tasks)",
            )
            for option in ("--threads", "--gate-tasks")
        ),
    ],
)
def test_bad_options_are_one_line_errors(option, message):
    result = CliRunner().invoke(bench_app, ["speed", *option, "--output", "-"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == message


@pytest.mark.parametrize("command", [["speed"], ["omniglot", "--table-only"]])
def test_an_output_that_cannot_be_appended_to_is_refused_before_the_suite_runs(
    tmp_path, monkeypatch, command
):
    for suite in ("run_speed_suite", "run_accuracy_suite"):
        monkeypatch.setattr(sys.modules["metakit.bench.cli"], suite, lambda *a, **k: pytest.fail("it ran"))
    (tmp_path / "a-file").write_text("mine")
    for output in (tmp_path, tmp_path / "a-file" / "report.md"):
        result = CliRunner().invoke(bench_app, [*command, "--output", str(output)])
        assert result.exit_code == 1
        assert (
            result.output
            == f"error: cannot append to {output}; give --output a writable markdown file, or '-'\n"
        )
    assert (tmp_path / "a-file").read_text() == "mine"


def test_an_output_in_a_folder_not_made_yet_is_made(tmp_path):
    output = tmp_path / "new" / "folder" / "report.md"
    result = CliRunner().invoke(
        bench_app, ["omniglot", "--table-only", "--root", str(tmp_path / "runs"), "--output", str(output)]
    )
    assert result.exit_code == 0
    assert output.read_text().startswith("# Benchmarks\n\n## Omniglot accuracy")
