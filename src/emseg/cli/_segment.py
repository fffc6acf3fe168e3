"""``emseg segment PRESET IMAGE OUT``: raw EM to instances with shipped settings."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from emseg._checks import tta_mode
from emseg.cli._common import (
    add_command,
    add_execution,
    add_overwrite,
    add_spacing,
    blockwise_kwargs,
)

DESCRIPTION = """\
Chain blockwise prediction and blockwise instance segmentation with a
preset's model and settings (sizes in nm). OUT is a folder:

  OUT/probabilities.ome.zarr   uint8 round(255 p), one channel per class
  OUT/labels.ome.zarr          uint64 instances (provenance names the preset)
  OUT/segment.json             preset, image, stages done (--resume reads it)

  emseg segment --list
  emseg segment mitochondria volume.tif mito_out --workers 4
  emseg segment ./my-preset volume.ome.zarr out --resume

PRESET is a shipped preset's name (see --list) or a preset directory
(format: emseg/presets/README.md). An image whose spacing differs from the
preset's training spacing is refused unless --rescale.
"""


def register(sub: Any) -> None:
    p = add_command(
        sub, "segment", help="raw EM to instances with a preset (model + settings)",
        description=DESCRIPTION,
    )  # fmt: skip
    p.add_argument("preset", nargs="?", metavar="PRESET", help="preset name or directory")
    p.add_argument("image", nargs="?", metavar="IMAGE", help="grey-level image (any format)")
    p.add_argument("output", nargs="?", metavar="OUT", help="output folder")
    p.add_argument("--list", action="store_true", help="list the shipped presets and exit")
    p.add_argument(
        "--rescale", action="store_true", help="accept another spacing than the preset's"
    )
    p.add_argument("--block", nargs="+", type=int, default=None, metavar="N", help="block shape")
    p.add_argument("--chunks", nargs="+", type=int, default=None, metavar="N", help="chunk shape")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument(
        "--device",
        default="auto",
        help="where a deep preset's networks run: auto (a CUDA GPU when PyTorch sees one), "
        "cpu, cuda or cuda:N",
    )
    add_spacing(p)
    add_execution(p)
    add_overwrite(p)
    p.set_defaults(func=run)


def _scores(scores: dict[str, Any]) -> str:
    if not scores:
        return "not scored yet"
    return ", ".join(
        f"{k} {v:.3f}" if isinstance(v, int | float) else f"{k} {v}" for k, v in scores.items()
    )


def list_lines() -> list[str]:
    """The lines of ``emseg segment --list``."""
    from emseg.presets import list_presets

    presets = list_presets()
    if not presets:
        return ["no presets installed"]
    lines = []
    for p in presets:
        where = _validation_where(p.validation)
        trained = f"trained at {' x '.join(f'{s:g}' for s in p.spacing)} nm"
        if p.is_ensemble:
            model = [
                f"  model       deep ensemble, mean of {len(p.members)} members "
                f"(class {p.prediction['class']!r}), {trained}",
                *_member_lines(p.members),
            ]
        else:
            model = [
                f"  model       {p.kind} {p.prediction['model']} "
                f"(class {p.prediction['class']!r}), {trained}",
                *_prediction_lines(p.kind, p.prediction),
            ]
        lines += [
            f"{p.name}: {p.description}",
            f"  segments    {p.target}",
            *model,
            f"  instances   {p.method}{_agglomeration_note(p)}",
            f"  validation  {_scores(p.scores)}  ({where})",
        ]
    return lines


def _agglomeration_note(p: Any) -> str:
    """`` (LINKAGE linkage, threshold T)`` for an agglomerate preset, else empty."""
    agg = p.instances.get("agglomeration") if p.method == "agglomerate" else None
    if not isinstance(agg, dict):
        return ""
    return f" ({agg.get('linkage', 'mean')} linkage, threshold {agg['threshold']:g})"


def _prediction_lines(kind: str, prediction: dict[str, Any]) -> list[str]:
    """How a deep preset predicts: ``prediction.planes`` and ``prediction.tta`` (one line).

    A forest preset predicts one way only and gets no line.
    """
    if kind != "deep":
        return []
    return [f"  predicts    {_how(int(prediction.get('planes', 1)), prediction.get('tta', False))}"]


def _how(planes: int, tta: Any) -> str:
    """``planes N (...), tta on|off`` for one deep model."""
    views = "(xy, zx and zy planes, averaged)" if planes == 3 else "(as trained)"
    how = {"off": "off", "flips": "on (test-time flips)",
           "flips+transpose": "on (test-time flips and y/x transpose)"}[tta_mode(tta)]  # fmt: skip
    return f"planes {planes} {views}, tta {how}"


def _member_lines(members: Sequence[dict[str, Any]]) -> list[str]:
    """One line per ensemble member: its model, planes, tta and weight (if not 1)."""
    out = []
    total = sum(float(m.get("weight", 1.0)) for m in members)
    for i, m in enumerate(members, 1):
        w = float(m.get("weight", 1.0))
        share = f", weight {w:g} ({w / total:.0%} of the mean)" if w != 1 else ""
        out.append(f"  member {i}    {m['model']}: {_how(int(m['planes']), m['tta'])}{share}")
    return out


def _validation_where(val: dict[str, Any]) -> str:
    """``"lucchi_pp, scored on z 60-79 (the tuning split)"``: each split once."""
    parts = [str(val.get("dataset") or "?")]
    scored, tuned = val.get("scored_on"), val.get("tuned_on")
    if scored:
        parts.append(f"scored on {scored}")
    if tuned and str(tuned) not in str(scored or ""):
        parts.append(f"tuned on {tuned}")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    from emseg.errors import EmsegValueError

    if args.list:
        print("\n".join(list_lines()))
        return 0
    if not (args.preset and args.image and args.output):
        raise EmsegValueError(
            "PRESET, IMAGE and OUT are required (e.g. `emseg segment mitochondria vol.tif out`); "
            "`emseg segment --list` shows the presets."
        )
    from emseg.presets import segment

    result = segment(
        args.image,
        args.preset,
        args.output,
        spacing=args.spacing,
        rescale=args.rescale,
        device=args.device,
        **blockwise_kwargs(args),
    )
    print(
        f"wrote {result.labels}: {result.n_objects} objects (preset {result.preset}); "
        f"probabilities in {result.probabilities}"
    )
    return 0
