"""A learned edge classifier for agglomeration (as in gala / NeuroProof, without re-training).

A random forest on the region adjacency graph's edge features, trained on
ground truth: an edge is a *merge* edge when the two fragments' majority
ground-truth objects are the same. Its merge probabilities drive
:func:`~emseg.instance.agglomerate_graph` through ``edge_weights = 1 - p``
(averaged over merged faces, weighted by face size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emseg.errors import EmsegValueError
from emseg.instance._rag import RegionAdjacencyGraph
from emseg.instance._validate import check_labels

#: The RAG features the classifier uses, in this order (plus log region sizes).
FEATURES = ("count", "mean", "min", "max", "q10", "q25", "q50", "q75", "q90")


def edge_features(rag: RegionAdjacencyGraph) -> np.ndarray:
    """(E, F) float64: the :data:`FEATURES`, log face size and log region sizes (min, max)."""
    f = rag.features
    small = np.minimum(f["size_u"], f["size_v"])
    large = np.maximum(f["size_u"], f["size_v"])
    cols = [f[k] for k in FEATURES] + [np.log1p(f["count"]), np.log1p(small), np.log1p(large)]
    return np.stack(cols, axis=1) if rag.edges.shape[0] else np.zeros((0, len(cols)))


def edge_labels(
    rag: RegionAdjacencyGraph, fragments: Any, truth: Any, *, ignore: Sequence[int] = (0,)
) -> np.ndarray:
    """Ground-truth label of each edge: 1 merge, 0 keep apart, -1 unknown.

    Each fragment takes the truth id that covers most of its voxels (voxels
    with an `ignore` id left out); an edge is unknown when a fragment has no
    such voxel.

    Returns
    -------
    (E,) ndarray of int8
    """
    frag = check_labels(fragments, name="fragments")
    gt = check_labels(truth, name="truth")
    if frag.shape != gt.shape:
        raise EmsegValueError(
            f"`fragments` and `truth` must have the same shape; got {frag.shape} and {gt.shape}."
        )
    keep = (frag != 0) & ~np.isin(gt, np.asarray(ignore))
    pairs, counts = np.unique(
        np.stack([frag[keep].astype(np.uint64), gt[keep].astype(np.uint64)], axis=1),
        axis=0,
        return_counts=True,
    )
    order = np.lexsort((-counts, pairs[:, 0]))
    pairs = pairs[order]
    first = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]] if pairs.size else np.zeros(0, bool)
    owners, majority = pairs[first, 0], pairs[first, 1]

    def lookup(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if owners.size == 0:
            return np.zeros(ids.size, bool), np.zeros(ids.size, np.uint64)
        idx = np.searchsorted(owners, ids).clip(max=owners.size - 1)
        return owners[idx] == ids, majority[idx]

    ku, mu = lookup(rag.edges[:, 0])
    kv, mv = lookup(rag.edges[:, 1])
    out = np.where(mu == mv, 1, 0).astype(np.int8)
    out[~(ku & kv)] = -1
    return out


@dataclass(frozen=True)
class EdgeClassifier:
    """A trained random forest on edge features; :meth:`merge_probability` per edge."""

    model: Any

    def merge_probability(self, rag: RegionAdjacencyGraph) -> np.ndarray:
        """(E,) float64: the probability that each edge joins two parts of one object."""
        x = edge_features(rag)
        if x.shape[0] == 0:
            return np.zeros(0)
        proba = self.model.predict_proba(x)
        classes = list(self.model.classes_)
        return proba[:, classes.index(1)] if 1 in classes else np.zeros(x.shape[0])


def train_edge_classifier(
    examples: Sequence[tuple[RegionAdjacencyGraph, Any, Any]],
    *,
    n_estimators: int = 200,
    min_samples_leaf: int = 2,
    seed: int = 0,
) -> EdgeClassifier:
    """Train an :class:`EdgeClassifier` on (rag, fragments, truth) examples.

    Parameters
    ----------
    examples : sequence of (RegionAdjacencyGraph, fragments, truth)
        Graphs with the fragments they were built from and ground truth of the
        same shape (0 = unlabelled, ignored).
    n_estimators, min_samples_leaf : int
        Random-forest settings (scikit-learn).
    seed : int
        Random state: the same data and seed give the same forest.
    """
    from sklearn.ensemble import RandomForestClassifier

    xs, ys = [], []
    for rag, frag, truth in examples:
        y = edge_labels(rag, frag, truth)
        known = y >= 0
        xs.append(edge_features(rag)[known])
        ys.append(y[known])
    x = np.concatenate(xs) if xs else np.zeros((0, 0))
    y = np.concatenate(ys) if ys else np.zeros(0)
    if y.size == 0 or np.unique(y).size < 2:
        raise EmsegValueError(
            "the training edges need both merge and keep-apart examples; got "
            f"{int((y == 1).sum())} merge and {int((y == 0).sum())} keep-apart edges."
        )
    model = RandomForestClassifier(
        n_estimators=n_estimators,
        min_samples_leaf=min_samples_leaf,
        random_state=seed,
        n_jobs=1,
    ).fit(x, y)
    return EdgeClassifier(model)
