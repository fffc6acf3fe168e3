"""Mutex watershed: hand-built affinity graphs and a plain-Python reference of Algorithm 1."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emseg.errors import EmsegValueError
from emseg.instance import mutex_watershed
from emseg.metrics import voi


def _reference(aff, offsets, n_attractive):
    """Wolf et al. Algorithm 1 with Python sets (slow, obviously correct)."""
    shape = aff.shape[1:]
    n = int(np.prod(shape))
    edges = []
    for c, off in enumerate(offsets):
        for p in np.ndindex(shape):
            q = tuple(a + o for a, o in zip(p, off, strict=True))
            if all(0 <= x < s for x, s in zip(q, shape, strict=True)):
                w = aff[(c, *p)]
                rep = c >= n_attractive
                edges.append(
                    (
                        1 - w if rep else w,
                        c,
                        np.ravel_multi_index(p, shape),
                        np.ravel_multi_index(q, shape),
                        rep,
                    )
                )
    # decreasing weight, ties in channel then raster order (stable)
    order = sorted(range(len(edges)), key=lambda k: -edges[k][0])
    cluster = {i: {i} for i in range(n)}
    of = list(range(n))
    mutex: set[frozenset[int]] = set()
    for k in order:
        _, _, u, v, rep = edges[k]
        a, b = of[u], of[v]
        if a == b:
            continue
        if rep:
            mutex.add(frozenset((a, b)))
        elif frozenset((a, b)) not in mutex:
            for x in cluster[b]:
                of[x] = a
            cluster[a] |= cluster.pop(b)
            for m in [m for m in mutex if b in m]:
                mutex.discard(m)
                (o,) = m - {b}
                mutex.add(frozenset((a, o)))
    return np.array(of).reshape(shape)


def test_hand_made_line():
    aff = np.zeros((2, 1, 4))
    aff[0, 0, 1:] = [0.9, 0.8, 0.95]  # attractive (0, -1): voxel x with x - 1
    # repulsive (0, -3): voxel 3 with voxel 0, affinity 0 -> weight 1, processed first
    assert mutex_watershed(aff, [(0, -1), (0, -3)], n_attractive=1).tolist() == [[1, 1, 2, 2]]
    aff[0, 0, 2] = 0.97  # now 1-2 merges first, then 2-3; 0-1 is blocked by the mutex
    assert mutex_watershed(aff, [(0, -1), (0, -3)], n_attractive=1).tolist() == [[1, 2, 2, 2]]
    aff[1, 0, 3] = 0.99  # a weak repulsion (weight 0.01) comes last: everything merges
    assert mutex_watershed(aff, [(0, -1), (0, -3)], n_attractive=1).tolist() == [[1, 1, 1, 1]]


def test_two_regions_separated_by_long_range_repulsion():
    truth = np.zeros((6, 10), np.int64)
    truth[:, 5:] = 1
    offsets = [(-1, 0), (0, -1), (0, -4), (-3, 0)]
    aff = np.zeros((4, 6, 10))
    for c, off in enumerate(offsets):
        shifted = np.full(truth.shape, -1)
        src = tuple(slice(max(0, -o), s - max(0, o)) for s, o in zip(truth.shape, off, strict=True))
        dst = tuple(slice(max(0, o), s - max(0, -o)) for s, o in zip(truth.shape, off, strict=True))
        shifted[src] = truth[dst]
        aff[c] = np.where(shifted == truth, 0.9, 0.1)
    # make the nearest-neighbour boundary ambiguous: attraction across it 0.6
    aff[1][:, 5] = 0.6
    lab = mutex_watershed(aff, offsets)
    assert voi(truth + 1, lab.astype(np.int64)).total == 0.0
    # without repulsive channels the ambiguous boundary merges everything
    assert mutex_watershed(aff[:2], offsets[:2]).max() == 1


@given(seed=st.integers(0, 2**31), shape=st.sampled_from([(4, 5), (3, 3, 4), (6, 6)]))
def test_equals_reference_on_random_affinities(seed, shape):
    rng = np.random.default_rng(seed)
    nd = len(shape)
    offsets = [tuple(-1 if i == a else 0 for i in range(nd)) for a in range(nd)]
    offsets += [tuple(-2 if i == a else 0 for i in range(nd)) for a in range(nd)]
    offsets.append(tuple([-1] * nd))
    aff = rng.random((len(offsets), *shape))
    got = mutex_watershed(aff, offsets)
    ref = _reference(aff, offsets, nd)
    assert voi(ref + 1, got.astype(np.int64)).total == 0.0


def test_mask_and_bad_input():
    aff = np.full((2, 3, 3), 0.9)
    mask = np.ones((3, 3), bool)
    mask[1, :] = False
    lab = mutex_watershed(aff, [(-1, 0), (0, -1)], mask=mask)
    assert lab.tolist() == [[1, 1, 1], [0, 0, 0], [2, 2, 2]]
    with pytest.raises(EmsegValueError, match="offsets"):
        mutex_watershed(aff, [(-1, 0)])
    with pytest.raises(EmsegValueError, match="n_attractive"):
        mutex_watershed(aff, [(-1, 0), (0, -1)], n_attractive=3)
    bad = aff.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(EmsegValueError, match="NaN"):
        mutex_watershed(bad, [(-1, 0), (0, -1)])
