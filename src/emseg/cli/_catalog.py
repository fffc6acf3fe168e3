"""``emseg catalog add CATALOG --image IMG --labels LABELS``: measure and index a dataset.

``emseg catalog index CATALOG [--rebuild]`` builds or checks the ANN index of image queries.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from emseg.cli._common import add_command, add_spacing

if TYPE_CHECKING:
    from emseg.catalog._ann import AnnIndex


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "catalog", help="add a segmented dataset to a structure catalog")
    verbs = p.add_subparsers(dest="catalog_command", metavar="ACTION")
    verbs.required = True
    a = add_command(verbs, "add", help="measure the objects of LABELS and add them to CATALOG")
    a.add_argument("catalog", help="catalog file (SQLite, created if missing) or postgresql:// URL")
    a.add_argument("--image", required=True, help="raw image (for intensities and embeddings)")
    a.add_argument("--labels", required=True, help="instance label volume")
    a.add_argument("--classes", default=None, help="semantic class map")
    a.add_argument("--class-names", nargs="+", default=None, help="names of class values 0, 1, ...")
    a.add_argument("--name", default=None, help="dataset name (default: the labels file name)")
    add_spacing(a)
    a.add_argument("--workers", type=int, default=2, help="parallel workers")
    a.add_argument(
        "--no-index",
        action="store_true",
        help="do not refresh the ANN index of image queries after adding (large catalogs "
        "refresh it by default; otherwise the next --like query rebuilds it)",
    )
    a.set_defaults(func=run_add)
    i = add_command(
        verbs,
        "index",
        help="build (or check) the ANN index that answers image queries on large catalogs",
    )
    i.add_argument("catalog", help="catalog file or postgresql:// URL")
    i.add_argument("--rebuild", action="store_true", help="rebuild even when the index is fresh")
    i.set_defaults(func=run_index)


def _describe(ann: AnnIndex) -> str:
    info = ann.info
    return (
        f"ANN index {info.kind} ({ann.origin}): {info.n_vectors} descriptors of {info.dim}, "
        f"nprobe {info.nprobe}, calibration recall@10 {info.calibration_recall:.3f}, "
        f"built in {info.build_seconds:.1f} s"
    )


def run_index(args: argparse.Namespace) -> int:
    from emseg.catalog import open_catalog

    with open_catalog(args.catalog, create=False) as cat:
        ann = cat.ann_index(rebuild=args.rebuild)
        print(_describe(ann))
        if len(cat) < cat.ann_min_objects:
            print(
                f"note: the catalog has {len(cat)} objects (< {cat.ann_min_objects}); "
                "image queries scan exactly and do not use this index"
            )
    return 0


def run_add(args: argparse.Namespace) -> int:
    from emseg.catalog import describe_objects, open_catalog
    from emseg.io import open_image
    from emseg.morphometry import measure

    labels = open_image(args.labels, spacing=args.spacing)
    image = open_image(args.image, spacing=args.spacing)
    from emseg._checks import check_same_shape

    check_same_shape(labels, image, names=("labels", "image"))
    classes = open_image(args.classes) if args.classes else None
    names = tuple(args.class_names) if args.class_names else None
    m = measure(labels, image=image, classes=classes, class_names=names, n_workers=args.workers)
    emb = describe_objects(image, labels, m.table, spacing=labels.spacing)
    name = args.name or Path(args.labels).name
    with open_catalog(args.catalog) as cat:
        did = cat.add_dataset(
            name,
            m.table,
            points=m.points,
            embeddings=emb,
            image=str(args.image),
            labels=str(args.labels),
            provenance={"tool": "emseg catalog add"},
        )
        if not args.no_index and len(cat) >= cat.ann_min_objects:
            print(_describe(cat.ann_index()))
    print(f"dataset {name!r} (id {did}): {len(m.table)} objects -> {args.catalog}")
    return 0
