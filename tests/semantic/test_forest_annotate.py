"""Simulated interactive annotation: correction sampling and the train -> correct loop."""

from __future__ import annotations

import numpy as np
import pytest

from emseg.data import synthetic_em
from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.features import FeatureSpec
from emseg.semantic.forest import (
    AnnotationRound,
    boundary_distance,
    sample_corrections,
    simulate_annotation,
)


def test_boundary_distance_against_brute_force(rng):
    truth = rng.integers(0, 3, (4, 6, 5))
    spacing = (3.0, 1.0, 2.0)
    got = boundary_distance(truth, spacing=spacing)
    pts = np.indices(truth.shape).reshape(3, -1).T * np.asarray(spacing)
    flat = truth.reshape(-1)
    for i in range(flat.size):
        other = pts[flat != flat[i]]
        ref = np.sqrt(((other - pts[i]) ** 2).sum(axis=1)).min()
        assert got.reshape(-1)[i] == pytest.approx(ref)
    assert np.all(np.isinf(boundary_distance(np.ones((3, 3), np.uint8))))


def test_sample_corrections_hand_case():
    truth = np.array([[1, 1, 1, 1, 2, 2, 2, 2, 0, 0]])
    pred = np.array([[2, 1, 2, 2, 2, 1, 1, 2, 1, 2]])
    # wrong: class 1 at x 0, 2, 3; class 2 at x 5, 6; truth 0 is never drawn
    out = sample_corrections(truth, pred, n_per_class=10)
    np.testing.assert_array_equal(out, [[1, 0, 1, 1, 0, 2, 2, 0, 0, 0]])
    assert out.dtype == np.uint8
    # at most n_per_class per class, all of them misclassified, with their true class
    out = sample_corrections(truth, pred, n_per_class=1, seed=3)
    assert (out == 1).sum() == 1
    assert (out == 2).sum() == 1
    assert np.all(truth[out > 0] == out[out > 0])
    assert np.all(pred[out > 0] != truth[out > 0])
    np.testing.assert_array_equal(out, sample_corrections(truth, pred, n_per_class=1, seed=3))
    # existing labels are kept and not drawn again (x 0 is labelled already)
    labels = np.array([[1, 0, 0, 0, 0, 0, 0, 2, 0, 0]])
    out = sample_corrections(truth, pred, n_per_class=2, labels=labels, seed=0)
    assert out[0, 0] == 1
    assert out[0, 7] == 2
    assert (out[0, 1:4] == 1).sum() == 2  # two of x 2, 3 (x 1 is right)
    np.testing.assert_array_equal(out[0, 5:7], [2, 2])
    # margin (nm; spacing 2 nm): the distance to the nearest other label (0 counts) is
    # 8 nm for x 0 (x 4), 4 for x 2 (x 4), 2 for x 3, 4 for x 5 (x 3) and 4 for x 6 (x 8)
    out = sample_corrections(truth, pred, n_per_class=10, margin=4.0, spacing=(2.0, 2.0))
    np.testing.assert_array_equal(out, [[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    out = sample_corrections(truth, pred, n_per_class=10, margin=3.0, spacing=(2.0, 2.0))
    np.testing.assert_array_equal(out, [[1, 0, 1, 0, 0, 2, 2, 0, 0, 0]])


def test_sample_corrections_bad_input():
    truth = np.ones((4, 4), np.uint8)
    with pytest.raises(EmsegValueError, match="shape"):
        sample_corrections(truth, np.ones((4, 5), np.uint8), n_per_class=1)
    with pytest.raises(EmsegTypeError, match="prediction"):
        sample_corrections(truth, np.ones((4, 4)), n_per_class=1)
    with pytest.raises(EmsegValueError, match="n_per_class"):
        sample_corrections(truth, truth, n_per_class=-1)
    with pytest.raises(EmsegValueError, match="margin"):
        sample_corrections(truth, truth, n_per_class=1, margin=-2.0)


@pytest.fixture(scope="module")
def synthetic():
    em = synthetic_em((6, 80, 80), seed=5, spacing=(40.0, 4.0, 4.0))
    truth = np.select([em.classes == 1, em.classes == 4], [2, 3], 1).astype(np.uint8)
    return em, truth


def test_simulate_annotation_corrects_training_errors(synthetic):
    em, truth = synthetic
    kw = {
        "spacing": em.spacing,
        "spec": FeatureSpec(scales=(4.0, 8.0, 16.0), mode="2d"),
        "n_estimators": 10,
        "initial_per_class": 15,
        "corrections_per_class": 150,
        "rounds": 2,
        "margin": 4.0,
        "seed": 1,
        "n_jobs": 1,
    }
    res = simulate_annotation(em.image, truth, **kw)
    assert [r.round for r in res.rounds] == [0, 1, 2]
    assert all(isinstance(r, AnnotationRound) for r in res.rounds)
    # the label budget: 15 per class at first, then at most 150 per class per round
    assert res.rounds[0].labelled == {"class1": 15, "class2": 15, "class3": 15}
    for prev, cur in zip(res.rounds, res.rounds[1:], strict=False):
        for c in cur.labelled:
            assert prev.labelled[c] <= cur.labelled[c] <= prev.labelled[c] + 150
    final = np.bincount(res.labels.reshape(-1), minlength=4)[1:]
    assert list(final) == list(res.rounds[-1].labelled.values())
    # every label is the truth
    lab = res.labels
    assert np.all(truth[lab > 0] == lab[lab > 0])
    # corrections fix what the sparse start got wrong on the training image
    assert res.rounds[-1].error_rate < 0.8 * res.rounds[0].error_rate
    pred = res.model.predict(em.image, spacing=em.spacing)
    assert ((pred != truth).mean()) == pytest.approx(res.rounds[-1].error_rate)
    # the initial labels come first from the seed: a run without rounds draws the same ones;
    # every later label is a correction, more than `margin` nm from any class edge
    start = simulate_annotation(em.image, truth, **{**kw, "rounds": 0})
    assert np.all(res.labels[start.labels > 0] == start.labels[start.labels > 0])
    added = (res.labels > 0) & (start.labels == 0)
    assert added.sum() > 0
    assert np.all(boundary_distance(truth, spacing=em.spacing)[added] > 4.0)
    # reproducible
    again = simulate_annotation(em.image, truth, **kw)
    np.testing.assert_array_equal(again.labels, res.labels)


def test_simulate_annotation_bad_input(synthetic):
    em, truth = synthetic
    with pytest.raises(EmsegValueError, match="initial_per_class"):
        simulate_annotation(em.image, truth, spacing=em.spacing, initial_per_class=0)
    with pytest.raises(EmsegValueError, match="rounds"):
        simulate_annotation(em.image, truth, spacing=em.spacing, rounds=-1)
    gap = np.where(truth == 2, 3, truth).astype(np.uint8)
    with pytest.raises(EmsegValueError, match="class 2"):
        simulate_annotation(em.image, gap, spacing=em.spacing, rounds=0)
    with pytest.raises(EmsegValueError, match="shape"):
        simulate_annotation(em.image[:2], truth, spacing=em.spacing)
