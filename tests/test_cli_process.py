"""The installed `metakit` console script as a user runs it: one-line errors from main(),
and Ctrl-C (SIGINT) that saves a checkpoint, exits cleanly and resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

METAKIT = str(Path(sys.executable).parent / "metakit")
# Tiny networks: one thread each, so that a loaded CI machine does not stall on thread contention.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SINUSOID = [
    "--sampler",
    "sinusoid",
    "--backbone",
    "mlp",
    "--shots",
    "5",
    "--eval-every",
    "0",
    "--test-tasks",
    "0",
]


def test_main_prints_a_metakit_error_as_one_line_and_exits_1(tmp_path):
    done = subprocess.run(
        [METAKIT, "train", "mamll", *SINUSOID, "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: unknown algorithm 'mamll'. Did you mean 'maml'?")
    assert done.stderr.count("\n") == 1 and done.stdout == ""
    assert not (tmp_path / "run").exists()


def test_ctrl_c_saves_exits_cleanly_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [METAKIT, "train", "maml", *SINUSOID, "--iterations", "100000", "--run-dir", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    stopped = torch.load(run / "last.pt", weights_only=True)["iteration"]
    assert f"interrupted at iteration {stopped}; saved {run / 'last.pt'}; continue with: " in stderr
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["iteration"] == stopped

    done = subprocess.run(
        [METAKIT, "train", "--resume", "--run-dir", str(run), "--iterations", str(stopped + 3)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == stopped + 3
