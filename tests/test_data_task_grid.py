import numpy as np
import pytest
import torch
from PIL import Image

from metakit import TaskBatch, create_sampler, save_task_grid
from metakit.errors import MetakitError

S = 4


def _batch() -> TaskBatch:
    """2 tasks, 3 ways, 1 shot, 2 queries; example values identify (task, set, index); labels shuffled."""
    values = torch.arange(2 * 9, dtype=torch.float32).reshape(2, 9) / 20
    images = values[..., None, None, None].expand(2, 9, 1, S, S).clone()
    support_y = torch.tensor([[2, 0, 1], [1, 2, 0]])
    query_y = torch.tensor([[0, 1, 2, 0, 1, 2], [2, 2, 1, 1, 0, 0]])
    return TaskBatch(images[:, :3], support_y, images[:, 3:], query_y)


def test_columns_hold_one_label_support_above_queries(tmp_path):
    batch = _batch()
    path = save_task_grid(batch, tmp_path / "grid.png", scale=1)
    pixels = np.asarray(Image.open(path)).astype(np.float64) / 255
    block = S + 1 + 3 + 2 * (S + 1)  # support row, bar, two query rows
    assert pixels.shape == (2 * block + 8, 3 * (S + 1))
    for t in range(2):
        top = t * (block + 8)
        for label in range(3):
            left = label * (S + 1)
            support = batch.support_x[t][batch.support_y[t] == label]
            query = batch.query_x[t][batch.query_y[t] == label]
            cells = [pixels[top : top + S, left : left + S]]
            cells += [pixels[top + S + 4 + r * (S + 1) :][:S, left : left + S] for r in range(2)]
            for cell, expected in zip(cells, [*support, *query]):
                np.testing.assert_allclose(cell, expected[0].numpy(), atol=0.5 / 255)


def test_scale_and_limits(tmp_path):
    path = save_task_grid(_batch(), tmp_path / "sub" / "grid.png", max_tasks=1, max_query_rows=1, scale=3)
    assert Image.open(path).size == (3 * 3 * (S + 1), 3 * (S + 1 + 3 + S + 1))


def test_non_image_tasks_and_unwritable_paths_are_errors(tmp_path):
    sinusoid = create_sampler("sinusoid").sample(2, torch.Generator().manual_seed(0))
    with pytest.raises(MetakitError, match=r"^save_task_grid draws image classification tasks"):
        save_task_grid(sinusoid, tmp_path / "grid.png")
    (tmp_path / "file").write_text("x")
    with pytest.raises(MetakitError, match=r"^cannot write .*grid.png \(.*\); choose a writable path$"):
        save_task_grid(_batch(), tmp_path / "file" / "grid.png")
