import os
from pathlib import Path

import pytest
import torch


@pytest.fixture
def torch_threads():
    """``torch_threads(n)`` sets torch's thread count for the rest of the test; restored after it."""
    threads = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread(torch_threads):
    """For tests of tiny networks: one thread is faster, and much faster on a loaded machine."""
    torch_threads(1)


@pytest.fixture(autouse=True)
def _float32_default():
    """Tests that switch to float64 must not leak it into the next test."""
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    """The real Omniglot zips: ``$METAKIT_TEST_OMNIGLOT_DIR``, else ``<repo>/../shared/data/omniglot``.
    Absent: the test is skipped, or fails when ``METAKIT_REQUIRE_DATA=1`` (CI must not skip it)."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"
    folder = Path(os.environ.get("METAKIT_TEST_OMNIGLOT_DIR") or default)
    if not all((folder / f"{name}.zip").is_file() for name in ("images_background", "images_evaluation")):
        message = f"the Omniglot zips are not in {folder}; set METAKIT_TEST_OMNIGLOT_DIR to their folder"
        if os.environ.get("METAKIT_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def omniglot_cache_dir(tmp_path_factory) -> Path:
    """One decoded-data cache per test session: the real images are decoded once (seconds), not per test."""
    return tmp_path_factory.mktemp("metakit-cache")
