"""Simulated interactive annotation: the ilastik loop, played back from dense labels.

A user of ilastik paints a few strokes per class, looks at the prediction and
paints corrections where it is wrong, a few rounds. With dense labels of a
training region the loop can be simulated: :func:`sample_corrections` draws
new training voxels from the voxels a prediction gets wrong (per true class,
optionally only at least `margin` nm away from any class boundary, where a
user would not paint and where dense labels are least certain), and
:func:`simulate_annotation` repeats train -> predict the training image ->
add corrections. The label budget (voxels per class) is explicit and recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from emseg._checks import check_label_dtype, check_same_shape, parse_spacing
from emseg.errors import EmsegValueError
from emseg.semantic.forest._model import PixelClassifier

log = logging.getLogger(__name__)


def boundary_distance(truth: np.ndarray, *, spacing: Any = None) -> np.ndarray:
    """Distance (nm) from each voxel to the nearest voxel of another label, float64.

    Parameters
    ----------
    truth : (Z, Y, X) or (Y, X) ndarray of int
        Dense labels (0 counts as a label of its own).
    spacing : sequence of float, optional
        Voxel size in nm (default 1 per axis).

    Returns
    -------
    ndarray of float64, same shape
        ``inf`` where the image holds a single label.
    """
    sp = parse_spacing(spacing, truth.ndim)
    out = np.full(truth.shape, np.inf)
    for c in np.unique(truth):
        inside = truth == c
        if inside.all():
            break
        d = ndimage.distance_transform_edt(inside, sampling=sp)
        out[inside] = d[inside]
    return out


def sample_corrections(
    truth: np.ndarray,
    prediction: np.ndarray,
    *,
    n_per_class: int,
    labels: np.ndarray | None = None,
    margin: float = 0.0,
    spacing: Any = None,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """Add training voxels where `prediction` is wrong: one simulated round of corrections.

    Parameters
    ----------
    truth : (Z, Y, X) or (Y, X) ndarray of int
        Dense reference labels: 1..K = classes, 0 = unknown (never sampled).
    prediction : ndarray of int, same shape
        Predicted class map (1..K), e.g. :meth:`PixelClassifier.predict`.
    n_per_class : int
        At most this many new voxels per true class, drawn at random among
        that class's misclassified voxels (all of them when fewer).
    labels : ndarray of int, same shape, optional
        The training labels so far (0 = unlabelled); voxels labelled there are
        not drawn again. Default: none.
    margin : float, default 0
        Draw only voxels more than `margin` nm from any voxel of another label
        in `truth` (a user corrects clear mistakes, not the exact edge; dense
        labels are least certain there). 0: no restriction.
    spacing : sequence of float, optional
        Voxel size in nm, for `margin` (default 1 per axis).
    seed : int or numpy Generator, default 0
        Random draws.

    Returns
    -------
    ndarray of uint8 (uint16 / uint32 for more classes), same shape
        `labels` plus the new voxels, each set to its class in `truth`.

    Raises
    ------
    EmsegValueError
        Shapes differ, `n_per_class` or `margin` negative.
    EmsegTypeError
        Float labels.

    Examples
    --------
    >>> truth = np.array([[1, 1, 1, 2, 2, 2]])
    >>> pred = np.array([[1, 2, 2, 2, 2, 1]])
    >>> sample_corrections(truth, pred, n_per_class=5)
    array([[0, 1, 1, 0, 0, 2]], dtype=uint8)
    """
    t = np.asarray(truth)
    p = np.asarray(prediction)
    check_label_dtype(t, name="truth")
    check_label_dtype(p, name="prediction")
    check_same_shape(t, p, names=("truth", "prediction"))
    if labels is not None:
        check_label_dtype(np.asarray(labels), name="labels")
        check_same_shape(t, np.asarray(labels), names=("truth", "labels"))
    if n_per_class < 0:
        raise EmsegValueError(f"`n_per_class` must be >= 0; got {n_per_class!r}.")
    if not np.isfinite(margin) or margin < 0:
        raise EmsegValueError(f"`margin` must be a distance >= 0 in nm; got {margin!r}.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n_classes = int(t.max(initial=0))
    dtype = np.uint8 if n_classes < 256 else (np.uint16 if n_classes < 65536 else np.uint32)
    out = (
        np.zeros(t.shape, dtype)
        if labels is None
        else np.asarray(labels).astype(np.result_type(dtype, np.asarray(labels).dtype))
    )
    wrong = (t > 0) & (p != t) & (out == 0)
    if margin > 0:
        wrong &= boundary_distance(t, spacing=spacing) > margin
    flat_t = t.reshape(-1)
    flat_out = out.reshape(-1)
    cand = np.flatnonzero(wrong.reshape(-1))
    for c in range(1, n_classes + 1):
        idx = cand[flat_t[cand] == c]
        if idx.size > n_per_class:
            idx = rng.choice(idx, size=n_per_class, replace=False)
        flat_out[idx] = c
    return out


@dataclass(frozen=True)
class AnnotationRound:
    """One round of :func:`simulate_annotation`.

    Attributes
    ----------
    round : int
        0 = the initial random sample, 1.. = correction rounds.
    labelled : dict of str to int
        Training voxels per class (class name -> count) the round's model saw.
    error_rate : float
        Fraction of the known (``truth > 0``) training voxels that the round's
        model misclassifies.
    """

    round: int
    labelled: dict[str, int]
    error_rate: float


@dataclass(frozen=True, eq=False)
class AnnotationResult:
    """Outcome of :func:`simulate_annotation`.

    Attributes
    ----------
    model : PixelClassifier
        The model trained on the final labels.
    labels : ndarray of uint
        The final sparse training labels (0 = unlabelled, 1..K).
    rounds : tuple of AnnotationRound
        The history, one entry per trained model.
    """

    model: PixelClassifier
    labels: np.ndarray
    rounds: tuple[AnnotationRound, ...]


def simulate_annotation(
    image: Any,
    truth: np.ndarray,
    *,
    spacing: Any = None,
    initial_per_class: int = 2_000,
    corrections_per_class: int = 2_000,
    rounds: int = 3,
    margin: float = 0.0,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    **train_options: Any,
) -> AnnotationResult:
    """Train a forest the ilastik way on a labelled region: sparse start, then corrections.

    Round 0 labels `initial_per_class` random voxels of each class of `truth`;
    every later round trains :func:`train_forest` on the labels so far,
    predicts the whole training `image` in memory and adds up to
    `corrections_per_class` voxels per class where that prediction is wrong
    (:func:`sample_corrections`). The last model is trained on all labels.
    Label budget: at most ``initial_per_class + rounds * corrections_per_class``
    voxels per class. Use it to bootstrap a classifier from dense labels with
    far fewer samples, or to measure how an annotator's corrections help.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) ndarray
        The training image (read whole; predicted once per round).
    truth : ndarray of int, same shape
        Dense labels: 1..K = classes, 0 = unknown (never sampled).
    spacing : sequence of float, optional
        Voxel size in nm (default: the image's own, else 1 per axis).
    initial_per_class, corrections_per_class : int
        Voxels per class drawn at random at the start / from the errors of
        each round.
    rounds : int, default 3
        Correction rounds (0: just the initial random sample).
    margin : float, default 0
        See :func:`sample_corrections` (nm).
    class_names : sequence of str, optional
        Passed to :func:`train_forest`.
    seed : int, default 0
        Sampling and forests.
    **train_options
        Further keyword arguments of :func:`train_forest` (``spec``,
        ``stages``, ``n_estimators``, ``n_jobs`` ...); ``max_samples_per_class``
        is set to None (every drawn voxel is used).

    Returns
    -------
    AnnotationResult
        Final model, final labels and the per-round history.

    Raises
    ------
    EmsegValueError
        Shapes differ, a class of `truth` has no voxel, negative counts.
    """
    from emseg.semantic.forest._train import train_forest

    t = np.asarray(truth)
    check_label_dtype(t, name="truth")
    img = np.asarray(image)
    check_same_shape(img, t, names=("image", "truth"))
    if spacing is None:
        spacing = getattr(image, "spacing", None)
    sp = parse_spacing(spacing, t.ndim)
    for name, v in (
        ("initial_per_class", initial_per_class),
        ("corrections_per_class", corrections_per_class),
        ("rounds", rounds),
    ):
        if int(v) < 0:
            raise EmsegValueError(f"`{name}` must be >= 0; got {v!r}.")
    if initial_per_class < 1:
        raise EmsegValueError(
            f"`initial_per_class` must be >= 1 (every class needs a stroke); "
            f"got {initial_per_class!r}."
        )
    rng = np.random.default_rng(seed)
    n_classes = int(t.max(initial=0))
    flat_t = t.reshape(-1)
    labels = np.zeros(t.shape, np.uint8 if n_classes < 256 else np.uint32)
    flat = labels.reshape(-1)
    for c in range(1, n_classes + 1):
        idx = np.flatnonzero(flat_t == c)
        if idx.size == 0:
            raise EmsegValueError(
                f"`truth` has no voxel of class {c}; classes must be numbered 1..K without gaps."
            )
        flat[rng.choice(idx, size=min(initial_per_class, idx.size), replace=False)] = c
    options = {**train_options, "max_samples_per_class": None}
    known = t > 0
    history = []
    for r in range(rounds + 1):
        model = train_forest(
            img, labels, spacing=sp, class_names=class_names, seed=seed + r, **options
        )
        counts = np.bincount(flat, minlength=n_classes + 1)
        labelled = {model.class_names[c - 1]: int(counts[c]) for c in range(1, n_classes + 1)}
        pred = model.predict(img, spacing=sp, n_threads=int(options.get("n_jobs", 2)))
        err = float(((pred != t) & known).sum() / max(int(known.sum()), 1))
        history.append(AnnotationRound(r, labelled, err))
        log.info("annotation round %d: %s labelled, training error %.4f", r, labelled, err)
        if r == rounds:
            break
        labels = sample_corrections(
            t,
            pred,
            n_per_class=corrections_per_class,
            labels=labels,
            margin=margin,
            spacing=sp,
            seed=rng,
        )
        flat = labels.reshape(-1)
    return AnnotationResult(model=model, labels=labels, rounds=tuple(history))
