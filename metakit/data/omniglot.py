"""Omniglot (Lake et al. 2015) as a preset of the image-folder sampler.

1623 handwritten characters of 50 alphabets, 20 drawings each, from the two official
archives ``images_background.zip`` (30 alphabets, 964 characters) and
``images_evaluation.zip`` (20 alphabets, 659 characters), or their extracted folders.
Drawings are black on white; they are inverted so that ink is 1 and background 0.

Split conventions (class names are ``"<alphabet>/<characterNN>"``):

- ``background-evaluation``: train on background, test on evaluation; ``validation_classes``
  background characters (seeded choice) are held out of train as the validation split.
- ``maml-1200``: all 1623 characters in seeded random order: 1100 train, 100 validation,
  423 test (the MAML paper's convention).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch

from metakit.data import locations
from metakit.data.dataset_cache import load_image_classes
from metakit.data.download import download as download_file
from metakit.data.image_archive import ImageClasses, Preprocessing
from metakit.data.image_folder import ROTATIONS, ImageFolderSampler, check_choice
from metakit.data.splits import split_by_counts
from metakit.errors import MetakitError
from metakit.registry import register_sampler

ARCHIVE_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
ARCHIVE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/{name}.zip"
# (alphabets, characters, drawings per character) that a complete archive decodes to.
EXPECTED_CONTENT = {"images_background": (30, 964, 20), "images_evaluation": (20, 659, 20)}
MAML_1200_SIZES = {"train": 1100, "validation": 100, "test": 423}
CONVENTIONS = ("background-evaluation", "maml-1200")
SPLITS = ("train", "validation", "test")


@register_sampler("omniglot")
def omniglot(
    ways: int = 5,
    shots: int = 1,
    queries: int = 1,
    split: str = "train",
    convention: str = "background-evaluation",
    rotation: str = "none",
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    image_size: int = 28,
    download: bool = False,
    device: torch.device | str = "cpu",
    validation_classes: int = 100,
) -> ImageFolderSampler:
    """N-way K-shot Omniglot tasks of ``split`` under ``convention`` (seeded by ``seed``), from
    the archives in ``data_dir`` (see ``locations.data_dir``), downloaded there if missing and
    ``download``; decoded once at ``image_size`` into ``cache_dir``."""
    check_choice("split", split, SPLITS)
    check_choice("convention", convention, CONVENTIONS)
    check_choice("rotation", rotation, ROTATIONS)
    description = {"sampler": "omniglot", "convention": convention, "split": split, "seed": seed}
    if convention == "background-evaluation":
        _check_validation_classes(validation_classes, split)
        description["validation_classes"] = validation_classes
    folder = locations.data_dir(data_dir, "omniglot")
    preprocessing = Preprocessing(image_size, channels=1, invert=True)
    cache = locations.cache_dir(cache_dir)
    parts = []
    for name, archive in find_archives(folder, download).items():
        try:
            part = load_image_classes(archive, preprocessing, cache)
            _check_content(part, name, archive)
        except MetakitError:
            _check_not_swapped(archive, name)  # the likelier cause, named, when it is that
            raise
        parts.append(part)
    background, evaluation = (part.class_names for part in parts)
    classes = omniglot_splits(background, evaluation, convention, seed, validation_classes)[split]
    dataset = ImageClasses.concatenate(parts)
    return ImageFolderSampler(dataset, classes, ways, shots, queries, rotation, device, description)


def omniglot_splits(
    background: tuple[str, ...],
    evaluation: tuple[str, ...],
    convention: str,
    seed: int,
    validation_classes: int,
) -> dict[str, list[str]]:
    """The class names of ``train``, ``validation`` and ``test`` under ``convention``."""
    if convention == "maml-1200":
        return split_by_counts([*background, *evaluation], MAML_1200_SIZES, seed)
    held_out = {"validation": validation_classes, "train": len(background) - validation_classes}
    return {**split_by_counts(background, held_out, seed), "test": sorted(evaluation)}


def find_archives(folder: Path, download: bool) -> dict[str, Path]:
    """Each archive's zip (or extracted folder) in ``folder``, downloading missing zips when
    ``download``; otherwise a one-line error saying where to put them."""
    manual = (
        f"put images_background.zip and images_evaluation.zip (github.com/brendenlake/omniglot, "
        f"folder python/) into {folder}"
    )
    archives = {}
    for name, md5 in ARCHIVE_MD5.items():
        zipped = folder / f"{name}.zip"
        if not zipped.is_file() and (folder / name).is_dir():
            archives[name] = folder / name
            continue
        if not zipped.is_file():
            if not download:
                raise MetakitError(
                    f"{zipped.name} is missing: {manual}, "
                    "or allow downloading (--download; download=True in Python)"
                )
            download_file(ARCHIVE_URL.format(name=name), zipped, md5, manual_hint=manual)
        archives[name] = zipped
    return archives


def _check_validation_classes(validation_classes: int, split: str) -> None:
    background_characters = EXPECTED_CONTENT["images_background"][1]
    if not 0 <= validation_classes < background_characters:
        raise MetakitError(
            f"validation_classes must be in 0..{background_characters - 1}, got {validation_classes}"
        )
    if validation_classes == 0 and split == "validation":
        raise MetakitError(
            "with validation_classes=0 the background-evaluation convention has no validation split; "
            "set validation_classes > 0 or use split 'train' or 'test'"
        )


def _check_not_swapped(archive: Path, name: str) -> None:
    """Refuse a zip that holds the other archive (the pair swapped or renamed)."""
    if not archive.is_file():
        return
    try:
        with zipfile.ZipFile(archive) as opened:
            tops = {member.split("/", 1)[0] for member in opened.namelist()}
    except (zipfile.BadZipFile, OSError):
        return  # the error being handled names it
    other = next(other for other in ARCHIVE_MD5 if other != name)
    if tops == {other}:
        raise MetakitError(
            f"{archive} holds the folder {other}/, not {name}/: "
            "the two zips are swapped; swap their names back"
        )


def _check_content(part: ImageClasses, name: str, archive: Path) -> None:
    """Content, not bytes: the official zips and faithful repacks decode to the same counts."""
    found = (len(part.groups), len(part.class_names), sorted(set(part.counts.tolist())))
    alphabets, characters, drawings = EXPECTED_CONTENT[name]
    if found != (alphabets, characters, [drawings]):
        raise MetakitError(
            f"{archive} holds {found[0]} alphabets, {found[1]} characters and {found[2]} drawings per "
            f"character, expected {alphabets}, {characters} and {drawings}: it is truncated or not "
            f"Omniglot's {name}; download or copy it again"
        )
