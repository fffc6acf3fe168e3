"""``emseg instances IN OUT --method ...``: instance segmentation of a large volume, blockwise."""

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
    one_or_all,
)

METHODS = ("components", "watershed", "agglomerate", "mws", "link2d")

DESCRIPTION = """\
Objects from a probability, boundary or affinity map, block by block, written
as uint64 labels (0 = background) to an OME-Zarr with provenance.

  components   threshold (+ --high-threshold hysteresis), fill holes, remove
               objects smaller than --min-size nm^3, 3D connected components
               (exact for any block shape)
  watershed    split touching objects: distance-transform (nm) watershed with
               seeds at least --seed-distance nm apart
  agglomerate  supervoxels of a boundary map (high = membrane; 8-bit maps read
               as q / 255) merged while the mean boundary along their faces
               (or 1 - p of a learned --edge-classifier) is below --threshold:
               fragments per block, ONE global graph, one agglomeration
               (equal to the in-memory chain on the same fragments, any block);
               --merge-small NM3 then merges smaller segments into the
               neighbour with the lowest mean boundary; --linkage multicut
               merges by greedy additive contraction of signed face costs
               instead (faces below --threshold attract, weighted by size)
  mws          mutex watershed of an affinity map (C, Z, Y, X) with --offsets
  link2d       per-section instances (labels, or a map with --threshold)
               linked across sections by Hungarian matching on IoU >= --min-iou
               (exact for any block shape)

watershed / mws segment each block with --halo voxels of context
and join objects across blocks by IoU in the halo: exact when the objects
meeting a block lie within block + halo (docs/instance.md). Sizes and
distances are physical (nm, spacing from the file or --spacing).
"""


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "instances",
        help="instance segmentation (components, watershed, agglomeration, mws, 2D->3D linking)",
        description=DESCRIPTION,
    )
    p.add_argument("input", metavar="PROB_OR_BOUNDARY", help="input map (any format emseg reads)")
    p.add_argument("output", metavar="OUT", help="output .zarr / .ome.zarr folder")
    p.add_argument("--method", choices=METHODS, default="components", help="which method")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="foreground threshold (components, watershed, link2d; default 0.5, or 127.5 for "
        "8-bit maps) / merge threshold on the mean boundary in [0, 1] (agglomerate; required)",
    )
    p.add_argument(
        "--high-threshold", type=float, default=None, help="hysteresis threshold (components)"
    )
    p.add_argument(
        "--min-size",
        type=float,
        default=None,
        metavar="NM3",
        help="remove objects smaller than this volume in nm^3 (nm^2 for 2D), NOT voxels",
    )
    p.add_argument(
        "--max-hole", type=float, default=None, metavar="NM3", help="fill holes up to nm^3"
    )
    p.add_argument(
        "--merge-small",
        type=float,
        default=None,
        metavar="NM3",
        help="agglomerate: then merge segments smaller than this (nm^3, nm^2 for 2D; NOT "
        "voxels) into the neighbour with the lowest mean boundary",
    )
    p.add_argument(
        "--seed-distance",
        type=float,
        default=None,
        metavar="NM",
        help="minimum distance between watershed seeds in nm (watershed; required there)",
    )
    p.add_argument(
        "--sigma", type=float, default=None, metavar="NM", help="smoothing before seeding (nm)"
    )
    p.add_argument("--halo", type=int, nargs="+", default=[16], help="context voxels per block")
    p.add_argument("--min-iou", type=float, default=0.5, help="link threshold (link2d)")
    p.add_argument(
        "--fragments", default=None, help="existing supervoxels to agglomerate (agglomerate)"
    )
    p.add_argument(
        "--linkage",
        choices=("mean", "multicut"),
        default="mean",
        help="agglomerate: merge by the lowest mean boundary (default) or by the largest "
        "summed multicut cost (greedy additive edge contraction)",
    )
    p.add_argument(
        "--edge-classifier",
        default=None,
        metavar="PATH",
        help="learned edges for agglomerate: a save_edge_classifier file (weights 1 - p)",
    )
    p.add_argument(
        "--offsets",
        default=None,
        help="affinity offsets (mws), one per channel: --offsets='-1,0,0;0,-1,0;0,0,-1;0,-9,0'",
    )
    add_block_options(p)
    add_spacing(p)
    add_execution(p)
    add_overwrite(p)
    p.set_defaults(func=run)


class _Channel:
    """One channel of a (C, Z, Y, X) image, read lazily block by block."""

    def __init__(self, image: Any, channel: int) -> None:
        self.image = image
        self.channel = channel
        self.shape = tuple(image.shape[1:])
        self.dtype = image.dtype

    def __getitem__(self, key: Any) -> Any:
        key = key if isinstance(key, tuple) else (key,)
        return self.image[(self.channel, *key)]


def _parse_offsets(text: str | None) -> list[list[int]]:
    from emseg.errors import EmsegValueError

    if not text:
        raise EmsegValueError(
            "--offsets is required with --method mws (e.g. '-1,0,0;0,-1,0;0,0,-1')."
        )
    try:
        return [[int(v) for v in part.split(",")] for part in text.split(";") if part.strip()]
    except ValueError:
        raise EmsegValueError(
            f"--offsets must be ';'-separated offsets of ','-separated ints; got {text!r}."
        ) from None


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from emseg import instance
    from emseg.errors import EmsegValueError
    from emseg.io import open_image

    image = open_image(args.input, spacing=args.spacing)
    common: dict[str, Any] = {
        "out": args.output,
        **blockwise_kwargs(args),
    }
    halo = one_or_all(args.halo)
    eight_bit = np.dtype(image.dtype) == np.uint8
    threshold = args.threshold
    if threshold is None and args.method != "agglomerate":
        threshold = 127.5 if eight_bit else 0.5
    method = args.method
    if method == "components":
        out = instance.components_blockwise(
            image,
            threshold=threshold,
            high_threshold=args.high_threshold,
            min_size_nm3=args.min_size,
            max_hole_nm3=args.max_hole,
            **common,
        )
    elif method == "watershed":
        if args.seed_distance is None:
            raise EmsegValueError("--seed-distance NM is required with --method watershed.")
        out = instance.watershed_blockwise(
            image,
            halo=halo,
            threshold=threshold,
            min_seed_distance_nm=args.seed_distance,
            sigma_nm=args.sigma,
            **common,
        )
    elif method == "agglomerate":
        if threshold is None:
            raise EmsegValueError(
                "--threshold is required with --method agglomerate (merge while the mean "
                "boundary along a face is below it, a probability in [0, 1]; 8-bit maps are "
                "read as q / 255)."
            )
        fragments = open_image(args.fragments, spacing=image.spacing) if args.fragments else None
        out = instance.agglomerate_blockwise(
            image,
            fragments=fragments,
            halo=halo,
            threshold=threshold,
            edge_classifier=args.edge_classifier,
            merge_small_nm3=args.merge_small,
            linkage=args.linkage,
            sigma_nm=args.sigma,
            min_seed_distance_nm=args.seed_distance or 0.0,
            **common,
        )
    elif method == "mws":
        offsets = _parse_offsets(args.offsets)
        if image.ndim != 4 or image.shape[0] != len(offsets):
            raise EmsegValueError(
                f"--method mws needs a (C, Z, Y, X) affinity map with one channel per offset "
                f"({len(offsets)}); got shape {tuple(image.shape)}."
            )
        channels = [_Channel(image, c) for c in range(image.shape[0])]
        spacing = getattr(image, "spacing", None)
        out = instance.mutex_watershed_blockwise(
            channels,
            offsets,
            halo=halo,
            spacing=None if spacing is None else tuple(spacing)[-3:],
            **common,
        )
    else:
        integer = np.dtype(image.dtype).kind in "ui" and args.threshold is None
        out = instance.link_sections_blockwise(
            image, min_iou=args.min_iou, threshold=None if integer else threshold, **common
        )
    n = out.attrs.get("emseg", {}).get("n_labels", "?")
    print(f"wrote {args.output}: {n} objects ({method}), shape {tuple(out.shape)}, uint64")
    return 0
