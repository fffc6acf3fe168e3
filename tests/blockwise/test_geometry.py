"""Blocking geometry: ROIs, write / read regions, block ids, chunk alignment."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emseg.blockwise import Blocking, Roi, check_chunk_alignment, default_block_shape
from emseg.errors import ChunkAlignmentError, EmsegTypeError, EmsegValueError


def test_roi_basics():
    r = Roi((2, 3), (4, 5))
    assert r.end == (6, 8)
    assert r.size == 20
    assert r.to_slices() == (slice(2, 6), slice(3, 8))
    assert r.grow(1) == Roi((1, 2), (6, 7))
    assert r.grow((0, 2)) == Roi((2, 1), (4, 9))
    assert r.intersect(Roi((0, 0), (3, 4))) == Roi((2, 3), (1, 1))
    assert r.intersect(Roi((10, 10), (2, 2))).empty
    assert Roi((0, 0), (10, 10)).contains(r)
    assert not r.contains(Roi((0, 0), (10, 10)))
    assert Roi((3, 4), (2, 2)).relative_to(r) == (slice(1, 3), slice(1, 3))
    assert Roi.from_slices((slice(None), slice(2, -1)), (5, 6)) == Roi((0, 2), (5, 3))


def test_roi_rejects_bad_values():
    with pytest.raises(EmsegValueError, match="shape"):
        Roi((0,), (-1,))
    with pytest.raises(EmsegValueError, match="begin"):
        Roi((0, 0), (1,))
    with pytest.raises(EmsegValueError, match="step 1"):
        Roi.from_slices((slice(0, 4, 2),), (5,))
    with pytest.raises(EmsegTypeError, match="slices"):
        Roi.from_slices((3,), (5,))  # type: ignore[arg-type]


def test_blocking_hand_case():
    b = Blocking((10, 7), (4, 4), halo=1)
    assert len(b) == 6
    assert b.grid_shape == (3, 2)
    blk = b[5]
    assert blk.position == (2, 1)
    assert blk.write_roi == Roi((8, 4), (2, 3))
    assert blk.read_roi == Roi((7, 3), (3, 4))
    assert blk.write_in_read == (slice(1, 3), slice(1, 4))
    first = b[0]
    assert first.write_roi == Roi((0, 0), (4, 4))
    assert first.read_roi == Roi((0, 0), (5, 5))
    assert b.block_id((2, 1)) == 5
    assert list(b.neighbours_below(5)) == [(0, 3), (1, 4)]
    with pytest.raises(IndexError):
        b[6]


def test_blocking_with_roi_and_halo_larger_than_block():
    b = Blocking((20, 20), 3, halo=5, roi=(slice(4, 11), slice(0, 20)))
    assert b.grid_shape == (3, 7)
    assert b[0].write_roi == Roi((4, 0), (3, 3))
    assert b[0].read_roi == Roi((0, 0), (12, 8))  # halo reaches outside the roi
    assert b[20].write_roi == Roi((10, 18), (1, 2))
    with pytest.raises(EmsegValueError, match="inside the volume"):
        Blocking((5, 5), 2, roi=Roi((0, 0), (6, 5)))


def test_block_shape_and_halo_validation():
    with pytest.raises(EmsegValueError, match="block_shape"):
        Blocking((5, 5), (0, 2))
    with pytest.raises(EmsegValueError, match="2 entries"):
        Blocking((5, 5), (2, 2, 2))
    with pytest.raises(EmsegValueError, match="halo"):
        Blocking((5, 5), 2, halo=-1)
    with pytest.raises(EmsegTypeError, match="block_shape"):
        Blocking((5, 5), "big")  # type: ignore[arg-type]


@given(
    shape=st.lists(st.integers(1, 12), min_size=2, max_size=3),
    data=st.data(),
)
def test_write_rois_tile_the_volume_and_reads_contain_them(shape, data):
    ndim = len(shape)
    block = data.draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim))
    halo = data.draw(st.lists(st.integers(0, 7), min_size=ndim, max_size=ndim))
    blocking = Blocking(shape, block, halo=halo)
    cover = np.zeros(shape, dtype=np.int32)
    for i, blk in enumerate(blocking):
        assert blk.block_id == i
        assert blocking.block_id(blk.position) == i
        cover[blk.write_roi.to_slices()] += 1
        assert blk.read_roi.contains(blk.write_roi)
        assert blocking.volume.contains(blk.read_roi)
        # the read region is the write region grown by the halo, clipped
        for ax in range(ndim):
            assert blk.read_roi.begin[ax] == max(0, blk.write_roi.begin[ax] - halo[ax])
            assert blk.read_roi.end[ax] == min(shape[ax], blk.write_roi.end[ax] + halo[ax])
    assert (cover == 1).all()


def test_chunk_alignment():
    ok = Blocking((100, 100), (64, 32))
    assert check_chunk_alignment(ok, (32, 32), parallel=True)
    bad = Blocking((100, 100), (48, 32))
    with pytest.raises(ChunkAlignmentError, match=r"axis 0.*n_workers=1"):
        check_chunk_alignment(bad, (32, 32), parallel=True)
    assert not check_chunk_alignment(bad, (32, 32), parallel=False)
    # a roi that starts off the chunk grid is not aligned either
    shifted = Blocking((100, 100), 32, roi=(slice(8, 100), slice(0, 100)))
    with pytest.raises(ChunkAlignmentError):
        check_chunk_alignment(shifted, (32, 32), parallel=True)
    # ending at the volume's border (not a chunk boundary) is fine
    assert check_chunk_alignment(Blocking((100, 100), 64), (32, 32), parallel=True)


def test_default_block_shape():
    assert default_block_shape((512, 512, 512), (64, 64, 64)) == (128, 128, 128)
    assert default_block_shape((10, 10, 10), (64, 64, 64)) == (10, 10, 10)
    assert default_block_shape((30, 4096, 4096), (1, 256, 256)) == (30, 256, 256)
    for shape, chunks in [((1000, 50, 70), (16, 16, 16)), ((3000, 3000), (256, 256))]:
        b = default_block_shape(shape, chunks)
        assert all(x % c == 0 for x, c in zip(b, chunks, strict=True))
