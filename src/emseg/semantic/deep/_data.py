"""Training data: lazy patch sampling from volumes of any size, class balance, targets.

Patches are read from :func:`emseg.io.open_image` volumes (or arrays) one
patch at a time, so the volume never has to fit in memory. Class-balanced
sampling needs to know where each class is: :func:`class_positions` scans the
label volume once, section by section, and keeps a bounded random subset of
voxel positions per class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emseg.errors import EmsegValueError


@dataclass(frozen=True)
class Intensity:
    """Input normalisation recorded with a model: ``(x - mean) / std`` (float32)."""

    mean: float
    std: float

    def apply(self, x: Any) -> np.ndarray:
        """Normalised float32 copy of `x`."""
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}


def estimate_intensity(
    image: Any, *, z_range: tuple[int, int] | None = None, max_sections: int = 16, seed: int = 0
) -> Intensity:
    """Mean and standard deviation of the grey levels of (a sample of) sections of `image`."""
    shape = image.shape
    if len(shape) == 2:
        data = np.asarray(image[...], dtype=np.float64)
    else:
        z0, z1 = z_range or (0, shape[0])
        zs = np.arange(z0, z1)
        if zs.size > max_sections:
            zs = np.sort(np.random.default_rng(seed).choice(zs, max_sections, replace=False))
        data = np.stack([np.asarray(image[int(z)], dtype=np.float64) for z in zs])
    std = float(data.std())
    return Intensity(float(data.mean()), std if std > 0 else 1.0)


def map_classes(
    raw: np.ndarray, *, label_map: Mapping[int, int], ignore_label: int | None
) -> np.ndarray:
    """Class indices (int64) of raw label values; -1 where ignored or unmapped.

    With an empty `label_map` the raw values are the classes.
    """
    raw = np.asarray(raw)
    if label_map:
        out = np.full(raw.shape, -1, dtype=np.int64)
        for k, v in label_map.items():
            out[raw == k] = v
    else:
        out = raw.astype(np.int64)
    if ignore_label is not None:
        out[raw == ignore_label] = -1
    return out


def boundary_target(labels: np.ndarray, *, ndim: int) -> np.ndarray:
    """1 where a voxel's label differs from a face neighbour's (last `ndim` axes), else 0."""
    out = np.zeros(labels.shape, dtype=bool)
    for ax in range(labels.ndim - ndim, labels.ndim):
        n = labels.shape[ax]
        if n < 2:
            continue
        a = np.take(labels, range(n - 1), axis=ax)
        b = np.take(labels, range(1, n), axis=ax)
        diff = a != b
        lo = [slice(None)] * labels.ndim
        hi = [slice(None)] * labels.ndim
        lo[ax], hi[ax] = slice(0, n - 1), slice(1, n)
        out[tuple(lo)] |= diff
        out[tuple(hi)] |= diff
    return out.astype(np.float32)


def affinity_target(
    labels: np.ndarray, offsets: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Affinities ``labels[v] == labels[v + o] != 0`` per offset, and their validity mask.

    Parameters
    ----------
    labels : (Z, Y, X) or (Y, X) ndarray of int
        Instance ids, 0 = background.
    offsets : sequence of offsets (one entry per axis of `labels`)

    Returns
    -------
    affinities, mask : (len(offsets), *labels.shape) ndarray of float32
        The mask is 0 where ``v + o`` leaves the array.
    """
    aff = np.zeros((len(offsets), *labels.shape), dtype=np.float32)
    mask = np.zeros_like(aff)
    for i, off in enumerate(offsets):
        if len(off) != labels.ndim:
            raise EmsegValueError(f"offset {tuple(off)} needs {labels.ndim} entries.")
        src: list[slice] = []
        dst: list[slice] = []
        for o, n in zip(off, labels.shape, strict=True):
            src.append(slice(max(0, -o), n - max(0, o)))
            dst.append(slice(max(0, o), n - max(0, -o)))
        a, b = labels[tuple(src)], labels[tuple(dst)]
        key: tuple[int | slice, ...] = (i, *src)
        aff[key] = (a == b) & (a != 0)
        mask[key] = 1.0
    return aff, mask


def make_target(
    raw: np.ndarray,
    *,
    head: str,
    n_classes: int,
    label_map: Mapping[int, int],
    ignore_label: int | None,
    offsets: Sequence[Sequence[int]] = (),
    spatial_ndim: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Target and loss mask of one raw label patch for a head.

    Returns
    -------
    target : ndarray
        softmax: int64 classes (-1 = ignored), shape of `raw`; sigmoid:
        float32 (K - 1, ...) one channel per class 1..K-1; boundary: float32
        (1, ...); affinities: float32 (len(offsets), ...).
    mask : ndarray of float32
        1 where the loss counts; shape of `raw` (softmax) or of `target`.
    """
    classes = map_classes(raw, label_map=label_map, ignore_label=ignore_label)
    valid = (classes >= 0).astype(np.float32)
    if head == "softmax":
        return classes, valid
    if head == "sigmoid":
        t = np.stack([(classes == c) for c in range(1, n_classes)]).astype(np.float32)
        return t, np.broadcast_to(valid, t.shape).copy()
    if head == "boundary":
        t = boundary_target(raw, ndim=spatial_ndim)[None]
        return t, valid[None]
    if head == "affinities":
        offs = [tuple(o)[-raw.ndim :] for o in offsets]
        t, m = affinity_target(raw, offs)
        return t, m * valid[None]
    raise EmsegValueError(f"unknown head {head!r}")


def class_positions(
    labels: Any,
    *,
    label_map: Mapping[int, int],
    ignore_label: int | None,
    n_classes: int,
    z_range: tuple[int, int],
    samples_per_class: int,
    seed: int = 0,
) -> list[np.ndarray]:
    """A bounded random subset of (z, y, x) positions of each class, from one scan.

    Returns
    -------
    list of (N_c, 3) ndarray of int64
        One entry per class (possibly empty); N_c <= about `samples_per_class`.
    """
    rng = np.random.default_rng(seed)
    z0, z1 = z_range
    per_section = max(1, math.ceil(2 * samples_per_class / max(1, z1 - z0)))
    found: list[list[np.ndarray]] = [[] for _ in range(n_classes)]
    for z in range(z0, z1):
        sec = labels[z] if len(labels.shape) == 3 else labels[...]
        cls = map_classes(np.asarray(sec), label_map=label_map, ignore_label=ignore_label)
        for c in range(n_classes):
            idx = np.flatnonzero(cls == c)
            if idx.size > per_section:
                idx = rng.choice(idx, per_section, replace=False)
            if idx.size:
                yx = np.stack(np.unravel_index(idx, cls.shape), axis=1)
                found[c].append(np.concatenate([np.full((idx.size, 1), z), yx], axis=1))
    out = []
    for c in range(n_classes):
        pos = np.concatenate(found[c]) if found[c] else np.zeros((0, 3), dtype=np.int64)
        if len(pos) > samples_per_class:
            pos = pos[rng.choice(len(pos), samples_per_class, replace=False)]
        out.append(pos.astype(np.int64))
    return out


class PatchSampler:
    """Draws (image, raw label) patches from a z range of a volume, lazily.

    Parameters
    ----------
    image, labels : (Z, Y, X) or (Y, X) arrays, zarr arrays or LazyImage
        Only the patches drawn are read.
    patch_shape : tuple of 3 int
        (Z, Y, X); use Z = 1 for a 2D network. An axis shorter than the patch
        is padded by reflection.
    z_range : (start, stop)
        Sections to sample from (the training split).
    positions : list of (N, 3) arrays, optional
        From :func:`class_positions`; needed for `foreground_fraction` > 0.
    foreground_fraction : float
        Share of patches centred on a random voxel of a random class other
        than 0 (class balance, as nnU-Net's foreground oversampling); the rest
        are uniform.
    """

    def __init__(
        self,
        image: Any,
        labels: Any,
        *,
        patch_shape: Sequence[int],
        z_range: tuple[int, int],
        positions: list[np.ndarray] | None = None,
        foreground_fraction: float = 0.0,
    ) -> None:
        if tuple(image.shape) != tuple(labels.shape):
            raise EmsegValueError(
                f"`image` and `labels` must have the same shape; got {tuple(image.shape)} and "
                f"{tuple(labels.shape)}."
            )
        self.image, self.labels = image, labels
        self.flat = len(image.shape) == 2
        self.shape = (1, *image.shape) if self.flat else tuple(image.shape)
        ps = tuple(int(p) for p in patch_shape)
        self.patch_shape = (1, *ps) if len(ps) == 2 else ps
        self.z_range = z_range
        self.positions = positions or []
        self.foreground = [p for p in self.positions[1:] if len(p)]
        self.foreground_fraction = foreground_fraction if self.foreground else 0.0

    def _start(self, rng: np.random.Generator) -> tuple[int, ...]:
        lo = (self.z_range[0], 0, 0)
        hi = (self.z_range[1], self.shape[1], self.shape[2])
        if rng.random() < self.foreground_fraction:
            pos = self.foreground[int(rng.integers(len(self.foreground)))]
            center = pos[int(rng.integers(len(pos)))]
            start = [int(c) - p // 2 for c, p in zip(center, self.patch_shape, strict=True)]
        else:
            start = [
                int(rng.integers(a, max(a, b - p) + 1))
                for a, b, p in zip(lo, hi, self.patch_shape, strict=True)
            ]
        return tuple(
            min(max(s, a), max(a, b - p))
            for s, a, b, p in zip(start, lo, hi, self.patch_shape, strict=True)
        )

    def _read(self, array: Any, start: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
        stop = [min(s + p, h) for s, p, h in zip(start, self.patch_shape, hi, strict=True)]
        sl = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        data = np.asarray(array[sl[1:]] if self.flat else array[sl])
        if self.flat:
            data = data[None]
        pad = [(0, p - d) for p, d in zip(self.patch_shape, data.shape, strict=True)]
        if any(b for _, b in pad):
            data = np.pad(data, pad, mode="symmetric")
        return data

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        """One patch: (image (Z, Y, X), raw labels (Z, Y, X), start (z, y, x))."""
        start = self._start(rng)
        hi = (self.z_range[1], self.shape[1], self.shape[2])
        return self._read(self.image, start, hi), self._read(self.labels, start, hi), start
