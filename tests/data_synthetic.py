"""Tiny synthetic image collections for the data tests, written as PNG files.

Every image is ``size x size``, filled with a value unique to its (class, drawing) (its
"code", so a sampled image tells which class and drawing it is) with a 255 marker in the
top-left corner (so it also tells how it was rotated).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def image(code: int, size: int, rgb: bool = False) -> np.ndarray:
    pixels = np.full((size, size), code, dtype=np.uint8)
    pixels[0, 0] = 255
    return np.stack([pixels, pixels // 2, 255 - pixels], axis=-1) if rgb else pixels


def write_collection(
    root: Path,
    groups: int,
    classes: int,
    drawings: int,
    size: int = 8,
    rgb: bool = False,
    first_code: int = 1,
    prefix: str = "group",
) -> dict[str, list[np.ndarray]]:
    """``root/<prefix>NN/classNN/NN.png`` (``groups=0``: ``root/classNN/NN.png``), ``classes``
    per group; returns each class name's images in drawing order."""
    written, code = {}, first_code
    folders = [f"{prefix}{g:02d}/" for g in range(groups)] if groups else [""]
    for folder in folders:
        for c in range(classes):
            name = f"{folder}class{c:02d}"
            (root / name).mkdir(parents=True)
            written[name] = []
            for d in range(drawings):
                pixels = image(code, size, rgb)
                Image.fromarray(pixels).save(root / name / f"{d:02d}.png")
                written[name].append(pixels)
                code += 1
    assert code < 255, "codes must stay below the 255 marker"
    return written


def zip_folder(folder: Path, archive: Path) -> Path:
    """``archive`` holding ``folder``'s files under ``<archive stem>/``, as ``zip -r`` does."""
    with zipfile.ZipFile(archive, "w") as out:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                out.write(file, f"{archive.stem}/{file.relative_to(folder).as_posix()}")
    return archive


def write_omniglot(folder: Path, size: int = 8) -> dict[str, list[np.ndarray]]:
    """A miniature Omniglot in ``folder``: ``images_background.zip`` (3 alphabets x 2
    characters) and ``images_evaluation.zip`` (2 x 2), 5 drawings each, black ink on white."""
    staging = folder.parent / f"{folder.name}-staging"
    background = write_collection(staging / "images_background", 3, 2, 5, size, prefix="alphabet")
    evaluation = write_collection(staging / "images_evaluation", 2, 2, 5, size, first_code=100, prefix="eval")
    folder.mkdir(exist_ok=True)
    for name in ("images_background", "images_evaluation"):
        zip_folder(staging / name, folder / f"{name}.zip")
    return {**background, **evaluation}
