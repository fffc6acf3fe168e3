"""Benchmark: ``emseg.morphometry.measure`` vs scikit-image ``regionprops_table``.

Run ``python benchmarks/bench_morphometry.py [--size 256]``: prints a table
and writes ``bench_output/morphometry.json``.

A ``size``^3 uint32 label volume of a few thousand blobs (smoothed noise,
thresholded and labelled) with a uint8 image, spacing (40, 4, 4) nm. Each
method runs in a fresh child process (wall time of the call, peak RSS above
the child's RSS after its imports and the data load):

1. ``regionprops_table(labels, image, spacing=...)`` with area, centroid,
   bbox, axis_major_length, axis_minor_length, intensity_mean;
2. ``measure(labels, image=..., geometry=False)``: the same quantities (and
   more: all three axes, intensity std / percentiles, border flag) from one
   streaming reduction, 2 workers;
3. ``measure(...)`` with geometry (mesh surface area, Feret, convex-hull
   solidity, surface points per object) for reference.

The two tables are compared (volume, centroid, major axis) so the timing is
of equal work. Numbers are indicative: the machine's 2 CPUs are shared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from _common import CHILD_PRELUDE

SPACING = (40.0, 4.0, 4.0)

_CHILD = """
import json, sys, time
import numpy as np
labels = np.load(sys.argv[2]); image = np.load(sys.argv[3])
spacing = (40.0, 4.0, 4.0)
if sys.argv[1] == "skimage":
    from skimage.measure import regionprops_table
else:
    from emseg.morphometry import measure
reset_peak_rss()
base = peak_rss_bytes() / 2**20
t0 = time.perf_counter()
if sys.argv[1] == "skimage":
    t = regionprops_table(labels, image, spacing=spacing, properties=(
        "label", "area", "centroid", "bbox", "axis_major_length", "axis_minor_length",
        "intensity_mean"))
    out = {"n": len(t["label"]), "volume": t["area"].tolist(),
           "centroid_z": t["centroid-0"].tolist(), "major": t["axis_major_length"].tolist()}
else:
    m = measure(labels, image=image, spacing=spacing, geometry=sys.argv[1] == "emseg_geometry",
                n_workers=2)
    t = m.table
    out = {"n": len(t), "volume": t["volume_nm3"].tolist(),
           "centroid_z": t["centroid_z_nm"].tolist(), "major": t["axis_1_nm"].tolist()}
dt = time.perf_counter() - t0
peak = peak_rss_bytes() / 2**20
print(json.dumps({"seconds": dt, "peak_rss_mb": peak, "above_base_mb": peak - base, **out}))
"""


def make_volume(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels (uint32, a few thousand blobs) and a uint8 image of shape (size,)*3."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.normal(size=(size,) * 3).astype(np.float32), (1.0, 3, 3))
    fg = noise > np.quantile(noise, 0.8)
    labels, _ = ndi.label(fg)
    image = np.clip(120 + 60 * fg + rng.normal(0, 20, size=fg.shape), 0, 255).astype(np.uint8)
    return labels.astype(np.uint32), image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--out", default="bench_output/morphometry.json")
    args = p.parse_args(argv)
    labels, image = make_volume(args.size)
    n = int(labels.max())
    print(f"{args.size}^3 labels, {n} objects, spacing {SPACING} nm")
    results = {}
    with tempfile.TemporaryDirectory(prefix="emseg-bench-morph-") as tmp:
        lp, ip = Path(tmp) / "labels.npy", Path(tmp) / "image.npy"
        np.save(lp, labels)
        np.save(ip, image)
        del labels, image
        for method in ("skimage", "emseg", "emseg_geometry"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD_PRELUDE + _CHILD, method, str(lp), str(ip)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[method] = json.loads(out.stdout.strip().splitlines()[-1])
    sk, em = results["skimage"], results["emseg"]
    agree = {
        "objects_equal": sk["n"] == em["n"],
        "volume_max_rel_diff": float(
            np.max(np.abs(np.subtract(sk["volume"], em["volume"])) / np.asarray(sk["volume"]))
        ),
        "centroid_z_max_abs_diff_nm": float(
            np.max(np.abs(np.subtract(sk["centroid_z"], em["centroid_z"])))
        ),
        "major_axis_max_rel_diff": float(
            np.nanmax(
                np.abs(np.subtract(sk["major"], em["major"]))
                / np.maximum(np.asarray(sk["major"]), 1e-9)
            )
        ),
    }
    names = {
        "skimage": "skimage regionprops_table",
        "emseg": "emseg measure (geometry=False)",
        "emseg_geometry": "emseg measure (with geometry)",
    }
    print(f"{'method':<34}{'seconds':>9}{'vs skimage':>12}{'peak RSS':>11}{'above base':>12}")
    for k, r in results.items():
        print(
            f"{names[k]:<34}{r['seconds']:>9.2f}{r['seconds'] / sk['seconds']:>11.2f}x"
            f"{r['peak_rss_mb']:>8.0f} MB{r['above_base_mb']:>9.0f} MB"
        )
    print("agreement:", json.dumps(agree))
    summary = {
        "size": args.size,
        "objects": n,
        "spacing_nm": SPACING,
        "results": {
            k: {kk: v for kk, v in r.items() if kk not in ("volume", "centroid_z", "major")}
            for k, r in results.items()
        },
        "agreement": agree,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
