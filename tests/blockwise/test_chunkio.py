"""Direct chunk I/O: equal to zarr's reads, byte-identical chunk files to zarr's writes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given
from hypothesis import strategies as st

from emseg.blockwise import ChunkIO, Roi, read_block, write_block
from emseg.blockwise._output import output_codec


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    }


CODECS = {
    "blosc-lz4": lambda dt: {"compressors": output_codec(dt)},
    "zstd": lambda dt: {"compressors": zarr.codecs.ZstdCodec(level=3)},
    "none": lambda dt: {"compressors": None},
}


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("dtype", ["uint8", "float32", "uint64", "int16"])
def test_write_is_byte_identical_to_zarr(tmp_path, rng, codec, dtype):
    shape, chunks = (37, 50, 29), (16, 32, 8)  # edge chunks on every axis
    data = (rng.random(shape) * 200).astype(dtype)
    data[:16, :32, :8] = 0  # one chunk equal to the fill value: not stored
    kw = CODECS[codec](np.dtype(dtype))
    ref = zarr.create_array(
        store=str(tmp_path / "ref.zarr"), shape=shape, dtype=dtype, chunks=chunks, **kw
    )
    ours = zarr.create_array(
        store=str(tmp_path / "ours.zarr"), shape=shape, dtype=dtype, chunks=chunks, **kw
    )
    ref[:] = data
    io = ChunkIO.of(ours)
    assert io is not None
    io.write((slice(0, 37), slice(0, 50), slice(0, 29)), data)
    theirs, mine = _files(tmp_path / "ref.zarr"), _files(tmp_path / "ours.zarr")
    assert sorted(mine) == sorted(theirs)
    assert "c/0/0/0" not in mine  # the empty chunk
    assert mine == theirs
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "ours.zarr"))[:], data)


def test_writing_fill_value_deletes_an_existing_chunk(tmp_path):
    arr = zarr.create_array(
        store=str(tmp_path / "a.zarr"), shape=(8, 8), dtype="f4", chunks=(4, 4), fill_value=0
    )
    arr[:] = 1.0
    io = ChunkIO.of(arr)
    assert io is not None
    io.write((slice(0, 4), slice(4, 8)), np.zeros((4, 4), np.float32))
    assert not (tmp_path / "a.zarr" / "c" / "0" / "1").exists()
    expected = np.ones((8, 8), np.float32)
    expected[:4, 4:] = 0
    np.testing.assert_array_equal(arr[:], expected)


def test_unaligned_write_is_refused(tmp_path):
    arr = zarr.create_array(store=str(tmp_path / "a.zarr"), shape=(8, 8), dtype="u1", chunks=(4, 4))
    io = ChunkIO.of(arr)
    assert io is not None
    assert io.aligned((slice(4, 8), slice(0, 8)))
    assert not io.aligned((slice(2, 8), slice(0, 8)))
    with pytest.raises(ValueError, match="not aligned"):
        io.write((slice(2, 8), slice(0, 8)), np.zeros((6, 8), np.uint8))


@given(
    start=st.tuples(*[st.integers(0, 30)] * 3),
    size=st.tuples(*[st.integers(0, 20)] * 3),
)
def test_read_equals_zarr_for_any_region(zarr_volume, start, size):
    arr, io = zarr_volume
    sl = tuple(slice(b, min(b + s, n)) for b, s, n in zip(start, size, arr.shape, strict=True))
    got = io.read(sl)
    np.testing.assert_array_equal(got, arr[sl])
    assert got.flags.c_contiguous


@pytest.fixture(scope="module")
def zarr_volume(tmp_path_factory):
    path = tmp_path_factory.mktemp("chunkio") / "v.zarr"
    data = np.random.default_rng(3).integers(0, 9, (31, 33, 35), dtype=np.uint16)
    data[:10, :10, :10] = 0  # missing chunks read as the fill value
    arr = zarr.create_array(store=str(path), shape=data.shape, dtype=data.dtype, chunks=(10, 7, 9))
    arr[:] = data
    arr = zarr.open_array(str(path), mode="r")
    io = ChunkIO.of(arr)
    assert io is not None
    return arr, pickle.loads(pickle.dumps(io))


def test_other_arrays_go_through_zarr(tmp_path):
    mem = zarr.create_array(
        store=zarr.storage.MemoryStore(), shape=(8, 8), dtype="u1", chunks=(4, 4)
    )
    sharded = zarr.create_array(
        store=str(tmp_path / "s.zarr"), shape=(8, 8), dtype="u1", chunks=(2, 2), shards=(4, 4)
    )
    v2 = zarr.create_array(
        store=str(tmp_path / "v2.zarr"), shape=(8, 8), dtype="u1", chunks=(4, 4), zarr_format=2
    )
    for arr in (np.zeros((8, 8)), mem, sharded, v2):
        assert ChunkIO.of(arr) is None
    # ... and the public helpers still read and write them
    for arr in (mem, sharded, v2):
        write_block(arr, Roi((4, 0), (4, 8)), np.full((4, 8), 7, np.uint8))
        np.testing.assert_array_equal(read_block(arr, Roi((3, 0), (2, 8)))[1], 7)
        np.testing.assert_array_equal(read_block(arr, Roi((3, 0), (2, 8)))[0], 0)


def test_lazy_image_over_zarr_is_read_directly(tmp_path, rng):
    from emseg.io import open_image

    data = rng.integers(0, 255, (20, 30, 40), dtype=np.uint8)
    arr = zarr.create_array(
        store=str(tmp_path / "a.zarr"), shape=data.shape, dtype="u1", chunks=(8, 8, 8)
    )
    arr[:] = data
    image = open_image(tmp_path / "a.zarr", spacing=(4.0, 4.0, 4.0))
    assert ChunkIO.of(image) is not None
    np.testing.assert_array_equal(
        read_block(image, Roi((3, 5, 7), (10, 20, 30))), data[3:13, 5:25, 7:37]
    )


def test_write_block_casts_and_falls_back_when_unaligned(tmp_path):
    arr = zarr.create_array(store=str(tmp_path / "a.zarr"), shape=(8, 8), dtype="u2", chunks=(4, 4))
    write_block(arr, Roi((1, 1), (3, 3)), np.full((3, 3), 5.0))  # unaligned: through zarr
    write_block(arr, Roi((4, 4), (4, 4)), np.full((4, 4), 9.0))  # aligned: direct
    expected = np.zeros((8, 8), np.uint16)
    expected[1:4, 1:4] = 5
    expected[4:, 4:] = 9
    np.testing.assert_array_equal(arr[:], expected)


def test_read_only_arrays_are_not_written_directly(tmp_path):
    zarr.create_array(store=str(tmp_path / "a.zarr"), shape=(8, 8), dtype="u1", chunks=(4, 4))
    arr = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    io = ChunkIO.of(arr)
    assert io is not None
    assert io.read_only
    with pytest.raises(PermissionError, match="read-only"):
        io.write((slice(0, 4), slice(0, 4)), np.ones((4, 4), np.uint8))
    with pytest.raises(ValueError, match="read-only mode"):  # zarr's own refusal
        write_block(arr, Roi((0, 0), (4, 4)), np.ones((4, 4), np.uint8))
    assert not (tmp_path / "a.zarr" / "c").exists()


def test_relative_store_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arr = zarr.create_array(store="rel.zarr", shape=(8, 8), dtype="u1", chunks=(4, 4))
    io = ChunkIO.of(arr)
    assert io is not None
    assert io.root == str(tmp_path / "rel.zarr")
