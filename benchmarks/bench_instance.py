"""Instance segmentation: watershed speed, blockwise components memory, agglomeration.

- Seeded watershed on a 256^3 float32 volume with 1250 seeds (6-connectivity):
  emseg's compiled priority flood (exact float heap; bucket queue on the
  float volume quantised to 65536 levels; bucket queue on the volume
  quantised to uint8, given to both) against
  ``skimage.segmentation.watershed`` on the same inputs, with the fraction
  of voxels equal to skimage's result.
- Blockwise components (threshold + size filter in nm^3) on a 512^3 uint8
  zarr volume against ``cc3d`` in memory; peak RSS of the blockwise job (in a
  child process) as a fraction of the volume's size.
- Agglomeration on the FlyEM medulla volume: its shipped over-segmentation
  + a learning-free boundary proxy (inverted, smoothed, normalised raw);
  time of the region adjacency graph and of the agglomeration, and ARAND /
  VOI on the validation part (z 80-124) with the threshold tuned on z 0-79;
  and the same agglomeration blockwise on one global graph
  (``agglomerate_blockwise`` with the engine's default 2**21-voxel blocks,
  and as one block): the time of each pass (edges table, agglomeration,
  relabel; fragments computed blockwise too), and whether it equals the
  in-memory chain (``boundary_graph`` + ``agglomerate_graph``). Multicut on
  the same graph: emseg's greedy additive edge contraction
  (``linkage="multicut"``) against bioimage-cpp's ``GreedyAdditiveMulticut``
  on the same costs (time ratio, same partition?), and the energy that
  bioimage-cpp's Kernighan-Lin refinement reaches from there.
- Real-data results (docs/instance.md): gala FIB-SEM (parameters tuned on
  its train volume, scored on its test volume) and the snemi3d_mini
  fragments agglomerated on their shipped boundary map (a smoke check).

The CPU is shared with other work, so timings are indicative. Run
``python benchmarks/bench_instance.py [--ws-size N] [--cc-size N] [--skip ...]``;
writes ``bench_output/instance.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from _common import peak_rss_bytes, timed

CHUNKS = (64, 64, 64)


# -- watershed -----------------------------------------------------------------


def bench_watershed(n: int, n_seeds: int = 1250) -> dict:
    from scipy import ndimage
    from skimage.segmentation import watershed

    from emseg.instance import seeded_watershed

    rng = np.random.default_rng(0)
    img = ndimage.gaussian_filter(rng.random((n, n, n), dtype=np.float32), 2.0)
    markers = np.zeros(img.shape, np.int32)
    flat = rng.choice(img.size, n_seeds, replace=False)
    markers.ravel()[flat] = np.arange(1, n_seeds + 1)
    q = ((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)
    seeded_watershed(img[:8, :8, :8].copy(), markers[:8, :8, :8].copy())  # compile
    seeded_watershed(q[:8, :8, :8].copy(), markers[:8, :8, :8].copy())
    t_heap, ours = timed(lambda: seeded_watershed(img, markers))
    t_bucket, ours_q = timed(lambda: seeded_watershed(q, markers))
    t_levels, ours_l = timed(lambda: seeded_watershed(img, markers, levels=65536))
    t_sk, ref = timed(lambda: watershed(img, markers, connectivity=1))
    t_sk_q, ref_q = timed(lambda: watershed(q, markers, connectivity=1))
    return {
        "shape": [n, n, n],
        "seeds": n_seeds,
        "skimage float32 s": t_sk,
        "emseg heap float32 s": t_heap,
        "speedup float32": t_sk / t_heap,
        "equal voxels float32": float((ours == ref).mean()),
        "emseg bucket float32 quantised to 65536 levels s": t_levels,
        "speedup float32 quantised": t_sk / t_levels,
        "equal voxels float32 quantised": float((ours_l == ref).mean()),
        "skimage uint8 s": t_sk_q,
        "emseg bucket uint8 s": t_bucket,
        "speedup uint8": t_sk_q / t_bucket,
        "equal voxels uint8 (ties broken differently)": float((ours_q == ref_q).mean()),
    }


# -- blockwise components --------------------------------------------------------


def _make_input(path: Path, n: int) -> None:
    import zarr
    from scipy import ndimage

    arr = zarr.create_array(store=str(path), shape=(n, n, n), dtype="u1", chunks=CHUNKS)
    rng = np.random.default_rng(0)
    for z in range(0, n, CHUNKS[0]):
        slab = ndimage.gaussian_filter(rng.random((CHUNKS[0], n, n), dtype=np.float32), 3.0)
        lo, hi = slab.min(), slab.max()
        arr[z : z + CHUNKS[0]] = ((slab - lo) / (hi - lo) * 255).astype(np.uint8)


MIN_SIZE_NM3 = 64 * 8.0  # 64 voxels at 2 nm isotropic


def _components_child(src: str, out: str, block: str) -> None:
    """Run in a child process: components_blockwise with a size filter; time and peak RSS.

    As in bench_blockwise.py's label child, everything the job imports (cc3d,
    scipy's csgraph, numcodecs, emseg.io with numba, tqdm) is loaded before
    the baseline RSS: the growth above it is what the job's data cost.
    """
    import cc3d  # noqa: F401
    import numcodecs  # noqa: F401
    import psutil
    import scipy.sparse.csgraph  # noqa: F401
    import tqdm  # noqa: F401
    import zarr

    import emseg.io  # noqa: F401
    from emseg.instance import components_blockwise

    image = zarr.open_array(src, mode="r")
    baseline = psutil.Process().memory_info().rss
    t, res = timed(
        lambda: components_blockwise(
            image,
            out=out,
            threshold=150,
            spacing=2.0,
            min_size_nm3=MIN_SIZE_NM3,
            block_shape=int(block),
            chunks=CHUNKS,
            n_workers=2,
            progress=False,
        )
    )
    print(
        json.dumps(
            {
                "seconds": t,
                "peak_rss": peak_rss_bytes(),
                "baseline_rss": baseline,
                "n": res.attrs["emseg"]["n_labels"],
            }
        )
    )


def bench_components(n: int, block: int = 128) -> dict:
    import cc3d
    import zarr

    with tempfile.TemporaryDirectory(prefix="emseg-bench-") as tmp:
        src = Path(tmp) / "in.zarr"
        _make_input(src, n)

        def in_memory(fg: np.ndarray) -> int:
            lab = cc3d.connected_components(fg, connectivity=26)
            sizes = np.bincount(lab.ravel())
            keep = sizes >= 64
            keep[0] = False
            return int(keep.sum())

        # uint8, not bool: cc3d 4.1.1's bool path mislabels some inputs (see bench_blockwise)
        mask = [(zarr.open_array(str(src), mode="r")[:] > 150).view(np.uint8)]
        t_cc3d, n_ref = timed(lambda: in_memory(mask[0]))
        mask.clear()
        out = Path(tmp) / "objects.zarr"
        child = subprocess.run(
            [sys.executable, __file__, "--components-child", str(src), str(out), str(block)],
            capture_output=True,
            text=True,
            check=True,
        )
        m = json.loads(child.stdout.strip().splitlines()[-1])
    return {
        "shape": [n, n, n],
        "block": [block] * 3,
        "cc3d + size filter in memory s (no I/O)": t_cc3d,
        "emseg components_blockwise zarr->zarr s (2 threads)": m["seconds"],
        "ratio to cc3d": m["seconds"] / t_cc3d,
        "objects (in memory, blockwise)": [n_ref, m["n"]],
        "peak rss MiB": m["peak_rss"] / 2**20,
        "peak rss fraction of the uint8 volume": m["peak_rss"] / n**3,
        "rss above baseline fraction of the uint8 volume": (m["peak_rss"] - m["baseline_rss"])
        / n**3,
    }


# -- agglomeration ----------------------------------------------------------------


def boundary_proxy(raw: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Learning-free boundary map: smoothed raw, normalised to [0, 1], inverted (dark = 1)."""
    from scipy import ndimage

    sm = ndimage.gaussian_filter(raw.astype(np.float32), sigma)
    return 1.0 - (sm - sm.min()) / (sm.max() - sm.min())


def _scores(gt: np.ndarray, seg: np.ndarray) -> dict:
    from emseg.metrics import adapted_rand_error, voi

    v = voi(gt, seg)
    return {
        "arand": adapted_rand_error(gt, seg).error,
        "voi_split": v.split,
        "voi_merge": v.merge,
        "segments": len(np.unique(seg)),
    }


def _sweep(frag, bnd, gt, thresholds):
    from emseg.instance import agglomerate_graph, region_adjacency_graph

    rag = region_adjacency_graph(frag, bnd)
    out = {}
    for t in thresholds:
        seg = agglomerate_graph(rag, threshold=t).lookup(int(frag.max()))[frag]
        out[t] = _scores(gt, seg)
    return out


def bench_flyem() -> dict:
    from emseg.data import open_dataset_file
    from emseg.instance import agglomerate_graph, region_adjacency_graph

    raw = np.asarray(open_dataset_file("flyem_medulla", "image")[:])
    gt = np.asarray(open_dataset_file("flyem_medulla", "groundtruth")[:])
    frag = np.asarray(open_dataset_file("flyem_medulla", "oversegmentation")[:]).astype(np.uint32)
    bnd = boundary_proxy(raw)
    t_rag, rag = timed(lambda: region_adjacency_graph(frag, bnd))
    t_agg, res = timed(lambda: agglomerate_graph(rag, threshold=0.5))
    thresholds = [round(x, 2) for x in np.arange(0.30, 0.71, 0.05)]
    train = _sweep(frag[:80], bnd[:80], gt[:80], thresholds)
    best = min(train, key=lambda t: train[t]["arand"])
    val = _sweep(frag[80:], bnd[80:], gt[80:], [best])[best]
    blockwise = _flyem_blockwise(frag, bnd, gt, best)
    return {
        "shape": list(frag.shape),
        "fragments": int(rag.nodes.size),
        "edges": int(rag.edges.shape[0]),
        "rag s": t_rag,
        "agglomeration s (threshold 0.5)": t_agg,
        "segments at 0.5": int(res.segment.max()),
        "oversegmentation alone on z 80-124": _scores(gt[80:], frag[80:]),
        "threshold tuned on z 0-79": best,
        "train z 0-79 at best": train[best],
        "validation z 80-124": val,
        "blockwise agglomeration (one global graph)": blockwise,
        "multicut (threshold 0.5) vs bioimage-cpp": multicut_vs_bioimage(rag, 0.5),
    }


def multicut_vs_bioimage(rag, threshold: float, repeats: int = 3) -> dict:
    """emseg's GAEC against bioimage-cpp's on the same costs (best of `repeats` each)."""
    import bioimage_cpp as bic

    from emseg.instance import agglomerate_graph
    from emseg.instance._agglomerate import multicut_costs

    n = int(rag.nodes.max()) + 1
    w = multicut_costs(
        rag.features["sum"] / rag.features["count"], rag.features["count"], threshold
    )
    mc = bic.graph.multicut

    def theirs():
        graph = bic.graph.UndirectedGraph.from_edges(n, rag.edges.astype(np.uint64))
        objective = mc.MulticutObjective(graph, w)
        return objective, np.asarray(mc.GreedyAdditiveMulticut().optimize(objective))

    t_ours = min(timed(lambda: agglomerate_graph(rag, threshold=threshold, linkage="multicut"))[0]
                 for _ in range(repeats))  # fmt: skip
    t_theirs = min(timed(theirs)[0] for _ in range(repeats))
    ours = agglomerate_graph(rag, threshold=threshold, linkage="multicut").lookup(n - 1)
    objective, ref = theirs()
    pairs = {(int(a), int(b)) for a, b in zip(ours[rag.nodes], ref[rag.nodes], strict=True)}
    same = len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    kl = mc.ChainedMulticutSolvers([mc.GreedyAdditiveMulticut(), mc.KernighanLinMulticut()])
    t_kl, kl_labels = timed(lambda: np.asarray(kl.optimize(objective)))
    return {
        "emseg s": t_ours,
        "bioimage-cpp s": t_theirs,
        "emseg / bioimage-cpp time": t_ours / t_theirs,
        "same partition": same,
        "segments": int(ours.max()),
        "energy GAEC": float(objective.energy(ref)),
        "energy GAEC + Kernighan-Lin (bioimage-cpp)": float(objective.energy(kl_labels)),
        "Kernighan-Lin s": t_kl,
    }


def _flyem_blockwise(frag: np.ndarray, bnd: np.ndarray, gt: np.ndarray, threshold: float) -> dict:
    """agglomerate_blockwise on the shipped fragments, default blocks vs one block."""
    import time

    from emseg.instance import agglomerate_blockwise, agglomerate_graph, boundary_graph

    out: dict = {"threshold": threshold}
    t_mem, g = timed(lambda: boundary_graph(frag, bnd))
    ref = agglomerate_graph(g, threshold=threshold).lookup(int(frag.max()))[frag]
    out["in-memory boundary_graph s"] = t_mem
    runs = (
        ("shipped fragments, default blocks", frag, None),
        ("shipped fragments, one block", frag, frag.shape),
        ("fragments computed blockwise (supervoxels), default blocks", None, None),
    )
    for name, fragments, block in runs:
        t0 = time.perf_counter()
        seg = agglomerate_blockwise(
            bnd,
            fragments=fragments,
            threshold=threshold,
            spacing=(10.0, 10.0, 10.0),
            block_shape=block,
            progress=False,
        )
        wall = time.perf_counter() - t0
        a = dict(seg.attrs["emseg"])
        labels = np.asarray(seg[:])
        row = {
            "block_shape": a["params"]["block_shape"],
            "wall s": round(wall, 2),
            "passes s": a["seconds"],
            "fragments": a["n_fragments"],
            "edges": a["n_edges"],
            "validation z 80-124": _scores(gt[80:], labels[80:]),
        }
        if fragments is not None:
            row["equal to the in-memory chain"] = bool(np.array_equal(labels, ref))
        out[name] = row
    return out


GALA = {"sigma_nm": 10.0, "min_seed_distance_nm": 40.0}


def bench_gala() -> dict:
    from emseg.data import open_dataset_file
    from emseg.instance import agglomerate_graph, region_adjacency_graph, supervoxels

    def prep(split, z=slice(None)):
        raw = np.asarray(open_dataset_file("gala_fibsem", f"{split}_image")[:])[z]
        gt = np.asarray(open_dataset_file("gala_fibsem", f"{split}_groundtruth")[:])[z]
        bnd = boundary_proxy(raw, sigma=GALA["sigma_nm"] / 10.0)
        frag = supervoxels(
            bnd, spacing=10.0, seeds="minima", min_seed_distance_nm=GALA["min_seed_distance_nm"]
        )
        return gt, bnd, frag

    thresholds = [round(x, 2) for x in np.arange(0.40, 0.66, 0.01)]
    gt, bnd, frag = prep("train")
    train = _sweep(frag, bnd, gt, thresholds)
    best = min(train, key=lambda t: train[t]["arand"])
    learned = _gala_learned(prep, gt, frag)
    gt, bnd, frag = prep("test")
    test = _sweep(frag, bnd, gt, [best])[best]
    rag = region_adjacency_graph(frag, bnd)
    p = learned["classifier"].merge_probability(rag)
    seg = agglomerate_graph(rag, threshold=learned["threshold"], edge_weights=1 - p)
    learned_test = _scores(gt, seg.lookup(int(frag.max()))[frag])
    return {
        "boundary proxy": "1 - normalised gaussian(raw, 1 voxel)",
        **GALA,
        "fragments (test)": int(frag.max()),
        "threshold tuned on train": best,
        "train at best": train[best],
        "test": test,
        "learned edge classifier: threshold (tuned on train z 25-49, trained on z 0-24)": learned[
            "threshold"
        ],
        "learned edge classifier test (trained on all of train)": learned_test,
    }


def _gala_learned(prep, gt, frag) -> dict:
    """Random forest on edge features: threshold by a split of the train volume."""
    from emseg.instance import agglomerate_graph, region_adjacency_graph, train_edge_classifier

    def part(z):
        g, b, f = prep("train", z)
        return g, f, region_adjacency_graph(f, b)

    (ga, fa, ra), (gb, fb, rb) = part(slice(0, 25)), part(slice(25, 50))
    clf = train_edge_classifier([(ra, fa, ga)])
    pb = clf.merge_probability(rb)
    scores = {}
    for t in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        seg = agglomerate_graph(rb, threshold=t, edge_weights=1 - pb).lookup(int(fb.max()))[fb]
        scores[t] = _scores(gb, seg)["arand"]
    g, f, r = part(slice(None))
    return {
        "threshold": min(scores, key=lambda t: scores[t]),
        "classifier": train_edge_classifier([(r, f, g)]),
    }


def bench_snemi() -> dict:
    from emseg.data import open_dataset_file

    labels = np.asarray(open_dataset_file("snemi3d_mini", "labels")[:]).astype(np.int64)
    frag = np.asarray(open_dataset_file("snemi3d_mini", "fragments")[:]).astype(np.uint32)
    prob = np.asarray(open_dataset_file("snemi3d_mini", "probabilities")[:])
    bnd = 1.0 - prob.astype(np.float32) / 255.0  # shipped map: dark = membrane
    thresholds = [round(x, 2) for x in np.arange(0.1, 0.61, 0.05)]
    sweep = _sweep(frag, bnd, labels, thresholds)
    best = min(sweep, key=lambda t: sweep[t]["arand"])
    return {
        "note": "no separate validation split: a smoke check, not a tuned result",
        "fragments alone": _scores(labels, frag.astype(np.int64)),
        "sweep": {str(k): v for k, v in sweep.items()},
        "best threshold (on the same volume)": best,
        "best": sweep[best],
    }


def _table(name: str, rows: dict) -> None:
    print(f"-- {name}")
    for k, v in rows.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, dict):
            v = ", ".join(
                f"{a}={b:.3f}" if isinstance(b, float) else f"{a}={b}" for a, b in v.items()
            )
        print(f"   {k:<52} {v}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ws-size", type=int, default=256)
    parser.add_argument("--cc-size", type=int, default=512)
    parser.add_argument("--cc-block", type=int, default=128, help="block edge (components)")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["watershed", "components", "flyem", "gala", "snemi"],
    )
    parser.add_argument("--components-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.components_child:
        _components_child(*args.components_child)
        return {}
    results: dict = {}
    steps = {
        "watershed": lambda: bench_watershed(args.ws_size),
        "components": lambda: bench_components(args.cc_size, args.cc_block),
        "flyem": bench_flyem,
        "gala": bench_gala,
        "snemi": bench_snemi,
    }
    for name, fn in steps.items():
        if name in args.skip:
            continue
        key = f"components block {args.cc_block}" if name == "components" else name
        results[key] = fn()
        _table(key, {k: v for k, v in results[key].items() if k != "sweep"})
    Path("bench_output").mkdir(exist_ok=True)
    old = {}
    path = Path("bench_output/instance.json")
    if path.exists():
        old = json.loads(path.read_text())
    old.update(results)
    path.write_text(json.dumps(old, indent=2, default=float))
    return results


if __name__ == "__main__":
    main()
