"""Topology-preserving warping error (Jain et al. 2010), as the ISBI 2012 challenge computed it.

The binary truth is *warped* toward the binarized prediction by flipping, one at
a time, mismatched pixels that are **simple points** (flipping them changes no
connected component, hole or background component); pixels still mismatched
when no mismatched simple point is left are topological errors (splits,
merges, added or removed objects and holes). The warping error is their number
divided by the number of pixels.

Conventions (those of Fiji's ``trainableSegmentation.metrics.WarpingError``,
the ISBI 2012 evaluation):

* foreground (truth != 0, e.g. cell interior) is 4-connected and background
  (membrane) 8-connected (``simple2DBertrand(patch, 4)``, i.e. the 6/26 pair
  restricted to a plane); ``foreground_connectivity=8`` swaps the pair;
* the prediction is foreground where ``prediction > threshold``;
* the image is padded with background; mismatches are visited in decreasing
  ``|prediction - threshold|`` (most confident first; ties in raster order),
  and passes over the remaining mismatches repeat until one flips nothing;
* 3D stacks are processed per 2D section (axis 0), as the challenge did; the
  error is the total over sections divided by the total number of voxels
  (Fiji's mean over equally sized sections). ``mode="3d"`` warps the volume
  as a whole instead, with 3D simple points (Bertrand & Malandain 1994):
  foreground 6- and background 26-connected (``foreground_connectivity=26``
  swaps the pair); a point is simple iff ``T6(x, X) = 1`` (6-components of
  the foreground in its 18-neighbourhood that touch one of its faces) and
  ``T26(x, X̄) = 1`` (26-components of the background in its
  26-neighbourhood), which also forbids creating or closing tunnels and
  cavities.

The simple-point test is a 512-entry lookup table on the 3x3 neighbourhood
built from the topological numbers of Bertrand & Malandain (1994): a point is
simple iff the foreground of its 8 neighbours has exactly one component
adjacent to it (T = 1) and so has the background (T̄ = 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numba
import numpy as np
from numpy.typing import ArrayLike

from emseg._checks import check_same_shape
from emseg.errors import EmsegTypeError, EmsegValueError

__all__ = ["WarpingError", "is_simple_3d", "simple_point_lut", "warping_error"]

_FACE = (1, 3, 5, 7)  # flat 3x3 indices of the 4 face neighbours of the centre (4)
_NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)


def _components(cells: list[int], connectivity: int) -> dict[int, int]:
    """Union-find labels of the given flat 3x3 cells under 4- or 8-adjacency."""
    parent = {c: c for c in cells}

    def find(c: int) -> int:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    for a in cells:
        ya, xa = divmod(a, 3)
        for b in cells:
            yb, xb = divmod(b, 3)
            dy, dx = abs(ya - yb), abs(xa - xb)
            adjacent = dy + dx == 1 if connectivity == 4 else max(dy, dx) == 1
            if adjacent:
                parent[find(a)] = find(b)
    return {c: find(c) for c in cells}


def _topological_number(cells: list[int], connectivity: int) -> int:
    """Components of `cells` (centre excluded) that are `connectivity`-adjacent to the centre."""
    lab = _components(cells, connectivity)
    touching = _FACE if connectivity == 4 else _NEIGHBOURS
    return len({lab[c] for c in cells if c in touching})


@lru_cache(maxsize=2)
def simple_point_lut(foreground_connectivity: int = 4) -> np.ndarray:
    """Lookup table of 2D simple points.

    Parameters
    ----------
    foreground_connectivity : {4, 8}, default 4
        Adjacency of the foreground; the background uses the other one.

    Returns
    -------
    (512,) ndarray of bool
        Entry ``code`` tells whether the centre of the 3x3 patch with
        ``patch.flat[k] = (code >> k) & 1`` is simple. The centre bit (16) is
        ignored: a point is simple for adding iff it is simple for removing.
    """
    if foreground_connectivity not in (4, 8):
        raise EmsegValueError(
            f"`foreground_connectivity` must be 4 or 8; got {foreground_connectivity!r}."
        )
    bg_conn = 8 if foreground_connectivity == 4 else 4
    lut = np.zeros(512, dtype=np.bool_)
    for code in range(512):
        fg = [k for k in _NEIGHBOURS if (code >> k) & 1]
        bg = [k for k in _NEIGHBOURS if not (code >> k) & 1]
        lut[code] = (
            _topological_number(fg, foreground_connectivity) == 1
            and _topological_number(bg, bg_conn) == 1
        )
    lut.setflags(write=False)
    return lut


@numba.njit(cache=True, nogil=True)
def _warp2d(src, tgt, ys, xs, lut):  # pragma: no cover - compiled
    """Flip mismatched simple points of `src` (padded uint8) toward `tgt` until none flips."""
    n = ys.size
    while True:
        flips = 0
        for k in range(n):
            y = ys[k]
            x = xs[k]
            if src[y, x] == tgt[y, x]:
                continue
            code = (
                src[y - 1, x - 1]
                | (src[y - 1, x] << 1)
                | (src[y - 1, x + 1] << 2)
                | (src[y, x - 1] << 3)
                | (src[y, x + 1] << 5)
                | (src[y + 1, x - 1] << 6)
                | (src[y + 1, x] << 7)
                | (src[y + 1, x + 1] << 8)
            )
            if lut[code]:
                src[y, x] = tgt[y, x]
                flips += 1
        if flips == 0:
            break
    return src


@numba.njit(cache=True, nogil=True)
def _t_number(patch, value, six):  # pragma: no cover - compiled
    """Topological number of the cells of a 3x3x3 patch (flat, 27) equal to `value`.

    ``six``: 6-components of those cells in the 18-neighbourhood of the centre
    that hold a face neighbour (T6); otherwise 26-components of those cells
    in the 26-neighbourhood (T26). The centre itself is never counted.
    """
    use = np.zeros(27, np.bool_)
    for k in range(27):
        if k == 13 or patch[k] != value:
            continue
        z, r = divmod(k, 9)
        y, x = divmod(r, 3)
        far = (z != 1) + (y != 1) + (x != 1)
        if six and far == 3:  # corners are not in the 18-neighbourhood
            continue
        use[k] = True
    label = np.full(27, -1, np.int64)
    stack = np.empty(27, np.int64)
    count = 0
    for k in range(27):
        if not use[k] or label[k] >= 0:
            continue
        touches = False
        label[k] = count
        top = 0
        stack[top] = k
        top += 1
        while top > 0:
            top -= 1
            c = stack[top]
            cz, cr = divmod(c, 9)
            cy, cx = divmod(cr, 3)
            if (cz != 1) + (cy != 1) + (cx != 1) == 1:
                touches = True  # a face neighbour of the centre
            for d in range(27):
                if not use[d] or label[d] >= 0:
                    continue
                dz, dr = divmod(d, 9)
                dy, dx = divmod(dr, 3)
                az, ay, ax = abs(dz - cz), abs(dy - cy), abs(dx - cx)
                if max(az, max(ay, ax)) != 1:
                    continue
                if six and az + ay + ax != 1:
                    continue
                label[d] = count
                stack[top] = d
                top += 1
        if six and not touches:
            continue  # not 6-adjacent to the centre: not counted (its cells stay visited)
        count += 1
    return count


@numba.njit(cache=True, nogil=True)
def _simple3d(patch, fg_six):  # pragma: no cover - compiled
    """Whether the centre of a flat 3x3x3 binary patch is a 3D simple point."""
    if fg_six:
        return _t_number(patch, 1, True) == 1 and _t_number(patch, 0, False) == 1
    return _t_number(patch, 1, False) == 1 and _t_number(patch, 0, True) == 1


@numba.njit(cache=True, nogil=True)
def _warp3d(src, tgt, zs, ys, xs, fg_six):  # pragma: no cover - compiled
    """Flip mismatched 3D simple points of `src` (padded uint8) toward `tgt` until none flips."""
    n = zs.size
    patch = np.empty(27, np.uint8)
    while True:
        flips = 0
        for k in range(n):
            z = zs[k]
            y = ys[k]
            x = xs[k]
            if src[z, y, x] == tgt[z, y, x]:
                continue
            i = 0
            for dz in range(-1, 2):
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        patch[i] = src[z + dz, y + dy, x + dx]
                        i += 1
            if _simple3d(patch, fg_six):
                src[z, y, x] = tgt[z, y, x]
                flips += 1
        if flips == 0:
            break
    return src


def is_simple_3d(patch: ArrayLike, *, foreground_connectivity: int = 6) -> bool:
    """Whether the centre of a 3x3x3 binary patch is a 3D simple point.

    Parameters
    ----------
    patch : (3, 3, 3) array of bool or int
        Nonzero = foreground; the centre's own value is ignored.
    foreground_connectivity : {6, 26}, default 6
        Adjacency of the foreground; the background uses the other one.

    Returns
    -------
    bool
        True iff flipping the centre changes no foreground or background
        component, tunnel or cavity (Bertrand & Malandain 1994: T = T̄ = 1).

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((3, 3, 3), bool); p[0] = True  # a full face below: removable
    >>> is_simple_3d(p)
    True
    >>> p = np.ones((3, 3, 3), bool)  # the centre of a solid: removing it makes a cavity
    >>> is_simple_3d(p)
    False
    """
    arr = np.asarray(patch)
    if arr.shape != (3, 3, 3):
        raise EmsegValueError(f"`patch` must have shape (3, 3, 3); got {arr.shape}.")
    if foreground_connectivity not in (6, 26):
        raise EmsegValueError(
            f"`foreground_connectivity` must be 6 or 26 in 3D; got {foreground_connectivity!r}."
        )
    flat = np.ascontiguousarray((arr != 0).ravel(), dtype=np.uint8)
    return bool(_simple3d(flat, foreground_connectivity == 6))


@dataclass(frozen=True, eq=False)
class WarpingError:
    """Result of :func:`warping_error`.

    Attributes
    ----------
    warping_error : float
        Topological errors / number of voxels.
    n_topological_errors : int
        Voxels still mismatched after warping (the numerator).
    n_pixel_errors : int
        Voxels mismatched before warping (truth vs binarized prediction).
    n_voxels : int
    splits, merges, object_additions, object_deletions, hole_additions, hole_deletions, other : int
        Number of clusters (8-connected groups of remaining mismatches of one
        kind) of each type of topological error, classified by how flipping
        the cluster changes the number of foreground and background
        components in its bounding box + 1 voxel (local, like Fiji's
        radius-based classification).
    warped : ndarray of bool
        The warped truth (same shape as the input).
    """

    warping_error: float
    n_topological_errors: int
    n_pixel_errors: int
    n_voxels: int
    splits: int
    merges: int
    object_additions: int
    object_deletions: int
    hole_additions: int
    hole_deletions: int
    other: int
    warped: np.ndarray


_KINDS = (
    "splits",
    "merges",
    "object_additions",
    "object_deletions",
    "hole_additions",
    "hole_deletions",
    "other",
)


def _count(img: np.ndarray, structure: np.ndarray) -> int:
    from scipy import ndimage

    return int(ndimage.label(img, structure=structure)[1])


def _classify(warped: np.ndarray, pred: np.ndarray, fg_conn: int) -> dict[str, int]:
    """Classify the clusters of remaining mismatches (8- / 26-connected) of a section / volume."""
    from scipy import ndimage

    nd = warped.ndim
    s4 = ndimage.generate_binary_structure(nd, 1)  # 4 / 6
    s8 = ndimage.generate_binary_structure(nd, nd)  # 8 / 26
    s_fg, s_bg = (s4, s8) if fg_conn in (4, 6) else (s8, s4)
    out = dict.fromkeys(_KINDS, 0)
    for adding in (True, False):  # adding: prediction foreground where the warped truth is not
        err = (pred & ~warped) if adding else (~pred & warped)
        lab, n = ndimage.label(err, structure=s8)
        if n == 0:
            continue
        for i, box in enumerate(ndimage.find_objects(lab), start=1):
            win = tuple(slice(max(0, b.start - 1), b.stop + 1) for b in box)
            before = warped[win]
            after = before.copy()
            after[lab[win] == i] = adding
            d_fg = _count(after, s_fg) - _count(before, s_fg)
            d_bg = _count(~after, s_bg) - _count(~before, s_bg)
            if adding:
                kind = (
                    "merges"
                    if d_fg < 0
                    else "object_additions"
                    if d_fg > 0
                    else "hole_deletions"
                    if d_bg < 0
                    else "hole_additions"
                    if d_bg > 0
                    else "other"
                )
            else:
                kind = (
                    "splits"
                    if d_fg > 0
                    else "object_deletions"
                    if d_fg < 0
                    else "hole_additions"
                    if d_bg > 0
                    else "hole_deletions"
                    if d_bg < 0
                    else "other"
                )
            out[kind] += 1
    return out


def _prediction_mask(prediction: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Binarized prediction and the confidence |p - t| that orders the flips."""
    if prediction.dtype.kind == "f":
        if prediction.size and (np.nanmin(prediction) < 0 or np.nanmax(prediction) > 1):
            raise EmsegValueError(
                "`prediction` must hold probabilities in [0, 1] when it is a float array; got "
                f"values in [{np.nanmin(prediction)}, {np.nanmax(prediction)}]. Rescale it "
                "first (emseg never rescales implicitly)."
            )
        p = prediction.astype(np.float64, copy=False)
        return p > threshold, np.abs(p - threshold)
    if prediction.dtype.kind in "biu":
        b = prediction != 0
        return b, np.zeros(b.shape)
    raise EmsegTypeError(
        "`prediction` must be a float probability map in [0, 1] or a binary / integer mask; "
        f"got dtype {prediction.dtype}."
    )


def warping_error(
    truth: ArrayLike,
    prediction: ArrayLike,
    *,
    threshold: float = 0.5,
    foreground_connectivity: int | None = None,
    classify: bool = True,
    mode: Literal["sections", "3d"] = "sections",
) -> WarpingError:
    """Topology-preserving warping error of a binary prediction (Jain et al. 2010).

    Parameters
    ----------
    truth : (Y, X) or (Z, Y, X) ndarray
        Binary ground truth; nonzero = foreground (e.g. ISBI 2012 labels:
        255 = cell interior, 0 = membrane).
    prediction : ndarray, same shape
        Foreground probability in [0, 1] (float; foreground where
        ``> threshold``, e.g. 1 - membrane probability) or a binary / integer
        mask (nonzero = foreground).
    threshold : float, default 0.5
        Binarization threshold for a float `prediction`.
    foreground_connectivity : {4, 8} or {6, 26}, optional
        ``mode="sections"``: 4 (default; foreground 4-connected, background
        8-connected, as Fiji / ISBI 2012) or 8. ``mode="3d"``: 6 (default;
        background 26-connected) or 26.
    classify : bool, default True
        Classify the remaining errors (counts in the result; 0 when False).
    mode : {"sections", "3d"}, default "sections"
        ``"sections"``: a 3D stack is warped per 2D section (axis 0), as the
        ISBI 2012 challenge did. ``"3d"``: a (Z, Y, X) volume is warped as a
        whole with 3D simple points (:func:`is_simple_3d`), so that a split
        or merge across sections counts once and a cavity or tunnel is a
        topological error; clusters of remaining errors are 26-connected.

    Returns
    -------
    WarpingError
        ``warping_error`` = remaining mismatches / voxels (float64), counts,
        and the warped truth.

    Examples
    --------
    >>> t = np.zeros((7, 9), np.uint8); t[1:6, 1:8] = 1
    >>> p = t.copy(); p[1:6, 4] = 0  # a boundary through the object: a split
    >>> r = warping_error(t, p)
    >>> r.n_pixel_errors, r.n_topological_errors, r.splits
    (5, 1, 1)
    """
    t_arr, p_arr = np.asarray(truth), np.asarray(prediction)
    check_same_shape(t_arr, p_arr)
    if t_arr.ndim not in (2, 3):
        raise EmsegValueError(
            f"`truth` must be 2D (Y, X) or 3D (Z, Y, X); got {t_arr.ndim} dimensions."
        )
    if t_arr.dtype.kind not in "biuf":
        raise EmsegTypeError(f"`truth` must be a numeric mask; got dtype {t_arr.dtype}.")
    if mode not in ("sections", "3d"):
        raise EmsegValueError(f"`mode` must be one of 'sections', '3d'; got {mode!r}.")
    pred_bin, conf = _prediction_mask(p_arr, float(threshold))
    if mode == "3d":
        if t_arr.ndim != 3:
            raise EmsegValueError(
                f"`mode='3d'` needs a (Z, Y, X) volume; got {t_arr.ndim} dimensions. "
                "Use mode='sections' for 2D images."
            )
        return _warping_3d(t_arr != 0, pred_bin, conf, foreground_connectivity or 6, classify)
    lut = simple_point_lut(foreground_connectivity or 4)
    t3 = (t_arr != 0).reshape((-1, *t_arr.shape[-2:]))
    p3 = pred_bin.reshape(t3.shape)
    c3 = conf.reshape(t3.shape)
    warped = np.empty_like(t3)
    counts = dict.fromkeys(_KINDS, 0)
    n_pixel = n_topo = 0
    for z in range(t3.shape[0]):
        src = np.pad(t3[z], 1).astype(np.uint8)
        tgt = np.pad(p3[z], 1).astype(np.uint8)
        ys, xs = np.nonzero(src != tgt)
        n_pixel += int(ys.size)
        if ys.size:
            order = np.argsort(-c3[z][ys - 1, xs - 1], kind="stable")
            ys = np.ascontiguousarray(ys[order], dtype=np.int64)
            xs = np.ascontiguousarray(xs[order], dtype=np.int64)
            _warp2d(src, tgt, ys, xs, lut)
        w = src[1:-1, 1:-1].astype(bool)
        warped[z] = w
        n_topo += int(np.count_nonzero(w != p3[z]))
        if classify and n_topo:
            for k, v in _classify(w, p3[z], foreground_connectivity or 4).items():
                counts[k] += v
    n_vox = int(t_arr.size)
    out = warped.reshape(t_arr.shape)
    out.setflags(write=False)
    return WarpingError(
        warping_error=n_topo / n_vox if n_vox else float("nan"),
        n_topological_errors=n_topo,
        n_pixel_errors=n_pixel,
        n_voxels=n_vox,
        warped=out,
        **counts,
    )


def _warping_3d(
    truth: np.ndarray, pred: np.ndarray, conf: np.ndarray, fg_conn: int, classify: bool
) -> WarpingError:
    if fg_conn not in (6, 26):
        raise EmsegValueError(
            f"`foreground_connectivity` must be 6 or 26 with mode='3d'; got {fg_conn!r}."
        )
    src = np.pad(truth, 1).astype(np.uint8)
    tgt = np.pad(pred, 1).astype(np.uint8)
    zs, ys, xs = np.nonzero(src != tgt)
    n_pixel = int(zs.size)
    if zs.size:
        order = np.argsort(-conf[zs - 1, ys - 1, xs - 1], kind="stable")
        zs, ys, xs = (np.ascontiguousarray(a[order], dtype=np.int64) for a in (zs, ys, xs))
        _warp3d(src, tgt, zs, ys, xs, fg_conn == 6)
    warped = src[1:-1, 1:-1, 1:-1].astype(bool)
    n_topo = int(np.count_nonzero(warped != pred))
    counts = dict.fromkeys(_KINDS, 0)
    if classify and n_topo:
        counts.update(_classify(warped, pred, fg_conn))
    warped.setflags(write=False)
    n_vox = int(truth.size)
    return WarpingError(
        warping_error=n_topo / n_vox if n_vox else float("nan"),
        n_topological_errors=n_topo,
        n_pixel_errors=n_pixel,
        n_voxels=n_vox,
        warped=warped,
        **counts,
    )
