from pathlib import Path

import numpy as np
import pytest
from data_synthetic import write_collection, zip_folder

from metakit.atomic_file import atomic_path
from metakit.data import dataset_cache, locations
from metakit.data.dataset_cache import cache_file, load_image_classes
from metakit.data.image_archive import Preprocessing, read_image_classes
from metakit.errors import MetakitError


@pytest.fixture
def archive(tmp_path) -> Path:
    write_collection(tmp_path / "data", groups=2, classes=2, drawings=3)
    return zip_folder(tmp_path / "data", tmp_path / "data.zip")


def _count_decodes(monkeypatch) -> list[Path]:
    calls = []

    def counting(source, preprocessing):
        calls.append(source)
        return read_image_classes(source, preprocessing)

    monkeypatch.setattr(dataset_cache, "read_image_classes", counting)
    return calls


def _same(a, b):
    np.testing.assert_array_equal(a.images, b.images)
    assert (a.class_names, a.counts.tolist(), a.content_hash) == (
        b.class_names,
        b.counts.tolist(),
        b.content_hash,
    )


def test_second_load_comes_from_the_cache(tmp_path, archive, monkeypatch):
    decodes = _count_decodes(monkeypatch)
    first = load_image_classes(archive, Preprocessing(8), tmp_path / "cache")
    second = load_image_classes(archive, Preprocessing(8), tmp_path / "cache")
    assert decodes == [archive]
    _same(first, second)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        cache_file(archive, Preprocessing(8), tmp_path / "cache").name
    ]


def test_the_key_covers_preprocessing_and_archive_contents(tmp_path, archive):
    folder = tmp_path / "cache"
    keys = {cache_file(archive, Preprocessing(8), folder), cache_file(archive, Preprocessing(6), folder)}
    keys.add(cache_file(archive, Preprocessing(8, invert=True), folder))
    assert len(keys) == 3
    before = cache_file(archive, Preprocessing(8), folder)
    write_collection(tmp_path / "more", groups=0, classes=1, drawings=1)
    zip_folder(tmp_path / "more", archive)
    assert cache_file(archive, Preprocessing(8), folder) != before


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_corrupt_cache_file_is_rebuilt_not_trusted(tmp_path, archive, monkeypatch, damage):
    reference = load_image_classes(archive, Preprocessing(8), tmp_path / "cache")
    file = cache_file(archive, Preprocessing(8), tmp_path / "cache")
    data = bytearray(file.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 3] ^= 0x01
    else:
        data = bytearray(b"garbage")
    file.write_bytes(bytes(data))
    decodes = _count_decodes(monkeypatch)
    with pytest.warns(UserWarning, match="is corrupt; decoding .* again"):
        rebuilt = load_image_classes(archive, Preprocessing(8), tmp_path / "cache")
    assert decodes == [archive]
    _same(rebuilt, reference)
    _same(load_image_classes(archive, Preprocessing(8), tmp_path / "cache"), reference)
    assert decodes == [archive]


def test_an_unusable_cache_folder_is_a_one_line_error(tmp_path, archive, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    decodes = _count_decodes(monkeypatch)
    with pytest.raises(MetakitError) as error:
        load_image_classes(archive, Preprocessing(8), blocker / "cache")
    assert str(error.value).startswith(f"cannot use the cache folder {blocker / 'cache'} (")
    assert str(error.value).endswith("); pass cache_dir or set METAKIT_CACHE_DIR to a writable folder")
    assert decodes == []  # failed before the long decode


def test_an_unwritable_cache_file_is_a_one_line_error(tmp_path, archive, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dataset_cache, "atomic_path", refuse)
    with pytest.raises(
        MetakitError, match=r"^cannot use the cache folder .* \(Permission denied\); pass cache_dir"
    ):
        load_image_classes(archive, Preprocessing(8), tmp_path / "cache")


def test_atomic_path_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "file.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as temporary:
        temporary.write_bytes(b"whole")
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == b"whole"


def test_folder_resolution_order(tmp_path, monkeypatch):
    monkeypatch.delenv("METAKIT_DATA_DIR", raising=False)
    monkeypatch.delenv("METAKIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert locations.data_dir(None, "omniglot") == tmp_path / "xdg" / "metakit" / "omniglot"
    assert locations.cache_dir(None) == tmp_path / "xdg" / "metakit" / "decoded"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert locations.cache_dir(None) == tmp_path / "home" / ".cache" / "metakit" / "decoded"
    monkeypatch.setenv("METAKIT_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("METAKIT_CACHE_DIR", str(tmp_path / "env-cache"))
    assert locations.data_dir(None, "omniglot") == tmp_path / "env-data"
    assert locations.cache_dir(None) == tmp_path / "env-cache"
    assert locations.data_dir(tmp_path / "arg", "omniglot") == tmp_path / "arg"
    assert locations.cache_dir(tmp_path / "arg") == tmp_path / "arg"
