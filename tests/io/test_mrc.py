"""MRC reader: round trips against mrcfile, voxel size in Å -> nm, corrupt files."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emseg.errors import EmsegValueError, FormatError, SpacingWarning
from emseg.io import open_image

DTYPES = ["int8", "int16", "uint16", "float32", "float16"]


def write_mrc(path, data, voxel_size=None):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        if voxel_size is not None:
            m.voxel_size = voxel_size


@given(
    shape=st.one_of(
        st.tuples(st.integers(2, 6), st.integers(1, 20), st.integers(1, 20)),
        st.tuples(st.integers(1, 20), st.integers(1, 20)),
    ),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_roundtrip_against_mrcfile(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        data = rng.standard_normal(shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mrc"
        write_mrc(path, data, voxel_size=(12.0, 13.0, 140.0))
        with mrcfile.open(path, permissive=False) as m:
            reference = np.array(m.data)
        img = open_image(path)
        assert img.axes == ("zyx" if len(shape) == 3 else "yx")
        assert img.shape == shape
        assert img.dtype == np.dtype(dtype)
        # header voxel size is x, y, z in Å -> spacing z, y, x in nm
        expected = (14.0, 1.3, 1.2) if len(shape) == 3 else (1.3, 1.2)
        assert img.spacing == pytest.approx(expected)
        np.testing.assert_array_equal(img[...], reference)
        np.testing.assert_array_equal(img[..., ::-2], reference[..., ::-2])
        np.testing.assert_array_equal(img.to_dask().compute(), reference)
        del img


def test_big_endian_file(tmp_path, rng):
    data = rng.integers(-1000, 1000, size=(3, 5, 7)).astype(np.int16)
    write_mrc(tmp_path / "be.mrc", data.astype(">i2"), voxel_size=10.0)
    with mrcfile.open(tmp_path / "be.mrc") as m:
        assert m.data.dtype.byteorder == ">"
    img = open_image(tmp_path / "be.mrc")
    assert img.dtype == np.dtype("int16")
    assert img.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(img[...], data)


def test_extended_header_is_skipped(tmp_path, rng):
    data = rng.random((2, 4, 6)).astype(np.float32)
    with mrcfile.new(tmp_path / "x.mrc") as m:
        m.set_extended_header(np.zeros(64, dtype=np.uint8))
        m.set_data(data)
    with pytest.warns(SpacingWarning):
        img = open_image(tmp_path / "x.mrc")
    np.testing.assert_array_equal(img[...], data)


def test_zero_voxel_size_is_unknown(tmp_path):
    write_mrc(tmp_path / "z.mrc", np.zeros((2, 3, 4), np.float32))
    with pytest.warns(SpacingWarning, match=r"spacing=\(z, y, x\)"):
        img = open_image(tmp_path / "z.mrc")
    assert not img.spacing_known
    assert open_image(tmp_path / "z.mrc", spacing=(1, 2, 3)).spacing == (1.0, 2.0, 3.0)


def test_truncated_mrc(tmp_path, rng):
    write_mrc(tmp_path / "a.mrc", rng.random((4, 32, 32)).astype(np.float32), voxel_size=5)
    raw = (tmp_path / "a.mrc").read_bytes()
    (tmp_path / "t.mrc").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FormatError, match=r"truncated"):
        open_image(tmp_path / "t.mrc")


def test_garbage_mrc(tmp_path):
    (tmp_path / "g.mrc").write_bytes(np.random.default_rng(1).bytes(2048))
    with pytest.raises(FormatError, match=r"not a valid MRC file"):
        open_image(tmp_path / "g.mrc")
    (tmp_path / "short.mrc").write_bytes(b"\x00" * 100)
    with pytest.raises(FormatError, match=r"not a valid MRC file"):
        open_image(tmp_path / "short.mrc")


def test_level_and_dataset_are_refused(tmp_path):
    write_mrc(tmp_path / "a.mrc", np.zeros((2, 3, 4), np.int8), voxel_size=1)
    with pytest.raises(EmsegValueError, match=r"`level` must be 0"):
        open_image(tmp_path / "a.mrc", level=1)
    with pytest.raises(EmsegValueError, match=r"`dataset` must be None"):
        open_image(tmp_path / "a.mrc", dataset="x")


def test_source_pickles_without_data(tmp_path, rng):
    data = rng.random((8, 64, 64)).astype(np.float32)
    write_mrc(tmp_path / "a.mrc", data, voxel_size=1)
    img = open_image(tmp_path / "a.mrc")
    img[0]
    blob = pickle.dumps(img)
    assert len(blob) < data.nbytes // 10  # the memory map is not pickled
    np.testing.assert_array_equal(pickle.loads(blob)[3], data[3])
