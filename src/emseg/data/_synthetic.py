"""Synthetic EM with exact ground truth: the embedded default data of emseg.

:func:`synthetic_em` makes a TEM-like volume (dark membranes on a light
background) with cells, mitochondria, vesicles and a nucleus, and returns the
image together with ground truth that is exact by construction.
:func:`synthetic_slide` makes a large 2D section lazily, block by block, as
Dask arrays that :func:`emseg.io.write_image` can write.

Both evaluate one global geometry (see ``_synthetic_geometry``) per voxel, so
any box rendered alone equals the same box of the whole.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from emseg._checks import SpacingLike, parse_shape, parse_spacing
from emseg.data._synthetic_geometry import Geometry, SyntheticParams, build_geometry
from emseg.data._synthetic_render import render_region
from emseg.errors import EmsegTypeError, EmsegValueError

if TYPE_CHECKING:
    import dask.array as da

#: Semantic classes of ``classes``; the index is the value in the array.
#: Where masks overlap the first applicable of membrane > mitochondrion >
#: vesicle > nucleus > cytoplasm wins.
CLASS_NAMES: tuple[str, ...] = ("cytoplasm", "membrane", "mitochondrion", "vesicle", "nucleus")

#: Names of the arrays a synthetic volume carries, with their dtypes.
OUTPUTS: dict[str, str] = {
    "image": "uint8",
    "cells": "uint32",
    "membranes": "bool",
    "mitochondria": "uint32",
    "vesicles": "bool",
    "nucleus": "bool",
    "classes": "uint8",
}


@dataclass(frozen=True, eq=False)
class SyntheticEM:
    """A synthetic EM volume (or a box of one) and its exact ground truth.

    Attributes
    ----------
    image : (Z, Y, X) ndarray of uint8
        TEM-like intensities: dark membranes and organelles on a light cytoplasm.
    cells : (Z, Y, X) ndarray of uint32
        Dense cell instances (no 0): every voxel, membranes included, belongs
        to the cell whose (warped) seed is nearest. Ids are global and stable
        across boxes, not consecutive.
    membranes : (Z, Y, X) ndarray of bool
        Plasma membranes: voxels whose box meets a membrane sheet of
        ``membrane_thickness`` nm centred on a boundary between two cells.
        Every pair of face-adjacent voxels of different cells has at least
        one voxel in this mask.
    mitochondria : (Z, Y, X) ndarray of uint32
        Mitochondrion instances, 0 = none. Each lies inside one cell, away
        from the membrane mask.
    vesicles : (Z, Y, X) ndarray of bool
        Vesicles (~40 nm spheres) in clusters next to membranes.
    nucleus : (Z, Y, X) ndarray of bool
        Nuclei (envelope included) inside the cell bodies (somata).
    classes : (Z, Y, X) ndarray of uint8
        Semantic classes, values index :data:`CLASS_NAMES`.
    class_names : tuple of str
        ``CLASS_NAMES``.
    spacing : tuple of float
        Voxel size in nm, z-y-x.
    seed : int
        The seed that made it.
    params : dict
        Every generation parameter (JSON-serialisable).
    offset : tuple of int
        Index of the first voxel in the whole volume (zeros unless `region` was given).
    """

    image: np.ndarray
    cells: np.ndarray
    membranes: np.ndarray
    mitochondria: np.ndarray
    vesicles: np.ndarray
    nucleus: np.ndarray
    classes: np.ndarray
    class_names: tuple[str, ...]
    spacing: tuple[float, ...]
    seed: int
    params: dict[str, Any]
    offset: tuple[int, ...]

    @property
    def labels(self) -> dict[str, np.ndarray]:
        """The ground-truth arrays by name (everything but ``image``)."""
        return {k: getattr(self, k) for k in OUTPUTS if k != "image"}


@dataclass(frozen=True, eq=False)
class SyntheticSlide:
    """A large synthetic 2D section as lazy Dask arrays, rendered block by block.

    The arrays have the same meaning and dtypes as in :class:`SyntheticEM`,
    shape (Y, X), chunked as `chunks`. Computing one block renders only that
    block (plus a small halo for the blur).
    """

    image: da.Array
    cells: da.Array
    membranes: da.Array
    mitochondria: da.Array
    vesicles: da.Array
    nucleus: da.Array
    classes: da.Array
    class_names: tuple[str, ...]
    spacing: tuple[float, ...]
    seed: int
    params: dict[str, Any]
    chunks: tuple[int, ...]

    @property
    def labels(self) -> dict[str, da.Array]:
        """The ground-truth arrays by name (everything but ``image``)."""
        return {k: getattr(self, k) for k in OUTPUTS if k != "image"}


def _fraction(value: float, name: str) -> float:
    v = _number(value, name)
    if not 0.0 <= v <= 1.0:
        raise EmsegValueError(f"`{name}` must be a fraction between 0 and 1; got {value!r}.")
    return v


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise EmsegTypeError(f"`{name}` must be a number; got {value!r}.")
    v = float(value)
    if not np.isfinite(v):
        raise EmsegValueError(f"`{name}` must be finite; got {value!r}.")
    return v


def _nonnegative(value: Any, name: str) -> float:
    v = _number(value, name)
    if v < 0:
        raise EmsegValueError(f"`{name}` must be >= 0; got {value!r}.")
    return v


def _positive(value: Any, name: str) -> float:
    v = _number(value, name)
    if v <= 0:
        raise EmsegValueError(f"`{name}` must be > 0 (nm); got {value!r}.")
    return v


def _make_params(ndim: int, spacing: tuple[float, ...], **kw: Any) -> SyntheticParams:
    psf = kw["psf_sigma"]
    if isinstance(psf, int | float | np.integer | np.floating) and not isinstance(psf, bool):
        psf_t = (_nonnegative(psf, "psf_sigma"),) * ndim
    else:
        try:
            psf_t = tuple(_nonnegative(v, "psf_sigma") for v in psf)
        except TypeError:
            raise EmsegTypeError(
                f"`psf_sigma` must be a number or one number per axis (nm); got {psf!r}."
            ) from None
        if len(psf_t) != ndim:
            raise EmsegValueError(
                f"`psf_sigma` must have {ndim} entries (one per axis, nm); got {tuple(psf)}."
            )
    warp = _nonnegative(kw["warp"], "warp")
    if warp > 0.8:
        raise EmsegValueError(
            f"`warp` (the bound of the warp field's gradient) must be in [0, 0.8]; got {warp!r}."
        )
    cell = _positive(kw["cell_diameter"], "cell_diameter")
    if cell < 8 * max(spacing[-2:]):
        raise EmsegValueError(
            f"`cell_diameter` must be at least 8 in-plane voxels ({8 * max(spacing[-2:]):g} nm "
            f"at spacing {spacing}); got {cell!r}."
        )
    return SyntheticParams(
        cell_diameter=cell,
        membrane_thickness=_positive(kw["membrane_thickness"], "membrane_thickness"),
        neurite_fraction=_fraction(kw["neurite_fraction"], "neurite_fraction"),
        mitochondria_fraction=_fraction(kw["mitochondria_fraction"], "mitochondria_fraction"),
        vesicle_fraction=_fraction(kw["vesicle_fraction"], "vesicle_fraction"),
        nucleus=bool(kw["nucleus"]),
        warp=warp,
        psf_sigma=psf_t,
        photons=_nonnegative(kw["photons"], "photons"),
        read_noise=_nonnegative(kw["read_noise"], "read_noise"),
        drift=_nonnegative(kw.get("drift", 0.0), "drift"),
    )


def _parse_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise EmsegValueError(f"`seed` must be a non-negative integer; got {seed!r}.")
    return int(seed)


def _parse_region(region: Any, shape: tuple[int, ...]) -> tuple[slice, ...]:
    if region is None:
        return tuple(slice(0, n) for n in shape)
    if not isinstance(region, tuple) or len(region) != len(shape):
        raise EmsegValueError(
            f"`region` must be a tuple of {len(shape)} slices (one per axis); got {region!r}."
        )
    out = []
    for s, n in zip(region, shape, strict=True):
        if not isinstance(s, slice) or s.step not in (None, 1):
            raise EmsegValueError(f"`region` entries must be slices with step 1; got {s!r}.")
        start, stop, _ = s.indices(n)
        if stop <= start:
            raise EmsegValueError(f"`region` {region!r} is empty inside shape {shape}.")
        out.append(slice(start, stop))
    return tuple(out)


def _geometry(
    shape: Sequence[int], spacing: SpacingLike, seed: int, ndim: int, fn: str, **kw: Any
) -> Geometry:
    try:
        n = len(shape)
    except TypeError:
        raise EmsegTypeError(
            f"`shape` must be a sequence of {ndim} integers; got {shape!r}."
        ) from None
    if n != ndim:
        hint = "use synthetic_slide for 2D" if ndim == 3 else "use synthetic_em for 3D"
        raise EmsegValueError(
            f"`shape` of {fn} must have {ndim} entries; got {tuple(shape)} ({hint})."
        )
    shp = parse_shape(shape, ndim=ndim)
    sp = parse_spacing(spacing, ndim)
    params = _make_params(ndim, sp, **kw)
    return build_geometry(shp, sp, _parse_seed(seed), params)


def synthetic_em(
    shape: Sequence[int],
    *,
    spacing: SpacingLike = (40.0, 4.0, 4.0),
    seed: int = 0,
    cell_diameter: float = 500.0,
    membrane_thickness: float = 14.0,
    neurite_fraction: float = 0.3,
    mitochondria_fraction: float = 0.4,
    vesicle_fraction: float = 0.3,
    nucleus: bool = True,
    warp: float = 0.25,
    psf_sigma: float | Sequence[float] = 6.0,
    photons: float = 150.0,
    read_noise: float = 0.03,
    drift: float = 0.06,
    region: tuple[slice, ...] | None = None,
) -> SyntheticEM:
    """Make a TEM-like EM volume with exact ground truth.

    Cells are Voronoi regions of random seeds in physical space (nm), bent by
    a smooth random warp; about `neurite_fraction` of them are elongated
    neurites (a chain of seeds sharing one label). Membranes of
    `membrane_thickness` nm follow cell boundaries; an oblique membrane is
    integrated over the section thickness (wider and fainter, as in ssTEM).
    Mitochondria are capsules with a dark double membrane, a darker matrix and
    lighter cristae stripes across the long axis; vesicles are ~40 nm dark-rim
    spheres clustered near membranes; a cell body (soma) holds a nucleus with
    a double envelope and chromatin. The image is blurred by a Gaussian PSF,
    varies from section to section (`drift`) and carries shot and read noise.

    Parameters
    ----------
    shape : sequence of 3 int
        (Z, Y, X) voxels.
    spacing : float or sequence of 3 float
        Voxel size in nm, z-y-x (anisotropic ssTEM by default).
    seed : int
        Every random choice derives from it: the same seed gives identical output.
    cell_diameter, membrane_thickness : float
        Mean cell diameter and membrane thickness (nm).
    neurite_fraction, mitochondria_fraction, vesicle_fraction : float
        Fractions (0..1) of cells that are neurites, that hold a
        mitochondrion, and that hold a vesicle cluster.
    nucleus : bool
        Add a soma with a nucleus (skipped when the volume is too small to hold one).
    warp : float
        Bound (0..0.8) of the warp field's gradient; 0 gives straight Voronoi faces.
    psf_sigma : float or sequence of 3 float
        Sigma of the Gaussian PSF in nm (per axis); below 0.3 voxel an axis is not blurred.
    photons : float
        Expected photon count at full white (shot noise, Gaussian approximation);
        0 disables it.
    read_noise : float
        Std of additive Gaussian noise, as a fraction of the 0..255 range.
    drift : float
        Strength of per-section brightness and contrast changes; 0 disables.
    region : tuple of slice, optional
        Render only this box of the volume of `shape`; it equals the same box
        of the whole volume (labels exactly, the image up to float rounding).

    Returns
    -------
    SyntheticEM
        The image (uint8) and ground truth (see its attributes).

    Examples
    --------
    >>> from emseg.data import synthetic_em
    >>> em = synthetic_em((8, 64, 64), seed=1)
    >>> em.image.dtype, em.cells.shape, em.class_names[1]
    (dtype('uint8'), (8, 64, 64), 'membrane')
    """
    geom = _geometry(
        shape,
        spacing,
        seed,
        3,
        "synthetic_em",
        cell_diameter=cell_diameter,
        membrane_thickness=membrane_thickness,
        neurite_fraction=neurite_fraction,
        mitochondria_fraction=mitochondria_fraction,
        vesicle_fraction=vesicle_fraction,
        nucleus=nucleus,
        warp=warp,
        psf_sigma=psf_sigma,
        photons=photons,
        read_noise=read_noise,
        drift=drift,
    )
    box = _parse_region(region, geom.shape)
    out = render_region(geom, box)
    return SyntheticEM(
        **out,
        class_names=CLASS_NAMES,
        spacing=geom.spacing,
        seed=geom.seed,
        params=_params_dict(geom),
        offset=tuple(s.start for s in box),
    )


def _params_dict(geom: Geometry) -> dict[str, Any]:
    return {
        "shape": list(geom.shape),
        "spacing": list(geom.spacing),
        "seed": geom.seed,
        **geom.params.as_dict(),
        "n_cell_ids": geom.n_cells,
        "n_mitochondria": len(geom.mito_radius),
        "n_vesicles": len(geom.vesicle_radii),
        "n_nuclei": len(geom.nucleus_radii),
    }


def _render_one(geom: Geometry, region: tuple[slice, ...]) -> dict[str, np.ndarray]:
    return render_region(geom, region)


def synthetic_slide(
    shape: Sequence[int] = (8192, 8192),
    *,
    spacing: SpacingLike = (4.0, 4.0),
    seed: int = 0,
    chunks: Sequence[int] = (1024, 1024),
    cell_diameter: float = 500.0,
    membrane_thickness: float = 14.0,
    neurite_fraction: float = 0.3,
    mitochondria_fraction: float = 0.4,
    vesicle_fraction: float = 0.3,
    nucleus: bool = True,
    warp: float = 0.25,
    psf_sigma: float | Sequence[float] = 6.0,
    photons: float = 150.0,
    read_noise: float = 0.03,
) -> SyntheticSlide:
    """Make a large synthetic 2D EM section lazily, block by block.

    Same model as :func:`synthetic_em` in 2D (a whole-section "nanotomy"
    slide). Only the global geometry (seed points and object lists, no
    pixels) is built here; each chunk is rendered when computed, so memory
    is bounded by the chunk size, never by the slide.

    Parameters
    ----------
    shape : sequence of 2 int
        (Y, X) pixels.
    spacing : float or sequence of 2 float
        Pixel size in nm.
    chunks : sequence of 2 int
        Block shape of the Dask arrays (and the unit of rendering).
    seed, cell_diameter, membrane_thickness, neurite_fraction, mitochondria_fraction, \
vesicle_fraction, nucleus, warp, psf_sigma, photons, read_noise
        As in :func:`synthetic_em`.

    Returns
    -------
    SyntheticSlide
        Dask arrays ``image`` (uint8), ``cells``, ``mitochondria`` (uint32),
        ``membranes``, ``vesicles``, ``nucleus`` (bool), ``classes`` (uint8).

    Examples
    --------
    >>> from emseg.data import synthetic_slide
    >>> slide = synthetic_slide((2048, 2048), chunks=(512, 512))
    >>> slide.image.numblocks
    (4, 4)
    """
    import dask
    import dask.array as da
    from dask.base import tokenize

    geom = _geometry(
        shape,
        spacing,
        seed,
        2,
        "synthetic_slide",
        cell_diameter=cell_diameter,
        membrane_thickness=membrane_thickness,
        neurite_fraction=neurite_fraction,
        mitochondria_fraction=mitochondria_fraction,
        vesicle_fraction=vesicle_fraction,
        nucleus=nucleus,
        warp=warp,
        psf_sigma=psf_sigma,
        photons=photons,
        read_noise=read_noise,
    )
    ch = parse_shape(chunks, name="chunks", ndim=2)
    ch = tuple(min(c, n) for c, n in zip(ch, geom.shape, strict=True))
    params = _params_dict(geom)
    token = tokenize(params, ch)
    starts = [list(range(0, n, c)) for n, c in zip(geom.shape, ch, strict=True)]
    blocks: dict[str, list[list[Any]]] = {k: [] for k in OUTPUTS}
    for i, y0 in enumerate(starts[0]):
        for k in OUTPUTS:
            blocks[k].append([])
        for j, x0 in enumerate(starts[1]):
            region = (
                slice(y0, min(y0 + ch[0], geom.shape[0])),
                slice(x0, min(x0 + ch[1], geom.shape[1])),
            )
            bshape = (region[0].stop - y0, region[1].stop - x0)
            rendered = dask.delayed(_render_one, pure=False)(
                geom, region, dask_key_name=f"synthetic-render-{token}-{i}-{j}"
            )
            for k, dtype in OUTPUTS.items():
                part = dask.delayed(operator.getitem, pure=False)(
                    rendered, k, dask_key_name=f"synthetic-{k}-{token}-{i}-{j}"
                )
                blocks[k][-1].append(da.from_delayed(part, shape=bshape, dtype=np.dtype(dtype)))
    arrays = {k: da.block(v) for k, v in blocks.items()}
    return SyntheticSlide(
        **arrays,
        class_names=CLASS_NAMES,
        spacing=geom.spacing,
        seed=geom.seed,
        params=params,
        chunks=ch,
    )
