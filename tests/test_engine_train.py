"""The training engine: exact resume after Ctrl-C or a crash, the NaN guard, run-directory safety,
checkpoint safety, and both evaluation protocols against plain reference loops."""

import itertools
import json
import math
import pickle
import signal
import sys
import time
import types

import pytest
import torch

import metakit
from metakit import MetakitError, TaskBatch, TrainConfig
from metakit.data.sampler import TaskSampler
from metakit.engine.evaluate import predict_queries
from metakit.engine.run_dir import RunDirectory
from metakit.registry import register_sampler, samplers


class BlobSampler(TaskSampler):
    """Tiny classification tasks: each class is a random 16x16 pattern plus noise.
    Splits draw from differently seeded patterns only through the generator."""

    input_shape = (1, 16, 16)
    problem = "classification"

    def __init__(self, ways=3, shots=1, queries=1, split="train", noise=0.7):
        self.ways, self.shots, self.queries, self.noise = ways, shots, queries, noise
        self.num_outputs = ways

    def sample(self, num_tasks, generator):
        def draw(per_class):
            noise = torch.randn(num_tasks, self.ways, per_class, *self.input_shape, generator=generator)
            x = (patterns[:, :, None] + self.noise * noise).flatten(1, 2)
            return x, torch.arange(self.ways).repeat_interleave(per_class).expand(num_tasks, -1)

        patterns = torch.randn(num_tasks, self.ways, *self.input_shape, generator=generator)
        support_x, support_y = draw(self.shots)
        query_x, query_y = draw(self.queries)
        return TaskBatch(support_x, support_y.contiguous(), query_x, query_y.contiguous())


pytestmark = pytest.mark.usefixtures("one_thread")


if "test-blobs" not in samplers:
    register_sampler("test-blobs")(BlobSampler)


def _config(tmp_path, name="run", **changes):
    values = dict(
        algorithm="maml",
        backbone="conv4",
        sampler="test-blobs",
        ways=3,
        meta_batch=4,
        iterations=6,
        eval_every=3,
        eval_tasks=4,
        eval_queries=2,
        test_tasks=0,
        log_every=1,
        checkpoint_every=2,
        run_dir=str(tmp_path / name),
        hyperparameters={"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 2},
        backbone_options={"hidden": 8},
    )
    return TrainConfig(**(values | changes))


def _params(run):
    return {name: p.detach().clone() for name, p in run.algorithm.named_parameters()}


def _sample_with(monkeypatch, action_at):
    """Make the blob sampler call ``action_at[call]()`` on its n-th training draw (1-based)."""
    original = BlobSampler.sample
    calls = {"n": 0}

    def sample(self, num_tasks, generator):
        batch = original(self, num_tasks, generator)
        if num_tasks == 4:  # meta-batches only, not the validation task sets
            calls["n"] += 1
            if calls["n"] in action_at:
                batch = action_at[calls["n"]](batch) or batch
        return batch

    monkeypatch.setattr(BlobSampler, "sample", sample)


def test_resumed_runs_end_bit_identical_to_an_uninterrupted_run(tmp_path, monkeypatch):
    reference = _params(metakit.train(_config(tmp_path, "straight"), progress=False))

    # Ctrl-C during iteration 3: the run finishes that iteration, saves and returns.
    _sample_with(monkeypatch, {3: lambda batch: signal.raise_signal(signal.SIGINT)})
    config = _config(tmp_path, "interrupted")
    stopped = metakit.train(config, progress=False)
    assert stopped.interrupted and stopped.iteration == 3
    monkeypatch.undo()
    resumed = metakit.train(config, resume=True, progress=False)
    assert not resumed.interrupted and resumed.iteration == 6

    # A crash (as after SIGKILL) in iteration 6: resume from the checkpoint of iteration 4,
    # dropping the metrics line of iteration 5 that the resumed run logs again.
    def crash(batch):
        raise RuntimeError("killed")

    _sample_with(monkeypatch, {6: crash})
    crashed_config = _config(tmp_path, "crashed")
    with pytest.raises(RuntimeError, match="killed"):
        metakit.train(crashed_config, progress=False)
    monkeypatch.undo()
    assert torch.load(tmp_path / "crashed" / "last.pt", weights_only=True)["iteration"] == 4
    crashed = metakit.train(crashed_config, resume=True, progress=False)

    for run in (resumed, crashed):
        found = _params(run)
        assert all(torch.equal(found[name], reference[name]) for name in reference)
        lines = run.directory.joinpath("metrics.jsonl").read_text().splitlines()
        iterations = [json.loads(line)["iteration"] for line in lines]
        assert iterations == [1, 2, 3, 4, 5, 6]


def test_ctrl_c_while_an_iteration_is_logged_still_saves_the_iteration_it_stops_at(tmp_path, monkeypatch):
    # The signal lands while iteration 3 writes its metrics line (no checkpoint is due at 3).
    original = RunDirectory.append_metrics

    def append_metrics(self, line):
        original(self, line)
        if line["iteration"] == 3:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(RunDirectory, "append_metrics", append_metrics)
    run = metakit.train(_config(tmp_path, eval_every=0), progress=False)
    assert run.interrupted
    saved = torch.load(run.directory / "last.pt", weights_only=True)["iteration"]
    lines = run.directory.joinpath("metrics.jsonl").read_text().splitlines()
    assert saved == run.iteration == json.loads(lines[-1])["iteration"] == 4


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    def poison(batch):
        return TaskBatch(batch.support_x, batch.support_y, batch.query_x * math.nan, batch.query_y)

    _sample_with(monkeypatch, {5: poison})
    config = _config(tmp_path, eval_every=0)
    last = tmp_path / "run" / "last.pt"
    with pytest.raises(MetakitError) as error:
        metakit.train(config, progress=False)
    assert str(error.value) == (
        "the meta-loss or its gradient is not finite at iteration 5 (loss nan); training stopped and "
        f"the last good checkpoint {last} is kept; try a smaller --meta-lr or --inner-lr"
    )
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["iteration"] == 4
    assert all(torch.isfinite(value).all() for value in checkpoint["algorithm"].values())


def test_running_out_of_memory_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    def exhaust(batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    _sample_with(monkeypatch, {5: exhaust})
    last = tmp_path / "run" / "last.pt"
    with pytest.raises(MetakitError) as error:
        metakit.train(_config(tmp_path, eval_every=0), progress=False)
    assert str(error.value) == (
        "out of memory at iteration 5 with 4 tasks per meta-batch; training stopped and "
        f"the last good checkpoint {last} is kept; try a smaller --meta-batch"
    )
    assert torch.load(last, weights_only=True)["iteration"] == 4


def test_resuming_a_run_that_stopped_before_its_first_checkpoint_says_to_start_again(tmp_path, monkeypatch):
    def nan_queries(batch):
        return TaskBatch(batch.support_x, batch.support_y, batch.query_x * math.nan, batch.query_y)

    _sample_with(monkeypatch, {1: nan_queries})
    with pytest.raises(MetakitError, match="not finite at iteration 1"):
        metakit.train(_config(tmp_path, eval_every=0), progress=False)
    monkeypatch.undo()
    with pytest.raises(MetakitError) as error:
        metakit.train(_config(tmp_path, eval_every=0), resume=True, progress=False)
    assert str(error.value) == (
        f"run dir {tmp_path / 'run'} stopped before its first checkpoint; "
        "there is nothing to resume: start again with another --run-dir"
    )
    with pytest.raises(MetakitError) as error:
        metakit.train(_config(tmp_path, eval_every=0), progress=False)
    assert str(error.value) == (
        f"run dir {tmp_path / 'run'} holds a run that stopped before its first checkpoint; "
        "delete the folder or choose another --run-dir"
    )


def test_a_run_dir_holding_a_run_or_other_files_is_never_overwritten(tmp_path):
    config = _config(tmp_path, iterations=2, eval_every=0)
    metakit.train(config, progress=False)
    before = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()}

    with pytest.raises(MetakitError, match="already holds a run; pass --resume to continue it"):
        metakit.train(config, progress=False)
    with pytest.raises(MetakitError) as error:
        metakit.train(
            _config(tmp_path, iterations=4, eval_every=0, meta_lr=0.01), resume=True, progress=False
        )
    assert str(error.value) == (
        f"run dir {tmp_path / 'run'} holds a different run (meta_lr is 0.001 there, 0.01 here); "
        "choose another --run-dir"
    )
    assert {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()} == before

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(MetakitError, match="is not empty; choose another --run-dir"):
        metakit.train(_config(tmp_path, "other"), progress=False)
    assert [path.name for path in (tmp_path / "other").iterdir()] == ["notes.txt"]


def test_a_metrics_line_cut_by_a_crash_is_dropped_on_resume_and_other_damage_is_named(tmp_path):
    metakit.train(_config(tmp_path, iterations=4, eval_every=0), progress=False)
    metrics = tmp_path / "run" / "metrics.jsonl"
    with metrics.open("a") as file:
        file.write('{"iteration": 5, "wall_ti')  # killed while writing the line of iteration 5
    run = metakit.train(_config(tmp_path, iterations=6, eval_every=0), resume=True, progress=False)
    assert [line["iteration"] for line in RunDirectory(run.directory).metrics()] == [1, 2, 3, 4, 5, 6]
    assert all(line.endswith("}") for line in metrics.read_text().splitlines())

    complete = metrics.read_text()
    metrics.write_text(complete.rstrip("\n"))  # a whole last line without its newline is kept
    assert [line["iteration"] for line in RunDirectory(run.directory).metrics()] == [1, 2, 3, 4, 5, 6]

    lines = complete.splitlines()
    damaged = "\n".join(lines[:2] + ['{"iteration": 3, "wall_ti'] + lines[3:]) + "\n"
    metrics.write_text(damaged)
    with pytest.raises(MetakitError) as error:
        metakit.train(_config(tmp_path, iterations=8, eval_every=0), resume=True, progress=False)
    assert str(error.value) == f"{metrics} is corrupt at line 3; delete that line or start a new run"
    assert metrics.read_text() == damaged


def test_damaged_run_files_are_refused_before_anything_is_run_or_written(tmp_path, monkeypatch):
    metakit.train(_config(tmp_path, iterations=2, eval_every=0), progress=False)
    run = tmp_path / "run"
    monkeypatch.setattr(
        sys.modules["metakit.engine.evaluate"], "task_scores", lambda *args: pytest.fail("tasks were run")
    )

    (run / "results.json").write_text('{"mean": 0.9}')
    with pytest.raises(
        MetakitError, match=f"^{run / 'results.json'} is not a list of results; move it away$"
    ):
        metakit.evaluate(run, tasks=2, checkpoint="last")
    with pytest.raises(MetakitError, match="is not a list of results"):  # before training, not after
        metakit.train(_config(tmp_path, iterations=4, eval_every=0), resume=True, progress=False)
    assert (run / "results.json").read_text() == '{"mean": 0.9}'
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 2
    (run / "results.json").unlink()
    with pytest.raises(MetakitError, match="metakit does not run on device 'meta'; use auto, cpu or cuda"):
        metakit.evaluate(run, tasks=2, checkpoint="last", device="meta")

    with pytest.raises(
        MetakitError, match="no checkpoint .*best.pt: the run was trained without validation; pick"
    ):
        metakit.evaluate(run, tasks=2)

    checkpoint = torch.load(run / "last.pt", weights_only=True)
    torch.save({key: value for key, value in checkpoint.items() if key != "iteration"}, run / "last.pt")
    with pytest.raises(MetakitError, match="lacks part of a metakit checkpoint; restore it from a copy"):
        metakit.evaluate(run, tasks=2, checkpoint="last")
    with pytest.raises(MetakitError, match="lacks part of a metakit checkpoint"):
        metakit.train(_config(tmp_path, iterations=4, eval_every=0), resume=True, progress=False)

    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(MetakitError, match="cannot create run dir .*a-file/run .*; choose another --run-dir"):
        metakit.train(_config(tmp_path, "a-file/run"), progress=False)


def test_a_checkpoint_of_another_run_is_refused_and_nothing_is_lost(tmp_path):
    metakit.train(_config(tmp_path, "a", iterations=2, eval_every=0), progress=False)
    changes = {"iterations": 4, "minutes": 60.0, "device": "cpu"}  # what a resumed run may change
    metakit.train(_config(tmp_path, "a", eval_every=0, **changes), resume=True, progress=False)
    metakit.evaluate(tmp_path / "a", tasks=2, checkpoint="last")  # its own checkpoint passes
    metakit.train(_config(tmp_path, "b", iterations=2, eval_every=0, seed=1), progress=False)
    run = tmp_path / "a"
    (run / "last.pt").write_bytes((tmp_path / "b" / "last.pt").read_bytes())  # copied over by hand
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    message = (
        f"checkpoint {run / 'last.pt'} belongs to another run (seed is 0 in config.json, 1 in the "
        "checkpoint); put this run's own checkpoint back"
    )
    with pytest.raises(MetakitError) as error:
        metakit.train(_config(tmp_path, "a", iterations=6, eval_every=0), resume=True, progress=False)
    assert str(error.value) == message
    with pytest.raises(MetakitError) as error:
        metakit.evaluate(run, tasks=2, checkpoint="last")
    assert str(error.value) == message
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


def test_a_failed_first_checkpoint_says_to_start_again_and_other_errors_stay_errors(tmp_path, monkeypatch):
    def fail(message):
        def save(value, file):
            raise RuntimeError(message)

        return save

    run = tmp_path / "run"
    monkeypatch.setattr(
        torch, "save", fail("PytorchStreamWriter failed writing file data/0: file write failed")
    )
    with pytest.raises(MetakitError) as error:
        metakit.train(_config(tmp_path, eval_every=0), progress=False)
    assert str(error.value) == (
        f"training stopped at iteration 2: cannot write {run / 'last.pt'} (PytorchStreamWriter failed "
        "writing file data/0: file write failed); free some space or fix the folder's permissions; "
        f"no checkpoint was written yet; then delete {run} and start again"
    )
    monkeypatch.setattr(torch, "save", fail("a bug, not a full disk"))
    with pytest.raises(RuntimeError, match="^a bug, not a full disk$"):
        metakit.train(_config(tmp_path, "other", eval_every=0), progress=False)


def test_resuming_with_another_sampler_is_refused_before_its_data_is_read(tmp_path):
    metakit.train(_config(tmp_path, iterations=2, eval_every=0), progress=False)
    other = _config(
        tmp_path, sampler="omniglot", sampler_options={"data_dir": str(tmp_path / "no-data")}, eval_every=0
    )
    with pytest.raises(MetakitError) as error:
        metakit.train(other, resume=True, progress=False)
    assert str(error.value) == (
        f'run dir {tmp_path / "run"} holds a different run (sampler is "test-blobs" there, "omniglot" '
        "here); choose another --run-dir"
    )
    assert not (tmp_path / "no-data").exists()


def test_a_write_that_fails_stops_training_and_keeps_what_was_written(tmp_path, monkeypatch):
    written = {"checkpoints": 0}
    save = torch.save

    def fail_the_second_checkpoint(value, file):
        written["checkpoints"] += 1
        if written["checkpoints"] == 2:
            file.write(b"half a checkpoint")
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                "data/0: file write failed"
            )
        save(value, file)

    monkeypatch.setattr(torch, "save", fail_the_second_checkpoint)
    run, last = tmp_path / "run", tmp_path / "run" / "last.pt"
    with pytest.raises(MetakitError) as error:
        metakit.train(_config(tmp_path, eval_every=0), progress=False)
    assert str(error.value) == (
        f"training stopped at iteration 4: cannot write {last} "
        "([enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
        "file write failed); free some space or fix the folder's permissions; the last good "
        f"checkpoint {last} is kept; then continue with: metakit train --resume --run-dir {run}"
    )
    assert torch.load(last, weights_only=True)["iteration"] == 2
    assert sorted(path.name for path in run.iterdir()) == ["config.json", "last.pt", "metrics.jsonl"]
    monkeypatch.undo()
    resumed = metakit.train(_config(tmp_path, eval_every=0), resume=True, progress=False)
    assert [line["iteration"] for line in RunDirectory(resumed.directory).metrics()] == [1, 2, 3, 4, 5, 6]

    def disk_full(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sys.modules["metakit.atomic_file"].os, "replace", disk_full)
    with pytest.raises(MetakitError) as error:
        metakit.evaluate(run, tasks=2, checkpoint="last")
    assert str(error.value) == (
        f"cannot write {run / 'results.json'} (No space left on device); free some space or fix the "
        "folder's permissions"
    )
    assert sorted(path.name for path in run.iterdir()) == ["config.json", "last.pt", "metrics.jsonl"]


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_corrupt_or_code_carrying_checkpoints_are_refused(tmp_path, capsys):
    config = _config(tmp_path, iterations=2, eval_every=0)
    metakit.train(config, progress=False)
    last = tmp_path / "run" / "last.pt"

    last.write_bytes(b"not a checkpoint")
    with pytest.raises(MetakitError, match=f"checkpoint {last} is corrupt or not a metakit checkpoint"):
        metakit.train(config, resume=True, progress=False)

    last.write_bytes(pickle.dumps({"format": 1, "payload": _RunsCode()}))
    with pytest.raises(MetakitError, match="is corrupt or not a metakit checkpoint"):
        metakit.evaluate(tmp_path / "run", tasks=2, checkpoint="last")
    assert "this must never run" not in capsys.readouterr().out

    with pytest.raises(MetakitError, match="no checkpoint .*best.pt"):
        metakit.evaluate(tmp_path / "run", tasks=2, checkpoint="best")


def _reference_scores(run, tasks, protocol):
    """Plain loops: adapt per task, then predict the query set at once (transductive) or
    each query example in a batch of the support set plus that example alone."""
    algorithm = run.algorithm
    sampler = BlobSampler(ways=3, shots=1, queries=2, split="test")
    scores = []
    for batch in sampler.fixed_tasks(tasks, seed=0):
        for i in range(batch.num_tasks):
            adapted = algorithm.adapt(batch.support_x[i], batch.support_y[i])
            with torch.no_grad():
                if protocol == "transductive":
                    outputs = algorithm.predict(adapted, batch.query_x[i])
                else:
                    outputs = torch.stack(
                        [
                            algorithm.predict(adapted, torch.cat([batch.support_x[i], x[None]]))[-1]
                            for x in batch.query_x[i]
                        ]
                    )
            scores.append((outputs.argmax(-1) == batch.query_y[i]).double().mean().item())
    return scores


@pytest.mark.parametrize("protocol", ["transductive", "non-transductive"])
def test_evaluation_equals_a_plain_reference_loop(tmp_path, protocol):
    run = metakit.train(_config(tmp_path, iterations=3, eval_every=0), progress=False)
    result = metakit.evaluate(run, tasks=30, protocol=protocol, checkpoint="last")

    scores = _reference_scores(run, 30, protocol)
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    assert result.mean == pytest.approx(mean, abs=1e-12)
    assert result.ci95 == pytest.approx(1.96 * std / math.sqrt(30), abs=1e-12)
    assert (result.protocol, result.split, result.tasks, result.inner_steps) == (protocol, "test", 30, 2)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved == [result.to_dict()]


@pytest.mark.parametrize("vectorized", [False, True])
def test_non_transductive_predictions_do_not_see_other_query_examples(tmp_path, vectorized):
    """With BatchNorm the two protocols differ; non-transductive outputs of one query example
    must not change when the other query examples change, and vmap must equal the loop."""
    run = metakit.train(_config(tmp_path, iterations=2, eval_every=0), progress=False)
    batch = BlobSampler(queries=3).sample(1, torch.Generator().manual_seed(0))
    support_x, support_y, query_x = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    adapted = run.algorithm.adapt(support_x, support_y)
    changed = torch.cat([query_x[:1], 5 * torch.randn_like(query_x[1:])])
    with torch.no_grad():
        alone = [
            predict_queries(run.algorithm, adapted, support_x, q, "non-transductive", vectorized)
            for q in (query_x, changed)
        ]
        jointly = [
            predict_queries(run.algorithm, adapted, support_x, q, "transductive") for q in (query_x, changed)
        ]
        one_by_one = [run.algorithm.predict(adapted, torch.cat([support_x, x[None]]))[-1] for x in query_x]
    assert torch.allclose(alone[0][0], alone[1][0], atol=1e-6)
    assert torch.allclose(alone[0], torch.stack(one_by_one), atol=1e-6)
    assert not torch.allclose(jointly[0][0], jointly[1][0], atol=1e-3)


def test_minutes_budget_stops_training_and_counts_across_resumes(tmp_path, monkeypatch):
    """``minutes`` ends a run early, as finished (last checkpoint, final validation), and the
    wall time already spent counts when the run is resumed with a larger budget."""
    clock = itertools.count()  # the engine's wall clock: one second per reading
    fake_time = types.SimpleNamespace(monotonic=lambda: float(next(clock)), perf_counter=time.perf_counter)
    monkeypatch.setattr(sys.modules["metakit.engine.train"], "time", fake_time)
    config = _config(tmp_path, iterations=1000, minutes=0.1, eval_every=4, checkpoint_every=50)
    run = metakit.train(config, progress=False)
    assert run.iteration == 6 and not run.interrupted
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["iteration"] == 6 and "validation_accuracy" in lines[-1]
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["iteration"] == 6
    config = _config(tmp_path, iterations=1000, minutes=0.2, eval_every=4, checkpoint_every=50)
    assert metakit.train(config, resume=True, progress=False).iteration == 12


def test_bf16_training_autocasts_the_meta_loss_and_keeps_float32_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(metakit.precision, "native_cpu_bf16", lambda: False)
    fp32 = metakit.train(_config(tmp_path, "fp32", iterations=2, eval_every=0), progress=False)
    with pytest.warns(UserWarning, match="bf16 is emulated on this CPU"):
        bf16 = metakit.train(
            _config(tmp_path, "bf16", iterations=2, eval_every=0, precision="bf16"), progress=False
        )
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["config"]["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in bf16.algorithm.parameters())
    difference = max(
        (a - b).abs().max().item() for a, b in zip(_params(fp32).values(), _params(bf16).values())
    )
    assert difference > 1e-6
