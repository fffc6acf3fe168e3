"""Compiled seeded watershed (priority flood), 6-connectivity in 3D / 4 in 2D.

Both kernels process voxels in order of (priority, insertion age), the order
of ``skimage.segmentation.watershed``: markers are queued first (in raster
order), each newly reached voxel takes the label of the voxel that reached
it, is labelled when queued and queued once. The flood is bound by memory
latency (it visits voxels in flood order, spread over every front), so each
voxel's label and priority share one uint64 ``state`` word: ``label << shift
| priority``, label 0 = free, label `blocked` = outside the mask; one read
tells whether a neighbour is free and what its priority is.

``flood_buckets`` holds integer priorities ``0..n_levels-1`` (shift 16) in
FIFO buckets (O(1) per voxel; the same order as a heap on (priority, age)).
``flood_heap`` holds float32 priorities as order-preserving uint32 keys
(shift 32) in a 4-ary heap of ``key << 32 | age`` integers.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def _neighbour(i: int, k: int, z: int, y: int, x: int, nz: int, ny: int, nx: int) -> int:
    # k: 0..5 = -z, -y, -x, +x, +y, +z (skimage's order: by raveled offset); -1 when outside
    if k == 0:
        return i - ny * nx if z > 0 else -1
    if k == 1:
        return i - nx if y > 0 else -1
    if k == 2:
        return i - 1 if x > 0 else -1
    if k == 3:
        return i + 1 if x < nx - 1 else -1
    if k == 4:
        return i + nx if y < ny - 1 else -1
    return i + ny * nx if z < nz - 1 else -1


@numba.njit(cache=True)
def flood_buckets(
    state: np.ndarray, blocked: np.uint64, nz: int, ny: int, nx: int, n_levels: int
) -> None:
    """Flood `state` (uint64 ``label << 16 | priority``; markers have labels) in place."""
    n = state.size
    sh = np.uint64(16)
    pmask = np.uint64(0xFFFF)
    nxt = np.full(max(n, 1), -1, dtype=np.int64)
    head = np.full(n_levels, -1, dtype=np.int64)
    tail = np.full(n_levels, -1, dtype=np.int64)
    current: int | np.int64 = n_levels
    for i in range(n):
        lab = state[i] >> sh
        if lab != 0 and lab != blocked:
            p = np.int64(state[i] & pmask)
            if tail[p] < 0:
                head[p] = i
            else:
                nxt[tail[p]] = i
            tail[p] = i
            if p < current:
                current = p
    plane = ny * nx
    while current < n_levels:
        i = head[current]
        if i < 0:
            current += 1
            continue
        head[current] = nxt[i]
        if head[current] < 0:
            tail[current] = -1
        lab = state[i] >> sh
        z = i // plane
        r = i - z * plane
        y = r // nx
        x = r - y * nx
        for k in range(6):
            j = _neighbour(i, k, z, y, x, nz, ny, nx)
            if j < 0:
                continue
            s = state[j]
            if (s >> sh) != 0:
                continue
            state[j] = (lab << sh) | s
            p = np.int64(s & pmask)
            if tail[p] < 0:
                head[p] = j
            else:
                nxt[tail[p]] = j
            tail[p] = j
            if p < current:
                current = p


def float_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint32 keys of float32 values (a < b  <=>  key(a) < key(b))."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    neg = (bits >> np.uint32(31)).astype(bool)
    return np.where(neg, ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)


@numba.njit(cache=True)
def flood_heap(state: np.ndarray, blocked: np.uint64, nz: int, ny: int, nx: int) -> None:
    """Flood `state` (uint64 ``label << 32 | key``; markers have labels) in place.

    The heap holds one uint64 per queued voxel, ``key << 32 | age``, so that
    (priority, age) order is one integer comparison; ``where[age]`` is the
    voxel. Needs fewer than 2**32 voxels and labels below 2**32 - 1.
    """
    n = state.size
    sh = np.uint64(32)
    low = np.uint64(0xFFFFFFFF)
    heap = np.empty(max(n, 1), dtype=np.uint64)
    where = np.empty(max(n, 1), dtype=np.int64)
    size = 0
    age = 0
    plane = ny * nx
    for i in range(n):
        lab = state[i] >> sh
        if lab == 0 or lab == blocked:
            continue
        c = size
        item = ((state[i] & low) << sh) | np.uint64(age)
        where[age] = i
        size += 1
        age += 1
        while c > 0:
            parent = (c - 1) >> 2
            if item < heap[parent]:
                heap[c] = heap[parent]
                c = parent
            else:
                break
        heap[c] = item
    while size > 0:
        top = heap[0]
        i = where[np.int64(top & low)]
        size -= 1
        if size > 0:
            item = heap[size]
            c = 0
            while True:
                left = 4 * c + 1
                if left >= size:
                    break
                best = left
                for ch in range(left + 1, min(left + 4, size)):
                    if heap[ch] < heap[best]:
                        best = ch
                if heap[best] < item:
                    heap[c] = heap[best]
                    c = best
                else:
                    break
            heap[c] = item
        lab = state[i] >> sh
        z = i // plane
        r = i - z * plane
        y = r // nx
        x = r - y * nx
        for k in range(6):
            j = _neighbour(i, k, z, y, x, nz, ny, nx)
            if j < 0:
                continue
            s = state[j]
            if (s >> sh) != 0:
                continue
            state[j] = (lab << sh) | s
            c = size
            item = ((s & low) << sh) | np.uint64(age)
            where[age] = j
            size += 1
            age += 1
            while c > 0:
                parent = (c - 1) >> 2
                if item < heap[parent]:
                    heap[c] = heap[parent]
                    c = parent
                else:
                    break
            heap[c] = item
