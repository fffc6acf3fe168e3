"""EM augmentation of (image, label) patches in numpy / scipy, deterministic given an rng.

Patches are (Z, Y, X) float32 images (already normalised) with (Z, Y, X)
integer targets (or (C, Z, Y, X)); a 2D patch is a (1, Y, X) volume.
Geometric transforms move image and labels together (labels with nearest
neighbour); intensity transforms touch the image only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from emseg.semantic.deep._config import AugmentConfig


def _spatial(a: np.ndarray) -> int:
    return 3 if a.ndim >= 3 else a.ndim


def _apply(arrays: list[np.ndarray], fn: Any) -> list[np.ndarray]:
    return [np.ascontiguousarray(fn(a)) for a in arrays]


def elastic_field(
    shape: tuple[int, ...], *, alpha: float, sigma: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random displacements (dy, dx) in voxels, shape (Y, X) each, max about `alpha`."""
    out = []
    for _ in range(2):
        d = ndimage.gaussian_filter(rng.uniform(-1, 1, shape[-2:]), sigma, mode="reflect")
        m = np.abs(d).max()
        out.append(d / m * alpha if m > 0 else d)
    return out[0], out[1]


def _warp(a: np.ndarray, dy: np.ndarray, dx: np.ndarray, order: int) -> np.ndarray:
    yy, xx = np.meshgrid(np.arange(a.shape[-2]), np.arange(a.shape[-1]), indexing="ij")
    coords = [yy + dy, xx + dx]
    lead = a.shape[:-2]
    flat = a.reshape(-1, *a.shape[-2:])
    res = np.stack([ndimage.map_coordinates(s, coords, order=order, mode="reflect") for s in flat])
    return res.reshape(*lead, *a.shape[-2:]).astype(a.dtype, copy=False)


def augment_patch(
    image: np.ndarray,
    target: np.ndarray,
    *,
    config: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly transform one patch.

    Parameters
    ----------
    image : (Z, Y, X) ndarray of float32
    target : (Z, Y, X) or (C, Z, Y, X) ndarray
        Moves with the image (nearest neighbour for elastic deformation).
    config : AugmentConfig
    rng : numpy.random.Generator
        The only source of randomness: the same state gives the same result.

    Returns
    -------
    image, target : ndarrays of the input shapes and dtypes
        (a transpose of y and x is only applied to square patches).
    """
    img = image.astype(np.float32, copy=True)
    tgt = target
    lead = tgt.ndim - img.ndim  # channel axes in the target
    # geometric, image and target together
    if config.flips:
        for ax in (-1, -2):
            if rng.random() < 0.5:
                img = np.flip(img, ax)
                tgt = np.flip(tgt, ax)
    if config.rot90 and img.shape[-1] == img.shape[-2]:
        k = int(rng.integers(4))
        img = np.rot90(img, k, axes=(-2, -1))
        tgt = np.rot90(tgt, k, axes=(-2, -1))
    if config.transpose and img.shape[-1] == img.shape[-2] and rng.random() < 0.5:
        img = np.swapaxes(img, -1, -2)
        tgt = np.swapaxes(tgt, -1, -2)
    img, tgt = np.array(img, order="C"), np.array(tgt, order="C")  # copies: inputs untouched
    if rng.random() < config.elastic_prob:
        dy, dx = elastic_field(
            img.shape, alpha=config.elastic_alpha, sigma=config.elastic_sigma, rng=rng
        )
        img = _warp(img, dy, dx, 1)
        tgt = _warp(tgt, dy, dx, 0)
    nz = img.shape[0] if img.ndim == 3 else 1
    if nz > 1 and rng.random() < config.misalignment_prob:
        z0 = int(rng.integers(1, nz))
        m = config.misalignment_max
        shift = (int(rng.integers(-m, m + 1)), int(rng.integers(-m, m + 1)))
        img[z0:] = ndimage.shift(img[z0:], (0, *shift), order=0, mode="reflect")
        sl = (slice(None),) * lead + (slice(z0, None),)
        tgt[sl] = ndimage.shift(tgt[sl], (0,) * (lead + 1) + shift, order=0, mode="reflect")
    # intensity, image only
    if rng.random() < config.intensity_prob:
        c = rng.uniform(*config.contrast)
        b = rng.uniform(-config.brightness, config.brightness)
        mean = float(img.mean())
        img = ((img - mean) * c + mean + b).astype(np.float32)
        g = rng.uniform(*config.gamma)
        lo, hi = float(img.min()), float(img.max())
        if hi > lo:
            img = (((img - lo) / (hi - lo)) ** g * (hi - lo) + lo).astype(np.float32)
    if rng.random() < config.blur_prob:
        s = rng.uniform(*config.blur_sigma)
        sig = (0.0, s, s) if img.ndim == 3 else (s, s)
        img = ndimage.gaussian_filter(img, sig).astype(np.float32)
    if rng.random() < config.noise_prob:
        img = (img + rng.normal(0.0, config.noise_std, img.shape)).astype(np.float32)
    if nz > 1 and rng.random() < config.missing_section_prob:
        z = int(rng.integers(nz))
        img[z] = float(img.mean())
    return img.astype(np.float32, copy=False), tgt
