"""Learned edge classifier: edge labels from ground truth, training, agglomeration with it."""

from __future__ import annotations

import numpy as np
import pytest

from emseg.errors import EmsegValueError
from emseg.instance import (
    agglomerate_graph,
    edge_features,
    edge_labels,
    region_adjacency_graph,
    train_edge_classifier,
)
from emseg.metrics import adapted_rand_error

from .conftest import cell_grid


def test_edge_labels_hand_case():
    frag = np.array([[[1, 1, 2, 2, 3, 3, 4]]])
    truth = np.array([[[5, 5, 5, 5, 6, 6, 0]]])
    rag = region_adjacency_graph(frag, np.zeros(frag.shape))
    assert rag.edges.tolist() == [[1, 2], [2, 3], [3, 4]]
    assert edge_labels(rag, frag, truth).tolist() == [1, 0, -1]  # 4 only covers truth 0
    assert edge_features(rag).shape == (3, 12)
    with pytest.raises(EmsegValueError, match="same shape"):
        edge_labels(rag, frag, truth[..., :-1])


def _volume(seed):
    """4 x 4 cells (truth) with membranes of random strength (0.3-0.9) and noisy interiors."""
    return cell_grid(seed, shape=(6, 32, 32), cell=8)


def test_classifier_learns_from_one_volume_and_helps_on_another():
    train = _volume(0)
    test = _volume(1)
    clf = train_edge_classifier([(train[3], train[2], train[0])], n_estimators=50, seed=0)
    p = clf.merge_probability(test[3])
    y = edge_labels(test[3], test[2], test[0])
    known = y >= 0
    accuracy = ((p[known] > 0.5) == (y[known] == 1)).mean()
    assert accuracy > 0.9
    truth, _, frag, rag = test
    seg = agglomerate_graph(rag, threshold=0.5, edge_weights=1 - p).lookup(int(frag.max()))[frag]
    before = adapted_rand_error(truth, frag.astype(np.int64)).error
    after = adapted_rand_error(truth, seg.astype(np.int64)).error
    assert after < 0.25
    assert after < before / 2
    # reproducible
    again = train_edge_classifier([(train[3], train[2], train[0])], n_estimators=50, seed=0)
    assert np.array_equal(again.merge_probability(test[3]), p)


def test_training_needs_both_classes():
    frag = np.array([[[1, 1, 2, 2]]])
    truth = np.array([[[5, 5, 5, 5]]])
    rag = region_adjacency_graph(frag, np.zeros(frag.shape))
    with pytest.raises(EmsegValueError, match="both merge and keep-apart"):
        train_edge_classifier([(rag, frag, truth)])
