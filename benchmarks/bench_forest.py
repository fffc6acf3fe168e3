"""Benchmark: random-forest prediction throughput, blockwise on 2 workers, and peak memory.

A 2-class model (50 trees, depth 16, 2D ilastik-like features at 6 scales,
48 features; optionally 2 autocontext stages) is trained on scribbles of a
synthetic EM volume, then :func:`predict_blockwise` writes the probabilities
of a (Z, 512, 512) volume into an OME-Zarr on local disk on 2 threads.
Reported: Mvoxel/s, peak extra RSS (sampled every 20 ms) and the per-voxel
agreement with scikit-learn's ``predict_proba`` on a sample (the exported
trees must give the same numbers).

Run ``python benchmarks/bench_forest.py [Z]``; prints a table and writes
``bench_output/forest.json``. Numbers are indicative on a shared machine.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil


def _peak_during(fn: Any) -> tuple[Any, float, float]:
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    stop.set()
    th.join()
    return out, dt, (peak[0] - base) / 2**20


def main() -> None:
    from emseg.data import synthetic_em
    from emseg.features import ILASTIK_SCALES_PX, FeatureSpec
    from emseg.semantic.forest import predict_blockwise, train_forest

    nz = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    em = synthetic_em((nz, 512, 512), seed=2, spacing=(40.0, 4.0, 4.0))
    truth = np.where(em.membranes, 2, 1).astype(np.uint8)
    rng = np.random.default_rng(0)
    scribbles = np.zeros_like(truth)
    for c in (1, 2):
        idx = np.flatnonzero(truth.ravel() == c)
        scribbles.flat[rng.choice(idx, 5000, replace=False)] = c
    spec = FeatureSpec(scales=tuple(4.0 * p for p in ILASTIK_SCALES_PX[1:]), mode="2d")
    rows = []
    for stages in (1, 2):
        model = train_forest(
            em.image, scribbles, spacing=em.spacing, spec=spec, stages=stages,
            n_estimators=50, max_depth=16, seed=0,
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "p.ome.zarr"
            _, dt, peak = _peak_during(
                lambda m=model, o=out: predict_blockwise(
                    m, em.image, out=o, spacing=em.spacing, block_shape=(2, 256, 256),
                    chunks=(2, 256, 256), n_workers=2, progress=False,
                )
            )  # fmt: skip
        rows.append({
            "volume": f"{nz}x512x512 uint8", "stages": stages, "trees": 50, "max_depth": 16,
            "features": model.n_stage_features(stages - 1), "workers": 2,
            "block": [2, 256, 256], "seconds": dt, "mvox_per_s": em.image.size / dt / 1e6,
            "peak_extra_mb": peak,
        })  # fmt: skip
    # exported trees vs scikit-learn on the same samples
    from sklearn.ensemble import RandomForestClassifier

    from emseg.semantic.forest import PackedForest

    x = rng.normal(size=(200_000, 48)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    rf = RandomForestClassifier(n_estimators=50, max_depth=16, random_state=0, n_jobs=2)
    rf.fit(x[:20_000], y[:20_000])
    packed = PackedForest.from_sklearn(rf)
    packed.predict_proba(x[:10])
    t0 = time.perf_counter()
    ours = packed.predict_proba(x, n_threads=2)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = rf.predict_proba(x)
    t_sk = time.perf_counter() - t0
    trees = {
        "samples": x.shape[0], "emseg_s": t_ours, "sklearn_s": t_sk,
        "max_abs_diff": float(np.abs(ours - ref).max()),
    }  # fmt: skip
    print(f"{'stages':>6} {'features':>8} {'seconds':>8} {'Mvox/s':>7} {'peak MB':>8}")
    for r in rows:
        print(f"{r['stages']:>6} {r['features']:>8} {r['seconds']:>8.1f} {r['mvox_per_s']:>7.2f} "
              f"{r['peak_extra_mb']:>8.0f}")  # fmt: skip
    print(f"tree traversal, {x.shape[0]} samples x 50 trees: emseg {t_ours:.2f} s, "
          f"sklearn {t_sk:.2f} s, max |diff| {trees['max_abs_diff']:.1e}")  # fmt: skip
    out = Path("bench_output")
    out.mkdir(exist_ok=True)
    (out / "forest.json").write_text(json.dumps({"blockwise": rows, "trees": trees}, indent=1))


if __name__ == "__main__":
    main()
