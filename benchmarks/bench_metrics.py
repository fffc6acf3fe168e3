"""Benchmark: one overlap table + every Rand/VOI metric vs scikit-image, on 512^3 labels.

Run ``python benchmarks/bench_metrics.py [size]``: prints a table and writes
``bench_output/metrics.json``. Each method runs in a forked child so that its
peak extra memory (peak RSS minus RSS at start) is measured on its own.
Numbers are indicative on a shared machine.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from _common import peak_rss_bytes, reset_peak_rss


def blocky_labels(n: int, block: int, rng: np.random.Generator, offset: int = 0) -> np.ndarray:
    """A (n, n, n) uint32 partition into cubes of side `block` with shuffled ids."""
    g = -(-(n + offset) // block)
    ids = (rng.permutation(g**3).astype(np.uint32) + 1).reshape(g, g, g)
    lab = ids.repeat(block, 0).repeat(block, 1).repeat(block, 2)
    return np.ascontiguousarray(lab[offset : offset + n, offset : offset + n, offset : offset + n])


def make_volumes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Truth: ~10,000 cubes (side n/21.5); prediction: shifted, finer cubes, 1 % set to 0."""
    rng = np.random.default_rng(seed)
    side = max(2, round(n / 10_000 ** (1 / 3)))
    truth = blocky_labels(n, side, rng)
    pred = blocky_labels(n, max(2, side - 3), rng, offset=side // 3)
    pred[: max(1, n // 100)] = 0
    return truth, pred


def _numpy_pass(t: np.ndarray, p: np.ndarray) -> Any:
    return int((t == p).sum())


def _emseg(t: np.ndarray, p: np.ndarray) -> Any:
    from emseg.metrics import neuron_metrics, overlap_table

    return neuron_metrics(overlap_table(t, p))


def _skimage(t: np.ndarray, p: np.ndarray) -> Any:
    from skimage.metrics import adapted_rand_error, variation_of_information

    are = adapted_rand_error(t, p)
    vi = variation_of_information(t, p, ignore_labels=(0,))
    return {"adapted_rand_error_skimage": float(are[0]), "voi_split": float(vi[0]),
            "voi_merge": float(vi[1])}  # fmt: skip


METHODS = {"numpy_pass": _numpy_pass, "emseg_all_rand_voi": _emseg, "skimage_are_voi": _skimage}


def _child(name: str, t: np.ndarray, p: np.ndarray, q: Any) -> None:
    reset_peak_rss()
    rss0 = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    out = METHODS[name](t, p)
    dt = time.perf_counter() - t0
    peak = peak_rss_bytes()
    q.put({"seconds": dt, "extra_memory_gb": max(0, peak - rss0) / 1e9, "result": out})


def run(name: str, t: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, t, p, q))
    proc.start()
    res = q.get()
    proc.join()
    return res


def main(n: int = 512) -> dict[str, Any]:
    truth, pred = make_volumes(n)
    # compile the numba kernel once, outside the measurement (cached on disk afterwards)
    _emseg(truth[:2], pred[:2])
    results = {name: run(name, truth, pred) for name in METHODS}
    base = results["numpy_pass"]["seconds"]
    report = {
        "shape": [n, n, n],
        "dtype": "uint32",
        "truth_segments": int(np.unique(truth).size),
        "prediction_segments": int(np.unique(pred).size),
        "cpus": psutil.cpu_count(),
        "methods": results,
        "emseg_vs_numpy_pass": results["emseg_all_rand_voi"]["seconds"] / base,
        "skimage_vs_emseg": results["skimage_are_voi"]["seconds"]
        / results["emseg_all_rand_voi"]["seconds"],
    }
    print(f"{n}^3 uint32, {report['truth_segments']} / {report['prediction_segments']} segments")
    print(f"{'method':<22}{'seconds':>10}{'x numpy':>10}{'extra GB':>10}")
    for name, r in results.items():
        print(f"{name:<22}{r['seconds']:>10.3f}{r['seconds'] / base:>10.1f}"
              f"{r['extra_memory_gb']:>10.2f}")  # fmt: skip
    print(f"skimage / emseg: {report['skimage_vs_emseg']:.1f}x")
    out = Path("bench_output")
    out.mkdir(exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2, default=float))
    return report


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 512)
