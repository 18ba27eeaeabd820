"""Downloading a file with a progress bar, an md5 check and an atomic write."""

from __future__ import annotations

import hashlib
import sys
import urllib.error
import urllib.request
from pathlib import Path

from metakit.atomic_file import atomic_path
from metakit.errors import MetakitError

TIMEOUT_S = 60.0  # for the connection and for each read


def download(url: str, target: Path, md5: str, manual_hint: str) -> None:
    """Fetch ``url`` into ``target`` if its md5 is ``md5``. Nothing is left under ``target``
    unless the whole, verified file is; any failure is a MetakitError ending with
    ``manual_hint`` (how to put the file there by hand)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with (
            urllib.request.urlopen(url, timeout=TIMEOUT_S) as response,
            atomic_path(target) as temporary,
            open(temporary, "wb") as out,
        ):
            digest = hashlib.md5(usedforsecurity=False)
            progress = _ProgressBar(target.name, int(response.headers.get("Content-Length") or 0))
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                progress.advance(len(chunk))
            progress.close()
            if digest.hexdigest() != md5:
                raise MetakitError(
                    f"the download of {url} has md5 {digest.hexdigest()}, expected {md5}; {manual_hint}"
                )
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise MetakitError(f"could not download {url} ({reason}); {manual_hint}") from error


class _ProgressBar:
    """``downloading name [###   ]  42% of 9.5 MB`` redrawn in place on stderr (megabytes so far
    when the server does not say the size)."""

    def __init__(self, name: str, total: int):
        self.name, self.total, self.done, self.shown = name, total, 0, -1

    def advance(self, amount: int) -> None:
        self.done += amount
        mark = 100 * self.done // self.total if self.total else self.done >> 20
        if mark == self.shown:
            return
        self.shown = mark
        if self.total:
            text = f"[{'#' * (mark // 4):<25}] {mark:3d}% of {self.total / 1e6:.1f} MB"
        else:
            text = f"{self.done / 1e6:.1f} MB"
        sys.stderr.write(f"\rdownloading {self.name} {text}")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
