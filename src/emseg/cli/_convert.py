"""``emseg convert IN OUT``: any readable image -> OME-Zarr (with a pyramid) or OME-TIFF."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from emseg.cli._common import add_command, add_overwrite, add_spacing
from emseg.io import COMPRESSIONS


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "convert",
        help="convert an image to OME-Zarr (multiscale pyramid) or OME-TIFF",
        description=(
            "Convert any image emseg reads (TIFF, OME-TIFF, Zarr, N5, HDF5, MRC, a folder of "
            "slices) to OME-Zarr (OUT ending in .zarr / .ome.zarr, with a multiscale pyramid "
            "and provenance) or OME-TIFF (OUT ending in .tif / .tiff). The input is streamed "
            "block by block; OUT appears only once it is complete."
        ),
    )
    p.add_argument("input", metavar="IN", help="input file or folder (HDF5: file.h5:/dataset)")
    p.add_argument("output", metavar="OUT", help="output .zarr / .ome.zarr or .tif / .tiff")
    add_spacing(p)
    p.add_argument(
        "--chunks",
        nargs="+",
        type=int,
        metavar="N",
        default=None,
        help="chunk shape: one number per axis, or one for all (default: about 1 MiB, e.g. 64 128 128)",
    )
    p.add_argument(
        "--no-pyramid", action="store_true", help="write full resolution only (no levels)"
    )
    p.add_argument(
        "--labels",
        action="store_true",
        help="the input is a label volume: pyramid levels keep the most frequent label",
    )
    p.add_argument(
        "--compression",
        choices=list(COMPRESSIONS),
        default="zstd",
        help="compression codec (TIFF output: zstd, gzip or none)",
    )
    p.add_argument("--dataset", default=None, help="dataset inside a container (HDF5, Zarr, N5)")
    p.add_argument(
        "--zarr-format", type=int, choices=[2, 3], default=3, help="Zarr v3 (NGFF 0.5) or v2 (0.4)"
    )
    p.add_argument("--workers", type=int, default=2, help="threads that read and write blocks")
    add_overwrite(p)
    p.set_defaults(func=run)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def run(args: argparse.Namespace) -> int:
    from emseg.io import disk_size, open_image, write_image
    from emseg.io._atomic import check_output

    check_output(args.output, overwrite=args.overwrite)  # before reading anything
    start = time.perf_counter()
    image = open_image(args.input, spacing=args.spacing, dataset=args.dataset)
    params = {
        "spacing": list(image.spacing),
        "chunks": args.chunks,
        "pyramid": not args.no_pyramid,
        "labels": args.labels,
        "compression": args.compression,
        "dataset": args.dataset,
    }
    chunks = args.chunks[0] if args.chunks and len(args.chunks) == 1 else args.chunks
    out = write_image(
        image,
        args.output,
        chunks=chunks,
        pyramid=not args.no_pyramid,
        labels=args.labels,
        compression=args.compression,
        overwrite=args.overwrite,
        zarr_format=args.zarr_format,
        workers=args.workers,
        progress=sys.stderr.isatty(),
        attrs={"producer": "emseg convert", "inputs": [args.input], "parameters": params},
    )
    seconds = time.perf_counter() - start
    spacing = " x ".join(f"{s:g}" for s in out.spacing)
    print(
        f"wrote {args.output}: shape {tuple(out.shape)} {out.dtype}, spacing {spacing} nm, "
        f"{out.levels} level{'s' if out.levels != 1 else ''}, "
        f"{_human(disk_size(args.output))} on disk, {seconds:.1f} s"
    )
    return 0
