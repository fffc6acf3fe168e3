"""Region adjacency graph features and mean-boundary agglomeration on hand-made volumes."""

from __future__ import annotations

import numpy as np
import pytest

from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.instance import (
    agglomerate,
    agglomerate_graph,
    region_adjacency_graph,
    supervoxels,
)


def _chain(values):
    """Fragments 1..n of 3 voxels each along x, with `values` on the voxels at each face."""
    n = len(values) + 1
    frag = np.repeat(np.arange(1, n + 1), 3)[None, None, :].repeat(2, axis=1)
    bnd = np.zeros(frag.shape)
    for i, v in enumerate(values):
        bnd[:, :, 3 * i + 2] = v
        bnd[:, :, 3 * i + 3] = v
    return frag, bnd


def test_rag_features_against_brute_force(rng):
    frag = rng.integers(0, 5, (4, 5, 6))
    bnd = rng.random(frag.shape)
    rag = region_adjacency_graph(frag, bnd)
    pairs: dict[tuple[int, int], list[float]] = {}
    for axis in range(3):
        a = np.moveaxis(frag, axis, 0)
        b = np.moveaxis(bnd, axis, 0)
        for u, v, bu, bv in zip(
            a[:-1].ravel(), a[1:].ravel(), b[:-1].ravel(), b[1:].ravel(), strict=True
        ):
            if u and v and u != v:
                pairs.setdefault((min(u, v), max(u, v)), []).append((bu + bv) / 2)
    assert rag.edges.tolist() == [[int(u), int(v)] for u, v in sorted(pairs)]
    for k, (u, v) in enumerate(rag.edges.tolist()):
        vals = np.array(pairs[(u, v)])
        assert rag.features["count"][k] == vals.size
        assert rag.features["mean"][k] == pytest.approx(vals.mean())
        assert rag.features["max"][k] == pytest.approx(vals.max())
        assert rag.features["q50"][k] == pytest.approx(np.quantile(vals, 0.5))
        assert rag.features["q90"][k] == pytest.approx(np.quantile(vals, 0.9))
        assert rag.features["size_u"][k] == (frag == u).sum()
    assert rag.feature_matrix().shape == (rag.edges.shape[0], len(rag.features))


def test_chain_merges_below_threshold():
    frag, bnd = _chain([0.1, 0.6, 0.2])
    lab = agglomerate(frag, bnd, threshold=0.5)
    assert lab[0, 0].tolist() == [1] * 6 + [2] * 6
    assert agglomerate(frag, bnd, threshold=0.7).max() == 1
    assert agglomerate(frag, bnd, threshold=0.05).max() == 4
    res = agglomerate_graph(region_adjacency_graph(frag, bnd), threshold=0.5)
    assert res.merges[:, 2].tolist() == pytest.approx([0.1, 0.2])  # lowest first


def test_merged_edge_statistics_are_exact_sums():
    # 1 2 2 2     faces: 1-2 mean 0.0 (1 pair), 1-3 mean 0.1 (1 pair),
    # 3 3 3 3            2-3 pairs 0.3, 0.6, 0.6 -> mean 0.5 (3 pairs)
    frag = np.array([[[1, 2, 2, 2], [3, 3, 3, 3]]])
    bnd = np.array([[[0.0, 0.0, 0.6, 0.6], [0.2, 0.6, 0.6, 0.6]]])
    rag = region_adjacency_graph(frag, bnd)
    assert rag.edges.tolist() == [[1, 2], [1, 3], [2, 3]]
    assert rag.features["mean"].tolist() == pytest.approx([0.0, 0.1, 0.5])
    # after 1+2 merge, the face to 3 has sum 0.1 + 1.5 over 4 pairs: mean 0.4 exactly
    # (not the min 0.1 nor the max 0.5 of the old faces)
    assert agglomerate_graph(rag, threshold=0.3).segment.tolist() == [1, 1, 2]
    res = agglomerate_graph(rag, threshold=0.45)
    assert res.segment.tolist() == [1, 1, 1]
    assert res.merges[:, 2].tolist() == pytest.approx([0.0, 0.4])
    assert agglomerate_graph(rag, threshold=0.41).segment.max() == 1
    assert agglomerate_graph(rag, threshold=0.39).segment.max() == 2


def test_supervoxels_then_agglomeration_recovers_cells(rng):
    # two cells separated by a membrane, noisy interiors -> many supervoxels -> two segments
    bnd = rng.random((8, 16, 24)) * 0.1
    bnd[:, :, 11:13] = 0.9 + rng.random((8, 16, 2)) * 0.1
    frag = supervoxels(bnd, seeds="minima")
    assert frag.max() > 2
    assert frag.min() >= 1
    lab = agglomerate(frag, bnd, threshold=0.4)
    assert lab.max() == 2
    assert len(np.unique(lab[:, :, :11])) == 1
    assert len(np.unique(lab[:, :, 13:])) == 1
    frag_d = supervoxels(bnd, seeds="distance", threshold=0.5, min_seed_distance_nm=4)
    assert agglomerate(frag_d, bnd, threshold=0.4).max() == 2


def test_bad_input():
    frag, bnd = _chain([0.1])
    with pytest.raises(EmsegTypeError, match="integer label"):
        agglomerate(frag.astype(np.float32), bnd, threshold=0.5)
    with pytest.raises(EmsegValueError, match="same shape"):
        agglomerate(frag, bnd[:, :, :-1], threshold=0.5)
    bad = bnd.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(EmsegValueError, match="NaN"):
        agglomerate(frag, bad, threshold=0.5)
    with pytest.raises(EmsegValueError, match="edge_weights"):
        agglomerate_graph(region_adjacency_graph(frag, bnd), threshold=0.5, edge_weights=np.ones(3))
