"""Benchmark: the structure catalog at 10^6 objects, SQLite vs PostgreSQL side by side.

Run ``python benchmarks/bench_catalog.py [--n-objects N] [--backends sqlite,postgresql]``
(default 10^6 objects; ``--n-objects 100000`` for a quick run): prints a
table and writes ``bench_output/catalog.json``.

A synthetic catalog: objects spread uniformly at a constant density (one per
~2e9 nm^3, i.e. a 50 x 200 x 200 um block holds 10^6), radii 40-400 nm,
four classes (mitochondrion 45 %, vesicle 45 %, ER 9.98 %, nucleus 0.02 %),
random elongation / solidity, a 26-float embedding (the real descriptor
length) and 16 surface points (float32 nm) per object. It is written in
tiles of 50,000 objects, one ``add_dataset`` transaction per tile, by a
child process whose peak RSS is the build's memory (for PostgreSQL this is
the client; the server has its own bounded shared buffers). The PostgreSQL
server is a throwaway cluster on loopback
(:class:`emseg.catalog._pgserver.TempPostgres`, default durability settings).

Then, in this process, each query is run once cold and 3 times warm (median):
label queries (selective class, index range, combined filters with and
without sort + limit, an unindexed scan with sort + limit), proximity
queries (within 500 nm of one object; mitochondria within 500 nm of any
nucleus) and image queries (top 10): the exact scan (``exact=True``, whose
latency grows linearly with the catalog), and the faiss IVF-Flat ANN index
(:mod:`emseg.catalog._ann`): its first query (which builds and stores the
index), warm queries, the first query of a new connection (which loads the
stored index), a filtered query, and its recall@10 over 100 query objects
against an exact brute force (``faiss.knn`` on every descriptor, read and
z-scored here independently of the index). Numbers are indicative: the
machine's 2 CPUs are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import peak_rss_bytes

TILE = 50_000
N_POINTS = 16
EMBED_DIM = 26
CLASSES = ("mitochondrion", "vesicle", "er", "nucleus")
CLASS_P = (0.45, 0.45, 0.0998, 0.0002)
VOLUME_PER_OBJECT_NM3 = 2e9


def extent_nm(n_objects: int) -> tuple[float, float, float]:
    """(z, y, x) extent of the block holding `n_objects` at the benchmark's density."""
    z = 50_000.0
    side = float(np.sqrt(n_objects * VOLUME_PER_OBJECT_NM3 / z))
    return z, side, side


def synthetic_tile(rng: np.random.Generator, n: int, extent: tuple[float, float, float]):
    """A morphometry-like table of `n` objects, their surface points and embeddings."""
    import pandas as pd

    c = rng.uniform(0, 1, size=(n, 3)) * np.asarray(extent)
    r = rng.uniform(40, 400, size=n)
    u = rng.normal(size=(n, N_POINTS, 3))
    u /= np.linalg.norm(u, axis=2, keepdims=True)
    pts = (c[:, None, :] + r[:, None, None] * u).astype(np.float32)
    labels = np.arange(1, n + 1)
    table = pd.DataFrame({"label": labels})
    table["class"] = rng.choice(CLASSES, size=n, p=CLASS_P)
    table["volume_nm3"] = 4 / 3 * np.pi * r**3
    table["elongation"] = rng.uniform(1, 6, size=n)
    table["solidity"] = rng.uniform(0.7, 1, size=n)
    table["touches_border"] = rng.random(n) < 0.05
    for k, a in enumerate("zyx"):
        table[f"centroid_{a}_nm"] = c[:, k]
        table[f"bbox_{a}min_nm"] = pts[:, :, k].min(1)
        table[f"bbox_{a}max_nm"] = pts[:, :, k].max(1)
    emb = rng.normal(size=(n, EMBED_DIM)).astype(np.float32)
    return table, dict(zip(labels.tolist(), pts, strict=True)), emb


def build(location: str, n_objects: int, seed: int = 0) -> dict[str, float]:
    """Write the synthetic catalog in tiles (run in a child process)."""
    from emseg.catalog import open_catalog

    rng = np.random.default_rng(seed)
    extent = extent_nm(n_objects)
    t0 = time.perf_counter()
    with open_catalog(location) as cat:
        done = 0
        while done < n_objects:
            n = min(TILE, n_objects - done)
            table, pts, emb = synthetic_tile(rng, n, extent)
            cat.add_dataset(f"tile{done // TILE:04d}", table, points=pts, embeddings=emb)
            done += n
        count = len(cat)
    return {
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_bytes() / 2**20,
        "objects": count,
    }


def _timed(fn, repeats: int = 3) -> dict[str, float]:
    t0 = time.perf_counter()
    out = fn()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    return {"cold_s": cold, "warm_s": statistics.median(warm), "rows": len(out)}


def run_queries(location: str) -> dict[str, dict[str, float]]:
    """Latency of every query kind on the catalog at `location`."""
    from emseg.catalog import like, near, open_catalog

    res: dict[str, dict[str, float]] = {}
    with open_catalog(location, create=False) as cat:
        label = {
            "class = nucleus": dict(expr="class = nucleus"),
            "volume in a 5% range": dict(expr="volume_nm3 > 1e8 AND volume_nm3 < 1.05e8"),
            "mito AND volume > 1e8 AND elongation > 3": dict(
                expr="class = mitochondrion AND volume_nm3 > 1e8 AND elongation > 3"
            ),
            "  same, sort volume desc, limit 100": dict(
                expr="class = mitochondrion AND volume_nm3 > 1e8 AND elongation > 3",
                sort="volume_nm3",
                descending=True,
                limit=100,
            ),
            "elongation > 5.5 (no index), sort, limit 100": dict(
                expr="elongation > 5.5", sort="elongation", limit=100
            ),
        }
        for name, kw in label.items():
            res[f"label: {name}"] = _timed(lambda kw=kw: cat.query(**kw))
        probe = int(cat.ids("class = vesicle AND volume_nm3 > 1e8")[0])
        res["near: within 500 nm of one object"] = _timed(lambda: near(cat, probe, within=500.0))
        res["near: mitochondria within 500 nm of a nucleus"] = _timed(
            lambda: near(cat, "nucleus", within=500.0, where="class = mitochondrion"), repeats=1
        )
        res["like: top 10 (exact scan)"] = _timed(
            lambda: like(cat, probe, top=10, exact=True), repeats=1
        )
        t0 = time.perf_counter()
        first = like(cat, probe, top=10)
        res["like: top 10, ANN, 1st query (builds index)"] = {
            "cold_s": time.perf_counter() - t0,
            "warm_s": float("nan"),
            "rows": len(first),
        }
        res["like: top 10, ANN"] = _timed(lambda: like(cat, probe, top=10), repeats=5)
        res["like: top 10, ANN, where class = mitochondrion"] = _timed(
            lambda: like(cat, probe, top=10, where="class = mitochondrion")
        )
        ann = cat.ann_index().info
        ann_stats = {
            "kind": ann.kind,
            "nprobe": ann.nprobe,
            "calibration_recall": ann.calibration_recall,
            "build_s": ann.build_seconds,
            "recall_at_10": _recall(cat),
        }
    with open_catalog(location, create=False) as cat:
        t0 = time.perf_counter()
        loaded = like(cat, probe, top=10)
        res["like: top 10, ANN, new connection (loads index)"] = {
            "cold_s": time.perf_counter() - t0,
            "warm_s": float("nan"),
            "rows": len(loaded),
        }
    res["_ann"] = ann_stats  # type: ignore[assignment]
    return res


def _recall(cat, n_queries: int = 100, k: int = 10) -> float:
    """Recall@k of the ANN ``like`` against exact brute force, over `n_queries` objects."""
    import faiss

    from emseg.catalog import like

    ids, parts = [], []
    for i, e in cat.iter_embeddings():
        ids.append(i)
        parts.append(e)
    allid = np.concatenate(ids)
    x = np.concatenate(parts).astype(np.float64)
    del parts
    z = ((x - x.mean(0)) / (x.std(0) + 1e-9)).astype(np.float32)
    del x
    rng = np.random.default_rng(1)
    pick = np.sort(rng.choice(len(allid), n_queries, replace=False))
    _, nn = faiss.knn(np.ascontiguousarray(z[pick]), z, k + 1)
    hits = 0
    for row, p in zip(nn, pick, strict=True):
        truth = set(allid[row].tolist()) - {int(allid[p])}
        got = like(cat, int(allid[p]), top=k)
        assert got.attrs["search"] == "ann"
        hits += len(truth & set(got["id"].tolist()))
    return hits / (n_queries * k)


def _size_mb(location: str, pg) -> float:
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location) as conn:
            return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20
    return (
        sum(p.stat().st_size for p in Path(location).parent.glob(Path(location).name + "*")) / 2**20
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-objects", type=int, default=1_000_000)
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--out", default="bench_output/catalog.json")
    p.add_argument("--child-build", nargs=2, metavar=("LOCATION", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_build:
        print(json.dumps(build(args.child_build[0], int(args.child_build[1]))))
        return 0

    from emseg.catalog._pgserver import TempPostgres, find_pg_bin

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results: dict[str, dict] = {}
    tmp = Path(tempfile.mkdtemp(prefix="emseg-bench-catalog-"))
    pg = None
    try:
        for backend in backends:
            if backend == "postgresql":
                if find_pg_bin() is None:
                    print("postgresql: server binaries not found; skipped")
                    continue
                pg = TempPostgres().start()
                location = pg.create_database("bench")
            else:
                location = str(tmp / "catalog.sqlite")
            print(f"[{backend}] building {args.n_objects:,} objects ...", flush=True)
            out = subprocess.run(
                [sys.executable, __file__, "--child-build", location, str(args.n_objects)],
                capture_output=True,
                text=True,
                check=True,
            )
            built = json.loads(out.stdout.strip().splitlines()[-1])
            built["size_mb"] = _size_mb(location, pg)
            print(f"[{backend}] querying ...", flush=True)
            results[backend] = {"build": built, "queries": run_queries(location)}
            if pg is not None:
                pg.stop()
                pg = None
    finally:
        if pg is not None:
            pg.stop()
        for f in tmp.glob("*"):
            f.unlink()
        tmp.rmdir()

    names = [q for q in next(iter(results.values()))["queries"] if q != "_ann"] if results else []
    cols = list(results)
    print(f"\ncatalog of {args.n_objects:,} synthetic objects ({os.cpu_count()} CPUs, shared)")
    print(f"{'':<48}" + "".join(f"{c:>26}" for c in cols))
    print(f"{'build (s)':<48}" + "".join(f"{results[c]['build']['seconds']:>26.1f}" for c in cols))
    print(
        f"{'build peak RSS (MB, client)':<48}"
        + "".join(f"{results[c]['build']['peak_rss_mb']:>26.0f}" for c in cols)
    )
    print(
        f"{'size on disk (MB)':<48}"
        + "".join(f"{results[c]['build']['size_mb']:>26.0f}" for c in cols)
    )
    print(f"{'query: cold / warm median (s) [rows]':<48}")
    for q in names:
        cells = "".join(
            f"{results[c]['queries'][q]['cold_s']:>9.3f} /{results[c]['queries'][q]['warm_s']:>7.3f} [{results[c]['queries'][q]['rows']:>5}]"
            for c in cols
        )
        print(f"{q:<48}{cells}")
    for c in cols:
        a = results[c]["queries"]["_ann"]
        print(
            f"[{c}] ANN index {a['kind']}, nprobe {a['nprobe']}: built in {a['build_s']:.1f} s, "
            f"recall@10 {a['recall_at_10']:.3f} over 100 queries "
            f"(calibration {a['calibration_recall']:.3f})"
        )
    like_key = "like: top 10 (exact scan)"
    for c in cols:
        t = results[c]["queries"][like_key]["warm_s"]
        results[c]["like_1s_at_objects"] = int(args.n_objects / t) if t > 0 else None
        print(f"[{c}] exact like reaches 1 s at about {results[c]['like_1s_at_objects']:,} objects")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"n_objects": args.n_objects, "tile": TILE, "results": results}, indent=2)
    )
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
