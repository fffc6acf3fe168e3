"""HDF5 reader: round trips against h5py, dataset choice, spacing attributes, laziness."""

from __future__ import annotations

import io
import json
import pickle
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emseg.errors import DatasetNotFoundError, EmsegValueError, FormatError, SpacingWarning
from emseg.io import open_image
from emseg.io._hdf5 import default_chunks

DTYPES = ["uint8", "uint16", "uint32", "uint64", "int16", "int32", "float32", "float64"]


def random_array(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 25), st.integers(1, 25)),
    chunks=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9))),
    compression=st.sampled_from([None, "gzip", "lzf"]),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_roundtrip_against_h5py(shape, chunks, compression, dtype, seed):
    data = random_array(np.random.default_rng(seed), shape, dtype)
    if compression and chunks is None:
        chunks = (1, shape[1], shape[2])
    if chunks is not None:
        chunks = tuple(min(c, n) for c, n in zip(chunks, shape, strict=True))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("vol/raw", data=data, chunks=chunks, compression=compression)
        img = open_image(f"{path}:/vol/raw", spacing=(30, 6, 6))
        assert img.shape == shape
        assert img.dtype == np.dtype(dtype)
        assert img.axes == "zyx"
        if chunks is not None:
            assert img.chunks == chunks
        np.testing.assert_array_equal(img[...], data)
        np.testing.assert_array_equal(img[::2, -1::-3, 2:], data[::2, -1::-3, 2:])
        np.testing.assert_array_equal(img.to_dask().compute(), data)
        img._source.close()


def test_single_dataset_is_used(tmp_path, rng):
    data = rng.integers(0, 255, size=(3, 8, 9)).astype(np.uint8)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("stack", data=data)
        f.create_dataset("meta/ids", data=np.arange(3))  # 1D: not an image
    img = open_image(tmp_path / "f.h5", spacing=1)
    assert img.source.endswith("f.h5")
    np.testing.assert_array_equal(img[...], data)


def test_several_datasets_are_listed(tmp_path, rng):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("volumes/raw", data=np.zeros((4, 5, 6), np.uint8))
        f.create_dataset("volumes/labels/neuron_ids", data=np.zeros((4, 5, 6), np.uint64))
    with pytest.raises(
        EmsegValueError,
        match=r"2 datasets: /volumes/labels/neuron_ids \(4, 5, 6\) uint64, "
        r"/volumes/raw \(4, 5, 6\) uint8\. Name one in the path .*f\.h5:/name.*dataset='/name'",
    ):
        open_image(tmp_path / "f.h5", spacing=1)
    img = open_image(tmp_path / "f.h5", dataset="volumes/labels/neuron_ids", spacing=1)
    assert img.dtype == np.uint64


def test_missing_dataset_lists_contents(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("raw", data=np.zeros((4, 5), np.uint8))
    with pytest.raises(DatasetNotFoundError, match=r"'/labels' is not found.*holds: /raw \(4, 5\)"):
        open_image(f"{tmp_path / 'f.h5'}:/labels", spacing=1)


def test_group_is_not_a_dataset(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("volumes/raw", data=np.zeros((4, 5), np.uint8))
    with pytest.raises(DatasetNotFoundError, match=r"is a group, not a dataset"):
        open_image(tmp_path / "f.h5", dataset="volumes", spacing=1)


def test_empty_file(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w"):
        pass
    with pytest.raises(EmsegValueError, match=r"holds no image dataset"):
        open_image(tmp_path / "f.h5", spacing=1)


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"element_size_um": [0.05, 0.004, 0.004]}, (50.0, 4.0, 4.0)),
        ({"resolution": [40.0, 4.0, 4.0]}, (40.0, 4.0, 4.0)),
        ({"spacing": [0.03, 0.006, 0.005], "unit": "um"}, (30.0, 6.0, 5.0)),
        ({"voxel_size": [30, 6, 6]}, (30.0, 6.0, 6.0)),
        ({"spacing": 8.0, "unit": "nm"}, (8.0, 8.0, 8.0)),
    ],
)
def test_spacing_attributes(tmp_path, attrs, expected):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("raw", data=np.zeros((2, 3, 4), np.uint8))
        for k, v in attrs.items():
            ds.attrs[k] = v
    img = open_image(tmp_path / "f.h5")
    assert img.spacing == pytest.approx(expected)
    assert img.spacing_known


def test_spacing_unknown_warns_and_can_be_overridden(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("raw", data=np.zeros((2, 3, 4), np.uint8)).attrs["resolution"] = [1, 2, 3]
        f.create_dataset("lab", data=np.zeros((2, 3, 4), np.uint8))
    with pytest.warns(SpacingWarning, match=r"f\.h5:/lab.*spacing=\(z, y, x\)"):
        open_image(f"{tmp_path / 'f.h5'}:/lab")
    assert open_image(f"{tmp_path / 'f.h5'}:/raw", spacing=(9, 8, 7)).spacing == (9.0, 8.0, 7.0)


def test_ilastik_axistags_channel_last(tmp_path, rng):
    data = rng.random((3, 5, 6, 2)).astype(np.float32)  # z y x c
    tags = {
        "axes": [{"key": k, "typeFlags": 2, "resolution": 0, "description": ""} for k in "zyxc"]
    }
    with h5py.File(tmp_path / "p.h5", "w") as f:
        ds = f.create_dataset("exported_data", data=data, chunks=(1, 5, 6, 2))
        ds.attrs["axistags"] = json.dumps(tags)
    img = open_image(tmp_path / "p.h5", spacing=1)
    assert img.axes == "czyx"
    assert img.chunks == (2, 1, 5, 6)
    np.testing.assert_array_equal(img[...], np.moveaxis(data, -1, 0))
    np.testing.assert_array_equal(img[1, 2, ::2, 1:4], data[2, ::2, 1:4, 1])


def test_2d_and_4d(tmp_path, rng):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("a", data=rng.random((5, 6)))
        f.create_dataset("b", data=rng.random((2, 3, 5, 6)))
        f.create_dataset("c", data=rng.random((2, 2, 3, 5, 6)))
    assert open_image(tmp_path / "f.h5", dataset="a", spacing=1).axes == "yx"
    assert open_image(tmp_path / "f.h5", dataset="b", spacing=1).axes == "czyx"
    with pytest.raises(FormatError, match=r"has 5 axes"):
        open_image(tmp_path / "f.h5", dataset="c", spacing=1)


def test_contiguous_default_chunks(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("raw", data=np.zeros((4, 30, 40), np.uint16))
    assert open_image(tmp_path / "f.h5", spacing=1).chunks == (1, 30, 40)
    # large planes are split by rows so one chunk stays near 4 MiB
    assert default_chunks((3, 8192, 8192), 1) == (1, 512, 8192)
    assert default_chunks((100, 100), 8) == (100, 100)


def test_level_must_be_zero(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("raw", data=np.zeros((2, 3), np.uint8))
    with pytest.raises(EmsegValueError, match=r"`level` must be 0.*got 1"):
        open_image(tmp_path / "f.h5", level=1, spacing=1)


def test_not_hdf5_is_format_error(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"this is not hdf5" * 10)
    with pytest.raises(FormatError, match=r"not a readable HDF5 file"):
        open_image(tmp_path / "x.h5", spacing=1)


class CountingFile(io.RawIOBase):
    """A read-only file that counts the bytes h5py reads through it."""

    def __init__(self, path):
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.bytes_read = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        return self._f.seek(offset, whence)

    def tell(self):
        return self._f.tell()

    def readinto(self, b):
        n = self._f.readinto(b)
        self.bytes_read += n or 0
        return n

    def close(self):
        self._f.close()
        super().close()


def test_reads_only_touched_chunks(tmp_path, rng, monkeypatch):
    data = rng.integers(0, 255, size=(32, 256, 256)).astype(np.uint8)  # 2 MiB
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("raw", data=data, chunks=(4, 32, 32))  # 4 KiB chunks, uncompressed
    img = open_image(tmp_path / "f.h5", spacing=1)
    handles: list[CountingFile] = []
    real_file = h5py.File

    def counting_file(name, mode="r", **kwargs):
        handle = CountingFile(name)
        handles.append(handle)
        return real_file(handle, mode, **kwargs)

    monkeypatch.setattr(h5py, "File", counting_file)
    try:
        np.testing.assert_array_equal(img[5, 40:50, 100:130], data[5, 40:50, 100:130])
        assert len(handles) == 1
        # two chunks (x 96..127 and 128..159) plus the chunk index, far from the 2 MiB total
        assert 2 * 4096 <= handles[0].bytes_read < 64 * 1024
    finally:
        img._source.close()
        for h in handles:
            h.close()


def test_source_pickles(tmp_path, rng):
    data = rng.integers(0, 255, size=(3, 8, 9)).astype(np.uint8)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("raw", data=data, chunks=(1, 4, 4))
    img = open_image(tmp_path / "f.h5", spacing=1)
    img[0]
    clone = pickle.loads(pickle.dumps(img))
    np.testing.assert_array_equal(clone[2], data[2])
    clone._source.close()
    img._source.close()
