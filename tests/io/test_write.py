"""write_image / write_tiff / create_image / write_pyramid: round trips, pyramids, atomicity."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skimage.transform import downscale_local_mean

from emseg.errors import (
    EmsegError,
    EmsegTypeError,
    EmsegValueError,
    OutputExistsError,
    SpacingWarning,
    UnsupportedFormatError,
)
from emseg.io import (
    ArraySource,
    LazyImage,
    create_image,
    default_chunks,
    downsample_mode,
    open_image,
    write_image,
    write_pyramid,
    write_tiff,
)
from emseg.io._atomic import partial_siblings

DTYPES = [np.uint8, np.uint16, np.uint32, np.uint64, np.int16, np.float32]


def _random(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _open_quiet(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpacingWarning)
        return open_image(path, **kw)


# --------------------------------------------------------------------------- round trips
@st.composite
def _images(draw):
    ndim = draw(st.sampled_from([2, 3, 4]))
    if ndim == 4:
        shape = (draw(st.integers(1, 3)), *draw(st.tuples(*[st.integers(1, 12)] * 3)))
    else:
        shape = draw(st.tuples(*[st.integers(1, 40 if ndim == 2 else 14)] * ndim))
    chunks = tuple(draw(st.integers(1, max(1, s))) for s in shape)
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    return _random(np.random.default_rng(seed), shape, dtype), chunks


_FORMATS = [("zarr", 3), ("zarr", 2), ("tif", None)]


@pytest.mark.parametrize(("suffix", "zarr_format"), _FORMATS)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=15)
@given(case=_images())
def test_round_trip_exact_at_level_0(tmp_path, suffix, zarr_format, case):
    data, chunks = case
    n_spatial = data.ndim - (data.ndim == 4)
    spacing = (7.5, 3.0, 2.5)[-n_spatial:]
    path = tmp_path / f"img.{suffix}"
    kw = {"zarr_format": zarr_format, "chunks": chunks} if zarr_format else {}
    out = write_image(data, path, spacing=spacing, overwrite=True, **kw)
    plain_tiff = suffix == "tif" and data.dtype.itemsize == 8  # no OME type: spacing in JSON
    again = _open_quiet(path) if plain_tiff else open_image(path)
    axes = {2: "yx", 3: "zyx", 4: "czyx"}[data.ndim]
    if suffix == "tif":
        # tifffile's series drop singleton channel / z axes of a TIFF
        kept = [i for i, a in enumerate(axes) if not (data.shape[i] == 1 and a in "cz")]
        expected_shape = tuple(data.shape[i] for i in kept)
        expected_spacing = tuple(
            s
            for s, i in zip(spacing, [i for i, a in enumerate(axes) if a != "c"], strict=True)
            if i in kept
        )
    else:
        expected_shape, expected_spacing = data.shape, spacing
    for img in (out, again):
        assert img.shape == expected_shape
        assert img.dtype == data.dtype
        np.testing.assert_array_equal(img[...], data.reshape(expected_shape))
        if not plain_tiff or len(expected_spacing) == 2 or img is out:
            assert img.spacing == pytest.approx(expected_spacing)
    if zarr_format:
        assert again.chunks == chunks
        assert not partial_siblings(path)


def test_tiff_is_ome_with_physical_size_in_nm(tmp_path, rng):
    data = rng.integers(0, 60000, (2, 3, 20, 30), dtype=np.uint16)
    write_image(data, tmp_path / "a.ome.tif", spacing=(50, 4.5, 4), channel_names=["em", "mito"])
    with tifffile.TiffFile(tmp_path / "a.ome.tif") as tf:  # independent reader
        assert tf.is_ome
        np.testing.assert_array_equal(tf.asarray(), data)
        pixels = tifffile.xml2dict(tf.ome_metadata)["OME"]["Image"]["Pixels"]
    assert pixels["PhysicalSizeZ"] == 50
    assert pixels["PhysicalSizeY"] == 4.5
    assert pixels["PhysicalSizeXUnit"] == "nm"
    assert [c["Name"] for c in pixels["Channel"]] == ["em", "mito"]


def test_tiff_tiled_path_for_large_pages(tmp_path, rng, monkeypatch):
    import emseg.io._write_tiff as w

    monkeypatch.setattr(w, "_TIFF_TILE_ABOVE", 100)  # force tiles on a small image
    data = rng.integers(0, 255, (3, 1100, 1030), dtype=np.uint8)
    write_image(data, tmp_path / "t.tif", spacing=(40, 4, 4), compression="gzip")
    with tifffile.TiffFile(tmp_path / "t.tif") as tf:
        assert tf.pages[0].is_tiled
        assert tf.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        np.testing.assert_array_equal(tf.asarray(), data)


def test_inputs_lazy_image_and_dask(tmp_path, rng):
    data = rng.integers(0, 255, (9, 33, 17), dtype=np.uint8)
    lazy = LazyImage(ArraySource(data, chunks=(2, 8, 8)), spacing=(40, 4, 4), axes="zyx")
    out = write_image(lazy, tmp_path / "l.zarr", chunks=(4, 16, 16))
    assert out.spacing == (40.0, 4.0, 4.0)  # taken from the LazyImage
    np.testing.assert_array_equal(out[...], data)
    out = write_image(da.from_array(data, chunks=(3, 10, 10)), tmp_path / "d.zarr", spacing=2)
    assert out.spacing == (2.0, 2.0, 2.0)
    np.testing.assert_array_equal(out[...], data)


def test_unknown_spacing_stays_unknown(tmp_path, rng):
    data = rng.integers(0, 9, (4, 5, 6), dtype=np.uint8)
    out = write_image(data, tmp_path / "u.zarr")
    assert not out.spacing_known
    with pytest.warns(SpacingWarning, match="not stored"):
        open_image(tmp_path / "u.zarr")


def test_default_chunks():
    assert default_chunks((512, 512, 512), np.uint8, axes="zyx") == (64, 128, 128)
    assert default_chunks((5000, 5000), np.uint8, axes="yx") == (1024, 1024)
    assert default_chunks((10, 100, 100), np.uint8, axes="zyx") == (10, 100, 100)
    c = default_chunks((3, 512, 512, 512), np.uint64, axes="czyx")
    assert c[0] == 1
    assert np.prod(c) * 8 <= 2 << 20
    assert default_chunks((5000, 5000), np.float32, axes="yx") == (512, 1024)


# --------------------------------------------------------------------------- metadata
def test_ome_zarr_library_reads_our_output(tmp_path, rng):
    """Independent check: ome-zarr-py finds every level with its scale (NGFF 0.5 and 0.4)."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    data = rng.integers(0, 255, (40, 130, 128), dtype=np.uint8)
    for zf in (3, 2):
        path = tmp_path / f"v{zf}.ome.zarr"
        write_image(data, path, spacing=(40, 4, 4), chunks=(16, 32, 32), zarr_format=zf)
        nodes = list(Reader(parse_url(str(path)))())
        node = nodes[0]
        assert any(isinstance(s, Multiscales) for s in node.specs)
        shapes = [tuple(d.shape) for d in node.data]
        scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
        # 40 x 4 x 4 nm: xy-only levels until xy reaches 32 nm, then all axes
        assert shapes == [(40, 130, 128), (40, 65, 64), (40, 33, 32), (40, 17, 16), (20, 9, 8)]
        assert scales == [[40, 4, 4], [40, 8, 8], [40, 16, 16], [40, 32, 32], [80, 64, 64]]
        np.testing.assert_array_equal(np.asarray(node.data[0]), data)
        assert [a["unit"] for a in node.metadata["axes"]] == ["nanometer"] * 3


def test_provenance_and_metadata(tmp_path, rng):
    data = rng.integers(0, 255, (2, 8, 40, 40), dtype=np.uint8)
    attrs = {"producer": "test", "inputs": ["in.tif"], "parameters": {"k": 1}}
    write_image(
        data,
        tmp_path / "p.zarr",
        spacing=(8, 8, 8),
        chunks=(1, 8, 16, 16),
        attrs=attrs,
        channel_names=["a", "b"],
    )
    meta = json.loads((tmp_path / "p.zarr" / "zarr.json").read_text())["attributes"]
    prov = meta["emseg"]
    assert prov["producer"] == "test"
    assert prov["inputs"] == ["in.tif"]
    assert prov["parameters"] == {"k": 1}
    assert prov["labels"] is False
    assert prov["created"][:2] == "20"
    ms = meta["ome"]["multiscales"][0]
    assert meta["ome"]["version"] == "0.5"
    assert ms["type"] == "mean"
    assert [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"]
    assert ms["datasets"][1]["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.0, 16.0, 16.0, 16.0]},
        {"type": "translation", "translation": [0.0, 4.0, 4.0, 4.0]},
    ]
    assert [c["label"] for c in meta["ome"]["omero"]["channels"]] == ["a", "b"]
    img = open_image(tmp_path / "p.zarr")
    assert img.channel_names == ("a", "b")
    assert img.attrs["emseg"]["producer"] == "test"
    with pytest.raises(EmsegTypeError, match="JSON"):
        write_image(data, tmp_path / "q.zarr", spacing=1, attrs={"bad": object()})


# --------------------------------------------------------------------------- pyramids
def test_mean_pyramid_equals_skimage(tmp_path, rng):
    data = rng.integers(0, 255, (64, 128, 128), dtype=np.uint8)
    out = write_image(data, tmp_path / "m.zarr", spacing=4, chunks=(16, 32, 32), workers=2)
    assert out.levels == 3
    ref = data.astype(np.float64)
    for level in (1, 2):
        ref = downscale_local_mean(ref, (2, 2, 2))
        got = open_image(tmp_path / "m.zarr", level=level)
        expected = np.rint(
            downscale_local_mean(
                open_image(tmp_path / "m.zarr", level=level - 1)[...].astype(float), (2, 2, 2)
            )
        ).astype(np.uint8)
        np.testing.assert_array_equal(got[...], expected)
        assert got.spacing == (4.0 * 2**level,) * 3
    # level 2 is close to the mean of 4x4x4 windows of level 0 (two roundings apart)
    assert np.abs(got[...].astype(float) - ref).max() <= 1.0


def test_label_pyramid_is_mode_and_invents_no_ids(tmp_path, rng):
    labels = rng.integers(0, 6, (40, 72, 70), dtype=np.uint32) * 1000
    out = write_image(
        labels, tmp_path / "l.zarr", spacing=(10, 10, 10), chunks=(8, 16, 16), labels=True
    )
    assert out.levels >= 2
    meta = json.loads((tmp_path / "l.zarr" / "zarr.json").read_text())["attributes"]
    assert meta["ome"]["multiscales"][0]["type"] == "mode"
    assert meta["emseg"]["labels"] is True
    ids0 = set(np.unique(labels))
    prev = labels
    for level in range(1, out.levels):
        lv = open_image(tmp_path / "l.zarr", level=level)[...]
        assert set(np.unique(lv)) <= ids0
        # brute-force mode over the windows of the level below
        factors = tuple(-(-a // b) for a, b in zip(prev.shape, lv.shape, strict=True))
        for idx in itertools.islice(itertools.product(*map(range, lv.shape)), 0, None, 97):
            win = prev[tuple(slice(i * f, i * f + f) for i, f in zip(idx, factors, strict=True))]
            values, counts = np.unique(win, return_counts=True)
            assert lv[idx] == values[np.argmax(counts)]
        prev = lv


def test_label_requires_integers(tmp_path):
    with pytest.raises(EmsegTypeError, match="integer label"):
        write_image(np.zeros((4, 4), np.float32), tmp_path / "x.zarr", labels=True)


def test_no_pyramid(tmp_path, rng):
    data = rng.integers(0, 255, (64, 64, 64), dtype=np.uint8)
    out = write_image(data, tmp_path / "n.zarr", spacing=1, chunks=8, pyramid=False)
    assert out.levels == 1
    np.testing.assert_array_equal(out[...], data)


def test_create_image_then_write_pyramid_matches_write_image(tmp_path, rng):
    data = rng.integers(0, 50, (40, 96, 80), dtype=np.uint64)
    arr = create_image(
        tmp_path / "c.ome.zarr",
        shape=data.shape,
        dtype=np.uint64,
        chunks=(8, 32, 32),
        spacing=(30, 6, 6),
        labels=True,
        attrs={"producer": "job"},
    )
    img = open_image(tmp_path / "c.ome.zarr")
    assert img.levels == 1
    assert img.spacing == (30.0, 6.0, 6.0)
    for z in range(0, 40, 8):  # blockwise job writing chunk-aligned slabs
        arr[z : z + 8] = data[z : z + 8]
    out = write_pyramid(tmp_path / "c.ome.zarr")
    ref = write_image(
        data, tmp_path / "r.zarr", spacing=(30, 6, 6), chunks=(8, 32, 32), labels=True
    )
    assert out.levels == ref.levels
    assert out.levels > 1
    for level in range(out.levels):
        a = open_image(tmp_path / "c.ome.zarr", level=level)
        b = open_image(tmp_path / "r.zarr", level=level)
        np.testing.assert_array_equal(a[...], b[...])
        assert a.spacing == b.spacing
    assert out.attrs["emseg"]["producer"] == "job"
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        write_pyramid(tmp_path / "c.ome.zarr")
    assert write_pyramid(tmp_path / "c.ome.zarr", overwrite=True).levels == out.levels
    with pytest.raises(OutputExistsError):
        create_image(tmp_path / "c.ome.zarr", shape=(4, 4), dtype=np.uint8, spacing=1)


def test_mode_of_level_1_equals_kernel_on_level_0(tmp_path, rng):
    data = rng.integers(0, 3, (3, 50, 66), dtype=np.uint16)
    out = write_image(
        data, tmp_path / "k.zarr", axes="cyx", spacing=(5, 5), chunks=(1, 16, 16), labels=True
    )
    lv1 = open_image(tmp_path / "k.zarr", level=1)
    assert lv1.shape[0] == 3
    np.testing.assert_array_equal(lv1[...], downsample_mode(data, (1, 2, 2)))
    assert out.axes == "cyx"


# --------------------------------------------------------------------------- validation
def test_validation_errors(tmp_path):
    data = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(
        EmsegValueError,
        match=r"`compression` must be one of 'zstd', 'blosc', 'blosc-lz4', 'gzip', 'none'; got 'lz4'",
    ):
        write_image(data, tmp_path / "a.zarr", compression="lz4")
    with pytest.raises(EmsegValueError, match="blosc"):
        write_image(data, tmp_path / "a.tif", compression="blosc")
    with pytest.raises(UnsupportedFormatError, match=r"\.zarr"):
        write_image(data, tmp_path / "a.png")
    with pytest.raises(EmsegValueError, match="`spacing` must have 3 entries"):
        write_image(data, tmp_path / "a.zarr", spacing=(1, 1))
    with pytest.raises(EmsegValueError, match="`chunks` must have 3"):
        write_image(data, tmp_path / "a.zarr", chunks=(1, 1))
    with pytest.raises(EmsegValueError, match="`axes`"):
        write_image(data, tmp_path / "a.zarr", axes="xyz")
    with pytest.raises(EmsegValueError, match="`zarr_format`"):
        write_image(data, tmp_path / "a.zarr", zarr_format=4)
    with pytest.raises(EmsegValueError, match="`channel_names`"):
        write_image(data, tmp_path / "a.zarr", channel_names=["a"])
    with pytest.raises(EmsegTypeError, match="`image`"):
        write_image("not an image", tmp_path / "a.zarr")
    with pytest.raises(UnsupportedFormatError):
        write_tiff(data, tmp_path / "a.zarr")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("compression", ["zstd", "blosc", "gzip", "none"])
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_each_compression_round_trips(tmp_path, rng, compression, zarr_format):
    data = rng.integers(0, 255, (5, 20, 20), dtype=np.uint8)
    out = write_image(
        data, tmp_path / "c.zarr", spacing=1, compression=compression, zarr_format=zarr_format
    )
    np.testing.assert_array_equal(out[...], data)
    arr = zarr.open_array(str(tmp_path / "c.zarr" / "0"), mode="r")
    names = [type(c).__name__.lower() for c in arr.compressors]
    expected = {"zstd": "zstd", "blosc": "blosc", "gzip": "gzip", "none": None}[compression]
    assert (names == []) if expected is None else (expected in names[0])


# --------------------------------------------------------------------------- overwrite / atomicity
class _Source:
    """A Source that counts reads and can fail (or sleep) on the n-th read."""

    def __init__(self, data, *, fail_at=None):
        self.data = data
        self.shape, self.dtype, self.chunks = data.shape, data.dtype, (4, 16, 16)
        self.reads = 0
        self.fail_at = fail_at

    def read(self, region):
        self.reads += 1
        if self.fail_at is not None and self.reads >= self.fail_at:
            raise OSError("disk vanished")
        return self.data[region]


def test_existing_output_is_an_error_before_any_work(tmp_path, rng):
    data = rng.integers(0, 255, (16, 64, 64), dtype=np.uint8)
    first = write_image(data, tmp_path / "o.zarr", spacing=1)
    src = _Source(data + 1)
    lazy = LazyImage(src, spacing=(1, 1, 1), axes="zyx")
    with pytest.raises(
        OutputExistsError, match=r"exists; pass overwrite=True \(CLI: --overwrite\)"
    ):
        write_image(lazy, tmp_path / "o.zarr")
    assert src.reads == 0
    (tmp_path / "o.tif").touch()
    with pytest.raises(OutputExistsError):
        write_image(lazy, tmp_path / "o.tif")
    assert src.reads == 0
    np.testing.assert_array_equal(first[...], data)
    out = write_image(lazy, tmp_path / "o.zarr", overwrite=True)
    np.testing.assert_array_equal(out[...], data + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tif", "o.zarr"]


@pytest.mark.parametrize("suffix", ["zarr", "tif"])
def test_exception_midway_leaves_no_output(tmp_path, rng, suffix, monkeypatch):
    import emseg.io._write_tiff as w

    monkeypatch.setattr(w, "_TIFF_READ_BYTES", 1)  # TIFF: one page per read
    data = rng.integers(0, 255, (16, 64, 64), dtype=np.uint8)
    # zarr: two level-0 blocks of (8, 64, 64); TIFF: one page per read. The 2nd read fails.
    lazy = LazyImage(_Source(data, fail_at=2), spacing=(1, 1, 1), axes="zyx")
    path = tmp_path / f"x.{suffix}"
    with pytest.raises(OSError, match="disk vanished"):
        write_image(lazy, path, chunks=(4, 16, 16))
    assert not path.exists()
    assert not partial_siblings(path)
    # with overwrite, a failing write keeps the previous output intact
    write_image(data, path, spacing=1)
    with pytest.raises(OSError, match="disk vanished"):
        write_image(
            LazyImage(_Source(data, fail_at=2), spacing=(1, 1, 1), axes="zyx"),
            path,
            chunks=(4, 16, 16),
            overwrite=True,
        )
    np.testing.assert_array_equal(open_image(path)[...], data)


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from emseg.io import LazyImage, write_image

    class Slow:
        shape, dtype, chunks = (64, 256, 256), np.dtype(np.uint8), (8, 32, 32)
        def read(self, region):
            time.sleep(0.05)
            return np.ones(tuple(r.stop - r.start for r in region), np.uint8)

    img = LazyImage(Slow(), spacing=(1, 1, 1), axes="zyx")
    write_image(img, sys.argv[1], chunks=(8, 32, 32), workers=2)
    """
)


def test_sigkill_midway_leaves_no_complete_looking_output(tmp_path):
    path = tmp_path / "killed.ome.zarr"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(path)])
    try:
        deadline = time.monotonic() + 60
        started = False
        while time.monotonic() < deadline and proc.poll() is None:
            partials = partial_siblings(path)
            if partials and any((partials[0] / "0").rglob("c/*")):
                started = True  # chunks are being written
                break
            time.sleep(0.05)
        assert started, "the writer never started writing chunks"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not path.exists()
    with pytest.raises(EmsegError):
        open_image(path)
    stale = partial_siblings(path)
    assert len(stale) == 1  # left behind, hidden, never at `path`
    # the next write of the same name removes the stale partial output
    write_image(np.zeros((4, 4), np.uint8), path, spacing=1)
    assert not partial_siblings(path)
    assert Path(path).is_dir()


def test_create_image_channels_and_unknown_spacing(tmp_path):
    arr = create_image(
        tmp_path / "ch.zarr",
        shape=(2, 4, 40, 40),
        dtype=np.float32,
        spacing=None,
        chunks=(1, 4, 16, 16),
        channel_names=["fg", "bg"],
        zarr_format=2,
    )
    arr[...] = 0.5
    with pytest.warns(SpacingWarning):
        img = open_image(tmp_path / "ch.zarr")
    assert img.channel_names == ("fg", "bg")
    assert img.axes == "czyx"
    assert img.chunks == (1, 4, 16, 16)
    np.testing.assert_array_equal(img[...], np.full((2, 4, 40, 40), 0.5, np.float32))
    with pytest.raises(EmsegValueError, match="`channel_names`"):
        create_image(
            tmp_path / "bad.zarr", shape=(4, 4), dtype=np.uint8, spacing=1, channel_names=["a"]
        )


def test_boolean_mask_is_written_as_labels(tmp_path):
    mask = np.zeros((8, 64, 64), bool)
    mask[:, :40, :40] = True
    out = write_image(mask, tmp_path / "m.zarr", spacing=(40, 4, 4), chunks=(8, 16, 16))
    assert out.dtype == np.bool_
    assert out.attrs["emseg"]["labels"] is True
    lvl1 = open_image(tmp_path / "m.zarr", level=1)[...]
    np.testing.assert_array_equal(lvl1, mask[:, ::2, ::2])  # blocks of 2 agree everywhere
