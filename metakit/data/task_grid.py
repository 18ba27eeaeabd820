"""A picture of sampled classification tasks, to look at what a sampler produces."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from metakit.atomic_file import atomic_path
from metakit.errors import MetakitError
from metakit.task_batch import TaskBatch

_GAP = 0.5  # mid-gray between images: visible against both ink and background
_BAR = 0.75  # light gray between support and query, and between tasks


def save_task_grid(
    batch: TaskBatch, path: str | os.PathLike, max_tasks: int = 4, max_query_rows: int = 3, scale: int = 3
) -> Path:
    """Save the first ``max_tasks`` tasks of ``batch`` (images ``[tasks, n, C, S, S]`` in
    ``[0, 1]``) as a PNG at ``path`` and return the path.

    One block per task, stacked top to bottom. Column ``j`` holds label ``j``: first its
    ``shots`` support images (one row each), then, below a gray bar, up to
    ``max_query_rows`` rows of its query images; so a column shows one class. Each pixel
    becomes ``scale`` x ``scale`` pixels.
    """
    if batch.support_x.dim() != 5 or batch.support_y.dim() != 2:
        raise MetakitError("save_task_grid draws image classification tasks ([tasks, n, C, S, S] inputs)")
    blocks = [_task_block(batch.task(t), max_query_rows) for t in range(min(max_tasks, batch.num_tasks))]
    width = max(block.shape[2] for block in blocks)
    separator = np.full((blocks[0].shape[0], 8, width), 1.0)
    stacked = []
    for block in blocks:
        stacked += [
            np.pad(block, ((0, 0), (0, 0), (0, width - block.shape[2])), constant_values=_GAP),
            separator,
        ]
    canvas = np.concatenate(stacked[:-1], axis=1).transpose(1, 2, 0)
    pixels = (canvas.clip(0, 1) * 255).round().astype(np.uint8)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            image.save(temporary, format="PNG")
    except OSError as error:
        raise MetakitError(
            f"cannot write {path} ({error.strerror or error}); choose a writable path"
        ) from error
    return path


def _task_block(task: TaskBatch, max_query_rows: int) -> np.ndarray:
    """One task -> ``[C, height, width]`` floats: support rows, a bar, query rows."""
    support = _rows_by_label(task.support_x[0], task.support_y[0], None)
    query = _rows_by_label(task.query_x[0], task.query_y[0], max_query_rows)
    bar = np.full((support.shape[0], 3, support.shape[2]), _BAR)
    return np.concatenate([support, bar, query], axis=1)


def _rows_by_label(x, y, max_rows: int | None) -> np.ndarray:
    """``x: [n, C, S, S]``, ``y: [n]`` -> ``[C, rows*(S+1), ways*(S+1)]``: column ``j`` holds
    the examples of label ``j``, top to bottom, gaps between images."""
    x, y = x.detach().float().cpu().numpy(), y.cpu().numpy()
    ways, (channels, size, _) = int(y.max()) + 1, x.shape[1:]
    columns = [x[y == label][:max_rows] for label in range(ways)]
    height = max(len(column) for column in columns)
    grid = np.full((channels, height * (size + 1), ways * (size + 1)), _GAP)
    for j, column in enumerate(columns):
        for i, image in enumerate(column):
            grid[:, i * (size + 1) : i * (size + 1) + size, j * (size + 1) : j * (size + 1) + size] = image
    return grid
