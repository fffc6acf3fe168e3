"""Hausdorff / HD95 against brute force (medpy's definition), scipy and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage
from scipy.spatial.distance import cdist, directed_hausdorff

import emseg.metrics._hausdorff as H
from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.metrics import hausdorff_distance, hausdorff_per_object, surface_voxels


def medpy_surface(mask: np.ndarray) -> np.ndarray:
    """medpy.metric.binary.__surface_distances: mask XOR its face-connected erosion."""
    m = mask.astype(bool)
    struct = ndimage.generate_binary_structure(m.ndim, 1)
    return m ^ ndimage.binary_erosion(m, structure=struct, iterations=1)


def brute(t: np.ndarray, p: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances by all-pairs enumeration (nm)."""
    st_, sp_ = medpy_surface(t), medpy_surface(p)
    pt = np.argwhere(st_) * np.asarray(spacing, float)
    pp = np.argwhere(sp_) * np.asarray(spacing, float)
    d = cdist(pt, pp)
    return d.min(axis=1), d.min(axis=0)


def random_blobs(rng, shape, p=0.5, sigma=1.5):
    noise = ndimage.gaussian_filter(rng.random(shape), sigma)
    return noise > np.quantile(noise, 1 - p)


def test_hand_case_anisotropic():
    a = np.zeros((5, 5), bool)
    a[1:3, 1:3] = True
    b = np.zeros((5, 5), bool)
    b[1:3, 1:4] = True
    r = hausdorff_distance(a, b, spacing=(4.0, 2.0))
    # b's extra column x=3 is 2 nm (one x step) from a's column x=2; a ⊂ b surfaces
    assert r.hausdorff == 2.0
    assert r.directed_truth == 0.0
    assert r.directed_prediction == 2.0
    # pooled: 4 zeros from a, 6 from b of which 2 are 2.0 -> 10 values, 2 of them 2.0
    assert r.mean_surface_distance == pytest.approx(4.0 / 10)
    assert r.hausdorff95 == pytest.approx(np.percentile([0] * 8 + [2.0] * 2, 95))
    assert (r.n_truth_surface, r.n_prediction_surface) == (4, 6)


def test_surface_voxels_matches_medpy_erosion(rng):
    m = random_blobs(rng, (12, 14, 9))
    m[0] = True  # the array border counts as outside
    assert np.array_equal(surface_voxels(m), medpy_surface(m))
    full = np.ones((4, 5), bool)
    assert np.array_equal(surface_voxels(full), medpy_surface(full))


@pytest.mark.parametrize("path", ["kdtree", "edt"])
@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((30, 40), (4.0, 4.0)), ((30, 27), (7.0, 3.0)), ((8, 20, 18), (50.0, 4.0, 5.0))],
)
def test_against_brute_force_medpy(rng, monkeypatch, path, shape, spacing):
    monkeypatch.setattr(H, "_KDTREE_FRACTION", 1e9 if path == "kdtree" else -1.0)
    t = random_blobs(rng, shape, 0.3)
    p = random_blobs(rng, shape, 0.35)
    r = hausdorff_distance(t, p, spacing=spacing)
    d_t, d_p = brute(t, p, spacing)
    tol = dict(rel=1e-6) if path == "edt" else dict(rel=1e-12)  # edt returns float32
    pooled = np.hstack([d_t, d_p])
    assert r.hausdorff == pytest.approx(pooled.max(), **tol)
    assert r.directed_truth == pytest.approx(d_t.max(), **tol)
    assert r.directed_prediction == pytest.approx(d_p.max(), **tol)
    # medpy hd95: percentile of the union of both directed sets
    assert r.hausdorff95 == pytest.approx(np.percentile(pooled, 95), **tol)
    # MONAI: max of the two directed percentiles
    monai = max(np.percentile(d_t, 95), np.percentile(d_p, 95))
    assert max(r.directed95_truth, r.directed95_prediction) == pytest.approx(monai, **tol)
    assert r.mean_surface_distance == pytest.approx(pooled.mean(), **tol)
    # scipy's directed Hausdorff on the scaled surface point sets
    pt = np.argwhere(medpy_surface(t)) * np.asarray(spacing)
    pp = np.argwhere(medpy_surface(p)) * np.asarray(spacing)
    ref = max(directed_hausdorff(pt, pp)[0], directed_hausdorff(pp, pt)[0])
    assert r.hausdorff == pytest.approx(ref, **tol)


def test_against_skimage_isotropic(rng):
    from skimage.metrics import hausdorff_distance as sk_hd

    t = random_blobs(rng, (40, 36), 0.4)
    p = random_blobs(rng, (40, 36), 0.4)
    # scikit-image measures between all nonzero points; give it the surfaces
    ref = sk_hd(surface_voxels(t), surface_voxels(p))
    assert hausdorff_distance(t, p).hausdorff == pytest.approx(ref, rel=1e-12)
    # spacing scales isotropic distances
    assert hausdorff_distance(t, p, spacing=3.0).hausdorff == pytest.approx(3 * ref, rel=1e-12)


def test_large_sphere_shift_exact():
    z, y, x = np.ogrid[:40, :40, :40]
    t = (z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 < 10**2
    p = np.roll(t, 3, axis=2)
    r = hausdorff_distance(t, p, spacing=(50.0, 4.0, 2.0))
    d_t, d_p = brute(t, p, (50.0, 4.0, 2.0))
    assert r.hausdorff == pytest.approx(max(d_t.max(), d_p.max()), rel=1e-6)
    assert r.hausdorff == pytest.approx(6.0, rel=1e-6)  # a shift of 3 voxels * 2 nm along x


def test_crop_does_not_change_result(rng):
    t = np.zeros((60, 70), bool)
    p = np.zeros((60, 70), bool)
    t[10:20, 30:45] = random_blobs(rng, (10, 15), 0.6)
    p[12:25, 28:40] = random_blobs(rng, (13, 12), 0.6)
    t[0, 0] = True  # a voxel at the array corner (surface by the border rule)
    r = hausdorff_distance(t, p, spacing=(2.0, 3.0))
    d_t, d_p = brute(t, p, (2.0, 3.0))
    assert r.hausdorff == pytest.approx(max(d_t.max(), d_p.max()))


def test_empty_masks():
    z = np.zeros((6, 6), bool)
    o = z.copy()
    o[2:4, 2:4] = True
    r = hausdorff_distance(z, z)
    assert np.isnan(r.hausdorff)
    assert np.isnan(r.hausdorff95)
    r = hausdorff_distance(o, z)
    assert r.hausdorff == np.inf
    assert r.hausdorff95 == np.inf
    assert r.n_truth_surface == 4
    assert r.n_prediction_surface == 0
    assert hausdorff_distance(z, o).directed_prediction == np.inf


def test_identical_is_zero(rng):
    m = random_blobs(rng, (10, 12, 11))
    r = hausdorff_distance(m, m.astype(np.uint8) * 7, spacing=(30.0, 4.0, 4.0))
    assert r.hausdorff == 0.0
    assert r.hausdorff95 == 0.0
    assert r.mean_surface_distance == 0.0


@given(seed=st.integers(0, 2**31 - 1), sy=st.floats(0.5, 20), sx=st.floats(0.5, 20))
def test_symmetry(seed, sy, sx):
    rng = np.random.default_rng(seed)
    t = rng.random((9, 11)) < 0.4
    p = rng.random((9, 11)) < 0.4
    if not t.any() or not p.any():
        return
    a = hausdorff_distance(t, p, spacing=(sy, sx))
    b = hausdorff_distance(p, t, spacing=(sy, sx))
    assert a.hausdorff == b.hausdorff
    assert a.hausdorff95 == pytest.approx(b.hausdorff95)
    assert a.directed_truth == b.directed_prediction
    d_t, d_p = brute(t, p, (sy, sx))
    assert a.hausdorff == pytest.approx(max(d_t.max(), d_p.max()), rel=1e-6)  # edt: float32


def test_per_object_iou_and_id():
    t = np.zeros((40, 40), np.uint32)
    p = np.zeros((40, 40), np.uint32)
    t[2:10, 2:10] = 3
    t[20:30, 20:35] = 7
    t[35:38, 2:5] = 9  # unmatched in the prediction
    p[3:11, 2:10] = 1  # shifted by one row
    p[20:32, 20:35] = 4  # two rows longer
    r = hausdorff_per_object(t, p, spacing=(2.0, 1.0))
    assert r.truth_ids.tolist() == [3, 7]
    assert r.pred_ids.tolist() == [1, 4]
    for k, (a, b) in enumerate([(3, 1), (7, 4)]):
        ref = hausdorff_distance(t == a, p == b, spacing=(2.0, 1.0))
        assert r.hausdorff[k] == ref.hausdorff
        assert r.hausdorff95[k] == ref.hausdorff95
    assert r.hausdorff.tolist() == [2.0, 4.0]
    assert r.mean_hausdorff == 3.0
    rid = hausdorff_per_object(t, t, match="id")
    assert rid.truth_ids.tolist() == [3, 7, 9]
    assert rid.hausdorff.tolist() == [0.0, 0.0, 0.0]
    rid = hausdorff_per_object(t, p, match="id")
    assert np.isinf(rid.hausdorff).all()  # ids 1, 3, 4, 7, 9 each on one side only
    empty = hausdorff_per_object(np.zeros((5, 5), np.uint8), np.zeros((5, 5), np.uint8))
    assert empty.truth_ids.size == 0
    assert np.isnan(empty.mean_hausdorff)


def test_validation():
    a = np.zeros((4, 4), bool)
    with pytest.raises(EmsegValueError, match="same shape"):
        hausdorff_distance(a, np.zeros((4, 5), bool))
    with pytest.raises(EmsegValueError, match="spacing"):
        hausdorff_distance(a, a, spacing=(1.0, 2.0, 3.0))
    with pytest.raises(EmsegValueError, match="percentile"):
        hausdorff_distance(a, a, percentile=101)
    with pytest.raises(EmsegValueError, match="2D"):
        hausdorff_distance(np.zeros(4), np.zeros(4))
    with pytest.raises(EmsegValueError, match="match"):
        hausdorff_per_object(a.astype(np.uint8), a.astype(np.uint8), match="nearest")  # type: ignore[arg-type]
    with pytest.raises(EmsegTypeError, match="integer"):
        hausdorff_per_object(a.astype(float), a.astype(np.uint8))
