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
    background_strokes: int = 24,
    length: int = 40,
    margin: int = 3,
) -> np.ndarray:
    """Thin strokes drawn reproducibly from the training labels (z 0-59).

    On each section of :data:`LUCCHI_SECTIONS`: up to `mito_strokes`
    randomly chosen mitochondrion profiles get a stroke along their skeleton
    (of the profile eroded by 3 px); `background_strokes` straight strokes of
    `length` px at random positions and orientations are kept where they lie
    entirely in the background at least `margin` px from a mitochondrion (so
    they cross membranes, vesicles and cytoplasm as a user's strokes would).
    Strokes are 3 px wide (dilated once). Labels: 1 = background, 2 =
    mitochondrion, 0 = unlabelled.
    """
    from skimage.draw import line
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
        allowed = ~ndimage.binary_dilation(m, disk(margin + 1))
        h, w = m.shape
        drawn = tries = 0
        while drawn < background_strokes and tries < 100 * background_strokes:
            tries += 1
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            a = rng.uniform(0, np.pi)
            y1, x1 = int(y0 + length * np.sin(a)), int(x0 + length * np.cos(a))
            if not (0 <= y1 < h and 0 <= x1 < w):
                continue
            rr, cc = line(int(y0), int(x0), y1, x1)
            if not allowed[rr, cc].all():
                continue
            stroke = np.zeros_like(m)
            stroke[rr, cc] = True
            out[z][ndimage.binary_dilation(stroke) & allowed] = 1
            drawn += 1
    return out


def count_strokes(scribbles: np.ndarray) -> int:
    n = 0
    for z in range(scribbles.shape[0]):
        for c in (1, 2):
            n += ndimage.label(scribbles[z] == c, structure=np.ones((3, 3)))[1]
    return n


#: Lucchi++ scales and autocontext sigmas in xy pixels (5 nm), chosen on the training
#: split (scribbles on z < 48, scored on z 50-59): larger scales than ilastik's
#: help with mitochondria that are 40-100 px across.
LUCCHI_SCALES_PX = (1.0, 1.6, 3.5, 5.0, 10.0, 20.0)
LUCCHI_CONTEXT_PX = (2.0, 8.0, 24.0)


def _spec(
    spacing: tuple[float, ...], pixels: tuple[float, ...] = ILASTIK_SCALES_PX[1:]
) -> FeatureSpec:
    px = spacing[-1]
    return FeatureSpec(scales=tuple(p * px for p in pixels), mode="2d")


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
        train_img, scribbles, spacing=sp, spec=_spec(sp, LUCCHI_SCALES_PX),
        context_scales=tuple(p * sp[-1] for p in LUCCHI_CONTEXT_PX),
        class_names=("background", "mitochondrion"),
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
        "scales_nm": list(model.spec.scales), "context_nm": list(model.context_scales),
        "foreground_iou": iou, "precision": float((pred & truth).sum() / pred.sum()),
        "recall": float((pred & truth).sum() / truth.sum()), "train_s": t_train, "predict_s": t_pred,
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
