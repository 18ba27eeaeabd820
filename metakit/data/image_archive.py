"""Decoding a class-per-folder image collection, from a zip or a folder, into uint8 arrays.

Layout: ``root/<class>/<images>`` or one level more, ``root/<group>/<class>/<images>``
(Omniglot: ``alphabet/character``); every image lies at the same depth. A zip ``X.zip``
whose entries all lie under ``X/`` (what ``zip -r X.zip X`` makes) is read from ``X/``.
Files without an image suffix and hidden files are ignored.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from metakit.errors import MetakitError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class Preprocessing:
    """How each image is turned into an array: resized to ``image_size`` x ``image_size``
    (Lanczos, i.e. antialiased), with ``channels`` 1 (grayscale) or 3 (RGB), and
    ``invert`` (``255 - v``) for dark-on-light drawings so that ink becomes 1."""

    image_size: int = 28
    channels: int = 1
    invert: bool = False

    def __post_init__(self):
        if self.image_size < 1:
            raise MetakitError(f"image_size must be >= 1, got {self.image_size}")
        if self.channels not in (1, 3):
            raise MetakitError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")


@dataclass(frozen=True)
class ImageClasses:
    """A decoded collection, classes in sorted name order, images of a class contiguous.

    - ``images``: uint8 ``[images, C, S, S]``
    - ``counts``: int64 ``[classes]``, images per class
    - ``class_names``: ``"<class>"`` or ``"<group>/<class>"`` per class
    - ``content_hash``: sha256 over every image file's relative path and bytes: the same for
      any packing of the same files (so the official and a repacked zip agree)
    """

    images: np.ndarray
    counts: np.ndarray
    class_names: tuple[str, ...]
    content_hash: str

    @property
    def offsets(self) -> np.ndarray:
        """int64 ``[classes]``: index of each class's first image."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    @property
    def groups(self) -> tuple[str, ...]:
        """The distinct first levels of the class names (Omniglot: the alphabets)."""
        return tuple(sorted({name.split("/")[0] for name in self.class_names}))

    @staticmethod
    def concatenate(parts: list[ImageClasses]) -> ImageClasses:
        """The classes of all ``parts`` (their names must be distinct), re-sorted by name."""
        names = [name for part in parts for name in part.class_names]
        if len(set(names)) != len(names):
            raise MetakitError("the image collections share class names; give each class a unique folder")
        order = sorted(range(len(names)), key=names.__getitem__)
        images = [part.images[o : o + c] for part in parts for o, c in zip(part.offsets, part.counts)]
        counts = np.concatenate([part.counts for part in parts])
        combined = hashlib.sha256("".join(part.content_hash for part in parts).encode())
        return ImageClasses(
            images=np.concatenate([images[i] for i in order]),
            counts=counts[order],
            class_names=tuple(names[i] for i in order),
            content_hash=combined.hexdigest(),
        )


def source_signature(source: Path) -> str:
    """A digest that changes when the collection's files change, computed without decoding:
    a zip's bytes (sha256 runs at hundreds of MB/s), or a folder's image paths, sizes and
    modification times. Used as a cache key."""
    digest = hashlib.sha256()
    if source.is_file():
        try:
            with open(source, "rb") as stream:
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
        except OSError as error:
            raise MetakitError(
                f"cannot read {source} ({error.strerror or error}); make it readable"
            ) from error
        return digest.hexdigest()
    for file, path in _folder_files(source):
        stat = file.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def read_image_classes(source: Path, preprocessing: Preprocessing) -> ImageClasses:
    """Decode every image of ``source`` (a zip or a folder) with ``preprocessing``."""
    by_class: dict[str, list[tuple[PurePosixPath, Callable[[], bytes]]]] = {}
    depths = set()
    for path, read in _entries(source):
        depths.add(len(path.parts))
        by_class.setdefault(path.parent.as_posix(), []).append((path, read))
    if not by_class:
        raise MetakitError(
            f"no images found in {source}; expected <class>/<image> or <group>/<class>/<image>"
        )
    if len(depths) > 1 or not depths <= {2, 3}:
        raise MetakitError(
            f"{source}: images must all lie in <class>/ or all in <group>/<class>/ folders, "
            f"found them at depths {sorted(d - 1 for d in depths)}"
        )
    names = sorted(by_class)
    size, channels = preprocessing.image_size, preprocessing.channels
    images = np.empty((sum(len(by_class[n]) for n in names), channels, size, size), dtype=np.uint8)
    digest = hashlib.sha256()
    index = 0
    for name in names:
        for path, read in sorted(by_class[name], key=lambda item: item[0]):
            data = read()
            digest.update(f"{path}\0{len(data)}\0".encode())
            digest.update(data)
            images[index] = _decode(data, preprocessing, f"{source}: {path}")
            index += 1
    counts = np.array([len(by_class[n]) for n in names], dtype=np.int64)
    return ImageClasses(images, counts, tuple(names), digest.hexdigest())


def _decode(data: bytes, preprocessing: Preprocessing, where: str) -> np.ndarray:
    """One image file's bytes -> uint8 ``[C, S, S]``."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except _DECODE_ERRORS as error:
        raise MetakitError(f"{where} is not a readable image ({error}); replace or remove it") from error
    image = image.convert("L" if preprocessing.channels == 1 else "RGB")
    size = preprocessing.image_size
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.uint8).reshape(size, size, preprocessing.channels)
    if preprocessing.invert:
        pixels = 255 - pixels
    return pixels.transpose(2, 0, 1)


def _entries(source: Path) -> Iterator[tuple[PurePosixPath, Callable[[], bytes]]]:
    """Every image file of ``source`` as (path relative to the collection root, its reader)."""
    if source.is_file():
        yield from _zip_entries(source)
    else:
        for file, path in _folder_files(source):
            yield path, _reader(file)


def _is_image(path: PurePosixPath) -> bool:
    hidden = any(part.startswith((".", "__MACOSX")) for part in path.parts)
    return not hidden and path.suffix.lower() in IMAGE_SUFFIXES


def _folder_files(root: Path) -> Iterator[tuple[Path, PurePosixPath]]:
    """Every image file under the folder ``root``, with its path relative to ``root``."""
    if not root.is_dir():
        raise MetakitError(f"{root} does not exist; give a zip or a folder of class folders")
    try:
        files = sorted(p for p in root.rglob("*") if p.is_file())
    except PermissionError as error:
        raise MetakitError(f"cannot read {error.filename}; make the folder {root} readable") from error
    for file in files:
        path = PurePosixPath(file.relative_to(root).as_posix())
        if _is_image(path):
            yield file, path


def _reader(file: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return file.read_bytes()
        except OSError as error:
            raise MetakitError(f"cannot read {file} ({error}); make it readable") from error

    return read


def _zip_entries(archive: Path) -> Iterator[tuple[PurePosixPath, Callable[[], bytes]]]:
    try:
        opened = zipfile.ZipFile(archive)
    except _ZIP_ERRORS as error:
        raise MetakitError(
            f"{archive} is not a readable zip ({error}); it may be truncated: download or copy it again"
        ) from error
    infos = [info for info in opened.infolist() if not info.is_dir()]
    prefix = f"{archive.stem}/"
    strip = bool(infos) and all(info.filename.startswith(prefix) for info in infos)
    for info in sorted(infos, key=lambda i: i.filename):
        path = PurePosixPath(info.filename[len(prefix) :] if strip else info.filename)
        if _is_image(path):
            yield path, _member_reader(opened, info, archive)


def _member_reader(opened: zipfile.ZipFile, info: zipfile.ZipInfo, archive: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return opened.read(info)
        except _ZIP_ERRORS as error:
            raise MetakitError(
                f"{archive} is corrupt at {info.filename} ({error}); download or copy it again"
            ) from error

    return read
