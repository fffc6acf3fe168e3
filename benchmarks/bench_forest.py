"""Benchmark: random-forest prediction throughput, blockwise on 2 workers, and peak memory.

A 2-class model (50 trees, depth 16, 2D ilastik-like features at 6 scales,
48 features; optionally 2 autocontext stages) is trained on scribbles of a
synthetic EM volume, then :func:`predict_blockwise` writes the probabilities
of a (Z, 512, 512) volume into an OME-Zarr on local disk on 2 threads.
Reported: Mvoxel/s, peak extra RSS (sampled every 20 ms) and the per-voxel
time of the two tree engines of :class:`PackedForest` (scikit-learn's compiled
traversal on rebuilt trees, the default, and emseg's numba kernel) against
scikit-learn's own ``predict_proba`` on the same real feature stack, 1 and 2
threads (the exported trees must give the same numbers).

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
    # the two tree engines and scikit-learn itself on the same (real) feature stack
    from sklearn.ensemble import RandomForestClassifier

    from emseg.features import compute_features
    from emseg.semantic.forest import PackedForest

    feats = compute_features(em.image[:2], spacing=em.spacing, spec=spec, n_threads=2)
    x = np.ascontiguousarray(feats.reshape(feats.shape[0], -1).T)
    lab = scribbles[:2].reshape(-1)
    rf = RandomForestClassifier(n_estimators=50, max_depth=16, random_state=0, n_jobs=2)
    rf.fit(x[lab > 0], lab[lab > 0])
    packed = PackedForest.from_sklearn(rf)
    ref = rf.predict_proba(x[:1000])
    for engine in ("sklearn", "numba"):
        packed.predict_proba(x[:1000], engine=engine)  # compile / build once
    trees: dict[str, Any] = {"samples": int(x.shape[0]), "features": int(x.shape[1])}
    for threads in (1, 2):
        for engine in ("sklearn", "numba"):
            t0 = time.perf_counter()
            got = packed.predict_proba(x, n_threads=threads, engine=engine)
            trees[f"{engine}_engine_{threads}t_s"] = time.perf_counter() - t0
        rf.set_params(n_jobs=threads)
        t0 = time.perf_counter()
        ref = rf.predict_proba(x)
        trees[f"sklearn_rf_{threads}t_s"] = time.perf_counter() - t0
    trees["max_abs_diff"] = float(np.abs(got - ref).max())
    print(f"{'stages':>6} {'features':>8} {'seconds':>8} {'Mvox/s':>7} {'peak MB':>8}")
    for r in rows:
        print(f"{r['stages']:>6} {r['features']:>8} {r['seconds']:>8.1f} {r['mvox_per_s']:>7.2f} "
              f"{r['peak_extra_mb']:>8.0f}")  # fmt: skip
    print(f"tree traversal, {x.shape[0]} samples x {x.shape[1]} features, 50 trees (s):")
    for k, v in trees.items():
        if k.endswith("_s"):
            print(f"  {k:<24} {v:6.2f}")
    print(f"  max |diff| numba vs sklearn {trees['max_abs_diff']:.1e}")
    out = Path("bench_output")
    out.mkdir(exist_ok=True)
    (out / "forest.json").write_text(json.dumps({"blockwise": rows, "trees": trees}, indent=1))


if __name__ == "__main__":
    main()
