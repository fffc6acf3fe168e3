"""Rand index, adapted Rand (3 variants), VOI and ISBI V_info against hand cases,
brute force, scikit-image, scikit-learn and re-derivations of the reference code."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.metrics import adapted_rand_error as sk_are
from skimage.metrics import variation_of_information as sk_voi
from sklearn.metrics import rand_score

from emseg.errors import EmsegValueError
from emseg.metrics import (
    adapted_rand_error,
    isbi_information_scores,
    neuron_metrics,
    overlap_table,
    rand_index,
    voi,
)


def _cremi_reference(seg, gt):
    """Transcription of cremi.evaluation.rand.adapted_rand (segA = truth, segB = prediction)."""
    segA, segB = np.ravel(gt), np.ravel(seg)
    n = segA.size
    p_ij = sp.csr_matrix((np.ones(n), (segA, segB)), shape=(segA.max() + 1, segB.max() + 1))
    a = p_ij[1:, :]
    b = p_ij[1:, 1:]
    c = p_ij[1:, 0].todense()
    d = b.multiply(b)
    a_i = np.array(a.sum(1))
    b_i = np.array(b.sum(0))
    sum_a = np.sum(a_i * a_i)
    sum_b = np.sum(b_i * b_i) + np.sum(c) / n
    sum_ab = np.sum(d) + np.sum(c) / n
    precision, recall = sum_ab / sum_b, sum_ab / sum_a
    return 1.0 - 2.0 * precision * recall / (precision + recall), precision, recall


def _fiji_vrand_reference(gt, seg):
    """Fiji RandError.foregroundRestrictedStatsN2 on a dense, n-normalised p_ij."""
    gt, seg = np.ravel(gt), np.ravel(seg)
    n = np.count_nonzero(gt)
    pij = np.zeros((gt.max() + 1, seg.max() + 1))
    np.add.at(pij, (gt, seg), 1)
    pij /= n
    ai = pij[1:, :].sum(1)
    bj = pij[1:, 1:].sum(0)
    aux = pij[1:, 0].sum()
    sum_a2 = (ai**2).sum()
    sum_b2 = (bj**2).sum() + aux / n
    sum_ab2 = (pij[1:, 1:] ** 2).sum() + aux / n
    p, r = sum_ab2 / sum_b2, sum_ab2 / sum_a2
    return 2 * p * r / (p + r), p, r


def _fiji_vinfo_reference(gt, seg):
    """Fiji VariationOfInformation.foregroundRestrictedFscore (natural log)."""
    gt, seg = np.ravel(gt), np.ravel(seg)
    n = np.count_nonzero(gt)
    pij = np.zeros((gt.max() + 1, seg.max() + 1))
    np.add.at(pij, (gt, seg), 1)
    pij /= n
    ai = pij[1:, :].sum(1)
    bj = pij[1:, 1:].sum(0)
    aux = pij[1:, 0].sum()

    def xlx(x):
        x = x[x != 0]
        return (x * np.log(x)).sum()

    sum_a = xlx(ai)
    sum_b = xlx(bj) - aux * np.log(n)
    sum_ab = xlx(pij[1:, 1:].ravel()) - aux * np.log(n)
    ha, hb = -sum_a, -sum_b
    hab, hba = sum_b - sum_ab, sum_a - sum_ab
    prec, rec = (ha - hab) / ha, (hb - hba) / hb
    return 2 * prec * rec / (prec + rec)


def _brute_rand(t, p):
    t, p = np.ravel(t), np.ravel(p)
    agree = total = 0
    for i, j in itertools.combinations(range(t.size), 2):
        agree += (t[i] == t[j]) == (p[i] == p[j])
        total += 1
    return agree / total


def _entropy_voi(t, p):
    """H(P|T), H(T|P) in bits from joint and marginal entropies, plain numpy."""
    t, p = np.ravel(t), np.ravel(p)
    n = t.size

    def h(*cols):
        _, c = np.unique(np.stack(cols, axis=1), axis=0, return_counts=True)
        q = c / n
        return -(q * np.log2(q)).sum()

    hj = h(t, p)
    return hj - h(t), hj - h(p)


# -------------------------------------------------------------------- hand cases


def test_rand_hand_case():
    # truth {a,b | c}, prediction {a,b,c}: pairs ab agree, ac and bc disagree -> RI = 1/3
    r = rand_index(np.array([1, 1, 2]), np.array([4, 4, 4]))
    assert r.rand_index == pytest.approx(1 / 3)
    assert (r.n_pairs, r.same_both, r.same_truth, r.same_prediction) == (3, 1, 1, 3)
    assert r.rand_error == pytest.approx(2 / 3)


def test_adapted_rand_hand_case_all_variants():
    truth = np.array([1, 1, 1, 1, 2, 2, 0, 0])
    pred = np.array([5, 5, 6, 0, 6, 6, 5, 0])
    # without truth 0: p = {(1,5):2, (1,6):1, (1,0):1, (2,6):2}; a = [4, 2]; b(5)=2, b(6)=3; c = 1
    # Σp² (pred != 0) = 4 + 1 + 4 = 9; Σa² = 20; Σb² = 4 + 9 = 13; n = 8 (all voxels)
    # cremi: P = (9 + 1/8) / (13 + 1/8), R = (9 + 1/8) / 20
    are = adapted_rand_error(truth, pred, variant="cremi")
    assert are.precision == pytest.approx(9.125 / 13.125)
    assert are.recall == pytest.approx(9.125 / 20)
    assert are.f_score == pytest.approx(2 * 9.125 / (20 + 13.125))
    # isbi2012: the predicted-0 voxel is a singleton: P = 10 / 14, R = 10 / 20
    isbi = adapted_rand_error(truth, pred, variant="isbi2012")
    assert (isbi.precision, isbi.recall) == pytest.approx((10 / 14, 10 / 20))
    assert isbi.error == pytest.approx(1 - 2 * 10 / 34)
    # skimage: pred 0 ordinary, self-pairs removed; N = 6; Σp² incl (1,0) = 10 -> 4
    # Σa² = 20 -> 14, pred sizes {5:2, 6:3, 0:1} -> Σb² = 14 -> 8: P = 4/8, R = 4/14
    sk = adapted_rand_error(truth, pred, variant="skimage")
    assert (sk.precision, sk.recall) == pytest.approx((4 / 8, 4 / 14))
    ref = sk_are(truth, pred)
    assert sk.error == pytest.approx(ref[0])
    # scikit-image's second value is normalised by the truth: our recall
    assert (sk.recall, sk.precision) == pytest.approx((ref[1], ref[2]))


def test_voi_hand_case():
    # every truth segment split in two halves: H(P|T) = 1 bit, H(T|P) = 0
    v = voi(np.array([1, 1, 2, 2]), np.array([1, 2, 3, 4]))
    assert (v.split, v.merge, v.total) == pytest.approx((1.0, 0.0, 1.0))
    # both truth segments merged into one: merge = 1 bit
    v = voi(np.array([1, 1, 2, 2]), np.array([7, 7, 7, 7]))
    assert (v.split, v.merge) == pytest.approx((0.0, 1.0))
    # truth label 0 ignored by default; ignore_prediction drops voxels too
    v = voi(np.array([0, 0, 1, 1]), np.array([1, 2, 3, 3]))
    assert (v.split, v.merge) == pytest.approx((0.0, 0.0))
    v = voi(np.array([1, 1, 1, 1]), np.array([0, 0, 3, 3]), ignore_prediction=[0])
    assert (v.split, v.merge) == pytest.approx((0.0, 0.0))


def test_zero_division_cases():
    assert math.isnan(rand_index(np.array([1]), np.array([1])).rand_index)
    assert rand_index(np.array([1]), np.array([1]), zero_division=1.0).rand_index == 1.0
    empty_truth = np.zeros(5, np.uint8)
    assert math.isnan(voi(empty_truth, np.arange(5)).split)
    assert math.isnan(adapted_rand_error(empty_truth, np.arange(5)).error)
    assert math.isnan(isbi_information_scores(empty_truth, np.arange(5)).v_info)
    # one truth segment: H(T) = 0 -> merge score 0/0
    s = isbi_information_scores(np.ones(4, np.uint8), np.array([1, 1, 2, 2]))
    assert math.isnan(s.merge)
    assert s.split == pytest.approx(0.0)


# ------------------------------------------------------- references and brute force


@pytest.mark.parametrize("seed", range(4))
def test_against_references_on_random_volumes(seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 5, size=(3, 4, 5))
    p = rng.integers(0, 4, size=(3, 4, 5))
    p[0, 0, 0] = 0  # make sure predicted 0 occurs
    assert rand_index(t, p).rand_index == pytest.approx(_brute_rand(t, p))
    assert rand_index(t, p).rand_index == pytest.approx(rand_score(t.ravel(), p.ravel()))
    assert rand_index(p, t).rand_index == pytest.approx(rand_index(t, p).rand_index)
    ref = _cremi_reference(p, t)
    ours = adapted_rand_error(t, p, variant="cremi")
    assert (ours.error, ours.precision, ours.recall) == pytest.approx(ref)
    f, prec, rec = _fiji_vrand_reference(t, p)
    ours = adapted_rand_error(t, p, variant="isbi2012")
    assert (ours.f_score, ours.precision, ours.recall) == pytest.approx((f, prec, rec))
    assert isbi_information_scores(t, p).v_info == pytest.approx(_fiji_vinfo_reference(t, p))
    for ignore in [(0,), (), (1, 2)]:
        ref = sk_are(t, p, ignore_labels=ignore)
        ours = adapted_rand_error(t, p, variant="skimage", ignore_truth=ignore)
        assert ours.error == pytest.approx(ref[0])
        ref_v = sk_voi(t, p, ignore_labels=ignore)
        ours_v = voi(t, p, ignore_truth=ignore)
        assert (ours_v.split, ours_v.merge) == pytest.approx(tuple(ref_v), abs=1e-12)
    assert voi(t, p, ignore_truth=()).split == pytest.approx(_entropy_voi(t, p)[0])
    assert voi(t, p, ignore_truth=()).merge == pytest.approx(_entropy_voi(t, p)[1])


def test_table_input_and_validation():
    t = np.array([1, 1, 2, 0])
    p = np.array([1, 2, 2, 2])
    tab = overlap_table(t, p)
    assert neuron_metrics(tab) == neuron_metrics(t, p)
    with pytest.raises(EmsegValueError, match="leave out"):
        voi(tab, p)
    with pytest.raises(EmsegValueError, match="prediction"):
        voi(t)
    with pytest.raises(EmsegValueError, match="variant"):
        adapted_rand_error(t, p, variant="snemi")  # type: ignore[arg-type]
    with pytest.raises(EmsegValueError, match="ignore_truth"):
        adapted_rand_error(t, p, variant="cremi", ignore_truth=(0,))


# ------------------------------------------------------------------- properties

labels_2d = arrays(
    np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, 4)
)


@given(x=labels_2d)
def test_voi_of_itself_is_zero_and_scores_perfect(x):
    v = voi(x, x, ignore_truth=())
    assert v.split == 0.0
    assert v.merge == 0.0
    if x.size > 1:
        assert rand_index(x, x).rand_index == 1.0
    if np.any(x != 0):
        assert adapted_rand_error(x, x, variant="isbi2012").error == pytest.approx(0.0, abs=1e-12)


@given(x=labels_2d, y=labels_2d, seed=st.integers(0, 2**16))
def test_invariant_to_relabelling_with_huge_ids(x, y, seed):
    if x.shape != y.shape:
        y = np.resize(y, x.shape)
    rng = np.random.default_rng(seed)
    big = np.uint64(2**63) + rng.permutation(5).astype(np.uint64) * np.uint64(2**40)
    big[0] = 0  # label 0 keeps its meaning (unlabelled); the others become huge ids
    x2 = big[x.astype(np.int64)]
    y2 = big[y.astype(np.int64)]
    a, b = neuron_metrics(x, y), neuron_metrics(x2, y2)
    for k in a:
        if math.isnan(a[k]):
            assert math.isnan(b[k])
        else:
            assert b[k] == pytest.approx(a[k], abs=1e-12), k
    v1, v2 = voi(x, y, ignore_truth=()), voi(y, x, ignore_truth=())
    assert v1.split == pytest.approx(v2.merge, abs=1e-12)  # VOI swaps its terms
