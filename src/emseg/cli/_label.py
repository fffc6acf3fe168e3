"""``emseg label IN OUT``: out-of-core connected components with exact stitching."""

from __future__ import annotations

import argparse
from typing import Any

from emseg.cli._common import (
    add_block_options,
    add_command,
    add_execution,
    add_overwrite,
    add_spacing,
    blockwise_kwargs,
)

DESCRIPTION = """\
Connected components of a binary (or thresholded) volume of any size, block
by block, with exact merging across block faces: the result equals the
in-memory result up to a renumbering. Foreground is IN != 0, or IN > T with
--threshold T. Writes uint64 labels 1..N (0 = background) to an OME-Zarr.
--min-size removes objects smaller than a physical size (nm^3), counted on
the whole object across blocks. A killed job continues with --resume.
"""


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "label",
        help="connected components of a large volume (uint64 labels), blockwise",
        description=DESCRIPTION,
    )
    p.add_argument("input", metavar="IN", help="input image or mask (any format emseg reads)")
    p.add_argument("output", metavar="OUT", help="output .zarr / .ome.zarr folder")
    p.add_argument(
        "--threshold", type=float, default=None, help="foreground is IN > T (default: IN != 0)"
    )
    p.add_argument(
        "--connectivity",
        type=int,
        choices=(4, 6, 8, 18, 26),
        default=None,
        help="neighbours that connect: 6/18/26 in 3D, 4/8 in 2D (default: 26 / 8)",
    )
    p.add_argument(
        "--min-size",
        type=float,
        default=None,
        metavar="NM3",
        help="remove objects smaller than this, in nm^3 (nm^2 in 2D), converted with the "
        "spacing; decided on the whole stitched object, not per block (default: keep all)",
    )
    add_block_options(p)
    add_spacing(p)
    add_execution(p)
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emseg.blockwise import label
    from emseg.instance._validate import physical_size, to_voxels
    from emseg.io import open_image

    image = open_image(args.input, spacing=args.spacing)
    sp = tuple(float(v) for v in image.spacing)
    size_nm = physical_size(args.min_size, name="--min-size", spacing=sp, ndim=len(sp))
    out = label(
        image,
        out=args.output,
        threshold=args.threshold,
        connectivity=args.connectivity,
        min_size=to_voxels(size_nm, sp),
        **blockwise_kwargs(args),
    )
    n = out.attrs["emseg"]["n_labels"]
    print(f"wrote {args.output}: {n} objects, shape {tuple(out.shape)}, uint64")
    return 0
