"""Benchmark: ``emseg evaluate`` end to end and out of core.

Run ``python benchmarks/bench_evaluate.py [tiff_size] [zarr_size]`` (defaults
512 and 1024): prints a table and writes ``bench_output/evaluate.json``.

1. End to end on two uint32 TIFFs (``tiff_size``³, ~10,000 segments each):
   ``emseg evaluate --task neuron --json`` vs reading both files with
   tifffile and calling scikit-image's ``adapted_rand_error`` +
   ``variation_of_information``. Each runs in a fresh child process (wall
   time including imports, peak RSS).
2. Out of core: exact table metrics (``task="all"``, no geometric scores)
   of a ``zarr_size``³ uint32 zarr pair written chunk by chunk, in a child
   process whose peak RSS is reported.

Numbers are indicative: the machine's CPUs are shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

_CHILD_CLI = """
import resource, sys, time
t0 = time.perf_counter()
from emseg.cli._main import main
rc = main(["-q", "evaluate", sys.argv[1], sys.argv[2], "--task", "neuron", "--json", sys.argv[3],
           "--no-progress", "--spacing", "1", "1", "1", "--overwrite"])
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rc)
"""

_CHILD_SKIMAGE = """
import resource, sys, time
t0 = time.perf_counter()
import tifffile
from skimage.metrics import adapted_rand_error, variation_of_information
t = tifffile.imread(sys.argv[1]); p = tifffile.imread(sys.argv[2])
are = adapted_rand_error(t, p)
voi = variation_of_information(t, p, ignore_labels=(0,))
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, are[0])
"""

_CHILD_OOC = """
import resource, sys, time, json
t0 = time.perf_counter()
from emseg.evaluation import evaluate
r = evaluate(sys.argv[1], sys.argv[2], task="all", geometric=False, objects=False,
             progress=False, n_workers=2, spacing=(1, 1, 1))
dt = time.perf_counter() - t0
print(dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
      json.dumps({k: r.metrics[k] for k in ("voi_split", "adapted_rand_error_cremi", "ap50")}))
"""


def _child(code: str, *args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return out.stdout.strip().splitlines()[-1].split(" ", 2)


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


def main() -> None:
    tiff_n = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    zarr_n = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    results: dict[str, object] = {"tiff_size": tiff_n, "zarr_size": zarr_n}
    with tempfile.TemporaryDirectory(dir=HERE.parent) as tmp:
        folder = Path(tmp)
        t_path, p_path = write_tiffs(tiff_n, folder)
        cli = _child(_CHILD_CLI, t_path, p_path, str(folder / "m.json"))
        sk = _child(_CHILD_SKIMAGE, t_path, p_path)
        doc = json.loads((folder / "m.json").read_text())
        results["end_to_end"] = {
            "emseg_evaluate_s": float(cli[0]),
            "emseg_peak_rss_mb": int(cli[1]) / 1024,
            "skimage_s": float(sk[0]),
            "skimage_peak_rss_mb": int(sk[1]) / 1024,
            "speedup": float(sk[0]) / float(cli[0]),
            "adapted_rand_error_skimage": {
                "emseg": doc["adapted_rand_error_skimage"],
                "skimage": float(sk[2]),
            },
        }
        for p in Path(tmp).glob("*.tif"):
            p.unlink()
        t0 = time.perf_counter()
        zt, zp = write_zarrs(zarr_n, folder)
        write_s = time.perf_counter() - t0
        ooc = _child(_CHILD_OOC, zt, zp)
        results["out_of_core"] = {
            "voxels": zarr_n**3,
            "write_inputs_s": write_s,
            "evaluate_s": float(ooc[0]),
            "peak_rss_mb": int(ooc[1]) / 1024,
            "voxels_per_s": zarr_n**3 / float(ooc[0]),
            "metrics": json.loads(ooc[2]),
        }
    e2e, oc = results["end_to_end"], results["out_of_core"]
    assert isinstance(e2e, dict)
    assert isinstance(oc, dict)
    print(f"{'measurement':<52}{'value':>12}")
    print(f"{'emseg evaluate --task neuron, ' + str(tiff_n) + '^3 TIFFs (s)':<52}"
          f"{e2e['emseg_evaluate_s']:>12.2f}")  # fmt: skip
    print(f"{'tifffile + skimage ARE + VOI (s)':<52}{e2e['skimage_s']:>12.2f}")
    print(f"{'speed-up':<52}{e2e['speedup']:>12.1f}")
    print(f"{'peak RSS emseg / skimage (MB)':<52}"
          f"{e2e['emseg_peak_rss_mb']:>6.0f}/{e2e['skimage_peak_rss_mb']:<5.0f}")  # fmt: skip
    print(
        f"{'out of core ' + str(zarr_n) + '^3 zarr pair, evaluate (s)':<52}{oc['evaluate_s']:>12.1f}"
    )
    print(f"{'out of core peak RSS (MB)':<52}{oc['peak_rss_mb']:>12.0f}")
    out = HERE.parent / "bench_output"
    out.mkdir(exist_ok=True)
    (out / "evaluate.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
