"""Local shape descriptor targets: emseg's torch implementation against the `lsd` library.

The descriptors of ``--patches`` random FlyEM label patches (z 0-59, default 48 x 128 x 128,
sigma 80 nm at 10 nm voxels; the `boundaries-fibsem-3d-*-lsd` training patches), per patch:

- ``emseg boxes``: ``local_shape_descriptors(method="boxes")`` (emseg's CPU choice: each
  object inside its box grown by the kernel radius);
- ``emseg dense``: ``method="dense"`` (emseg's GPU choice, here on the CPU: groups of objects
  over the whole patch);
- ``lsd``: ``LsdExtractor.get_descriptors`` of the `lsd` library (Sheridan et al. 2023,
  PyPI ``lsds``; scipy ``gaussian_filter`` of each object's moments over the whole patch), when
  ``--lsd-site DIR`` holds it: ``pip install --no-deps --target DIR lsds==0.1.3
  funlib.geometry==0.3.0``. Its module imports gunpowder only for ``Roi`` and ``Coordinate``,
  which are funlib.geometry's; the benchmark loads the module file with those two in a
  stand-in ``gunpowder`` module, because gunpowder's own import chain needs packages this
  machine's index lacks.

Agreement is checked on the channels both compute alike (mean offsets, variances, volume):
the largest difference is reported (lsd uses float32 positions in nm from the patch corner,
emseg sigma units from its centre). lsd's third group is Pearson coefficients where emseg has
covariances / sigma^2, so those are not compared. Best of ``--rounds`` per method, on
``--threads`` torch threads. Writes ``bench_output/lsd.json``.

Run ``python benchmarks/bench_lsd.py [--lsd-site DIR] [--patches N] [--shape Z Y X]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from emseg.data import open_dataset_file
from emseg.semantic.deep import local_shape_descriptors

ROOT = Path(__file__).resolve().parents[1]
SIGMA, SPACING = 80.0, (10.0, 10.0, 10.0)


def load_lsd(site: str | None):
    """lsd's ``get_local_shape_descriptors``, or None with the reason."""
    if site is None:
        return None, "not run: give --lsd-site DIR (see the module docstring)"
    path = Path(site) / "lsd" / "train" / "local_shape_descriptor.py"
    if not path.is_file():
        return None, f"not found: {path}"
    sys.path.insert(0, str(site))
    from funlib.geometry import Coordinate, Roi

    sys.modules.setdefault("gunpowder", types.ModuleType("gunpowder"))
    gp = sys.modules["gunpowder"]
    gp.Coordinate, gp.Roi = Coordinate, Roi  # type: ignore[attr-defined]
    spec = importlib.util.spec_from_file_location("lsd_local_shape_descriptor", path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.get_local_shape_descriptors, "lsds 0.1.3"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lsd-site", default=None)
    ap.add_argument("--patches", type=int, default=4)
    ap.add_argument("--shape", type=int, nargs=3, default=[48, 128, 128])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench_output" / "lsd.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    gt = np.asarray(open_dataset_file("flyem_medulla", "groundtruth")[0:60]).astype(np.int64)
    rng = np.random.default_rng(0)
    patches = []
    for _ in range(args.patches):
        lo = [int(rng.integers(0, n - s + 1)) for n, s in zip(gt.shape, args.shape, strict=True)]
        patches.append(gt[tuple(slice(a, a + s) for a, s in zip(lo, args.shape, strict=True))])
    lsd_fn, lsd_note = load_lsd(args.lsd_site)

    def emseg(method):
        return [
            local_shape_descriptors(
                torch.from_numpy(p)[None], sigma_nm=SIGMA, spacing=SPACING, method=method
            )[0].numpy()
            for p in patches
        ]

    methods = {"emseg boxes": lambda: emseg("boxes"), "emseg dense": lambda: emseg("dense")}
    if lsd_fn is not None:
        methods["lsd"] = lambda: [
            lsd_fn(p.astype(np.uint64), sigma=(SIGMA,) * 3, voxel_size=SPACING) for p in patches
        ]
    best: dict[str, float] = {}
    outs: dict[str, list[np.ndarray]] = {}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            best[name] = min(best.get(name, np.inf), time.perf_counter() - t0)
    dense_vs_boxes = max(
        float(np.abs(a - b).max())
        for a, b in zip(outs["emseg boxes"], outs["emseg dense"], strict=True)
    )
    result: dict = {
        "patches": args.patches,
        "shape": args.shape,
        "objects per patch": [len(np.unique(p[p != 0])) for p in patches],
        "sigma_nm": SIGMA,
        "threads": args.threads,
        "seconds": {k: round(v, 3) for k, v in best.items()},
        "max |dense - boxes|": dense_vs_boxes,
        "lsd": lsd_note,
    }
    if "lsd" in outs:
        # lsd: offsets 0-2, variances 3-5, Pearson 6-8, volume 9; emseg: volume 0, offsets 1-3,
        # variances 4-6, covariances 7-9
        pairs = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (9, 0)]
        result["max |emseg - lsd| (offsets, variances, volume)"] = max(
            float(np.abs(r[i] - o[j]).max())
            for r, o in zip(outs["lsd"], outs["emseg boxes"], strict=True)
            for i, j in pairs
        )
        result["lsd / emseg boxes"] = round(best["lsd"] / best["emseg boxes"], 2)
        result["lsd / emseg dense"] = round(best["lsd"] / best["emseg dense"], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
