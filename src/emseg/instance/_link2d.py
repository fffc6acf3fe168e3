"""2D -> 3D linking of per-section instances across anisotropic serial sections.

Each section is segmented on its own (or comes segmented); instances in
neighbouring sections ``z`` and ``z + 1`` are matched one-to-one by the
Hungarian algorithm on their intersection over union (IoU), and a match with
IoU >= `min_iou` links them. The 3D objects are the connected components of
the links. Everything depends only on the per-section sizes and on the
overlaps between neighbouring sections, which add up exactly across blocks,
so the blockwise version (:func:`emseg.instance.link_sections_blockwise`)
gives the same objects.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from emseg.errors import EmsegValueError
from emseg.instance._components import parse_connectivity
from emseg.instance._validate import check_labels, check_map, check_threshold


def section_tables(
    labels: np.ndarray, z0: int = 0, *, with_next: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sizes per (z, id) and overlaps per (z, id_z, id_z+1) of a stack of sections.

    `labels` holds sections ``z0 .. z0 + Z - 1``; `with_next` (optional,
    (1, Y, X)) is section ``z0 + Z`` so that the overlaps of the last section
    are counted too. Returns ``(size_keys (K, 2), sizes (K,), overlap_keys
    (M, 3), overlaps (M,))``, uint64 keys and int64 counts, without id 0.
    """
    lab = labels.astype(np.uint64, copy=False)
    nz = lab.shape[0]
    zz = np.broadcast_to(np.arange(z0, z0 + nz, dtype=np.uint64)[:, None, None], lab.shape)
    fg = lab != 0
    keys, sizes = np.unique(np.stack([zz[fg], lab[fg]], axis=1), axis=0, return_counts=True)
    upper = lab
    lower = lab[1:]
    if with_next is not None:
        lower = np.concatenate([lower, with_next.astype(np.uint64, copy=False)])
    else:
        upper = lab[:-1]
    both = (upper != 0) & (lower != 0)
    zu = zz[: upper.shape[0]]
    ov_keys, ov = np.unique(
        np.stack([zu[both], upper[both], lower[both]], axis=1), axis=0, return_counts=True
    )
    return (
        keys.reshape(-1, 2).astype(np.uint64),
        sizes.astype(np.int64),
        ov_keys.reshape(-1, 3).astype(np.uint64),
        ov.astype(np.int64),
    )


def link_tables(
    size_keys: np.ndarray,
    sizes: np.ndarray,
    overlap_keys: np.ndarray,
    overlaps: np.ndarray,
    *,
    min_iou: float,
) -> np.ndarray:
    """The 3D object id (1..N) of every (z, id) node of `size_keys` (sorted rows)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    k = size_keys.shape[0]
    if k == 0:
        return np.zeros(0, dtype=np.uint64)

    def index(z: np.ndarray, ids: np.ndarray) -> np.ndarray:
        rows = np.stack([z, ids], axis=1)
        # rows of size_keys are sorted lexicographically: search on a structured view
        view = np.ascontiguousarray(size_keys).view([("z", np.uint64), ("i", np.uint64)]).ravel()
        q = np.ascontiguousarray(rows).view([("z", np.uint64), ("i", np.uint64)]).ravel()
        return np.searchsorted(view, q)

    a_all = index(overlap_keys[:, 0], overlap_keys[:, 1])
    b_all = index(overlap_keys[:, 0] + 1, overlap_keys[:, 2])
    inter = overlaps.astype(np.float64)
    iou = inter / (sizes[a_all] + sizes[b_all] - inter)
    links_a, links_b = [], []
    zs = overlap_keys[:, 0]
    bounds = np.flatnonzero(np.r_[True, zs[1:] != zs[:-1], True])
    for s, e in itertools.pairwise(bounds):
        a, b, w = a_all[s:e], b_all[s:e], iou[s:e]
        ua, ia = np.unique(a, return_inverse=True)
        ub, ib = np.unique(b, return_inverse=True)
        cost = np.zeros((ua.size, ub.size))
        cost[ia.ravel(), ib.ravel()] = w
        rows, cols = linear_sum_assignment(cost, maximize=True)
        good = cost[rows, cols] >= min_iou
        links_a.append(ua[rows[good]])
        links_b.append(ub[cols[good]])
    la = np.concatenate(links_a) if links_a else np.zeros(0, np.int64)
    lb = np.concatenate(links_b) if links_b else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(la.size, np.int8), (la, lb)), shape=(k, k))
    _, comp = connected_components(graph, directed=False)
    # ids 1..N in order of each object's first node (lowest z, then id)
    _, first, inverse = np.unique(comp, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.uint64)
    rank[np.argsort(first, kind="stable")] = np.arange(1, first.size + 1, dtype=np.uint64)
    return rank[inverse.ravel()]


def apply_links(
    labels: np.ndarray, z0: int, size_keys: np.ndarray, object_ids: np.ndarray
) -> np.ndarray:
    """Replace the per-section ids of sections ``z0..`` by their 3D object ids (uint64)."""
    out = np.zeros(labels.shape, dtype=np.uint64)
    for k in range(labels.shape[0]):
        z = z0 + k
        lo, hi = np.searchsorted(size_keys[:, 0], [z, z + 1])
        ids, objs = size_keys[lo:hi, 1], object_ids[lo:hi]
        sec = labels[k].astype(np.uint64, copy=False)
        if ids.size:
            idx = np.searchsorted(ids, sec).clip(max=ids.size - 1)
            hit = (ids[idx] == sec) & (sec != 0)
            out[k][hit] = objs[idx[hit]]
    return out


def section_components(
    probabilities: np.ndarray, *, threshold: float, connectivity: int | None = None
) -> np.ndarray:
    """Connected components of ``probabilities > threshold`` in each section (uint32, per z)."""
    import cc3d

    conn = parse_connectivity(connectivity, 2)
    fg = probabilities > threshold
    out = np.zeros(fg.shape, dtype=np.uint32)
    for z in range(fg.shape[0]):
        out[z] = cc3d.connected_components(fg[z].astype(np.uint8), connectivity=conn)  # type: ignore[call-overload]
    return out


def link_sections(
    sections: Any,
    *,
    min_iou: float = 0.5,
    threshold: float | None = None,
    connectivity: int | None = None,
) -> np.ndarray:
    """Link per-section 2D instances into 3D objects by Hungarian matching on IoU.

    Parameters
    ----------
    sections : (Z, Y, X) ndarray
        Per-section instance labels (integers, 0 = background, ids may repeat
        between sections), or a probability map when `threshold` is given
        (then each section is segmented by 2D connected components of
        ``sections > threshold``).
    min_iou : float, default 0.5
        Two instances of neighbouring sections are linked when the Hungarian
        matching (maximum total IoU) pairs them and their IoU is at least
        this (0 < min_iou <= 1).
    threshold : float, optional
        Segment a probability map per section first.
    connectivity : {4, 8}, optional
        In-section connectivity with `threshold` (default 8).

    Returns
    -------
    labels : ndarray of uint32 (uint64 beyond 2**32 - 1 objects), same shape
        3D objects ``1..N`` in order of their first section, then their
        per-section id. A 2D instance without a partner starts or ends an
        object; one object never holds two instances of the same section.

    Examples
    --------
    >>> s = np.zeros((3, 1, 6), np.uint8)
    >>> s[0, 0, :3] = 1; s[1, 0, :3] = 5; s[1, 0, 4:] = 6; s[2, 0, 3:] = 2
    >>> link_sections(s, min_iou=0.5)[:, 0]
    array([[1, 1, 1, 0, 0, 0],
           [1, 1, 1, 0, 2, 2],
           [0, 0, 0, 2, 2, 2]], dtype=uint32)
    """
    iou = check_threshold(min_iou, name="min_iou")
    if not 0 < iou <= 1:
        raise EmsegValueError(f"`min_iou` must be in (0, 1]; got {min_iou!r}.")
    arr = np.asarray(sections)
    if threshold is not None:
        arr = check_map(arr, name="sections", ndims=(3,))
        lab = section_components(
            arr, threshold=check_threshold(threshold, name="threshold"), connectivity=connectivity
        )
    else:
        lab = check_labels(arr, name="sections", ndims=(3,))
    keys, sizes, ov_keys, ov = section_tables(lab)
    objects = link_tables(keys, sizes, ov_keys, ov, min_iou=iou)
    out = apply_links(lab, 0, keys, objects)
    if objects.size < 2**32:
        return out.astype(np.uint32)
    return out
