"""An ilastik-like filter bank in physical units (sigma in nm), float32, in memory.

For each scale ``s`` (nm) the image is smoothed once with a Gaussian of
standard deviation ``s / spacing`` voxels per axis (scipy, ``mode="reflect"``)
and every derivative feature is taken from that smoothed image by central
finite differences divided by the spacing (so in intensity per nm):

- ``gaussian``: the smoothed image ``G_s``;
- ``gradient``: ``|grad G_s|`` (central differences);
- ``hessian``: eigenvalues (decreasing) of the Hessian ``H = J(grad G_s)``,
  the central-difference Jacobian of the central-difference gradient (the
  stencil of :func:`numpy.gradient` applied twice, as scikit-image's
  ``multiscale_basic_features`` does);
- ``log``: Laplacian of Gaussian, ``trace(H)``;
- ``dog``: difference of Gaussians ``G_s - G_{0.66 s}`` (ilastik's ratio);
- ``structure``: eigenvalues (decreasing) of the structure tensor
  ``G_{s/2} * (grad G_s grad G_s^T)`` (inner scale ``s``, outer ``s/2``, as
  ilastik);
- ``variance`` (optional, not in the default bank): the local standard
  deviation ``sqrt(G_s * I**2 - (G_s * I)**2)`` in a Gaussian window of sigma
  ``s`` (intensity units, never scale-normalised), a texture measure like
  Trainable Weka Segmentation's "Variance" filter.

With ``normalize=True`` (default) derivative features are scale-normalised
(first derivatives times ``s``, second derivatives and the structure tensor
times ``s**2``) so that they are dimensionless and comparable across scales.
Because sigma and derivatives are in nm, a structure gives the same response
on an anisotropic grid as on an isotropic one (up to sampling).

``mode="2d"`` filters each z-section on its own (no smoothing or derivatives
along z), ``"3d"`` the whole volume.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from emseg._checks import check_choice, parse_spacing
from emseg.errors import EmsegTypeError, EmsegValueError
from emseg.features._eigen import symmetric_eigenvalues

#: Feature families of the default bank, in output order within a scale.
FEATURES: tuple[str, ...] = ("gaussian", "gradient", "log", "dog", "structure", "hessian")

#: Every feature family, in output order within a scale: :data:`FEATURES` and the
#: optional ``"variance"`` (local standard deviation; texture).
ALL_FEATURES: tuple[str, ...] = (*FEATURES, "variance")

#: ilastik's scales, in pixels of the xy grid.
ILASTIK_SCALES_PX: tuple[float, ...] = (0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0)

#: The default scales, in xy pixels (ilastik's without 0.3 and 10, which are
#: nearly redundant with raw intensity and expensive in halo, respectively).
DEFAULT_SCALES_PX: tuple[float, ...] = (0.7, 1.0, 1.6, 3.5, 5.0)

DOG_RATIO = 0.66
STRUCTURE_OUTER = 0.5

Mode = Literal["2d", "3d"]


@dataclass(frozen=True)
class FeatureSpec:
    """Which features at which scales: the recipe of a feature stack.

    Attributes
    ----------
    scales : tuple of float
        Gaussian standard deviations in nm (physical units).
    features : tuple of str
        Subset of :data:`ALL_FEATURES` (default :data:`FEATURES`); output
        order is always that of :data:`ALL_FEATURES`, scale by scale.
    mode : {"2d", "3d"}
        Filter each z-section alone or the volume in 3D.
    normalize : bool
        Scale-normalise derivative features (see module docstring).
    truncate : float
        Gaussian kernel radius in sigmas (as scipy).
    """

    scales: tuple[float, ...]
    features: tuple[str, ...] = FEATURES
    mode: Mode = "3d"
    normalize: bool = True
    truncate: float = 4.0

    def __post_init__(self) -> None:
        scales = tuple(float(s) for s in np.atleast_1d(np.asarray(self.scales, dtype=float)))
        if not scales or any(not np.isfinite(s) or s <= 0 for s in scales):
            raise EmsegValueError(
                f"`scales` must be positive finite sigmas in nm (e.g. (4.0, 8.0)); got {scales}."
            )
        feats = (self.features,) if isinstance(self.features, str) else tuple(self.features)
        if not feats:
            raise EmsegValueError(f"`features` must name at least one of {ALL_FEATURES}; got ().")
        for f in feats:
            check_choice(f, ALL_FEATURES, name="features")
        check_choice(self.mode, ("2d", "3d"), name="mode")
        if not np.isfinite(self.truncate) or self.truncate <= 0:
            raise EmsegValueError(f"`truncate` must be positive; got {self.truncate!r}.")
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "features", tuple(f for f in ALL_FEATURES if f in feats))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (inverse: :meth:`from_dict`)."""
        return {
            "scales": list(self.scales),
            "features": list(self.features),
            "mode": self.mode,
            "normalize": bool(self.normalize),
            "truncate": float(self.truncate),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        return cls(
            scales=tuple(float(s) for s in d["scales"]),
            features=tuple(str(f) for f in d["features"]),
            mode=d["mode"],
            normalize=bool(d["normalize"]),
            truncate=float(d["truncate"]),
        )


def default_scales(
    spacing: Sequence[float], *, pixels: Sequence[float] = DEFAULT_SCALES_PX
) -> tuple[float, ...]:
    """ilastik-like scales in nm: `pixels` times the xy spacing (the last axis).

    Examples
    --------
    >>> default_scales((50.0, 4.0, 4.0))
    (2.8, 4.0, 6.4, 14.0, 20.0)
    """
    xy = float(spacing[-1])
    return tuple(round(p * xy, 6) for p in pixels)


def feature_spec(
    *,
    spacing: Sequence[float],
    features: Sequence[str] | None = None,
    scales: Sequence[float] | None = None,
    mode: Mode = "3d",
    normalize: bool = True,
) -> FeatureSpec:
    """A :class:`FeatureSpec` with ilastik-like defaults for `spacing`."""
    return FeatureSpec(
        scales=tuple(scales) if scales is not None else default_scales(spacing),
        features=tuple(features) if features is not None else FEATURES,
        mode=mode,
        normalize=normalize,
    )


def _n_axes(spec: FeatureSpec, ndim: int) -> int:
    return 2 if (ndim == 2 or spec.mode == "2d") else 3


def n_per_scale(feature: str, dims: int) -> int:
    return dims if feature in ("structure", "hessian") else 1


def feature_names(spec: FeatureSpec, ndim: int) -> list[str]:
    """Names of the channels of :func:`compute_features`, e.g. ``"hessian[0]@8nm"``."""
    dims = _n_axes(spec, ndim)
    names = []
    for s in spec.scales:
        for f in spec.features:
            k = n_per_scale(f, dims)
            for i in range(k):
                names.append(f"{f}[{i}]@{s:g}nm" if k > 1 else f"{f}@{s:g}nm")
    return names


def n_features(spec: FeatureSpec, ndim: int) -> int:
    """Number of channels of :func:`compute_features` for a `ndim`-D image."""
    dims = _n_axes(spec, ndim)
    return sum(n_per_scale(f, dims) for f in spec.features) * len(spec.scales)


def _sigma_vox(
    scale: float, spacing: tuple[float, ...], filtered: tuple[bool, ...]
) -> tuple[float, ...]:
    return tuple(scale / sp if f else 0.0 for sp, f in zip(spacing, filtered, strict=True))


def _radius(sigma_vox: Sequence[float], truncate: float) -> np.ndarray:
    return np.array([int(truncate * s + 0.5) for s in sigma_vox], dtype=int)


def feature_halo(spec: FeatureSpec, spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxels of context per axis that :func:`compute_features` needs to be exact in a block.

    The Gaussian kernel radius (``int(truncate * sigma + 0.5)``) plus 2
    voxels of finite differences, plus the outer kernel of the structure
    tensor where it is selected; the maximum over scales.
    """
    sp = tuple(float(s) for s in spacing)
    ndim = len(sp)
    filtered = _filtered_axes(spec, ndim)
    halo = np.zeros(ndim, dtype=int)
    for s in spec.scales:
        h = _radius(_sigma_vox(s, sp, filtered), spec.truncate)
        deriv = {"gradient", "log", "hessian", "structure"} & set(spec.features)
        if deriv:
            h = h + 2 * np.array(filtered, dtype=int)
        if "structure" in spec.features:
            h = h + _radius(_sigma_vox(STRUCTURE_OUTER * s, sp, filtered), spec.truncate)
        halo = np.maximum(halo, h)
    return tuple(int(v) for v in halo)


def _filtered_axes(spec: FeatureSpec, ndim: int) -> tuple[bool, ...]:
    if ndim == 3 and spec.mode == "2d":
        return (False, True, True)
    return (True,) * ndim


_D1 = np.array([-0.5, 0.0, 0.5])


def _diff(a: np.ndarray, axis: int, step: float) -> np.ndarray:
    """Central difference along `axis` (reflect border), per nm."""
    out = ndimage.correlate1d(a, _D1, axis=axis, mode="reflect", output=np.float32)
    if step != 1.0:
        out *= np.float32(1.0 / step)
    return out


def check_image(image: Any, *, name: str = "image") -> np.ndarray:
    """`image` as a finite real 2D/3D numpy array, or a clear error.

    Lazy arrays (LazyImage, zarr) are read whole.
    """
    if (
        not isinstance(image, np.ndarray)
        and hasattr(image, "shape")
        and hasattr(image, "__getitem__")
    ):
        image = image[...]
    arr = np.asarray(image)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise EmsegTypeError(
            f"`{name}` must be a real-valued grey-level image; got dtype {arr.dtype}."
        )
    if arr.ndim not in (2, 3):
        raise EmsegValueError(
            f"`{name}` must be 2D (y, x) or 3D (z, y, x); got shape {arr.shape}. "
            "Pass one channel at a time."
        )
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise EmsegValueError(
            f"`{name}` contains {bad} NaN or infinite values; fill or mask them first "
            "(e.g. np.nan_to_num(image, nan=np.nanmedian(image)))."
        )
    return arr


def _one_scale(
    img: np.ndarray,
    scale: float,
    spec: FeatureSpec,
    spacing: tuple[float, ...],
    out: np.ndarray,
) -> None:
    """Write the features of one scale into `out` (its channels, in order)."""
    filtered = _filtered_axes(spec, img.ndim)
    axes = [a for a in range(img.ndim) if filtered[a]]
    sig = _sigma_vox(scale, spacing, filtered)
    feats = spec.features
    smooth = ndimage.gaussian_filter(
        img, sig, truncate=spec.truncate, mode="reflect", output=np.float32
    )
    k = 0
    n1 = np.float32(scale if spec.normalize else 1.0)
    n2 = np.float32(scale * scale if spec.normalize else 1.0)
    grads: list[np.ndarray] = []
    if {"gradient", "log", "hessian", "structure"} & set(feats):
        grads = [_diff(smooth, a, spacing[a]) for a in axes]
    if "gaussian" in feats:
        out[k] = smooth
        k += 1
    if "gradient" in feats:
        acc = np.zeros(img.shape, np.float32)
        for g in grads:
            acc += g * g
        np.sqrt(acc, out=acc)
        out[k] = acc * n1
        k += 1
    hess: list[np.ndarray] = []
    if "log" in feats or "hessian" in feats:
        for i, a in enumerate(axes):
            for b in axes[i:]:
                hess.append(_diff(grads[axes.index(a)], b, spacing[b]))
    if "log" in feats:
        diag = [hess[j] for j in _diag_index(len(axes))]
        acc = diag[0].copy()
        for d in diag[1:]:
            acc += d
        out[k] = acc * n2
        k += 1
    if "dog" in feats:
        small = ndimage.gaussian_filter(
            img,
            _sigma_vox(DOG_RATIO * scale, spacing, filtered),
            truncate=spec.truncate,
            mode="reflect",
            output=np.float32,
        )
        out[k] = smooth - small
        k += 1
    dims = len(axes)
    if "structure" in feats:
        outer = _sigma_vox(STRUCTURE_OUTER * scale, spacing, filtered)
        entries = []
        for i in range(dims):
            for j in range(i, dims):
                entries.append(
                    ndimage.gaussian_filter(
                        grads[i] * grads[j] * n2,
                        outer,
                        truncate=spec.truncate,
                        mode="reflect",
                        output=np.float32,
                    )
                )
        symmetric_eigenvalues(entries, out[k : k + dims])
        k += dims
    if "hessian" in feats:
        if spec.normalize:
            hess = [h * n2 for h in hess]
        symmetric_eigenvalues(hess, out[k : k + dims])
        k += dims
    if "variance" in feats:
        # float64: G(I^2) - G(I)^2 cancels digits; no centring on a data-dependent value,
        # so that a block gives exactly the values of the whole image (blockwise = global)
        f64 = img.astype(np.float64)
        mean = ndimage.gaussian_filter(f64, sig, truncate=spec.truncate, mode="reflect")
        f64 *= f64
        sq = ndimage.gaussian_filter(f64, sig, truncate=spec.truncate, mode="reflect")
        sq -= mean * mean
        np.maximum(sq, 0.0, out=sq)
        out[k] = np.sqrt(sq)
        k += 1


def _diag_index(dims: int) -> list[int]:
    """Positions of the diagonal entries in the upper-triangle row order."""
    return [0, 2] if dims == 2 else [0, 3, 5]


def compute_features(
    image: Any,
    *,
    spacing: Any = None,
    spec: FeatureSpec | None = None,
    n_threads: int = 1,
) -> np.ndarray:
    """The feature stack of an image, in memory.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) array_like of int or float
        Grey levels; converted to float32 (no rescaling).
    spacing : sequence of float, optional
        Voxel size in nm (z-y-x); 1.0 per axis by default (or the
        ``spacing`` attribute of a LazyImage).
    spec : FeatureSpec, optional
        Features and scales; default :func:`feature_spec` for `spacing`.
    n_threads : int, default 1
        Scales computed in parallel on threads.

    Returns
    -------
    (F, Z, Y, X) or (F, Y, X) ndarray of float32
        Channels named by :func:`feature_names` (``F = n_features(spec, ndim)``).

    Raises
    ------
    EmsegValueError
        For NaN / infinite values, a wrong number of dimensions or spacing
        entries.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((32, 32), np.uint8); img[16, 16] = 255
    >>> spec = FeatureSpec(scales=(8.0,), features=("gaussian", "hessian"))
    >>> compute_features(img, spacing=(4.0, 4.0), spec=spec).shape
    (3, 32, 32)
    """
    if spacing is None:
        spacing = getattr(image, "spacing", None)
    arr = check_image(image)
    sp = parse_spacing(spacing, arr.ndim)
    if spec is None:
        spec = feature_spec(spacing=sp)
    img = np.ascontiguousarray(arr, dtype=np.float32)
    per_scale = n_features(spec, arr.ndim) // len(spec.scales)
    out = np.empty((per_scale * len(spec.scales), *img.shape), np.float32)
    jobs = [(s, out[i * per_scale : (i + 1) * per_scale]) for i, s in enumerate(spec.scales)]
    if n_threads <= 1 or len(jobs) == 1:
        for s, o in jobs:
            _one_scale(img, s, spec, sp, o)
    else:
        with cf.ThreadPoolExecutor(max_workers=int(n_threads)) as pool:
            for f in [pool.submit(_one_scale, img, s, spec, sp, o) for s, o in jobs]:
                f.result()
    return out
