"""Writing a file so that no half-written file ever appears under its final name."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; it is renamed to ``final`` only if the block
    succeeds, and removed otherwise. The rename is atomic on one file system, so a reader (or
    a crash) sees either no file or the whole file."""
    temporary = final.with_name(f".{final.name}.{os.getpid()}.part")
    try:
        yield temporary
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
