"""U-Net family in plain PyTorch: 2D, 3D and anisotropic 3D, plain or residual blocks.

MONAI is not used: it is not among emseg's dependencies and cannot be
installed here, and the few blocks a U-Net needs (conv-norm-activation,
residual units, pooling, transposed convolutions, 1x1 heads) are a few lines
of torch each. Activations are LeakyReLU(0.01) (as nnU-Net), so that no
voxel of the receptive field has an exactly zero gradient.

An *anisotropic* 3D U-Net (DeepEM3D; Xiao et al. 2018) uses 2D convolutions
(kernel 1x3x3) and xy-only pooling (1x2x2) in its first levels, until the
voxel is roughly isotropic; see :func:`anisotropic_plan`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from emseg.errors import EmsegValueError

Norm = Literal["batch", "instance", "group", "none"]
NORMS = ("batch", "instance", "group", "none")


@dataclass(frozen=True)
class LevelPlan:
    """Kernel and pooling factors of each level (the last level is not pooled).

    Attributes
    ----------
    kernels : tuple of tuple of int
        Convolution kernel per level, one entry per spatial axis.
    pools : tuple of tuple of int
        Pooling factor between level l and l + 1 (``len(kernels) - 1`` entries).
    """

    kernels: tuple[tuple[int, ...], ...]
    pools: tuple[tuple[int, ...], ...]

    @property
    def divisor(self) -> tuple[int, ...]:
        """Every input side must be a multiple of this (the product of the pools)."""
        nd = len(self.kernels[0])
        return tuple(math.prod(p[a] for p in self.pools) for a in range(nd))


def isotropic_plan(ndim: int, depth: int) -> LevelPlan:
    """3x3(x3) kernels and 2x pooling on every axis at every level."""
    return LevelPlan(((3,) * ndim,) * depth, ((2,) * ndim,) * (depth - 1))


def anisotropic_plan(spacing: Sequence[float], depth: int, *, ratio: float = 2.0) -> LevelPlan:
    """Levels of an anisotropic 3D U-Net for voxels of `spacing` (nm, z-y-x).

    While ``spacing_z / spacing_xy >= ratio`` a level uses 1x3x3 kernels and
    1x2x2 pooling (the xy spacing doubles at each such pooling); from the
    first roughly isotropic level on, 3x3x3 kernels and 2x2x2 pooling.

    Examples
    --------
    >>> anisotropic_plan((40.0, 4.0, 4.0), 4).pools
    ((1, 2, 2), (1, 2, 2), (1, 2, 2))
    >>> anisotropic_plan((20.0, 5.0, 5.0), 4).kernels
    ((1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3))
    """
    if len(spacing) != 3:
        raise EmsegValueError(f"`spacing` must have 3 entries (z, y, x); got {tuple(spacing)}.")
    sz, sxy = float(spacing[0]), float(min(spacing[1], spacing[2]))
    kernels, pools = [], []
    for level in range(depth):
        flat = sz / sxy >= ratio
        kernels.append((1, 3, 3) if flat else (3, 3, 3))
        if level < depth - 1:
            pools.append((1, 2, 2) if flat else (2, 2, 2))
            sxy *= 2
            if not flat:
                sz *= 2
    return LevelPlan(tuple(kernels), tuple(pools))


def _norm(kind: str, ndim: int, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(ch) if ndim == 3 else nn.BatchNorm2d(ch)
    if kind == "instance":
        return (
            nn.InstanceNorm3d(ch, affine=True) if ndim == 3 else nn.InstanceNorm2d(ch, affine=True)
        )
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, ch), ch)
    return nn.Identity()


def _conv(ndim: int, cin: int, cout: int, kernel: Sequence[int]) -> nn.Module:
    cls = nn.Conv3d if ndim == 3 else nn.Conv2d
    pad = tuple(k // 2 for k in kernel)
    return cls(cin, cout, tuple(kernel), padding=pad)  # type: ignore[arg-type]


class ConvBlock(nn.Module):
    """`n_convs` x (conv, norm, LeakyReLU); with `residual`, a residual unit (1x1 projection)."""

    def __init__(
        self,
        ndim: int,
        cin: int,
        cout: int,
        kernel: Sequence[int],
        *,
        norm: str,
        residual: bool,
        n_convs: int = 2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers.append(_conv(ndim, cin if i == 0 else cout, cout, kernel))
            layers.append(_norm(norm, ndim, cout))
            if not (residual and i == n_convs - 1):
                layers.append(nn.LeakyReLU(0.01))
        self.body = nn.Sequential(*layers)
        self.residual = residual
        if residual:
            cls = nn.Conv3d if ndim == 3 else nn.Conv2d
            self.skip: nn.Module = cls(cin, cout, 1) if cin != cout else nn.Identity()
            self.act = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.residual:
            y = self.act(y + self.skip(x))
        return y


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with 'same' padding; returns logits.

    Parameters
    ----------
    ndim : {2, 3}
        Spatial dimensions.
    in_channels, out_channels : int
    channels : sequence of int
        Feature channels per level, e.g. (16, 32, 64, 128): depth = len(channels).
    plan : LevelPlan, optional
        Kernels and pools per level (default :func:`isotropic_plan`).
    norm : {"batch", "instance", "group", "none"}
    residual : bool
        Residual units instead of plain double convolutions.
    deep_supervision : bool
        Add 1x1 heads at the coarser decoder levels, used by :meth:`forward_deep`.
    aux_channels : int
        Channels of a second 1x1 head on the last decoder level (an auxiliary training
        task, e.g. local shape descriptors), returned by :meth:`forward_aux` only.

    Input (N, in_channels, *spatial) with every side a multiple of
    ``plan.divisor``; output (N, out_channels, *spatial) logits.
    """

    def __init__(
        self,
        ndim: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        *,
        plan: LevelPlan | None = None,
        norm: str = "batch",
        residual: bool = False,
        deep_supervision: bool = False,
        aux_channels: int = 0,
    ) -> None:
        super().__init__()
        if ndim not in (2, 3):
            raise EmsegValueError(f"`ndim` must be 2 or 3; got {ndim!r}.")
        if norm not in NORMS:
            raise EmsegValueError(f"`norm` must be one of {NORMS}; got {norm!r}.")
        channels = tuple(int(c) for c in channels)
        if not channels or any(c < 1 for c in channels):
            raise EmsegValueError(f"`channels` must be positive integers; got {channels}.")
        depth = len(channels)
        plan = plan or isotropic_plan(ndim, depth)
        if len(plan.kernels) != depth or any(len(k) != ndim for k in plan.kernels):
            raise EmsegValueError(
                f"`plan` must have {depth} levels of {ndim}-D kernels; got {plan.kernels}."
            )
        self.ndim, self.plan, self.channels = ndim, plan, channels
        self.encoders = nn.ModuleList()
        self.pools = nn.ModuleList()
        pool_cls = nn.MaxPool3d if ndim == 3 else nn.MaxPool2d
        up_cls = nn.ConvTranspose3d if ndim == 3 else nn.ConvTranspose2d
        cin = in_channels
        for level, ch in enumerate(channels):
            self.encoders.append(
                ConvBlock(ndim, cin, ch, plan.kernels[level], norm=norm, residual=residual)
            )
            if level < depth - 1:
                self.pools.append(pool_cls(plan.pools[level], plan.pools[level]))
            cin = ch
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(depth - 2, -1, -1):
            ch = channels[level]
            p = plan.pools[level]
            self.ups.append(up_cls(channels[level + 1], ch, p, p))  # type: ignore[arg-type]
            self.decoders.append(
                ConvBlock(ndim, 2 * ch, ch, plan.kernels[level], norm=norm, residual=residual)
            )
        conv1 = nn.Conv3d if ndim == 3 else nn.Conv2d
        self.head = conv1(channels[0], out_channels, 1)
        self.aux_head = conv1(channels[0], aux_channels, 1) if aux_channels else None
        self.deep_heads = nn.ModuleList()
        if deep_supervision:
            for level in range(depth - 2, 0, -1):
                self.deep_heads.append(conv1(channels[level], out_channels, 1))

    def _decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for level, enc in enumerate(self.encoders):
            x = enc(x)
            if level < len(self.pools):
                skips.append(x)
                x = self.pools[level](x)
        decoded = []
        for up, dec in zip(self.ups, self.decoders, strict=True):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
            decoded.append(x)
        return decoded or [x]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, out_channels, *spatial)."""
        return self.head(self._decode(x)[-1])

    def forward_deep(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits at full resolution, then at each coarser decoder level (deep supervision)."""
        return self.forward_aux(x, deep=True)[0]

    def forward_aux(
        self, x: torch.Tensor, *, deep: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The outputs of :meth:`forward_deep` (`deep`) or ``[forward(x)]``, and the
        auxiliary head's logits (None without one)."""
        decoded = self._decode(x)
        outs = [self.head(decoded[-1])]
        if deep:
            extra = [h(d) for h, d in zip(self.deep_heads, decoded[:-1], strict=False)]
            outs += extra[::-1]
        aux = self.aux_head(decoded[-1]) if self.aux_head is not None else None
        return outs, aux

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the contracting path (frozen by transfer learning's `freeze_encoder`)."""
        return [p for m in self.encoders for p in m.parameters()]

    def receptive_field(self) -> tuple[int, ...]:
        """Receptive field per axis in input voxels (see :func:`receptive_field`)."""
        return receptive_field(self.plan)


def receptive_interval(
    plan: LevelPlan, index: int, *, axis: int, n_convs: int = 2
) -> tuple[int, int]:
    """Input voxels ``[first, last]`` that output voxel `index` depends on, along `axis`.

    Exact for 'same' convolutions away from the border: going back from the
    output, each convolution of kernel k widens the interval by ``k // 2``
    per side; a transposed convolution (kernel = stride = f) maps ``[a, b]``
    to the coarse voxels ``[a // f, b // f]``; a max-pooling of factor f maps
    coarse ``[a, b]`` to fine ``[a f, b f + f - 1]``. The deepest path
    contains every skip path.

    Examples
    --------
    >>> receptive_interval(isotropic_plan(2, 2), 10, axis=0)
    (2, 19)
    """
    depth = len(plan.kernels)
    a = b = int(index)
    for level in range(depth - 1):  # decoder of level `level`, then up to the coarser level
        r = n_convs * (plan.kernels[level][axis] // 2)
        a, b = a - r, b + r
        f = plan.pools[level][axis]
        a, b = a // f, b // f
    for level in range(depth - 1, -1, -1):  # encoder block, then un-pool to the finer level
        r = n_convs * (plan.kernels[level][axis] // 2)
        a, b = a - r, b + r
        if level > 0:
            f = plan.pools[level - 1][axis]
            a, b = a * f, b * f + f - 1
    return a, b


def receptive_field(plan: LevelPlan, *, n_convs: int = 2) -> tuple[int, ...]:
    """Largest receptive field of a U-Net output voxel, per axis, in input voxels.

    The field's extent depends on the voxel's position modulo the network's
    divisor (pooling windows); this is the maximum over positions of
    :func:`receptive_interval`.

    Examples
    --------
    >>> receptive_field(isotropic_plan(2, 2))
    (18, 18)
    """
    out = []
    for axis, div in enumerate(plan.divisor):
        widths = []
        for i in range(div):
            a, b = receptive_interval(plan, i, axis=axis, n_convs=n_convs)
            widths.append(b - a + 1)
        out.append(max(widths))
    return tuple(out)
