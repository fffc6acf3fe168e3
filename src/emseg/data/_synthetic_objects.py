"""Placing organelles of synthetic EM: mitochondria and synaptic-like vesicle clusters.

Objects are placed once, globally, in warped space, and only where they fit:
every point of an object lies inside its cell and away from the membrane
mask (checked on the object's axis with :func:`cell_field`, whose distance is
1-Lipschitz), so the ground truth has no overlaps and each object is one
connected piece.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.spatial import cKDTree

from emseg.data._synthetic_geometry import cell_field

if TYPE_CHECKING:
    from emseg.data._synthetic_geometry import Geometry

#: Spacing (nm) of the test points along a mitochondrion's axis.
AXIS_STEP = 8.0


def _visible(centres: np.ndarray, lo: np.ndarray, hi: np.ndarray, pad: float) -> np.ndarray:
    return np.asarray(np.all((centres >= lo - pad) & (centres <= hi + pad), axis=1))


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points `p` to segments a-b (all (N, ndim), row by row)."""
    ab = b - a
    denom = np.maximum((ab**2).sum(axis=1), 1e-12)
    s = np.clip(((p - a) * ab).sum(axis=1) / denom, 0.0, 1.0)
    return np.asarray(np.linalg.norm(p - (a + s[:, None] * ab), axis=1))


def _fits(
    geom: Geometry, a: np.ndarray, b: np.ndarray, r: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """Which capsules (a, b, r) lie inside cell `target`, clear of membranes and nuclei."""
    length = np.linalg.norm(b - a, axis=1)
    counts = np.ceil(length / AXIS_STEP).astype(int) + 1
    owner = np.repeat(np.arange(len(a)), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    frac = (np.arange(counts.sum()) - starts[owner]) / np.maximum(counts[owner] - 1, 1)
    pts = a[owner] + frac[:, None] * (b - a)[owner]
    labels, dist, _, _ = cell_field(geom, pts, render=False)
    margin = geom.membrane_reach + AXIS_STEP / 2 + 2.0
    ok = (labels == target[owner]) & (dist >= r[owner] + margin)
    for c, radii in zip(geom.nucleus_centres, geom.nucleus_radii, strict=True):
        ok &= np.linalg.norm(pts - c, axis=1) >= radii.max() + r[owner] + 20.0
    return np.asarray(np.logical_and.reduceat(ok, starts))


def place_mitochondria(
    geom: Geometry, rng: np.random.Generator, *, lo: np.ndarray, hi: np.ndarray
) -> dict[str, Any]:
    """Capsules (end points a, b and radius) inside cells; cristae period and phase."""
    ndim, d = geom.ndim, geom.params.cell_diameter
    labels = geom.seed_labels
    uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    chosen = rng.random(len(uniq)) < geom.params.mitochondria_fraction
    pick = first + (rng.random(len(uniq)) * np.maximum(counts - 1, 1)).astype(int)
    pick = np.where(counts > 1, pick, first)
    centre = geom.seeds[pick]
    nxt = geom.seeds[np.minimum(pick + 1, len(labels) - 1)]
    chain_dir = nxt - centre
    rand_dir = rng.normal(size=(len(uniq), ndim))
    direction = np.where((counts > 1)[:, None], chain_dir, rand_dir)
    jitter = rng.normal(size=(len(uniq), ndim)) * 0.06 * d
    centre = centre + np.where((counts > 1)[:, None], 0.0, jitter)
    target = uniq.astype(np.uint32)
    keep = chosen & _visible(centre, lo, hi, d)
    centre, direction, target = centre[keep], direction[keep], target[keep]
    # somata: a few mitochondria between nucleus and plasma membrane, tangential
    for c, rs, lab in zip(geom.soma_centres, geom.soma_radii, geom.soma_labels, strict=True):
        n = 4
        u = rng.normal(size=(n, ndim))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        rn = geom.nucleus_radii.max() if len(geom.nucleus_radii) else 0.0
        pos = c + u * (rn + 0.5 * (rs - rn))
        tang = rng.normal(size=(n, ndim))
        tang -= (tang * u).sum(axis=1, keepdims=True) * u
        centre = np.concatenate([centre, pos])
        direction = np.concatenate([direction, tang])
        target = np.concatenate([target, np.full(n, lab, np.uint32)])
    n = len(centre)
    direction = direction / np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-9)
    radius = rng.uniform(0.11, 0.16, n) * d
    half = rng.uniform(1.2, 3.0, n) * radius
    accepted = np.zeros(n, bool)
    pending = np.arange(n)
    for _ in range(5):
        if not len(pending):
            break
        a = centre[pending] - half[pending, None] * direction[pending]
        b = centre[pending] + half[pending, None] * direction[pending]
        ok = _fits(geom, a, b, radius[pending], target[pending])
        accepted[pending[ok]] = True
        pending = pending[~ok]
        half[pending] *= 0.7
        radius[pending] *= 0.85
        pending = pending[half[pending] >= radius[pending]]
    idx = np.flatnonzero(accepted)
    a = centre[idx] - half[idx, None] * direction[idx]
    b = centre[idx] + half[idx, None] * direction[idx]
    r = radius[idx]
    # mitochondria of the same cell (neurite chains, somata) must not touch
    keep = np.ones(len(idx), bool)
    for i in range(len(idx)):
        if not keep[i]:
            continue
        for j in range(i + 1, len(idx)):
            if keep[j] and target[idx[i]] == target[idx[j]]:
                pts = a[j] + np.linspace(0, 1, 16)[:, None] * (b[j] - a[j])
                gap = _segment_distance(
                    pts, np.repeat(a[i : i + 1], 16, 0), np.repeat(b[i : i + 1], 16, 0)
                )
                if gap.min() < r[i] + r[j] + AXIS_STEP + 10.0:
                    keep[j] = False
    a, b, r = a[keep], b[keep], r[keep]
    m = len(r)
    return {
        "mito_a": a.reshape(m, ndim),
        "mito_b": b.reshape(m, ndim),
        "mito_radius": r,
        "mito_period": rng.uniform(0.35, 0.55, m) * r,
        "mito_phase": rng.uniform(0, 2 * np.pi, m),
    }


def place_vesicles(
    geom: Geometry,
    rng: np.random.Generator,
    mitos: dict[str, Any],
    *,
    lo: np.ndarray,
    hi: np.ndarray,
) -> dict[str, Any]:
    """Clusters of ~40 nm vesicles next to a membrane face of some single-seed cells."""
    ndim, d = geom.ndim, geom.params.cell_diameter
    labels = geom.seed_labels
    _uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    single = first[counts == 1]
    chosen = single[rng.random(len(single)) < geom.params.vesicle_fraction]
    chosen = chosen[_visible(geom.seeds[chosen], lo, hi, 0.5 * d)]
    k = min(8, len(geom.seeds))
    centres, radii, targets = [], [], []
    for i in chosen:
        s = geom.seeds[i]
        _, nb = geom.tree.query(s, k=k)
        nb = [j for j in np.atleast_1d(nb) if labels[j] != labels[i]]
        if not nb:
            continue
        j = nb[int(rng.integers(0, min(3, len(nb))))]
        mid = (s + geom.seeds[j]) / 2
        dmid, _ = geom.tree.query(mid, k=1)
        if dmid < np.linalg.norm(mid - s) - 1e-6:  # the midpoint is not on their shared face
            continue
        normal = (s - geom.seeds[j]) / np.linalg.norm(s - geom.seeds[j])
        n = int(rng.poisson(14)) + 4
        tang = rng.normal(size=(n, ndim)) * 90.0
        tang -= (tang @ normal)[:, None] * normal
        depth = rng.uniform(45, 120) + rng.normal(size=n) * 30.0
        centres.append(mid + depth[:, None] * normal + tang)
        radii.append(rng.uniform(16.0, 23.0, n))
        targets.append(np.full(n, labels[i], np.uint32))
    if not centres:
        return {"vesicle_centres": np.zeros((0, ndim)), "vesicle_radii": np.zeros(0)}
    c = np.concatenate(centres)
    r = np.concatenate(radii)
    tgt = np.concatenate(targets)
    lab, dist, _, _ = cell_field(geom, c, render=False)
    ok = (lab == tgt) & (dist >= r + geom.membrane_reach + 2.0)
    if len(mitos["mito_radius"]):
        a, b, mr = mitos["mito_a"], mitos["mito_b"], mitos["mito_radius"]
        mid = (a + b) / 2
        reach = float((np.linalg.norm(b - a, axis=1) / 2 + mr).max() + r.max() + 10.0)
        hits = cKDTree(mid).query_ball_point(c, reach)
        vi = np.repeat(np.arange(len(c)), [len(h) for h in hits])
        mi = np.concatenate([np.asarray(h, int) for h in hits]) if len(vi) else np.zeros(0, int)
        if len(vi):
            gap = _segment_distance(c[vi], a[mi], b[mi]) - mr[mi] - r[vi]
            bad = np.unique(vi[gap < 6.0])
            ok[bad] = False
    c, r = c[ok], r[ok]
    # vesicles never overlap each other: drop the later one of each touching pair
    keep = np.ones(len(c), bool)
    if len(c) > 1:
        pairs = cKDTree(c).query_pairs(2 * r.max() + 2.0, output_type="ndarray")
        pairs = pairs[np.argsort(pairs[:, 0] * len(c) + pairs[:, 1], kind="stable")]
        for p, q in pairs:
            if keep[p] and keep[q] and np.linalg.norm(c[p] - c[q]) < r[p] + r[q] + 2.0:
                keep[q] = False
    return {"vesicle_centres": c[keep].reshape(-1, ndim), "vesicle_radii": r[keep]}
