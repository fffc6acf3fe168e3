"""The filters' default block shape, and the filters with it against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from emseg.blockwise import gaussian_filter, median_filter
from emseg.blockwise._filters import filter_block_shape


@pytest.mark.parametrize(
    ("shape", "chunks", "halo", "expected"),
    [
        # equal halo: x first (contiguous), then y, then z, ... -> 128 x 256 x 256
        ((512, 512, 512), (64, 64, 64), (8, 8, 8), (128, 256, 256)),
        # thin z halo (anisotropic stack): grow in-plane first
        ((40, 2048, 2048), (8, 256, 256), (1, 8, 8), (32, 512, 512)),
        # never beyond the volume (rounded up to whole chunks)
        ((30, 41), (8, 16), (9, 9), (32, 48)),
        ((100, 100), (100, 100), (3, 3), (100, 100)),
    ],
)
def test_filter_block_shape_hand_computed(shape, chunks, halo, expected):
    assert filter_block_shape(shape, chunks, halo) == expected


@given(
    shape=st.tuples(*[st.integers(1, 600)] * 3),
    chunks=st.tuples(*[st.sampled_from([8, 16, 32, 64])] * 3),
    halo=st.tuples(*[st.integers(0, 12)] * 3),
)
def test_filter_block_shape_properties(shape, chunks, halo):
    chunks = tuple(min(c, s) for c, s in zip(chunks, shape, strict=True))
    block = filter_block_shape(shape, chunks, halo, target_voxels=2**18)
    cap = [-(-s // c) * c for s, c in zip(shape, chunks, strict=True)]
    for b, c, m in zip(block, chunks, cap, strict=True):
        assert b % c == 0 or b == m  # whole chunks
        assert c <= b <= m
    # big enough, unless it covers the whole volume
    assert math.prod(block) >= 2**18 or list(block) == cap


def test_gaussian_and_median_with_default_blocks_equal_scipy(tmp_path, rng):
    image = rng.integers(0, 255, (40, 70, 90), dtype=np.uint8)
    out = gaussian_filter(
        image,
        sigma=1.5,
        unit="voxel",
        out=tmp_path / "g.zarr",
        chunks=16,
        n_workers=2,
        progress=False,
    )
    ref = ndimage.gaussian_filter(image.astype(np.float32), 1.5, output=np.float32)
    np.testing.assert_array_equal(out[:], ref)
    med = median_filter(
        image, size=3, unit="voxel", out=tmp_path / "m.zarr", chunks=16, progress=False
    )
    np.testing.assert_array_equal(med[:], ndimage.median_filter(image, 3, mode="reflect"))
