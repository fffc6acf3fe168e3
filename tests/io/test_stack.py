"""Folders of 2D slices and single 2D images, checked against PIL and tifffile."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import emseg.io._stack as stackmod
from emseg.errors import DatasetNotFoundError, EmsegValueError, FormatError, UnsupportedFormatError
from emseg.io import open_image
from emseg.io._stack import open_stack


def write_png_stack(folder: Path, data: np.ndarray, names=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, plane in enumerate(data):
        name = names[i] if names else f"slice_{i}.png"
        Image.fromarray(plane).save(folder / name)


@given(
    shape=st.tuples(st.integers(1, 5), st.integers(1, 20), st.integers(1, 20)),
    kind=st.sampled_from(["png8", "png16", "tif-uint16", "tif-float32", "tif-int16"]),
    seed=st.integers(0, 2**16),
)
def test_roundtrip(shape, kind, seed):
    rng = np.random.default_rng(seed)
    dtype = {"png8": "uint8", "png16": "uint16"}.get(kind, kind.removeprefix("tif-"))
    if dtype == "float32":
        data = rng.standard_normal(shape).astype(np.float32)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "stack"
        folder.mkdir()
        for i, plane in enumerate(data):
            if kind.startswith("png"):
                Image.fromarray(plane).save(folder / f"z{i}.png")
            else:
                tifffile.imwrite(folder / f"z{i}.tif", plane)
        img = open_image(folder, spacing=(50, 4, 4))
        assert img.axes == "zyx"
        assert img.shape == shape
        assert img.dtype == np.dtype(dtype)
        assert img.chunks == (1, shape[1], shape[2])
        np.testing.assert_array_equal(img[...], data)
        np.testing.assert_array_equal(img[::-2, 1:, ::3], data[::-2, 1:, ::3])
        np.testing.assert_array_equal(img.to_dask().compute(), data)


def test_natural_sort_and_ignored_files(tmp_path, rng):
    data = rng.integers(0, 255, size=(11, 6, 7)).astype(np.uint8)
    names = [f"img{i + 1}.png" for i in range(11)]  # img1 .. img11; plain sort puts img10 second
    write_png_stack(tmp_path / "s", data, names)
    (tmp_path / "s" / ".hidden.png").write_bytes(b"not an image")
    (tmp_path / "s" / "notes.txt").write_text("metadata")
    (tmp_path / "s" / "sub").mkdir()
    img = open_image(tmp_path / "s", spacing=1)
    assert img.shape == (11, 6, 7)
    np.testing.assert_array_equal(img[...], data)
    assert [Path(f).name for f in img._source.files] == names


def test_odd_slice_shape_names_the_file(tmp_path, rng):
    data = rng.integers(0, 255, size=(3, 6, 7)).astype(np.uint8)
    write_png_stack(tmp_path / "s", data)
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "s" / "slice_3.png")
    with pytest.raises(FormatError, match=r"slice 'slice_3.png'.*shape \(6, 8\).*\(6, 7\)"):
        open_image(tmp_path / "s", spacing=1)


def test_odd_slice_dtype_names_the_file(tmp_path, rng):
    data = rng.integers(0, 255, size=(3, 6, 7)).astype(np.uint8)
    write_png_stack(tmp_path / "s", data)
    Image.fromarray(np.zeros((6, 7), np.uint16)).save(tmp_path / "s" / "slice_1.png")
    with pytest.raises(FormatError, match=r"slice 'slice_1.png'.*dtype uint16.*dtype uint8"):
        open_image(tmp_path / "s", spacing=1)


def test_corrupt_slice_is_format_error(tmp_path, rng):
    data = rng.integers(0, 255, size=(3, 6, 7)).astype(np.uint8)
    write_png_stack(tmp_path / "s", data)
    (tmp_path / "s" / "slice_1.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(FormatError, match=r"slice_1.png.*not a readable image"):
        open_image(tmp_path / "s", spacing=1)


def test_reads_only_touched_slices(tmp_path, rng, monkeypatch):
    data = rng.integers(0, 255, size=(10, 6, 7)).astype(np.uint8)
    write_png_stack(tmp_path / "s", data)
    img = open_image(tmp_path / "s", spacing=1)
    decoded: list[str] = []
    real = stackmod.read_slice

    def counting(path):
        decoded.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(stackmod, "read_slice", counting)
    np.testing.assert_array_equal(img[4:6, 2:3, :2], data[4:6, 2:3, :2])
    assert decoded == ["slice_4.png", "slice_5.png"]


def test_rgb_stack_is_channels_first(tmp_path, rng):
    data = rng.integers(0, 255, size=(3, 6, 7, 3)).astype(np.uint8)
    write_png_stack(tmp_path / "s", data)
    img = open_image(tmp_path / "s", spacing=1)
    assert img.axes == "czyx"
    assert img.chunks == (3, 1, 6, 7)
    np.testing.assert_array_equal(img[...], np.moveaxis(data, -1, 0))
    np.testing.assert_array_equal(img[2, 1, :, 3], data[1, :, 3, 2])


def test_jpeg_stack_matches_pil(tmp_path, rng):
    data = rng.integers(0, 255, size=(2, 16, 16)).astype(np.uint8)
    (tmp_path / "s").mkdir()
    for i, plane in enumerate(data):
        Image.fromarray(plane).save(tmp_path / "s" / f"{i}.jpg", quality=90)
    img = open_image(tmp_path / "s", spacing=1)
    for i in range(2):
        with Image.open(tmp_path / "s" / f"{i}.jpg") as im:
            np.testing.assert_array_equal(img[i], np.asarray(im))


def test_empty_folder(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "readme.txt").write_text("x")
    with pytest.raises(UnsupportedFormatError, match=r"neither a Zarr / N5 container nor a stack"):
        open_image(tmp_path / "e")
    with pytest.raises(DatasetNotFoundError, match=r"holds no image slices"):
        open_stack(str(tmp_path / "e"))


def test_stack_has_one_level_and_no_dataset(tmp_path, rng):
    write_png_stack(tmp_path / "s", rng.integers(0, 9, size=(2, 4, 4)).astype(np.uint8))
    with pytest.raises(EmsegValueError, match=r"`level` must be 0"):
        open_image(tmp_path / "s", level=1, spacing=1)
    with pytest.raises(EmsegValueError, match=r"`dataset` must be None"):
        open_image(tmp_path / "s", dataset="x", spacing=1)


def test_multipage_tiff_slice_is_refused(tmp_path, rng):
    (tmp_path / "s").mkdir()
    tifffile.imwrite(tmp_path / "s" / "a.tif", rng.integers(0, 9, size=(4, 4)).astype(np.uint8))
    tifffile.imwrite(
        tmp_path / "s" / "b.tif",
        rng.integers(0, 9, size=(2, 4, 4)).astype(np.uint8),
        photometric="minisblack",
    )
    with pytest.raises(FormatError, match=r"b.tif.*2 pages"):
        open_image(tmp_path / "s", spacing=1)


@pytest.mark.parametrize(
    ("mode", "shape", "axes", "suffix"),
    [
        ("L", (9, 11), "yx", ".png"),
        ("RGB", (9, 11, 3), "cyx", ".png"),
        ("RGBA", (9, 11, 4), "cyx", ".png"),
        ("L", (9, 11), "yx", ".bmp"),
        ("I;16", (9, 11), "yx", ".png"),
    ],
)
def test_single_image(tmp_path, rng, mode, shape, axes, suffix):
    dtype = np.uint16 if mode == "I;16" else np.uint8
    data = rng.integers(0, 255, size=shape).astype(dtype)
    Image.fromarray(data).save(tmp_path / f"a{suffix}")  # PIL picks the mode from the dtype
    img = open_image(tmp_path / f"a{suffix}", spacing=(5, 5))
    assert img.axes == axes
    assert img.spacing == (5.0, 5.0)
    expected = np.moveaxis(data, -1, 0) if data.ndim == 3 else data
    np.testing.assert_array_equal(img[...], expected)
    np.testing.assert_array_equal(img[..., 2:5, ::-1], expected[..., 2:5, ::-1])


def test_single_image_bilevel_is_bool(tmp_path, rng):
    data = rng.random((8, 9)) > 0.5
    Image.fromarray(data).save(tmp_path / "b.png")
    img = open_image(tmp_path / "b.png", spacing=1)
    assert img.dtype == np.bool_
    np.testing.assert_array_equal(img[...], data)
