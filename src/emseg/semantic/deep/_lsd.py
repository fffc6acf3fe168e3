"""Local shape descriptors (LSDs): an auxiliary training target computed from instance labels.

Sheridan et al., *Local shape descriptors for neuron segmentation*, Nature Methods 20 (2023):
for each voxel v of object l, the Gaussian-weighted (sigma in nm) statistics of l's voxels
around v -- their weighted volume, the offset of their mean from v and their covariance.
A network that predicts them beside its boundaries learns what shape the object around
each voxel has; emseg uses them only as a second training task (``network.lsd_sigma_nm``),
prediction keeps the boundary channel.

Computed with torch, on the training device, as separable Gaussian blurs: along each axis a
multiplication with an (n, n) banded matrix whose rows are the kernel truncated at
``truncate`` sigma and zero outside the array (scipy.ndimage's ``mode="constant"``); on the
CPU object by object inside the object's box grown by the kernel radius, on a GPU in groups
of objects over the whole patch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from emseg.errors import EmsegValueError

TRUNCATE = 3.0


def n_lsd_channels(ndim: int) -> int:
    """1 (volume) + ndim (mean offset) + ndim (variances) + ndim (ndim - 1) / 2 (covariances)."""
    return 1 + 2 * ndim + ndim * (ndim - 1) // 2


@functools.lru_cache(maxsize=64)
def _matrix(n: int, sigma_vox: float, device: torch.device) -> torch.Tensor:
    return gaussian_matrix(n, sigma_vox, device=device)


def gaussian_matrix(
    n: int,
    sigma_vox: float,
    *,
    truncate: float = TRUNCATE,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(n, n) matrix A with ``A @ x`` = a 1-D Gaussian blur of x, zero outside the array.

    The kernel has radius ``int(truncate * sigma_vox + 0.5)`` and sums to 1 over its
    whole window (as ``scipy.ndimage.gaussian_filter(mode="constant")``).
    """
    if not sigma_vox > 0:
        raise EmsegValueError(f"sigma must be > 0 voxels; got {sigma_vox}.")
    radius = int(truncate * sigma_vox + 0.5)
    k = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (k / sigma_vox) ** 2)
    w = w / w.sum()
    i = torch.arange(n)
    d = i[None, :] - i[:, None]  # column - row
    inside = d.abs() <= radius
    a = torch.where(inside, w[(d + radius).clamp(0, 2 * radius)], torch.zeros((), dtype=w.dtype))
    return a.to(device=device, dtype=dtype)


def _blur(x: torch.Tensor, mats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Blur the last len(mats) axes of `x` with the matrices (one per axis)."""
    nd = len(mats)
    for k, a in enumerate(mats):
        axis = x.ndim - nd + k
        x = torch.movedim(torch.movedim(x, axis, -1) @ a.T, -1, axis)
    return x


def local_shape_descriptors(
    ids: torch.Tensor,
    *,
    sigma_nm: float,
    spacing: Sequence[float],
    method: str = "auto",
    budget: int = 150_000_000,
) -> torch.Tensor:
    """LSDs of integer labels, scaled to [0, 1], with 0 where the label is 0.

    Parameters
    ----------
    ids : (B, *spatial) tensor of int
        Instance labels per patch (0 = no object: descriptors 0 there).
    sigma_nm : float
        Gaussian sigma in nm.
    spacing : sequence of float
        Voxel size (nm) of the spatial axes (the last ones if longer).
    method : {"auto", "boxes", "dense"}
        "boxes": object by object inside its box grown by the kernel radius (fewest
        operations; the CPU's choice); "dense": groups of objects over the whole patch in
        a few large matrix products (the GPU's choice: few kernel launches). Both give the
        same descriptors. "auto" picks by the device of `ids`.
    budget : int
        Floats of the largest temporary array of "dense" (objects are processed in groups).

    Returns
    -------
    (B, C, *spatial) float32 tensor, C = :func:`n_lsd_channels` (ndim), in this order:

    * volume: the Gaussian-weighted fraction of the window that is the voxel's object;
    * mean offset per axis, ``0.5 + 0.5 * clip(o / sigma, -1, 1)`` (o = weighted mean
      position of the object minus the voxel's position);
    * variance per axis, ``clip(var / sigma**2, 0, 1)``;
    * covariance per axis pair (zy, zx, yx in 3D), ``0.5 + 0.5 * clip(cov / sigma**2, -1, 1)``.
    """
    nd = ids.ndim - 1
    if nd not in (2, 3):
        raise EmsegValueError(f"`ids` must be (B, Y, X) or (B, Z, Y, X); got {tuple(ids.shape)}.")
    sp = [float(s) for s in tuple(spacing)[-nd:]]
    if len(sp) != nd or any(not s > 0 for s in sp):
        raise EmsegValueError(f"`spacing` needs {nd} positive entries; got {spacing}.")
    if not sigma_nm > 0:
        raise EmsegValueError(f"`sigma_nm` must be > 0; got {sigma_nm}.")
    dev = ids.device
    shape = tuple(ids.shape[1:])
    radius = [int(TRUNCATE * sigma_nm / s + 0.5) for s in sp]
    # positions in sigma units, centred on the patch (small numbers: exact enough in float32)
    axes = [
        (torch.arange(n, device=dev, dtype=torch.float32) - (n - 1) / 2) * (s / sigma_nm)
        for n, s in zip(shape, sp, strict=True)
    ]
    pairs = [(i, j) for i in range(nd) for j in range(i + 1, nd)]
    n_mom = 1 + 2 * nd + len(pairs)
    out = torch.zeros((ids.shape[0], n_lsd_channels(nd), *shape), device=dev)
    if method == "auto":
        method = "dense" if ids.device.type == "cuda" else "boxes"
    if method not in ("boxes", "dense"):
        raise EmsegValueError(f"`method` must be 'auto', 'boxes' or 'dense'; got {method!r}.")
    full = [_matrix(n, sigma_nm / v, dev) for n, v in zip(shape, sp, strict=True)]
    grids = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack(grids)  # every voxel's position, shared by the batch's patches
    if method == "dense":
        mom_all = torch.stack(
            [torch.ones(shape, device=dev), *grids]
            + [g * g for g in grids]
            + [grids[i] * grids[j] for i, j in pairs]
        )
        vox = mom_all[0].numel()
        group = max(1, budget // (n_mom * vox))
    for b in range(ids.shape[0]):
        lab = ids[b].long()
        acc = torch.zeros((n_mom, *shape), device=dev)
        if method == "dense":
            found = torch.unique(lab)
            found = found[found != 0]
            for start in range(0, found.numel(), group):
                chunk = found[start : start + group].view(-1, *([1] * nd))
                masks = (lab[None] == chunk).float()[:, None]  # (c, 1, *spatial)
                acc += (_blur(masks * mom_all[None], full) * masks).sum(0)
        else:
            acc = _accumulate_boxes(lab, acc, axes, pairs, radius, full)
        inside = lab != 0
        vol = acc[0]
        safe = torch.where(inside, vol, torch.ones_like(vol)).clamp(min=1e-12)
        mean = acc[1 : 1 + nd] / safe
        second = acc[1 + nd :] / safe
        offset = mean - grid
        var = second[:nd] - mean * mean
        cov = torch.stack([second[nd + k] - mean[i] * mean[j] for k, (i, j) in enumerate(pairs)])
        desc = torch.cat(
            [
                vol[None],
                0.5 + 0.5 * offset.clamp(-1, 1),
                var.clamp(0, 1),
                0.5 + 0.5 * cov.clamp(-1, 1),
            ]
        )
        out[b] = torch.where(inside[None], desc, torch.zeros_like(desc))
    return out


def _accumulate_boxes(
    lab: torch.Tensor,
    acc: torch.Tensor,
    axes: list[torch.Tensor],
    pairs: list[tuple[int, int]],
    radius: list[int],
    full: list[torch.Tensor],
) -> torch.Tensor:
    """Add every object's blurred moments, computed inside its grown box, to `acc`."""
    shape = tuple(lab.shape)
    for label, lo, hi in _boxes(lab):
        # the object's box grown by the kernel radius: outside it the blurred mask is 0
        box = tuple(
            slice(max(0, a - r), min(n, c + 1 + r))
            for a, c, r, n in zip(lo, hi, radius, shape, strict=True)
        )
        mask = (lab[box] == label).float()
        grids = torch.meshgrid(*[g[s] for g, s in zip(axes, box, strict=True)], indexing="ij")
        mom = [mask, *(mask * g for g in grids)]
        mom += [mask * g * g for g in grids] + [mask * grids[i] * grids[j] for i, j in pairs]
        # a box's matrix is the whole axis's matrix cut to the box (zero beyond the array)
        mats = [m[s, s] for m, s in zip(full, box, strict=True)]
        acc[(slice(None), *box)] += _blur(torch.stack(mom), mats) * mask
    return acc


def _boxes(lab: torch.Tensor) -> list[tuple[int, list[int], list[int]]]:
    """(label, first, last index per axis) of every nonzero label of `lab` (one host sync)."""
    flat = lab.reshape(-1)
    n = int(flat.max()) + 1 if flat.numel() else 1
    los, his = [], []
    for axis, size in enumerate(lab.shape):
        shape = [1] * lab.ndim
        shape[axis] = size
        coord = torch.arange(size, device=lab.device).view(shape).expand(lab.shape).reshape(-1)
        lo = torch.full((n,), size, device=lab.device, dtype=torch.long)
        hi = torch.full((n,), -1, device=lab.device, dtype=torch.long)
        los.append(lo.scatter_reduce(0, flat, coord, "amin"))
        his.append(hi.scatter_reduce(0, flat, coord, "amax"))
    lo_t, hi_t = torch.stack(los, 1).cpu(), torch.stack(his, 1).cpu()
    present = (hi_t[:, 0] >= 0).nonzero().flatten().tolist()
    return [(k, lo_t[k].tolist(), hi_t[k].tolist()) for k in present if k != 0]
