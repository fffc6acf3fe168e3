"""``emseg predict MODEL IMAGE OUT``: blockwise U-Net prediction into OME-Zarr."""

from __future__ import annotations

import argparse
from typing import Any

from emseg.cli._common import add_command, add_execution, add_overwrite, blockwise_kwargs

DESCRIPTION = """\
Per-class probabilities of an image of any size, by tiles with Gaussian
blending, block by block into OME-Zarr (axes c,z,y,x; channel names = the
model's outputs). MODEL is a shipped model name (see `emseg models`) or a
model folder from `emseg train`.

  emseg predict membranes-2d volume.tif membranes.ome.zarr --tta
  emseg predict runs/mito mito.zarr probs.ome.zarr --class-map classes.ome.zarr
  emseg predict boundaries-fibsem fibsem.tif boundaries.ome.zarr --planes 3

Output: float16 probabilities, or uint8 round(255 p) with --dtype uint8.
"""


def register(sub: Any) -> None:
    p = add_command(sub, "predict", help="predict with a U-Net, blockwise", description=DESCRIPTION)
    p.add_argument("model", metavar="MODEL", help="shipped model name or model folder")
    p.add_argument("image", metavar="IMAGE", help="grey-level image (any format emseg reads)")
    p.add_argument("output", metavar="OUT", help="probabilities, .ome.zarr")
    p.add_argument("--class-map", default=None, metavar="OUT2", help="also write the class map")
    p.add_argument("--dtype", choices=("float16", "uint8"), default="float16", help="output type")
    p.add_argument(
        "--tta",
        nargs="?",
        const="flips",
        default=False,
        choices=("flips", "flips+transpose"),
        help="test-time augmentation: average over flips (--tta: 4x / 8x slower in 2D / 3D), "
        "or flips and the y <-> x transpose (--tta flips+transpose: 8x / 16x)",
    )
    p.add_argument(
        "--planes",
        type=int,
        choices=(1, 3),
        default=1,
        help="3: tri-planar, a 2D model on the xy, zx and zy planes of a volume, averaged",
    )
    p.add_argument(
        "--tile",
        nargs="+",
        type=int,
        default=None,
        metavar="N",
        help="tile shape: Z Y X (or Y X); default twice the training patch in y, x",
    )
    p.add_argument("--overlap", type=float, default=0.25, help="tile overlap fraction")
    p.add_argument("--batch", type=int, default=4, help="tiles per forward pass")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on AMX/AVX512 CPUs)")
    p.add_argument(
        "--device",
        default="auto",
        help="auto (a CUDA GPU when PyTorch sees one, else the CPU), cpu, cuda or cuda:N",
    )
    p.add_argument("--block", nargs="+", type=int, default=None, metavar="N", help="block shape")
    p.add_argument("--chunks", nargs="+", type=int, default=None, metavar="N", help="chunk shape")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_execution(p)
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emseg.io import open_image
    from emseg.semantic.deep import load_model, predict_blockwise

    model = load_model(args.model)
    image = open_image(args.image)
    out = predict_blockwise(
        model,
        image,
        out=args.output,
        class_map_out=args.class_map,
        dtype=args.dtype,
        tile_shape=tuple(args.tile) if args.tile else None,
        overlap=args.overlap,
        batch_size=args.batch,
        tta=args.tta,
        planes=args.planes,
        precision="bf16" if args.bf16 else "fp32",
        device=args.device,
        **blockwise_kwargs(args),
    )
    print(
        f"wrote {args.output}: {out.shape[0]} channels ({', '.join(model.output_names)}), "
        f"{args.dtype}" + (f"; class map in {args.class_map}" if args.class_map else "")
    )
    return 0
