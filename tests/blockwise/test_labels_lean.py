"""The lean parts of blockwise labelling: small scratch dtypes, reused buffers, default blocks."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest
import zarr

from emseg.blockwise import ChunkIO, Roi, _labels, label
from emseg.blockwise._chunkio import _all_equal
from emseg.blockwise._geometry import Blocking


@pytest.mark.parametrize(
    ("n", "dtype"),
    [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16), (65536, np.uint32)],
)
def test_small_dtype_boundaries(n, dtype):
    assert _labels._small_dtype(n) == np.dtype(dtype)
    assert _labels._small_dtype(2**32) == np.dtype(np.uint64)


def _dots(shape, step=2):
    """Isolated voxels on a grid of `step`: one component each with face connectivity."""
    img = np.zeros(shape, np.uint8)
    img[tuple(slice(0, None, step) for _ in shape)] = 1
    return img


@pytest.mark.parametrize(
    ("shape", "scratch_dtype"),
    [((20, 22), np.uint8), ((40, 40), np.uint16), ((520, 520), np.uint32)],
)
def test_block_components_smallest_dtype_equals_cc3d(tmp_path, shape, scratch_dtype):
    """Local labels equal cc3d's ids exactly (same numbering), in the smallest dtype."""
    img = _dots(shape)
    img[1, :] = 1  # one long object too
    arr = zarr.create_array(store=str(tmp_path / "a"), shape=shape, dtype="u1", chunks=shape)
    arr[:] = img
    blocking = Blocking(shape, shape)
    reader = ChunkIO.of(arr)
    ref, n_ref = cc3d.connected_components(img, connectivity=4, return_N=True)
    buffers = _labels._ThreadBuffers()
    for rd, buf in ((None, None), (reader, buffers), (reader, buffers)):  # reused buffers twice
        labels, n = _labels._block_components(arr, blocking[0], None, 4, rd, buf)
        assert n == n_ref
        assert labels.dtype == np.dtype(scratch_dtype)
        np.testing.assert_array_equal(labels, ref)
    # the input (read into this thread's buffer) was not the stored array: still intact
    np.testing.assert_array_equal(arr[:], img)
    # with buffers, cc3d ran on the process's one cc3d thread
    assert _labels._cc3d_thread.cache_info().currsize == 1


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "float32", "bool"])
def test_block_components_threshold_through_buffers(tmp_path, rng, dtype):
    """Foreground `> threshold` (or `!= 0`) through reused buffers equals numpy's mask."""
    shape = (9, 12, 10)
    data = (rng.random(shape) * 100 - (50 if dtype in ("int8", "float32") else 0)).astype(dtype)
    arr = zarr.create_array(store=str(tmp_path / "a"), shape=shape, dtype=dtype, chunks=(9, 6, 5))
    arr[:] = data
    block = Blocking(shape, shape)[0]
    buffers = _labels._ThreadBuffers()
    for threshold in (None, 10, 10.5):
        if dtype == "bool" and threshold is not None:
            continue
        fg = data != 0 if threshold is None else data > threshold
        ref = cc3d.connected_components(fg.astype(np.uint8), connectivity=26)
        labels, n = _labels._block_components(arr, block, threshold, 26, ChunkIO.of(arr), buffers)
        np.testing.assert_array_equal(labels, ref)
        assert n == int(ref.max())


@pytest.mark.parametrize("take_bytes", [1, 2**18])
def test_label_many_components_per_block(take_bytes, monkeypatch, assert_same_labels):
    """uint16 and uint32 scratch labels (> 255 / > 65535 objects per block), ids mapped in slabs."""
    monkeypatch.setattr(_labels, "_TAKE_BYTES", take_bytes)
    img = _dots((520, 1040))
    img[0, :] = 1  # an object crossing both blocks
    img[100:, 3] = 1  # and one crossing a block face the other way
    out = label(img, connectivity=4, block_shape=(520, 520), chunks=(260, 260), progress=False)
    ref = cc3d.connected_components(img, connectivity=4)
    assert_same_labels(out[:], ref)
    assert out.attrs["emseg"]["n_labels"] == int(ref.max())


def test_chunkio_read_into_buffer(tmp_path, rng):
    data = rng.integers(0, 255, size=(21, 30, 17), dtype=np.uint8)
    arr = zarr.create_array(
        store=str(tmp_path / "a"), shape=data.shape, dtype="u1", chunks=(8, 8, 8)
    )
    arr[:] = data
    io = ChunkIO.of(arr)
    roi = Roi((3, 5, 2), (10, 20, 15))
    buf = np.full(roi.shape, 7, np.uint8)
    got = io.read(roi.to_slices(), out=buf)
    assert got is buf
    np.testing.assert_array_equal(buf, data[roi.to_slices()])
    with pytest.raises(ValueError, match="`out` must have the region's shape"):
        io.read(roi.to_slices(), out=np.empty((10, 20, 14), np.uint8))
    with pytest.raises(ValueError, match="dtype uint8"):
        io.read(roi.to_slices(), out=np.empty(roi.shape, np.uint16))


@pytest.mark.parametrize(
    "chunk",
    [
        np.zeros(5, np.uint64),
        np.array([0, 0, 3], np.uint64),
        np.array([0.0, -0.0], np.float32),
        np.array([0.0, np.nan], np.float64),
        np.array([-0.0, 1e-30], np.float64),
        np.zeros((2, 3), np.int16),
        np.array([[0, -1]], np.int16),
    ],
)
def test_all_equal_zero_fill_matches_elementwise_test(chunk):
    """The reduction used for fill value 0 agrees with zarr's `(chunk == 0).all()`."""
    value = np.asarray(0, dtype=chunk.dtype)
    assert _all_equal(chunk, value) == bool((chunk == value).all())


def test_trim_heap_is_safe_to_call():
    _labels._trim_heap()
    _labels._trim_heap()  # the C function is looked up once
    assert _labels._malloc_trim.cache_info().currsize == 1


def test_chunkio_write_empty_hint(tmp_path):
    """`empty=` skips the fill-value test: True deletes / skips, False stores; zarr reads both."""
    arr = zarr.create_array(
        store=str(tmp_path / "a"), shape=(8, 8), dtype="u8", chunks=(4, 4), fill_value=0
    )
    io = ChunkIO.of(arr)
    ones = np.ones((4, 8), np.uint64)
    io.write((slice(0, 4), slice(0, 8)), ones, empty=False)
    chunk_dir = tmp_path / "a" / "c"
    assert sorted(p.name for p in (chunk_dir / "0").iterdir()) == ["0", "1"]
    io.write((slice(0, 4), slice(0, 4)), np.zeros((4, 4), np.uint64), empty=True)  # deleted
    assert sorted(p.name for p in (chunk_dir / "0").iterdir()) == ["1"]
    io.write((slice(4, 8), slice(0, 4)), np.zeros((4, 4), np.uint64), empty=False)  # stored
    assert (chunk_dir / "1" / "0").exists()
    expected = np.zeros((8, 8), np.uint64)
    expected[:4, 4:] = 1
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a"))[:], expected)


def test_label_sparse_volume_writes_only_chunks_with_objects(tmp_path, assert_same_labels):
    """Chunks of background are not stored (pass 3 knows them from the labels)."""
    img = np.zeros((16, 16, 16), np.uint8)
    img[1:3, 1:3, 1:3] = 1  # chunk (0, 0, 0)
    img[12:16, 9, 9] = 1  # chunk (1, 1, 1)
    out = label(img, out=tmp_path / "l", block_shape=8, chunks=8, progress=False)
    files = sorted(
        str(p.relative_to(tmp_path / "l" / "c")) for p in (tmp_path / "l" / "c").rglob("*")
    )
    assert [f for f in files if f.count("/") == 2] == ["0/0/0", "1/1/1"]
    assert_same_labels(out[:], cc3d.connected_components(img, connectivity=26))
