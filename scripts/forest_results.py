"""Reproduce emseg's random-forest results on real EM data (validation splits only).

Lucchi++ mitochondria (FIB-SEM, 5 nm isotropic):
    train on reproducible scribbles drawn from the training labels of z 0-59,
    validate on z 60-79 (full sections): foreground IoU.
ISBI 2012 membranes (ssTEM, 50 x 4 x 4 nm):
    train on slices 0-19 (a seeded random subsample of the dense labels),
    validate on slices 20-29: pixel error, V_rand and V_info (thinned).

Usage::

    python scripts/forest_results.py                  # both, about 10 min on 2 cores
    python scripts/forest_results.py --only lucchi --stages 1

Prints a table and writes ``bench_output/forest_results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from emseg.data import open_dataset_file
from emseg.features import ILASTIK_SCALES_PX, FeatureSpec
from emseg.semantic.forest import predict_blockwise, train_forest

log = logging.getLogger("forest_results")

#: Sections of z 0-59 that receive scribbles (every 6th, starting at 2).
LUCCHI_SECTIONS = tuple(range(2, 60, 6))


def lucchi_scribbles(
    mito: np.ndarray,
    *,
    seed: int = 0,
    mito_strokes: int = 12,
    background_strokes: int = 16,
    window: int = 48,
) -> np.ndarray:
    """Thin strokes drawn reproducibly from the training labels (z 0-59).

    On each section of :data:`LUCCHI_SECTIONS`: up to `mito_strokes`
    randomly chosen mitochondrion profiles get a stroke along their skeleton
    (of the profile eroded by 3 px); `background_strokes` strokes are pieces
    (a `window` px box around a random skeleton pixel) of the skeleton of the
    background eroded by 6 px (i.e. never within 6 px of a mitochondrion).
    Strokes are 3 px wide (dilated once). Labels: 1 = background, 2 =
    mitochondrion, 0 = unlabelled.
    """
    from skimage.morphology import disk, skeletonize

    rng = np.random.default_rng(seed)
    out = np.zeros(mito.shape, np.uint8)
    for z in LUCCHI_SECTIONS:
        m = mito[z]
        lab, n = ndimage.label(m)
        for i in rng.permutation(np.arange(1, n + 1))[:mito_strokes]:
            comp = ndimage.binary_erosion(lab == i, disk(3))
            sk = skeletonize(comp) if comp.any() else np.zeros_like(comp)
            out[z][ndimage.binary_dilation(sk) & (lab == i)] = 2
        bg = ndimage.binary_erosion(~m, disk(6), border_value=1)
        sk = skeletonize(bg)
        ys, xs = np.nonzero(sk)
        for k in rng.choice(ys.size, size=min(background_strokes, ys.size), replace=False):
            y0, x0 = max(0, ys[k] - window // 2), max(0, xs[k] - window // 2)
            piece = np.zeros_like(sk)
            piece[y0 : y0 + window, x0 : x0 + window] = sk[y0 : y0 + window, x0 : x0 + window]
            out[z][ndimage.binary_dilation(piece) & bg] = 1
    return out


def count_strokes(scribbles: np.ndarray) -> int:
    n = 0
    for z in range(scribbles.shape[0]):
        for c in (1, 2):
            n += ndimage.label(scribbles[z] == c, structure=np.ones((3, 3)))[1]
    return n


def _spec(spacing: tuple[float, ...]) -> FeatureSpec:
    px = spacing[-1]
    return FeatureSpec(scales=tuple(p * px for p in ILASTIK_SCALES_PX[1:]), mode="2d")


def run_lucchi(args: argparse.Namespace) -> dict:
    image = open_dataset_file("lucchi_pp", "image")
    labels = open_dataset_file("lucchi_pp", "labels")
    sp = image.spacing
    train_img = np.asarray(image[0:60])
    mito = np.asarray(labels[0:60]) > 0
    scribbles = lucchi_scribbles(mito, seed=args.seed)
    strokes = count_strokes(scribbles)
    t0 = time.perf_counter()
    model = train_forest(
        train_img, scribbles, spacing=sp, spec=_spec(sp), class_names=("background", "mitochondrion"),
        stages=args.stages, n_estimators=args.trees, max_depth=args.max_depth,
        max_samples_per_class=args.samples, seed=args.seed, n_jobs=2,
    )  # fmt: skip
    t_train = time.perf_counter() - t0
    val_img = np.asarray(image[60:80])
    truth = np.asarray(labels[60:80]) > 0
    t0 = time.perf_counter()
    probs = predict_blockwise(
        model, val_img, spacing=sp, block_shape=(1, *val_img.shape[1:]),
        chunks=(1, 256, 256), n_workers=2, progress=False,
    )  # fmt: skip
    t_pred = time.perf_counter() - t0
    pred = np.asarray(probs[1]) > 0.5
    iou = float((pred & truth).sum() / (pred | truth).sum())
    return {
        "dataset": "lucchi_pp", "train": "scribbles on z " + ",".join(map(str, LUCCHI_SECTIONS)),
        "validation": "z 60-79 (full 768 x 1024 sections)", "strokes": strokes,
        "scribbled_voxels": {"background": int((scribbles == 1).sum()),
                             "mitochondrion": int((scribbles == 2).sum())},
        "stages": args.stages, "trees": args.trees, "max_depth": args.max_depth,
        "foreground_iou": iou, "train_s": t_train, "predict_s": t_pred,
        "predict_mvox_per_s": val_img.size / t_pred / 1e6,
    }  # fmt: skip


def run_isbi(args: argparse.Namespace) -> dict:
    from emseg.metrics import isbi2012_scores, pixel_error

    image = open_dataset_file("isbi2012", "train_image")
    labels = open_dataset_file("isbi2012", "train_labels")
    sp = image.spacing
    img = np.asarray(image[...])
    lab = np.asarray(labels[...])
    train = np.where(lab[:20] > 0, 2, 1).astype(np.uint8)  # 1 = membrane, 2 = interior
    t0 = time.perf_counter()
    model = train_forest(
        img[:20], train, spacing=sp, spec=_spec(sp), class_names=("membrane", "interior"),
        stages=args.stages, n_estimators=args.trees, max_depth=args.max_depth,
        max_samples_per_class=args.samples, seed=args.seed, n_jobs=2,
    )  # fmt: skip
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = predict_blockwise(
        model, img[20:30], spacing=sp, block_shape=(1, 512, 512), chunks=(1, 256, 256),
        n_workers=2, progress=False,
    )  # fmt: skip
    t_pred = time.perf_counter() - t0
    p = np.asarray(probs[:])
    truth = lab[20:30]
    pe = pixel_error(truth > 0, p[1])
    result = {
        "dataset": "isbi2012", "train": "slices 0-19 (dense labels, subsampled)",
        "validation": "slices 20-29", "stages": args.stages, "trees": args.trees,
        "max_depth": args.max_depth, "pixel_error": float(pe.pixel_error),
        "train_s": t_train, "predict_s": t_pred,
    }  # fmt: skip
    scores = isbi2012_scores(truth, p[0])
    result.update({"v_rand": float(scores.v_rand), "v_info": float(scores.v_info)})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("lucchi", "isbi"), default=None)
    parser.add_argument("--stages", type=int, default=2, help="autocontext stages")
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--max-depth", type=int, default=16)
    parser.add_argument("--samples", type=int, default=30_000, help="max samples per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_output/forest_results.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = []
    if args.only in (None, "lucchi"):
        results.append(run_lucchi(args))
        print(json.dumps(results[-1], indent=1))
    if args.only in (None, "isbi"):
        results.append(run_isbi(args))
        print(json.dumps(results[-1], indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\n{'dataset':<10} {'metric':<28} value")
    for r in results:
        for k in ("foreground_iou", "pixel_error", "v_rand", "v_info"):
            if k in r:
                print(f"{r['dataset']:<10} {k:<28} {r[k]:.4f}")


if __name__ == "__main__":
    main()
