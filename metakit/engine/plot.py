"""Learning curves of a run as a PNG: meta-train loss, and the meta-train and validation
metric (with its 95% confidence band), against iterations and against wall time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from metakit.atomic_file import atomic_path
from metakit.engine.run_dir import RunDirectory
from metakit.errors import MetakitError

NEEDS_LATEX = "pgf"


def plot(run: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """Write the curves of ``run`` to ``output`` (default ``<run>/curves.png``; in the format its
    suffix names, PNG without one), replacing a file there only once the new one is whole;
    returns its path."""
    pyplot = _pyplot()
    directory = RunDirectory(run)
    path = Path(output) if output is not None else directory.plot_file
    kind = path.suffix[1:].lower() or "png"
    formats = sorted(set(pyplot.FigureCanvasBase.get_supported_filetypes()) - {NEEDS_LATEX})
    if kind not in formats:
        raise MetakitError(
            f"cannot write {path} (no format '{kind}'); name a .png, .svg or .pdf file "
            f"(or one of {', '.join(formats)})"
        )
    directory.record()
    lines = directory.metrics()
    if not lines:
        raise MetakitError(f"{directory.metrics_file} has no metrics yet; train the run first")
    metric = (
        "accuracy"
        if any("train_accuracy" in line or "validation_accuracy" in line for line in lines)
        else "mse"
    )
    figure, axes = pyplot.subplots(2, 2, figsize=(11, 7), sharex="col")
    for column, (x_key, x_label, scale) in enumerate(
        [("iteration", "meta-iteration", 1.0), ("wall_time", "wall time (minutes)", 1 / 60)]
    ):
        _curve(axes[0][column], lines, x_key, scale, "train_loss", "meta-train query loss")
        _curve(axes[1][column], lines, x_key, scale, f"train_{metric}", f"meta-train {metric}")
        _curve(
            axes[1][column], lines, x_key, scale, f"validation_{metric}", f"validation {metric}", band=True
        )
        axes[1][column].set_xlabel(x_label)
        axes[0][column].set_ylabel("loss")
        axes[1][column].set_ylabel(metric)
        for row in axes:
            row[column].grid(alpha=0.3)
            if row[column].get_legend_handles_labels()[0]:
                row[column].legend(loc="best")
    config = directory.config()
    figure.suptitle(
        f"{config.algorithm} / {config.backbone} on {config.sampler}, {config.ways}-way {config.shots}-shot "
        f"({directory.path.name})"
    )
    figure.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=110, format=kind)
    except OSError as error:
        raise MetakitError(
            f"cannot write {path} ({error.strerror or error}); choose a writable path"
        ) from error
    finally:
        pyplot.close(figure)
    return path


def _curve(axis, lines: list[dict[str, Any]], x_key: str, scale: float, key: str, label: str, band=False):
    needed = (x_key, key, f"{key}_ci95") if band else (x_key, key)
    points = [line for line in lines if all(name in line for name in needed)]
    if not points:
        return
    x = [line[x_key] * scale for line in points]
    y = [line[key] for line in points]
    axis.plot(x, y, marker="o" if band else None, markersize=3, label=label)
    if band:
        low = [line[key] - line[f"{key}_ci95"] for line in points]
        high = [line[key] + line[f"{key}_ci95"] for line in points]
        axis.fill_between(x, low, high, alpha=0.25, label="95% CI")


def _pyplot():
    try:
        import matplotlib
    except ModuleNotFoundError as error:
        raise MetakitError("plotting needs matplotlib: pip install matplotlib") from error
    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as pyplot

    return pyplot
