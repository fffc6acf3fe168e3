"""The Zarr / OME-Zarr reader, on files written by zarr and ome-zarr directly (not by emseg)."""

from __future__ import annotations

import warnings

import numcodecs
import numpy as np
import pytest
import zarr

from emseg.errors import DatasetNotFoundError, EmsegValueError, FormatError, SpacingWarning
from emseg.io import open_image
from emseg.io._zarr import open_zarr


def _array(path, data, *, zarr_format=3, chunks=None, attrs=None):
    arr = zarr.create_array(
        str(path),
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks or data.shape,
        zarr_format=zarr_format,
        compressors=[numcodecs.Zstd()] if zarr_format == 2 else "auto",
    )
    arr[...] = data
    if attrs:
        arr.attrs.update(attrs)
    return arr


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(("ndim", "axes"), [(2, "yx"), (3, "zyx"), (4, "czyx")])
def test_plain_array_axes_by_ndim(tmp_path, rng, zarr_format, ndim, axes):
    data = rng.integers(0, 255, (2, 5, 6, 7)[-ndim:], dtype=np.uint8)
    _array(tmp_path / "a.zarr", data, zarr_format=zarr_format, chunks=(1, 2, 3, 4)[-ndim:])
    with pytest.warns(SpacingWarning, match="not stored"):
        img = open_image(tmp_path / "a.zarr")
    assert img.axes == axes
    assert img.format == "zarr"
    assert img.chunks == (1, 2, 3, 4)[-ndim:]
    np.testing.assert_array_equal(img[...], data)
    np.testing.assert_array_equal(img[..., 1:5:2], data[..., 1:5:2])
    np.testing.assert_array_equal(img.to_dask().compute(), data)


@pytest.mark.parametrize("key", ["spacing", "resolution"])
def test_plain_array_spacing_attribute(tmp_path, rng, key):
    data = rng.integers(0, 9, (3, 4, 5), dtype=np.uint16)
    _array(tmp_path / "a.zarr", data, attrs={key: [30, 6, 6], "note": "x"})
    img = open_image(tmp_path / "a.zarr")
    assert img.spacing == (30.0, 6.0, 6.0)
    assert img.spacing_known
    assert img.attrs["note"] == "x"


def test_group_with_one_array_and_several(tmp_path, rng):
    data = rng.integers(0, 9, (3, 4, 5), dtype=np.uint8)
    g = zarr.open_group(str(tmp_path / "one.zarr"), mode="w")
    g.create_array("raw", data=data, attributes={"resolution": [40, 4, 4]})
    assert open_image(tmp_path / "one.zarr").spacing == (40.0, 4.0, 4.0)

    g = zarr.open_group(str(tmp_path / "two.zarr"), mode="w", zarr_format=2)
    g.create_array("raw", data=data)
    g.create_array("labels", data=data.astype(np.uint32))
    g.create_group("extra")
    with pytest.raises(
        DatasetNotFoundError, match=r"several datasets: extra/, labels, raw.*dataset=NAME"
    ):
        open_zarr(tmp_path / "two.zarr")
    src, info = open_zarr(tmp_path / "two.zarr", dataset="labels")
    assert src.dtype == np.uint32
    assert info.axes == "zyx"
    with pytest.raises(DatasetNotFoundError, match=r"no dataset 'nope'.*labels, raw"):
        open_zarr(tmp_path / "two.zarr", dataset="nope")
    with pytest.raises(DatasetNotFoundError, match="no Zarr"):
        open_zarr(tmp_path / "missing.zarr")


def test_unsupported_ndim(tmp_path):
    _array(tmp_path / "a.zarr", np.zeros((2, 2, 2, 2, 2), np.uint8))
    with pytest.raises(FormatError, match="5D array"):
        open_zarr(tmp_path / "a.zarr")


def _ngff04(path, levels, *, axes, scales, ms_transform=None, omero=None):
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    for i, (lv, sc) in enumerate(zip(levels, scales, strict=True)):
        g.create_array(str(i), data=lv, compressors=[numcodecs.Zstd()])
        datasets.append(
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": sc}]}
        )
    ms = {"version": "0.4", "axes": axes, "datasets": datasets}
    if ms_transform:
        ms["coordinateTransformations"] = [{"type": "scale", "scale": ms_transform}]
    attrs = {"multiscales": [ms]}
    if omero:
        attrs["omero"] = omero
    g.attrs.update(attrs)


def test_ngff04_tczyx_micrometre_and_omero(tmp_path, rng):
    data = rng.integers(0, 255, (1, 2, 4, 6, 8), dtype=np.uint8)
    small = data[:, :, :, ::2, ::2].copy()
    axes = [
        {"name": "t", "type": "time", "unit": "second"},
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    _ngff04(
        tmp_path / "a.ome.zarr",
        [data, small],
        axes=axes,
        scales=[[1, 1, 0.04, 0.004, 0.004], [1, 1, 0.04, 0.008, 0.008]],
        ms_transform=[1, 1, 2, 1, 1],
        omero={"channels": [{"label": "EM"}, {"label": "mito"}]},
    )
    img = open_image(tmp_path / "a.ome.zarr")
    assert img.axes == "czyx"
    assert img.format == "ome-zarr"
    assert img.spacing == pytest.approx((80.0, 4.0, 4.0))
    assert img.channel_names == ("EM", "mito")
    assert img.levels == 2
    np.testing.assert_array_equal(img[...], data[0])
    lvl1 = open_image(tmp_path / "a.ome.zarr", level=1)
    assert lvl1.spacing == pytest.approx((80.0, 8.0, 8.0))
    np.testing.assert_array_equal(lvl1[1, 2], small[0, 1, 2])
    _, info = open_zarr(tmp_path / "a.ome.zarr")
    assert info.level_shapes == ((2, 4, 6, 8), (2, 4, 3, 4))
    with pytest.raises(EmsegValueError, match=r"`level` must be below 2.*got 2"):
        open_image(tmp_path / "a.ome.zarr", level=2)


def test_ngff_time_axis_longer_than_one_is_an_error(tmp_path):
    axes = [{"name": a, "type": "space" if a in "yx" else "time"} for a in "tyx"]
    _ngff04(tmp_path / "t.zarr", [np.zeros((3, 4, 4), np.uint8)], axes=axes, scales=[[1, 1, 1]])
    with pytest.raises(EmsegValueError, match="time axis of length 3"):
        open_zarr(tmp_path / "t.zarr")


def test_ngff05_reordered_axes_are_moved_channels_first(tmp_path, rng):
    data = rng.integers(0, 255, (4, 3, 5, 6), dtype=np.uint16)  # z, c, y, x
    g = zarr.open_group(str(tmp_path / "r.zarr"), mode="w", zarr_format=3)
    g.create_array("s0", data=data, chunks=(2, 1, 5, 3))
    g.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [
                    {"name": "z", "type": "space", "unit": "angstrom"},
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", "unit": "angstrom"},
                    {"name": "x", "type": "space", "unit": "angstrom"},
                ],
                "datasets": [
                    {
                        "path": "s0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [500.0, 1.0, 50.0, 50.0]}
                        ],
                    }
                ],
            }
        ],
    }
    img = open_image(tmp_path / "r.zarr")
    assert img.axes == "czyx"
    assert img.shape == (3, 4, 5, 6)
    assert img.chunks == (1, 2, 5, 3)
    assert img.spacing == pytest.approx((50.0, 5.0, 5.0))
    np.testing.assert_array_equal(img[...], np.moveaxis(data, 1, 0))
    np.testing.assert_array_equal(img[2, 1:3, :, 4], np.moveaxis(data, 1, 0)[2, 1:3, :, 4])


def test_reads_files_written_by_ome_zarr_library(tmp_path, rng):
    """Independent writer: ome-zarr-py's own multiscale writer (NGFF 0.4 on Zarr v2)."""
    from ome_zarr.format import FormatV04
    from ome_zarr.io import parse_url

    with warnings.catch_warnings():  # ome-zarr 0.18 deprecates its Scaler at import time
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_multiscale

    data = rng.integers(0, 255, (8, 32, 32), dtype=np.uint8)
    pyramid = [data, data[:, ::2, ::2].copy()]
    store = parse_url(str(tmp_path / "lib.ome.zarr"), mode="w", fmt=FormatV04()).store
    root = zarr.open_group(store, mode="w", zarr_format=2)
    write_multiscale(
        pyramid,
        group=root,
        axes="zyx",
        scale={"z": 30.0, "y": 6.0, "x": 6.0},
        axes_units={"z": "nanometer", "y": "nanometer", "x": "nanometer"},
        fmt=FormatV04(),
    )
    img = open_image(tmp_path / "lib.ome.zarr")
    assert img.spacing == (30.0, 6.0, 6.0)
    assert img.levels == 2
    np.testing.assert_array_equal(img[...], data)
    lvl = open_image(tmp_path / "lib.ome.zarr", level=1)
    assert lvl.spacing == (30.0, 12.0, 12.0)
    np.testing.assert_array_equal(lvl[...], pyramid[1])
