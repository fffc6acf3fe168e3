"""``emseg classical RECIPE IN OUT``: learning-free EM segmentation recipes."""

from __future__ import annotations

import argparse
from typing import Any

from emseg.cli._common import add_command, add_execution, add_overwrite, add_spacing


def _description() -> str:
    from emseg.semantic.classical import RECIPES

    lines = "\n".join(f"  {k:<12} {v}" for k, v in RECIPES.items())
    return (
        "Classical (learning-free) EM recipes. Local recipes (normalize, clahe, local) run\n"
        "block by block on images of any size; global ones (otsu, li, superpixels, nucleus)\n"
        "load the image and refuse one above --max-voxels (use --level for a downsampled\n"
        "pyramid level). Lengths are in nm.\n\n" + lines
    )


def register(sub: Any) -> None:
    from emseg.semantic.classical import RECIPES

    p = add_command(
        sub, "classical", help="learning-free recipes: normalize, thresholds, nucleus, ...",
        description=_description(),
    )  # fmt: skip
    p.add_argument("recipe", metavar="RECIPE", choices=tuple(RECIPES), help="the recipe")
    p.add_argument("input", metavar="IN", help="input image (any format emseg reads)")
    p.add_argument("output", metavar="OUT", help="output .ome.zarr")
    p.add_argument("--level", type=int, default=0, help="pyramid level of IN to read")
    p.add_argument("--low", type=float, default=1.0, help="normalize: low percentile")
    p.add_argument("--high", type=float, default=99.0, help="normalize: high percentile")
    p.add_argument("--kernel-size", type=float, default=None, help="clahe: tile edge in nm")
    p.add_argument("--clip-limit", type=float, default=0.01, help="clahe: clip limit")
    p.add_argument("--window", type=float, default=None, help="local: window edge in nm")
    p.add_argument("--offset", type=float, default=0.0, help="local: offset")
    p.add_argument(
        "--polarity", choices=("bright", "dark"), default="bright",
        help="thresholds: is the foreground bright or dark",
    )  # fmt: skip
    p.add_argument("--size", type=float, default=200.0, help="superpixels: diameter in nm")
    p.add_argument("--compactness", type=float, default=0.1, help="superpixels: compactness")
    p.add_argument("--envelope", type=float, default=24.0, help="nucleus: envelope radius, nm")
    p.add_argument(
        "--seed", type=float, nargs="+", default=None, metavar="VOXEL",
        help="nucleus: a point inside it (y x or z y x voxels); default the image centre",
    )  # fmt: skip
    p.add_argument("--max-voxels", type=int, default=2**28, help="size limit of global recipes")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_spacing(p)
    add_execution(p)
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emseg.io import open_image
    from emseg.semantic.classical import run_recipe

    params: dict[str, Any] = {
        "normalize": {"low": args.low, "high": args.high},
        "clahe": {"kernel_size": args.kernel_size, "clip_limit": args.clip_limit},
        "local": {"window": args.window, "offset": args.offset, "polarity": args.polarity},
        "otsu": {"polarity": args.polarity},
        "li": {"polarity": args.polarity},
        "superpixels": {"size": args.size, "compactness": args.compactness},
        "nucleus": {"envelope": args.envelope, "seed": tuple(args.seed) if args.seed else None},
    }[args.recipe]
    image = open_image(args.input, spacing=args.spacing, level=args.level)
    out = run_recipe(
        args.recipe,
        image,
        out=args.output,
        params=params,
        max_voxels=args.max_voxels,
        n_workers=args.workers,
        scheduler=args.scheduler,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"wrote {args.output}: {args.recipe}, shape {tuple(out.shape)}, dtype {out.dtype}")
    return 0
