"""Rendering one box of synthetic EM: ground truth, intensities, blur, drift and noise.

:func:`render_region` evaluates the global :class:`Geometry` on a box of the
volume. Labels are pointwise, so exact for any box. The image is blurred
(texture grain and the PSF) on the box grown by a halo of ``4 sigma`` and then
cropped, and per-voxel noise is a hash of the voxel's *global* index and the
seed (a counter-based generator), so any split of the volume into boxes gives
the same voxels as rendering it whole.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from emseg.data._synthetic_geometry import cell_grid, grid_warp, index_box
from emseg.data._synthetic_kernel import sinusoids

if TYPE_CHECKING:
    from emseg.data._synthetic_geometry import Geometry

#: Points evaluated at once (bounds the temporary memory of a box).
POINTS_PER_STEP = 1 << 17
#: Sigma (nm) of the fine cytoplasm grain.
GRAIN_SIGMA = 5.0
#: Gaussian truncation (as scipy.ndimage's default).
TRUNCATE = 4.0

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return np.asarray(x ^ (x >> np.uint64(31)))


def hash_uniform(region: tuple[slice, ...], seed: int, stream: int) -> np.ndarray:
    """Uniform (0, 1) numbers, one per voxel of `region`, from its global index."""
    h = _mix(np.asarray([(seed & 0xFFFFFFFF) * 1_000_003 + stream], np.uint64))
    ndim = len(region)
    for axis, s in enumerate(region):
        shape = [1] * ndim
        shape[axis] = s.stop - s.start
        idx = np.arange(s.start, s.stop, dtype=np.uint64).reshape(shape)
        h = _mix(h ^ (idx * _GOLDEN + np.uint64(axis + 1)))
    u = ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    return np.broadcast_to(u, tuple(s.stop - s.start for s in region))


def _kernel_norm(sigmas: list[float]) -> float:
    """Std of unit-variance white noise after ndimage.gaussian_filter with `sigmas`."""
    total = 1.0
    for s in sigmas:
        if s <= 0:
            continue
        r = int(TRUNCATE * s + 0.5)
        x = np.arange(-r, r + 1)
        w = np.exp(-0.5 * (x / s) ** 2)
        w /= w.sum()
        total *= float((w**2).sum())
    return math.sqrt(total)


def _vox_sigma(sigma_nm: tuple[float, ...], spacing: tuple[float, ...]) -> list[float]:
    out = []
    for s, sp in zip(sigma_nm, spacing, strict=True):
        v = s / sp
        out.append(v if v >= 0.3 else 0.0)
    return out


def _halo(sigmas: list[float]) -> list[int]:
    return [int(TRUNCATE * s + 0.5) if s > 0 else 0 for s in sigmas]


def _sub(region: tuple[slice, ...], rel: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(
        slice(r.start + s.start, r.start + s.stop) for r, s in zip(region, rel, strict=True)
    )


def render_region(geom: Geometry, region: tuple[slice, ...]) -> dict[str, np.ndarray]:
    """Render the voxels of `region` (global slices, step 1) of the volume.

    Returns a dict with ``image`` (uint8), ``cells`` (uint32), ``membranes``
    (bool), ``mitochondria`` (uint32), ``vesicles`` (bool), ``nucleus``
    (bool) and ``classes`` (uint8), each of the region's shape.
    """
    p = geom.params
    sp = geom.spacing
    ndim = geom.ndim
    psf = _vox_sigma(p.psf_sigma, sp)
    grain = _vox_sigma((GRAIN_SIGMA,) * ndim, sp)
    halo = [a + b for a, b in zip(_halo(psf), _halo(grain), strict=True)]
    ext = tuple(
        slice(max(0, s.start - h), min(n, s.stop + h))
        for s, h, n in zip(region, halo, geom.shape, strict=True)
    )
    eshape = tuple(s.stop - s.start for s in ext)
    cells = np.empty(eshape, np.uint32)
    membranes = np.empty(eshape, bool)
    dark = np.empty(eshape, np.float32)
    intensity = np.empty(eshape, np.float32)
    plane = int(np.prod(eshape[1:]))
    rows = max(1, POINTS_PER_STEP // max(plane, 1))
    for r0 in range(0, eshape[0], rows):
        r1 = min(eshape[0], r0 + rows)
        part = (slice(ext[0].start + r0, ext[0].start + r1), *ext[1:])
        x, w = grid_warp(geom, part)
        lab, mem, dk = cell_grid(geom, part, w)
        pshape = (r1 - r0, *eshape[1:])
        cells[r0:r1] = lab.reshape(pshape)
        membranes[r0:r1] = mem.reshape(pshape)
        dark[r0:r1] = dk.reshape(pshape)
        amp = np.full((len(geom.texture_freq), 1), 1 / math.sqrt(len(geom.texture_freq) / 2))
        shade = sinusoids(x, geom.texture_freq, geom.texture_phase, amp)[:, 0]
        intensity[r0:r1] = (0.70 + 0.03 * shade).reshape(pshape)

    nucleus = np.zeros(eshape, bool)
    for c, radii, rot in zip(
        geom.nucleus_centres, geom.nucleus_radii, geom.nucleus_rot, strict=True
    ):
        rel = index_box(geom, c - radii.max() - 5, c + radii.max() + 5, ext)
        if rel is None:
            continue
        _, w = grid_warp(geom, _sub(ext, rel))
        v = (w - c) @ rot / radii
        k0 = np.sqrt((v**2).sum(axis=1))
        k1 = np.maximum(np.sqrt(((v / radii) ** 2).sum(axis=1)), 1e-12)
        dn = k0 * (k0 - 1) / k1  # ~ signed distance to the envelope (nm)
        inside = k0 < 1
        amp = np.full((len(geom.chromatin_freq), 1), 1 / math.sqrt(len(geom.chromatin_freq) / 2))
        chrom = sinusoids(w, geom.chromatin_freq, geom.chromatin_phase, amp)[:, 0]
        chrom = chrom + 1.2 * np.clip(1 + dn / 150, 0, 1)
        value = 0.62 - 0.22 / (1 + np.exp(-4 * (chrom - 1.0)))
        value = np.where(dn > -40, 0.26, value)  # inner nuclear membrane
        value = np.where((dn > -31) & (dn <= -9), 0.66, value)  # perinuclear space
        sub = intensity[rel].reshape(-1)
        intensity[rel] = np.where(inside, value, sub).reshape(intensity[rel].shape)
        nucleus[rel] |= inside.reshape(nucleus[rel].shape)

    wlo = np.asarray([s.start for s in ext]) * sp - geom.warp_max
    whi = np.asarray([s.stop - 1 for s in ext]) * sp + geom.warp_max
    mitochondria = np.zeros(eshape, np.uint32)
    if len(geom.mito_radius):
        mlo = np.minimum(geom.mito_a, geom.mito_b) - geom.mito_radius[:, None]
        mhi = np.maximum(geom.mito_a, geom.mito_b) + geom.mito_radius[:, None]
        for m in np.flatnonzero(np.all((mhi >= wlo) & (mlo <= whi), axis=1)):
            rel = index_box(geom, mlo[m], mhi[m], ext)
            if rel is None:
                continue
            a, b, r = geom.mito_a[m], geom.mito_b[m], geom.mito_radius[m]
            _, w = grid_warp(geom, _sub(ext, rel))
            length = float(np.linalg.norm(b - a))
            e = (b - a) / max(length, 1e-9)
            u = (w - a) @ e
            radial = np.linalg.norm(w - (a + np.clip(u, 0, length)[:, None] * e), axis=1)
            dc = radial - r
            inside = dc < 0
            stripe = np.cos(
                2 * np.pi * u / geom.mito_period[m] + geom.mito_phase[m] + 1.3 * radial / r
            )
            value = np.where((stripe > 0.55) & (dc < -18), 0.63, 0.42)
            value = np.where(dc > -6, 0.24, value)  # outer membrane
            value = np.where((dc > -14) & (dc <= -9), 0.27, value)  # inner membrane
            shp = intensity[rel].shape
            intensity[rel] = np.where(inside, value, intensity[rel].reshape(-1)).reshape(shp)
            mitochondria[rel] = np.where(inside, m + 1, mitochondria[rel].reshape(-1)).reshape(shp)

    vesicles = np.zeros(eshape, bool)
    if len(geom.vesicle_radii):
        c_all, r_all = geom.vesicle_centres, geom.vesicle_radii
        near = np.all((c_all + r_all[:, None] >= wlo) & (c_all - r_all[:, None] <= whi), axis=1)
        for c, r in zip(c_all[near], r_all[near], strict=True):
            rel = index_box(geom, c - r, c + r, ext)
            if rel is None:
                continue
            _, w = grid_warp(geom, _sub(ext, rel))
            dv = np.linalg.norm(w - c, axis=1) - r
            inside = dv < 0
            value = np.where(dv > -5.5, 0.30, 0.80)
            shp = intensity[rel].shape
            intensity[rel] = np.where(inside, value, intensity[rel].reshape(-1)).reshape(shp)
            vesicles[rel] |= inside.reshape(shp)

    intensity *= 1.0 - 0.72 * dark
    noise = hash_uniform(ext, geom.seed, 1) - 0.5
    if any(grain):
        noise = ndimage.gaussian_filter(noise, grain, truncate=TRUNCATE)
    intensity += (0.05 / (_kernel_norm(grain) * math.sqrt(1 / 12))) * noise.astype(np.float32)
    if any(psf):
        intensity = ndimage.gaussian_filter(intensity, psf, truncate=TRUNCATE)

    inner = tuple(
        slice(r.start - e.start, r.stop - e.start) for r, e in zip(region, ext, strict=True)
    )
    img = intensity[inner].astype(np.float64)
    if ndim == 3:
        z = np.arange(region[0].start, region[0].stop)
        img = 0.5 + (img - 0.5) * geom.section_gain[z, None, None]
        img += geom.section_offset[z, None, None]
    u1 = hash_uniform(region, geom.seed, 2)
    u2 = hash_uniform(region, geom.seed, 3)
    radius = np.sqrt(-2 * np.log(u1))
    if p.photons > 0:
        img += np.sqrt(np.clip(img, 0, None) / p.photons) * radius * np.cos(2 * np.pi * u2)
    if p.read_noise > 0:
        img += p.read_noise * radius * np.sin(2 * np.pi * u2)
    image = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)

    out = {
        "cells": cells[inner],
        "membranes": membranes[inner],
        "mitochondria": mitochondria[inner],
        "vesicles": vesicles[inner],
        "nucleus": nucleus[inner],
    }
    classes = np.zeros(image.shape, np.uint8)
    classes[out["nucleus"]] = 4
    classes[out["vesicles"]] = 3
    classes[out["mitochondria"] > 0] = 2
    classes[out["membranes"]] = 1
    return {
        "image": image,
        **{k: np.ascontiguousarray(v) for k, v in out.items()},
        "classes": classes,
    }
