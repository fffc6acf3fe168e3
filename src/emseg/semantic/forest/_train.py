"""Training a random-forest pixel classifier from sparse scribbles (or dense labels).

Samples: every labelled voxel (labels 1..K; 0 = unlabelled) is a candidate;
per class at most `max_samples_per_class` are drawn at random (seeded), and
the forest weights classes inversely to their sample counts
(``class_weight="balanced"``). Features are computed block by block, only
for blocks that hold a selected sample (each block's read region grown by the
halo the features need), so an image larger than memory with scribbles on a
few sections costs only those sections.

Autocontext (``stages >= 2``): stage k sees the filter bank plus the
Gaussian-smoothed probabilities of stage k - 1. To keep stage k from learning
on over-confident probabilities of pixels that stage k - 1 was trained on,
its training features are **out of fold**: the scribbles are split into two
folds by connected stroke (each class's strokes are dealt to the folds so that
both hold about half of its samples; a class whose samples lie nearly all in
one stroke, as with dense labels, is cut into two halves along z), a helper chain of stages is
trained on each fold, and the samples of one fold get their context from the
chain trained on the other fold. The returned model's stages are trained on
all samples. A block's filter bank is kept from one stage to the next when
the next stage reads the same region (``feature_cache_bytes``), so it is
computed once instead of once per stage; the model is the same.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from emseg._checks import check_choice, check_label_dtype, check_same_shape
from emseg.blockwise import Blocking, as_input, input_spacing
from emseg.errors import EmsegValueError
from emseg.features import FeatureSpec, check_image, compute_features, feature_halo, feature_spec
from emseg.semantic.forest._model import (
    CONTEXT_SCALES_PX,
    PixelClassifier,
    chain_probabilities,
    context_features,
    context_halo,
)
from emseg.semantic.forest._packed import PackedForest

log = logging.getLogger(__name__)


def _fit(x: np.ndarray, y: np.ndarray, *, params: dict[str, Any], seed: int) -> PackedForest:
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(random_state=seed, **params)
    rf.fit(x, y)
    return PackedForest.from_sklearn(rf)


def _select_samples(
    labels: np.ndarray, n_classes: int, max_per_class: int | None, rng: np.random.Generator
) -> np.ndarray:
    """Flat indices of the training voxels (sorted), at most `max_per_class` per class."""
    flat = labels.reshape(-1)
    chosen = []
    for c in range(1, n_classes + 1):
        idx = np.flatnonzero(flat == c)
        if max_per_class is not None and idx.size > max_per_class:
            idx = rng.choice(idx, size=max_per_class, replace=False)
        chosen.append(idx)
    return np.sort(np.concatenate(chosen))


def _folds(
    labels: np.ndarray,
    index: np.ndarray,
    n_classes: int,
    rng: np.random.Generator,
    *,
    scheme: str = "strokes",
) -> np.ndarray:
    """Fold (0/1) of each selected voxel, balanced within each class.

    ``scheme="halves"``: each class's samples are cut into two halves in C
    order (z first), i.e. the first and the second half of the volume.

    A class's connected strokes are dealt to the two folds (largest first, each
    to the fold with fewer samples; ties broken at random). When that leaves
    one fold with less than a quarter of the class's samples (e.g. dense labels,
    where one component holds almost everything), the class's samples are cut
    into two halves in C order (z first) instead.
    """
    flat = labels.reshape(-1)
    fold = np.zeros(index.size, dtype=np.int8)
    cls = flat[index]
    for c in range(1, n_classes + 1):
        sel = np.flatnonzero(cls == c)
        if scheme == "halves":
            fold[sel] = (np.arange(sel.size) >= sel.size // 2).astype(np.int8)
            continue
        comp, n = ndimage.label(labels == c)
        ids = comp.reshape(-1)[index[sel]]
        sizes = np.bincount(ids, minlength=n + 1)
        order = np.argsort(-sizes[1:] - rng.random(n), kind="stable") + 1
        totals = [0, 0]
        of_comp = np.zeros(n + 1, dtype=np.int8)
        for i in order:
            if sizes[i] == 0:
                continue
            f = 0 if totals[0] <= totals[1] else 1
            of_comp[i] = f
            totals[f] += int(sizes[i])
        if min(totals) >= 0.25 * sel.size:
            fold[sel] = of_comp[ids]
        else:  # one dominant stroke: first half / second half in C order
            k = np.arange(sel.size)
            fold[sel] = (k >= sel.size // 2).astype(np.int8)
    return fold


def _blocks_with_samples(
    blocking: Blocking, index: np.ndarray, shape: tuple[int, ...]
) -> dict[int, np.ndarray]:
    """Map block id -> positions (into `index`) of the selected voxels it writes."""
    coords = np.unravel_index(index, shape)
    pos = [c // b for c, b in zip(coords, blocking.block_shape, strict=True)]
    bid = np.ravel_multi_index(pos, blocking.grid_shape)
    order = np.argsort(bid, kind="stable")
    uniq, starts = np.unique(bid[order], return_index=True)
    groups = np.split(order, starts[1:])
    return {int(u): g for u, g in zip(uniq, groups, strict=True)}


def train_forest(
    image: Any,
    labels: Any,
    *,
    spacing: Any = None,
    spec: FeatureSpec | None = None,
    class_names: Sequence[str] | None = None,
    stages: int = 1,
    context_scales: Sequence[float] | None = None,
    autocontext_folds: Literal["strokes", "halves"] = "strokes",
    n_estimators: int = 100,
    max_depth: int | None = 20,
    min_samples_leaf: int = 1,
    max_samples_per_class: int | None = 50_000,
    balance: bool = True,
    block_shape: int | Sequence[int] | None = None,
    seed: int = 0,
    n_jobs: int = 2,
    feature_cache_bytes: int = 2**31,
) -> PixelClassifier:
    """Train a random-forest pixel classifier from scribbles or dense labels.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) array, zarr array or LazyImage
        Grey levels (no rescaling); read block by block.
    labels : array of int, same shape
        0 = unlabelled, 1..K = classes (every class needs at least one voxel).
    spacing : sequence of float, optional
        Voxel size in nm; the image's own (LazyImage) or 1.0 by default.
        Stored in the model: prediction refuses other spacings unless asked
        to rescale.
    spec : FeatureSpec, optional
        Filter bank; default :func:`emseg.features.feature_spec` (ilastik-like
        scales relative to the xy spacing, all features, 3D).
    class_names : sequence of str, optional
        Names of classes 1..K; default ``"class1"..``.
    stages : {1, 2, 3}, default 1
        Number of autocontext stages (see module docstring).
    context_scales : sequence of float, optional
        Autocontext smoothing sigmas in nm; default (1, 3.5, 10) xy pixels.
    autocontext_folds : {"strokes", "halves"}, default "strokes"
        How the out-of-fold split of autocontext training is made: connected
        strokes dealt to two folds, or each class's samples cut into the first
        and second half of the volume along z. Use ``"halves"`` for a sparse
        random subsample of dense labels, where every sample is its own
        "stroke" and a random split would put each sample's neighbours in the
        other fold (over-confident context).
    n_estimators, max_depth, min_samples_leaf : int
        Of scikit-learn's ``RandomForestClassifier`` (``max_features="sqrt"``).
    max_samples_per_class : int or None, default 50000
        Random subsample of each class's labelled voxels (None: all).
    balance : bool, default True
        ``class_weight="balanced"``.
    block_shape : int or tuple of int, optional
        Blocks in which features are computed (only blocks holding samples);
        default 64 per axis (a whole section per block in 2D mode).
    seed : int, default 0
        Sampling, folds and forests.
    n_jobs : int, default 2
        Threads for scikit-learn and for feature / tree evaluation.
    feature_cache_bytes : int, default 2**31 (2 GiB)
        Memory for keeping a block's filter bank from one autocontext stage
        to the next instead of recomputing it. A block's stack is kept only
        when the next stage reads exactly the same region (a block that
        spans the image, or a whole section in 2D mode), so the model is the
        same with or without the cache. 0 disables it.

    Returns
    -------
    PixelClassifier

    Raises
    ------
    EmsegValueError
        Labels of another shape, a class without any labelled voxel, NaN in
        the image, `class_names` of the wrong length, bad `stages`.
    EmsegTypeError
        Float labels.
    """
    img = as_input(image)
    lab = np.asarray(labels)
    check_label_dtype(lab, name="labels")
    check_same_shape(img, lab, names=("image", "labels"))
    if lab.ndim not in (2, 3):
        raise EmsegValueError(f"`image` must be 2D or 3D; got shape {lab.shape}.")
    if isinstance(img, np.ndarray):
        check_image(img)
    sp = input_spacing(img, spacing, lab.ndim)
    if spec is None:
        spec = feature_spec(spacing=sp)
    if stages not in (1, 2, 3):
        raise EmsegValueError(f"`stages` must be 1, 2 or 3 (autocontext); got {stages!r}.")
    if lab.size and int(lab.min()) < 0:
        raise EmsegValueError("`labels` must be >= 0 (0 = unlabelled, 1..K = classes).")
    counts = np.bincount(lab.reshape(-1).astype(np.int64))
    n_classes = len(class_names) if class_names is not None else len(counts) - 1
    if n_classes < 2:
        raise EmsegValueError(
            f"`labels` must hold at least two classes (1 and 2; 0 = unlabelled); found classes "
            f"{sorted(int(c) for c in np.flatnonzero(counts[1:]) + 1)}."
        )
    if len(counts) - 1 > n_classes:
        raise EmsegValueError(
            f"`labels` holds class {len(counts) - 1} but `class_names` names only {n_classes}."
        )
    counts = np.pad(counts, (0, n_classes + 1 - len(counts)))
    missing = [c for c in range(1, n_classes + 1) if counts[c] == 0]
    if missing:
        raise EmsegValueError(
            f"class(es) {missing} have no labelled voxels (no strokes) in `labels`; draw at least "
            f"one stroke per class, or renumber the classes 1..K. Voxels per class: "
            f"{ {c: int(counts[c]) for c in range(1, n_classes + 1)} }."
        )
    names = (
        tuple(class_names)
        if class_names is not None
        else tuple(f"class{c}" for c in range(1, n_classes + 1))
    )
    ctx_scales = (
        tuple(float(s) for s in context_scales)
        if context_scales is not None
        else tuple(p * sp[-1] for p in CONTEXT_SCALES_PX)
    )
    rng = np.random.default_rng(seed)
    index = _select_samples(lab, n_classes, max_samples_per_class, rng)
    y = lab.reshape(-1)[index].astype(np.int64)
    check_choice(autocontext_folds, ("strokes", "halves"), name="autocontext_folds")
    fold = (
        _folds(lab, index, n_classes, rng, scheme=autocontext_folds)
        if stages > 1
        else np.zeros(index.size, np.int8)
    )
    if block_shape is None:
        block_shape = (1, *lab.shape[1:]) if (lab.ndim == 3 and spec.mode == "2d") else 64
    rf_params = {
        "n_estimators": int(n_estimators),
        "max_depth": max_depth,
        "min_samples_leaf": int(min_samples_leaf),
        "max_features": "sqrt",
        "class_weight": "balanced" if balance else None,
        "n_jobs": int(n_jobs),
    }
    helper_params = {**rf_params, "n_estimators": max(10, int(n_estimators) // 2)}
    fh = np.asarray(feature_halo(spec, sp))
    ch = context_halo(ctx_scales, sp, spec)
    final: list[PackedForest] = []
    helpers: list[list[PackedForest]] = [[], []]
    blockings = [
        Blocking(lab.shape, block_shape, halo=tuple(int(v) for v in fh + k * ch))
        for k in range(stages)
    ]
    cache: dict[int, np.ndarray] = {}  # block id -> base features on its read region
    cached_bytes = 0
    n_computed = n_reused = 0
    for k in range(stages):
        blocking = blockings[k]
        groups = _blocks_with_samples(blocking, index, lab.shape)
        x_final: np.ndarray | None = None
        x_helper: list[np.ndarray | None] = [None, None]
        for bid, members in groups.items():
            block = blocking[bid]
            base_or_none = cache.pop(bid, None)
            if base_or_none is None:
                data = check_image(np.asarray(img[block.read_roi.to_slices()]))
                base = compute_features(data, spacing=sp, spec=spec, n_threads=n_jobs)
                n_computed += 1
            else:
                base = base_or_none
                cached_bytes -= base.nbytes
                n_reused += 1
            if (
                k + 1 < stages
                and blockings[k + 1][bid].read_roi == block.read_roi
                and cached_bytes + base.nbytes <= feature_cache_bytes
            ):
                cache[bid] = base
                cached_bytes += base.nbytes
            local = np.unravel_index(index[members], lab.shape)
            local = tuple(c - b for c, b in zip(local, block.read_roi.begin, strict=True))
            fb = base[(slice(None), *local)].T
            if k == 0:
                rows = [fb, fb, fb]  # final and helper chains see the same stage-1 features
            else:
                ctx = []
                for f in (0, 1):
                    p = chain_probabilities(
                        base,
                        helpers[f],
                        context_scales=ctx_scales,
                        spacing=sp,
                        spec=spec,
                        n_threads=n_jobs,
                    )
                    c = context_features(p, scales=ctx_scales, spacing=sp, spec=spec)
                    ctx.append(c[(slice(None), *local)].T)
                own = fold[members]
                # out of fold for the final model, in fold for the helper chains
                oof = np.where((own == 0)[:, None], ctx[1], ctx[0])
                rows = [
                    np.concatenate([fb, oof], axis=1),
                    np.concatenate([fb, ctx[0]], axis=1),
                    np.concatenate([fb, ctx[1]], axis=1),
                ]
            if x_final is None:
                n, nf = index.size, rows[0].shape[1]
                x_final = np.empty((n, nf), np.float32)
                if k + 1 < stages:
                    x_helper = [np.empty((n, nf), np.float32) for _ in (0, 1)]
            x_final[members] = rows[0]
            for f in (0, 1):
                xh = x_helper[f]
                if xh is not None:
                    xh[members] = rows[1 + f]
        assert x_final is not None
        log.info("stage %d: training on %d samples x %d features", k + 1, *x_final.shape)
        final.append(_fit(x_final, y, params=rf_params, seed=seed + k))
        if k + 1 < stages:
            for f in (0, 1):
                sel = fold == f
                xh = x_helper[f]
                assert xh is not None
                helpers[f].append(
                    _fit(xh[sel], y[sel], params=helper_params, seed=seed + 100 + 10 * f + k)
                )
    log.info(
        "filter bank computed for %d block(s), reused across stages for %d", n_computed, n_reused
    )
    from emseg import __version__

    try:
        import sklearn

        skv = sklearn.__version__
    except ImportError:  # pragma: no cover
        skv = "unknown"
    provenance = {
        "trained": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "emseg": __version__,
        "scikit-learn": skv,
        "image_shape": list(lab.shape),
        "image": str(getattr(image, "path", "") or getattr(image, "name", "") or "array"),
        "labelled_voxels": {names[c - 1]: int(counts[c]) for c in range(1, n_classes + 1)},
        "samples": {names[c - 1]: int((y == c).sum()) for c in range(1, n_classes + 1)},
        "forest": {**rf_params, "seed": int(seed)},
        "stages": int(stages),
        "autocontext_training": (
            f"out-of-fold (2 folds by {'stroke' if autocontext_folds == 'strokes' else 'z half'})"
            if stages > 1
            else "none"
        ),
    }
    return PixelClassifier(
        spec=spec,
        stages=tuple(final),
        class_names=names,
        spacing=sp,
        context_scales=ctx_scales if stages > 1 else (),
        provenance=provenance,
    )
