"""``label(..., min_size=k)`` equals cc3d followed by removing objects of fewer than k voxels."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emseg.blockwise import label
from emseg.errors import EmsegValueError


def reference(img: np.ndarray, connectivity: int, min_size: int) -> np.ndarray:
    """cc3d labels with the objects of fewer than `min_size` voxels set to 0 (in memory)."""
    lab = cc3d.connected_components((img != 0).view(np.uint8), connectivity=connectivity)
    sizes = np.bincount(lab.ravel())
    small = sizes < min_size
    small[0] = True
    lab = lab.astype(np.int64)
    lab[small[lab]] = 0
    return lab


def blobs(shape, seed: int) -> np.ndarray:
    """Random sparse voxels grown a little: objects of many sizes, many crossing blocks."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    seeds = rng.random(shape) < 0.02
    grown = ndimage.binary_dilation(seeds, iterations=1) & (rng.random(shape) < 0.55)
    return grown.astype(np.uint8)


@pytest.mark.parametrize("connectivity", [6, 26])
@pytest.mark.parametrize("block_shape", [(4, 4, 4), (5, 7, 3), (20, 20, 20)])
@pytest.mark.parametrize("min_size", [2, 5, 9])
def test_min_size_equals_cc3d_then_filter(assert_same_labels, connectivity, block_shape, min_size):
    img = blobs((14, 17, 19), seed=min_size)
    ref = reference(img, connectivity, min_size)
    # the filter removes some objects and keeps others
    all_objects = cc3d.connected_components(img, connectivity=connectivity).max()
    assert 0 < np.unique(ref[ref > 0]).size < all_objects
    out = label(
        img,
        connectivity=connectivity,
        block_shape=block_shape,
        chunks=block_shape,
        min_size=min_size,
        n_workers=1,
        progress=False,
    )
    assert_same_labels(out[:], ref)
    assert out.attrs["emseg"]["n_labels"] == np.unique(ref[ref > 0]).size


def test_pieces_below_min_size_whose_total_is_above_are_kept(assert_same_labels):
    # a 1-voxel-wide rod of 12 voxels crosses three 4-blocks: 4 voxels per block
    img = np.zeros((4, 4, 12), np.uint8)
    img[1, 1, :] = 1
    # a 7-voxel rod cut by a block face into 3 + 4 voxels: each piece and the total < 8
    img[3, 3, 1:8] = 1
    out = label(img, block_shape=(4, 4, 4), chunks=(4, 4, 4), min_size=8, progress=False)
    got = out[:]
    assert np.all(got[1, 1, :] == 1)
    assert np.all(got[3, 3, :] == 0)
    assert int(got.max()) == 1
    assert out.attrs["emseg"]["n_labels"] == 1
    assert_same_labels(got, reference(img, 26, 8))


def test_object_merged_only_through_a_diagonal_keeps_its_total_size():
    # two 5-voxel rods in different blocks that touch only at a corner
    img = np.zeros((8, 8, 8), np.uint8)
    img[0:4, 3, 3] = 1  # block (0, 0, 0), ends at z=3, y=3, x=3
    img[4, 4, 4:8] = 1  # block (1, 1, 1), starts at z=4, y=4, x=4: corner contact
    img[3, 2, 3] = 1  # one more voxel in the first block: 5 + 4 = 9 voxels in all
    for conn, kept in ((26, 1), (6, 0)):
        out = label(
            img,
            connectivity=conn,
            block_shape=(4, 4, 4),
            chunks=(4, 4, 4),
            min_size=9,
            progress=False,
        )
        assert out.attrs["emseg"]["n_labels"] == kept
        assert int(np.count_nonzero(out[:])) == 9 * kept


@pytest.mark.parametrize("connectivity", [4, 8])
def test_min_size_2d_parallel(assert_same_labels, connectivity):
    img = blobs((40, 37), seed=3)
    ref = reference(img, connectivity, 4)
    out = label(
        img,
        connectivity=connectivity,
        block_shape=(8, 8),
        chunks=(8, 8),
        min_size=4,
        n_workers=2,
        progress=False,
    )
    assert_same_labels(out[:], ref)


def test_min_size_with_threshold_and_roi(assert_same_labels):
    rng = np.random.default_rng(1)
    img = (rng.random((12, 12, 12)) * 255).astype(np.uint8)
    roi = (slice(4, 12), slice(0, 12), slice(4, 11))
    out = label(
        img,
        threshold=120,
        roi=roi,
        block_shape=(4, 4, 4),
        chunks=(4, 4, 4),
        min_size=6,
        connectivity=6,
        n_workers=1,
        progress=False,
    )
    got = out[:]
    assert_same_labels(got[roi], reference((img[roi] > 120).astype(np.uint8), 6, 6))
    inside = np.zeros(img.shape, bool)
    inside[roi] = True
    assert not got[~inside].any()


def test_min_size_removing_everything_gives_zeros():
    img = np.zeros((8, 8, 8), np.uint8)
    img[::3, ::3, ::3] = 1  # single voxels
    out = label(img, block_shape=(4, 4, 4), chunks=(4, 4, 4), min_size=2, progress=False)
    assert not out[:].any()
    assert out.attrs["emseg"]["n_labels"] == 0


@pytest.mark.parametrize("min_size", [0, 1])
def test_min_size_0_and_1_keep_everything(assert_same_labels, min_size):
    img = blobs((10, 10, 10), seed=5)
    out = label(img, block_shape=(4, 4, 4), chunks=(4, 4, 4), min_size=min_size, progress=False)
    assert_same_labels(out[:], cc3d.connected_components(img, connectivity=26))


@pytest.mark.parametrize("bad", [-1, 2.5, True, "3", None])
def test_min_size_must_be_a_nonnegative_int(bad):
    with pytest.raises(EmsegValueError, match="min_size"):
        label(np.ones((4, 4), np.uint8), min_size=bad, progress=False)


def test_resume_with_another_min_size_is_refused(tmp_path):
    img = blobs((8, 8, 8), seed=2)
    path = tmp_path / "lab.zarr"
    kw = {"block_shape": (4, 4, 4), "chunks": (4, 4, 4), "progress": False}
    first = label(img, out=path, min_size=3, **kw)[:]
    # the same parameters resume (complete: returned as is)
    again = label(img, out=path, min_size=3, resume=True, **kw)[:]
    np.testing.assert_array_equal(first, again)
    with pytest.raises(EmsegValueError, match="min_size: 3 then, 4 now"):
        label(img, out=path, min_size=4, resume=True, **kw)


@settings(max_examples=15)
@given(
    seed=st.integers(0, 10_000),
    min_size=st.integers(2, 12),
    block=st.tuples(st.integers(2, 7), st.integers(2, 7), st.integers(2, 7)),
    connectivity=st.sampled_from([6, 18, 26]),
)
def test_min_size_property(assert_same_labels, seed, min_size, block, connectivity):
    img = blobs((9, 10, 11), seed=seed)
    out = label(
        img,
        connectivity=connectivity,
        block_shape=block,
        chunks=block,
        min_size=min_size,
        n_workers=1,
        progress=False,
    )
    assert_same_labels(out[:], reference(img, connectivity, min_size))
