"""Where datasets are read from and where their decoded caches are written.

- data folder: an explicit argument, else ``$METAKIT_DATA_DIR``, else
  ``<user cache>/<dataset>``;
- cache folder: an explicit argument, else ``$METAKIT_CACHE_DIR``, else
  ``<user cache>/decoded``;

where ``<user cache>`` is ``$XDG_CACHE_HOME/metakit`` or ``~/.cache/metakit``.
Caches never go next to the input data, which may be read-only.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_root() -> Path:
    """``$XDG_CACHE_HOME/metakit``, or ``~/.cache/metakit`` when that variable is unset or empty."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "metakit"


def data_dir(explicit: str | os.PathLike | None, dataset: str) -> Path:
    """The folder that holds ``dataset``'s files (for Omniglot: its two zips)."""
    if explicit is not None:
        return Path(explicit).expanduser()
    from_env = os.environ.get("METAKIT_DATA_DIR")
    if from_env:
        return Path(from_env).expanduser()
    return user_cache_root() / dataset


def cache_dir(explicit: str | os.PathLike | None) -> Path:
    """The writable folder for decoded datasets."""
    if explicit is not None:
        return Path(explicit).expanduser()
    from_env = os.environ.get("METAKIT_CACHE_DIR")
    if from_env:
        return Path(from_env).expanduser()
    return user_cache_root() / "decoded"
