"""Writing a file so that no half-written file ever appears under its final name."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from metakit.errors import MetakitError


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` to write to. If the block succeeds, the file
    is flushed to disk and renamed over ``final`` (and the rename made durable); otherwise it
    is removed. A reader, or a crash at any moment, sees the old file or the whole new one."""
    descriptor, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    os.fchmod(descriptor, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        with temporary.open("rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, final)
        _fsync_directory(final.parent)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a binary file that replaces ``path`` atomically when done. A
    failed write (a full disk, a read-only folder) is a MetakitError, and ``path`` is as it was."""
    try:
        with atomic_path(path) as temporary, temporary.open("wb") as file:
            write(file)
    except OSError as error:
        raise write_failure(path, error.strerror or str(error)) from error


def write_failure(path: Path, reason: str) -> MetakitError:
    return MetakitError(f"cannot write {path} ({reason}); free some space or fix the folder's permissions")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); Windows cannot open directories."""
    if os.name == "posix":
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
