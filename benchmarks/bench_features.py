"""Benchmark: emseg's filter bank vs ``skimage.feature.multiscale_basic_features`` on 256^3.

Same filters, same scales, same output: Gaussian smoothing and Hessian
eigenvalues (``intensity=True, texture=True``) at sigma 1, 2, 4, 8 voxels,
both on 2 threads. emseg is run with ``normalize=False`` so that its channels
are exactly scikit-image's (the script checks the largest difference away
from the border, where scikit-image's ``mode="nearest"`` smoothing and
emseg's ``mode="reflect"`` differ). A second row adds the edge channel
(scikit-image: Sobel of the smoothed image; emseg: central-difference
gradient magnitude: same role, not the same numbers).

Run ``python benchmarks/bench_features.py [size]``; prints a table and writes
``bench_output/features.json``. Each method runs in a forked child so its
peak extra memory is measured on its own. Numbers are indicative on a
shared machine.
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
from scipy import ndimage

SIGMAS = (1.0, 2.0, 4.0, 8.0)


def volume(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = ndimage.gaussian_filter(rng.random((n, n, n), dtype=np.float32), 2.0)
    img -= img.min()
    return (img / img.max()).astype(np.float32)


def _skimage(img: np.ndarray, edges: bool) -> np.ndarray:
    from skimage.feature import multiscale_basic_features

    return multiscale_basic_features(
        img, intensity=True, edges=edges, texture=True, sigma_min=SIGMAS[0],
        sigma_max=SIGMAS[-1], num_sigma=len(SIGMAS), workers=2,
    )  # fmt: skip


def _emseg(img: np.ndarray, edges: bool) -> np.ndarray:
    from emseg.features import FeatureSpec, compute_features

    feats = ("gaussian", "gradient", "hessian") if edges else ("gaussian", "hessian")
    spec = FeatureSpec(scales=SIGMAS, features=feats, normalize=False)
    return compute_features(img, spec=spec, n_threads=2)


def _child(name: str, n: int, edges: bool, conn: Any) -> None:
    img = volume(n)
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    import threading

    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    fn = _emseg if name == "emseg" else _skimage
    if name == "emseg":  # compile the numba kernels outside the timing
        fn(img[:16, :16, :16], edges)
    t0 = time.perf_counter()
    out = fn(img, edges)
    dt = time.perf_counter() - t0
    stop.set()
    th.join()
    if name == "skimage":
        out = np.moveaxis(out, -1, 0)
    m = 4 * int(SIGMAS[-1]) + 2
    inner = out[:, m:-m, m:-m, m:-m]
    np.save(f"/tmp/emseg_bench_features_{name}_{int(edges)}.npy", inner[:, ::4, ::4, ::4])
    conn.send({"seconds": dt, "peak_extra_mb": (peak[0] - base) / 2**20, "channels": out.shape[0]})


def run(name: str, n: int, edges: bool) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    a, b = ctx.Pipe()
    p = ctx.Process(target=_child, args=(name, n, edges, b))
    p.start()
    b.close()
    try:
        res = a.recv()
    except EOFError:
        raise RuntimeError(f"the {name} benchmark child failed (exit code {p.exitcode})") from None
    p.join()
    return res


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    rows = []
    for edges in (False, True):
        sk = run("skimage", n, edges)
        em = run("emseg", n, edges)
        a = np.load(f"/tmp/emseg_bench_features_skimage_{int(edges)}.npy")
        b = np.load(f"/tmp/emseg_bench_features_emseg_{int(edges)}.npy")
        if edges:  # channel order differs (skimage: I, E, T... per sigma; emseg: G, grad, H)
            diff = float("nan")
        else:
            diff = float(np.abs(a - b).max())
        rows.append({
            "volume": f"{n}^3 float32", "filters": "gaussian+hessian" + ("+edges" if edges else ""),
            "scales": list(SIGMAS), "channels": em["channels"],
            "skimage_s": sk["seconds"], "emseg_s": em["seconds"],
            "speedup": sk["seconds"] / em["seconds"],
            "skimage_peak_mb": sk["peak_extra_mb"], "emseg_peak_mb": em["peak_extra_mb"],
            "max_abs_diff_interior": diff,
        })  # fmt: skip
    print(f"{'filters':<24} {'ch':>3} {'skimage s':>10} {'emseg s':>8} {'speedup':>8} "
          f"{'sk MB':>7} {'em MB':>7} {'max|diff|':>10}")  # fmt: skip
    for r in rows:
        print(f"{r['filters']:<24} {r['channels']:>3} {r['skimage_s']:>10.2f} {r['emseg_s']:>8.2f} "
              f"{r['speedup']:>7.1f}x {r['skimage_peak_mb']:>7.0f} {r['emseg_peak_mb']:>7.0f} "
              f"{r['max_abs_diff_interior']:>10.2e}")  # fmt: skip
    out = Path("bench_output")
    out.mkdir(exist_ok=True)
    (out / "features.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
