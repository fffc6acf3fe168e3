"""Choose a FlyEM neuron chain on the tuning crop (z 60-79) with a noise-robust objective.

Session 5 found that the tuning objective ``ARAND / 0.10 + VOI split + VOI merge`` on z 60-79
moves by 0.04-0.17 when the boundary map changes by at most 2/255 (one merge of two large
neurons more or less), so chains whose objectives differ by less than that cannot be ranked
from one map. This script ranks them by the objective averaged over ``--perturb K`` copies of
each boundary map: the map itself and K - 1 copies with independent per-voxel changes of
-1, 0 or +1 / 255 (seeds 1 .. K - 1), each segmented with the same settings.

Every candidate is a mean of deep boundary members (``NAME=MODEL:PLANES[+MODEL:PLANES...]``,
each with test-time flips, as a preset's ``prediction.members`` predicts them); a member
``MODEL:PLANES:ft`` adds the y <-> x transpose to its flips, and ``MODEL:PLANES@W`` gives it
weight W in a weighted mean, and a trailing ``#multicut`` agglomerates with
``linkage="multicut"`` over ``MULTICUT_THRESHOLDS`` (session 8). For each map the
joint grid of ``scripts/instance_results.py --merge-small joint`` is run: distance-seed
supervoxels (``SUPERVOXEL_GRID``), mean agglomeration thresholds ``JOINT_THRESHOLDS`` and
clean-up sizes ``JOINT_MERGE_SMALL_NM3``. The chosen chain is the (candidate, setting) with the
lowest mean objective; ties within ``--tie`` go to the earlier candidate, then the earlier setting.

Only the ground truth of z 0-79 is read; nothing here looks at z 80-124.

    python scripts/choose_flyem_chain.py --perturb 4 --jobs 2 --out bench_output/choose_flyem_chain.json \\
        --candidate A=boundaries-fibsem:3+boundaries-fibsem-3d:1 \\
        --candidate B=boundaries-fibsem:3+boundaries-fibsem-3d-stage2:1 \\
        --candidate C=boundaries-fibsem:3+boundaries-fibsem-3d:1+boundaries-fibsem-3d-stage2:1

(session 6: about 20 minutes on 2 cores; it chose B, see docs/protocols/flyem-session6.md).
A member is a shipped model name or a model folder (``runs/NAME``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from instance_results import SUPERVOXEL_GRID, cached_deep_map, criterion, joint_grid

from emseg.data import DATASETS, open_dataset_file
from emseg.instance import region_adjacency_graph, supervoxels

TUNE = slice(60, 80)


def parse_candidate(text: str) -> tuple[str, list[dict[str, Any]]]:
    """``NAME=MEMBER[+MEMBER...]`` -> ``(NAME, [{"model", "planes", "tta", "weight"}, ...])``.

    A member is ``MODEL:PLANES[:ft][@WEIGHT]``: planes 1 or 3; ``:ft`` for test-time flips and
    the y <-> x transpose (``tta: "flips+transpose"``; default: flips, ``tta: true``); a weight
    in the ensemble's mean (default 1). A trailing ``#multicut`` (see :func:`split_linkage`)
    must be removed first.
    """
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"--candidate {text!r}: expected NAME=MODEL:PLANES[:ft][@W][+...]")
    members = []
    for part in rest.split("+"):
        spec, at, weight = part.partition("@")
        tta: Any = True
        if spec.endswith(":ft"):
            spec, tta = spec[:-3], "flips+transpose"
        model, sep, planes = spec.rpartition(":")
        if not sep or not model or planes not in ("1", "3"):
            raise SystemExit(f"--candidate {text!r}: member {part!r} needs :1 or :3 (planes)")
        try:
            w = float(weight) if at else 1.0
        except ValueError:
            w = float("nan")
        if not (w > 0 and np.isfinite(w)):
            raise SystemExit(f"--candidate {text!r}: member {part!r}: @WEIGHT must be > 0")
        members.append({"model": model, "planes": int(planes), "tta": tta, "weight": w})
    return name, members


def split_linkage(text: str) -> tuple[str, str]:
    """``NAME=MEMBERS[#LINKAGE]`` -> ``(NAME=MEMBERS, LINKAGE)``; LINKAGE mean (default) or multicut."""
    body, sep, linkage = text.partition("#")
    if not sep:
        return text, "mean"
    if linkage not in ("mean", "multicut"):
        raise SystemExit(f"--candidate {text!r}: #{linkage} must be #mean or #multicut")
    return body, linkage


def perturbed(bnd: np.ndarray, seed: int) -> np.ndarray:
    """`bnd` (multiples of 1/255) with independent per-voxel changes of -1, 0 or +1 / 255."""
    if seed == 0:
        return bnd
    rng = np.random.default_rng(seed)
    step = rng.integers(-1, 2, size=bnd.shape, dtype=np.int8).astype(np.float32) / 255.0
    return (np.rint(np.clip(bnd + step, 0.0, 1.0) * 255) / 255).astype(np.float32)


def grid_scores(
    bnd: np.ndarray,
    truth: np.ndarray,
    sp: tuple[float, ...],
    z: slice = TUNE,
    linkage: str = "mean",
) -> list[dict[str, Any]]:
    """Scores (and objective) on the crop `z` (`truth` = the truth there) of every joint-grid
    setting on one boundary map, agglomerating with `linkage`."""
    graphs = {}
    for k, sv in enumerate(SUPERVOXEL_GRID):
        if sv["seeds"] == "distance":
            frag = supervoxels(bnd, spacing=sp, **sv)
            graphs[k] = (frag, region_adjacency_graph(frag, bnd))
    rows = joint_grid(graphs, truth, z, sp, linkage)
    return [{**row, "objective": criterion(row)} for row in rows]


_STATE: dict[str, Any] = {}


def _set_state(
    bnd: np.ndarray, truth: np.ndarray, sp: tuple[float, ...], z: slice, linkage: str = "mean"
) -> None:
    """The map, truth, spacing, crop and linkage of one candidate (each worker's initializer)."""
    _STATE.update(bnd=bnd, truth=truth, sp=sp, z=z, linkage=linkage)


def _grid_of_copy(seed: int) -> list[dict[str, Any]]:
    """The grid on copy `seed` of the map in ``_STATE``."""
    return grid_scores(perturbed(_STATE["bnd"], seed), _STATE["truth"], _STATE["sp"], _STATE["z"],
                       _STATE["linkage"])  # fmt: skip


def grids_of_copies(
    bnd: np.ndarray,
    truth: np.ndarray,
    sp: tuple[float, ...],
    copies: int,
    *,
    z: slice = TUNE,
    jobs: int = 1,
    mp_context: Any = None,
    linkage: str = "mean",
) -> list[list[dict[str, Any]]]:
    """:func:`grid_scores` of the map and its copies ``1 .. copies - 1`` on the crop `z`.

    With `jobs` > 1 they run in that many processes; each gets the map once, through its
    initializer, so any start method works (`mp_context`, e.g.
    ``multiprocessing.get_context("spawn")``; default: the platform's).
    """
    if jobs <= 1:
        return [grid_scores(perturbed(bnd, s), truth, sp, z, linkage) for s in range(copies)]
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=mp_context,
        initializer=_set_state,
        initargs=(bnd, truth, sp, z, linkage),
    ) as pool:
        return list(pool.map(_grid_of_copy, range(copies)))


def smoothed_objectives(rows: list[dict[str, Any]]) -> list[float]:
    """Each row's mean objective averaged with its threshold neighbours (session 9).

    Neighbours share the row's supervoxels (``k``) and clean-up size and have the next lower
    or higher threshold of the grid; a row at the grid's edge has one neighbour. A setting whose
    neighbours fall off a cliff scores worse than a flat one of the same level.
    """
    out = []
    for r in rows:
        same = sorted(
            (q["threshold"], q["objective_mean"])
            for q in rows
            if q["k"] == r["k"] and q["merge_small_nm3"] == r["merge_small_nm3"]
        )
        ts = [t for t, _ in same]
        i = ts.index(r["threshold"])
        out.append(float(np.mean([o for _, o in same[max(i - 1, 0) : i + 2]])))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidate", action="append", required=True,
                   help="NAME=MODEL:PLANES[:ft][@W][+...][#multicut]; simplest first (ties go to it)")  # fmt: skip
    p.add_argument("--perturb", type=int, default=4, help="maps per candidate (1 = no copies)")
    p.add_argument("--tie", type=float, default=0.01)
    p.add_argument("--smooth", action="store_true",
                   help="rank settings by the objective averaged with threshold neighbours")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="processes for the map copies")
    p.add_argument("--cache", default="bench_output/cache")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from emseg.semantic.deep import load_model

    image = np.asarray(open_dataset_file("flyem_medulla", "image")[:])
    truth = np.asarray(open_dataset_file("flyem_medulla", "groundtruth")[TUNE])
    sp = tuple(DATASETS["flyem_medulla"].spacing)
    results: dict[str, Any] = {"perturb": args.perturb, "tune": "z 60-79", "smooth": args.smooth,
                               "candidates": {}}  # fmt: skip
    best: tuple[float, int] | None = None  # (mean objective, candidate index)
    for ci, text in enumerate(args.candidate):
        body, linkage = split_linkage(text)
        name, members = parse_candidate(body)
        t0 = time.perf_counter()
        models = [load_model(m["model"]) for m in members]
        bnd = cached_deep_map(models, image, [m["planes"] for m in members], tta=True,
                              ttas=[m["tta"] for m in members],
                              weights=[m["weight"] for m in members], cache=args.cache)  # fmt: skip
        t_map = time.perf_counter() - t0
        print(f"{name}: map in {t_map:.0f} s", flush=True)
        per_map = grids_of_copies(bnd, truth, sp, args.perturb, jobs=args.jobs, linkage=linkage)
        rows = []
        for i, row in enumerate(per_map[0]):
            objs = [pm[i]["objective"] for pm in per_map]
            rows.append({**{k: row[k] for k in ("merge_small_nm3", "threshold")}, "linkage": linkage,
                         "supervoxels": SUPERVOXEL_GRID[row["k"]], "k": row["k"],
                         "objective_mean": float(np.mean(objs)), "objectives": objs,
                         "scores": [{k: pm[i][k] for k in ("adapted_rand_error_cremi",
                                                          "voi_split", "voi_merge")}
                                    for pm in per_map]})  # fmt: skip
        for r, sm in zip(rows, smoothed_objectives(rows), strict=True):
            r["objective_smoothed"] = sm
        key = "objective_smoothed" if args.smooth else "objective_mean"
        top = min(range(len(rows)), key=lambda i: rows[i][key])
        results["candidates"][name] = {
            "members": members, "linkage": linkage, "map_seconds": round(t_map, 1),
            "grid_seconds": round(time.perf_counter() - t0 - t_map, 1),
            "best": rows[top], "rows": rows,
        }  # fmt: skip
        r = rows[top]
        print(f"{name}: best by {key} {r[key]:.4f}; mean objective {r['objective_mean']:.4f} "
              f"(per map {np.round(r['objectives'], 3).tolist()}) at {r['supervoxels']}, "
              f"t {r['threshold']}, merge small {r['merge_small_nm3']:.3g} nm^3", flush=True)  # fmt: skip
        if best is None or r[key] < best[0] - args.tie:
            best = (r[key], ci)
    assert best is not None
    chosen = list(results["candidates"])[best[1]]
    results["chosen"] = {"candidate": chosen, **results["candidates"][chosen]["best"]}
    print(f"chosen: {chosen}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
