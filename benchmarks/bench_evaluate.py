"""Benchmark: ``emseg evaluate`` end to end and out of core.

Run ``python benchmarks/bench_evaluate.py [tiff_size] [zarr_size]`` (defaults
512 and 1024; 0 skips a part): prints a table and writes
``bench_output/evaluate.json``.

1. End to end on two uint32 TIFFs (``tiff_size``³, ~10,000 segments each):
   ``emseg evaluate --task neuron --json`` vs reading both files with
   tifffile and calling scikit-image's ``adapted_rand_error`` +
   ``variation_of_information``. Each runs in a fresh child process (wall
   time including imports, CPU time, peak RSS); emseg runs before and after
   scikit-image and the mean of the two is compared.
2. Out of core: exact table metrics (``task="all"``, no geometric scores)
   of a ``zarr_size``³ uint32 zarr pair written chunk by chunk, in a child
   process whose peak RSS is reported; once with the tables only, once with
   the per-object moments too (what ``--report`` needs).

Peak RSS is the child's ``VmHWM``: ``ru_maxrss`` of a child keeps its parent's
peak across fork + exec, and the figures of 3.1 / 3.25 GB reported before this
change were the parent's (it had just generated the inputs in memory). CPU
time (user + sys) is reported beside the wall time because the machine's CPUs
are shared; the load average before each child is recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import CHILD_PRELUDE

HERE = Path(__file__).resolve().parent

_PEAK = CHILD_PRELUDE + "def peak_mb():\n    return peak_rss_bytes() / 2**20\ncpu_s = cpu_seconds\n"

_CHILD_CLI = """
import sys, time
t0 = time.perf_counter()
from emseg.cli._main import main
rc = main(["-q", "evaluate", sys.argv[1], sys.argv[2], "--task", "neuron", "--json", sys.argv[3],
           "--no-progress", "--spacing", "1", "1", "1", "--overwrite"])
print(time.perf_counter() - t0, cpu_s(), peak_mb(), rc)
"""

_CHILD_SKIMAGE = """
import sys, time
t0 = time.perf_counter()
import tifffile
from skimage.metrics import adapted_rand_error, variation_of_information
t = tifffile.imread(sys.argv[1]); p = tifffile.imread(sys.argv[2])
are = adapted_rand_error(t, p)
voi = variation_of_information(t, p, ignore_labels=(0,))
print(time.perf_counter() - t0, cpu_s(), peak_mb(), are[0])
"""

_CHILD_OOC = """
import sys, time, json
t0 = time.perf_counter()
from emseg.evaluation import evaluate
r = evaluate(sys.argv[1], sys.argv[2], task="all", geometric=False, objects=sys.argv[3] == "1",
             progress=False, n_workers=2, spacing=(1, 1, 1))
dt = time.perf_counter() - t0
print(dt, cpu_s(), peak_mb(),
      json.dumps({k: r.metrics[k] for k in ("voi_split", "adapted_rand_error_cremi", "ap50")}))
"""


def _child(code: str, *args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _PEAK + code, *args], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return out.stdout.strip().splitlines()[-1].split(" ", 3)


def _cube_ids(z: np.ndarray, y: np.ndarray, x: np.ndarray, side: int, n: int) -> np.ndarray:
    """A partition into cubes of `side` voxels; ids 1..(cubes) in a scrambled order (uint32).

    Ids stay below the number of cubes so that scikit-image, whose memory grows
    with the largest id, is measured fairly.
    """
    g = -(-n // side) + 1
    lin = ((z // side) * g + (y // side)) * g + (x // side)
    total = g**3
    step = 7919 if total % 7919 else 7907  # coprime multiplier: a bijection of 0..total-1
    return ((lin * step) % total + 1).astype(np.uint32)


def make_slab(n: int, z0: int, z1: int, *, truth: bool) -> np.ndarray:
    """Slab z0:z1 of the synthetic pair: truth cubes of side n/21.5 (~10,000), prediction
    finer cubes shifted by a third, its first 1 % of sections set to 0."""
    side = max(2, round(n / 10_000 ** (1 / 3)))
    z, y, x = np.ogrid[z0:z1, 0:n, 0:n]
    if truth:
        return _cube_ids(z, y, x, side, n)
    s2, off = max(2, side - 3), side // 3
    lab = _cube_ids(z + off, y + off, x + off, s2, n + off)
    lab[: max(0, min(z1, max(1, n // 100)) - z0)] = 0
    return lab


def write_tiffs(n: int, folder: Path) -> tuple[str, str]:
    import tifffile

    paths = []
    for name, truth in (("truth", True), ("pred", False)):
        path = folder / f"{name}.tif"
        tifffile.imwrite(path, make_slab(n, 0, n, truth=truth), photometric="minisblack")
        paths.append(str(path))
    return paths[0], paths[1]


def write_zarrs(n: int, folder: Path, chunk: int = 128) -> tuple[str, str]:
    from emseg.io import create_image

    paths = []
    for name, truth in (("truth", True), ("pred", False)):
        path = folder / f"{name}.ome.zarr"
        arr = create_image(path, shape=(n, n, n), dtype=np.uint32, chunks=(chunk,) * 3,
                           spacing=(1, 1, 1), labels=True)  # fmt: skip
        for z0 in range(0, n, chunk):
            arr[z0 : z0 + chunk] = make_slab(n, z0, min(n, z0 + chunk), truth=truth)
        paths.append(str(path))
    return paths[0], paths[1]


def _run(code: str, *args: str) -> dict[str, float | str]:
    load = os.getloadavg()[0]
    out = _child(code, *args)
    return {"s": float(out[0]), "cpu_s": float(out[1]), "peak_rss_mb": float(out[2]),
            "extra": out[3], "load_before": load}  # fmt: skip


def main() -> None:
    tiff_n = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    zarr_n = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    results: dict[str, object] = {"tiff_size": tiff_n, "zarr_size": zarr_n}
    with tempfile.TemporaryDirectory(dir=HERE.parent) as tmp:
        folder = Path(tmp)
        if tiff_n:
            t_path, p_path = write_tiffs(tiff_n, folder)
            js = str(folder / "m.json")
            # emseg before and after scikit-image: the mean cancels a load that drifts
            cli1 = _run(_CHILD_CLI, t_path, p_path, js)
            sk = _run(_CHILD_SKIMAGE, t_path, p_path)
            cli2 = _run(_CHILD_CLI, t_path, p_path, js)
            doc = json.loads(Path(js).read_text())
            e_s = (float(cli1["s"]) + float(cli2["s"])) / 2
            e_cpu = (float(cli1["cpu_s"]) + float(cli2["cpu_s"])) / 2
            results["end_to_end"] = {
                "emseg_runs": [cli1, cli2],
                "skimage": sk,
                "emseg_evaluate_s": e_s,
                "emseg_cpu_s": e_cpu,
                "emseg_peak_rss_mb": max(float(cli1["peak_rss_mb"]), float(cli2["peak_rss_mb"])),
                "skimage_s": sk["s"],
                "skimage_cpu_s": sk["cpu_s"],
                "skimage_peak_rss_mb": sk["peak_rss_mb"],
                "speedup": float(sk["s"]) / e_s,
                "speedup_cpu": float(sk["cpu_s"]) / e_cpu,
                "adapted_rand_error_skimage": {
                    "emseg": doc["adapted_rand_error_skimage"],
                    "skimage": float(sk["extra"]),
                },
            }
            for p in Path(tmp).glob("*.tif"):
                p.unlink()
        if zarr_n:
            t0 = time.perf_counter()
            zt, zp = write_zarrs(zarr_n, folder)
            write_s = time.perf_counter() - t0
            ooc = {}
            for objects in ("0", "1"):
                r = _run(_CHILD_OOC, zt, zp, objects)
                ooc["with_objects" if objects == "1" else "tables_only"] = {
                    "evaluate_s": r["s"],
                    "cpu_s": r["cpu_s"],
                    "peak_rss_mb": r["peak_rss_mb"],
                    "load_before": r["load_before"],
                    "metrics": json.loads(str(r["extra"])),
                }
            results["out_of_core"] = {"voxels": zarr_n**3, "write_inputs_s": write_s, **ooc}
    print(f"{'measurement':<56}{'value':>14}")
    e2e = results.get("end_to_end")
    if isinstance(e2e, dict):
        print(f"{'emseg evaluate --task neuron, ' + str(tiff_n) + '^3 TIFFs (s, cpu s)':<56}"
              f"{e2e['emseg_evaluate_s']:>7.2f}{e2e['emseg_cpu_s']:>7.2f}")  # fmt: skip
        print(f"{'tifffile + skimage ARE + VOI (s, cpu s)':<56}"
              f"{e2e['skimage_s']:>7.2f}{e2e['skimage_cpu_s']:>7.2f}")  # fmt: skip
        print(f"{'speed-up (wall, cpu)':<56}{e2e['speedup']:>7.1f}{e2e['speedup_cpu']:>7.1f}")
        print(f"{'peak RSS emseg / skimage (MB)':<56}"
              f"{e2e['emseg_peak_rss_mb']:>7.0f}{e2e['skimage_peak_rss_mb']:>7.0f}")  # fmt: skip
    oc = results.get("out_of_core")
    if isinstance(oc, dict):
        for kind in ("tables_only", "with_objects"):
            print(f"{f'out of core {zarr_n}^3 zarr pair, {kind} (s, peak MB)':<56}"
                  f"{oc[kind]['evaluate_s']:>7.1f}{oc[kind]['peak_rss_mb']:>7.0f}")  # fmt: skip
    print(f"load average at the end: {os.getloadavg()}")
    out = HERE.parent / "bench_output"
    out.mkdir(exist_ok=True)
    (out / "evaluate.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
