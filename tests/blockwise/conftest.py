"""Helpers shared by the blockwise tests."""

from __future__ import annotations

import numpy as np
import pytest


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images are equal up to a renumbering (background 0 kept as 0)."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a, b]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size


@pytest.fixture(scope="session")
def assert_same_labels():
    """Assert that labels equal a reference up to relabelling, with equal object counts."""

    def check(ours: np.ndarray, ref: np.ndarray) -> None:
        ours = np.asarray(ours)
        ref = np.asarray(ref)
        assert ours.shape == ref.shape
        assert same_partition(ours, ref), "labels differ from the reference beyond a renumbering"
        n = int(np.unique(ref[ref > 0]).size)
        assert np.unique(ours[ours > 0]).size == n
        # consecutive ids 1..N
        if n:
            assert int(ours.max()) == n

    return check
