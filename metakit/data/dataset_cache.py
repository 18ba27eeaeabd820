"""Decode once: decoded image collections cached as ``.npz`` files.

The cache key is the source's signature (see ``source_signature``) plus the preprocessing
parameters and the file format version, so a changed archive or a new image size never
reuses a stale file. Each file carries a sha256 of its arrays; a file that does not load or
does not match it is rebuilt, never trusted. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from metakit.atomic_file import atomic_path
from metakit.data.image_archive import ImageClasses, Preprocessing, read_image_classes, source_signature
from metakit.errors import MetakitError

CACHE_FORMAT = 1
_CORRUPT_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def load_image_classes(source: Path, preprocessing: Preprocessing, cache_folder: Path) -> ImageClasses:
    """The decoded ``source`` from ``cache_folder``, decoding (and caching) it when needed."""
    _make_folder(cache_folder)
    file = cache_file(source, preprocessing, cache_folder)
    if file.exists():
        cached = _read(file)
        if cached is not None:
            return cached
        warnings.warn(f"the cache file {file} is corrupt; decoding {source} again", stacklevel=2)
    classes = read_image_classes(source, preprocessing)
    _write(file, classes)
    return classes


def cache_file(source: Path, preprocessing: Preprocessing, cache_folder: Path) -> Path:
    """Where the decoded ``source`` is cached: ``<cache_folder>/<source name>-<key>.npz``."""
    key = json.dumps(
        {"format": CACHE_FORMAT, "source": source_signature(source), "preprocessing": asdict(preprocessing)},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return cache_folder / f"{source.stem}-{digest}.npz"


def _checksum(images: np.ndarray, counts: np.ndarray, class_names: tuple[str, ...], content_hash: str) -> str:
    digest = hashlib.sha256(images.tobytes())
    digest.update(counts.astype("<i8").tobytes())
    digest.update("\n".join((*class_names, content_hash)).encode())
    return digest.hexdigest()


def _read(file: Path) -> ImageClasses | None:
    """The cached collection, or None when the file is corrupt."""
    try:
        with np.load(file, allow_pickle=False) as stored:
            images, counts = stored["images"], stored["counts"]
            names = tuple(str(n) for n in stored["class_names"])
            content_hash, checksum = str(stored["content_hash"]), str(stored["checksum"])
    except PermissionError as error:
        raise _unwritable(file.parent, error) from error
    except _CORRUPT_ERRORS:
        return None
    if checksum != _checksum(images, counts, names, content_hash):
        return None
    return ImageClasses(images, counts, names, content_hash)


def _make_folder(folder: Path) -> None:
    """Fail before a long decode, not after it, when the cache folder is unusable."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _unwritable(folder, error) from error


def _unwritable(folder: Path, error: OSError) -> MetakitError:
    return MetakitError(
        f"cannot use the cache folder {folder} ({error.strerror or error}); "
        "pass cache_dir or set METAKIT_CACHE_DIR to a writable folder"
    )


def _write(file: Path, classes: ImageClasses) -> None:
    try:
        with atomic_path(file) as temporary, open(temporary, "wb") as out:
            np.savez(
                out,
                images=classes.images,
                counts=classes.counts,
                class_names=np.array(classes.class_names),
                content_hash=np.array(classes.content_hash),
                checksum=np.array(
                    _checksum(classes.images, classes.counts, classes.class_names, classes.content_hash)
                ),
            )
    except OSError as error:
        raise _unwritable(file.parent, error) from error
