"""``emseg demo``: synthetic EM with exact ground truth, written as OME-Zarr, plus a preview."""

from __future__ import annotations

import argparse
from typing import Any

from emseg.cli._common import add_command, add_overwrite


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "demo",
        help="run the demo on synthetic EM with exact ground truth",
        description="Make a synthetic EM volume (40 x 4 x 4 nm voxels) with exact ground truth "
        "(OME-Zarr under OUT/synthetic/, a preview PNG), train a small forest on scribbles "
        "drawn from the truth (OUT/preset/), run `emseg segment` with it (OUT/segment/), "
        "evaluate the predicted mitochondria against the truth (OUT/evaluation/report.html), "
        "measure them, build a catalog and query it; OUT/demo_summary.json has every number.",
    )
    p.add_argument("--out", default="demo_output", metavar="DIR", help="output folder")
    p.add_argument(
        "--shape", nargs=3, type=int, default=[32, 256, 256], metavar=("Z", "Y", "X"),
        help="voxels of the synthetic volume",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic volume")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emseg.demo import run_demo

    result = run_demo(args.out, shape=args.shape, seed=args.seed, overwrite=args.overwrite)
    syn = result.steps.get("synthesize", {})
    lines = [f"emseg demo: outputs in {result.out}"]
    if syn:
        counts = syn["counts"]
        lines.append(
            f"  synthetic EM  shape {tuple(syn['shape'])}, spacing "
            f"{' x '.join(f'{s:g}' for s in syn['spacing'])} nm, {counts['cells']} cells, "
            f"{counts['mitochondria']} mitochondria"
        )
    for name, path in result.steps.get("write", {}).get("paths", {}).items():
        lines.append(f"  {name:<13} {path}")
    if "preview" in result.steps:
        lines.append(f"  preview       {result.steps['preview']['path']}")
    if "forest" in result.steps:
        f = result.steps["forest"]
        lines.append(
            f"  preset        {f['preset']} (forest, {f['trees']} trees, "
            f"{sum(f['scribbles'].values())} scribbled voxels, {f['seconds']:.1f} s)"
        )
    if "segment" in result.steps:
        seg = result.steps["segment"]
        lines.append(
            f"  segment       {seg['n_objects']} mitochondria in {seg['labels']} "
            f"({seg['seconds']:.1f} s)"
        )
    lines.append(f"  summary       {result.summary_path}")
    for step in result.steps.values():  # steps that answer questions (e.g. "query")
        lines.extend(step.get("answers", []))
    print("\n".join(lines))
    return 0
