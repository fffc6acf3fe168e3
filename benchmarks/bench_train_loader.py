"""Training batch drawing: emseg's batch workers against drawing in process and a pool.

One run on the FlyEM medulla volume with a 3D training config (default
``configs/boundaries-fibsem-3d.yaml``: batches of 2 x 32x96x96 patches, elastic
deformation, intensity changes, noise and blur), methods alternated over ``--rounds``
rounds, best time per method, all drawing the same batches (checked):

- ``serial``: ``_batch_arrays`` in this process (``emseg train --workers 0``), from the
  in-memory training slab;
- ``emseg workers``: ``_BatchPool`` (a torch ``DataLoader`` over the step indices, forked
  workers, 2 batches ahead per worker; ``emseg train --workers N``);
- ``ProcessPoolExecutor``: ``concurrent.futures`` with the same forked workers and 2 N
  batches ahead, results pickled through a pipe (the session-9 first version of the pool).

Throughput is batches per second over ``--batches`` batches, start-up included (a training
run pays it once). Writes ``bench_output/train_loader.json``.

Run ``python benchmarks/bench_train_loader.py [--config C] [--workers N] [--batches B]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from emseg.semantic.deep import _train as T
from emseg.semantic.deep import load_config
from emseg.semantic.deep._data import estimate_intensity
from emseg.semantic.deep._model import Model

ROOT = Path(__file__).resolve().parents[1]


_SOURCE: tuple | None = None  # what the executor's forked workers draw from


def _executor_batch(step: int):
    run, samplers, intensity, seed = _SOURCE
    return T._batch_arrays(run, samplers, np.random.default_rng([seed, step]), intensity)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "boundaries-fibsem-3d.yaml"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench_output" / "train_loader.json"))
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    run = T._Run(cfg, Path("/nonexistent"), None, None, None, None)
    intensity = estimate_intensity(run.image, z_range=run.train_z, seed=cfg.seed)
    model = Model.create(cfg, spacing=run.spacing, intensity=intensity, seed=cfg.seed)
    samplers = T.orientation_samplers(
        run.image,
        run.labels,
        orientations=cfg.data.orientations,
        patch_shape=cfg.data.patch_shape,
        z_range=run.train_z,
        divisor=model.network.plan.divisor,
        in_memory=True,
    )
    n, w = args.batches, args.workers

    def serial() -> list:
        return [
            T._batch_arrays(run, samplers, np.random.default_rng([cfg.seed, k]), intensity)
            for k in range(1, n + 1)
        ]

    def pool() -> list:
        p = T._BatchPool(run, samplers, intensity, w, 1, n)
        try:
            return [tuple(np.asarray(a) for a in p.get(k)) for k in range(1, n + 1)]
        finally:
            p.close()

    def executor() -> list:
        global _SOURCE
        _SOURCE = (run, samplers, intensity, cfg.seed)
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(w, mp_context=ctx) as ex:
            futures: deque = deque()
            out = []
            nxt = 1
            for _ in range(n):
                while len(futures) < 2 * w and nxt <= n:
                    futures.append(ex.submit(_executor_batch, nxt))
                    nxt += 1
                out.append(futures.popleft().result())
        _SOURCE = None
        return out

    methods = {"serial": serial, "emseg workers": pool, "ProcessPoolExecutor": executor}
    best = {k: float("inf") for k in methods}
    first: dict[str, list] = {}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            out = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            first.setdefault(name, out)
    for name in ("emseg workers", "ProcessPoolExecutor"):  # the same batches as the serial draw
        for a, b in zip(first[name], first["serial"], strict=True):
            for x, y in zip(a, b, strict=True):
                np.testing.assert_array_equal(x, y)
    rates = {k: n / v for k, v in best.items()}
    result = {
        "config": os.path.relpath(args.config, ROOT),
        "batch": [cfg.data.batch_size, *cfg.data.patch_shape],
        "workers": w,
        "batches": n,
        "cpus": os.cpu_count(),
        "batches_per_s": rates,
        "workers_vs_serial": rates["emseg workers"] / rates["serial"],
        "workers_vs_executor": rates["emseg workers"] / rates["ProcessPoolExecutor"],
    }
    for k, v in rates.items():
        print(f"{k:18s} {v:6.2f} batches/s")
    print(
        f"emseg workers / serial {result['workers_vs_serial']:.2f}x, "
        f"emseg workers / ProcessPoolExecutor {result['workers_vs_executor']:.2f}x"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
