"""Blocking geometry: regions of interest, write / read regions and block ids.

Pure functions and small frozen dataclasses, in voxels (z-y-x), with the
vocabulary of daisy: the *total ROI* is cut into *write ROIs* (the blocks);
each block's *read ROI* is its write ROI grown by the *halo* (context) and
clipped to the volume. A block's id is its position in the block grid in C
order, so it depends only on the geometry, never on the order of execution.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from emseg.errors import ChunkAlignmentError, EmsegTypeError, EmsegValueError


@dataclass(frozen=True)
class Roi:
    """A box of voxels: ``begin`` (inclusive) and ``shape``, one entry per axis.

    Examples
    --------
    >>> Roi((2, 3), (4, 5)).end
    (6, 8)
    >>> Roi((2, 3), (4, 5)).grow(1).intersect(Roi((0, 0), (5, 5)))
    Roi(begin=(1, 2), shape=(4, 3))
    """

    begin: tuple[int, ...]
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.begin) != len(self.shape):
            raise EmsegValueError(
                f"a Roi needs as many `begin` as `shape` entries; got {self.begin} and {self.shape}."
            )
        if any(s < 0 for s in self.shape):
            raise EmsegValueError(f"a Roi's `shape` must be >= 0 per axis; got {self.shape}.")

    @classmethod
    def from_slices(cls, slices: Sequence[slice], shape: Sequence[int]) -> Roi:
        """The box that `slices` (step 1) selects in an array of `shape`."""
        if len(slices) != len(shape):
            raise EmsegValueError(
                f"`roi` must have one slice per axis ({len(shape)}); got {tuple(slices)!r}."
            )
        begin, size = [], []
        for sl, n in zip(slices, shape, strict=True):
            if not isinstance(sl, slice):
                raise EmsegTypeError(f"`roi` entries must be slices; got {sl!r}.")
            start, stop, step = sl.indices(n)
            if step != 1:
                raise EmsegValueError(f"`roi` slices must have step 1; got {sl!r}.")
            begin.append(start)
            size.append(max(0, stop - start))
        return cls(tuple(begin), tuple(size))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def end(self) -> tuple[int, ...]:
        return tuple(b + s for b, s in zip(self.begin, self.shape, strict=True))

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def empty(self) -> bool:
        return any(s == 0 for s in self.shape)

    def to_slices(self) -> tuple[slice, ...]:
        """The slices that select this box in the volume."""
        return tuple(slice(b, e) for b, e in zip(self.begin, self.end, strict=True))

    def grow(self, amount: int | Sequence[int]) -> Roi:
        """This box grown by `amount` voxels on both sides of every axis."""
        amounts = _per_axis(amount, self.ndim, "amount")
        return Roi(
            tuple(b - a for b, a in zip(self.begin, amounts, strict=True)),
            tuple(s + 2 * a for s, a in zip(self.shape, amounts, strict=True)),
        )

    def intersect(self, other: Roi) -> Roi:
        """The common part of two boxes (an empty box when they do not overlap)."""
        begin = tuple(max(a, b) for a, b in zip(self.begin, other.begin, strict=True))
        end = tuple(min(a, b) for a, b in zip(self.end, other.end, strict=True))
        return Roi(begin, tuple(max(0, e - b) for b, e in zip(begin, end, strict=True)))

    def contains(self, other: Roi) -> bool:
        """Whether `other` lies inside this box."""
        return all(a <= b for a, b in zip(self.begin, other.begin, strict=True)) and all(
            a >= b for a, b in zip(self.end, other.end, strict=True)
        )

    def relative_to(self, outer: Roi) -> tuple[slice, ...]:
        """The slices that select this box inside an array holding `outer`."""
        return tuple(
            slice(b - o, b - o + s)
            for b, o, s in zip(self.begin, outer.begin, self.shape, strict=True)
        )


@dataclass(frozen=True)
class Block:
    """One unit of work: its id, grid position, write ROI and read ROI.

    ``read_roi`` = ``write_roi`` grown by the halo and clipped to the volume;
    :attr:`write_in_read` selects the write ROI inside the read region.
    """

    block_id: int
    position: tuple[int, ...]
    write_roi: Roi
    read_roi: Roi

    @property
    def write_in_read(self) -> tuple[slice, ...]:
        return self.write_roi.relative_to(self.read_roi)


def _per_axis(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        values: tuple[int, ...] = (int(value),) * ndim
    else:
        if isinstance(value, str | bytes):
            raise EmsegTypeError(
                f"`{name}` must be an integer or one integer per axis; got {value!r}."
            )
        try:
            values = tuple(int(v) for v in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise EmsegTypeError(
                f"`{name}` must be an integer or one integer per axis; got {value!r}."
            ) from None
    if len(values) != ndim:
        raise EmsegValueError(f"`{name}` must have {ndim} entries (one per axis); got {values}.")
    return values


def parse_halo(halo: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """Return `halo` as one non-negative int per axis."""
    values = _per_axis(halo, ndim, "halo")
    if any(h < 0 for h in values):
        raise EmsegValueError(f"`halo` must be >= 0 per axis; got {values}.")
    return values


def parse_block_shape(block_shape: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """Return `block_shape` as one positive int per axis."""
    values = _per_axis(block_shape, ndim, "block_shape")
    if any(b <= 0 for b in values):
        raise EmsegValueError(
            f"`block_shape` must be positive per axis; got {values}. Pass e.g. (128, 128, 128)."
        )
    return values


class Blocking:
    """The blocks that cover a total ROI of a volume, created on demand.

    The grid starts at ``roi.begin``; the last block along an axis is cut at
    the ROI's end. Nothing is stored per block, so a blocking of millions of
    blocks costs no memory; ``blocking[i]`` builds block ``i``.

    Parameters
    ----------
    shape : tuple of int
        The volume's shape (z, y, x) or (y, x).
    block_shape : int or tuple of int
        The write region of one block, in voxels.
    halo : int or tuple of int, default 0
        Context added on each side to form the read region (clipped to the
        volume, not to the ROI: data outside the ROI is still valid context).
    roi : Roi or tuple of slice, optional
        The part of the volume to cover; the whole volume by default.

    Examples
    --------
    >>> b = Blocking((10, 7), (4, 4), halo=1)
    >>> len(b), b.grid_shape
    (6, (3, 2))
    >>> b[5].write_roi, b[5].read_roi
    (Roi(begin=(8, 4), shape=(2, 3)), Roi(begin=(7, 3), shape=(3, 4)))
    """

    def __init__(
        self,
        shape: Sequence[int],
        block_shape: int | Sequence[int],
        *,
        halo: int | Sequence[int] = 0,
        roi: Roi | Sequence[slice] | None = None,
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        ndim = len(self.shape)
        self.block_shape = parse_block_shape(block_shape, ndim)
        self.halo = parse_halo(halo, ndim)
        self.volume = Roi((0,) * ndim, self.shape)
        if roi is None:
            self.roi = self.volume
        else:
            r = roi if isinstance(roi, Roi) else Roi.from_slices(tuple(roi), self.shape)
            if r.ndim != ndim or not self.volume.contains(r):
                raise EmsegValueError(
                    f"`roi` {r} must lie inside the volume of shape {self.shape}."
                )
            self.roi = r
        self.grid_shape = tuple(
            -(-s // b) for s, b in zip(self.roi.shape, self.block_shape, strict=True)
        )

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return math.prod(self.grid_shape)

    def position(self, block_id: int) -> tuple[int, ...]:
        """The grid position of a block id (C order)."""
        if not 0 <= block_id < len(self):
            raise IndexError(f"block id {block_id} is outside 0..{len(self) - 1}")
        pos = []
        for g in reversed(self.grid_shape):
            pos.append(block_id % g)
            block_id //= g
        return tuple(reversed(pos))

    def block_id(self, position: Sequence[int]) -> int:
        """The id of the block at a grid position."""
        bid = 0
        for p, g in zip(position, self.grid_shape, strict=True):
            if not 0 <= p < g:
                raise IndexError(f"block position {tuple(position)} is outside {self.grid_shape}")
            bid = bid * g + int(p)
        return bid

    def __getitem__(self, block_id: int) -> Block:
        pos = self.position(int(block_id))
        begin = tuple(
            r + p * b for r, p, b in zip(self.roi.begin, pos, self.block_shape, strict=True)
        )
        end = tuple(
            min(x + b, e) for x, b, e in zip(begin, self.block_shape, self.roi.end, strict=True)
        )
        write = Roi(begin, tuple(e - x for x, e in zip(begin, end, strict=True)))
        read = write.grow(self.halo).intersect(self.volume)
        return Block(int(block_id), pos, write, read)

    def __iter__(self) -> Iterator[Block]:
        for i in range(len(self)):
            yield self[i]

    def neighbours_below(self, block_id: int) -> Iterator[tuple[int, int]]:
        """``(axis, id)`` of the face neighbour before `block_id` along each axis."""
        pos = self.position(block_id)
        for axis in range(self.ndim):
            if pos[axis] > 0:
                q = list(pos)
                q[axis] -= 1
                yield axis, self.block_id(q)


def check_chunk_alignment(
    blocking: Blocking, chunks: Sequence[int], *, parallel: bool, name: str = "out"
) -> bool:
    """Whether every write ROI covers whole chunks of an array with `chunks`.

    A write region is aligned when it starts on a chunk boundary and ends on
    one or at the volume's end. Raises :class:`ChunkAlignmentError` when it
    is not and `parallel` is true (two workers would write the same chunk);
    returns False in that case when `parallel` is false.
    """
    chunks = tuple(int(c) for c in chunks)
    aligned = True
    for axis, (c, b, r0, r1, n) in enumerate(
        zip(
            chunks,
            blocking.block_shape,
            blocking.roi.begin,
            blocking.roi.end,
            blocking.shape,
            strict=True,
        )
    ):
        ok = (b % c == 0 or b >= r1 - r0) and r0 % c == 0 and (r1 % c == 0 or r1 == n)
        if not ok:
            aligned = False
            if parallel:
                raise ChunkAlignmentError(
                    f"`block_shape` {blocking.block_shape} (roi begin {blocking.roi.begin}, end "
                    f"{blocking.roi.end}) is not aligned to the chunks {chunks} of `{name}` along "
                    f"axis {axis}: parallel workers would write the same chunk. Use a block shape "
                    f"that is a multiple of the chunks (e.g. {tuple(chunks)}), a chunk-aligned "
                    "roi, or n_workers=1."
                )
    return aligned


def default_block_shape(
    shape: Sequence[int], chunks: Sequence[int], *, target_voxels: int = 2**21
) -> tuple[int, ...]:
    """A block shape made of whole chunks, about `target_voxels` large.

    Starts from `chunks` and doubles the axis that spans the fewest voxels
    until the block holds `target_voxels` or covers the volume. Bigger blocks
    than chunks keep the per-task overhead small (2**21 = 128**3 voxels).

    Examples
    --------
    >>> default_block_shape((512, 512, 512), (64, 64, 64))
    (128, 128, 128)
    """
    shape = tuple(int(s) for s in shape)
    block = [max(1, min(int(c), s)) for c, s in zip(chunks, shape, strict=True)]
    while math.prod(block) < target_voxels:
        growable = [i for i in range(len(block)) if block[i] < shape[i]]
        if not growable:
            break
        i = min(growable, key=lambda a: block[a])
        block[i] *= 2
    # a block never needs to exceed the volume (rounded up to whole chunks)
    return tuple(min(b, -(-s // c) * c) for b, s, c in zip(block, shape, chunks, strict=True))


def iter_positions(grid_shape: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """All grid positions in C order (the order of block ids)."""
    return itertools.product(*(range(g) for g in grid_shape))
