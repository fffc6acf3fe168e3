"""Out-of-core evaluation equals the in-memory metrics, for any block shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.evaluation import (
    METRIC_KEYS,
    evaluate,
    morphology_table,
    object_moments,
    streamed_warping_error,
)
from emseg.metrics import (
    evaluate_tables,
    geometric_metrics,
    hausdorff_per_object,
    isbi2012_scores,
    overlap_table,
    pixel_error,
    semantic_metrics,
    warping_error,
)

TABLE_KEYS = [k for k in METRIC_KEYS if k not in ("warping_error", "hausdorff", "hausdorff95")]


def _labels(seed: int, shape=(12, 20, 24), n=25) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, n, (3, 4, 4))
    zoom = [s / c for s, c in zip(shape, coarse.shape, strict=True)]
    t = ndimage.zoom(coarse, zoom, order=0).astype(np.uint32)
    p = np.roll(t, 2, axis=2)
    p[p == 3] = 7
    p[rng.random(p.shape) < 0.02] = 0
    return t, p


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


@given(
    bz=st.integers(1, 12),
    by=st.integers(2, 20),
    bx=st.integers(2, 24),
    workers=st.sampled_from([1, 2]),
)
def test_blockwise_tables_equal_in_memory_any_block_shape(bz, by, bx, workers):
    t, p = _labels(0)
    r = evaluate(t, p, block_shape=(bz, by, bx), n_workers=workers, progress=False,
                 geometric=False)  # fmt: skip
    ref = evaluate_tables(overlap=overlap_table(t, p))
    ref.update(semantic_metrics(t, p))
    for k in TABLE_KEYS:
        if k != "pixel_error":
            assert _same(r.metrics[k], ref[k]), k
    # the whole-volume moments, whatever the blocks
    whole = object_moments(t)
    np.testing.assert_array_equal(r.truth_objects["label"], whole.ids)
    np.testing.assert_array_equal(r.truth_objects["size"], whole.count)
    np.testing.assert_array_equal(r.truth_objects["bbox_z0"], whole.lo[:, 0])


def test_semantic_keys_equal_sklearn_binary(rng):
    from sklearn.metrics import accuracy_score, precision_score, recall_score

    t = (rng.random((6, 20, 20)) < 0.4).astype(np.uint8) * 255
    p = (rng.random((6, 20, 20)) < 0.5).astype(np.uint8) * 255
    r = evaluate(t, p, task="semantic", block_shape=(4, 7, 9), progress=False, geometric=False)
    tf, pf = t.ravel() > 0, p.ravel() > 0
    assert r.per_class is None
    assert r.metrics["accuracy"] == pytest.approx(accuracy_score(tf, pf), abs=1e-15)
    assert r.metrics["precision"] == pytest.approx(precision_score(tf, pf), abs=1e-15)
    assert r.metrics["recall"] == pytest.approx(recall_score(tf, pf), abs=1e-15)
    tp, fp, fn = (tf & pf).sum(), (~tf & pf).sum(), (tf & ~pf).sum()
    assert r.metrics["jaccard"] == pytest.approx(tp / (tp + fp + fn), abs=1e-15)
    assert r.metrics["conformity"] == pytest.approx(1 - (fp + fn) / tp, abs=1e-14)
    assert r.metrics["ap50"] is None
    assert "not part of task" in r.notes["ap50"]


def test_multiclass_per_class_and_macro_equal_sklearn(rng):
    from sklearn.metrics import precision_recall_fscore_support

    t = rng.integers(0, 4, (5, 16, 16)).astype(np.uint8)
    p = np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, 4, t.shape)).astype(np.uint8)
    r = evaluate(t, p, task="semantic", block_shape=5, progress=False, geometric=False)
    assert sorted(r.per_class) == ["1", "2", "3"]
    pr, rc, f1, _ = precision_recall_fscore_support(t.ravel(), p.ravel(), labels=[1, 2, 3])
    for i, c in enumerate(["1", "2", "3"]):
        assert r.per_class[c]["precision"] == pytest.approx(pr[i], abs=1e-14)
        assert r.per_class[c]["recall"] == pytest.approx(rc[i], abs=1e-14)
        assert r.per_class[c]["dice"] == pytest.approx(f1[i], abs=1e-14)
    assert r.metrics["precision"] == pytest.approx(pr.mean(), abs=1e-14)
    assert r.metrics["accuracy"] == pytest.approx((t == p).mean(), abs=1e-15)
    assert "macro" in r.conventions["semantic_average"]
    # explicit classes: the same restricted to the listed ones
    r2 = evaluate(t, p, task="all", classes=[2, 3], block_shape=5, progress=False,
                  geometric=False, objects=False)  # fmt: skip
    assert sorted(r2.per_class) == ["2", "3"]
    assert r2.metrics["precision"] == pytest.approx(pr[1:].mean(), abs=1e-14)


def test_probability_map_pixel_error_curves_and_isbi_sweep(rng):
    t = ndimage.zoom(rng.integers(0, 2, (2, 6, 6)), (1, 5, 5), order=0).astype(np.uint8)
    prob = np.clip(t * 0.7 + rng.random(t.shape) * 0.4, 0, 1).astype(np.float32)
    r = evaluate(t, prob, block_shape=(1, 7, 11), progress=False)
    assert r.metrics["pixel_error"] == pytest.approx(pixel_error(t, prob).pixel_error, abs=1e-15)
    isbi = isbi2012_scores(t, 1.0 - prob.astype(np.float64))
    assert r.metrics["isbi_vrand"] == pytest.approx(isbi.v_rand, abs=1e-12)
    assert r.metrics["isbi_vinfo"] == pytest.approx(isbi.v_info, abs=1e-12)
    assert r.curves["thresholds"].size == 101
    # recall of p > 0 against t != 0, by hand
    fg = t != 0
    k = int(np.flatnonzero(np.isclose(r.curves["thresholds"], 0.5))[0])
    pred = prob > r.curves["thresholds"][k]
    assert r.curves["recall"][k] == pytest.approx((pred & fg).sum() / fg.sum())
    assert (
        r.metrics["warping_error"] == warping_error(t != 0, prob.astype(np.float64)).warping_error
    )
    assert "p > 0.5" in r.notes["prediction"]


def test_geometric_equal_in_memory_and_bounded_by_limit():
    t, p = _labels(1, shape=(8, 20, 20), n=6)
    sp = (40.0, 4.0, 4.0)
    r = evaluate(t, p, spacing=sp, block_shape=(3, 8, 8), progress=False)
    ref = geometric_metrics(t, p, spacing=sp)
    assert r.metrics["hausdorff"] == pytest.approx(ref["hausdorff"], rel=1e-12)
    assert r.metrics["hausdorff95"] == pytest.approx(ref["hausdorff95"], rel=1e-12)
    assert r.metrics["warping_error"] == ref["warping_error"]
    obj = hausdorff_per_object(t, p, spacing=sp)
    np.testing.assert_allclose(r.hausdorff_pairs["hausdorff"], obj.hausdorff, rtol=1e-12)
    # a tiny in-memory limit: every pair box is too large and is skipped, with a note
    small = evaluate(t, p, spacing=sp, progress=False, in_memory_limit=10, objects=True)
    assert small.metrics["hausdorff"] is not None
    assert math.isnan(small.metrics["hausdorff"])
    assert "skipped" in small.notes["hausdorff"]
    assert small.to_json()["hausdorff"] is None


def test_binary_hausdorff_one_side_empty_is_inf_null_in_json():
    t = np.zeros((10, 10), np.uint8)
    t[2:5, 2:5] = 255
    p = np.zeros_like(t)
    r = evaluate(t, p, task="semantic", progress=False)
    assert r.metrics["hausdorff"] == math.inf
    js = r.to_json()
    assert js["hausdorff"] is None
    assert "inf" in js["notes"]["hausdorff"]


def test_streamed_warping_equals_whole_stack(rng):
    t = ndimage.binary_opening(rng.random((4, 24, 24)) < 0.6).astype(np.uint8)
    p = ndimage.binary_dilation(t).astype(np.uint8)
    got = streamed_warping_error(t, p, truth_threshold=None, pred_threshold=None)
    assert got == warping_error(t != 0, p != 0).warping_error


def test_object_moments_against_scipy_and_skimage():
    from skimage.measure import regionprops

    t, _ = _labels(2)
    m = object_moments(t[:, 3:, 5:], offset=(0, 3, 5))
    lab = np.zeros_like(t)
    lab[:, 3:, 5:] = t[:, 3:, 5:]
    props = {r.label: r for r in regionprops(lab.astype(np.int64))}
    for i, lbl in enumerate(m.ids.tolist()):
        assert m.count[i] == props[lbl].area
        np.testing.assert_allclose(m.centroid()[i], props[lbl].centroid, rtol=1e-12)
        np.testing.assert_array_equal(np.r_[m.lo[i], m.hi[i] + 1], props[lbl].bbox)
        # covariance of voxel centres = skimage inertia-free central moments / n
        mu = props[lbl].moments_central
        assert m.covariance()[i][2, 2] == pytest.approx(mu[0, 0, 2] / mu[0, 0, 0] + 1 / 12)


def test_morphology_ball_and_rod():
    zz, yy, xx = np.mgrid[:41, :41, :41]
    ball = ((zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 15**2).astype(np.uint8)
    rod = np.zeros_like(ball)
    rod[18:23, 18:23, 2:39] = 2
    m = object_moments(np.maximum(ball * (rod == 0), rod))
    mt = morphology_table(m, spacing=(1.0, 1.0, 1.0), ndim=3)
    assert mt["equivalent_diameter_nm"][0] == pytest.approx((6 * m.count[0] / math.pi) ** (1 / 3))
    assert mt["elongation"][0] == pytest.approx(1.0, abs=0.05)
    # rod 5 x 5 x 37: sqrt(var_x / var_y) = sqrt((37^2) / (5^2)) for solid boxes
    assert mt["elongation"][1] == pytest.approx(37 / 5, rel=1e-9)
    # anisotropic spacing stretches z
    m1 = object_moments(np.ones((1, 1, 1), np.uint8))
    assert morphology_table(m1, spacing=(40.0, 4.0, 4.0), ndim=3)["elongation"][0] == 10.0


def test_validation_errors():
    t = np.zeros((4, 4), np.uint8)
    with pytest.raises(EmsegTypeError, match="truth_threshold"):
        evaluate(t.astype(np.float32), t, progress=False)
    with pytest.raises(EmsegValueError, match="same shape"):
        evaluate(t, np.zeros((4, 5), np.uint8), progress=False)
    with pytest.raises(EmsegValueError, match="task"):
        evaluate(t, t, task="bogus", progress=False)  # type: ignore[arg-type]
    with pytest.raises(EmsegTypeError, match="probabilities"):
        evaluate(t, t, probabilities=t, progress=False)
    many = np.arange(2000, dtype=np.uint32).reshape(40, 50)
    with pytest.raises(EmsegValueError, match="instance"):
        evaluate(many, many, task="semantic", progress=False)


def test_thresholds_binarise_float_truth(rng):
    t = rng.random((6, 12, 12)).astype(np.float32)
    p = (t > 0.5).astype(np.uint8)
    r = evaluate(t, p, truth_threshold=0.5, task="semantic", progress=False, geometric=False)
    assert r.metrics["dice"] == 1.0
    assert r.metrics["accuracy"] == 1.0


def test_flyem_blockwise_equals_in_memory(data_root):
    from emseg.data import open_dataset_file
    from emseg.metrics import neuron_metrics

    gt = open_dataset_file("flyem_medulla", "groundtruth")
    seg = open_dataset_file("flyem_medulla", "oversegmentation")
    r = evaluate(gt, seg, task="all", block_shape=(48, 100, 128), progress=False,
                 geometric=False)  # fmt: skip
    t, p = gt.read(), seg.read()
    ref = neuron_metrics(t, p)
    for k, v in ref.items():
        assert _same(r.metrics[k], v), k
    tab = overlap_table(t, p)
    ref_all = evaluate_tables(overlap=tab)
    for k in ("ap50", "aji", "pq", "f1_50", "rand_index"):
        assert _same(r.metrics[k], ref_all[k]), k
    whole = object_moments(t)
    np.testing.assert_array_equal(r.truth_objects["size"], whole.count)
    np.testing.assert_allclose(r.truth_objects["centroid_z_nm"], whole.centroid()[:, 0] * 10.0)
