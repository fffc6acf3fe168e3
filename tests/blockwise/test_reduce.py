"""Streaming reductions: blockwise summaries merged as a tree equal the global result."""

from __future__ import annotations

import numpy as np
import pytest

from emseg.blockwise import TreeReducer, count_overlaps, histogram, reduce_blocks
from emseg.errors import EmsegValueError


def test_tree_reducer_merges_everything_and_stays_small():
    seen_sizes = []

    def merge(a, b):
        return a + b

    reducer = TreeReducer(merge)
    for i in range(1000):
        reducer.add([i])
        seen_sizes.append(len(reducer._stack))
    assert sorted(reducer.result()) == list(range(1000))
    assert max(seen_sizes) <= 10  # log2(1000) + 1
    assert TreeReducer(merge).result(empty="nothing") == "nothing"


def test_count_overlaps_equals_numpy():
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 6, size=(9, 10, 11))
    pred = rng.integers(0, 4, size=(9, 10, 11)).astype(np.uint64)
    table = count_overlaps(truth, pred, block_shape=(4, 3, 5), progress=False)
    keys, counts = np.unique(np.stack([truth.ravel(), pred.ravel()], 1), axis=0, return_counts=True)
    np.testing.assert_array_equal(table.keys, keys.astype(np.uint64))
    np.testing.assert_array_equal(table.counts, counts)
    assert table.counts.sum() == truth.size
    sizes = count_overlaps(truth, block_shape=4, scheduler="serial", progress=False).as_dict()
    assert sizes == {
        (int(k),): int(c) for k, c in zip(*np.unique(truth, return_counts=True), strict=True)
    }


def test_histogram_equals_numpy():
    img = (np.random.default_rng(0).random((7, 20, 21)) * 255).astype(np.uint8)
    h = histogram(img, block_shape=(3, 8, 8), progress=False)
    ref, edges = np.histogram(img, bins=256, range=(0, 256))
    np.testing.assert_array_equal(h.counts, ref)
    np.testing.assert_array_equal(h.edges, edges)
    f = img.astype(np.float32) / 7
    h2 = histogram(f, bins=[0, 1, 5, 40], block_shape=5, progress=False)
    np.testing.assert_array_equal(h2.counts, np.histogram(f, bins=[0, 1, 5, 40])[0])
    with pytest.raises(EmsegValueError, match="range"):
        histogram(f, bins=10)


def _write_region_sum(data, *, block):
    return int(data[block.write_in_read].sum())


def _add(a, b):
    return a + b


def test_reduce_with_halo_counts_each_voxel_once():
    img = np.arange(12 * 13).reshape(12, 13)
    total = reduce_blocks(
        _write_region_sum,
        img,
        merge=_add,
        halo=3,
        block_shape=(5, 4),
        pass_block=True,
        progress=False,
    )
    assert total == int(img.sum())
    assert reduce_blocks(np.max, img, merge=max, block_shape=2, progress=False) == img.max()
