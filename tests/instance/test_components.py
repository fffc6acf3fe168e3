"""threshold_components: hand-made cases, cc3d / scipy references, physical sizes, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.instance import threshold_components
from emseg.metrics import voi


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    if not np.array_equal(a == 0, b == 0):
        return False
    v = voi(a.astype(np.int64), b.astype(np.int64), ignore_truth=())
    return v.total == 0.0


def test_two_blobs_and_ids_in_raster_order():
    p = np.zeros((5, 8, 8))
    p[1:3, 1:3, 1:3] = 0.9
    p[3, 6, 6] = 0.8
    lab = threshold_components(p, threshold=0.5)
    assert lab.dtype == np.uint32
    assert lab.max() == 2
    assert (lab[1:3, 1:3, 1:3] == 1).all()
    assert lab[3, 6, 6] == 2
    assert (lab > 0).sum() == 9


def test_matches_scipy_label_full_connectivity(rng):
    p = ndimage.gaussian_filter(rng.random((12, 20, 22)), 1.0)
    ref, _ = ndimage.label(p > 0.5, structure=np.ones((3, 3, 3)))
    assert _same_partition(ref, threshold_components(p, threshold=0.5))
    ref6, _ = ndimage.label(p > 0.5)
    assert _same_partition(ref6, threshold_components(p, threshold=0.5, connectivity=6))


def test_hysteresis_keeps_only_components_with_a_strong_voxel():
    p = np.zeros((1, 3, 9))
    p[0, 1, 0:3] = [0.6, 0.95, 0.6]  # strong
    p[0, 1, 5:8] = 0.6  # weak only
    lab = threshold_components(p, threshold=0.5, high_threshold=0.9)
    assert lab.max() == 1
    assert (lab[0, 1, 0:3] == 1).all()
    assert (lab[0, 1, 5:8] == 0).all()


def test_min_size_is_in_nm3_with_anisotropic_spacing():
    p = np.zeros((3, 6, 6))
    p[1, 1:3, 1:3] = 1.0  # 4 voxels
    p[1, 4, 4] = 1.0  # 1 voxel
    sp = (40.0, 4.0, 4.0)  # 640 nm^3 per voxel
    kept = threshold_components(p, spacing=sp, min_size_nm3=2 * 640.0)
    assert kept.max() == 1
    assert kept[1, 4, 4] == 0
    both = threshold_components(p, spacing=sp, min_size_nm3=640.0)
    assert both.max() == 2
    big = threshold_components(p, spacing=sp, min_size_nm3=5 * 640.0)
    assert big.max() == 0


def test_min_size_in_voxels_is_refused_with_the_fix():
    p = np.zeros((3, 6, 6))
    with pytest.raises(EmsegValueError, match=r"min_size_nm3.*smaller than one voxel.*N \* 640"):
        threshold_components(p, spacing=(40, 4, 4), min_size_nm3=100)
    with pytest.raises(TypeError):
        threshold_components(p, min_size=10)  # type: ignore[call-arg]
    with pytest.raises(EmsegValueError, match="min_size_nm3"):
        threshold_components(p, min_size_nm3=-1)


def test_fill_holes_by_size_in_nm3():
    m = np.zeros((9, 9, 9), bool)
    m[1:8, 1:8, 1:8] = True
    m[4, 4, 4] = False  # a 1-voxel hole
    m[2:4, 2:4, 5:7] = False  # an 8-voxel hole
    sp = (2.0, 1.0, 1.0)  # 2 nm^3 per voxel
    small = threshold_components(m, spacing=sp, max_hole_nm3=2.0)
    assert small[4, 4, 4] == 1
    assert small[2, 2, 5] == 0
    both = threshold_components(m, spacing=sp, max_hole_nm3=16.0)
    assert both[2, 2, 5] == 1
    allh = threshold_components(m, fill_all_holes=True)
    ref = ndimage.binary_fill_holes(m)
    assert np.array_equal(allh > 0, ref)
    # a background region touching the border is never a hole
    m2 = m.copy()
    m2[4, 4, 0:5] = False
    assert threshold_components(m2, fill_all_holes=True)[4, 4, 2] == 0


def test_2d_min_size_in_nm2():
    p = np.zeros((6, 6))
    p[0:2, 0:2] = 1
    p[4, 4] = 1
    lab = threshold_components(p, spacing=(5.0, 5.0), min_size_nm3=50.0)  # 2 pixels
    assert lab.max() == 1


def test_bad_input():
    p = np.full((4, 4, 4), 0.7)
    p[1, 1, 1] = np.nan
    with pytest.raises(EmsegValueError, match="NaN"):
        threshold_components(p)
    with pytest.raises(EmsegTypeError, match="numeric"):
        threshold_components(np.zeros((3, 3), dtype=object))
    with pytest.raises(EmsegValueError, match="high_threshold"):
        threshold_components(np.zeros((3, 3)), threshold=0.5, high_threshold=0.2)
    with pytest.raises(EmsegValueError, match="connectivity"):
        threshold_components(np.zeros((3, 3)), connectivity=6)
    with pytest.raises(EmsegValueError, match="spacing"):
        threshold_components(np.zeros((3, 3, 3)), spacing=(4, 4))
