"""Progress: a bar on a terminal, plain periodic lines elsewhere (CI, nohup, pipes)."""

import io

from metakit.engine.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_when_the_output_is_not_a_terminal():
    stream = io.StringIO()
    with Progress(total=4, start=1, stream=stream, interval=0) as bar:
        bar.update(2, {"loss": 0.5, "tasks_per_second": 12.0})
        bar.log("iteration 2: validation accuracy 0.9")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("iteration 2/4  loss 0.5  tasks/s 12  ETA 0:00:")
    assert lines[1] == "iteration 2: validation accuracy 0.9"


def test_a_loop_of_other_steps_names_them_and_may_have_no_figures():
    stream = io.StringIO()
    with Progress(total=3, stream=stream, interval=0, label="meta-test", unit="task") as bar:
        bar.update(1)
    assert stream.getvalue().startswith("task 1/3  ETA 0:00:")


def test_lines_are_periodic_not_per_iteration():
    stream = io.StringIO()
    with Progress(total=100, stream=stream, interval=3600) as bar:
        for iteration in range(1, 101):
            bar.update(iteration, {"loss": 1.0})
    assert [line.split()[1] for line in stream.getvalue().splitlines()] == ["100/100"]


def test_a_bar_on_a_terminal():
    stream = _Terminal()
    with Progress(total=4, stream=stream) as bar:
        bar.update(4, {"loss": 0.25})
    output = stream.getvalue()
    assert "meta-train" in output and "4/4" in output and "loss 0.25" in output
    assert "iteration 4/4" not in output
    stream = _Terminal()
    with Progress(total=2, stream=stream, label="meta-test", unit="task") as bar:
        bar.update(1)
    assert "meta-test" in stream.getvalue() and "meta-train" not in stream.getvalue()
