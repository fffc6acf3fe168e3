"""``emseg query CATALOG "expr"``: label, proximity (--near) and image (--like) queries."""

from __future__ import annotations

import argparse
import sys

from emseg.cli._common import add_command

VIEW_COLUMNS = [
    "id",
    "dataset",
    "label",
    "class",
    "volume_nm3",
    "centroid_z_nm",
    "centroid_y_nm",
    "centroid_x_nm",
    "bbox_z0_vx",
    "bbox_y0_vx",
    "bbox_x0_vx",
    "bbox_z1_vx",
    "bbox_y1_vx",
    "bbox_x1_vx",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "query", help="find objects in a catalog by label, proximity or example")
    p.add_argument("catalog", help="catalog file or postgresql:// URL")
    p.add_argument(
        "expr",
        nargs="?",
        default="",
        help="label query, e.g. \"class = 'mitochondrion' AND volume_nm3 > 1e7\"",
    )
    p.add_argument("--near", default=None, metavar="CLASS_OR_ID", help="target object id or class")
    p.add_argument("--within", type=float, default=0.0, metavar="NM", help="distance for --near")
    p.add_argument("--direction", default=None, help="above|below|+y|-y|+x|-x for --near")
    p.add_argument(
        "--like", default=None, metavar="ID_OR_PATCH", help="object id or image patch file"
    )
    p.add_argument("--top", type=int, default=10, help="results of --like")
    p.add_argument(
        "--exact",
        action="store_true",
        help="--like scans every descriptor, even where the catalog is large enough for the "
        "ANN index (20,000 objects)",
    )
    p.add_argument("--sort", default=None, help="column to sort by")
    p.add_argument("--desc", action="store_true", help="sort descending")
    p.add_argument("--limit", type=int, default=None, help="at most this many rows")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emseg.catalog import describe_patch, like, near, open_catalog

    with open_catalog(args.catalog, create=False) as cat:
        extra: list[str] = []
        if args.near is not None:
            target: int | str = int(args.near) if args.near.isdigit() else args.near
            df = near(cat, target, within=args.within, where=args.expr, direction=args.direction)
            extra = ["distance_nm", "nearest_target"]
        elif args.like is not None:
            if args.like.isdigit():
                example = int(args.like)
                df = like(cat, example, top=args.top, where=args.expr, exact=args.exact)
            else:
                from emseg.io import open_image

                patch = open_image(args.like)
                df = like(
                    cat,
                    describe_patch(patch[...], spacing=patch.spacing),
                    top=args.top,
                    where=args.expr,
                    exact=args.exact,
                )
            extra = ["distance"]
        else:
            df = cat.query(args.expr, sort=args.sort, descending=args.desc, limit=args.limit)
        if args.sort and (args.near or args.like):
            df = df.sort_values(args.sort, ascending=not args.desc)
        if args.limit is not None:
            df = df.head(args.limit)
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(df.to_json(orient="records"))
    else:
        cols = [c for c in VIEW_COLUMNS + extra if c in df.columns]
        print(df[cols].to_string(index=False) if len(df) else "(no objects)")
        how = f" (search: {df.attrs['search']})" if "search" in df.attrs else ""
        print(f"{len(df)} objects{how}")
    return 0
