"""ISBI 2012 V_rand and V_info of a boundary probability map, swept over thresholds.

The challenge (Arganda-Carreras et al. 2015, Fiji ``RandError`` /
``VariationOfInformation``, script "Segmentation evaluation after border
thinning") scores a membrane probability map as follows, per 2D section:

1. binarize: a pixel is cell interior where the *interior* map is
   ``> threshold`` (Fiji's ``getPixelValue(x, y) > binaryThreshold``);
2. label the 4-connected components of the interior (truth and proposal);
3. with ``thin=True``, thin the borders to one pixel: every component grows
   over the border pixels (seeded watershed of the distance to the
   components) and one-pixel watershed lines stay as border;
4. score against the truth components with the foreground-restricted
   scores: truth border pixels are left out, proposal border pixels are
   singletons (E's ``adapted_rand_error(variant="isbi2012")`` and
   ``isbi_information_scores``).

For a stack, V_rand at one threshold is the F-score of the pair counts summed
over sections (Fiji sums the per-section true / false positives and
negatives); V_info is the mean of the per-section V_info (Fiji's
``getFscore``; a section whose truth or proposal entropy is 0 scores 0, as in
Fiji). The reported score is the maximum over the thresholds, and its
threshold the first one reaching it.

Deviation, stated: Fiji's thinning code (``getMaximalVRandAfterThinning``) was
not available to us; the thinning here is the seeded-watershed one above,
which leaves one-pixel borders and never merges or deletes a component. Fiji
also binarizes the truth with the same threshold; here the truth is always
``truth != 0`` (identical for 0 / 255 labels at thresholds in [0, 1)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from emseg._checks import check_same_shape
from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.metrics._pixel import ISBI_THRESHOLDS
from emseg.metrics._rand import adapted_rand_error
from emseg.metrics._tables import OverlapTable, merge_tables, overlap_table
from emseg.metrics._voi import isbi_information_scores

__all__ = ["IsbiScores", "isbi2012_scores", "thin_borders"]


@dataclass(frozen=True, eq=False)
class IsbiScores:
    """ISBI 2012 scores of a boundary map (higher is better).

    Attributes
    ----------
    v_rand, v_info : float
        Maximum over the thresholds.
    best_threshold_rand, best_threshold_info : float
        First threshold reaching the maximum.
    thresholds : (T,) ndarray of float64
    v_rand_per_threshold, v_info_per_threshold : (T,) ndarray of float64
    rand_split_per_threshold, rand_merge_per_threshold : (T,) ndarray of float64
        Rand recall (split score) and precision (merge score) per threshold.
    thinned : bool
        Whether borders were thinned.
    """

    v_rand: float
    v_info: float
    best_threshold_rand: float
    best_threshold_info: float
    thresholds: np.ndarray
    v_rand_per_threshold: np.ndarray
    v_info_per_threshold: np.ndarray
    rand_split_per_threshold: np.ndarray
    rand_merge_per_threshold: np.ndarray
    thinned: bool


def _components(interior: np.ndarray) -> np.ndarray:
    """4-connected components of a 2D mask as uint32 labels (0 = border)."""
    from scipy import ndimage

    lab, _ = ndimage.label(interior, structure=ndimage.generate_binary_structure(2, 1))
    return lab.astype(np.uint32, copy=False)


def thin_borders(labels: ArrayLike) -> np.ndarray:
    """Thin the borders (label 0) of a 2D segmentation to one pixel.

    Parameters
    ----------
    labels : (Y, X) ndarray of int
        Segments (nonzero) separated by border pixels (0).

    Returns
    -------
    (Y, X) ndarray of uint32
        Every segment grown over the border pixels nearest to it (seeded
        watershed of the Euclidean distance to the segments, 4-connected
        flooding); one-pixel watershed lines between different segments stay
        0. No segment is merged or deleted and each stays 4-connected (a
        piece cut off from its seed by watershed lines becomes border);
        border pieces inside one segment (dangling membranes) disappear.
    """
    from scipy import ndimage
    from skimage.measure import label
    from skimage.segmentation import watershed

    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise EmsegValueError(f"`labels` must be 2D (Y, X); got {lab.ndim} dimensions.")
    lab = lab.astype(np.uint32, copy=False)
    border = lab == 0
    if not border.any() or border.all():
        return lab.copy()
    dist = ndimage.distance_transform_edt(border)
    out = np.asarray(watershed(dist, markers=lab, connectivity=1, watershed_line=True), np.uint32)
    # watershed lines can cut off a pixel (e.g. at a wall crossing) from its segment:
    # keep only the 4-connected piece of each segment that holds its seed
    pieces = label(out, background=0, connectivity=1)
    keep = np.unique(pieces[~border])
    out[~np.isin(pieces, keep)] = 0
    return out


def _as_interior(probabilities: np.ndarray, boundary_is_dark: bool) -> np.ndarray:
    if probabilities.dtype == np.bool_:
        b = probabilities.astype(np.float64)
    elif probabilities.dtype.kind == "f":
        b = probabilities.astype(np.float64, copy=False)
        if b.size and not (np.nanmin(b) >= 0.0 and np.nanmax(b) <= 1.0):
            raise EmsegValueError(
                "`boundary_probabilities` must be in [0, 1]; got values in "
                f"[{np.nanmin(b)}, {np.nanmax(b)}]. Divide 8-bit maps by 255 first "
                "(emseg never rescales implicitly)."
            )
    else:
        raise EmsegTypeError(
            "`boundary_probabilities` must be a float array in [0, 1] or a boolean boundary "
            f"mask; got dtype {probabilities.dtype}. Divide 8-bit maps by 255 first."
        )
    if probabilities.dtype == np.bool_ and boundary_is_dark:
        return b  # True = interior
    return b if boundary_is_dark else 1.0 - b


def _parse_thresholds(thresholds: ArrayLike | None) -> np.ndarray:
    if thresholds is None:
        return np.asarray(ISBI_THRESHOLDS, dtype=np.float64)
    th = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if th.ndim != 1 or th.size == 0 or np.any(~np.isfinite(th)) or th.min() < 0 or th.max() > 1:
        raise EmsegValueError(
            f"`thresholds` must be a non-empty 1D sequence of values in [0, 1]; got {thresholds!r}."
        )
    return th


def _best(scores: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    if np.all(np.isnan(scores)):
        return float("nan"), float(thresholds[0])
    i = int(np.nanargmax(scores))
    return float(scores[i]), float(thresholds[i])


def isbi2012_scores(
    truth: ArrayLike,
    boundary_probabilities: ArrayLike,
    *,
    thresholds: ArrayLike | None = None,
    thin: bool = True,
    boundary_is_dark: bool = False,
) -> IsbiScores:
    """ISBI 2012 V_rand and V_info (maximum over thresholds), as Fiji's challenge scripts.

    Parameters
    ----------
    truth : (Y, X) or (Z, Y, X) ndarray
        Nonzero = cell interior, 0 = membrane (the ISBI 2012
        ``train-labels.tif``: 255 / 0). Components are 4-connected per section.
    boundary_probabilities : ndarray of float in [0, 1] or bool, same shape
        Probability that a pixel is membrane (1 = membrane). With
        ``boundary_is_dark=True`` the map is the challenge's submission
        format instead: 0 (dark) = membrane, 1 = interior. A boolean map is
        a binary membrane mask (True = membrane, or True = interior when
        `boundary_is_dark`). 8-bit maps must be divided by 255 first.
    thresholds : sequence of float in [0, 1], optional
        Interior is ``interior map > t``. Default 0.0, 0.1, ..., 1.0 (the
        challenge scripts' ``0.0 : 1.0 : 0.1``).
    thin : bool, default True
        Thin borders to one pixel before scoring (the final ISBI 2012
        metrics, "after border thinning").
    boundary_is_dark : bool, default False

    Returns
    -------
    IsbiScores
        Maxima, best thresholds and per-threshold curves (float64).

    Notes
    -----
    Cost: one labelling (+ thinning) and one overlap table per section and
    threshold; memory is one section at a time.
    """
    t_arr = np.asarray(truth)
    p_arr = np.asarray(boundary_probabilities)
    check_same_shape(t_arr, p_arr, names=("truth", "boundary_probabilities"))
    if t_arr.ndim not in (2, 3):
        raise EmsegValueError(
            f"`truth` must be 2D (Y, X) or 3D (Z, Y, X); got {t_arr.ndim} dimensions."
        )
    if t_arr.dtype.kind not in "biu":
        raise EmsegTypeError(
            f"`truth` must be an integer or boolean mask (nonzero = interior); got {t_arr.dtype}."
        )
    th = _parse_thresholds(thresholds)
    interior = _as_interior(p_arr, boundary_is_dark)
    t3 = (t_arr != 0).reshape((-1, *t_arr.shape[-2:]))
    i3 = interior.reshape(t3.shape)
    n_sec = t3.shape[0]
    truth_labels = []
    for z in range(n_sec):
        lab = _components(t3[z])
        truth_labels.append(thin_borders(lab) if thin else lab)
    v_rand = np.empty(th.size)
    split = np.empty(th.size)
    merge = np.empty(th.size)
    v_info = np.empty(th.size)
    for k, t in enumerate(th):
        tables: list[OverlapTable] = []
        info = []
        for z in range(n_sec):
            lab = _components(i3[z] > t)
            if thin:
                lab = thin_borders(lab)
            tab = overlap_table(truth_labels[z], lab)
            info.append(isbi_information_scores(tab, zero_division=0.0).v_info)
            tables.append(_offset(tab, z))
        pooled = adapted_rand_error(merge_tables(tables), variant="isbi2012")
        v_rand[k], split[k], merge[k] = pooled.f_score, pooled.recall, pooled.precision
        v_info[k] = float(np.mean(info))
    best_r, th_r = _best(v_rand, th)
    best_i, th_i = _best(v_info, th)
    for arr in (th, v_rand, v_info, split, merge):
        arr.setflags(write=False)
    return IsbiScores(best_r, best_i, th_r, th_i, th, v_rand, v_info, split, merge, bool(thin))


def _offset(tab: OverlapTable, z: int) -> OverlapTable:
    """Make a section's labels unique across sections (label 0 stays 0)."""
    if z == 0:
        return tab
    off = np.uint64(z) << np.uint64(32)
    t = np.where(tab.truth_ids != 0, tab.truth_ids + off, tab.truth_ids)
    p = np.where(tab.pred_ids != 0, tab.pred_ids + off, tab.pred_ids)
    order = np.lexsort((p, t))
    return OverlapTable(t[order], p[order], tab.counts[order], tab.n_voxels)
