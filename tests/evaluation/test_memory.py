"""Peak memory of an out-of-core evaluation is bounded by blocks, not by the volume."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status"),
]

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import psutil
    from emseg.evaluation import evaluate
    from emseg.io import open_image

    truth, pred = open_image(sys.argv[1]), open_image(sys.argv[2])
    # warm up on a tiny pair: lazy imports and compiled kernels are not the volume's memory
    t = np.zeros((4, 9, 9), np.uint32)
    t[:, 2:6, 2:6] = 1
    evaluate(t, np.roll(t, 1, axis=2), task="all", spacing=(1, 1, 1), block_shape=(2, 9, 9),
             progress=False)
    t0 = time.perf_counter()
    baseline = psutil.Process().memory_info().rss
    r = evaluate(truth, pred, task="all", objects=True, geometric=True, block_shape=(32, 128, 128),
                 n_workers=2, progress=False, in_memory_limit=2**18)
    # VmHWM: the peak RSS of this process image (ru_maxrss would keep the parent's peak)
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    print(json.dumps({"baseline": baseline, "peak": peak, "s": time.perf_counter() - t0, "voi_split": r.metrics["voi_split"],
                      "n_objects": len(r.truth_objects), "pairs": len(r.overlap)}))
    """
)

SIDE = 192  # y, x
CUBE = 32


def _labels(z0: int, z1: int, *, truth: bool) -> np.ndarray:
    z, y, x = np.ogrid[z0:z1, 0:SIDE, 0:SIDE]
    shift = 0 if truth else 3  # prediction: the truth cubes moved by 3 voxels in x
    g = SIDE // CUBE + 1
    lab = ((z // CUBE) * g + y // CUBE) * g + (x + shift) // CUBE + 1
    lab = lab.astype(np.uint32)
    if not truth:
        lab[(np.arange(z0, z1) % 17) == 0] = 0  # a few empty predicted sections
    return lab


def _write(path, depth: int, *, truth: bool) -> None:
    from emseg.io import create_image

    arr = create_image(path, shape=(depth, SIDE, SIDE), dtype=np.uint32, chunks=(32, 64, 64),
                       spacing=(30.0, 8.0, 8.0), labels=True)  # fmt: skip
    for z0 in range(0, depth, 32):
        arr[z0 : z0 + 32] = _labels(z0, min(depth, z0 + 32), truth=truth)


def _measure(tmp_path, depth: int) -> dict:
    run = tmp_path / str(depth)
    run.mkdir()
    _write(run / "truth.ome.zarr", depth, truth=True)
    _write(run / "pred.ome.zarr", depth, truth=False)
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    r = subprocess.run(
        [sys.executable, str(script), str(run / "truth.ome.zarr"), str(run / "pred.ome.zarr")],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_evaluate_peak_memory_does_not_grow_with_the_volume(tmp_path):
    """Every metric (tables, object moments, per-section warping, per-pair Hausdorff) of a
    volume 5x deeper needs no more memory.

    An evaluation that held either volume whole would grow by at least the
    difference of one volume (27 MiB here; both: 54 MiB); block-bounded work
    stays within allocator noise (blocks are at most 2 MiB, tables a few hundred kB).
    """
    small, large = 48, 240
    a = _measure(tmp_path, small)
    b = _measure(tmp_path, large)
    assert b["n_objects"] > 4 * a["n_objects"] / 2  # the large volume has more objects
    assert a["voi_split"] > 0
    assert b["voi_split"] > 0
    mib = 2**20
    growth_small = a["peak"] - a["baseline"]
    growth_large = b["peak"] - b["baseline"]
    one_volume = (large - small) * SIDE * SIDE * 4
    assert growth_large - growth_small < 0.25 * one_volume, (
        f"peak growth rose from {growth_small / mib:.0f} to {growth_large / mib:.0f} MiB "
        f"when each volume grew by {one_volume / mib:.0f} MiB"
    )
    # and in absolute terms: well below the two volumes the large evaluation reads
    assert growth_large < 0.5 * 2 * large * SIDE * SIDE * 4, (
        f"peak grew by {growth_large / mib:.0f} MiB on two {large * SIDE * SIDE * 4 / mib:.0f} "
        "MiB volumes"
    )
