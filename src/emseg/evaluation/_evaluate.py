"""``evaluate``: every metric of a (truth, prediction) pair of any size, exact via blockwise tables."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from emseg._checks import SpacingLike, check_choice, parse_spacing
from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.evaluation._moments import ObjectMoments, morphology_table
from emseg.evaluation._pages import page_reader
from emseg.evaluation._tables import VolumeSummary, merge_summaries, summarise_block
from emseg.metrics import (
    CONVENTIONS,
    ConfusionMatrix,
    OverlapTable,
    ProbabilityHistogram,
    class_scores,
    instance_metrics,
    jaccard_curve,
    match_instances,
    neuron_metrics,
    object_tables,
    pixel_error,
    semantic_metrics,
)
from emseg.metrics._evaluate import GEOMETRIC_KEYS, INSTANCE_KEYS, NEURON_KEYS, SEMANTIC_KEYS

log = logging.getLogger(__name__)

__all__ = ["IN_MEMORY_LIMIT", "METRIC_KEYS", "TASKS", "EvaluationResult", "evaluate"]

Task = Literal["all", "semantic", "instance", "neuron"]
TASKS = ("all", "semantic", "instance", "neuron")

#: Every key of the ``emseg evaluate --json`` schema, in order.
METRIC_KEYS: tuple[str, ...] = SEMANTIC_KEYS + NEURON_KEYS + GEOMETRIC_KEYS + INSTANCE_KEYS

#: Voxels up to which the neighbourhood-based scores read a whole volume (or box) into memory.
IN_MEMORY_LIMIT = 2**26

_TASK_KEYS: dict[str, tuple[str, ...]] = {
    "semantic": (*SEMANTIC_KEYS, "warping_error", "hausdorff", "hausdorff95"),
    "neuron": NEURON_KEYS,
    "instance": (*INSTANCE_KEYS, "hausdorff", "hausdorff95"),
    "all": METRIC_KEYS,
}
_MAX_CLASSES = 1024
_SEM_NAMES = ("precision", "recall", "specificity", "dice", "jaccard", "conformity")


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Everything :func:`evaluate` measured.

    Attributes
    ----------
    metrics : dict of str to float or None
        Every key of :data:`METRIC_KEYS`; None where not computed (the
        reason is in `notes`). May hold NaN / inf (``to_json`` turns them
        into null with a note).
    conventions : dict
        The variant of every metric (:data:`emseg.metrics.CONVENTIONS` plus
        what this evaluation chose).
    notes : dict of str to str
        Why a key is null, and how the geometric scores were computed.
    per_class : dict or None
        Multi-class inputs: ``{class: {precision, recall, specificity, dice,
        jaccard, conformity}}``; None for binary inputs.
    task : str
    shape : tuple of int
    spacing : tuple of float
        nm, one per axis.
    block_shape : tuple of int
        The blocks of the streaming pass.
    overlap : OverlapTable
        The exact (truth, prediction) contingency table.
    confusion : ConfusionMatrix or None
        Multi-class confusion matrix (binary: 2 x 2 of 0 / nonzero).
    histograms : dict of str to ProbabilityHistogram
        ``"pixel"`` (thresholds 0.0:1.0:0.1) and ``"curve"`` (0.00:1.00:0.01)
        when a probability map was given; empty otherwise.
    curves : dict of str to ndarray
        ``thresholds, precision, recall, jaccard`` of the probability map
        (foreground = probability > threshold); empty without one.
    truth_objects, prediction_objects : pandas.DataFrame or None
        One row per object (``objects=True``): label, size, best match, IoU,
        splits / merges, bounding box and centroid in voxels and nm, size in
        nm² / nm³, equivalent diameter and elongation.
    morphology : dict or None
        :func:`~emseg.evaluation.compare_distributions` of the object tables.
    hausdorff_pairs : dict or None
        Per-pair Hausdorff distances (see :func:`hausdorff_pairs`).
    """

    metrics: dict[str, float | None]
    conventions: dict[str, Any]
    notes: dict[str, str]
    per_class: dict[str, dict[str, float]] | None
    task: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    block_shape: tuple[int, ...]
    overlap: OverlapTable
    confusion: ConfusionMatrix | None
    histograms: dict[str, ProbabilityHistogram] = field(default_factory=dict)
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    truth_objects: Any = None
    prediction_objects: Any = None
    morphology: dict[str, Any] | None = None
    hausdorff_pairs: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: metric keys (float or null), conventions, notes, extras."""
        notes = dict(self.notes)
        out: dict[str, Any] = {}
        for k in METRIC_KEYS:
            v = self.metrics.get(k)
            if v is not None and not math.isfinite(v):
                why = f"value was {v!r} (not representable in JSON)"
                notes[k] = f"{notes[k]}; {why}" if k in notes else why
                v = None
            out[k] = v
        out["conventions"] = self.conventions
        out["notes"] = notes
        if self.per_class is not None:
            out["per_class"] = {
                c: {k: _finite(v) for k, v in s.items()} for c, s in self.per_class.items()
            }
        if self.morphology is not None:
            out["morphology"] = {
                f: {k: _finite(v) for k, v in s.items()} for f, s in self.morphology.items()
            }
        out["task"] = self.task
        out["shape"] = list(self.shape)
        out["spacing"] = list(self.spacing)
        out["n_voxels"] = int(self.overlap.n_voxels)
        return out


def _finite(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    return v


def _open(obj: Any, name: str, spacing: SpacingLike) -> Any:
    if isinstance(obj, str | os.PathLike):
        from emseg.io import open_image

        return open_image(obj, spacing=spacing)
    if not (hasattr(obj, "shape") and hasattr(obj, "dtype") and hasattr(obj, "__getitem__")):
        raise EmsegTypeError(
            f"`{name}` must be a path, an array or an emseg.io.LazyImage; got {type(obj).__name__}."
        )
    return obj


def _check_kind(img: Any, name: str, threshold: float | None, flag: str) -> None:
    kind = np.dtype(img.dtype).kind
    if kind == "f" and threshold is None:
        raise EmsegTypeError(
            f"`{name}` holds floats ({img.dtype}); labels must be integers. "
            f"Pass `{flag}=T` to use {name} > T as the foreground."
        )
    if kind not in "biuf":
        raise EmsegTypeError(f"`{name}` must hold integer labels; got dtype {img.dtype}.")
    if len(img.shape) not in (2, 3):
        raise EmsegValueError(
            f"`{name}` must be 2D (Y, X) or 3D (Z, Y, X); got shape {tuple(img.shape)}."
        )


def _binary_confusion(tab: OverlapTable) -> ConfusionMatrix:
    t, p = tab.truth_ids != 0, tab.pred_ids != 0
    m = np.zeros((2, 2), np.int64)
    np.add.at(m, (t.astype(np.intp), p.astype(np.intp)), tab.counts)
    return ConfusionMatrix(np.array([0, 1], np.uint64), m)


def _class_confusion(tab: OverlapTable, values: np.ndarray) -> ConfusionMatrix:
    ti = np.searchsorted(values, tab.truth_ids)
    pi = np.searchsorted(values, tab.pred_ids)
    m = np.zeros((values.size, values.size), np.int64)
    np.add.at(m, (ti, pi), tab.counts)
    return ConfusionMatrix(values, m)


def _object_frame(base: Any, moments: ObjectMoments, spacing: tuple[float, ...], ndim: int) -> Any:
    """Join the split / merge table (metrics.object_tables) with boxes, centroids and shapes."""
    import pandas as pd

    if not np.array_equal(np.asarray(base["label"], np.uint64), moments.ids):
        raise EmsegValueError("internal: object table and moments disagree on the labels.")
    axes = ("z", "y", "x")[3 - ndim :]
    sp3 = (1.0,) * (3 - ndim) + tuple(spacing)
    cols: dict[str, Any] = {}
    cen = moments.centroid()
    for i, ax in enumerate(axes):
        j = i + 3 - ndim
        cols[f"bbox_{ax}0"] = moments.lo[:, j]
        cols[f"bbox_{ax}1"] = moments.hi[:, j] + 1
    for i, ax in enumerate(axes):
        j = i + 3 - ndim
        cols[f"centroid_{ax}"] = cen[:, j]
    for i, ax in enumerate(axes):
        j = i + 3 - ndim
        cols[f"centroid_{ax}_nm"] = cen[:, j] * sp3[j]
        cols[f"bbox_{ax}0_nm"] = moments.lo[:, j] * sp3[j]
        cols[f"bbox_{ax}1_nm"] = (moments.hi[:, j] + 1) * sp3[j]
    cols.update(morphology_table(moments, spacing=sp3, ndim=ndim))
    extra = pd.DataFrame(cols, index=base.index)
    return pd.concat([base, extra], axis=1)


def _resolve_classes(
    tab: OverlapTable, task: str, classes: Sequence[int] | None
) -> np.ndarray | None:
    if classes is not None:
        cls = np.unique(np.asarray(list(classes), dtype=np.uint64))
        if cls.size == 0:
            raise EmsegValueError("`classes` must list at least one class value; got [].")
        return cls
    if task != "semantic":
        return None
    values = np.union1d(tab.truth_ids, tab.pred_ids)
    if values[values != 0].size <= 1 or (
        np.unique(tab.truth_ids[tab.truth_ids != 0]).size <= 1
        and np.unique(tab.pred_ids[tab.pred_ids != 0]).size <= 1
    ):
        return None  # binary: background 0 and one foreground value per side
    if values.size > _MAX_CLASSES:
        raise EmsegValueError(
            f"`task='semantic'` found {values.size} distinct values: these look like instance "
            "labels, not classes. Use task='instance' or 'neuron', or list the classes with "
            "`classes=`."
        )
    return values[values != 0]


def evaluate(
    truth: Any,
    prediction: Any,
    *,
    task: Task = "all",
    classes: Sequence[int] | None = None,
    spacing: SpacingLike = None,
    truth_threshold: float | None = None,
    pred_threshold: float | None = None,
    probabilities: Any = None,
    scores: Mapping[int, float] | None = None,
    block_shape: int | Sequence[int] | None = None,
    n_workers: int = 2,
    scheduler: Any = None,
    progress: bool = True,
    objects: bool = True,
    geometric: bool = True,
    in_memory_limit: int = IN_MEMORY_LIMIT,
) -> EvaluationResult:
    """Every segmentation metric of a (truth, prediction) pair, exact on volumes of any size.

    One streaming pass over the blocks of both volumes (the blockwise
    engine's :func:`~emseg.blockwise.reduce_blocks`) computes the overlap
    table, the per-object moments and, with a probability map, the
    probability histograms; all add up exactly, so every table-based metric
    (semantic, Rand / VOI family, matching, AP, AJI, PQ) is identical to the
    in-memory result for any block shape, and memory is bounded by blocks
    (plus tables whose size is the number of distinct label pairs).

    Parameters
    ----------
    truth : path, (Z, Y, X) or (Y, X) array or LazyImage of int
        Ground truth; 0 = background / unlabelled. Any file ``open_image``
        reads. Floats need `truth_threshold`.
    prediction : path, array or LazyImage, same shape
        Predicted labels or classes. A float map is a foreground probability
        in [0, 1]: its labels are ``prediction > pred_threshold`` (default
        0.5) and it also serves as `probabilities`.
    task : {"all", "semantic", "instance", "neuron"}, default "all"
        Which keys to compute (others are null with a note). ``semantic``:
        accuracy ... pixel_error, warping_error, hausdorff(95); ``neuron``:
        Rand / VOI family and ISBI scores; ``instance``: AP, AJI, PQ, F1 and
        per-object Hausdorff; ``all``: everything.
    classes : sequence of int, optional
        Class values of multi-class maps: gives ``per_class`` scores; the
        top-level semantic keys are then their **macro** average (classes
        whose score is NaN left out) and ``accuracy`` the overall fraction
        of correct voxels. Without `classes`, ``task="semantic"`` on maps with
        more than one foreground value uses every nonzero value; otherwise
        the inputs are binary: foreground = nonzero (e.g. 0/255 masks).
    spacing : float or sequence of float, optional
        Voxel size in nm (z-y-x); default the truth file's.
    truth_threshold, pred_threshold : float, optional
        Foreground = value > threshold (binarises the input).
    probabilities : path, array or LazyImage of float in [0, 1], optional
        Foreground (cell-interior) probability: gives ``pixel_error`` (ISBI
        2012, thresholds 0.0:1.0:0.1), precision / recall / Jaccard curves
        (0.00:1.00:0.01), and the ISBI 2012 V_rand / V_info sweep (as the
        boundary map ``1 - p``) when the volume fits `in_memory_limit`.
    scores : mapping of int to float, optional
        Confidence of every predicted object (label -> score): gives
        ``coco_map``, ``coco_ap50``, ``coco_ap75`` (COCO protocol) and ranks
        the predictions of ``mitoem_ap75`` (default: by object size). See
        :func:`read_scores` for the CSV / JSON files of the CLI.
    block_shape : int or sequence of int, optional
        Blocks of the streaming pass; default from the truth's chunks (about
        128³ voxels).
    n_workers, scheduler, progress
        As for :func:`emseg.blockwise.reduce_blocks` (``scheduler`` may be a
        ``distributed`` address).
    objects : bool, default True
        Also compute per-object moments: the object tables (bounding boxes,
        centroids, splits / merges), morphology comparison and Hausdorff
        boxes. Without them ``hausdorff`` needs the whole volume in memory.
    geometric : bool, default True
        Compute the neighbourhood-based scores (see
        :mod:`emseg.evaluation._geometric` for how each scales).
    in_memory_limit : int, default 2**26
        Largest number of voxels read at once for a geometric score (a whole
        volume for the ISBI sweep, an object pair's box for Hausdorff).

    Returns
    -------
    EvaluationResult
        ``metrics`` holds every key of the JSON schema (``docs/metrics.md``).

    Raises
    ------
    EmsegTypeError
        Float labels without a threshold, a non-float probability map.
    EmsegValueError
        Shapes differ, an unknown `task`, too many classes.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[1, 1, 0], [2, 2, 0]], np.uint8)
    >>> r = evaluate(t, t, task="neuron", progress=False)
    >>> r.metrics["voi_split"], r.metrics["adapted_rand_error_cremi"]
    (0.0, 0.0)
    """
    from emseg.blockwise import default_block_shape, reduce_blocks

    check_choice(task, TASKS, name="task")
    # plain TIFF stacks: read pages directly (same values, several times faster)
    t_img = page_reader(_open(truth, "truth", spacing))
    p_img = page_reader(_open(prediction, "prediction", spacing))
    if tuple(t_img.shape) != tuple(p_img.shape):
        raise EmsegValueError(
            f"`truth` and `prediction` must have the same shape; got {tuple(t_img.shape)} and "
            f"{tuple(p_img.shape)}."
        )
    _check_kind(t_img, "truth", truth_threshold, "truth_threshold")
    notes: dict[str, str] = {}
    prob_img = (
        None
        if probabilities is None
        else page_reader(_open(probabilities, "probabilities", spacing))
    )
    if np.dtype(p_img.dtype).kind == "f":
        if prob_img is None:
            prob_img = p_img
        if pred_threshold is None:
            pred_threshold = 0.5
            notes["prediction"] = "float prediction read as probability; labels = p > 0.5"
    _check_kind(p_img, "prediction", pred_threshold, "pred_threshold")
    if prob_img is not None:
        if np.dtype(prob_img.dtype).kind != "f":
            raise EmsegTypeError(
                f"`probabilities` must be floats in [0, 1]; got dtype {prob_img.dtype}. "
                "Scale it explicitly, e.g. divide 8-bit maps by 255."
            )
        if tuple(prob_img.shape) != tuple(t_img.shape):
            raise EmsegValueError(
                f"`probabilities` must have the shape of `truth` {tuple(t_img.shape)}; "
                f"got {tuple(prob_img.shape)}."
            )
    shape = tuple(int(s) for s in t_img.shape)
    ndim = len(shape)
    if spacing is None:
        spacing = getattr(t_img, "spacing", None)
    sp = parse_spacing(spacing, ndim)

    if block_shape is None:
        chunks = getattr(t_img, "chunks", None)
        if not isinstance(chunks, tuple) or not all(isinstance(c, int) for c in chunks):
            chunks = tuple(min(64 if ndim == 3 else 256, s) for s in shape)
        block_shape = default_block_shape(shape, chunks)
    from emseg.blockwise import Blocking

    blocking = Blocking(shape, block_shape)
    inputs = [t_img, p_img] + ([prob_img] if prob_img is not None else [])
    summary: VolumeSummary = reduce_blocks(
        summarise_block,
        inputs,
        merge=merge_summaries,
        block_shape=blocking.block_shape,
        pass_block=True,
        n_workers=n_workers,
        scheduler=scheduler,
        progress=progress,
        kwargs={
            "truth_threshold": truth_threshold,
            "pred_threshold": pred_threshold,
            "objects": objects,
        },
    )
    tab = summary.overlap
    wanted = set(_TASK_KEYS[task])
    metrics: dict[str, float | None] = dict.fromkeys(METRIC_KEYS)
    conventions = dict(CONVENTIONS)
    conventions["blockwise"] = (
        "tables (overlap, confusion, histograms, object moments) summed exactly over blocks "
        f"of {list(blocking.block_shape)} voxels"
    )

    # semantic
    per_class = None
    confusion = None
    cls = _resolve_classes(tab, task, classes) if "accuracy" in wanted else None
    if "accuracy" in wanted:
        if cls is None:
            confusion = _binary_confusion(tab)
            sem = semantic_metrics(confusion, average="binary")
            conventions["semantic_average"] = "binary: foreground = every nonzero value"
        else:
            values = np.union1d(np.union1d(tab.truth_ids, tab.pred_ids), cls)
            if values.size > _MAX_CLASSES:
                raise EmsegValueError(
                    f"the maps hold {values.size} distinct values, more than {_MAX_CLASSES} "
                    "classes; multi-class evaluation needs class maps (or task='instance')."
                )
            confusion = _class_confusion(tab, values)
            cs = class_scores(confusion)
            idx = np.searchsorted(values, cls)
            names = ("precision", "recall", "specificity", "f1", "jaccard", "conformity")
            per_class = {
                str(int(c)): {
                    out: float(getattr(cs, attr)[i])
                    for out, attr in zip(_SEM_NAMES, names, strict=True)
                }
                for c, i in zip(cls, idx, strict=True)
            }
            sem = {"accuracy": cs.accuracy}
            for out in _SEM_NAMES:
                vals = np.array([per_class[c][out] for c in per_class])
                vals = vals[~np.isnan(vals)]
                sem[out] = float(vals.mean()) if vals.size else math.nan
            conventions["semantic_average"] = (
                f"macro: unweighted mean over classes {[int(c) for c in cls]} (NaN left out); "
                "accuracy over all voxels; per_class holds each class one-vs-rest"
            )
        metrics.update({k: sem[k] for k in SEMANTIC_KEYS if k != "pixel_error"})
    histograms: dict[str, ProbabilityHistogram] = {}
    curves: dict[str, np.ndarray] = {}
    if summary.pixel_histogram is not None and summary.curve_histogram is not None:
        histograms = {"pixel": summary.pixel_histogram, "curve": summary.curve_histogram}
        if "pixel_error" in wanted:
            metrics["pixel_error"] = pixel_error(summary.pixel_histogram).pixel_error
        c = summary.curve_histogram.counts()
        with np.errstate(divide="ignore", invalid="ignore"):
            curves = {
                "thresholds": summary.curve_histogram.thresholds,
                "precision": c["tp"] / (c["tp"] + c["fp"]),
                "recall": c["tp"] / (c["tp"] + c["fn"]),
                "jaccard": jaccard_curve(summary.curve_histogram).jaccard,
            }
        conventions["jaccard_curve_area"] = jaccard_curve(summary.curve_histogram).area
    elif "pixel_error" in wanted:
        notes["pixel_error"] = "needs a probability map (probabilities= or a float prediction)"

    # neuron + instance: functions of the overlap table
    if wanted & set(NEURON_KEYS):
        metrics.update(neuron_metrics(tab))
    if wanted & set(INSTANCE_KEYS):
        metrics.update(instance_metrics(tab, scores=scores))
        if scores is None:
            for k in ("coco_map", "coco_ap50", "coco_ap75"):
                metrics[k] = None
                notes[k] = "needs a score per predicted object (scores= / --scores FILE)"
            notes["mitoem_ap75"] = "no scores given: predictions ranked by size (as MitoEM)"

    # objects
    t_frame = p_frame = morph = None
    if objects and summary.truth is not None and summary.prediction is not None:
        from emseg.evaluation._morphology import compare_distributions

        ot = object_tables(tab)
        t_frame = _object_frame(ot.truth, summary.truth, sp, ndim)
        p_frame = _object_frame(ot.prediction, summary.prediction, sp, ndim)
        morph = compare_distributions(t_frame, p_frame)

    # geometric
    hd_pairs = None
    if geometric:
        hd_pairs = _geometric(
            t_img, p_img, prob_img, tab=tab, summary=summary, wanted=wanted, metrics=metrics,
            notes=notes, conventions=conventions, spacing=sp, classes=cls,
            truth_threshold=truth_threshold, pred_threshold=pred_threshold,
            limit=int(in_memory_limit),
        )  # fmt: skip
    else:
        for k in ("warping_error", "hausdorff", "hausdorff95"):
            if k in wanted:
                notes[k] = "geometric scores not requested (geometric=False)"
    for k in METRIC_KEYS:
        if k not in wanted:
            metrics[k] = None
            notes.setdefault(k, f"not part of task {task!r}")
    return EvaluationResult(
        metrics, conventions, notes, per_class, task, shape, sp, tuple(blocking.block_shape),
        tab, confusion, histograms, curves, t_frame, p_frame, morph, hd_pairs,
    )  # fmt: skip


def _geometric(
    t_img: Any,
    p_img: Any,
    prob_img: Any,
    *,
    tab: OverlapTable,
    summary: VolumeSummary,
    wanted: set[str],
    metrics: dict[str, float | None],
    notes: dict[str, str],
    conventions: dict[str, Any],
    spacing: tuple[float, ...],
    classes: np.ndarray | None,
    truth_threshold: float | None,
    pred_threshold: float | None,
    limit: int,
) -> dict[str, Any] | None:
    from emseg.evaluation._geometric import hausdorff_pairs, isbi_sweep, streamed_warping_error
    from emseg.evaluation._moments import object_moments

    n_vox = int(np.prod(t_img.shape))
    if "warping_error" in wanted:
        metrics["warping_error"] = streamed_warping_error(
            t_img, p_img, probabilities=prob_img,
            truth_threshold=truth_threshold, pred_threshold=pred_threshold,
        )  # fmt: skip
        notes["warping_error"] = "per 2D section, one section in memory at a time (exact)"
    if prob_img is not None and "isbi_vrand" in wanted:
        if n_vox <= limit:
            metrics["isbi_vrand"], metrics["isbi_vinfo"] = isbi_sweep(
                t_img, prob_img, truth_threshold=truth_threshold
            )
            notes["isbi_vrand"] = notes["isbi_vinfo"] = (
                "ISBI 2012 sweep of the probability map (thresholds 0.0:1.0:0.1, border thinning)"
            )
            conventions["isbi_vrand"] = conventions["isbi_challenge"]
        else:
            notes["isbi_vrand"] = notes["isbi_vinfo"] = (
                f"from the overlap table of the label volumes: the ISBI threshold sweep needs the "
                f"whole volume ({n_vox} voxels > in_memory_limit {limit})"
            )
    if "hausdorff" not in wanted:
        return None
    t_ids = tab.truth_ids[tab.truth_ids != 0]
    p_ids = tab.pred_ids[tab.pred_ids != 0]
    t_u, p_u = np.unique(t_ids), np.unique(p_ids)
    if classes is not None:
        pairs = [(int(c), int(c)) for c in classes]
        how = "per class id (same id on both sides), mean over classes"
    elif t_u.size <= 1 and p_u.size <= 1:
        pairs = [(int(t_u[0]) if t_u.size else 0, int(p_u[0]) if p_u.size else 0)]
        how = "binary masks: foreground vs foreground"
    else:
        m = match_instances(tab, threshold=0.5)
        pairs = list(zip(m.truth_ids.tolist(), m.pred_ids.tolist(), strict=True))
        how = "per matched object pair (IoU >= 0.5), mean over pairs"
    tm, pm = summary.truth, summary.prediction
    if tm is None or pm is None:
        if n_vox > limit:
            notes["hausdorff"] = notes["hausdorff95"] = (
                f"skipped: objects=False and the volume ({n_vox} voxels) exceeds in_memory_limit"
            )
            return None
        tm = object_moments(_labels(t_img, truth_threshold))
        pm = object_moments(_labels(p_img, pred_threshold))
    if pairs == [(0, 0)]:
        metrics["hausdorff"] = metrics["hausdorff95"] = math.nan
        notes["hausdorff"] = notes["hausdorff95"] = "both masks empty"
        return None
    res = hausdorff_pairs(
        t_img, p_img, pairs, truth_moments=tm, pred_moments=pm, spacing=spacing,
        truth_threshold=truth_threshold, pred_threshold=pred_threshold, limit=limit,
    )  # fmt: skip
    metrics["hausdorff"], metrics["hausdorff95"] = res["mean_hausdorff"], res["mean_hausdorff95"]
    msg = f"{how}; each pair within the union of its bounding boxes + 1 voxel"
    if res["skipped"]:
        msg += f"; {res['skipped']} pairs skipped (box > {limit} voxels)"
    if not pairs:
        msg += "; no pair to measure"
    notes["hausdorff"] = notes["hausdorff95"] = msg
    return res


def _labels(img: Any, threshold: float | None) -> np.ndarray:
    from emseg.evaluation._tables import prepare_labels

    return prepare_labels(np.asarray(img[...]), threshold)
