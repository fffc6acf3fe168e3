"""Overlap (contingency) tables: the one table every segmentation metric is built on.

An :class:`OverlapTable` lists, for every (truth label, predicted label) pair
that occurs, how many voxels carry that pair. Tables of disjoint blocks add up
exactly (:func:`merge_tables`), so every metric that is a function of the table
is exact on volumes that never fit in memory.

The counting kernel is a numba hash map keyed by the pair of labels; it never
allocates anything sized by the largest label id (ids up to 2**64 - 1 work), and
it caches the last pair seen, which makes it close to one memory pass on
segmentations whose labels come in runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numpy.typing import ArrayLike

from emseg._checks import check_label_dtype, check_same_shape
from emseg.errors import EmsegTypeError, EmsegValueError

__all__ = ["OverlapTable", "merge_tables", "overlap_table"]

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_S29 = np.uint64(29)
_MIN_CHUNK = 1 << 22  # voxels per thread below which threading does not pay


@numba.njit(cache=True, nogil=True)
def _slot(a, b, shift):
    h = (a * _M1) ^ (b * _M2)
    h ^= h >> _S29
    return np.int64(h >> shift)


@numba.njit(cache=True, nogil=True)
def _insert(tab, a, b, n, shift):
    """Add `n` to the count of pair (a, b); return (slot, whether the pair is new)."""
    size = tab.shape[0]
    h = _slot(a, b, shift)
    while True:
        c = tab[h, 2]
        if c == 0:
            tab[h, 0] = a
            tab[h, 1] = b
            tab[h, 2] = n
            return h, True
        if tab[h, 0] == a and tab[h, 1] == b:
            tab[h, 2] = c + n
            return h, False
        h = (h + 1) & (size - 1)


@numba.njit(cache=True, nogil=True)
def _grow(tab, log2):
    new = np.zeros((1 << log2, 3), np.uint64)
    shift = np.uint64(64 - log2)
    for j in range(tab.shape[0]):
        if tab[j, 2] != 0:
            _insert(new, tab[j, 0], tab[j, 1], tab[j, 2], shift)
    return new


@numba.njit(cache=True, nogil=True)
def _count_pairs(t, p, m, use_mask):
    """Count (t[i], p[i]) pairs: runs of one pair are counted first, then hashed once.

    Open addressing with linear probing; each slot holds (truth, pred, count)
    side by side so that a probe touches one cache line.
    """
    log2 = 12
    tab = np.zeros((1 << log2, 3), np.uint64)
    shift = np.uint64(64 - log2)
    used = 0
    n = t.size
    i = 0
    while i < n:
        if use_mask:
            if not m[i]:
                i += 1
                continue
            a = t[i]
            b = p[i]
            j = i + 1
            while j < n and m[j] and t[j] == a and p[j] == b:
                j += 1
        else:
            a = t[i]
            b = p[i]
            j = i + 1
            while j < n and t[j] == a and p[j] == b:
                j += 1
        _, new = _insert(tab, np.uint64(a), np.uint64(b), np.uint64(j - i), shift)
        i = j
        if new:
            used += 1
            if 2 * used > tab.shape[0]:  # keep the load factor below 1/2
                log2 += 1
                shift = np.uint64(64 - log2)
                tab = _grow(tab, log2)
    keep = tab[:, 2] != 0
    return tab[keep, 0].copy(), tab[keep, 1].copy(), tab[keep, 2].astype(np.int64)


@dataclass(frozen=True, eq=False)
class OverlapTable:
    """Sparse contingency table of (truth label, predicted label) voxel counts.

    Attributes
    ----------
    truth_ids, pred_ids : (K,) ndarray of uint64
        The label pairs that occur, sorted by truth then prediction, no repeats.
    counts : (K,) ndarray of int64
        Number of voxels carrying each pair (all > 0).
    n_voxels : int
        Number of counted voxels (``counts.sum()``; voxels outside a mask are
        not counted).

    Notes
    -----
    Labels keep their values (label 0 is a row / column like any other);
    each metric states which labels it ignores. Tables of disjoint parts of a
    volume add up exactly with :meth:`merge` / :func:`merge_tables`.
    """

    truth_ids: np.ndarray
    pred_ids: np.ndarray
    counts: np.ndarray
    n_voxels: int

    def __post_init__(self) -> None:
        t = np.asarray(self.truth_ids, dtype=np.uint64)
        p = np.asarray(self.pred_ids, dtype=np.uint64)
        c = np.asarray(self.counts, dtype=np.int64)
        if not (t.ndim == p.ndim == c.ndim == 1 and t.size == p.size == c.size):
            raise EmsegValueError(
                "`truth_ids`, `pred_ids` and `counts` must be 1D arrays of the same length; "
                f"got shapes {t.shape}, {p.shape} and {c.shape}."
            )
        if c.size and c.min() <= 0:
            raise EmsegValueError("`counts` must be positive; got a count <= 0.")
        total = int(c.sum())
        if total != int(self.n_voxels):
            raise EmsegValueError(
                f"`n_voxels` must equal counts.sum() = {total}; got {self.n_voxels}."
            )
        for name, arr in (("truth_ids", t), ("pred_ids", p), ("counts", c)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "n_voxels", total)

    def __len__(self) -> int:
        return int(self.counts.size)

    @classmethod
    def empty(cls) -> OverlapTable:
        """Return the table of zero voxels (the neutral element of :meth:`merge`)."""
        z = np.zeros(0, np.uint64)
        return cls(z, z, np.zeros(0, np.int64), 0)

    def merge(self, other: OverlapTable) -> OverlapTable:
        """Return the table of the union of two disjoint voxel sets (exact, associative)."""
        return merge_tables([self, other])

    def __add__(self, other: OverlapTable) -> OverlapTable:
        return self.merge(other)

    def truth_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(ids, sizes)`` of the truth labels (sorted ids, uint64 / int64)."""
        return _group_sum(self.truth_ids, self.counts)

    def pred_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(ids, sizes)`` of the predicted labels (sorted ids, uint64 / int64)."""
        return _group_sum(self.pred_ids, self.counts)

    def without(self, *, truth: Iterable[int] = (), prediction: Iterable[int] = ()) -> OverlapTable:
        """Return the table of the voxels whose labels are in neither ignore list."""
        keep = np.ones(self.counts.size, dtype=bool)
        t_ign = np.asarray(list(truth), dtype=np.uint64)
        p_ign = np.asarray(list(prediction), dtype=np.uint64)
        if t_ign.size:
            keep &= ~np.isin(self.truth_ids, t_ign)
        if p_ign.size:
            keep &= ~np.isin(self.pred_ids, p_ign)
        if keep.all():
            return self
        c = self.counts[keep]
        return OverlapTable(self.truth_ids[keep], self.pred_ids[keep], c, int(c.sum()))

    def transpose(self) -> OverlapTable:
        """Return the table with the roles of truth and prediction swapped."""
        order = np.lexsort((self.truth_ids, self.pred_ids))
        return OverlapTable(
            self.pred_ids[order], self.truth_ids[order], self.counts[order], self.n_voxels
        )

    def to_sparse(self) -> Any:
        """Return ``(matrix, truth_ids, pred_ids)``: a scipy CSR matrix over compact indices."""
        from scipy import sparse

        tu, ti = np.unique(self.truth_ids, return_inverse=True)
        pu, pi = np.unique(self.pred_ids, return_inverse=True)
        mat = sparse.csr_array((self.counts, (ti, pi)), shape=(tu.size, pu.size))
        return mat, tu, pu


def _group_sum(ids: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum `counts` per distinct id, exactly in int64; ids come back sorted."""
    if ids.size == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    if np.any(ids[1:] < ids[:-1]):
        order = np.argsort(ids, kind="stable")
        ids, counts = ids[order], counts[order]
    start = np.ones(ids.size, dtype=bool)
    start[1:] = ids[1:] != ids[:-1]
    idx = np.flatnonzero(start)
    return ids[idx], np.add.reduceat(counts, idx)


def _prepare(labels: Any, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    check_label_dtype(arr, name=name)
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise EmsegValueError(
            f"`{name}` must hold non-negative labels; got minimum {arr.min()}. "
            "Relabel (e.g. with fastremap.renumber) first."
        )
    return np.ravel(arr)  # a view when the array is contiguous


def overlap_table(
    truth: ArrayLike,
    prediction: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    n_threads: int | None = None,
) -> OverlapTable:
    """Count the voxels of every (truth label, predicted label) pair.

    Parameters
    ----------
    truth : (Z, Y, X) or (Y, X) ndarray of int
        Ground-truth labels (any integer dtype, ids up to 2**64 - 1).
    prediction : ndarray of int, same shape as `truth`
        Predicted labels.
    mask : ndarray of bool, same shape, optional
        Only voxels where `mask` is true are counted.
    n_threads : int, optional
        Threads that count disjoint parts of the volume (their tables are
        merged exactly). Default: up to the number of CPUs, one per 4 Mi voxels.

    Returns
    -------
    OverlapTable
        Label ids as uint64, counts as int64. Memory is proportional to the
        number of distinct pairs, never to the largest label id.

    Raises
    ------
    EmsegTypeError
        When a label array is not of integer type.
    EmsegValueError
        When shapes differ or a signed label array holds negative values.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[1, 1, 2], [2, 2, 0]])
    >>> p = np.array([[5, 5, 5], [7, 7, 7]])
    >>> tab = overlap_table(t, p)
    >>> [(int(a), int(b), int(c)) for a, b, c in zip(tab.truth_ids, tab.pred_ids, tab.counts)]
    [(0, 7, 1), (1, 5, 2), (2, 5, 1), (2, 7, 2)]
    """
    t_arr, p_arr = np.asarray(truth), np.asarray(prediction)
    check_same_shape(t_arr, p_arr)
    t = _prepare(t_arr, "truth")
    p = _prepare(p_arr, "prediction")
    if mask is not None:
        m_arr = np.asarray(mask)
        check_same_shape(t_arr, m_arr, names=("truth", "mask"))
        if m_arr.dtype != np.bool_:
            raise EmsegTypeError(
                f"`mask` must be a boolean array; got dtype {m_arr.dtype}. Use `mask != 0`."
            )
        m = np.ravel(m_arr)
        use_mask = True
    else:
        m = np.zeros(1, dtype=np.bool_)
        use_mask = False
    n = t.size
    if n_threads is None:
        n_threads = max(1, min(os.cpu_count() or 1, n // _MIN_CHUNK))
    if n_threads < 1:
        raise EmsegValueError(f"`n_threads` must be >= 1; got {n_threads}.")
    if n_threads == 1 or n < 2:
        kt, kp, cnt = _count_pairs(t, p, m, use_mask)
        return _sorted_table(kt, kp, cnt)
    bounds = np.linspace(0, n, n_threads + 1).astype(np.int64)

    def part(i: int) -> OverlapTable:
        s = slice(int(bounds[i]), int(bounds[i + 1]))
        kt, kp, cnt = _count_pairs(t[s], p[s], m[s] if use_mask else m, use_mask)
        return _sorted_table(kt, kp, cnt)

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        parts = list(pool.map(part, range(n_threads)))
    return merge_tables(parts)


def _pair_order(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The stable order that sorts pairs by truth, then prediction (as ``np.lexsort((p, t))``).

    With ids below 2**32 (uint32 labels) the pair packs into one uint64 key,
    and a stable argsort of it is several times faster than ``lexsort``;
    on a concatenation of sorted tables (a merge) timsort only merges runs.
    """
    if t.size and int(t.max()) < 2**32 and int(p.max()) < 2**32:
        return np.argsort((t << np.uint64(32)) | p, kind="stable")
    return np.lexsort((p, t))


def _sorted_table(kt: np.ndarray, kp: np.ndarray, cnt: np.ndarray) -> OverlapTable:
    order = _pair_order(kt, kp)
    c = cnt[order]
    return OverlapTable(kt[order], kp[order], c, int(c.sum()))


def merge_tables(tables: Iterable[OverlapTable]) -> OverlapTable:
    """Add up the tables of disjoint voxel sets (exact and associative).

    Parameters
    ----------
    tables : iterable of OverlapTable
        For example the tables of the blocks of a volume.

    Returns
    -------
    OverlapTable
        The table of the union; equal to the table of the whole volume.
    """
    tables = list(tables)
    for tab in tables:
        if not isinstance(tab, OverlapTable):
            raise EmsegTypeError(
                f"`tables` must hold OverlapTable objects; got {type(tab).__name__}."
            )
    if not tables:
        return OverlapTable.empty()
    if len(tables) == 1:
        return tables[0]
    t = np.concatenate([x.truth_ids for x in tables])
    p = np.concatenate([x.pred_ids for x in tables])
    c = np.concatenate([x.counts for x in tables])
    if t.size == 0:
        return OverlapTable.empty()
    order = _pair_order(t, p)
    t, p, c = t[order], p[order], c[order]
    start = np.ones(t.size, dtype=bool)
    start[1:] = (t[1:] != t[:-1]) | (p[1:] != p[:-1])
    idx = np.flatnonzero(start)
    sums = np.add.reduceat(c, idx)
    return OverlapTable(t[idx], p[idx], sums, int(sums.sum()))
