"""Blockwise instance segmentation equals the in-memory result (VOI = 0) where stated."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from emseg.errors import EmsegValueError, OutputExistsError
from emseg.instance import (
    agglomerate,
    agglomerate_blockwise,
    components_blockwise,
    distance_watershed,
    link_sections,
    link_sections_blockwise,
    mutex_watershed,
    mutex_watershed_blockwise,
    supervoxels,
    threshold_components,
    watershed_blockwise,
)
from emseg.metrics import voi

BLOCKS = [(8, 13, 11), (6, 26, 16)]


def same(a, b) -> bool:
    a = np.asarray(a).astype(np.int64)
    b = np.asarray(b).astype(np.int64)
    return np.array_equal(a == 0, b == 0) and voi(a, b, ignore_truth=()).total == 0.0


@pytest.fixture(scope="module")
def prob():
    rng = np.random.default_rng(7)
    p = ndimage.gaussian_filter(rng.random((16, 26, 32)), 1.5)
    p = (p - p.min()) / (p.max() - p.min())
    # a hollow ball: a hole to fill
    z, y, x = np.ogrid[:16, :26, :32]
    r2 = (z - 8) ** 2 + (y - 13) ** 2 + (x - 16) ** 2
    p[(r2 < 36) & (r2 >= 9)] = 0.95
    p[r2 < 9] = 0.1
    return p


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"high_threshold": 0.75},
        {"min_size_nm3": 20 * 8.0, "fill_all_holes": True},
        {"max_hole_nm3": 200 * 8.0, "high_threshold": 0.7, "connectivity": 6},
    ],
)
def test_components_blockwise_equals_in_memory(prob, block, kw):
    ref = threshold_components(prob, threshold=0.6, spacing=2.0, **kw)
    out = components_blockwise(
        prob, threshold=0.6, spacing=2.0, block_shape=block, chunks=block, progress=False, **kw
    )
    assert out.dtype == np.uint64
    assert same(ref, out[:])
    assert out.attrs["emseg"]["n_labels"] == ref.max()


def test_components_hole_is_filled(prob):
    ref = threshold_components(prob, threshold=0.6, fill_all_holes=True)
    assert ref[8, 13, 16] > 0
    assert threshold_components(prob, threshold=0.6)[8, 13, 16] == 0


def test_components_to_ome_zarr_resume_and_overwrite(prob, tmp_path):
    path = tmp_path / "objects.ome.zarr"
    kw = {
        "threshold": 0.6,
        "fill_all_holes": True,
        "block_shape": (8, 13, 16),
        "chunks": (8, 13, 16),
    }
    out = components_blockwise(prob, out=path, progress=False, **kw)
    ref = threshold_components(prob, threshold=0.6, fill_all_holes=True)
    assert same(ref, out[:])
    assert not (tmp_path / "objects.ome.zarr.scratch").exists()
    with pytest.raises(OutputExistsError):
        components_blockwise(prob, out=path, progress=False, **kw)
    again = components_blockwise(prob, out=path, progress=False, resume=True, **kw)
    assert same(ref, again[:])
    assert out.attrs["emseg"]["method"] == "components"
    components_blockwise(prob, out=path, progress=False, overwrite=True, **kw)


@pytest.mark.parametrize("block", [(3, 16, 16), (4, 11, 13)])
def test_link_sections_blockwise_equals_in_memory(block, ellipse_stack):
    _truth, sections = ellipse_stack(np.random.default_rng(2))
    ref = link_sections(sections, min_iou=0.5)
    out = link_sections_blockwise(
        sections, min_iou=0.5, block_shape=block, chunks=block, progress=False
    )
    assert same(ref, out[:])
    prob = (sections > 0).astype(np.float32)
    out_p = link_sections_blockwise(
        prob, threshold=0.5, block_shape=block, chunks=block, progress=False
    )
    assert same(ref, out_p[:])


def _pairs_of_spheres(shape=(24, 40, 40)):
    rng = np.random.default_rng(1)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    m = np.zeros(shape, bool)
    for cz, cy, cx in [(6, 8, 8), (12, 28, 10), (16, 12, 30), (8, 30, 30)]:
        d = rng.integers(4, 6)
        m |= ((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 < 16) | (
            (z - cz) ** 2 + (y - cy) ** 2 + (x - cx - d) ** 2 < 16
        )
    return m


@pytest.mark.parametrize("block", [(8, 16, 16), (12, 20, 13)])
def test_watershed_exact_when_components_fit_in_the_halo(block):
    m = _pairs_of_spheres()
    ref = distance_watershed(m, min_seed_distance_nm=3)
    assert ref.max() == 8
    out = watershed_blockwise(
        m.astype(np.uint8),
        halo=14,
        min_seed_distance_nm=3,
        block_shape=block,
        chunks=block,
        progress=False,
    )
    assert same(ref, out[:])


def test_watershed_small_halo_keeps_seams_consistent():
    m = _pairs_of_spheres()
    out = watershed_blockwise(
        m.astype(np.uint8),
        halo=2,
        min_seed_distance_nm=3,
        block_shape=(8, 9, 11),
        chunks=(8, 9, 11),
        progress=False,
    )[:]
    assert np.array_equal(out > 0, m)  # every foreground voxel is labelled, nothing else


def _cells(shape=(12, 34, 34), cell=6, seed=3):
    """Cubic cells separated by 1-voxel membranes; noisy (tie-free) boundary map."""
    rng = np.random.default_rng(seed)
    bnd = rng.random(shape) * 0.1
    for axis in (1, 2):
        idx = [slice(None)] * 3
        idx[axis] = slice(cell, None, cell + 1)
        bnd[tuple(idx)] = 0.9 + rng.random(bnd[tuple(idx)].shape) * 0.1
    return bnd.astype(np.float32)


def _cell_majority(seg: np.ndarray) -> list[int]:
    """The id covering each of the 5 x 5 cells (asserting it covers >= 95 % of it)."""
    majority = []
    for cy in range(5):
        for cx in range(5):
            ids, n = np.unique(seg[:, 7 * cy : 7 * cy + 6, 7 * cx : 7 * cx + 6], return_counts=True)
            assert n.max() >= 0.95 * n.sum()
            majority.append(int(ids[n.argmax()]))
    return majority


@pytest.mark.parametrize("block", [(12, 12, 12), (6, 17, 9)])
def test_agglomeration_on_one_global_graph_finds_every_cell(block):
    """Fragments cut at block faces are merged back: each cell is one segment, for any block.

    (The exact guarantee, blockwise = in-memory chain on the same fragments, is
    tested in test_graph_blockwise.py.)
    """
    bnd = _cells()
    ref = agglomerate(supervoxels(bnd), bnd, threshold=0.4)
    assert len(set(_cell_majority(ref))) == 25
    out = agglomerate_blockwise(
        bnd, halo=(12, 16, 16), threshold=0.4, block_shape=block, chunks=block, progress=False
    )
    assert len(set(_cell_majority(out[:]))) == 25
    frag = supervoxels(bnd)  # the in-memory fragments: the in-memory result, any block shape
    out2 = agglomerate_blockwise(
        bnd,
        fragments=frag,
        threshold=0.4,
        block_shape=block,
        chunks=block,
        progress=False,
    )
    assert same(ref, out2[:])


def test_mws_blockwise_exact_with_large_halo():
    rng = np.random.default_rng(5)
    truth = np.zeros((4, 20, 20), np.int64)
    truth[:, :, 10:] = 1
    truth[:, 10:, :10] = 2
    offsets = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, -3, 0), (0, 0, -3)]
    aff = np.zeros((5, *truth.shape), np.float32)
    for c, off in enumerate(offsets):
        sh = np.roll(truth, shift=[-o for o in off], axis=(0, 1, 2))
        aff[c] = np.where(sh == truth, 0.8, 0.2) + rng.random(truth.shape) * 0.1
    ref = mutex_watershed(aff, offsets)
    out = mutex_watershed_blockwise(
        list(aff),
        offsets,
        halo=(4, 20, 20),
        block_shape=(4, 10, 10),
        chunks=(4, 10, 10),
        progress=False,
    )
    assert same(ref, out[:])


def test_bad_input(prob):
    with pytest.raises(EmsegValueError, match="min_size_nm3"):
        components_blockwise(prob, spacing=(40, 4, 4), min_size_nm3=10, progress=False)
    with pytest.raises(EmsegValueError, match="min_iou"):
        link_sections_blockwise(np.zeros((2, 4, 4), np.uint8), min_iou=2, progress=False)


def test_watershed_blockwise_on_disk_refuses_overwrite_and_resumes(tmp_path):
    m = _pairs_of_spheres()
    path = tmp_path / "ws.ome.zarr"
    kw = {
        "halo": 14,
        "min_seed_distance_nm": 3,
        "block_shape": (12, 20, 20),
        "chunks": (12, 20, 20),
    }
    out = watershed_blockwise(m.astype(np.uint8), out=path, progress=False, **kw)
    ref = distance_watershed(m, min_seed_distance_nm=3)
    assert same(ref, out[:])
    assert out.attrs["emseg"]["n_labels"] == 8
    with pytest.raises(OutputExistsError):
        watershed_blockwise(m.astype(np.uint8), out=path, progress=False, **kw)
    again = watershed_blockwise(m.astype(np.uint8), out=path, progress=False, resume=True, **kw)
    assert same(ref, again[:])


@settings(max_examples=6)
@given(
    block=st.tuples(st.integers(3, 12), st.integers(5, 20), st.integers(5, 20)),
    seed=st.integers(0, 2**31),
)
def test_components_blockwise_any_block_shape(block, seed):
    rng = np.random.default_rng(seed)
    p = ndimage.gaussian_filter(rng.random((10, 18, 20)), 1.2)
    p = (p - p.min()) / (p.max() - p.min())
    ref = threshold_components(p, threshold=0.55, high_threshold=0.7, min_size_nm3=5.0)
    out = components_blockwise(
        p,
        threshold=0.55,
        high_threshold=0.7,
        min_size_nm3=5.0,
        block_shape=block,
        chunks=block,
        progress=False,
    )
    assert same(ref, out[:])
