import zipfile

import numpy as np
import pytest
from data_synthetic import write_collection, zip_folder
from PIL import Image

from metakit.data.image_archive import ImageClasses, Preprocessing, read_image_classes
from metakit.errors import MetakitError


def _expected(written: dict[str, list[np.ndarray]]) -> np.ndarray:
    """The written images in sorted class order, as ``[images, C, S, S]``."""
    images = [np.asarray(pixels) for name in sorted(written) for pixels in written[name]]
    stacked = np.stack(images)
    return stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("groups", [0, 2], ids=["one-level", "two-level"])
def test_folder_and_zip_decode_to_the_written_pixels(tmp_path, groups):
    written = write_collection(tmp_path / "data", groups=groups, classes=3, drawings=4)
    archive = zip_folder(tmp_path / "data", tmp_path / "data.zip")
    from_folder = read_image_classes(tmp_path / "data", Preprocessing(image_size=8))
    from_zip = read_image_classes(archive, Preprocessing(image_size=8))
    for decoded in (from_folder, from_zip):
        assert decoded.class_names == tuple(sorted(written))
        assert decoded.counts.tolist() == [4] * len(written)
        np.testing.assert_array_equal(decoded.images, _expected(written))
    assert from_folder.content_hash == from_zip.content_hash


def test_rgb_and_inverted_grayscale(tmp_path):
    written = write_collection(tmp_path / "data", groups=0, classes=2, drawings=2, rgb=True)
    rgb = read_image_classes(tmp_path / "data", Preprocessing(image_size=8, channels=3))
    np.testing.assert_array_equal(rgb.images, _expected(written))
    gray = read_image_classes(tmp_path / "data", Preprocessing(image_size=8, channels=1, invert=True))
    reference = [
        255 - np.asarray(Image.fromarray(p).convert("L")) for n in sorted(written) for p in written[n]
    ]
    np.testing.assert_array_equal(gray.images[:, 0], np.stack(reference))


def test_resizing_is_lanczos_of_the_grayscale_image(tmp_path):
    write_collection(tmp_path / "data", groups=0, classes=1, drawings=1, size=20)
    decoded = read_image_classes(tmp_path / "data", Preprocessing(image_size=7))
    source = Image.open(tmp_path / "data" / "class00" / "00.png").convert("L")
    reference = np.asarray(source.resize((7, 7), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(decoded.images[0, 0], reference)


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    written = write_collection(tmp_path / "data", groups=0, classes=2, drawings=2)
    (tmp_path / "data" / "README.txt").write_text("about")
    (tmp_path / "data" / "class00" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "data" / "class01" / "notes.csv").write_text("a,b")
    decoded = read_image_classes(tmp_path / "data", Preprocessing(image_size=8))
    assert decoded.class_names == tuple(sorted(written)) and decoded.counts.tolist() == [2, 2]


def test_zip_without_a_top_folder_is_read_from_its_root(tmp_path):
    write_collection(tmp_path / "data", groups=0, classes=2, drawings=2)
    with zipfile.ZipFile(tmp_path / "flat.zip", "w") as out:
        for file in (tmp_path / "data").rglob("*.png"):
            out.write(file, file.relative_to(tmp_path / "data").as_posix())
    assert read_image_classes(tmp_path / "flat.zip", Preprocessing(8)).class_names == ("class00", "class01")


def test_concatenate_sorts_classes_and_keeps_their_images(tmp_path):
    write_collection(tmp_path / "b", groups=1, classes=2, drawings=2, prefix="zeta")
    write_collection(tmp_path / "a", groups=1, classes=1, drawings=3, prefix="alpha", first_code=50)
    parts = [read_image_classes(tmp_path / name, Preprocessing(8)) for name in ("b", "a")]
    both = ImageClasses.concatenate(parts)
    assert both.class_names == ("alpha00/class00", "zeta00/class00", "zeta00/class01")
    assert both.counts.tolist() == [3, 2, 2]
    np.testing.assert_array_equal(both.images[:3], parts[1].images)
    np.testing.assert_array_equal(both.images[3:], parts[0].images)
    with pytest.raises(MetakitError, match="^the image collections share class names"):
        ImageClasses.concatenate([parts[0], parts[0]])


def test_missing_source_is_an_error(tmp_path):
    with pytest.raises(MetakitError) as error:
        read_image_classes(tmp_path / "nothing.zip", Preprocessing(8))
    assert (
        str(error.value)
        == f"{tmp_path / 'nothing.zip'} does not exist; give a zip or a folder of class folders"
    )


def test_truncated_zip_is_an_error(tmp_path):
    write_collection(tmp_path / "data", groups=1, classes=2, drawings=3)
    data = zip_folder(tmp_path / "data", tmp_path / "data.zip").read_bytes()
    (tmp_path / "data.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(MetakitError, match=r"data.zip is not a readable zip \(.*\); it may be truncated"):
        read_image_classes(tmp_path / "data.zip", Preprocessing(8))


def test_corrupt_zip_member_is_an_error(tmp_path):
    write_collection(tmp_path / "data", groups=0, classes=1, drawings=1)
    archive = zip_folder(tmp_path / "data", tmp_path / "data.zip")
    data = bytearray(archive.read_bytes())
    start = data.index(b"\x89PNG")  # stored uncompressed: flip a byte inside the member's data
    data[start + 40] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(MetakitError, match=r"data.zip is corrupt at data/class00/00.png \(Bad CRC-32"):
        read_image_classes(archive, Preprocessing(8))


def test_undecodable_image_is_an_error(tmp_path):
    write_collection(tmp_path / "data", groups=0, classes=2, drawings=2)
    (tmp_path / "data" / "class01" / "01.png").write_bytes(b"not a png at all")
    with pytest.raises(MetakitError) as error:
        read_image_classes(tmp_path / "data", Preprocessing(8))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'data'}: class01/01.png is not a readable image (")
    assert message.endswith("); replace or remove it") and "\n" not in message


def test_mixed_depths_and_empty_collections_are_errors(tmp_path):
    write_collection(tmp_path / "data", groups=0, classes=1, drawings=1)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "data" / "stray.png")
    with pytest.raises(
        MetakitError, match=r"images must all lie in <class>/ or all in <group>/<class>/ folders"
    ):
        read_image_classes(tmp_path / "data", Preprocessing(8))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetakitError, match="^no images found in"):
        read_image_classes(tmp_path / "empty", Preprocessing(8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 0}, "image_size must be >= 1, got 0"),
        ({"channels": 2}, "channels must be 1 (grayscale) or 3 (RGB), got 2"),
    ],
)
def test_bad_preprocessing_is_an_error(kwargs, message):
    with pytest.raises(MetakitError) as error:
        Preprocessing(**kwargs)
    assert str(error.value) == message
