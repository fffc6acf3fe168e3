"""A learned edge classifier for agglomeration (as in gala / NeuroProof, without re-training).

A random forest on the region adjacency graph's edge features, trained on
ground truth: an edge is a *merge* edge when the two fragments' majority
ground-truth objects are the same. Its merge probabilities drive
:func:`~emseg.instance.agglomerate_graph` through ``edge_weights = 1 - p``
(averaged over merged faces, weighted by face size).

:func:`save_edge_classifier` writes a trained classifier as a safetensors file
(the trees as plain arrays, as :class:`emseg.semantic.forest.PackedForest`,
plus JSON metadata and a checksum); :func:`load_edge_classifier` reads it
back without running anything from the file (no pickle).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emseg._safetensors_io import check_writable, read_checked, write_checked
from emseg.errors import (
    EmsegTypeError,
    EmsegValueError,
    FormatError,
)
from emseg.instance._rag import RegionAdjacencyGraph
from emseg.instance._validate import check_labels

#: The RAG features the classifier uses, in this order (plus log region sizes).
FEATURES = ("count", "mean", "min", "max", "q10", "q25", "q50", "q75", "q90")

#: Names of the columns of :func:`edge_features`.
FEATURE_NAMES = (*FEATURES, "log_count", "log_size_min", "log_size_max")

#: The ``format`` / ``format_version`` of an edge-classifier file.
EDGE_FORMAT = "emseg.edge_forest"
EDGE_FORMAT_VERSION = 1


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


@dataclass(frozen=True, eq=False)
class _PackedEdgeModel:
    """A loaded edge forest: ``predict_proba`` / ``classes_`` as scikit-learn's."""

    forest: Any  # emseg.semantic.forest.PackedForest
    classes_: np.ndarray

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.forest.predict_proba(x))


def save_edge_classifier(
    classifier: EdgeClassifier, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write `classifier` to a safetensors file (no pickle); return the path.

    Parameters
    ----------
    classifier : EdgeClassifier
        From :func:`train_edge_classifier` (a scikit-learn forest) or
        :func:`load_edge_classifier`.
    path : str or PathLike
        The file to write (``.safetensors``).
    overwrite : bool, default False
        Replace an existing file.

    Returns
    -------
    Path

    Raises
    ------
    OutputExistsError
        When `path` exists and `overwrite` is False.
    EmsegTypeError
        When the classifier's model is not a random forest.
    """
    from emseg.semantic.forest import PackedForest

    p = check_writable(path, what="edge classifier", overwrite=overwrite)
    model = classifier.model
    if isinstance(model, _PackedEdgeModel):
        packed = model.forest
    elif hasattr(model, "estimators_") and hasattr(model, "classes_"):
        packed = PackedForest.from_sklearn(model)
    else:
        raise EmsegTypeError(
            "`classifier.model` must be a fitted scikit-learn RandomForestClassifier or a "
            f"loaded edge forest; got {type(model).__name__}."
        )
    if packed.n_features != len(FEATURE_NAMES):
        raise EmsegValueError(
            f"the edge forest expects {packed.n_features} features; edge_features gives "
            f"{len(FEATURE_NAMES)}."
        )
    meta = {
        "classes": [int(c) for c in np.asarray(model.classes_).tolist()],
        "features": list(FEATURE_NAMES),
        "n_features": int(packed.n_features),
    }
    return write_checked(
        p,
        packed.arrays(),
        meta_json=json.dumps(meta, sort_keys=True),
        fmt=EDGE_FORMAT,
        version=EDGE_FORMAT_VERSION,
    )


def load_edge_classifier(path: str | os.PathLike[str]) -> EdgeClassifier:
    """Read an :class:`EdgeClassifier` written by :func:`save_edge_classifier`.

    Only JSON and numbers are read (safetensors); nothing in the file is run.
    :meth:`EdgeClassifier.merge_probability` of the loaded classifier equals
    the saved one's.

    Raises
    ------
    DatasetNotFoundError
        When `path` does not exist.
    FormatError
        When the file is not safetensors, names another format or version,
        fails its checksum, or holds inconsistent trees.
    """
    from emseg.semantic.forest import PackedForest

    p = Path(path)
    checked = read_checked(
        p,
        fmt=EDGE_FORMAT,
        version=EDGE_FORMAT_VERSION,
        what="emseg edge classifier",
        fix="Retrain it with train_edge_classifier or restore the file.",
    )
    tensors, meta_json = checked.tensors, checked.meta_json
    try:
        meta = json.loads(meta_json)
        classes = np.asarray([int(c) for c in meta["classes"]], dtype=np.int64)
        if list(meta["features"]) != list(FEATURE_NAMES):
            raise FormatError(
                f"{str(p)!r} was trained on edge features {meta['features']}; this emseg "
                f"computes {list(FEATURE_NAMES)}. Retrain the edge classifier."
            )
        forest = PackedForest.from_arrays(tensors, int(meta["n_features"]))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{str(p)!r} has invalid metadata: {exc!r}.") from None
    if forest.n_classes != classes.size:
        raise FormatError(
            f"{str(p)!r}: the trees have {forest.n_classes} classes, the metadata {classes.size}."
        )
    return EdgeClassifier(_PackedEdgeModel(forest, classes))
