"""ISBI 2012 V_rand / V_info sweep: hand cases, agreement with the table metrics, real data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.metrics import (
    adapted_rand_error,
    isbi2012_scores,
    isbi_information_scores,
    thin_borders,
)

S4 = ndimage.generate_binary_structure(2, 1)


def cells(shape=(24, 30), walls_y=(8, 16), walls_x=(10, 20), width=1):
    """Interior = 1, membrane = 0: a grid of rectangular cells."""
    t = np.ones(shape, np.uint8)
    for y in walls_y:
        t[y : y + width, :] = 0
    for x in walls_x:
        t[:, x : x + width] = 0
    return t * 255


def test_perfect_prediction_scores_one():
    t = cells()
    p = (t == 0).astype(np.float64)  # membrane probability
    for thin in (True, False):
        r = isbi2012_scores(t, p, thin=thin)
        assert r.v_rand == 1.0
        assert r.v_info == pytest.approx(1.0, abs=1e-12)
        assert r.best_threshold_rand == 0.0  # the first threshold reaching the maximum
        assert r.thinned is thin
    # at t = 1.0 nothing is interior: every pixel a singleton, V_rand = 2c / (Σa² + c)
    a = np.bincount(ndimage.label(t != 0, S4)[0].ravel())[1:]
    c = int((t != 0).sum())
    assert r.v_rand_per_threshold[-1] == pytest.approx(2 * c / (float(np.sum(a * a)) + c))
    # the same map in the challenge's own format (0 = membrane) and as booleans
    dark = isbi2012_scores(t, 1.0 - p, boundary_is_dark=True)
    assert np.array_equal(dark.v_rand_per_threshold, r.v_rand_per_threshold) or dark.v_rand == 1.0
    assert isbi2012_scores(t, t == 0).v_rand == 1.0
    assert isbi2012_scores(t, t != 0, boundary_is_dark=True).v_info == pytest.approx(1.0)


def test_missing_wall_is_a_merge():
    t = cells()
    p = (t == 0).astype(float)
    p[:, 20] = 0.0  # the prediction misses one wall: cells merge across it
    r = isbi2012_scores(t, p, thresholds=[0.5], thin=False)
    truth_cc = ndimage.label(t != 0, S4)[0]
    pred_cc = ndimage.label(p < 0.5, S4)[0]
    ref = adapted_rand_error(truth_cc, pred_cc, variant="isbi2012")
    assert r.v_rand == pytest.approx(ref.f_score, rel=1e-12)
    assert r.rand_merge_per_threshold[0] < 1.0  # precision (merge score) drops
    assert r.rand_split_per_threshold[0] == 1.0  # no split


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_threshold_equals_table_metrics(seed):
    rng = np.random.default_rng(seed)
    t = cells((30, 32), (7, 19), (9, 22))
    noise = ndimage.gaussian_filter(rng.random(t.shape), 1.0)
    p = np.clip(0.7 * (t == 0) + 0.6 * (noise - noise.mean()) + 0.15, 0, 1)
    th = np.array([0.0, 0.3, 0.5, 0.8])
    r = isbi2012_scores(t, p, thresholds=th, thin=False)
    truth_cc = ndimage.label(t != 0, S4)[0]
    for k, thr in enumerate(th):
        pred_cc = ndimage.label((1.0 - p) > thr, S4)[0]
        ar = adapted_rand_error(truth_cc, pred_cc, variant="isbi2012")
        vi = isbi_information_scores(truth_cc, pred_cc, zero_division=0.0)
        assert r.v_rand_per_threshold[k] == pytest.approx(ar.f_score, rel=1e-12)
        assert r.rand_split_per_threshold[k] == pytest.approx(ar.recall, rel=1e-12)
        assert r.v_info_per_threshold[k] == pytest.approx(vi.v_info, rel=1e-12)
    assert r.v_rand == np.nanmax(r.v_rand_per_threshold)
    assert r.best_threshold_rand == th[int(np.nanargmax(r.v_rand_per_threshold))]


def test_stack_pools_rand_and_averages_info(rng):
    t = np.stack([cells(), cells(walls_y=(5,), walls_x=(12, 13, 25))])
    p = np.clip((t == 0) * 0.8 + 0.3 * rng.random(t.shape), 0, 1)
    r = isbi2012_scores(t, p, thresholds=[0.4], thin=False)
    # pooled pair counts == one table over sections with distinct labels per section
    tl = np.stack([ndimage.label(t[z] != 0, S4)[0] + 1000 * z * (t[z] != 0) for z in range(2)])
    pl = np.stack(
        [ndimage.label((1 - p[z]) > 0.4, S4)[0] + 1000 * z * ((1 - p[z]) > 0.4) for z in range(2)]
    )
    ref = adapted_rand_error(tl, pl, variant="isbi2012")
    assert r.v_rand == pytest.approx(ref.f_score, rel=1e-12)
    per = [isbi_information_scores(tl[z], pl[z], zero_division=0.0).v_info for z in range(2)]
    assert r.v_info == pytest.approx(np.mean(per), rel=1e-12)


def test_thin_borders():
    t = cells(width=3)
    lab = ndimage.label(t != 0, S4)[0]
    thin = thin_borders(lab)
    # same segments, none merged or lost, each still 4-connected
    assert np.array_equal(np.unique(thin[thin != 0]), np.unique(lab[lab != 0]))
    for v in np.unique(lab[lab != 0]):
        assert ndimage.label(thin == v, S4)[1] == 1
        assert np.all(thin[lab == v] == v)
    # 3-pixel walls become 1-pixel walls
    assert np.all(thin[:, 11] == 0)
    rows = np.setdiff1d(np.arange(t.shape[0]), [9, 17])  # the thinned horizontal walls
    assert np.all(thin[rows, 10] != 0)
    assert np.all(thin[rows, 12] != 0)
    assert np.all(thin[[9, 17], :11] == 0)
    # a dangling membrane inside one cell disappears
    d = np.ones((10, 10), np.uint32)
    d[4, 2:7] = 0
    assert np.all(thin_borders(d) == 1)
    # thinning makes thick and thin predicted walls score the same
    truth = cells(width=1)
    thick = np.zeros(truth.shape)
    for w in (8, 16):
        thick[w - 1 : w + 2, :] = 1.0
    for w in (10, 20):
        thick[:, w - 1 : w + 2] = 1.0  # the same walls, 3 pixels wide
    assert isbi2012_scores(truth, thick, thresholds=[0.5]).v_rand == 1.0
    assert isbi2012_scores(truth, thick, thresholds=[0.5], thin=False).v_rand < 1.0


def test_validation():
    t = cells()
    with pytest.raises(EmsegValueError, match="same shape"):
        isbi2012_scores(t, np.zeros((3, 3)))
    with pytest.raises(EmsegValueError, match="255"):
        isbi2012_scores(t, (t == 0) * 255.0)
    with pytest.raises(EmsegTypeError, match="255"):
        isbi2012_scores(t, (t == 0).astype(np.uint8) * 255)
    with pytest.raises(EmsegValueError, match="thresholds"):
        isbi2012_scores(t, (t == 0) * 1.0, thresholds=[1.5])
    with pytest.raises(EmsegTypeError, match="truth"):
        isbi2012_scores(t.astype(float), (t == 0) * 1.0)
    with pytest.raises(EmsegValueError, match="2D"):
        isbi2012_scores(np.zeros(4, np.uint8), np.zeros(4))


@pytest.mark.data
def test_real_isbi_labels_sweep(data_root):
    import tifffile

    path = data_root / "isbi2012" / "train-labels.tif"
    lab = np.stack([tifffile.imread(str(path), key=k)[:192, :192] for k in (0, 1)])
    assert set(np.unique(lab).tolist()) == {0, 255}
    rng = np.random.default_rng(7)
    membrane = np.stack([ndimage.binary_dilation(s == 0) for s in lab])
    noise = ndimage.gaussian_filter(rng.random(lab.shape), (0, 2, 2))
    prob = np.clip(0.6 * membrane + 1.2 * (noise - 0.5) + 0.2, 0.0, 1.0)
    r = isbi2012_scores(lab, prob)
    assert 0.5 < r.v_rand < 1.0
    assert 0.5 < r.v_info < 1.0
    # the sweep picks the best threshold, which beats the extremes of the sweep
    k = int(np.nanargmax(r.v_rand_per_threshold))
    assert r.best_threshold_rand == r.thresholds[k]
    assert r.v_rand > r.v_rand_per_threshold[0]
    assert r.v_rand > r.v_rand_per_threshold[-1]
    assert 0.1 < r.best_threshold_rand < 0.9
    # the truth itself (membranes as probability) is perfect
    perfect = isbi2012_scores(lab, (lab == 0).astype(np.float32))
    assert perfect.v_rand == 1.0
    assert perfect.v_info == pytest.approx(1.0, abs=1e-12)


def test_geometric_metrics_fill_evaluate_keys():
    from emseg.metrics import (
        evaluate_tables,
        geometric_metrics,
        hausdorff_distance,
        hausdorff_per_object,
        overlap_table,
        warping_error,
    )

    t = cells()
    truth_cc = ndimage.label(t != 0, S4)[0]
    pred = np.roll(t, 1, axis=1)
    prob = (pred == 0).astype(float)
    g = geometric_metrics(t, pred, boundary_probabilities=prob, spacing=(4.0, 4.0))
    assert set(g) == {"warping_error", "hausdorff", "hausdorff95", "isbi_vrand", "isbi_vinfo"}
    assert g["hausdorff"] == hausdorff_distance(t, pred, spacing=4.0).hausdorff
    assert g["warping_error"] == warping_error(t != 0, 1.0 - prob).warping_error
    r = isbi2012_scores(t, prob)
    assert (g["isbi_vrand"], g["isbi_vinfo"]) == (r.v_rand, r.v_info)
    # label volumes: mean over matched objects
    pred_cc = ndimage.label(pred != 0, S4)[0]
    g2 = geometric_metrics(truth_cc, pred_cc)
    assert g2["hausdorff"] == hausdorff_per_object(truth_cc, pred_cc).mean_hausdorff
    assert "isbi_vrand" not in g2
    out = evaluate_tables(overlap=overlap_table(truth_cc, pred_cc), geometric=g)
    assert out["hausdorff95"] == g["hausdorff95"]
    assert out["isbi_vrand"] == g["isbi_vrand"]  # the challenge score replaces the table's
    assert out["warping_error"] == g["warping_error"]
    with pytest.raises(EmsegValueError, match="geometric"):
        evaluate_tables(geometric={"dice": 1.0})
