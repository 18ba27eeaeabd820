"""N-way K-shot classification tasks from any class-per-folder image collection.

``create_sampler("image-folder", root=...)`` decodes (once, cached) ``root/<class>/<images>``
or ``root/<group>/<class>/<images>``, splits the classes by a seeded ratio or by files of
class names, and draws whole batches of tasks in a few tensor operations on the device
that holds the images. Omniglot is a preset of it (``omniglot.py``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metakit.data import locations
from metakit.data.dataset_cache import load_image_classes
from metakit.data.image_archive import ImageClasses, Preprocessing
from metakit.data.sampler import TaskSampler
from metakit.data.splits import split_by_ratios, split_from_files
from metakit.errors import MetakitError
from metakit.registry import register_sampler
from metakit.task_batch import TaskBatch

ROTATIONS = ("none", "per-task", "classes")


def check_choice(kind: str, value: str, choices: Sequence[str]) -> None:
    """A one-line error for a name that is not one of ``choices``."""
    if value not in choices:
        raise MetakitError(f"unknown {kind} '{value}'; choose one of: {', '.join(choices)}")


class ImageFolderSampler(TaskSampler):
    """Draws N-way (``ways``), K-shot (``shots``), Q-query (``queries``) tasks from ``classes``.

    Per task: ``ways`` classes without replacement, ``shots + queries`` images per class
    without replacement, label ``i`` for the ``i``-th drawn class (a uniformly random
    assignment of labels to classes). ``rotation``: ``none``; ``per-task``: each class of a
    task rotated by its own random multiple of 90 degrees, support and query alike (MAML);
    ``classes``: every rotation of a class is a class of its own, 4x the classes (Matching
    and Prototypical Networks).

    Tasks, with images as float32 in ``[0, 1]`` on ``device``:
    ``support_x: [tasks, ways*shots, C, S, S]``, ``support_y: [tasks, ways*shots]`` (int64,
    label-major: ``shots`` examples of label 0, then label 1, ...), ``query_x: [tasks,
    ways*queries, C, S, S]``, ``query_y: [tasks, ways*queries]``.
    """

    problem = "classification"

    def __init__(
        self,
        dataset: ImageClasses,
        classes: Sequence[str],
        ways: int,
        shots: int,
        queries: int,
        rotation: str = "none",
        device: torch.device | str = "cpu",
        description: dict[str, Any] | None = None,
    ):
        check_choice("rotation", rotation, ROTATIONS)
        self.class_names = tuple(sorted(classes))
        self.ways, self.shots, self.queries, self.rotation = ways, shots, queries, rotation
        self._copies = 4 if rotation == "classes" else 1
        self.num_classes = len(self.class_names) * self._copies
        index = {name: i for i, name in enumerate(dataset.class_names)}
        chosen = torch.tensor([index[name] for name in self.class_names], dtype=torch.long)
        counts, offsets = torch.from_numpy(dataset.counts)[chosen], torch.from_numpy(dataset.offsets)[chosen]
        self._check_task_shape(int(counts.min()) if len(chosen) else 0, description or {})
        # Only the split's images go to the device: rows of class c are offsets[c] + 0..counts[c]-1.
        rows = torch.cat([torch.arange(o, o + c) for o, c in zip(offsets.tolist(), counts.tolist())])
        self.images = torch.from_numpy(dataset.images)[rows].to(device)
        self.device = self.images.device
        self._counts = counts
        self._offsets = torch.cumsum(counts, 0) - counts
        self.input_shape = tuple(dataset.images.shape[1:])
        self.num_outputs = ways
        self._description = {**(description or {}), "rotation": rotation}
        self._data_hash = dataset.content_hash

    def _check_task_shape(self, fewest_images: int, description: dict[str, Any]) -> None:
        split = description.get("split", "the chosen")
        if min(self.ways, self.shots, self.queries) < 1:
            raise MetakitError(
                f"ways, shots and queries must be >= 1, got {self.ways}, {self.shots}, {self.queries}"
            )
        if self.ways > self.num_classes:
            raise MetakitError(
                f"ways={self.ways} is more than the {self.num_classes} classes of split '{split}'; "
                f"use ways <= {self.num_classes}"
            )
        if self.shots + self.queries > fewest_images:
            raise MetakitError(
                f"shots + queries = {self.shots} + {self.queries} is more than the {fewest_images} images "
                f"of the smallest class of split '{split}'; use shots + queries <= {fewest_images}"
            )

    def sample(self, num_tasks: int, generator: torch.Generator) -> TaskBatch:
        """``num_tasks`` tasks from ``generator`` (CPU) alone: indices are drawn on the CPU,
        images gathered, converted and rotated on ``device``."""
        classes = torch.rand(num_tasks, self.num_classes, generator=generator).argsort(dim=1)[:, : self.ways]
        base, rotation = classes // self._copies, classes % self._copies
        rows = self._offsets[base].unsqueeze(-1) + self._draw_images(self._counts[base], generator)
        if self.rotation == "per-task":
            rotation = torch.randint(4, (num_tasks, self.ways), generator=generator)
        rotation = rotation.to(self.device)
        labels = torch.arange(self.ways, device=self.device)
        return TaskBatch(
            support_x=self._images(rows[..., : self.shots], rotation),
            support_y=labels.repeat_interleave(self.shots).repeat(num_tasks, 1),
            query_x=self._images(rows[..., self.shots :], rotation),
            query_y=labels.repeat_interleave(self.queries).repeat(num_tasks, 1),
        )

    def _images(self, rows: Tensor, quarter_turns: Tensor) -> Tensor:
        """``rows: [tasks, ways, n]`` -> float images ``[tasks, ways*n, C, S, S]``, class
        ``[t, w]`` rotated by ``quarter_turns[t, w]`` x 90 degrees (counter-clockwise)."""
        x = self.images[rows.to(self.device)].float().div_(255)
        if self.rotation != "none":
            for turns in (1, 2, 3):
                chosen = quarter_turns == turns
                x[chosen] = torch.rot90(x[chosen], turns, dims=(-2, -1))
        return x.flatten(1, 2)

    def _draw_images(self, counts: Tensor, generator: torch.Generator) -> Tensor:
        """``counts: [tasks, ways]`` -> ``[tasks, ways, shots+queries]`` distinct positions in
        ``0..count-1``: the smallest of uniform keys, positions past a class's count keyed out."""
        positions = torch.arange(int(self._counts.max()))
        keys = torch.rand(*counts.shape, len(positions), generator=generator)
        keys.masked_fill_(positions >= counts.unsqueeze(-1), 2.0)
        return keys.argsort(dim=-1)[..., : self.shots + self.queries]

    def fingerprint(self) -> dict[str, Any]:
        names_hash = hashlib.sha256("\n".join(self.class_names).encode()).hexdigest()
        return {
            **self._description,
            "image_size": self.input_shape[-1],
            "channels": self.input_shape[0],
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
            "num_classes": self.num_classes,
            "classes_hash": names_hash,
            "data_hash": self._data_hash,
        }


@register_sampler("image-folder")
def image_folder(
    root: str | os.PathLike,
    ways: int = 5,
    shots: int = 1,
    queries: int = 1,
    split: str = "train",
    split_ratios: Sequence[float] = (0.7, 0.15, 0.15),
    split_files: dict[str, str | os.PathLike] | None = None,
    seed: int = 0,
    rotation: str = "none",
    image_size: int = 28,
    channels: int = 1,
    invert: bool = False,
    cache_dir: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
) -> ImageFolderSampler:
    """Tasks from the collection at ``root`` (a folder or a zip), split into ``train``,
    ``validation`` and ``test`` by ``split_ratios`` of the classes (seeded by ``seed``), or
    into the splits named by ``split_files`` (``{split: file of class names}``)."""
    check_choice("rotation", rotation, ROTATIONS)
    names = ("train", "validation", "test")
    if split_files is None:
        if len(split_ratios) != 3:
            raise MetakitError(f"split_ratios needs 3 numbers (train, validation, test), got {split_ratios}")
        check_choice("split", split, names)
    else:
        check_choice("split", split, list(split_files))
    preprocessing = Preprocessing(image_size, channels, invert)
    source = Path(root).expanduser()
    dataset = load_image_classes(source, preprocessing, locations.cache_dir(cache_dir))
    if split_files is None:
        splits = split_by_ratios(dataset.class_names, dict(zip(names, split_ratios)), seed)
        rule: dict[str, Any] = {"split_ratios": list(split_ratios), "seed": seed}
    else:
        splits = split_from_files(dataset.class_names, split_files)
        rule = {"split_files": sorted(split_files)}
    description = {"sampler": "image-folder", "root": source.name, "split": split, **rule}
    return ImageFolderSampler(dataset, splits[split], ways, shots, queries, rotation, device, description)
