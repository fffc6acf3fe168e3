"""TIFF reader: round trips against tifffile, axes mapping, spacing, corruption, laziness."""

from __future__ import annotations

import gc
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import tifffile.zarr
from hypothesis import given
from hypothesis import strategies as st

from emseg.errors import EmsegValueError, FormatError, SpacingWarning
from emseg.io import open_image
from emseg.io._tiff import AxisMappedSource

DTYPES = ["uint8", "uint16", "uint32", "int16", "int32", "float32", "float64"]


def random_array(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


@given(
    shape=st.tuples(st.integers(2, 5), st.integers(2, 40), st.integers(2, 40)),
    dtype=st.sampled_from(DTYPES),
    tile=st.sampled_from([None, (16, 16), (32, 16)]),
    compression=st.sampled_from([None, "zlib", "lzw"]),
    bigtiff=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_roundtrip_against_tifffile(shape, dtype, tile, compression, bigtiff, seed):
    data = random_array(np.random.default_rng(seed), shape, dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.tif"
        tifffile.imwrite(
            path,
            data,
            tile=tile,
            compression=compression,
            bigtiff=bigtiff,
            photometric="minisblack",
        )
        img = open_image(path, spacing=(40, 4, 4))
        assert img.shape == shape
        assert img.dtype == np.dtype(dtype)
        assert img.axes == "zyx"
        assert img.spacing == (40.0, 4.0, 4.0)
        stored = (1, *tile) if tile else (1, shape[1], shape[2])
        assert img.chunks == tuple(min(c, s) for c, s in zip(stored, shape, strict=True))
        np.testing.assert_array_equal(img[...], data)
        np.testing.assert_array_equal(img[::-1, 1::3, -2], data[::-1, 1::3, -2])
        np.testing.assert_array_equal(img.to_dask().compute(), data)
        img._source.close()


@pytest.mark.parametrize(
    ("shape", "axes"),
    [((2, 5, 1), "zyx"), ((2, 1, 1), "zyx"), ((1, 6, 7), "yx"), ((2, 3, 8, 8), "czyx")],
)
def test_shaped_series_without_axes(tmp_path, rng, shape, axes):
    data = rng.integers(0, 255, size=shape).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", data, photometric="minisblack")
    img = open_image(tmp_path / "a.tif", spacing=1)
    assert img.axes == axes
    np.testing.assert_array_equal(img[...], data.reshape(img.shape))


def test_single_page_is_2d(tmp_path, rng):
    data = rng.integers(0, 255, size=(30, 20)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", data)
    img = open_image(tmp_path / "a.tif", spacing=4)
    assert img.axes == "yx"
    assert img.spacing == (4.0, 4.0)
    np.testing.assert_array_equal(img[...], data)


def test_rgb_samples_become_channels_first(tmp_path, rng):
    data = rng.integers(0, 255, size=(24, 20, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb")
    img = open_image(tmp_path / "rgb.tif", spacing=4)
    assert img.axes == "cyx"
    np.testing.assert_array_equal(img[...], np.moveaxis(data, -1, 0))
    np.testing.assert_array_equal(img[1, 3:7, ::2], data[3:7, ::2, 1])


def test_rgb_volume(tmp_path, rng):
    data = rng.integers(0, 255, size=(4, 16, 12, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb")
    img = open_image(tmp_path / "rgb.tif", spacing=4)
    assert img.axes == "czyx"
    np.testing.assert_array_equal(img[...], np.moveaxis(data, -1, 0))


def test_imagej_hyperstack_and_spacing(tmp_path, rng):
    data = rng.integers(0, 4000, size=(1, 5, 2, 16, 12)).astype(np.uint16)  # TZCYX, T = 1
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(1 / 0.004, 1 / 0.004),
        metadata={"spacing": 0.05, "unit": "um", "axes": "TZCYX"},
    )
    img = open_image(tmp_path / "ij.tif")
    assert img.axes == "czyx"
    assert img.spacing == pytest.approx((50.0, 4.0, 4.0))
    assert img.spacing_known
    np.testing.assert_array_equal(img[...], data[0].transpose(1, 0, 2, 3))


def test_imagej_micron_unit_without_z_spacing(tmp_path, rng):
    data = rng.integers(0, 255, size=(3, 8, 8)).astype(np.uint8)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(200, 250),
        metadata={"unit": "micron", "axes": "ZYX"},
    )
    # x: 1/200 µm = 5 nm, y: 1/250 µm = 4 nm, z: ImageJ's default of one unit
    assert open_image(tmp_path / "ij.tif").spacing == pytest.approx((1000.0, 4.0, 5.0))


def test_time_series_is_refused_and_time_point_can_be_picked(tmp_path, rng):
    data = rng.integers(0, 255, size=(3, 4, 16, 12)).astype(np.uint8)  # TZYX
    tifffile.imwrite(tmp_path / "t.tif", data, imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(FormatError, match=r"time series \(3 time points.*dataset='t=0'"):
        open_image(tmp_path / "t.tif", spacing=1)
    img = open_image(tmp_path / "t.tif", dataset="t=2", spacing=1)
    assert img.axes == "zyx"
    np.testing.assert_array_equal(img[...], data[2])
    with pytest.raises(EmsegValueError, match=r"'t=3' is out of range.*3 time points"):
        open_image(tmp_path / "t.tif", dataset="t=3", spacing=1)
    with pytest.raises(EmsegValueError, match=r"only pick a time point"):
        open_image(tmp_path / "t.tif", dataset="/raw", spacing=1)


def test_ome_spacing_units_and_channel_names(tmp_path, rng):
    data = rng.integers(0, 255, size=(2, 3, 16, 16)).astype(np.uint8)  # CZYX
    tifffile.imwrite(
        tmp_path / "a.ome.tif",
        data,
        ome=True,
        metadata={
            "axes": "CZYX",
            "PhysicalSizeX": 0.004,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": 0.005,
            "PhysicalSizeYUnit": "µm",
            "PhysicalSizeZ": 45,
            "PhysicalSizeZUnit": "nm",
            "Channel": {"Name": ["membrane", "mito"]},
        },
    )
    img = open_image(tmp_path / "a.ome.tif")
    assert img.axes == "czyx"
    assert img.spacing == pytest.approx((45.0, 5.0, 4.0))
    assert img.channel_names == ("membrane", "mito")
    np.testing.assert_array_equal(img[...], data)


def test_ome_default_unit_is_micrometre(tmp_path, rng):
    data = rng.integers(0, 255, size=(16, 16)).astype(np.uint8)
    tifffile.imwrite(
        tmp_path / "a.ome.tif",
        data,
        ome=True,
        metadata={"PhysicalSizeX": 0.002, "PhysicalSizeY": 0.003},
    )
    assert open_image(tmp_path / "a.ome.tif").spacing == pytest.approx((3.0, 2.0))


def test_ome_pyramid_levels(tmp_path, rng):
    data = rng.integers(0, 255, size=(3, 64, 64)).astype(np.uint8)
    meta = {"axes": "ZYX", "PhysicalSizeX": 4, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 4,
            "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 40, "PhysicalSizeZUnit": "nm"}  # fmt: skip
    with tifffile.TiffWriter(tmp_path / "p.ome.tif", ome=True) as w:
        w.write(data, subifds=2, metadata=meta, tile=(16, 16))
        w.write(data[:, ::2, ::2], subfiletype=1, tile=(16, 16))
        w.write(data[:, ::4, ::4], subfiletype=1, tile=(16, 16))
    img = open_image(tmp_path / "p.ome.tif")
    assert img.levels == 3
    assert img.spacing == (40.0, 4.0, 4.0)
    lvl2 = open_image(tmp_path / "p.ome.tif", level=2)
    assert lvl2.shape == (3, 16, 16)
    assert lvl2.spacing == (40.0, 16.0, 16.0)
    np.testing.assert_array_equal(lvl2[...], data[:, ::4, ::4])
    with pytest.raises(EmsegValueError, match=r"`level` must be below 3.*got 3"):
        open_image(tmp_path / "p.ome.tif", level=3)


def test_no_spacing_warns(tmp_path, rng):
    tifffile.imwrite(tmp_path / "a.tif", rng.integers(0, 9, size=(2, 8, 8)).astype(np.uint8))
    with pytest.warns(SpacingWarning, match=r"spacing=\(z, y, x\).*--spacing Z Y X"):
        img = open_image(tmp_path / "a.tif")
    assert img.spacing == (1.0, 1.0, 1.0)
    assert not img.spacing_known


def test_centimetre_resolution_unit_for_2d(tmp_path, rng):
    data = rng.integers(0, 9, size=(8, 8)).astype(np.uint8)
    # 2.5e6 pixels per cm = 4 nm per pixel
    tifffile.imwrite(
        tmp_path / "a.tif", data, resolution=(2.5e6, 2.5e6), resolutionunit="CENTIMETER"
    )
    assert open_image(tmp_path / "a.tif").spacing == pytest.approx((4.0, 4.0))
    # inch is printer DPI: ignored
    tifffile.imwrite(tmp_path / "b.tif", data, resolution=(300, 300), resolutionunit="INCH")
    with pytest.warns(SpacingWarning):
        open_image(tmp_path / "b.tif")


@pytest.mark.parametrize("fraction", [0.5, 0.98])
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_truncated_tiff_is_format_error(tmp_path, rng, fraction, compression):
    data = rng.integers(0, 255, size=(6, 64, 80)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", data, compression=compression)
    raw = (tmp_path / "a.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(FormatError, match=r"truncated"):
        open_image(tmp_path / "t.tif", spacing=1).read()  # at open, or at the latest on read


def test_corrupt_compressed_data_is_format_error_on_read(tmp_path, rng):
    data = rng.integers(0, 255, size=(2, 64, 64)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", data, compression="zlib")
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        offset = tif.pages[1].dataoffsets[0]
    raw = bytearray((tmp_path / "a.tif").read_bytes())
    raw[offset : offset + 64] = os.urandom(64)
    (tmp_path / "c.tif").write_bytes(bytes(raw))
    img = open_image(tmp_path / "c.tif", spacing=1)
    np.testing.assert_array_equal(img[0], data[0])
    with pytest.raises(FormatError, match=r"corrupt or truncated"):
        img[1]


def test_garbage_with_tif_name_is_format_error(tmp_path):
    (tmp_path / "g.tif").write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(FormatError, match=r"not a readable TIFF"):
        open_image(tmp_path / "g.tif", spacing=1)
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(FormatError, match=r"not a readable TIFF"):
        open_image(tmp_path / "empty.tif", spacing=1)


@pytest.fixture
def chunk_reads(monkeypatch):
    """Record the chunk keys tifffile's Zarr store is asked for."""
    keys: list[str] = []
    real = tifffile.zarr.ZarrTiffStore.get

    async def counting(self, key, *args, **kwargs):
        if not key.rsplit("/", 1)[-1].startswith((".z", "zarr.json")):
            keys.append(key)
        return await real(self, key, *args, **kwargs)

    monkeypatch.setattr(tifffile.zarr.ZarrTiffStore, "get", counting)
    return keys


def test_tiled_read_touches_only_its_tiles(tmp_path, rng, chunk_reads):
    data = rng.integers(0, 255, size=(256, 256)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", data, tile=(32, 32), compression="zlib")
    img = open_image(tmp_path / "a.tif", spacing=1)
    np.testing.assert_array_equal(img[40:50, 70:100], data[40:50, 70:100])
    assert sorted(chunk_reads) == ["1.2", "1.3"]  # tile row 1, tile columns 2 and 3


def test_page_read_touches_only_its_pages(tmp_path, rng, chunk_reads):
    data = rng.integers(0, 255, size=(20, 32, 32)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", data, compression="zlib")
    img = open_image(tmp_path / "a.tif", spacing=1)
    np.testing.assert_array_equal(img[7:9, 3, :5], data[7:9, 3, :5])
    assert sorted(chunk_reads) == ["7.0.0", "8.0.0"]


def test_axis_mapped_source_against_numpy(rng):
    data = rng.integers(0, 100, size=(2, 1, 3, 4, 5))
    src = AxisMappedSource(data, index=[None, 0, None, None, None], order=[2, 0, 3, 4])
    expected = data[:, 0].transpose(1, 0, 2, 3)
    assert src.shape == expected.shape
    region = (slice(1, 3), slice(0, 2), slice(1, 4), slice(0, 5))
    np.testing.assert_array_equal(src.read(region), expected[region])
    with pytest.raises(EmsegValueError, match=r"kept axes"):
        AxisMappedSource(data, index=[None, 0, None, None, None], order=[1, 0, 3, 4])


def test_source_pickles_and_reopens(tmp_path, rng):
    data = rng.integers(0, 255, size=(4, 16, 16)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", data, tile=(16, 16), photometric="minisblack")
    img = open_image(tmp_path / "a.tif", spacing=1)
    clone = pickle.loads(pickle.dumps(img))
    np.testing.assert_array_equal(clone[2], data[2])
    img._source.close()
    np.testing.assert_array_equal(img[3], data[3])  # reopens after close
    del img, clone
    gc.collect()


def test_bigtiff_and_flavor_attrs(tmp_path, rng):
    data = rng.integers(0, 255, size=(2, 8, 8)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.btf", data, bigtiff=True)
    img = open_image(tmp_path / "a.btf", spacing=1)
    assert img.format == "tiff"
    assert img.attrs["bigtiff"] is True
    np.testing.assert_array_equal(img[...], data)
