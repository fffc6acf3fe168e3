"""Mutex watershed (Wolf et al., ECCV 2018 / TPAMI 2020) from (long-range) affinities.

Every affinity channel ``c`` links voxel ``p`` to ``p + offsets[c]``. The
first `n_attractive` channels (by default the nearest neighbours) are
attractive edges with weight ``a`` (high = same object); the others are
repulsive (mutex) edges with weight ``1 - a``. All edges are processed once,
by decreasing weight: an attractive edge merges its two clusters unless a
mutex constraint separates them; a repulsive edge adds a mutex constraint
between its two clusters unless they are merged already. The result is
the clustering of Wolf et al.'s Algorithm 1 (no threshold, no parameters
beyond the affinities).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numba
import numpy as np

from emseg.errors import EmsegValueError
from emseg.instance._validate import check_map


@numba.njit(cache=True)
def _find(parent: np.ndarray, x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@numba.njit(cache=True)
def _mutex_watershed(
    n: int, u: np.ndarray, v: np.ndarray, repulsive: np.ndarray, order: np.ndarray
) -> np.ndarray:
    parent = np.arange(n, dtype=np.int64)
    size = np.ones(n, dtype=np.int64)
    n_rep = 2 * int(repulsive.sum())
    head = np.full(n, -1, dtype=np.int64)
    tail = np.full(n, -1, dtype=np.int64)
    length = np.zeros(n, dtype=np.int64)
    nxt = np.full(max(n_rep, 1), -1, dtype=np.int64)
    other = np.empty(max(n_rep, 1), dtype=np.int64)
    m = 0
    for e in order:
        ra = _find(parent, u[e])
        rb = _find(parent, v[e])
        if ra == rb:
            continue
        if repulsive[e]:
            for r, o in ((ra, v[e]), (rb, u[e])):
                other[m] = o
                if tail[r] < 0:
                    head[r] = m
                else:
                    nxt[tail[r]] = m
                tail[r] = m
                length[r] += 1
                m += 1
            continue
        # attractive: merge unless a mutex constraint links the two clusters
        small, big = (ra, rb) if length[ra] <= length[rb] else (rb, ra)
        blocked = False
        k = head[small]
        while k >= 0:
            if _find(parent, other[k]) == big:
                blocked = True
                break
            k = nxt[k]
        if blocked:
            continue
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        parent[rb] = ra
        size[ra] += size[rb]
        if head[rb] >= 0:
            if tail[ra] < 0:
                head[ra] = head[rb]
            else:
                nxt[tail[ra]] = head[rb]
            tail[ra] = tail[rb]
            length[ra] += length[rb]
    roots = np.empty(n, dtype=np.int64)
    for i in range(n):
        roots[i] = _find(parent, i)
    return roots


def _edge_indices(
    shape: tuple[int, ...], offset: Sequence[int], stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (p, p + offset) of every pair inside the volume."""
    src, dst = [], []
    for s, o in zip(shape, offset, strict=True):
        src.append(slice(max(0, -o), s - max(0, o), stride))
        dst.append(slice(max(0, o), s - max(0, -o), stride))
    flat = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    return flat[tuple(src)].ravel(), flat[tuple(dst)].ravel()


def mutex_watershed(
    affinities: Any,
    offsets: Sequence[Sequence[int]],
    *,
    n_attractive: int | None = None,
    mask: Any = None,
    repulsive_stride: int = 1,
) -> np.ndarray:
    """Cluster voxels from attractive and repulsive affinities with the mutex watershed.

    Parameters
    ----------
    affinities : (C, Z, Y, X) or (C, Y, X) ndarray of float
        ``affinities[c, p]`` is the probability that ``p`` and
        ``p + offsets[c]`` belong to the same object. No NaN.
    offsets : sequence of C offsets, each one int per axis
        E.g. ``[(-1, 0, 0), (0, -1, 0), (0, 0, -1), (-2, 0, 0), (0, -9, 0), ...]``.
    n_attractive : int, optional
        The first `n_attractive` channels are attractive (default: the
        number of spatial axes, i.e. the nearest neighbours).
    mask : ndarray of bool, optional
        Voxels outside are 0 and take part in no edge.
    repulsive_stride : int, default 1
        Keep only every n-th repulsive edge along each axis (speed).

    Returns
    -------
    labels : ndarray of uint32, spatial shape
        Objects ``1..N`` in raster order of their first voxel (0 outside
        `mask`). Edges of equal weight are processed in channel order, then
        raster order (a stable sort), so the result is deterministic.

    Examples
    --------
    >>> aff = np.zeros((2, 1, 4)); aff[0, 0, 1:] = [0.9, 0.8, 0.95]  # (0, -1) neighbours
    >>> mutex_watershed(aff, [(0, -1), (0, -3)], n_attractive=1)  # 0 and 3 repel
    array([[1, 1, 2, 2]], dtype=uint32)
    """
    aff = check_map(affinities, name="affinities", ndims=(3, 4))
    spatial = aff.shape[1:]
    offs = [tuple(int(o) for o in off) for off in offsets]
    if len(offs) != aff.shape[0] or any(len(o) != len(spatial) for o in offs):
        raise EmsegValueError(
            f"`offsets` must hold one offset of {len(spatial)} ints per affinity channel "
            f"({aff.shape[0]}); got {offsets!r}."
        )
    n_att = len(spatial) if n_attractive is None else int(n_attractive)
    if not 0 <= n_att <= len(offs):
        raise EmsegValueError(f"`n_attractive` must be in 0..{len(offs)}; got {n_attractive!r}.")
    if repulsive_stride < 1:
        raise EmsegValueError(f"`repulsive_stride` must be >= 1; got {repulsive_stride!r}.")
    m = None if mask is None else np.asarray(mask, dtype=bool).ravel()
    us, vs, ws, rep = [], [], [], []
    for c, off in enumerate(offs):
        stride = 1 if c < n_att else repulsive_stride
        p, q = _edge_indices(spatial, off, stride)
        w = aff[c].ravel()[p].astype(np.float64)
        if m is not None:
            keep = m[p] & m[q]
            p, q, w = p[keep], q[keep], w[keep]
        us.append(p)
        vs.append(q)
        ws.append(w if c < n_att else 1.0 - w)
        rep.append(np.full(p.size, c >= n_att))
    u = np.concatenate(us)
    v = np.concatenate(vs)
    w = np.concatenate(ws)
    repulsive = np.concatenate(rep)
    order = np.argsort(-w, kind="stable")
    n = int(np.prod(spatial))
    roots = _mutex_watershed(n, u, v, repulsive, order)
    if m is not None:
        roots = np.where(m, roots, -1)
    # consecutive ids in raster order of the first voxel
    valid = roots >= 0
    _, first, inverse = np.unique(roots[valid], return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.uint32)
    rank[np.argsort(first, kind="stable")] = np.arange(1, first.size + 1, dtype=np.uint32)
    out = np.zeros(n, dtype=np.uint32)
    out[valid] = rank[inverse.ravel()]
    return out.reshape(spatial)
