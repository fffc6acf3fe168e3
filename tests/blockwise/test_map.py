"""map_blocks and the filters: blockwise equals in memory; outputs, journal and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import zarr
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from emseg.blockwise import (
    JOURNAL_NAME,
    gaussian_filter,
    gaussian_halo,
    is_complete,
    map_blocks,
    median_filter,
)
from emseg.errors import ChunkAlignmentError, EmsegValueError, OutputExistsError


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(7)
    return (rng.random((18, 21, 23)) * 255).astype(np.uint8)


# block shapes: dividing, not dividing the volume, smaller than the halo, bigger than the volume
BLOCKS = [(6, 7, 23), (5, 8, 9), (3, 3, 3), (32, 32, 32)]


@pytest.mark.parametrize("block", BLOCKS)
def test_gaussian_equals_scipy(volume, block):
    sigma = (1.5, 2.0, 1.0)
    out = gaussian_filter(
        volume, sigma=sigma, unit="voxel", block_shape=block, chunks=block, progress=False
    )
    ref = ndimage.gaussian_filter(volume.astype(np.float32), sigma)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:], ref, rtol=0, atol=1e-5)
    assert is_complete(out)


def test_gaussian_in_nm_uses_spacing(volume):
    # sigma 8 nm on a 8 x 4 x 4 nm grid = (1, 2, 2) voxels
    out = gaussian_filter(
        volume,
        sigma=8.0,
        spacing=(8.0, 4.0, 4.0),
        block_shape=(5, 8, 9),
        chunks=(5, 8, 9),
        progress=False,
    )
    ref = ndimage.gaussian_filter(volume.astype(np.float32), (1.0, 2.0, 2.0))
    np.testing.assert_allclose(out[:], ref, atol=1e-5)
    assert gaussian_halo((1.0, 2.0, 2.0), 4.0) == (4, 8, 8)


@pytest.mark.parametrize("block", BLOCKS[:3])
def test_median_equals_scipy(volume, block):
    out = median_filter(
        volume, size=3, unit="voxel", block_shape=block, chunks=block, progress=False
    )
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[:], ndimage.median_filter(volume, size=3))


@given(
    block=st.tuples(st.integers(1, 12), st.integers(1, 14)),
    sigma=st.floats(0.5, 3.0),
)
def test_gaussian_2d_any_block_shape(block, sigma):
    image = np.arange(11 * 14, dtype=np.float32).reshape(11, 14) % 7
    out = gaussian_filter(
        image, sigma=sigma, unit="voxel", block_shape=block, chunks=block, progress=False
    )
    ref = ndimage.gaussian_filter(image, sigma)
    np.testing.assert_allclose(out[:], ref, atol=1e-5)


def _diff(a, b):
    return a.astype(np.int16) - b.astype(np.int16)


def test_map_blocks_several_inputs_and_write_shaped_results(volume):
    other = volume[::-1].copy()
    out = map_blocks(
        _diff,
        [volume, other],
        dtype=np.int16,
        block_shape=(4, 8, 8),
        chunks=(4, 8, 8),
        progress=False,
    )
    np.testing.assert_array_equal(out[:], _diff(volume, other))


def _sum_over_halo_box(data):
    return ndimage.uniform_filter(data.astype(np.float64), size=5, mode="constant") * 125


def test_halo_larger_than_block_is_exact(volume):
    # a box sum with radius 2 and zero padding at the volume border: border handling
    # differs from reflect, so clip the comparison to voxels >= 2 from the border
    small = volume[:8, :9, :10]
    out = map_blocks(
        _sum_over_halo_box,
        small,
        halo=2,
        dtype=np.float64,
        block_shape=(1, 2, 3),
        chunks=(1, 2, 3),
        progress=False,
    )
    ref = _sum_over_halo_box(small)
    inner = (slice(2, -2),) * 3
    np.testing.assert_allclose(out[:][inner], ref[inner])


def test_roi_writes_only_inside(volume):
    roi = (slice(4, 12), slice(0, 21), slice(8, 16))
    out = map_blocks(
        np.negative, volume.astype(np.int16), roi=roi, block_shape=4, chunks=4, progress=False
    )
    expected = np.zeros(volume.shape, np.int16)
    expected[roi] = -volume[roi].astype(np.int16)
    np.testing.assert_array_equal(out[:], expected)


def test_output_path_existing_and_overwrite(tmp_path, volume):
    path = tmp_path / "out.zarr"
    a = gaussian_filter(volume, sigma=1, unit="voxel", out=path, chunks=8, progress=False)
    assert (path / JOURNAL_NAME / "complete").exists()
    assert is_complete(a)
    with pytest.raises(OutputExistsError, match="overwrite"):
        gaussian_filter(volume, sigma=1, unit="voxel", out=path, chunks=8, progress=False)
    b = gaussian_filter(
        volume, sigma=2, unit="voxel", out=path, chunks=8, overwrite=True, progress=False
    )
    np.testing.assert_allclose(
        b[:], ndimage.gaussian_filter(volume.astype(np.float32), 2), atol=1e-5
    )
    # resuming a complete job with the same parameters does nothing
    c = gaussian_filter(
        volume, sigma=2, unit="voxel", out=path, chunks=8, resume=True, progress=False
    )
    np.testing.assert_array_equal(c[:], b[:])
    with pytest.raises(EmsegValueError, match=r"different parameters.*sigma"):
        gaussian_filter(
            volume, sigma=3, unit="voxel", out=path, chunks=8, resume=True, progress=False
        )
    with pytest.raises(EmsegValueError, match="exclude each other"):
        gaussian_filter(volume, sigma=2, unit="voxel", out=path, resume=True, overwrite=True)


def test_resume_skips_recorded_blocks_and_redoes_the_rest(tmp_path, volume):
    from emseg.blockwise import Blocking

    path = tmp_path / "out.zarr"
    kw = {
        "sigma": 1.0,
        "unit": "voxel",
        "out": path,
        "block_shape": 8,
        "chunks": 8,
        "progress": False,
    }
    full = gaussian_filter(volume, **kw)[:]
    journal = path / JOURNAL_NAME
    blocking = Blocking(volume.shape, 8)
    recorded = set(range(0, len(blocking), 2))
    # an interrupted job: not complete, even blocks recorded, every chunk garbage
    (journal / "complete").unlink()
    (journal / "map").mkdir()
    for bid in recorded:
        (journal / "map" / str(bid)).write_bytes(b"")
    arr = zarr.open_array(str(path / "0"), mode="r+")
    arr[:] = -1.0
    arr.attrs["emseg"] = {"complete": False, "job": "gaussian_filter"}
    with pytest.raises(OutputExistsError):
        gaussian_filter(volume, **kw)
    out = gaussian_filter(volume, **kw, resume=True)
    result = out[:]
    for blk in blocking:
        sl = blk.write_roi.to_slices()
        if blk.block_id in recorded:  # skipped: still what the "killed" job left
            assert (result[sl] == -1).all()
        else:  # redone
            np.testing.assert_array_equal(result[sl], full[sl])
    assert is_complete(out)


def test_resume_of_foreign_output_refused(tmp_path, volume):
    path = tmp_path / "foreign.zarr"
    zarr.create_array(store=str(path), shape=volume.shape, dtype="f4", chunks=(8, 8, 8))
    with pytest.raises(OutputExistsError, match="no job journal"):
        gaussian_filter(volume, sigma=1, out=path, resume=True, progress=False)


def test_existing_zarr_array_as_out(tmp_path, volume):
    arr = zarr.create_array(
        store=str(tmp_path / "arr.zarr"), shape=volume.shape, dtype="f4", chunks=(6, 7, 8)
    )
    out = gaussian_filter(volume, sigma=1, unit="voxel", out=arr, progress=False)
    assert out is arr
    np.testing.assert_allclose(
        arr[:], ndimage.gaussian_filter(volume.astype(np.float32), 1), atol=1e-5
    )
    with pytest.raises(OutputExistsError):
        gaussian_filter(volume, sigma=1, unit="voxel", out=arr, progress=False)
    bad = zarr.create_array(store=str(tmp_path / "b.zarr"), shape=(3, 3, 3), dtype="f4")
    with pytest.raises(EmsegValueError, match="shape"):
        gaussian_filter(volume, sigma=1, out=bad, progress=False)


def test_chunk_alignment_error_with_workers(volume):
    with pytest.raises(ChunkAlignmentError, match="block_shape"):
        gaussian_filter(volume, sigma=1, block_shape=(6, 6, 6), chunks=(4, 4, 4), n_workers=2)
    # serially, unaligned blocks are allowed and still exact
    out = gaussian_filter(
        volume,
        sigma=1,
        unit="voxel",
        block_shape=(6, 6, 6),
        chunks=(4, 4, 4),
        n_workers=1,
        progress=False,
    )
    np.testing.assert_allclose(
        out[:], ndimage.gaussian_filter(volume.astype(np.float32), 1), atol=1e-5
    )


def test_mismatched_inputs_and_bad_results(volume):
    with pytest.raises(EmsegValueError, match="same shape"):
        map_blocks(_diff, [volume, volume[:, :, :-1]], progress=False)
    with pytest.raises(EmsegValueError, match="returned shape"):
        map_blocks(np.ravel, volume, block_shape=8, chunks=8, progress=False)
    with pytest.raises(EmsegValueError, match="2D"):
        map_blocks(np.negative, np.zeros((2, 2, 2, 2)), progress=False)
    with pytest.raises(EmsegValueError, match="unit"):
        gaussian_filter(volume, sigma=1, unit="px")  # type: ignore[arg-type]
    with pytest.raises(EmsegValueError, match="sigma"):
        gaussian_filter(volume, sigma=(1, 2))


def test_lazy_image_and_zarr_inputs(tmp_path, volume):
    src = zarr.create_array(
        store=str(tmp_path / "in.zarr"), shape=volume.shape, dtype="u1", chunks=(8, 8, 8)
    )
    src[:] = volume
    from emseg.io import open_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lazy = open_image(tmp_path / "in.zarr", spacing=(2.0, 1.0, 1.0))
    out = gaussian_filter(lazy, sigma=2.0, block_shape=8, chunks=8, progress=False)
    ref = ndimage.gaussian_filter(volume.astype(np.float32), (1.0, 2.0, 2.0))
    np.testing.assert_allclose(out[:], ref, atol=1e-5)
    out2 = median_filter(src, size=3, unit="voxel", block_shape=8, chunks=8, progress=False)
    np.testing.assert_array_equal(out2[:], ndimage.median_filter(volume, 3))


def test_sharded_output_aligns_to_shards(tmp_path, volume):
    arr = zarr.create_array(
        store=str(tmp_path / "sharded.zarr"),
        shape=volume.shape,
        dtype="f4",
        chunks=(3, 7, 8),
        shards=(6, 21, 24),
    )
    with pytest.raises(ChunkAlignmentError):
        gaussian_filter(volume, sigma=1, out=arr, block_shape=(3, 7, 8), progress=False)
    out = gaussian_filter(volume, sigma=1, unit="voxel", out=arr, progress=False)
    np.testing.assert_allclose(
        out[:], ndimage.gaussian_filter(volume.astype(np.float32), 1), atol=1e-5
    )
