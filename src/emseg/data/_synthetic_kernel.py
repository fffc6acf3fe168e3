"""Fast per-voxel Voronoi evaluation for synthetic EM (numba), tile by tile.

For a box of voxels, every tile of 1 x 32 x 32 voxels (32 x 32 in 2D) gets the
list of seeds that can matter to any of its voxels: the nearest seed of a
voxel and every seed whose bisector with it lies within the membrane reach.
A seed ``j`` farther than ``d0 + 2 * reach`` cannot matter (its bisector
distance is at least ``(dj - d0) / 2``), so the list is exact. Each voxel then
loops over its tile's few candidates (ties go to the lowest seed index, so
the result does not depend on the tiling).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba
import numpy as np

if TYPE_CHECKING:
    from emseg.data._synthetic_geometry import Geometry

TILE = 32


@numba.njit(cache=True, nogil=True)
def _voronoi_kernel(  # pragma: no cover - compiled
    w,
    tile,
    ptr,
    cand,
    seeds,
    labels,
    half,
    warp,
    thickness,
    sz,
    reach,
    out_lab,
    out_mem,
    out_dark,
):
    n, ndim = w.shape
    for p in range(n):
        t = tile[p]
        best = np.inf
        b = -1
        for c in range(ptr[t], ptr[t + 1]):
            j = cand[c]
            d2 = 0.0
            for a in range(ndim):
                diff = w[p, a] - seeds[j, a]
                d2 += diff * diff
            if d2 < best:
                best = d2
                b = j
        lab = labels[b]
        out_lab[p] = lab
        mem = False
        dark = 0.0
        for c in range(ptr[t], ptr[t + 1]):
            j = cand[c]
            if labels[j] == lab:
                continue
            dj2 = 0.0
            ll = 0.0
            for a in range(ndim):
                diff = w[p, a] - seeds[j, a]
                dj2 += diff * diff
                e = seeds[j, a] - seeds[b, a]
                ll += e * e
            ll = np.sqrt(ll)
            f = (dj2 - best) / (2.0 * ll)
            if f > reach:
                continue
            margin = 0.0
            for a in range(ndim):
                m = (abs(seeds[j, a] - seeds[b, a]) / ll + warp) * half[a]
                if m > margin:
                    margin = m
            if f <= thickness / 2 + margin:
                mem = True
            if sz > 0:
                length = abs(seeds[j, 0] - seeds[b, 0]) / ll * sz
                if length < 1e-6:
                    dk = 1.0 if f < thickness / 2 else 0.0
                else:
                    lo = max(f - length / 2, -thickness / 2)
                    hi = min(f + length / 2, thickness / 2)
                    dk = max(hi - lo, 0.0) / length
            else:
                dk = 1.0 if f < thickness / 2 else 0.0
            if dk > dark:
                dark = dk
        out_mem[p] = mem
        out_dark[p] = dark


def voronoi_grid(
    geom: Geometry, region: tuple[slice, ...], w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, membrane mask and darkness (flat) of the voxels of `region` at warped `w`."""
    ndim = geom.ndim
    shape = tuple(s.stop - s.start for s in region)
    ts = (1,) * (ndim - 2) + (TILE, TILE)
    grid = tuple(-(-n // t) for n, t in zip(shape, ts, strict=True))
    sp = np.asarray(geom.spacing)
    # tile id of every voxel
    ids = np.zeros(shape, np.int64)
    stride = 1
    for axis in reversed(range(ndim)):
        view = [1] * ndim
        view[axis] = shape[axis]
        ids = ids + (np.arange(shape[axis]) // ts[axis]).reshape(view) * stride
        stride *= grid[axis]
    # tile centres and radii (physical box + warp bound)
    lo = np.stack(
        np.meshgrid(*[np.arange(g) * t for g, t in zip(grid, ts, strict=True)], indexing="ij"),
        axis=-1,
    ).reshape(-1, ndim)
    hi = np.minimum(lo + np.asarray(ts), np.asarray(shape)) - 1
    start = np.asarray([s.start for s in region])
    centre = ((lo + hi) / 2 + start) * sp
    rho = np.sqrt((((hi - lo) / 2 * sp) ** 2).sum(axis=1)) + geom.warp_max
    reach = max(geom.membrane_reach, geom.params.membrane_thickness / 2 + geom.half.max())
    d1, _ = geom.tree.query(centre, k=1)
    lists = geom.tree.query_ball_point(centre, d1 + 2 * rho + 2 * reach + 1e-6, return_sorted=True)
    counts = np.asarray([len(x) for x in lists], np.int64)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cand = (
        np.concatenate([np.asarray(x, np.int64) for x in lists])
        if len(lists)
        else np.zeros(0, np.int64)
    )
    n = int(np.prod(shape))
    lab = np.empty(n, np.uint32)
    mem = np.empty(n, np.bool_)
    dark = np.empty(n, np.float32)
    sz = geom.spacing[0] if ndim == 3 else -1.0
    _voronoi_kernel(
        np.ascontiguousarray(w, np.float64),
        ids.ravel(),
        ptr,
        cand,
        geom.seeds,
        geom.seed_labels,
        geom.half,
        float(geom.params.warp),
        float(geom.params.membrane_thickness),
        float(sz),
        float(reach),
        lab,
        mem,
        dark,
    )
    return lab, mem, dark


@numba.njit(cache=True, nogil=True)
def _sinusoids_kernel(x, freq, phase, amp, out):  # pragma: no cover
    n, ndim = x.shape
    for p in range(n):
        for k in range(freq.shape[0]):
            arg = phase[k]
            for a in range(ndim):
                arg += 2.0 * np.pi * freq[k, a] * x[p, a]
            c = np.cos(arg)
            for m in range(amp.shape[1]):
                out[p, m] += c * amp[k, m]


def sinusoids(x: np.ndarray, freq: np.ndarray, phase: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """``sum_k cos(2 pi f_k . x + phase_k) * amp_k`` for points `x` (N, ndim) -> (N, m)."""
    out = np.zeros((len(x), amp.shape[1]))
    _sinusoids_kernel(
        np.ascontiguousarray(x, np.float64),
        np.ascontiguousarray(freq, np.float64),
        np.ascontiguousarray(phase, np.float64),
        np.ascontiguousarray(amp, np.float64),
        out,
    )
    return out
