"""Overlap table: hand cases, brute force, huge ids, masks, threads and exact merging."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.metrics import OverlapTable, merge_tables, overlap_table


def _brute(t, p, mask=None):
    t, p = np.ravel(t).astype(np.uint64), np.ravel(p).astype(np.uint64)
    if mask is not None:
        t, p = t[np.ravel(mask)], p[np.ravel(mask)]
    pairs, counts = np.unique(np.stack([t, p], axis=1), axis=0, return_counts=True)
    return pairs[:, 0], pairs[:, 1], counts


def _assert_same(tab, ref):
    np.testing.assert_array_equal(tab.truth_ids, ref[0])
    np.testing.assert_array_equal(tab.pred_ids, ref[1])
    np.testing.assert_array_equal(tab.counts, ref[2])
    assert tab.n_voxels == int(ref[2].sum())


def test_hand_case_and_sizes():
    t = np.array([[1, 1, 2], [2, 2, 0]], dtype=np.uint8)
    p = np.array([[5, 5, 5], [7, 7, 7]], dtype=np.uint32)
    tab = overlap_table(t, p)
    # pairs: (1,5) x2, (2,5) x1, (2,7) x2, (0,7) x1
    assert tab.truth_ids.tolist() == [0, 1, 2, 2]
    assert tab.pred_ids.tolist() == [7, 5, 5, 7]
    assert tab.counts.tolist() == [1, 2, 1, 2]
    ids, sizes = tab.truth_sizes()
    assert ids.tolist() == [0, 1, 2]
    assert sizes.tolist() == [1, 2, 3]
    ids, sizes = tab.pred_sizes()
    assert ids.tolist() == [5, 7]
    assert sizes.tolist() == [3, 3]
    tr = tab.transpose()
    assert tr.truth_ids.tolist() == [5, 5, 7, 7]
    assert tr.pred_ids.tolist() == [1, 2, 0, 2]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64, np.int32, np.int64])
def test_matches_brute_force_3d(rng, dtype):
    t = rng.integers(0, 7, size=(6, 9, 11)).astype(dtype)
    p = rng.integers(0, 5, size=(6, 9, 11)).astype(dtype)
    _assert_same(overlap_table(t, p), _brute(t, p))


def test_huge_uint64_ids_do_not_allocate_by_max_id(rng):
    base = np.uint64(2**63)
    t = (rng.integers(0, 50, size=5000).astype(np.uint64) * np.uint64(2**57)) + base
    p = np.uint64(2**64 - 1) - rng.integers(0, 30, size=5000).astype(np.uint64)
    tab = overlap_table(t, p)
    _assert_same(tab, _brute(t, p))
    assert tab.truth_ids.dtype == np.uint64


def test_mask_and_bool_labels(rng):
    t = rng.integers(0, 2, size=(20, 30)).astype(bool)
    p = rng.integers(0, 4, size=(20, 30)).astype(np.uint16)
    m = rng.random((20, 30)) > 0.3
    _assert_same(overlap_table(t, p, mask=m), _brute(t, p, m))


def test_threads_give_the_same_table(rng):
    t = np.repeat(rng.integers(0, 300, size=4000), 50).astype(np.uint32)
    p = np.repeat(rng.integers(0, 200, size=5000), 40).astype(np.uint32)
    one = overlap_table(t, p, n_threads=1)
    for k in (2, 3, 7):
        many = overlap_table(t, p, n_threads=k)
        _assert_same(many, (one.truth_ids, one.pred_ids, one.counts))
    _assert_same(one, _brute(t, p))


def test_non_contiguous_input(rng):
    t = rng.integers(0, 9, size=(10, 12)).astype(np.uint32)
    p = rng.integers(0, 9, size=(12, 10)).astype(np.uint32).T
    _assert_same(overlap_table(t, p), _brute(t, p))


@given(
    labels=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4)), min_size=1, max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=4),
)
def test_merge_of_random_splits_equals_whole(labels, cuts):
    arr = np.array(labels, dtype=np.uint64)
    t, p = arr[:, 0], arr[:, 1]
    edges = sorted({0, len(t), *[min(c, len(t)) for c in cuts]})
    parts = [overlap_table(t[a:b], p[a:b]) for a, b in itertools.pairwise(edges)]
    whole = overlap_table(t, p)
    merged = merge_tables(parts)
    _assert_same(merged, (whole.truth_ids, whole.pred_ids, whole.counts))
    # associativity / the + operator
    acc = OverlapTable.empty()
    for part in reversed(parts):
        acc = part + acc
    _assert_same(acc, (whole.truth_ids, whole.pred_ids, whole.counts))


def test_without_and_empty():
    tab = overlap_table(np.array([0, 1, 1, 2]), np.array([3, 3, 0, 0]))
    kept = tab.without(truth=[0], prediction=[0])
    assert kept.truth_ids.tolist() == [1]
    assert kept.counts.tolist() == [1]
    empty = overlap_table(np.zeros(0, np.uint8), np.zeros(0, np.uint8))
    assert len(empty) == 0
    assert empty.n_voxels == 0
    assert merge_tables([]).n_voxels == 0


def test_validation_errors():
    with pytest.raises(EmsegValueError, match="same shape"):
        overlap_table(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))
    with pytest.raises(EmsegTypeError, match="integer label array"):
        overlap_table(np.zeros(3, np.float32), np.zeros(3, np.uint8))
    with pytest.raises(EmsegValueError, match="non-negative"):
        overlap_table(np.array([-1, 2]), np.array([1, 2]))
    with pytest.raises(EmsegTypeError, match="boolean"):
        overlap_table(np.zeros(3, np.uint8), np.zeros(3, np.uint8), mask=np.ones(3, np.uint8))
    with pytest.raises(EmsegValueError, match="n_threads"):
        overlap_table(np.zeros(3, np.uint8), np.zeros(3, np.uint8), n_threads=0)
    with pytest.raises(EmsegValueError, match="n_voxels"):
        OverlapTable(np.array([1]), np.array([1]), np.array([2]), 3)
    with pytest.raises(EmsegTypeError, match="OverlapTable"):
        merge_tables([np.zeros(3)])  # type: ignore[list-item]
