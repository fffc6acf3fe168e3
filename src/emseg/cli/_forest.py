"""``emseg forest train|predict``: ilastik-like pixel classification from scribbles."""

from __future__ import annotations

import argparse
from typing import Any

from emseg.cli._common import (
    add_command,
    add_execution,
    add_overwrite,
    add_spacing,
    blockwise_kwargs,
)

DESCRIPTION = """\
Random-forest pixel classification (ilastik-like), without deep learning.

  emseg forest train --image IMG --labels SCRIBBLES --out MODEL.safetensors
  emseg forest predict MODEL.safetensors IMAGE OUT.ome.zarr --class-map CLASSES.ome.zarr

SCRIBBLES is a label image of the image's shape: 0 = unlabelled, 1..K =
classes (a few strokes per class on a few sections). Features are a filter
bank with scales in nm (default: ilastik's 0.7-5 px of the xy spacing).
The model file is safetensors + JSON (no pickle: loading never runs code);
it remembers the training spacing and refuses other spacings unless
--rescale. Prediction runs block by block into OME-Zarr (channels = classes).
"""


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "forest",
        help="random-forest pixel classification from scribbles",
        description=DESCRIPTION,
    )
    verbs = p.add_subparsers(dest="forest_command", metavar="{train,predict}")
    verbs.required = True
    from emseg.cli._main import HelpFormatter

    t = verbs.add_parser(
        "train",
        help="train a model from scribbles",
        formatter_class=HelpFormatter,
        description="Train a random-forest pixel classifier from a scribble image.",
    )
    t.add_argument("--image", required=True, help="grey-level image (any format emseg reads)")
    t.add_argument("--labels", required=True, help="scribbles: 0 = unlabelled, 1..K = classes")
    t.add_argument("--out", required=True, metavar="MODEL", help="model file (.safetensors)")
    t.add_argument(
        "--features",
        nargs="+",
        default=None,
        metavar="NAME",
        help=(
            "feature families: gaussian gradient log dog structure hessian variance "
            "(default: all but variance, the local standard deviation / texture)"
        ),
    )
    t.add_argument(
        "--scales",
        nargs="+",
        type=float,
        default=None,
        metavar="NM",
        help="Gaussian scales in nm (default: 0.7 1 1.6 3.5 5 times the xy spacing)",
    )
    t.add_argument("--mode", choices=("2d", "3d"), default="3d", help="filter per section or in 3D")
    t.add_argument(
        "--autocontext",
        type=int,
        default=1,
        choices=(1, 2, 3),
        help="number of autocontext stages (2 or 3 add smoothed probabilities as features)",
    )
    t.add_argument(
        "--autocontext-folds",
        choices=("strokes", "halves"),
        default="strokes",
        help="out-of-fold split for autocontext training: connected strokes, or each class's "
        "samples cut into z halves (for a sparse random subsample of dense labels)",
    )
    t.add_argument("--class-names", nargs="+", default=None, metavar="NAME", help="names of 1..K")
    t.add_argument("--trees", type=int, default=100, help="trees per forest")
    t.add_argument("--max-depth", type=int, default=20, help="maximum tree depth (0: unlimited)")
    t.add_argument(
        "--samples-per-class",
        type=int,
        default=50_000,
        help="random subsample of labelled voxels per class (0: all)",
    )
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--jobs", type=int, default=2, help="threads")
    add_spacing(t)
    add_overwrite(t)
    t.set_defaults(func=run_train)

    r = verbs.add_parser(
        "predict",
        help="predict class probabilities blockwise",
        formatter_class=HelpFormatter,
        description="Per-class probabilities of an image of any size, block by block, into "
        "OME-Zarr (axes c,z,y,x; float32 in [0, 1], or uint8 round(255 p) with --dtype uint8).",
    )
    r.add_argument("model", metavar="MODEL", help="model file from `emseg forest train`")
    r.add_argument("image", metavar="IMAGE", help="grey-level image")
    r.add_argument("output", metavar="OUT", help="probabilities, .ome.zarr")
    r.add_argument("--class-map", default=None, metavar="OUT2", help="also write argmax+1 here")
    r.add_argument("--dtype", choices=("float32", "uint8"), default="float32", help="output type")
    r.add_argument(
        "--rescale",
        action="store_true",
        help="accept an image whose spacing differs from the training spacing",
    )
    r.add_argument("--block", nargs="+", type=int, default=None, metavar="N", help="block shape")
    r.add_argument("--chunks", nargs="+", type=int, default=None, metavar="N", help="chunk shape")
    r.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_spacing(r)
    add_execution(r)
    add_overwrite(r)
    r.set_defaults(func=run_predict)


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from emseg.errors import OutputExistsError
    from emseg.features import feature_spec
    from emseg.io import open_image
    from emseg.semantic.forest import save_model, train_forest

    if Path(args.out).exists() and not args.overwrite:
        raise OutputExistsError(
            f"the model file {args.out!r} exists; pass --overwrite to replace it."
        )
    image = open_image(args.image, spacing=args.spacing)
    labels = np.asarray(open_image(args.labels)[...])
    spec = feature_spec(
        spacing=image.spacing, features=args.features, scales=args.scales, mode=args.mode
    )
    model = train_forest(
        image,
        labels,
        spacing=image.spacing,
        spec=spec,
        class_names=args.class_names,
        stages=args.autocontext,
        autocontext_folds=args.autocontext_folds,
        n_estimators=args.trees,
        max_depth=args.max_depth or None,
        max_samples_per_class=args.samples_per_class or None,
        seed=args.seed,
        n_jobs=args.jobs,
    )
    save_model(model, args.out, overwrite=args.overwrite)
    samples = ", ".join(f"{k}={v}" for k, v in model.provenance["samples"].items())
    print(
        f"wrote {args.out}: {model.n_classes} classes ({samples} samples), "
        f"{len(model.stages)} stage(s), spacing {model.spacing} nm"
    )
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from emseg.io import open_image
    from emseg.semantic.forest import load_model, predict_blockwise

    model = load_model(args.model)
    image = open_image(args.image, spacing=args.spacing)
    out = predict_blockwise(
        model,
        image,
        out=args.output,
        class_map_out=args.class_map,
        rescale=args.rescale,
        dtype=args.dtype,
        **blockwise_kwargs(args),
    )
    extra = f" and {args.class_map}" if args.class_map else ""
    print(f"wrote {args.output}{extra}: shape {tuple(out.shape)}, dtype {out.dtype}")
    return 0
