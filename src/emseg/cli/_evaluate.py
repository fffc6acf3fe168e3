"""``emseg evaluate TRUTH PRED``: every segmentation metric, a JSON file, an HTML report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from emseg.cli._common import add_command, add_execution, add_overwrite, add_spacing

DESCRIPTION = """\
Evaluate a segmentation PRED against the ground truth TRUTH (any format emseg
reads; volumes of any size: the tables are summed exactly block by block).

--json writes one object whose keys are the metric names (accuracy ... mitoem_ap75,
each a number or null) plus "conventions" (the variant of every metric) and
"notes" (why a value is null, how a geometric score was computed); see
docs/metrics.md. --report writes a self-contained HTML page (and the
per-object tables as CSV next to it), --error-maps a uint8 OME-Zarr with
0 background, 1 correct, 2 false positive, 3 false negative, 4 split, 5 merge.
"""


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "evaluate",
        help="every segmentation metric of PRED against TRUTH (JSON, HTML report, error maps)",
        description=DESCRIPTION,
    )
    p.add_argument("truth", metavar="TRUTH", help="ground truth labels / classes / mask")
    p.add_argument(
        "prediction", metavar="PRED", help="predicted labels, classes, mask or probability"
    )
    p.add_argument(
        "--task",
        choices=("all", "semantic", "instance", "neuron"),
        default="all",
        help="which metrics to compute (the others are null in the JSON)",
    )
    p.add_argument(
        "--classes",
        nargs="+",
        type=int,
        default=None,
        metavar="C",
        help="class values of multi-class maps: per_class scores, top level = macro average",
    )
    add_spacing(p)
    p.add_argument("--truth-threshold", type=float, default=None, metavar="T",
                   help="foreground of TRUTH is TRUTH > T")  # fmt: skip
    p.add_argument("--pred-threshold", type=float, default=None, metavar="T",
                   help="foreground of PRED is PRED > T (float PRED: default 0.5)")  # fmt: skip
    p.add_argument(
        "--probabilities",
        default=None,
        metavar="PROB",
        help="foreground probability map in [0, 1] (pixel error, curves, ISBI sweep)",
    )
    p.add_argument(
        "--scores",
        default=None,
        metavar="FILE",
        help="confidence of each predicted object (CSV 'label,score' lines or JSON "
        '{"label": score}): gives coco_map / coco_ap50 / coco_ap75 and ranks mitoem_ap75',
    )
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the metrics as JSON")
    p.add_argument("--report", default=None, metavar="OUT.html",
                   help="write the HTML report (+ per-object CSV tables next to it)")  # fmt: skip
    p.add_argument("--error-maps", default=None, metavar="OUT.zarr",
                   help="write the uint8 error map as OME-Zarr")  # fmt: skip
    p.add_argument(
        "--block",
        nargs="+",
        type=int,
        default=None,
        metavar="N",
        help="block shape in voxels, z y x; default: chunks grown to ~128^3",
    )
    p.add_argument("--no-geometric", action="store_true",
                   help="skip Hausdorff, warping error and the ISBI sweep")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_execution(p, resume=False)
    add_overwrite(p)
    p.set_defaults(func=run)


def _check_out(path: str | None, overwrite: bool) -> None:
    from emseg.errors import OutputExistsError

    if path is not None and Path(path).exists() and not overwrite:
        raise OutputExistsError(f"{path!r} exists; pass --overwrite to replace it.")


def run(args: argparse.Namespace) -> int:
    from emseg.evaluation import evaluate, read_scores, write_error_maps

    for out in (args.json, args.report, args.error_maps):
        _check_out(out, args.overwrite)
    block = (
        None
        if args.block is None
        else (args.block[0] if len(args.block) == 1 else tuple(args.block))
    )
    spacing = None if args.spacing is None else tuple(args.spacing)
    from emseg.io import open_image

    truth: Any = open_image(args.truth, spacing=spacing)
    pred: Any = open_image(args.prediction, spacing=spacing)
    result = evaluate(
        truth,
        pred,
        task=args.task,
        classes=args.classes,
        spacing=spacing,
        truth_threshold=args.truth_threshold,
        pred_threshold=args.pred_threshold,
        probabilities=args.probabilities,
        scores=None if args.scores is None else read_scores(args.scores),
        block_shape=block,
        n_workers=args.workers,
        scheduler=args.scheduler,
        progress=not args.no_progress,
        objects=args.report is not None,
        geometric=not args.no_geometric,
    )
    doc = result.to_json()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    error_map = None
    if args.error_maps:
        error_map = write_error_maps(
            truth, pred, args.error_maps, overlap=result.overlap,
            spacing=result.spacing, truth_threshold=args.truth_threshold,
            pred_threshold=result_pred_threshold(args, result), block_shape=block,
            n_workers=args.workers, scheduler=args.scheduler, overwrite=args.overwrite,
            progress=not args.no_progress,
        )  # fmt: skip
    if args.report:
        from emseg.report import write_object_tables, write_report

        report = Path(args.report)
        write_object_tables(result, report.parent, stem=report.stem + "_objects")
        if args.truth_threshold is not None or result_pred_threshold(args, result) is not None:
            truth, pred = (
                _Thresholded(truth, args.truth_threshold),
                _Thresholded(pred, result_pred_threshold(args, result)),
            )
        write_report(result, report, truth=truth, prediction=pred, error_map=error_map,
                     title=f"emseg evaluation: {Path(args.prediction).name} vs "
                     f"{Path(args.truth).name}")  # fmt: skip
    shown = [k for k, v in doc.items() if isinstance(v, float)]
    print(", ".join(f"{k} {doc[k]:.4g}" for k in shown))
    for name, path in (
        ("json", args.json),
        ("report", args.report),
        ("error maps", args.error_maps),
    ):
        if path:
            print(f"wrote {name}: {path}")
    return 0


def result_pred_threshold(args: argparse.Namespace, result: Any) -> float | None:
    """The prediction threshold used (0.5 for a float prediction without --pred-threshold)."""
    if args.pred_threshold is not None:
        return float(args.pred_threshold)
    return 0.5 if "prediction" in result.notes else None


class _Thresholded:
    """``image > threshold`` as uint8 on access (identity without a threshold)."""

    def __init__(self, image: Any, threshold: float | None) -> None:
        self.image, self.threshold = image, threshold
        self.shape = tuple(image.shape)

    def __getitem__(self, key: Any) -> Any:
        import numpy as np

        data = np.asarray(self.image[key])
        return data if self.threshold is None else (data > self.threshold).astype(np.uint8)
