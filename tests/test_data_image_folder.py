import json
from collections import Counter

import pytest
import torch
from data_synthetic import image, write_collection

from metakit import create_sampler
from metakit.errors import MetakitError

SIZE = 8


@pytest.fixture
def collection(tmp_path):
    """10 classes in 2 groups, 6 drawings each; the image of code c is data_synthetic.image(c)."""
    written = write_collection(tmp_path / "data", groups=2, classes=5, drawings=6, size=SIZE)
    codes = {}
    for name, images in written.items():
        for drawing, pixels in enumerate(images):
            codes[int(pixels[1, 1])] = (name, drawing)
    return tmp_path / "data", codes


def _sampler(collection, tmp_path, **kwargs):
    kwargs = {
        "ways": 3,
        "shots": 2,
        "queries": 2,
        "image_size": SIZE,
        "cache_dir": tmp_path / "cache",
        **kwargs,
    }
    return create_sampler("image-folder", root=collection[0], **kwargs)


def _identify(x, codes):
    """``x: [n, 1, S, S]`` -> [(class name, drawing, quarter turns)] by exact comparison with the
    written images and their rotations."""
    found = []
    for pixels in (x[:, 0] * 255).round().to(torch.uint8):
        code = int(pixels[pixels != 255][0])
        reference = torch.from_numpy(image(code, SIZE))
        turns = [k for k in range(4) if torch.equal(torch.rot90(reference, k, dims=(0, 1)), pixels)]
        assert len(turns) == 1, "every sampled image is exactly one written image, rotated"
        found.append((*codes[code], turns[0]))
    return found


def _tasks(batch, codes):
    """Per task: {label: [(class, drawing, turns), ...]} over support and query together."""
    tasks = []
    for t in range(batch.num_tasks):
        by_label = {}
        for x, y in ((batch.support_x[t], batch.support_y[t]), (batch.query_x[t], batch.query_y[t])):
            for label, item in zip(y.tolist(), _identify(x, codes)):
                by_label.setdefault(label, []).append(item)
        tasks.append(by_label)
    return tasks


def test_batch_shapes_types_and_labels(collection, tmp_path):
    sampler = _sampler(collection, tmp_path, ways=3, shots=2, queries=4)
    assert (sampler.input_shape, sampler.num_outputs, sampler.problem) == (
        (1, SIZE, SIZE),
        3,
        "classification",
    )
    batch = sampler.sample(5, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (5, 6, 1, SIZE, SIZE) and batch.query_x.shape == (5, 12, 1, SIZE, SIZE)
    assert batch.support_x.dtype == torch.float32 and batch.support_y.dtype == torch.int64
    assert 0 <= batch.support_x.min() and batch.support_x.max() == 1
    assert batch.support_y.tolist() == [[0, 0, 1, 1, 2, 2]] * 5
    assert batch.query_y.tolist() == [[0] * 4 + [1] * 4 + [2] * 4] * 5


def test_every_label_is_one_class_with_distinct_drawings(collection, tmp_path):
    sampler = _sampler(collection, tmp_path, ways=4, shots=2, queries=3)
    batch = sampler.sample(40, torch.Generator().manual_seed(1))
    for task in _tasks(batch, collection[1]):
        classes = set()
        for items in task.values():
            assert len({name for name, _, _ in items}) == 1, "support and query of a label share one class"
            assert len({drawing for _, drawing, _ in items}) == 5, "drawings without replacement"
            assert {turns for _, _, turns in items} == {0}
            classes.add(items[0][0])
        assert len(classes) == 4, "classes without replacement"
        assert classes <= set(sampler.class_names)


def test_labels_are_permuted_and_all_classes_and_drawings_are_drawn(collection, tmp_path):
    sampler = _sampler(collection, tmp_path, ways=3, shots=1, queries=1, split_ratios=(1.0, 0.0, 0.0))
    tasks = _tasks(sampler.sample(300, torch.Generator().manual_seed(2)), collection[1])
    labels_of = {}
    drawings = Counter()
    for task in tasks:
        for label, items in task.items():
            labels_of.setdefault(items[0][0], set()).add(label)
            drawings.update((name, drawing) for name, drawing, _ in items)
    assert set(labels_of) == set(sampler.class_names) and len(labels_of) == 10
    assert all(labels == {0, 1, 2} for labels in labels_of.values())
    assert len(drawings) == 60


def test_same_seed_same_tasks_other_seed_other_tasks(collection, tmp_path):
    first = _sampler(collection, tmp_path).sample(8, torch.Generator().manual_seed(3))
    again = _sampler(collection, tmp_path).sample(8, torch.Generator().manual_seed(3))
    other = _sampler(collection, tmp_path).sample(8, torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(first.tensors(), again.tensors()))
    assert not torch.equal(first.support_x, other.support_x)
    fixed = [list(_sampler(collection, tmp_path).fixed_tasks(7, seed=5, batch_size=3)) for _ in range(2)]
    assert all(torch.equal(a.query_x, b.query_x) for a, b in zip(*fixed))


def test_per_task_rotation_turns_whole_classes(collection, tmp_path):
    sampler = _sampler(collection, tmp_path, rotation="per-task", ways=3, shots=2, queries=2)
    seen = Counter()
    for task in _tasks(sampler.sample(60, torch.Generator().manual_seed(6)), collection[1]):
        for items in task.values():
            turns = {k for _, _, k in items}
            assert len(turns) == 1, "support and query of a class share its rotation"
            seen.update(turns)
    assert set(seen) == {0, 1, 2, 3}


def test_rotated_copies_are_classes_of_their_own(collection, tmp_path):
    plain = _sampler(collection, tmp_path)
    sampler = _sampler(collection, tmp_path, rotation="classes", ways=5, shots=1, queries=1)
    assert sampler.num_classes == 4 * plain.num_classes
    pairs = Counter()
    for task in _tasks(sampler.sample(200, torch.Generator().manual_seed(7)), collection[1]):
        classes = [{(name, k) for name, _, k in items} for items in task.values()]
        assert all(len(c) == 1 for c in classes)
        assert len(set.union(*classes)) == 5, "rotated classes without replacement"
        pairs.update(c.pop() for c in classes)
    assert len(pairs) == sampler.num_classes


def test_ratio_splits_are_disjoint_and_seeded(collection, tmp_path):
    splits = {
        s: set(_sampler(collection, tmp_path, split=s, ways=1).class_names)
        for s in ("train", "validation", "test")
    }
    assert [len(s) for s in splits.values()] == [6, 2, 2]
    assert set.union(*splits.values()) == set(collection[1][c][0] for c in collection[1])
    assert splits["train"].isdisjoint(splits["validation"] | splits["test"])
    by_seed = {
        frozenset(_sampler(collection, tmp_path, split="test", ways=1, seed=seed).class_names)
        for seed in range(5)
    }
    assert len(by_seed) > 1, "the seed chooses the split"


def test_split_files(collection, tmp_path):
    (tmp_path / "mine.txt").write_text("group01/class00\ngroup00/class03\n")
    sampler = _sampler(
        collection, tmp_path, split="mine", split_files={"mine": tmp_path / "mine.txt"}, ways=2
    )
    assert sampler.class_names == ("group00/class03", "group01/class00")
    assert sampler.fingerprint()["split_files"] == ["mine"]


def test_rgb_collections(tmp_path):
    write_collection(tmp_path / "rgb", groups=0, classes=3, drawings=3, size=SIZE, rgb=True)
    sampler = create_sampler(
        "image-folder",
        root=tmp_path / "rgb",
        channels=3,
        image_size=SIZE,
        cache_dir=tmp_path / "cache",
        ways=2,
        split_ratios=(1.0, 0.0, 0.0),
    )
    batch = sampler.sample(2, torch.Generator().manual_seed(0))
    assert sampler.input_shape == (3, SIZE, SIZE) and batch.support_x.shape == (2, 2, 3, SIZE, SIZE)
    red, green = batch.support_x[:, :, 0, 1, 1], batch.support_x[:, :, 1, 1, 1]
    assert torch.allclose(green, torch.floor(red * 255 / 2) / 255)


def test_classes_of_different_sizes_never_draw_missing_images(collection, tmp_path):
    root, codes = collection
    for drawing in range(2, 6):
        (root / "group00" / "class00" / f"{drawing:02d}.png").unlink()
    sampler = _sampler(collection, tmp_path, ways=10, shots=1, queries=1, split_ratios=(1.0, 0.0, 0.0))
    for task in _tasks(sampler.sample(30, torch.Generator().manual_seed(8)), codes):
        for items in task.values():
            if items[0][0] == "group00/class00":
                assert {drawing for _, drawing, _ in items} == {0, 1}
    with pytest.raises(MetakitError, match="^shots \\+ queries = 1 \\+ 2 is more than the 2 images"):
        _sampler(collection, tmp_path, ways=2, shots=1, queries=2, split_ratios=(1.0, 0.0, 0.0))


def test_fingerprint_names_what_was_drawn(collection, tmp_path):
    sampler = _sampler(collection, tmp_path, rotation="per-task", seed=3)
    fingerprint = json.loads(json.dumps(sampler.fingerprint()))
    assert fingerprint == {
        **fingerprint,
        "sampler": "image-folder",
        "root": "data",
        "split": "train",
        "seed": 3,
        "split_ratios": [0.7, 0.15, 0.15],
        "rotation": "per-task",
        "image_size": SIZE,
        "channels": 1,
        "ways": 3,
        "shots": 2,
        "queries": 2,
        "num_classes": 6,
    }
    assert len(fingerprint["data_hash"]) == 64 and len(fingerprint["classes_hash"]) == 64
    assert (
        _sampler(collection, tmp_path, split="test", ways=1).fingerprint()["classes_hash"]
        != fingerprint["classes_hash"]
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ways": 7}, "ways=7 is more than the 6 classes of split 'train'; use ways <= 6"),
        (
            {"shots": 4, "queries": 3},
            "shots + queries = 4 + 3 is more than the 6 images of the smallest class of split 'train'; "
            "use shots + queries <= 6",
        ),
        ({"shots": 0}, "ways, shots and queries must be >= 1, got 3, 0, 2"),
        ({"split": "valid"}, "unknown split 'valid'; choose one of: train, validation, test"),
        ({"rotation": "random"}, "unknown rotation 'random'; choose one of: none, per-task, classes"),
        (
            {"split_ratios": (0.5, 0.5)},
            "split_ratios needs 3 numbers (train, validation, test), got (0.5, 0.5)",
        ),
    ],
)
def test_bad_task_shapes_and_names_are_one_line_errors(collection, tmp_path, kwargs, message):
    with pytest.raises(MetakitError) as error:
        _sampler(collection, tmp_path, **kwargs)
    assert str(error.value) == message
