"""The trained pixel classifier: feature recipe, forest stages, classes, spacing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from emseg._checks import parse_spacing
from emseg.errors import EmsegValueError
from emseg.features import FeatureSpec, check_image, compute_features, feature_halo, n_features
from emseg.features._filters import _filtered_axes
from emseg.semantic.forest._packed import PackedForest

#: Default autocontext smoothing of the previous stage's probabilities, in xy pixels.
CONTEXT_SCALES_PX: tuple[float, ...] = (1.0, 3.5, 10.0)

CONTEXT_TRUNCATE = 4.0


def context_halo(
    scales: tuple[float, ...], spacing: tuple[float, ...], spec: FeatureSpec
) -> np.ndarray:
    """Kernel radius (voxels per axis) of the context smoothing."""
    filtered = _filtered_axes(spec, len(spacing))
    halo = np.zeros(len(spacing), dtype=int)
    for s in scales:
        r = [
            int(CONTEXT_TRUNCATE * s / sp + 0.5) if f else 0
            for sp, f in zip(spacing, filtered, strict=True)
        ]
        halo = np.maximum(halo, r)
    return halo


def context_features(
    probabilities: np.ndarray,
    *,
    scales: tuple[float, ...],
    spacing: tuple[float, ...],
    spec: FeatureSpec,
) -> np.ndarray:
    """Gaussian-smoothed class probabilities: (C * len(scales), ...) float32, class-major."""
    filtered = _filtered_axes(spec, probabilities.ndim - 1)
    out = np.empty((probabilities.shape[0] * len(scales), *probabilities.shape[1:]), np.float32)
    k = 0
    for c in range(probabilities.shape[0]):
        for s in scales:
            sig = tuple(s / sp if f else 0.0 for sp, f in zip(spacing, filtered, strict=True))
            ndimage.gaussian_filter(
                probabilities[c], sig, truncate=CONTEXT_TRUNCATE, mode="reflect", output=out[k]
            )
            k += 1
    return out


def as_samples(stack: np.ndarray) -> np.ndarray:
    """(F, *S) stack -> (N, F) C-contiguous float32 samples."""
    return np.ascontiguousarray(stack.reshape(stack.shape[0], -1).T, dtype=np.float32)


def chain_probabilities(
    base: np.ndarray,
    stages: tuple[PackedForest, ...] | list[PackedForest],
    *,
    context_scales: tuple[float, ...],
    spacing: tuple[float, ...],
    spec: FeatureSpec,
    n_threads: int = 1,
) -> np.ndarray:
    """Run forest stages over a region whose base features are `base` (F, *S).

    Returns (C, *S) float32 probabilities of the last stage. Exact wherever
    `base` is exact and the region extends ``(len(stages) - 1)`` context
    halos beyond.
    """
    shape = base.shape[1:]
    probs: np.ndarray | None = None
    for stage in stages:
        if probs is None:
            feats = base
        else:
            ctx = context_features(probs, scales=context_scales, spacing=spacing, spec=spec)
            feats = np.concatenate([base, ctx], axis=0)
        p = stage.predict_proba(as_samples(feats), n_threads=n_threads)
        probs = np.ascontiguousarray(p.T.reshape(p.shape[1], *shape), dtype=np.float32)
    assert probs is not None
    return probs


@dataclass(frozen=True, eq=False)
class PixelClassifier:
    """A trained random-forest pixel classifier (one or more autocontext stages).

    Attributes
    ----------
    spec : FeatureSpec
        The filter bank (scales in nm).
    stages : tuple of PackedForest
        Stage 1 sees the filter bank; stage k > 1 also sees the Gaussian
        smoothed probabilities of stage k - 1 at `context_scales`.
    class_names : tuple of str
        Name of class 1..K (probability channel 0..K-1).
    spacing : tuple of float
        Voxel size (nm) of the training image.
    context_scales : tuple of float
        Autocontext smoothing sigmas in nm.
    provenance : dict
        How the model was trained (data shapes, samples per class, parameters,
        versions, date).
    """

    spec: FeatureSpec
    stages: tuple[PackedForest, ...]
    class_names: tuple[str, ...]
    spacing: tuple[float, ...]
    context_scales: tuple[float, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    def halo(self, spacing: tuple[float, ...] | None = None) -> tuple[int, ...]:
        """Context (voxels per axis) one block needs for an exact prediction at `spacing`."""
        sp = self.spacing if spacing is None else spacing
        h = np.asarray(feature_halo(self.spec, sp)) + (len(self.stages) - 1) * context_halo(
            self.context_scales, sp, self.spec
        )
        return tuple(int(v) for v in h)

    def check_spacing(self, spacing: Any, ndim: int, *, rescale: bool = False) -> tuple[float, ...]:
        """The spacing to compute features at; refuse a different one unless `rescale`.

        Raises
        ------
        EmsegValueError
            When `ndim` differs from the model's, or the spacing differs
            (relative tolerance 1e-3) and `rescale` is False.
        """
        if ndim != self.ndim:
            raise EmsegValueError(
                f"the model was trained on {self.ndim}D images; got a {ndim}D image."
            )
        sp = parse_spacing(spacing if spacing is not None else self.spacing, ndim)
        if not np.allclose(sp, self.spacing, rtol=1e-3, atol=0) and not rescale:
            raise EmsegValueError(
                f"the image's `spacing` {sp} nm differs from the model's training spacing "
                f"{self.spacing} nm. Resample the image, or pass rescale=True (--rescale) to "
                "compute the model's features at the same physical scales (nm) on this grid "
                "(accuracy may drop when the resolution differs a lot)."
            )
        return sp

    def predict_proba(
        self, image: Any, *, spacing: Any = None, rescale: bool = False, n_threads: int = 1
    ) -> np.ndarray:
        """Per-class probabilities of a whole image, in memory.

        Parameters
        ----------
        image : (Z, Y, X) or (Y, X) array_like
            Grey levels (no rescaling); a LazyImage's spacing is used when
            `spacing` is None.
        spacing : sequence of float, optional
            Voxel size in nm; default the image's own, else the model's.
        rescale : bool, default False
            Accept a spacing other than the model's (features are computed at
            the same nm scales on the new grid).
        n_threads : int, default 1
            Threads for features and trees.

        Returns
        -------
        (C, Z, Y, X) or (C, Y, X) ndarray of float32
            Probabilities of class 1..C in channel 0..C-1 (sum to 1).
        """
        if spacing is None:
            spacing = getattr(image, "spacing", None)
        arr = check_image(image)
        sp = self.check_spacing(spacing, arr.ndim, rescale=rescale)
        base = compute_features(arr, spacing=sp, spec=self.spec, n_threads=n_threads)
        return chain_probabilities(
            base,
            self.stages,
            context_scales=self.context_scales,
            spacing=sp,
            spec=self.spec,
            n_threads=n_threads,
        )

    def predict(
        self, image: Any, *, spacing: Any = None, rescale: bool = False, n_threads: int = 1
    ) -> np.ndarray:
        """Class map: ``argmax`` of :meth:`predict_proba` + 1, uint8 (1..C), same shape as `image`."""
        probs = self.predict_proba(image, spacing=spacing, rescale=rescale, n_threads=n_threads)
        return class_map(probs)

    def n_stage_features(self, stage: int) -> int:
        """Number of features stage `stage` (0-based) expects."""
        base = n_features(self.spec, self.ndim)
        return base if stage == 0 else base + self.n_classes * len(self.context_scales)


def class_map(probabilities: np.ndarray) -> np.ndarray:
    """``argmax`` over the channel axis + 1 as uint8 (ties go to the lower class)."""
    if probabilities.shape[0] > 254:
        raise EmsegValueError("at most 254 classes fit a uint8 class map.")
    return (np.argmax(probabilities, axis=0) + 1).astype(np.uint8)
