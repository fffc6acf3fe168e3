"""map_blocks with channel-first outputs and with a mask, against the in-memory result."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from scipy import ndimage

from emseg.blockwise import Block, map_blocks
from emseg.errors import EmsegTypeError, EmsegValueError


def two_filters(block: np.ndarray, *, sigma: float) -> np.ndarray:
    """(2, *block): a Gaussian and a 3-wide mean, float32."""
    b = block.astype(np.float32)
    return np.stack(
        [
            ndimage.gaussian_filter(b, sigma, mode="reflect"),
            ndimage.uniform_filter(b, 3, mode="reflect"),
        ]
    )


def two_filters_cropped(data: np.ndarray, *, sigma: float, block: Block) -> np.ndarray:
    """The same, returning only the write region (pass_block=True)."""
    return two_filters(data, sigma=sigma)[(slice(None), *block.write_in_read)]


@pytest.mark.parametrize(
    ("shape", "block_shape", "chunks"),
    [
        ((30, 41), (8, 16), (8, 16)),  # blocks that do not divide the image
        ((30, 41), (4, 4), (4, 4)),  # blocks smaller than the halo (9)
        ((13, 17, 22), (8, 8, 8), (4, 8, 8)),
    ],
)
def test_channels_equal_in_memory(tmp_path, rng, shape, block_shape, chunks):
    image = rng.integers(0, 255, shape, dtype=np.uint8)
    ref = two_filters(image, sigma=2.0)
    out = map_blocks(
        two_filters,
        image,
        out=tmp_path / "stack.zarr",
        halo=9,  # gaussian radius 8 + 1 for the mean
        dtype=np.float32,
        channels=2,
        block_shape=block_shape,
        chunks=chunks,
        progress=False,
        kwargs={"sigma": 2.0},
    )
    assert out.shape == (2, *shape)
    assert tuple(out.chunks) == (2, *chunks)
    np.testing.assert_allclose(out[:], ref, rtol=0, atol=1e-4)


def test_channels_from_write_region_on_threads_into_an_ome_zarr(tmp_path, rng):
    from emseg.io import open_image

    image = rng.random((12, 20, 24), dtype=np.float32)
    ref = two_filters(image, sigma=1.0)
    out = map_blocks(
        two_filters_cropped,
        image,
        out=tmp_path / "stack.ome.zarr",
        halo=5,
        dtype=np.float32,
        channels=2,
        pass_block=True,
        block_shape=(8, 8, 8),
        chunks=(4, 8, 8),
        spacing=(50.0, 4.0, 4.0),
        n_workers=2,
        progress=False,
        kwargs={"sigma": 1.0},
    )
    np.testing.assert_allclose(out[:], ref, rtol=0, atol=1e-5)
    opened = open_image(tmp_path / "stack.ome.zarr")
    assert opened.axes == "czyx"
    assert opened.spacing == (50.0, 4.0, 4.0)


def test_channels_into_an_existing_array(rng):
    image = rng.integers(0, 9, (16, 24), dtype=np.uint8)
    out = zarr.create_array(
        store=zarr.storage.MemoryStore(), shape=(2, 16, 24), dtype="f4", chunks=(1, 8, 8)
    )
    map_blocks(
        two_filters,
        image,
        out=out,
        halo=9,
        channels=2,
        dtype=np.float32,
        n_workers=2,
        progress=False,
        kwargs={"sigma": 1.5},
    )
    np.testing.assert_allclose(out[:], two_filters(image, sigma=1.5), rtol=0, atol=1e-5)


def test_channels_validation(rng):
    image = rng.random((8, 8))
    with pytest.raises(EmsegValueError, match=r"`channels` must be >= 1; got 0"):
        map_blocks(two_filters, image, channels=0, progress=False, kwargs={"sigma": 1.0})
    with pytest.raises(EmsegTypeError, match="`channels` must be None or a positive integer"):
        map_blocks(two_filters, image, channels="2", progress=False, kwargs={"sigma": 1.0})
    with pytest.raises(EmsegValueError, match=r"with `channels` it must return \(C, \*block\)"):
        map_blocks(np.negative, image, channels=1, progress=False)
    with pytest.raises(EmsegValueError, match="after a leading channel axis"):
        map_blocks(
            lambda b: np.zeros((1, 3, 3)),
            image,
            channels=1,
            block_shape=4,
            chunks=4,
            progress=False,
        )


def smooth(block: np.ndarray) -> np.ndarray:
    return ndimage.uniform_filter(block.astype(np.float32), 5, mode="reflect")


@pytest.mark.parametrize("block_shape", [(8, 8), (5, 7), (16, 32)])
def test_mask_equals_masked_in_memory_result(tmp_path, rng, block_shape):
    image = rng.random((32, 48), dtype=np.float32)
    mask = np.zeros((32, 48), bool)
    mask[3:12, 5:20] = True  # a few blocks only
    mask[25, 40] = True
    ref = np.where(mask, smooth(image), 0)
    out = map_blocks(
        smooth,
        image,
        out=tmp_path / "masked.zarr",
        halo=2,
        mask=mask,
        block_shape=block_shape,
        chunks=block_shape,
        scheduler="serial" if block_shape == (5, 7) else None,
        progress=False,
    )
    np.testing.assert_allclose(out[:], ref, rtol=0, atol=1e-6)


def test_mask_skips_empty_blocks_and_zeroes_a_reused_output(tmp_path, rng):
    image = rng.random((16, 16), dtype=np.float32) + 1  # never 0
    mask = np.zeros((16, 16), np.uint8)
    mask[0:3, 0:3] = 7  # only block (0, 0) of 8x8 blocks
    seen: list[tuple[int, ...]] = []

    def record(data: np.ndarray, *, block) -> np.ndarray:
        seen.append(block.position)
        return np.ones(block.write_roi.shape, np.float32)

    out = zarr.create_array(
        store=str(tmp_path / "o.zarr"), shape=(16, 16), dtype="f4", chunks=(8, 8)
    )
    out[:] = 5.0  # an output written before: the mask must not leave old values
    map_blocks(
        record,
        image,
        out=out,
        mask=mask,
        block_shape=8,
        pass_block=True,
        n_workers=1,
        overwrite=True,
        progress=False,
    )
    assert seen == [(0, 0)]  # the three blocks without mask voxels are not computed
    expected = np.zeros((16, 16), np.float32)
    expected[0:3, 0:3] = 1
    np.testing.assert_array_equal(out[:], expected)
    stored = sorted(p.name for p in (tmp_path / "o.zarr" / "c").rglob("*") if p.is_file())
    assert stored == ["0"]  # only chunk (0, 0): the empty blocks store nothing


def test_mask_shape_is_checked(rng):
    with pytest.raises(EmsegValueError, match=r"`mask` must have the inputs' shape \(8, 8\)"):
        map_blocks(np.negative, rng.random((8, 8)), mask=np.ones((8, 9)), progress=False)
