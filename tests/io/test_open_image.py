"""open_image: format detection, spacing override / default, bad input, and `emseg info`."""

from __future__ import annotations

import json

import h5py
import mrcfile
import numpy as np
import pytest
import tifffile
from PIL import Image

from emseg.errors import (
    DatasetNotFoundError,
    EmsegTypeError,
    EmsegValueError,
    SpacingWarning,
    UnsupportedFormatError,
)
from emseg.io import FORMATS, describe, detect_format, open_image, split_dataset_path


@pytest.fixture
def files(tmp_path, rng):
    """One small file per format, all holding the same (3, 10, 12) uint8 volume."""
    data = rng.integers(0, 255, size=(3, 10, 12)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "v.tif", data, photometric="minisblack")
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("raw", data=data, chunks=(1, 5, 6))
    with mrcfile.new(tmp_path / "v.mrc") as m:
        m.set_data(data.astype(np.int16))
    (tmp_path / "stack").mkdir()
    for i, plane in enumerate(data):
        Image.fromarray(plane).save(tmp_path / "stack" / f"{i}.png")
    Image.fromarray(data[0]).save(tmp_path / "one.png")
    n5 = tmp_path / "v.n5"
    (n5 / "raw").mkdir(parents=True)
    (n5 / "attributes.json").write_text('{"n5": "2.0.0"}')
    (n5 / "raw" / "attributes.json").write_text(
        json.dumps(
            {
                "dimensions": [12, 10, 3],
                "blockSize": [12, 10, 3],
                "dataType": "uint8",
                "compression": {"type": "raw"},
            }
        )
    )
    (n5 / "raw" / "0" / "0").mkdir(parents=True)
    header = np.array([0, 3], ">u2").tobytes() + np.array([12, 10, 3], ">u4").tobytes()
    (n5 / "raw" / "0" / "0" / "0").write_bytes(header + data.tobytes())
    return tmp_path, data


FORMAT_FILES = {
    "tiff": "v.tif",
    "hdf5": "v.h5",
    "mrc": "v.mrc",
    "stack": "stack",
    "n5": "v.n5",
    "image2d": "one.png",
}


@pytest.mark.parametrize("fmt", list(FORMAT_FILES))
def test_every_format_opens_with_spacing_override(files, fmt):
    root, data = files
    path = root / FORMAT_FILES[fmt]
    assert detect_format(path) == fmt
    expected = data[0] if fmt == "image2d" else data
    spacing = (4, 4) if fmt == "image2d" else (40, 4, 4)
    img = open_image(path, spacing=spacing)
    assert img.format == fmt
    assert img.spacing == tuple(float(s) for s in spacing)
    assert img.spacing_known
    np.testing.assert_array_equal(img[...], expected)


@pytest.mark.parametrize("fmt", list(FORMAT_FILES))
def test_unknown_spacing_warns_how_to_set_it(files, fmt):
    root, _ = files
    with pytest.warns(SpacingWarning, match=r"not stored in the file.*Pass spacing=.*--spacing"):
        img = open_image(root / FORMAT_FILES[fmt])
    assert set(img.spacing) == {1.0}
    assert not img.spacing_known


@pytest.mark.parametrize("fmt", ["tiff", "hdf5", "mrc", "n5", "stack"])
def test_level_out_of_range(files, fmt):
    root, _ = files
    with pytest.raises(EmsegValueError, match=r"`level`"):
        open_image(root / FORMAT_FILES[fmt], level=1, spacing=1)


def test_negative_level(files):
    root, _ = files
    with pytest.raises(EmsegValueError, match=r"`level` must be a non-negative integer; got -1"):
        open_image(root / "v.tif", level=-1)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"no such file or folder"):
        open_image(tmp_path / "nope.tif")
    with pytest.raises(FileNotFoundError):  # also the builtin
        open_image(tmp_path / "nope.h5:/raw")


def test_unsupported_extension_lists_formats(tmp_path):
    (tmp_path / "a.xyz").write_bytes(b"123")
    with pytest.raises(
        UnsupportedFormatError, match=r"'\.xyz' is not supported.*tiff \(.*hdf5.*mrc"
    ):
        open_image(tmp_path / "a.xyz")


@pytest.mark.parametrize("spacing", [(4, 4), (1, 2, 3, 4)])
def test_spacing_wrong_length(files, spacing):
    root, _ = files
    with pytest.raises(EmsegValueError, match=r"`spacing` must have 3 entries"):
        open_image(root / "v.tif", spacing=spacing)


@pytest.mark.parametrize("spacing", [(0, 4, 4), (-1, 4, 4), (float("nan"), 4, 4), 0])
def test_spacing_not_positive(files, spacing):
    root, _ = files
    with pytest.raises(EmsegValueError, match=r"positive and finite"):
        open_image(root / "v.tif", spacing=spacing)


def test_spacing_wrong_type(files):
    root, _ = files
    with pytest.raises(EmsegTypeError, match=r"`spacing`"):
        open_image(root / "v.tif", spacing="4nm")


def test_single_number_spacing(files):
    root, _ = files
    assert open_image(root / "v.tif", spacing=5).spacing == (5.0, 5.0, 5.0)


def test_zero_stored_spacing_means_unknown(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("raw", data=np.zeros((2, 3, 4), np.uint8)).attrs["resolution"] = [0, 4, 4]
    with pytest.warns(SpacingWarning, match=r"f\.h5"):
        assert not open_image(tmp_path / "f.h5").spacing_known
    assert open_image(tmp_path / "f.h5", spacing=(1, 2, 3)).spacing == (1.0, 2.0, 3.0)


def test_format_can_be_forced(files, tmp_path):
    root, data = files
    (root / "v.tif").rename(root / "v.dat")
    np.testing.assert_array_equal(open_image(root / "v.dat", format="tiff", spacing=1)[...], data)
    with pytest.raises(EmsegValueError, match=r"`format` must be one of 'tiff'"):
        open_image(root / "v.dat", format="bogus")


def test_split_dataset_path():
    assert split_dataset_path("a/b.h5:/volumes/raw") == ("a/b.h5", "/volumes/raw")
    assert split_dataset_path("b.hdf5:raw") == ("b.hdf5", "raw")
    assert split_dataset_path("b.h5") == ("b.h5", None)
    assert split_dataset_path("C:/data/b.tif") == ("C:/data/b.tif", None)


def test_detect_format_by_extension_and_folder(files):
    root, _ = files
    assert detect_format(root / "v.h5:/raw") == "hdf5"
    assert detect_format(root / "v.n5" / "raw") == "n5"
    assert {spec.name for spec in FORMATS.values()} >= set(FORMAT_FILES)


def test_describe_and_cli_info(files, capsys):
    from emseg.cli._main import main

    root, _ = files
    with mrcfile.new(root / "s.mrc") as m:
        m.set_data(np.zeros((3, 10, 12), np.float32))
        m.voxel_size = (40.0, 40.0, 500.0)
    info = describe(root / "s.mrc")
    assert info["format"] == "mrc"
    assert info["shape"] == [3, 10, 12]
    assert info["spacing"] == pytest.approx([50.0, 4.0, 4.0])
    assert main(["info", str(root / "s.mrc")]) == 0
    out = capsys.readouterr().out
    assert "format    mrc" in out
    assert "spacing   50 x 4 x 4 nm" in out
    with pytest.warns(SpacingWarning):
        assert main(["info", f"{root / 'v.h5'}:/raw", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "hdf5"
    assert data["chunks"] == [1, 5, 6]
    assert data["spacing_known"] is False
