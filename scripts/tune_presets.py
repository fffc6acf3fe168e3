"""Tune a shipped preset's instance settings on its validation split and write preset.json.

``mitochondria``: the shipped deep model ``mitochondria`` (trained on Lucchi++
z 0-59) predicts Lucchi++ z 60-79 (validation); a grid of components
(threshold, min size in nm^3) and distance-transform watershed (threshold,
seed distance in nm, min size) settings is scored against the 3D connected
components of the validation labels with AP50, AP75 and PQ
(:mod:`emseg.metrics`). The best setting (by PQ, then AP75) goes into
``src/emseg/presets/mitochondria/preset.json`` with its scores. The settings
are tuned and scored on the same validation sections (no held-out test
split is used: Lucchi++'s test volume is left untouched), which the
preset's ``validation`` block states. With ``--verify`` (default) the
chosen preset is then run end to end with :func:`emseg.presets.segment`
(blockwise) on the validation sections and those scores are the ones
written.

Usage::

    python scripts/tune_presets.py mitochondria                # a few minutes on 2 cores
    python scripts/tune_presets.py mitochondria --model runs/mitochondria --no-verify

Prints a table and writes ``bench_output/tune_<preset>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("tune_presets")

ROOT = Path(__file__).resolve().parents[1]
#: Lucchi++ validation sections (the training config's val_z).
VALIDATION_Z = (60, 80)
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_SIZES_NM3 = (0.0, 2.5e5, 1e6, 4e6)
SEED_DISTANCES_NM = (100.0, 200.0, 400.0)
MAX_HOLE_NM3 = 1e6
HALO_NM = (320.0, 320.0, 320.0)


def predict_channel(model: Any, image: np.ndarray, channel: str) -> np.ndarray:
    """The model's probability of `channel`, stored as segment stores it (uint8, back to p)."""
    from emseg.semantic.deep import predict_image
    from emseg.semantic.forest import quantize

    names = list(model.output_names)
    if channel not in names:
        raise SystemExit(f"the model outputs {names}; no channel {channel!r}")
    probs = predict_image(model, image)[names.index(channel)]
    return quantize(probs).astype(np.float32) / np.float32(255.0)


def truth_instances(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """3D connected components (26-connected) of a binary label volume."""
    from emseg.instance import threshold_components

    return threshold_components(mask.astype(bool), spacing=spacing)


def scores(truth: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AP50, AP75 (DSB-style TP / (TP + FP + FN)) and PQ, from one overlap table."""
    from emseg.metrics import average_precision, overlap_table, panoptic_quality

    table = overlap_table(truth, labels)
    ap = average_precision(table, thresholds=[0.5, 0.75])
    pq = panoptic_quality(table)
    return {
        "ap50": float(ap.ap[0]),
        "ap75": float(ap.ap[1]),
        "pq": float(pq.pq),
        "n_predicted": int(len(np.unique(labels)) - int((labels == 0).any())),
        "n_truth": int(len(np.unique(truth)) - int((truth == 0).any())),
    }


def _remove_small(labels: np.ndarray, min_size_nm3: float, spacing: Sequence[float]) -> np.ndarray:
    """What segment's size filter does after a watershed: drop, then renumber 1..N."""
    if min_size_nm3 <= 0:
        return labels
    counts = np.bincount(labels.ravel())
    keep = counts * float(np.prod(spacing)) >= min_size_nm3
    keep[0] = False
    lut = np.zeros(counts.size, np.uint32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return lut[labels]


def candidates(
    thresholds: Sequence[float] = THRESHOLDS,
    min_sizes: Sequence[float] = MIN_SIZES_NM3,
    seed_distances: Sequence[float] = SEED_DISTANCES_NM,
) -> list[dict[str, Any]]:
    """The grid: one ``instances`` block (preset format) per setting."""
    out: list[dict[str, Any]] = []
    for t, m in itertools.product(thresholds, min_sizes):
        out.append({
            "method": "components",
            "components": {"threshold": t, "max_hole_nm3": MAX_HOLE_NM3},
            "min_size_nm3": m,
            "halo_nm": list(HALO_NM),
        })  # fmt: skip
    for t, d, m in itertools.product(thresholds, seed_distances, min_sizes):
        out.append({
            "method": "watershed",
            "watershed": {"threshold": t, "min_seed_distance_nm": d},
            "min_size_nm3": m,
            "halo_nm": list(HALO_NM),
        })  # fmt: skip
    return out


def run_instances(
    prob: np.ndarray,
    inst: dict[str, Any],
    spacing: Sequence[float],
    cache: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """The in-memory equivalent of segment's instance step for one ``instances`` block.

    The size filter comes last in both methods (components: after holes are
    filled), so the objects before it are computed once per setting of the
    other parameters (`cache`) and filtered per min size (ids renumbered,
    which no score depends on).
    """
    from emseg.instance import distance_watershed, threshold_components

    method = inst["method"]
    key = json.dumps([method, inst[method]], sort_keys=True)
    base = None if cache is None else cache.get(key)
    if base is None:
        if method == "components":
            base = threshold_components(prob, spacing=spacing, **inst["components"])
        else:
            base = distance_watershed(prob, spacing=spacing, **inst["watershed"])
        if cache is not None:
            cache.clear()  # one base at a time: the grid is ordered by base
            cache[key] = base
    return _remove_small(base, inst["min_size_nm3"], spacing)


def tune(
    prob: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float],
    grid: Sequence[dict[str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score every setting of `grid`; return the best (by PQ, then AP75, AP50) and all rows."""
    from emseg.errors import EmsegError

    rows = []
    cache: dict[str, np.ndarray] = {}
    for inst in grid:
        t0 = time.perf_counter()
        try:
            s: dict[str, Any] = scores(truth, run_instances(prob, inst, spacing, cache))
        except EmsegError as exc:  # a setting the method refuses (e.g. no background at all)
            cache.clear()
            s = {"ap50": np.nan, "ap75": np.nan, "pq": np.nan, "n_predicted": -1, "n_truth": -1,
                 "error": str(exc)}  # fmt: skip
        rows.append({"instances": inst, **s, "seconds": round(time.perf_counter() - t0, 2)})
        log.info("%s -> %s", json.dumps(inst), s)

    def key(r: dict[str, Any]) -> tuple[float, ...]:
        return tuple(-1.0 if np.isnan(r[k]) else r[k] for k in ("pq", "ap75", "ap50"))

    ok = [r for r in rows if "error" not in r]
    if not ok:
        raise SystemExit("every setting of the grid failed: " + rows[0]["error"])
    best = max(ok, key=key)
    return best, rows


def preset_document(
    name: str,
    best: dict[str, Any],
    *,
    model: str,
    spacing: Sequence[float],
    model_card: dict[str, Any],
    verified: dict[str, float] | None,
) -> dict[str, Any]:
    from emseg import __version__

    final = verified if verified is not None else best
    return {
        "format": "emseg.preset",
        "format_version": 1,
        "name": name,
        "description": "mitochondria in FIB-SEM / SBF-SEM (~5 nm voxels): shipped U-Net + "
        + best["instances"]["method"],
        "target": "mitochondria",
        "spacing": list(spacing),
        "prediction": {"kind": "deep", "model": model, "class": "mitochondrion"},
        "instances": best["instances"],
        "validation": {
            "dataset": "lucchi_pp",
            "trained_on": "z 0-59",
            "tuned_on": f"z {VALIDATION_Z[0]}-{VALIDATION_Z[1] - 1}",
            "scored_on": f"z {VALIDATION_Z[0]}-{VALIDATION_Z[1] - 1} (the tuning split)",
            "truth": "3D connected components (26-connected) of the labels",
            "scores": {k: round(float(final[k]), 4) for k in ("ap50", "ap75", "pq")},
            "other": {
                "n_predicted": final["n_predicted"],
                "n_truth": final["n_truth"],
                "blockwise_segment": verified is not None,
            },
        },
        "training": {
            "command": f"python scripts/tune_presets.py {name}",
            "model_command": model_card.get("command", ""),
            "emseg": __version__,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
        "files": {},
    }


def verify(
    preset_dir: Path, image: np.ndarray, truth: np.ndarray, spacing: Sequence[float]
) -> dict[str, float]:
    """Run the written preset with emseg.presets.segment (blockwise) and score its labels."""
    from emseg.io import open_image
    from emseg.presets import segment

    with tempfile.TemporaryDirectory() as tmp:
        result = segment(image, preset_dir, Path(tmp) / "out", spacing=spacing, progress=False)
        labels = np.asarray(open_image(result.labels)[...])
    return scores(truth, labels)


def tune_mitochondria(args: argparse.Namespace) -> dict[str, Any]:
    from emseg.data import DATASETS, open_dataset_file
    from emseg.presets import load_preset, presets_dir, write_preset
    from emseg.semantic.deep import load_model, resolve_model

    spacing = DATASETS["lucchi_pp"].spacing
    model_path = resolve_model(args.model)
    model = load_model(model_path)
    card_file = model_path / "card.json"
    card = json.loads(card_file.read_text()) if card_file.is_file() else {}
    z0, z1 = VALIDATION_Z
    image = np.asarray(open_dataset_file("lucchi_pp", "image")[z0:z1])
    labels = np.asarray(open_dataset_file("lucchi_pp", "labels")[z0:z1])
    truth = truth_instances(labels > 0, spacing)
    t0 = time.perf_counter()
    prob = predict_channel(model, image, "mitochondrion")
    log.info("predicted z %d-%d in %.1f s", z0, z1 - 1, time.perf_counter() - t0)
    grid = candidates()
    best, rows = tune(prob, truth, spacing, grid)
    out_dir = Path(args.out) if args.out else presets_dir() / "mitochondria"
    shipped_name = "mitochondria" if args.model == "mitochondria" else str(model_path.resolve())
    doc = preset_document(
        "mitochondria", best, model=shipped_name, spacing=spacing, model_card=card, verified=None
    )
    write_preset(doc, out_dir)
    verified = None
    if args.verify:
        verified = verify(out_dir, image, truth, spacing)
        doc = preset_document(
            "mitochondria", best, model=shipped_name, spacing=spacing, model_card=card,
            verified=verified,
        )  # fmt: skip
        write_preset(doc, out_dir)
    load_preset(out_dir)
    return {
        "preset": str(out_dir),
        "best": best,
        "verified": verified,
        "grid": rows,
        "predict_seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", choices=["mitochondria"], help="which preset to tune")
    parser.add_argument(
        "--model", default="mitochondria", help="shipped model name or a model folder"
    )
    parser.add_argument("--out", default=None, help="preset folder (default: the shipped one)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the blockwise end-to-end check of the chosen preset")  # fmt: skip
    parser.add_argument("--report", default=str(ROOT / "bench_output"), help="folder for the JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = tune_mitochondria(args)
    report = Path(args.report)
    report.mkdir(parents=True, exist_ok=True)
    (report / f"tune_{args.preset}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'method':<11} {'settings':<58} {'AP50':>6} {'AP75':>6} {'PQ':>6} {'n':>5}")
    for r in sorted(result["grid"], key=lambda r: -np.nan_to_num(r["pq"], nan=-1))[:10]:
        inst = r["instances"]
        settings = json.dumps({**inst[inst["method"]], "min_size_nm3": inst["min_size_nm3"]})
        print(
            f"{inst['method']:<11} {settings:<58} {r['ap50']:6.3f} {r['ap75']:6.3f} "
            f"{r['pq']:6.3f} {r['n_predicted']:5d}"
        )
    if result["verified"]:
        v = result["verified"]
        print(f"verified with emseg.presets.segment (blockwise): AP50 {v['ap50']:.3f}, "
              f"AP75 {v['ap75']:.3f}, PQ {v['pq']:.3f}")  # fmt: skip
    print(f"wrote {result['preset']}/preset.json and {report / f'tune_{args.preset}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
