"""Tiling geometry: global grid, tiles touching a box, Gaussian importance."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emseg.errors import EmsegValueError
from emseg.semantic.deep import gaussian_importance, tile_grid, tile_starts, tiles_for_region
from emseg.semantic.deep._tiling import check_tile_shape, read_box, starts_touching, tile_stride


def test_hand_computed_starts():
    assert tile_stride(64, 0.25) == 48
    assert tile_starts(64, 64, 0.25) == (0,)
    assert tile_starts(100, 64, 0.25) == (0, 36)
    assert tile_starts(200, 64, 0.5) == (0, 32, 64, 96, 128, 136)
    assert tile_starts(10, 64, 0.25) == (0,)
    assert tile_starts(7, 1, 0.0) == tuple(range(7))


@given(size=st.integers(1, 400), tile=st.integers(1, 80), overlap=st.floats(0.0, 0.9))
def test_starts_cover_every_voxel(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    assert list(starts) == sorted(set(starts))
    covered = np.zeros(size, bool)
    for s in starts:
        assert s >= 0
        assert s + tile <= max(size, tile)
        covered[s : s + tile] = True
    assert covered.all()
    # consecutive tiles never leave a gap and never step more than the stride
    stride = tile_stride(tile, overlap)
    assert all(b - a <= stride for a, b in itertools.pairwise(starts))


@given(
    size=st.integers(20, 300),
    tile=st.integers(4, 64),
    lo=st.integers(0, 299),
    length=st.integers(1, 100),
)
def test_touching_is_exactly_the_intersecting_tiles(size, tile, lo, length):
    lo = min(lo, size - 1)
    hi = min(size, lo + length)
    starts = tile_starts(size, tile, 0.25)
    got = starts_touching(starts, tile, lo, hi)
    brute = tuple(s for s in starts if any(s <= v < s + tile for v in range(lo, hi)))
    assert got == brute


def test_tiles_for_region_and_read_box():
    grid = tile_grid((1, 100, 200), (1, 64, 64), (0.0, 0.25, 0.25))
    assert grid == ((0,), (0, 36), (0, 48, 96, 136))
    tiles = tiles_for_region(grid, (1, 64, 64), (0, 40, 100), (1, 50, 120))
    assert tiles == [(0, 0, 48), (0, 0, 96), (0, 36, 48), (0, 36, 96)]
    assert read_box(tiles, (1, 64, 64), (1, 100, 200)) == ((0, 0, 48), (1, 100, 160))


def test_gaussian_importance():
    w = gaussian_importance((1, 9, 9))
    assert w.dtype == np.float32
    assert w.shape == (1, 9, 9)
    assert w[0, 4, 4] == 1.0
    assert (w > 0).all()
    # separable Gaussian with sigma = 0.125 * 9
    g = np.exp(-0.5 * ((np.arange(9) - 4) / (0.125 * 9)) ** 2)
    np.testing.assert_allclose(w[0, 4], g / g.max(), rtol=1e-6)
    np.testing.assert_allclose(w[0], np.outer(g, g) / g.max() ** 2, rtol=1e-5, atol=1e-12)
    np.testing.assert_array_equal(w[0], w[0].T)


def test_errors():
    with pytest.raises(EmsegValueError, match="`overlap`"):
        tile_starts(10, 4, 1.0)
    with pytest.raises(EmsegValueError, match=r"multiples .*Try \(1, 64, 64\)"):
        check_tile_shape((1, 70, 64), (1, 8, 8))
