import hashlib
import json
import zipfile

import numpy as np
import pytest
import torch
from data_synthetic import write_collection, write_omniglot, zip_folder

from metakit import create_sampler
from metakit.data import omniglot
from metakit.data.dataset_cache import load_image_classes
from metakit.data.image_archive import Preprocessing
from metakit.errors import MetakitError

SIZE = 8
OFFICIAL_MD5 = dict(omniglot.ARCHIVE_MD5)


@pytest.fixture
def mini(tmp_path, monkeypatch):
    """A miniature Omniglot (6 background, 4 evaluation characters of 5 drawings) that the
    preset accepts as complete, and a sampler factory for it."""
    monkeypatch.setattr(
        omniglot, "EXPECTED_CONTENT", {"images_background": (3, 6, 5), "images_evaluation": (2, 4, 5)}
    )
    monkeypatch.setattr(omniglot, "MAML_1200_SIZES", {"train": 6, "validation": 2, "test": 2})
    written = write_omniglot(tmp_path / "omniglot", SIZE)

    def make(**kwargs):
        kwargs = {
            "data_dir": tmp_path / "omniglot",
            "cache_dir": tmp_path / "cache",
            "image_size": SIZE,
            "ways": 2,
            "validation_classes": 2,
            **kwargs,
        }
        return create_sampler("omniglot", **kwargs)

    return make, written, tmp_path / "omniglot"


def _splits(make, **kwargs):
    return {split: set(make(split=split, **kwargs).class_names) for split in ("train", "validation", "test")}


def test_background_evaluation_split(mini):
    make, written, _ = mini
    splits = _splits(make, seed=1)
    background = {name for name in written if name.startswith("alphabet")}
    assert [len(s) for s in splits.values()] == [4, 2, 4]
    assert splits["train"] | splits["validation"] == background
    assert splits["train"].isdisjoint(splits["validation"])
    assert splits["test"] == set(written) - background
    assert len({frozenset(_splits(make, seed=seed)["validation"]) for seed in range(6)}) > 1
    assert make(split="train", validation_classes=0).num_classes == 6


def test_maml_1200_split(mini):
    make, written, _ = mini
    splits = _splits(make, convention="maml-1200", seed=2)
    assert [len(s) for s in splits.values()] == [6, 2, 2]
    assert set.union(*splits.values()) == set(written)
    assert sum(len(s) for s in splits.values()) == len(written)
    assert splits == _splits(make, convention="maml-1200", seed=2)


def test_ink_is_one_and_background_zero(mini):
    make, written, _ = mini
    sampler = make(split="test", ways=4, shots=4, queries=1)
    batch = sampler.sample(1, torch.Generator().manual_seed(0))
    images = torch.cat([batch.support_x[0, :, 0], batch.query_x[0, :, 0]]).mul(255).round().to(torch.uint8)
    evaluation = [
        pixels for name, drawings in written.items() if name.startswith("eval") for pixels in drawings
    ]
    assert sorted(images[:, 1, 1].tolist()) == sorted(255 - int(pixels[1, 1]) for pixels in evaluation)
    assert images[:, 0, 0].eq(0).all(), "the white (255) corner is background: 0"


def test_extracted_folders_and_environment_folder(mini, tmp_path, monkeypatch):
    make, written, folder = mini
    extracted = tmp_path / "extracted"
    for name in ("images_background", "images_evaluation"):
        with zipfile.ZipFile(folder / f"{name}.zip") as archive:
            archive.extractall(extracted)
    monkeypatch.setenv("METAKIT_DATA_DIR", str(extracted))
    sampler = make(data_dir=None, split="test")
    assert set(sampler.class_names) == {name for name in written if name.startswith("eval")}
    assert sampler.fingerprint()["data_hash"] == make(split="test").fingerprint()["data_hash"]


def test_fingerprint(mini):
    make, _, _ = mini
    fingerprint = json.loads(json.dumps(make(split="validation", seed=4, rotation="classes").fingerprint()))
    assert {
        k: fingerprint[k]
        for k in ("sampler", "convention", "split", "seed", "rotation", "validation_classes")
    } == {
        "sampler": "omniglot",
        "convention": "background-evaluation",
        "split": "validation",
        "seed": 4,
        "rotation": "classes",
        "validation_classes": 2,
    }
    assert (fingerprint["num_classes"], fingerprint["image_size"], fingerprint["ways"]) == (8, SIZE, 2)


def test_missing_archive_names_the_folder(mini, tmp_path):
    make, _, _ = mini
    with pytest.raises(MetakitError) as error:
        make(data_dir=tmp_path / "empty")
    assert str(error.value) == (
        "images_background.zip is missing: put images_background.zip and images_evaluation.zip "
        f"(github.com/brendenlake/omniglot, folder python/) into {tmp_path / 'empty'}, "
        "or allow downloading (--download; download=True in Python)"
    )


def test_download_fetches_verifies_and_places_the_zips(mini, tmp_path, monkeypatch):
    make, written, folder = mini
    md5 = {name: hashlib.md5((folder / f"{name}.zip").read_bytes()).hexdigest() for name in OFFICIAL_MD5}
    monkeypatch.setattr(omniglot, "ARCHIVE_MD5", md5)
    monkeypatch.setattr(omniglot, "ARCHIVE_URL", folder.as_uri() + "/{name}.zip")
    target = tmp_path / "fresh" / "omniglot"
    sampler = make(data_dir=target, download=True, split="test")
    assert sorted(p.name for p in target.iterdir()) == ["images_background.zip", "images_evaluation.zip"]
    assert set(sampler.class_names) == {name for name in written if name.startswith("eval")}


def test_download_with_a_wrong_md5_leaves_nothing(mini, tmp_path, monkeypatch):
    make, _, folder = mini
    monkeypatch.setattr(omniglot, "ARCHIVE_URL", folder.as_uri() + "/{name}.zip")
    target = tmp_path / "fresh"
    with pytest.raises(MetakitError) as error:
        make(data_dir=target, download=True)
    assert f"expected {OFFICIAL_MD5['images_background']}; put images_background.zip" in str(error.value)
    assert str(error.value).endswith(f"into {target}") and list(target.iterdir()) == []


def test_offline_download_is_a_one_line_error_naming_the_folder(mini, tmp_path, monkeypatch):
    make, _, _ = mini
    monkeypatch.setattr(omniglot, "ARCHIVE_URL", "http://127.0.0.1:9/{name}.zip")  # nothing listens on port 9
    target = tmp_path / "offline"
    with pytest.raises(MetakitError) as error:
        make(data_dir=target, download=True)
    message = str(error.value)
    assert message.startswith("could not download http://127.0.0.1:9/images_background.zip (")
    assert message.endswith(f"folder python/) into {target}") and "\n" not in message
    assert list(target.iterdir()) == []


def test_an_archive_with_the_wrong_content_is_rejected(mini, tmp_path):
    make, _, folder = mini
    write_collection(tmp_path / "short", groups=3, classes=2, drawings=4, size=SIZE)
    zip_folder(tmp_path / "short", folder / "images_background.zip")
    with pytest.raises(MetakitError) as error:
        make()
    assert str(error.value) == (
        f"{folder / 'images_background.zip'} holds 3 alphabets, 6 characters and [4] drawings per character, "
        "expected 3, 6 and 5: it is truncated or not Omniglot's images_background; download or copy it again"
    )


def test_swapped_archives_are_named_as_swapped(mini):
    make, _, folder = mini
    background, evaluation = folder / "images_background.zip", folder / "images_evaluation.zip"
    background.rename(folder / "held")
    evaluation.rename(background)
    (folder / "held").rename(evaluation)
    with pytest.raises(MetakitError) as error:
        make()
    assert str(error.value) == (
        f"{background} holds the folder images_evaluation/, not images_background/: "
        "the two zips are swapped; swap their names back"
    )


def test_a_truncated_archive_is_rejected(mini):
    make, _, folder = mini
    archive = folder / "images_evaluation.zip"
    archive.write_bytes(archive.read_bytes()[:-100])
    with pytest.raises(
        MetakitError, match=r"images_evaluation.zip is not a readable zip \(.*\); it may be truncated"
    ):
        make()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "val"}, "unknown split 'val'; choose one of: train, validation, test"),
        (
            {"convention": "vinyals"},
            "unknown convention 'vinyals'; choose one of: background-evaluation, maml-1200",
        ),
        ({"rotation": "90"}, "unknown rotation '90'; choose one of: none, per-task, classes"),
        ({"validation_classes": 6}, "validation_classes must be in 0..5, got 6"),
        (
            {"validation_classes": 0, "split": "validation"},
            "with validation_classes=0 the background-evaluation convention has no validation split; "
            "set validation_classes > 0 or use split 'train' or 'test'",
        ),
        ({"ways": 5, "split": "test"}, "ways=5 is more than the 4 classes of split 'test'; use ways <= 4"),
        (
            {"shots": 3, "queries": 3},
            "shots + queries = 3 + 3 is more than the 5 images of the smallest class of split 'train'; "
            "use shots + queries <= 5",
        ),
    ],
)
def test_bad_options_are_one_line_errors(mini, kwargs, message):
    make, _, _ = mini
    with pytest.raises(MetakitError) as error:
        make(**kwargs)
    assert str(error.value) == message


# Real data: ../shared/data/omniglot (CI sets METAKIT_REQUIRE_DATA=1 so these cannot skip there).


@pytest.fixture(scope="module")
def real(omniglot_dir, omniglot_cache_dir):
    def make(**kwargs):
        return create_sampler("omniglot", data_dir=omniglot_dir, cache_dir=omniglot_cache_dir, **kwargs)

    preprocessing = Preprocessing(28, channels=1, invert=True)
    parts = {
        name: load_image_classes(omniglot_dir / f"{name}.zip", preprocessing, omniglot_cache_dir)
        for name in ("images_background", "images_evaluation")
    }
    return make, parts


def test_real_archives_hold_964_and_659_characters(real):
    _, parts = real
    background, evaluation = parts["images_background"], parts["images_evaluation"]
    assert (len(background.groups), len(background.class_names)) == (30, 964)
    assert (len(evaluation.groups), len(evaluation.class_names)) == (20, 659)
    assert set(background.counts.tolist()) == set(evaluation.counts.tolist()) == {20}
    assert background.images.shape == (19280, 1, 28, 28) and evaluation.images.shape == (13180, 1, 28, 28)
    ink = background.images.astype(np.float64).mean() / 255
    assert 0.03 < ink < 0.3, "thin strokes: ink (1) is the minority after inversion"


@pytest.mark.parametrize(
    "convention, kwargs, sizes",
    [
        ("background-evaluation", {}, (864, 100, 659)),
        ("background-evaluation", {"validation_classes": 0}, (964, 0, 659)),
        ("maml-1200", {}, (1100, 100, 423)),
    ],
)
def test_real_split_sizes_disjointness_and_seeding(real, convention, kwargs, sizes):
    make, parts = real
    splits = {}
    for split, size in zip(("train", "validation", "test"), sizes):
        if size:
            splits[split] = set(make(split=split, convention=convention, seed=0, **kwargs).class_names)
    assert tuple(len(splits.get(s, ())) for s in ("train", "validation", "test")) == sizes
    names = list(splits.values())
    assert all(a.isdisjoint(b) for i, a in enumerate(names) for b in names[i + 1 :])
    everything = set(parts["images_background"].class_names) | set(parts["images_evaluation"].class_names)
    assert set.union(*names) <= everything
    train_again = make(split="train", convention=convention, seed=0, **kwargs)
    assert set(train_again.class_names) == splits["train"], "same name and seed, same split"


def test_real_seed_chooses_the_split(real):
    make, _ = real
    assert set(make(split="validation", seed=0).class_names) != set(
        make(split="validation", seed=1).class_names
    )
    maml = [set(make(split="test", convention="maml-1200", seed=s).class_names) for s in (0, 1)]
    assert maml[0] != maml[1]


def _lookup(parts):
    """Image bytes -> class names holding that exact image."""
    table = {}
    for part in parts.values():
        for name, offset, count in zip(part.class_names, part.offsets, part.counts):
            for pixels in part.images[offset : offset + count, 0]:
                table.setdefault(pixels.tobytes(), set()).add(name)
    return table


def _candidates(x, table):
    """``x: [n, 1, 28, 28]`` -> per image, the (class, quarter turns) it can be."""
    found = []
    for pixels in (x[:, 0] * 255).round().to(torch.uint8):
        options = set()
        for turns in range(4):
            original = torch.rot90(pixels, -turns, dims=(0, 1)).contiguous().numpy().tobytes()
            options |= {(name, turns) for name in table.get(original, ())}
        assert options, "every sampled image is a dataset image, possibly rotated"
        found.append(options)
    return found


@pytest.mark.parametrize("rotation", ["none", "per-task"])
def test_real_queries_belong_to_the_class_their_label_denotes(real, rotation):
    make, parts = real
    table = _lookup(parts)
    sampler = make(split="train", ways=5, shots=1, queries=3, rotation=rotation)
    batch = sampler.sample(20, torch.Generator().manual_seed(11))
    again = make(split="train", ways=5, shots=1, queries=3, rotation=rotation).sample(
        20, torch.Generator().manual_seed(11)
    )
    assert all(torch.equal(a, b) for a, b in zip(batch.tensors(), again.tensors()))
    turns_seen = set()
    for t in range(batch.num_tasks):
        support = _candidates(batch.support_x[t], table)
        query = _candidates(batch.query_x[t], table)
        classes: list[str] = []
        for label in range(5):
            members = [c for c, y in zip(support, batch.support_y[t].tolist()) if y == label]
            members += [c for c, y in zip(query, batch.query_y[t].tolist()) if y == label]
            common = set.intersection(*members)
            assert common, f"task {t} label {label}: support and queries are one class, turned alike"
            if rotation == "none":
                assert 0 in {k for _, k in common}
            turns_seen |= {k for _, k in common}
            classes += {name for name, _ in common}
        assert len(classes) == 5 and set(classes) <= set(sampler.class_names), "five different characters"
    if rotation == "per-task":
        assert turns_seen == {0, 1, 2, 3}
