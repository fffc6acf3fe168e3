"""evaluate_tables: every JSON key, values equal to the individual metrics."""

from __future__ import annotations

import numpy as np
import pytest

from emseg.metrics import (
    CONVENTIONS,
    confusion_matrix,
    evaluate_tables,
    instance_metrics,
    neuron_metrics,
    overlap_table,
    probability_histogram,
    semantic_metrics,
)

SCHEMA = [
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "dice",
    "jaccard",
    "conformity",
    "pixel_error",
    "rand_index",
    "adapted_rand_error_cremi",
    "adapted_rand_error_isbi2012",
    "adapted_rand_error_skimage",
    "voi_split",
    "voi_merge",
    "isbi_vrand",
    "isbi_vinfo",
    "warping_error",
    "hausdorff",
    "hausdorff95",
    "ap50",
    "ap75",
    "map",
    "aji",
    "pq",
    "sq",
    "rq",
    "f1_50",
    "coco_map",
    "coco_ap50",
    "coco_ap75",
    "mitoem_ap75",
]


def test_evaluate_tables_keys_and_values(rng):
    t = rng.integers(0, 4, size=(3, 8, 8))
    p = np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, 5, size=t.shape))
    prob = rng.random(t.shape)
    tab = overlap_table(t, p)
    out = evaluate_tables(
        overlap=tab,
        confusion=confusion_matrix(t != 0, p != 0),
        histogram=probability_histogram(t, prob, thresholds=np.arange(11) / 10),
    )
    assert set(out) == {*SCHEMA, "conventions"}
    assert out["conventions"] == CONVENTIONS
    for k, v in {**neuron_metrics(t, p), **instance_metrics(t, p)}.items():
        if k.startswith("coco_"):
            assert out[k] is None, k  # no scores given
            continue
        assert out[k] == pytest.approx(v, nan_ok=True), k
    scored = evaluate_tables(overlap=tab, scores={1: 0.9, 2: 0.1, 3: 0.5, 4: 0.7})
    ref = instance_metrics(t, p, scores={1: 0.9, 2: 0.1, 3: 0.5, 4: 0.7})
    for k in ("coco_map", "coco_ap50", "coco_ap75", "mitoem_ap75"):
        assert scored[k] == pytest.approx(ref[k], nan_ok=True), k
    assert not np.isnan(scored["coco_map"])
    sem = semantic_metrics(t, p, probabilities=prob)
    for k, v in sem.items():
        assert out[k] == pytest.approx(v, nan_ok=True), k
    assert out["hausdorff"] is None
    only = evaluate_tables(overlap=tab)
    assert only["dice"] is None
    assert only["voi_split"] == out["voi_split"]
