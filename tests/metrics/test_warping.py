"""Warping error: simple-point table vs brute force, hand cases, topology invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.metrics import is_simple_3d, simple_point_lut, warping_error

S4 = ndimage.generate_binary_structure(2, 1)
S8 = ndimage.generate_binary_structure(2, 2)


def n_comp(img: np.ndarray, structure: np.ndarray) -> int:
    return int(ndimage.label(img, structure=structure)[1])


def brute_simple(code: int, fg_conn: int) -> bool:
    """Simple iff flipping the centre keeps the number of foreground and background
    components of the 3x3 window (Rosenfeld's local characterization)."""
    patch = np.array([(code >> k) & 1 for k in range(9)], bool).reshape(3, 3)
    s_fg, s_bg = (S4, S8) if fg_conn == 4 else (S8, S4)
    on, off = patch.copy(), patch.copy()
    on[1, 1], off[1, 1] = True, False
    return n_comp(on, s_fg) == n_comp(off, s_fg) and n_comp(~on, s_bg) == n_comp(~off, s_bg)


@pytest.mark.parametrize("conn", [4, 8])
def test_lut_matches_brute_force(conn):
    lut = simple_point_lut(conn)
    assert lut.shape == (512,)
    ref = np.array([brute_simple(c, conn) for c in range(512)])
    assert np.array_equal(lut, ref)
    # the centre bit is ignored
    assert np.array_equal(lut[:256][np.arange(256) & 16 == 0], lut[np.arange(512) & 16 == 16][:128])


def test_lut_known_entries():
    lut = simple_point_lut(4)
    assert not lut[0]  # isolated point: removing it deletes an object
    assert not lut[511 & ~16]  # interior point: removing it creates a hole
    # a foreground end point (one 4-neighbour, north) is simple
    assert lut[1 << 1]
    # north and south foreground only: removing the centre splits the line
    assert not lut[(1 << 1) | (1 << 7)]
    # two diagonal neighbours only: not 4-connected to the centre -> not simple for fg4
    assert not lut[(1 << 0) | (1 << 8)]
    assert simple_point_lut(8)[(1 << 0)]  # 8-connected foreground: a diagonal end point


def box(shape, *slices):
    a = np.zeros(shape, np.uint8)
    for s in slices:
        a[s] = 1
    return a


def test_shift_by_one_is_not_an_error():
    t = box((12, 14), np.s_[2:9, 3:10])
    for axis, shift in [(0, 1), (1, -1), (1, 1)]:
        r = warping_error(t, np.roll(t, shift, axis=axis))
        assert r.n_pixel_errors > 0
        assert r.n_topological_errors == 0
        assert r.warping_error == 0.0
        assert np.array_equal(r.warped, np.roll(t, shift, axis=axis).astype(bool))


def test_split_merge_hole_object():
    t = box((9, 11), np.s_[1:8, 1:10])
    p = t.copy()
    p[1:8, 5] = 0  # a boundary cuts the object in two
    r = warping_error(t, p)
    assert (r.splits, r.merges, r.n_topological_errors) == (1, 0, 1)
    assert r.warping_error == pytest.approx(1 / t.size)

    two = box((9, 11), np.s_[1:8, 1:5], np.s_[1:8, 6:10])
    r = warping_error(two, t)  # the prediction misses the boundary between two cells
    # no pixel of the 7-pixel gap can join the cells without merging them: all 7 stay,
    # clustered into one merge
    assert (r.merges, r.splits, r.n_topological_errors) == (1, 0, 7)

    p = t.copy()
    p[4, 5] = 0  # a hole inside an object
    r = warping_error(t, p)
    assert (r.hole_additions, r.n_topological_errors) == (1, 1)
    r = warping_error(p, t)  # the prediction fills a hole of the truth
    assert (r.hole_deletions, r.n_topological_errors) == (1, 1)

    p = t.copy()
    p[:, :] = 0
    p[3:5, 3:5] = 1  # only a small part survives: shrinking is simple, nothing is lost
    assert warping_error(t, p).n_topological_errors == 0
    p = np.zeros_like(t)  # the object is gone: one pixel must stay
    r = warping_error(t, p)
    assert (r.object_deletions, r.n_topological_errors) == (1, 1)
    r = warping_error(np.zeros_like(t), t)
    # nothing can grow from an empty truth (a lone new pixel is not simple): all stay
    assert (r.object_additions, r.n_topological_errors) == (1, int(t.sum()))


def test_confidence_order_and_threshold():
    t = box((7, 9), np.s_[1:6, 1:8])
    prob = t.astype(float) * 0.9 + 0.05
    prob[1:6, 4] = 0.3  # weakly predicted boundary: a split at 0.5, nothing at 0.2
    assert warping_error(t, prob, threshold=0.5).splits == 1
    assert warping_error(t, prob, threshold=0.2).n_pixel_errors == 0


def test_3d_is_per_section(rng):
    t = np.stack([box((10, 10), np.s_[2:8, 2:8]), box((10, 10), np.s_[1:9, 1:5], np.s_[1:9, 6:9])])
    p = rng.random(t.shape) < 0.5
    r3 = warping_error(t, p)
    rs = [warping_error(t[z], p[z]) for z in range(2)]
    assert r3.n_topological_errors == sum(r.n_topological_errors for r in rs)
    assert r3.n_pixel_errors == sum(r.n_pixel_errors for r in rs)
    assert r3.warping_error == pytest.approx(np.mean([r.warping_error for r in rs]))
    assert np.array_equal(r3.warped[1], rs[1].warped)


@given(seed=st.integers(0, 2**31 - 1), conn=st.sampled_from([4, 8]))
def test_warped_truth_keeps_topology(seed, conn):
    rng = np.random.default_rng(seed)
    t = ndimage.gaussian_filter(rng.random((16, 18)), 1.2) > 0.5
    p = ndimage.gaussian_filter(rng.random((16, 18)), 1.2) > 0.5
    r = warping_error(t, p, foreground_connectivity=conn)
    w = r.warped
    s_fg, s_bg = (S4, S8) if conn == 4 else (S8, S4)
    # topology is unchanged (padding with background, as the warp does)
    tp, wp = np.pad(t, 1), np.pad(w, 1)
    assert n_comp(tp, s_fg) == n_comp(wp, s_fg)
    assert n_comp(~tp, s_bg) == n_comp(~wp, s_bg)
    # pixels only moved toward the prediction, and no remaining mismatch is simple
    assert not np.any((w != t) & (w != p))
    for y, x in np.argwhere(w != p):
        patch = wp[y : y + 3, x : x + 3].ravel()
        code = int(sum(int(v) << k for k, v in enumerate(patch)))
        assert not brute_simple(code, conn)
    assert r.n_topological_errors == int(np.count_nonzero(w != p))
    kinds = (r.splits, r.merges, r.object_additions, r.object_deletions)
    assert sum(kinds) + r.hole_additions + r.hole_deletions + r.other >= (
        r.n_topological_errors > 0
    )


def test_validation():
    t = np.zeros((4, 4), np.uint8)
    with pytest.raises(EmsegValueError, match="same shape"):
        warping_error(t, np.zeros((4, 5)))
    with pytest.raises(EmsegValueError, match=r"\[0, 1\]"):
        warping_error(t, np.full((4, 4), 2.0))
    with pytest.raises(EmsegValueError, match="foreground_connectivity"):
        warping_error(t, t, foreground_connectivity=6)
    with pytest.raises(EmsegValueError, match="2D"):
        warping_error(np.zeros(4), np.zeros(4))
    with pytest.raises(EmsegTypeError, match="prediction"):
        warping_error(t, np.zeros((4, 4), complex))


# --- 3D: simple points of Bertrand & Malandain, mode="3d" ----------------------------------


def _t_reference(patch: np.ndarray, value: int, six: bool) -> int:
    """Topological number via scipy: components of the `value` cells of N18* (six) or N26*."""
    from scipy import ndimage

    zz, yy, xx = np.indices((3, 3, 3))
    far = (zz != 1).astype(int) + (yy != 1) + (xx != 1)
    cells = (patch == value) & (far > 0)
    if six:
        cells &= far < 3
    lab, _ = ndimage.label(cells, structure=ndimage.generate_binary_structure(3, 1 if six else 3))
    if six:
        return len({int(v) for v in lab[far == 1] if v})
    return len({int(v) for v in lab[far > 0] if v})


def _patches(rng, n):
    for _ in range(n):
        yield (rng.random((3, 3, 3)) < rng.uniform(0.2, 0.8)).astype(np.uint8)


def test_simple_3d_equals_scipy_topological_numbers(rng):
    for patch in _patches(rng, 400):
        for conn in (6, 26):
            six = conn == 6
            ref = _t_reference(patch, 1, six) == 1 and _t_reference(patch, 0, not six) == 1
            assert is_simple_3d(patch, foreground_connectivity=conn) == ref


def test_simple_3d_flip_keeps_components_cavities_and_euler(rng):
    """Flipping a simple point changes no invariant of the patch image (components,
    cavities, Euler number, hence tunnels). The converse does not hold in general (a point
    may close one tunnel while opening another), but a change always means not simple."""
    from scipy import ndimage
    from skimage.measure import euler_number

    s6 = ndimage.generate_binary_structure(3, 1)
    s26 = ndimage.generate_binary_structure(3, 3)

    def invariants(img):
        padded = np.pad(img, 1)
        return (ndimage.label(padded, s6)[1], ndimage.label(padded == 0, s26)[1],
                euler_number(padded, connectivity=1))  # fmt: skip

    n_simple = n_changed = 0
    for patch in _patches(rng, 300):
        on, off = patch.copy(), patch.copy()
        on[1, 1, 1], off[1, 1, 1] = 1, 0
        same = invariants(on) == invariants(off)
        simple = is_simple_3d(patch)
        n_simple += simple
        if simple:
            assert same
        n_changed += not same
    assert n_simple > 20  # both kinds were tested
    assert n_changed > 20


def _cube():
    t = np.zeros((9, 9, 9), np.uint8)
    t[2:7, 2:7, 2:7] = 1
    return t


def test_3d_simple_differences_are_not_errors():
    t = _cube()
    p = t.copy()
    p[2, 2, 2] = 0  # a corner voxel removed
    p[4, 4, 7] = 1  # a bump added on a face
    r = warping_error(t, p, mode="3d")
    assert (r.n_pixel_errors, r.n_topological_errors) == (2, 0)
    r = warping_error(t, np.roll(t, 1, axis=0), mode="3d")  # shifted by one section
    assert r.n_pixel_errors == 50
    assert r.n_topological_errors == 0


def test_3d_split_merge_cavity_tunnel_object():
    t = _cube()
    p = t.copy()
    p[4] = 0  # a plane cuts the cube in two: one voxel must stay -> one split
    r = warping_error(t, p, mode="3d")
    assert (r.n_pixel_errors, r.n_topological_errors, r.splits) == (25, 1, 1)
    # per section the same cut is a whole 2D object deleted from section 4
    rs = warping_error(t, p)
    assert (rs.n_topological_errors, rs.object_deletions, rs.splits) == (1, 1, 0)
    r = warping_error(p, t, mode="3d")  # the prediction misses the plane between two cells
    assert r.merges == 1
    assert r.n_topological_errors == 25  # no plane voxel can be added without merging
    p = t.copy()
    p[4, 4, 4] = 0  # a cavity inside: not simple in 3D (a new background component)
    r = warping_error(t, p, mode="3d")
    assert (r.n_topological_errors, r.hole_additions) == (1, 1)
    p = t.copy()
    p[2:7, 4, 4] = 0  # a tunnel through the cube along z: one voxel must stay
    r = warping_error(t, p, mode="3d")
    assert (r.n_pixel_errors, r.n_topological_errors) == (5, 1)
    # one error cluster; its kind comes from the local box (where the last voxel separates
    # the two ends of the tunnel), not from the global tunnel
    kinds = ("splits", "merges", "object_additions", "object_deletions", "hole_additions",
             "hole_deletions", "other")  # fmt: skip
    assert sum(getattr(r, k) for k in kinds) == 1
    r = warping_error(t, np.zeros_like(t), mode="3d")
    assert (r.n_topological_errors, r.object_deletions) == (1, 1)


def test_3d_mode_validation():
    with pytest.raises(EmsegValueError, match="mode"):
        warping_error(_cube(), _cube(), mode="volume")
    with pytest.raises(EmsegValueError, match="Z, Y, X"):
        warping_error(_cube()[0], _cube()[0], mode="3d")
    with pytest.raises(EmsegValueError, match="6 or 26"):
        warping_error(_cube(), _cube(), mode="3d", foreground_connectivity=4)
    with pytest.raises(EmsegValueError, match="shape"):
        is_simple_3d(np.zeros((3, 3)))
