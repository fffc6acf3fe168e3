"""Tiled prediction with Gaussian blending, in memory and blockwise (zarr -> zarr).

Both paths run the same function, :func:`predict_box`, which predicts the
global tiles (:mod:`._tiling`) that touch a box and blends them into it. In
memory the box is the whole volume; blockwise it is each block's write
region, whose read region is the union of those tiles (at most ``tile - 1``
voxels of halo). Every voxel is therefore blended from the same tiles with
the same weights in both paths: the blockwise result equals the in-memory one
up to float rounding (batch composition and summation order).
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from emseg._checks import TTA, check_choice, tta_mode
from emseg.errors import EmsegValueError
from emseg.semantic.deep._model import Model, resolve_device
from emseg.semantic.deep._tiling import (
    check_tile_shape,
    gaussian_importance,
    read_box,
    tile_grid,
    tiles_for_region,
)

log = logging.getLogger(__name__)

OutputDtype = Literal["float16", "uint8", "float32"]
Precision = Literal["fp32", "bf16"]


def _lift(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) != 3:
        raise EmsegValueError(f"`image` must be 2D (Y, X) or 3D (Z, Y, X); got shape {shape}.")
    return shape


def effective_tile(
    model: Model, shape: Sequence[int], tile_shape: Sequence[int] | None
) -> tuple[int, ...]:
    """The (Z, Y, X) tile used on a volume of (lifted) `shape`.

    Default: the training patch (x2 in y and x for 2D networks). A 2D network
    has tile Z = 1. Each side is then reduced to the smallest multiple of the
    network's divisor that covers the volume's side, so small volumes are not
    padded more than needed. Depends only on the volume's shape (global).
    """
    div = model.network.plan.divisor
    div3 = (1, *div) if model.dim == 2 else tuple(div)
    if tile_shape is None:
        ps = tuple(model.config.data.patch_shape)
        ps = ps if len(ps) == 3 else (1, *ps)
        tile = (1, 2 * ps[1], 2 * ps[2]) if model.dim == 2 else ps
    else:
        tile = tuple(int(t) for t in tile_shape)
        if len(tile) == 2:
            tile = (1, *tile)
    if model.dim == 2 and tile[0] != 1:
        raise EmsegValueError(
            f"`tile_shape` of a 2D network must have Z = 1; got {tuple(tile_shape or ())}."
        )
    check_tile_shape(tile, div3)
    return tuple(min(t, math.ceil(s / d) * d) for t, s, d in zip(tile, shape, div3, strict=True))


def inference_network(
    network: torch.nn.Module, *, precision: Precision = "fp32", channels_last: bool = True
) -> tuple[torch.nn.Module, torch.dtype]:
    """A copy of `network` prepared for fast inference, and the dtype its input must have.

    The copy is in eval mode; every batch norm that follows a convolution is
    folded into that convolution's weights and bias (exact up to float
    rounding: ``W' = W g / sqrt(v + eps)``, ``b' = (b - m) g / sqrt(v + eps) + beta``);
    activations that follow a convolution run in place; with `channels_last` the weights are
    channels-last (oneDNN's fast layout). With ``precision="bf16"`` the
    weights are bfloat16 when no normalisation layer is left (instance and
    group norms depend on the input and are not folded; such networks run
    under bf16 autocast instead), which saves autocast's per-call weight
    casts. `network` itself is never modified.

    Returns
    -------
    (torch.nn.Module, torch.dtype)
        The network and the dtype of its input (float32 or bfloat16).
    """
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(network).eval()
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    bns = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm)
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        layers = list(seq)
        kept: list[nn.Module] = []
        i = 0
        while i < len(layers):
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if (
                isinstance(layer, convs)
                and isinstance(nxt, bns)
                and nxt.track_running_stats
                and nxt.running_mean is not None
            ):
                kept.append(fuse_conv_bn_eval(layer, nxt))
                i += 2
                continue
            # in place only on a tensor this sequence made (never on its input)
            fresh = bool(kept) and isinstance(kept[-1], convs + norms)
            if fresh and isinstance(layer, nn.LeakyReLU):
                layer = nn.LeakyReLU(layer.negative_slope, inplace=True)
            elif fresh and isinstance(layer, nn.ReLU):
                layer = nn.ReLU(inplace=True)
            kept.append(layer)
            i += 1
        seq._modules.clear()
        for k, layer in enumerate(kept):
            seq.add_module(str(k), layer)
    norms_left = any(isinstance(m, norms) for m in net.modules())
    dtype = torch.float32
    if precision == "bf16" and not norms_left:
        net = net.to(torch.bfloat16)
        dtype = torch.bfloat16
    if channels_last:
        ndim = next((m.weight.ndim - 2 for m in net.modules() if isinstance(m, convs)), 0)
        fmt = torch.channels_last_3d if ndim == 3 else torch.channels_last
        if ndim in (2, 3):
            net = net.to(memory_format=fmt)  # type: ignore[call-overload]
    for prm in net.parameters():
        prm.requires_grad_(False)
    return net, dtype


class Predictor:
    """Runs a model on batches of tiles (inference copy of the network, optional bf16 / TTA).

    The network is copied once by :func:`inference_network` (batch norms
    folded, in-place activations, channels-last, bf16 weights); the model's
    own network is left untouched.
    """

    def __init__(
        self,
        model: Model,
        *,
        batch_size: int = 4,
        tta: TTA = False,
        precision: Precision = "fp32",
        channels_last: bool = True,
        device: str | torch.device | None = "auto",
    ) -> None:
        check_choice(precision, ("fp32", "bf16"), name="precision")
        dev = resolve_device(device)
        if batch_size < 1:
            raise EmsegValueError(f"`batch_size` must be >= 1; got {batch_size}.")
        mode = tta_mode(tta)
        if mode == "flips+transpose" and model.head == "affinities":
            raise EmsegValueError(
                "`tta`='flips+transpose' cannot be used with an affinity model (its y and x "
                "offsets would swap); use tta=True (flips, mapped back per offset)."
            )
        self.model = model
        self.batch_size = batch_size
        self.tta = mode != "off"
        self.transpose = mode == "flips+transpose"
        self.precision = precision
        self.channels_last = channels_last
        self.net, self.input_dtype = inference_network(
            model.network, precision=precision, channels_last=channels_last
        )
        self.net = self.net.to(dev)
        self.device = dev
        self.fmt = torch.channels_last_3d if model.dim == 3 else torch.channels_last
        # bf16 requested but a normalisation layer is left: autocast
        self.autocast = precision == "bf16" and self.input_dtype != torch.bfloat16

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=self.fmt)
        if self.autocast:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                logits = self.net(x)
        else:
            logits = self.net(x)
        return self.model.activation(logits)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """Probabilities of normalised tiles (B, Z, Y, X) -> (B, C, Z, Y, X) float32."""
        x = torch.from_numpy(np.ascontiguousarray(tiles))[:, None]
        x = x.to(device=self.device, dtype=self.input_dtype)
        if self.model.dim == 2:
            x = x[:, :, 0]
        spatial = tuple(range(2, x.ndim))
        flips: list[tuple[int, ...]] = [()]
        if self.tta:
            flips = [c for r in range(len(spatial) + 1) for c in itertools.combinations(spatial, r)]
        views = [(t, f) for t in ((False, True) if self.transpose else (False,)) for f in flips]
        offsets = self.model.config.network.offsets if self.model.head == "affinities" else None
        with torch.inference_mode():
            acc = None
            count = None  # per channel and voxel, for affinities (see unflip_affinities)
            for t, f in views:
                xi = x.transpose(-2, -1) if t else x  # y <-> x
                xi = torch.flip(xi, f) if f else xi
                p = self._forward(xi)
                if offsets and len(flips) > 1:
                    p = p.float()
                    if f:
                        p, valid = unflip_affinities(p, f, offsets)
                    else:
                        valid = torch.ones(p.shape[1:], dtype=p.dtype, device=p.device)
                    count = valid if count is None else count.add_(valid)
                else:
                    p = torch.flip(p, f) if f else p
                p = p.transpose(-2, -1) if t else p
                acc = p if acc is None else acc.add_(p)
            assert acc is not None
            if count is not None:
                acc.div_(count)
            elif len(views) > 1:
                acc.div_(len(views))
            out = acc.float().contiguous()
        if self.model.dim == 2:
            out = out[:, :, None]
        return out.cpu().numpy()


def unflip_affinities(
    p: torch.Tensor, flipped: Sequence[int], offsets: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map affinities predicted on a flipped input back to the input's frame.

    Parameters
    ----------
    p : (B, C, *spatial) tensor
        The network's affinities for the input flipped along the tensor axes
        `flipped` (2 = first spatial axis); channel ``c`` is the affinity of
        ``q`` and ``q + offsets[c]`` in the flipped frame.
    flipped : tensor axes that were flipped
    offsets : one offset per channel, (z, y, x) or one int per spatial axis
        A 2D network's offsets are read from their last two entries.

    Returns
    -------
    affinities, valid : (B, C, *spatial) and (C, *spatial) float tensors
        Flipping back turns channel ``c`` into the affinity of ``v`` and
        ``v - o`` along the flipped axes, so an offset lying only on flipped
        axes is read at ``v + o``: it is symmetric. Voxels whose ``v + o``
        leaves the tile, and channels whose offset has components both on
        flipped and on unflipped axes (not recoverable), are 0 with
        ``valid`` 0; everything else has ``valid`` 1.
    """
    back = torch.flip(p, tuple(flipped))
    out = torch.zeros_like(back)
    valid = torch.zeros(back.shape[1:], dtype=back.dtype, device=back.device)
    spatial = back.shape[2:]
    for c, full in enumerate(offsets):
        off = tuple(full)[len(full) - len(spatial) :]  # a 2D network's offsets are (0, y, x)
        on = {a + 2 for a, o in enumerate(off) if o}
        if not on & set(flipped):
            out[:, c] = back[:, c]
            valid[c] = 1.0
            continue
        if not on <= set(flipped):
            continue
        dst: list[slice] = []
        src: list[slice] = []
        for o, n in zip(off, spatial, strict=True):
            dst.append(slice(max(0, -o), n - max(0, o)))
            src.append(slice(max(0, o), n - max(0, -o)))
        to: tuple[int | slice, ...] = (slice(None), c, *dst)
        frm: tuple[int | slice, ...] = (slice(None), c, *src)
        out[to] = back[frm]
        valid[to[1:]] = 1.0
    return out, valid


def predict_box(
    predictor: Predictor,
    image: Any,
    *,
    shape: tuple[int, ...],
    begin: Sequence[int],
    end: Sequence[int],
    tile: tuple[int, ...],
    overlap: float,
) -> np.ndarray:
    """Blended probabilities over the box ``[begin, end)`` of a (lifted, 3D) volume.

    Parameters
    ----------
    predictor : Predictor
    image : array-like of `shape` (Z, Y, X), or (Y, X) when ``shape[0] == 1``
        Grey levels (normalised here with the model's intensity).
    shape : (Z, Y, X)
        The whole volume's shape (defines the global tile grid).
    begin, end : (z, y, x)
        The box to predict.
    tile : (Z, Y, X)
        From :func:`effective_tile`.

    Returns
    -------
    (C, *box) ndarray of float32
    """
    grid = tile_grid(shape, tile, (0.0 if tile[0] == 1 else overlap, overlap, overlap))
    tiles = tiles_for_region(grid, tile, begin, end)
    rb, re = read_box(tiles, tile, shape)
    sl = tuple(slice(a, b) for a, b in zip(rb, re, strict=True))
    flat = len(image.shape) == 2
    data = np.asarray(image[sl[1:]] if flat else image[sl])
    if flat:
        data = data[None]
    data = predictor.model.intensity.apply(data)
    pad = [(0, max(0, t - s)) for t, s in zip(tile, data.shape, strict=True)]
    if any(b for _, b in pad):
        data = np.pad(data, pad, mode="reflect" if min(data.shape) > 1 else "edge")
    weight_full = _importance(tuple(tile))
    box = tuple(e - b for b, e in zip(begin, end, strict=True))
    n_out = len(predictor.model.output_names)
    acc = np.zeros((n_out, *box), dtype=np.float32)
    wsum = np.zeros(box, dtype=np.float32)
    bs = predictor.batch_size
    for i in range(0, len(tiles), bs):
        chunk = tiles[i : i + bs]
        batch = np.stack(
            [
                data[tuple(slice(s - r, s - r + t) for s, r, t in zip(st, rb, tile, strict=True))]
                for st in chunk
            ]
        )
        probs = predictor(batch)
        for st, p in zip(chunk, probs, strict=True):
            # intersection of the tile (cropped to the volume) with the box
            lo = [max(s, b) for s, b in zip(st, begin, strict=True)]
            hi = [min(s + t, e, n) for s, t, e, n in zip(st, tile, end, shape, strict=True)]
            if any(h <= q for q, h in zip(lo, hi, strict=True)):
                continue
            src = tuple(slice(q - s, h - s) for q, h, s in zip(lo, hi, st, strict=True))
            dst = tuple(slice(q - b, h - b) for q, h, b in zip(lo, hi, begin, strict=True))
            w = weight_full[src]
            part = p[(slice(None), *src)]
            part *= w  # in place: `probs` is this function's own buffer
            acc[(slice(None), *dst)] += part
            wsum[dst] += w
    acc /= wsum
    return acc


@functools.lru_cache(maxsize=8)
def _importance(tile: tuple[int, ...]) -> np.ndarray:
    """The Gaussian importance map of a tile, computed once per tile shape (read-only)."""
    w = gaussian_importance(tile)
    w.flags.writeable = False
    return w


#: The views of a volume a tri-planar prediction averages: axis orders of (z, y, x) whose
#: first axis is the one sliced (xy planes, zx planes, zy planes); as ``data.orientations``.
PLANES_3 = ("zyx", "yzx", "xzy")


def plane_orientations(planes: int) -> tuple[str, ...]:
    """The orientations (axis orders of ``"zyx"``) of a 1- or 3-plane prediction."""
    if planes not in (1, 3):
        raise EmsegValueError(
            f"`planes` must be 1 (xy planes) or 3 (xy, zx and zy planes, averaged); got {planes!r}."
        )
    return PLANES_3[:planes]


def _axis_order(orientation: str) -> tuple[int, ...]:
    return tuple("zyx".index(c) for c in orientation)


class _Transposed:
    """Read-only view of a 3D array with permuted axes; reads only the box asked for."""

    def __init__(self, array: Any, order: tuple[int, ...]) -> None:
        self.array, self.order = array, order
        self.shape = tuple(int(array.shape[a]) for a in order)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        src: list[slice] = [slice(None)] * 3
        for i, a in enumerate(self.order):
            src[a] = key[i]
        return np.asarray(self.array[tuple(src)]).transpose(self.order)


def _check_planes(model: Model, shape: Sequence[int], planes: int) -> tuple[str, ...]:
    orientations = plane_orientations(planes)
    if planes != 1 and model.head == "affinities":
        raise EmsegValueError(
            f"`planes`={planes} (tri-planar prediction) cannot be used with an affinity model: "
            "its channels are tied to the axes of the plane it was trained on. Use planes=1."
        )
    if planes != 1 and (model.dim != 2 or len(shape) != 3):
        raise EmsegValueError(
            f"`planes`={planes} (tri-planar prediction) needs a 2D network and a 3D (Z, Y, X) "
            f"image; got a {model.dim}D network and an image of shape {tuple(shape)}. Use planes=1."
        )
    return orientations


def oriented_tiles(
    model: Model,
    shape: Sequence[int],
    tile_shape: Sequence[int] | None,
    orientations: Sequence[str],
) -> dict[str, tuple[int, ...]]:
    """:func:`effective_tile` of each orientation's view of a (lifted) volume of `shape`.

    Tiles are in the view's axis order (e.g. (1, Z, X) for ``"yzx"``).
    """
    out = {}
    for o in orientations:
        order = _axis_order(o)
        out[o] = effective_tile(model, tuple(shape[a] for a in order), tile_shape)
    return out


def predict_planes(
    predictor: Predictor,
    image: Any,
    *,
    shape: tuple[int, ...],
    begin: Sequence[int],
    end: Sequence[int],
    tiles: dict[str, tuple[int, ...]],
    overlap: float,
) -> np.ndarray:
    """:func:`predict_box` on each orientation's view of the volume, averaged.

    Parameters
    ----------
    tiles : dict of orientation to tile
        From :func:`oriented_tiles`; ``{"zyx": tile}`` is plain :func:`predict_box`.

    Returns
    -------
    (C, *box) ndarray of float32
        The mean over orientations (each blended over its own global tile grid,
        so a box gets the same values in memory and blockwise).
    """
    acc: np.ndarray | None = None
    for o, tile in tiles.items():
        order = _axis_order(o)
        if order == (0, 1, 2):
            p = predict_box(
                predictor, image, shape=shape, begin=begin, end=end, tile=tile, overlap=overlap
            )
        else:
            view = _Transposed(image, order)
            p = predict_box(
                predictor,
                view,
                shape=view.shape,
                begin=tuple(begin[a] for a in order),
                end=tuple(end[a] for a in order),
                tile=tile,
                overlap=overlap,
            )
            back = tuple(int(i) for i in np.argsort(order))
            p = np.ascontiguousarray(p.transpose(0, *(1 + b for b in back)))
        acc = p if acc is None else np.add(acc, p, out=acc)
    assert acc is not None
    if len(tiles) > 1:
        acc /= np.float32(len(tiles))
    return acc


def predict_image(
    model: Model,
    image: Any,
    *,
    tile_shape: Sequence[int] | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    tta: TTA = False,
    precision: Precision = "fp32",
    channels_last: bool = True,
    planes: int = 1,
    device: str | torch.device | None = "auto",
) -> np.ndarray:
    """Probabilities of a whole image in memory, by blended tiles.

    Parameters
    ----------
    model : Model
    image : (Z, Y, X) or (Y, X) array-like
        Raw grey levels; the model's recorded normalisation is applied.
    tile_shape : (Z, Y, X) or (Y, X), optional
        See :func:`effective_tile` (multiples of the network's divisor).
    overlap : float, default 0.25
        Fraction of a tile shared with its neighbour (along z only for 3D nets).
    batch_size : int, default 4
        Tiles per forward pass.
    tta : {False, True, "flips", "flips+transpose"}, default False
        True / "flips": average over all flips of the network's spatial axes
        (4 in 2D, 8 in 3D); affinity channels are mapped back to their
        offsets (:func:`unflip_affinities`) before averaging.
        "flips+transpose": also over those flips of the y <-> x transposed
        input (8 in 2D, 16 in 3D; twice the work of "flips"), for models
        trained with ``augment.transpose`` (or ``rot90``); not for affinities.
    precision : {"fp32", "bf16"}
        bf16 autocast (faster on CPUs with AVX512-BF16 / AMX; slightly less exact).
    channels_last : bool, default True
        Channels-last memory format (faster oneDNN convolutions).
    planes : {1, 3}, default 1
        3: tri-planar prediction of a 2D network on an isotropic volume, the
        mean of its predictions on the xy, zx and zy planes (the volume
        transposed so that z, y and x in turn are sliced; ``tile_shape``
        applies to each view). Three times the work of 1. Train such a model
        with ``data.orientations: [zyx, yzx, xzy]``.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default "auto"
        Where the network runs ("auto": a CUDA GPU when PyTorch sees one). On a
        GPU, cuDNN runs float32 convolutions in TF32 (PyTorch's default): the
        probabilities differ from the CPU's by up to a few 1e-3 (measured on an
        H100: 2.7e-3 for a 3D net, 7.8e-4 for a 2D one; validation IoU within 2e-5).

    Returns
    -------
    (C, Z, Y, X) or (C, Y, X) ndarray of float32
        Per-output probabilities in [0, 1] (softmax over classes, or sigmoid).
    """
    orientations = _check_planes(model, image.shape, planes)
    shape = _lift(image.shape)
    tiles = oriented_tiles(model, shape, tile_shape, orientations)
    pred = Predictor(
        model,
        batch_size=batch_size,
        tta=tta,
        precision=precision,
        channels_last=channels_last,
        device=device,
    )
    out = predict_planes(
        pred, image, shape=shape, begin=(0, 0, 0), end=shape, tiles=tiles, overlap=overlap
    )
    return out[:, 0] if len(image.shape) == 2 else out


def class_map(probabilities: np.ndarray, *, head: str) -> np.ndarray:
    """Class map (uint8) of probabilities: argmax (softmax: class index, 0 = first class);
    sigmoid: 0 where every channel < 0.5, else argmax + 1."""
    p = np.asarray(probabilities, dtype=np.float32)
    if head == "softmax":
        return np.argmax(p, axis=0).astype(np.uint8)
    if head == "sigmoid":
        return np.where(p.max(axis=0) >= 0.5, np.argmax(p, axis=0) + 1, 0).astype(np.uint8)
    raise EmsegValueError(f"a class map needs a softmax or sigmoid head; the model's is {head!r}.")


def encode(probabilities: np.ndarray, dtype: str) -> np.ndarray:
    """float16, float32 or uint8 ``round(255 p)`` (``p = q / 255`` back)."""
    if dtype == "uint8":
        return np.rint(np.clip(probabilities, 0.0, 1.0) * 255.0).astype(np.uint8)
    return probabilities.astype(dtype)


def prediction_block_shape(
    shape: Sequence[int], tile: Sequence[int], overlap: float, chunks: Sequence[int]
) -> tuple[int, ...]:
    """Default blocks of a blockwise prediction: whole chunks spanning >= 3 tile strides.

    A tile that straddles a block border is predicted by both blocks (that is
    what makes blockwise equal in-memory); blocks of at least three strides
    keep that extra work below about 1/3 per axis. Axes where the tile is 1
    (z of a 2D network) use one chunk.
    """
    from emseg.semantic.deep._tiling import tile_stride

    lifted_tile = tuple(tile)[-len(shape) :]
    out = []
    for s, t, c in zip(shape, lifted_tile, chunks, strict=True):
        want = c if t == 1 else 3 * tile_stride(t, overlap)
        out.append(min(int(s), c * max(1, math.ceil(want / c))))
    return tuple(out)


def weighted_add(acc: np.ndarray | None, p: np.ndarray, weight: float) -> np.ndarray:
    """``acc + weight * p`` in float32, in place into `acc` (`p` itself, or ``weight * p``,
    when `acc` is None): the running sum of an ensemble's members, in memory and blockwise."""
    if weight != 1:
        p = np.multiply(p, np.float32(weight), out=p)
    return p if acc is None else np.add(acc, p, out=acc)


def weighted_mean(acc: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """`acc` (``sum(w_i p_i)``) divided in place by ``sum(w_i)`` (nothing for one weight 1)."""
    total = float(sum(weights))
    if len(weights) > 1 or total != 1:
        acc /= np.float32(total)
    return acc


class _TileTask:
    """One block: predict the global tiles touching its write region, write probs (+ classes).

    With several parts (ensemble members, each a predictor, its views' tiles
    and its weight) the block's probabilities are their weighted mean, in part
    order, as :func:`emseg.semantic.deep.predict_members` computes it in memory.
    """

    def __init__(
        self,
        parts: list[tuple[Predictor, dict[str, tuple[int, ...]], float]],
        image: Any,
        outs: list[Any],
        blocking: Any,
        journal: Any,
        shape: tuple[int, ...],
        overlap: float,
        dtype: str,
        head: str,
    ) -> None:
        self.parts, self.image, self.outs = parts, image, outs
        self.blocking, self.journal = blocking, journal
        self.shape, self.overlap, self.dtype, self.head = shape, overlap, dtype, head

    def __call__(self, block_id: int) -> None:
        block = self.blocking[block_id]
        roi = block.write_roi
        flat = len(self.image.shape) == 2
        begin = (0, *roi.begin) if flat else roi.begin
        end = (1, *roi.end) if flat else roi.end
        probs: np.ndarray | None = None
        for predictor, tiles, weight in self.parts:
            p = predict_planes(
                predictor,
                self.image,
                shape=self.shape,
                begin=begin,
                end=end,
                tiles=tiles,
                overlap=self.overlap,
            )
            probs = weighted_add(probs, p, weight)
        assert probs is not None
        probs = weighted_mean(probs, [w for _, _, w in self.parts])
        if flat:
            probs = probs[:, 0]
        write = roi.to_slices()
        self.outs[0][(slice(None), *write)] = encode(probs, self.dtype)
        if len(self.outs) > 1:
            self.outs[1][write] = class_map(probs, head=self.head)
        self.journal.mark_done("map", block_id)


def predict_blockwise(
    model: Model | Sequence[Any],
    image: Any,
    *,
    out: Any = None,
    class_map_out: Any = None,
    dtype: OutputDtype = "float16",
    tile_shape: Sequence[int] | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    tta: TTA = False,
    precision: Precision = "fp32",
    channels_last: bool = True,
    block_shape: int | Sequence[int] | None = None,
    chunks: int | Sequence[int] | None = None,
    n_workers: int = 1,
    scheduler: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    planes: int = 1,
    device: str | torch.device | None = "auto",
) -> Any:
    """Probabilities of a volume of any size, block by block, into OME-Zarr.

    Equal to :func:`predict_image` up to float rounding (and the output
    dtype's quantisation) for any block shape: each block predicts the global
    tiles that touch it (see the module docstring).

    Parameters
    ----------
    model : Model or sequence of Member
        One model, or an ensemble: the (weighted) mean of the members'
        probabilities, each member predicted with its own ``planes`` and ``tta`` (equal to
        :func:`emseg.semantic.deep.predict_members` up to float rounding;
        `tta` and `planes` must then be left at their defaults). The output's
        provenance lists the members.
    image : (Z, Y, X) or (Y, X) array, zarr array, LazyImage or path
    out : str, path or None
        ``.ome.zarr`` output, axes ``czyx`` / ``cyx``, channel names = the
        model's output names; None: in memory.
    class_map_out : str, path or None
        Also write the class map (uint8 label image, see :func:`class_map`).
    dtype : {"float16", "uint8", "float32"}, default "float16"
        float16 probabilities, or uint8 ``round(255 p)``.
    tile_shape, overlap, batch_size, tta, precision, channels_last, planes, device
        As for :func:`predict_image` (the device is not part of the job's parameters:
        a job may resume on another). With ``planes=3`` every block predicts
        the tiles of the three views that touch it; the default blocks then
        span three tile strides of every view along every axis (for a
        volume of a few tile sides: the whole volume), chunks 64^3.
    block_shape, chunks, n_workers, scheduler, resume, overwrite, progress
        As for :func:`emseg.blockwise.map_blocks` (`chunks` spatial; default
        64^3, or (8, 256, 256) for a 2D network on a 3D volume). Each worker
        holds one block's read region (block + up to ``tile - 1`` per side)
        and one batch of tiles. Tiles across block borders are predicted by
        both blocks; the default blocks (:func:`prediction_block_shape`)
        span at least three tile strides to bound that extra work.

    Returns
    -------
    zarr.Array, shape (C, Z, Y, X) or (C, Y, X), dtype `dtype`
    """
    dev = resolve_device(device)  # refuse a missing GPU before any output exists
    from emseg.blockwise import (
        Blocking,
        as_input,
        check_chunk_alignment,
        check_inputs,
        finish_output,
        input_spacing,
        open_backend,
        run_blocks,
    )
    from emseg.features._blockwise import (
        _spatial_chunks,
        prepare_channel_output,
        prepare_class_map_output,
    )
    from emseg.semantic.deep._ensemble import Member, check_members

    check_choice(dtype, ("float16", "uint8", "float32"), name="dtype")
    img = as_input(image)
    shape = check_inputs([img], ["image"])
    lifted = _lift(shape)
    single = isinstance(model, Model)
    if isinstance(model, Model):
        members: tuple[Member, ...] = (Member(model, planes=planes, tta=tta),)
    else:
        if tta or planes != 1:
            raise EmsegValueError(
                f"`tta`={tta!r} / `planes`={planes!r} apply to one model; with an ensemble each "
                "Member carries its own (Member(model, planes=, tta=)). Leave them at their defaults."
            )
        members = check_members(model)
    views = []
    for m in members:
        orientations = _check_planes(m.model, shape, m.planes)
        views.append(oriented_tiles(m.model, lifted, tile_shape, orientations))
    first = members[0].model
    tile = views[0]["zyx"]
    sp = input_spacing(img, None, len(shape))
    if (
        chunks is None
        and len(shape) == 3
        and all(m.model.dim == 2 and m.planes == 1 for m in members)
    ):
        chunks = (min(8, shape[0]), min(256, shape[1]), min(256, shape[2]))
    spatial_chunks = _spatial_chunks(chunks, shape)
    names = first.output_names
    params: dict[str, Any] = {
        "job": "emseg.deep.predict",
        "shape": list(shape),
        "dtype": dtype,
        "tile": list(tile),
        "overlap": overlap,
    }
    if single:
        params.update(
            tta=tta, precision=precision, planes=planes, outputs=names, model=members[0].name
        )
    else:
        params.update(
            precision=precision,
            outputs=names,
            members=[m.describe() for m in members],
            tiles=[list(v["zyx"]) for v in views],
        )
    params["class_map"] = class_map_out is not None
    outputs = [
        prepare_channel_output(
            out,
            shape=(len(names), *shape),
            dtype=np.dtype(dtype),
            chunks=(len(names), *spatial_chunks),
            spacing=sp,
            params=params,
            resume=resume,
            overwrite=overwrite,
            channel_names=names,
        )
    ]
    if class_map_out is not None:
        heads = sorted({m.model.head for m in members})
        if len(heads) != 1 or heads[0] not in ("softmax", "sigmoid"):
            raise EmsegValueError(
                f"`class_map_out` needs softmax or sigmoid models with one head; got {heads}."
            )
        outputs.append(
            prepare_class_map_output(
                class_map_out,
                shape=shape,
                chunks=spatial_chunks,
                spacing=sp,
                params=params,
                job="emseg.deep.class_map",
                resume=resume,
                overwrite=overwrite,
            )
        )
    if block_shape is None:
        block_shape = prediction_block_shape(shape, tile, overlap, spatial_chunks)
        for tiles in views:
            for view, t in tiles.items():  # every view: its tile in the volume's axis order
                order = _axis_order(view)
                t_vol = [0, 0, 0]
                for i, a in enumerate(order):
                    t_vol[a] = t[i]
                other = prediction_block_shape(shape, tuple(t_vol), overlap, spatial_chunks)
                block_shape = tuple(max(a, b) for a, b in zip(block_shape, other, strict=True))
    blocking = Blocking(shape, block_shape)
    parts = [
        (
            Predictor(
                m.model,
                batch_size=batch_size,
                tta=m.tta,
                precision=precision,
                channels_last=channels_last,
                device=dev,
            ),
            tiles,
            m.weight,
        )
        for m, tiles in zip(members, views, strict=True)
    ]
    journal = outputs[0].journal
    with open_backend(scheduler, n_workers) as backend:
        check_chunk_alignment(blocking, spatial_chunks, parallel=backend.parallel)
        if not journal.complete:
            todo = outputs[0].todo("map", len(blocking))
            task = _TileTask(
                parts,
                img,
                [o.array for o in outputs],
                blocking,
                journal,
                lifted,
                overlap,
                dtype,
                first.head,
            )
            run_blocks(task, todo, backend, progress=progress, desc="predict")
    for o in outputs[1:]:
        finish_output(o, params)
    finish_output(outputs[0], params)
    return outputs[0].array
