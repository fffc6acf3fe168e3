"""Fixtures shared by the instance-segmentation tests."""

from __future__ import annotations

import numpy as np
import pytest


def _ellipse_stack(rng, n_sections=10, shape=(48, 64)):
    """Three ellipses drifting through z (one leaves, one enters); per-section random ids."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros((n_sections, *shape), np.int64)
    sections = np.zeros((n_sections, *shape), np.uint16)
    objects = [  # (first z, last z, cy, cx, ry, rx, drift per section)
        (0, 9, 12, 12, 7, 10, (0.5, 0.3)),
        (0, 5, 32, 40, 9, 6, (0.0, 0.6)),
        (4, 9, 34, 14, 6, 8, (-0.4, 0.0)),
    ]
    for k, (z0, z1, cy, cx, ry, rx, (dy, dx)) in enumerate(objects, start=1):
        for z in range(z0, z1 + 1):
            m = ((yy - cy - dy * z) / ry) ** 2 + ((xx - cx - dx * z) / rx) ** 2 < 1
            truth[z][m] = k
    for z in range(n_sections):  # fresh, shuffled 2D ids per section
        ids = np.unique(truth[z])
        ids = ids[ids != 0]
        new = rng.permutation(200)[: ids.size] + 1
        for i, n in zip(ids, new, strict=True):
            sections[z][truth[z] == i] = n
    return truth, sections


@pytest.fixture
def ellipse_stack():
    """``ellipse_stack(rng) -> (truth, sections)``: drifting ellipses with per-section ids."""
    return _ellipse_stack


def cell_grid(seed: int, *, shape: tuple[int, int, int], cell: int):
    """Square cells (truth) with membranes of random strength (0.3-0.9) and noisy interiors.

    Returns ``(truth, boundary, supervoxels, rag)``; used by the edge-classifier tests.
    """
    from emseg.instance import region_adjacency_graph, supervoxels

    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int64)
    bnd = rng.random(shape).astype(np.float32) * 0.1
    k = 0
    for y0 in range(0, shape[1], cell):
        for x0 in range(0, shape[2], cell):
            k += 1
            truth[:, y0 : y0 + cell, x0 : x0 + cell] = k
            bnd[:, y0 + cell - 1, x0 : x0 + cell] = rng.uniform(0.3, 0.9)
            bnd[:, y0 : y0 + cell, x0 + cell - 1] = rng.uniform(0.3, 0.9)
    frag = supervoxels(bnd, seeds="minima", sigma_nm=0.7)
    return truth, bnd, frag, region_adjacency_graph(frag, bnd)
