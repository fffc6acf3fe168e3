"""Compiled seeded watershed vs scikit-image; seeds in nm; distance watershed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from skimage.segmentation import watershed

from emseg.errors import EmsegValueError
from emseg.instance import distance_watershed, find_seeds, seeded_watershed


@given(
    shape=st.sampled_from([(5, 7, 9), (12, 10, 11), (30, 40), (1, 9, 9)]),
    n_markers=st.integers(1, 12),
    seed=st.integers(0, 2**31),
    masked=st.booleans(),
)
def test_equals_skimage_on_distinct_float_values(shape, n_markers, seed, masked):
    rng = np.random.default_rng(seed)
    img = rng.random(shape)  # distinct values: no ties, the order is fully defined
    markers = np.zeros(shape, np.int32)
    flat = rng.choice(img.size, min(n_markers, img.size), replace=False)
    markers.ravel()[flat] = np.arange(1, flat.size + 1)
    mask = rng.random(shape) > 0.25 if masked else None
    ref = watershed(img, markers, mask=mask, connectivity=1)
    got = seeded_watershed(img.astype(np.float32), markers, mask=mask)
    assert np.array_equal(ref, got)


def test_uint8_bucket_queue_equals_float_heap(rng):
    img = (rng.random((10, 12, 14)) * 20).astype(np.uint8)
    markers = np.zeros(img.shape, np.uint32)
    markers.ravel()[rng.choice(img.size, 8, replace=False)] = np.arange(1, 9)
    a = seeded_watershed(img, markers)  # bucket queue
    b = seeded_watershed(img.astype(np.float32), markers)  # heap, same (value, age) order
    assert np.array_equal(a, b)
    assert (a > 0).all()


def test_uint8_close_to_skimage_on_ties(rng):
    img = (rng.random((16, 16, 16)) * 8).astype(np.uint8)
    markers = np.zeros(img.shape, np.uint32)
    markers.ravel()[rng.choice(img.size, 6, replace=False)] = np.arange(1, 7)
    a = seeded_watershed(img, markers)
    ref = watershed(img, markers, connectivity=1)
    # ties are broken differently (FIFO here, heap order there): only boundaries move
    assert (a == ref).mean() > 0.7


def test_tiny_hand_case_and_mask():
    img = np.array([[0, 1, 5, 1, 0]], np.uint8)
    assert seeded_watershed(img, np.array([[1, 0, 0, 0, 2]])).tolist() == [[1, 1, 1, 2, 2]]
    mask = np.array([[1, 1, 0, 1, 1]], bool)
    got = seeded_watershed(img, np.array([[1, 0, 0, 0, 2]]), mask=mask)
    assert got.tolist() == [[1, 1, 0, 2, 2]]


def _two_spheres(r=8, gap=12):
    z, y, x = np.ogrid[:24, :24, : 2 * r + gap + 8]
    c = 4 + r
    a = (z - 12) ** 2 + (y - 12) ** 2 + (x - c) ** 2 < r**2
    b = (z - 12) ** 2 + (y - 12) ** 2 + (x - c - gap) ** 2 < r**2
    return a, b


def test_two_touching_spheres_are_split():
    a, b = _two_spheres()
    lab = distance_watershed(a | b, min_seed_distance_nm=5)
    assert lab.max() == 2
    ia, ib = lab[12, 12, 12], lab[12, 12, 24]
    assert ia != ib
    assert ia > 0
    assert ib > 0
    # the split runs through the neck: each sphere's far half is its own
    assert (lab[a & ~b][:, None] > 0).all()
    far_a = a & (np.arange(a.shape[2]) < 14)[None, None, :]
    far_b = b & (np.arange(b.shape[2]) > 22)[None, None, :]
    assert (lab[far_a] == ia).all()
    assert (lab[far_b] == ib).all()
    # probability input: same split with the threshold
    prob = (a | b).astype(np.float32) * 0.8
    assert np.array_equal(distance_watershed(prob, threshold=0.5, min_seed_distance_nm=5), lab)


def test_anisotropic_sphere_gives_one_seed():
    sp = (40.0, 4.0, 4.0)
    r = 400.0  # nm
    nz, ny = 25, 240
    z, y, x = np.ogrid[:nz, :ny, :ny]
    sphere = ((z - 12) * sp[0]) ** 2 + ((y - 120) * sp[1]) ** 2 + ((x - 120) * sp[2]) ** 2 < r**2
    seeds = find_seeds(
        __import__("edt").edt(sphere.astype(np.uint8), anisotropy=sp),
        spacing=sp,
        min_distance_nm=100,
        mask=sphere,
    )
    assert seeds.max() == 1
    assert tuple(np.argwhere(seeds)[0]) == (12, 120, 120)
    lab = distance_watershed(sphere, spacing=sp, min_seed_distance_nm=100)
    assert lab.max() == 1
    # ignoring the anisotropy (distances in voxels) breaks the sphere into several seeds
    wrong = distance_watershed(sphere, spacing=1.0, min_seed_distance_nm=100 / 4)
    assert wrong.max() > 1


def test_find_seeds_nms_in_nm_and_plateaus():
    img = np.zeros((1, 1, 20))
    img[0, 0, [3, 6, 15]] = [5.0, 4.0, 3.0]
    s = find_seeds(img, spacing=(1, 1, 10), min_distance_nm=40, threshold=0)
    assert np.flatnonzero(s.ravel()).tolist() == [3, 15]  # 6 is 30 nm from 3
    assert s[0, 0, 3] == 1
    assert s[0, 0, 15] == 2
    s2 = find_seeds(img, spacing=(1, 1, 10), min_distance_nm=20, threshold=0)
    assert s2.max() == 3
    plateau = np.zeros((1, 1, 9))
    plateau[0, 0, 2:7] = 1.0
    p = find_seeds(plateau, min_distance_nm=0, threshold=0)
    assert np.flatnonzero(p.ravel()).tolist() == [4]  # one seed, at the plateau's centre


def test_bad_input():
    img = np.zeros((4, 4))
    img[0, 0] = np.nan
    with pytest.raises(EmsegValueError, match="NaN"):
        seeded_watershed(img, np.zeros((4, 4), np.uint8))
    with pytest.raises(TypeError, match="integer label"):
        seeded_watershed(np.zeros((4, 4)), np.zeros((4, 4), np.float32))
    with pytest.raises(EmsegValueError, match="shape"):
        seeded_watershed(np.zeros((4, 4)), np.zeros((4, 5), np.uint8))
    with pytest.raises(EmsegValueError, match="seeds"):
        distance_watershed(np.zeros((4, 4), bool), min_seed_distance_nm=1, seeds="maxima")  # type: ignore[arg-type]
    with pytest.raises(EmsegValueError, match="min_distance_nm"):
        find_seeds(np.zeros((4, 4)), min_distance_nm=-1)


def test_quantised_levels_equal_skimage_when_levels_separate_values(rng):
    shape = (9, 10, 11)
    img = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float32)  # 990 distinct
    markers = np.zeros(shape, np.int32)
    markers.ravel()[rng.choice(img.size, 7, replace=False)] = np.arange(1, 8)
    ref = watershed(img, markers, connectivity=1)
    assert np.array_equal(seeded_watershed(img, markers, levels=65536), ref)
    with pytest.raises(EmsegValueError, match="levels"):
        seeded_watershed(img, markers, levels=1)
    # few levels: ties appear, the flood still labels everything
    assert (seeded_watershed(img, markers, levels=4) > 0).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_huge_marker_ids_and_signed_values(rng, dtype):
    img = rng.normal(0, 1000, (6, 7, 8))
    img = (img - img.min()).astype(np.uint8) if dtype == np.uint8 else img
    markers = np.zeros(img.shape, np.uint64)
    markers[0, 0, 0] = 2**50
    markers[-1, -1, -1] = 2**33
    got = seeded_watershed(img, markers)
    assert got.dtype == np.uint64
    assert set(np.unique(got).tolist()) == {2**50, 2**33}
    small = np.where(markers == 2**50, 1, np.where(markers == 2**33, 2, 0))
    ref = seeded_watershed(img, small)
    assert np.array_equal(got == 2**50, ref == 1)
    if dtype == np.float64:
        assert np.array_equal(ref, watershed(img, small, connectivity=1))


def test_distance_watershed_all_foreground_is_one_object() -> None:
    # no background voxel: edt's distances would be infinite without a border
    from emseg.instance import distance_watershed

    block = np.ones((6, 20, 20), dtype=bool)
    labels = distance_watershed(block, spacing=(40.0, 4.0, 4.0), min_seed_distance_nm=200.0)
    assert labels.dtype.kind == "u"
    assert np.unique(labels).tolist() == [1]
