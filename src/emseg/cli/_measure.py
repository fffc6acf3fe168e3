"""``emseg measure LABELS OUT``: the morphometry table of a label volume (Parquet or CSV)."""

from __future__ import annotations

import argparse
import logging

from emseg.cli._common import add_command, add_overwrite, add_spacing

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "measure", help="measure every object of a label volume in nm")
    p.add_argument("labels", help="label volume (any format emseg reads)")
    p.add_argument("out", help="output table, .parquet or .csv")
    p.add_argument("--image", default=None, help="raw image for intensity statistics")
    p.add_argument("--classes", default=None, help="semantic class map (majority class per object)")
    add_spacing(p)
    p.add_argument("--workers", type=int, default=2, help="parallel workers")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emseg.io import open_image
    from emseg.morphometry import measure, write_table

    labels = open_image(args.labels, spacing=args.spacing)
    image = open_image(args.image) if args.image else None
    classes = open_image(args.classes) if args.classes else None
    m = measure(
        labels,
        image=image,
        classes=classes,
        spacing=args.spacing or labels.spacing,
        n_workers=args.workers,
    )
    write_table(m.table, args.out, overwrite=args.overwrite)
    print(f"{len(m.table)} objects -> {args.out}")
    return 0
