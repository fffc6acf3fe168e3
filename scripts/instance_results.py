"""Reproduce emseg's neuron segmentation results on real FIB-SEM (validation splits only).

The pipeline (the ``neurons-fibsem`` preset's chain):

1. **Boundary map**: either (FlyEM, ``--boundary deep``) a U-Net, or the
   mean probability of several (the shipped preset: the tri-planar 2D U-Net
   ``boundaries-fibsem``, ``emseg train configs/boundaries-fibsem.yaml``: xy,
   zx and zy planes of z 0-59, predicted with ``planes=3``; and the 3D U-Net
   ``boundaries-fibsem-3d``, ``configs/boundaries-fibsem-3d.yaml``: 3D
   patches of z 0-59; both with test-time flips), stored as uint8
   ``round(255 p)`` as ``emseg segment`` does; or a random forest (:mod:`emseg.semantic.forest`,
   3D ilastik-like features in nm, optional autocontext) trained on boundary
   targets derived from the ground truth: a voxel is *boundary* when the
   ground-truth label changes within one voxel (6-neighbourhood) or is 0
   where 0 marks membranes (gala), *interior* otherwise; a balanced random
   subsample per class.
2. **Supervoxels**: seeded watershed of the boundary map
   (:func:`emseg.instance.supervoxels`), its seeds chosen on a tuning split.
3. **Agglomeration**: waterz-style mean boundary
   (:func:`emseg.instance.agglomerate_graph`), and a learned edge classifier
   (:func:`emseg.instance.train_edge_classifier`, trained on training-range
   ground truth), each with its threshold chosen on the tuning split. Every
   choice minimises ``ARAND / 0.10 + (VOI split + VOI merge) / 1.0`` on the
   tuning split (the two goals of issue 7, weighted alike).
4. **Scores** on the held-out split: adapted Rand error (CREMI variant) and
   VOI split / merge in bits (:func:`emseg.metrics.neuron_metrics`).

Splits:

* FlyEM medulla (125 x 250 x 250, 10 nm): forest and edge classifier trained
  on z 0-59, supervoxel seeds and thresholds tuned on z 60-79, scored on
  z 80-124 (never used for any choice). Each split is segmented on its own.
* gala FIB-SEM example: forest and edge classifier trained on train z 0-29,
  tuned on train z 30-49, scored on the whole test volume.

Usage::

    python scripts/instance_results.py                      # both datasets (forests)
    python scripts/instance_results.py --only flyem --boundary deep --save-preset
    # + small-segment clean-up (size chosen with the threshold on z 60-79)
    python scripts/instance_results.py --only flyem --boundary deep --tta --merge-small tune
    # the shipped preset: the mean of the tri-planar 2D and the 3D U-Net
    python scripts/instance_results.py --only flyem --boundary deep --tta --merge-small tune \
        --deep-model boundaries-fibsem boundaries-fibsem-3d --planes 3 1 --save-preset
    # another boundary map of the whole volume (or the mean of several), no preset
    python scripts/instance_results.py --only flyem --boundary-map a.npy b.npy --merge-small tune

Prints a table and writes ``bench_output/instance_results.json``; with
``--save-preset`` writes ``src/emseg/presets/neurons-fibsem/`` (deep: the
settings and scores, naming the shipped model; forest: also the forest; see
``src/emseg/presets/README.md``).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from emseg.data import DATASETS, open_dataset_file
from emseg.features import feature_spec
from emseg.instance import (
    agglomerate_graph,
    region_adjacency_graph,
    save_edge_classifier,
    supervoxels,
    train_edge_classifier,
)
from emseg.metrics import neuron_metrics, overlap_table
from emseg.semantic.forest import PixelClassifier, load_model, save_model, train_forest

log = logging.getLogger("instance_results")

ROOT = Path(__file__).resolve().parents[1]
PRESET_DIR = ROOT / "src" / "emseg" / "presets" / "neurons-fibsem"

#: Supervoxel settings tried on the tuning split (keyword arguments of ``supervoxels``).
SUPERVOXEL_GRID: tuple[dict[str, Any], ...] = (
    *(
        {"seeds": "distance", "threshold": th, "sigma_nm": 0.0, "min_seed_distance_nm": d}
        for th, d in itertools.product((0.3, 0.5), (30.0, 60.0))
    ),
    {"seeds": "minima", "sigma_nm": 0.0, "min_seed_distance_nm": 60.0},
)

MEAN_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.30, 0.96, 0.025))
FLYEM_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.40, 0.81, 0.05))
LEARNED_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))
#: A U-Net's boundary map is sharper than a forest's: its mean thresholds start lower.
DEEP_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.20, 0.81, 0.05))
#: ``--merge-small tune`` (FlyEM, mean edges): sizes (nm^3) below which segments are merged
#: into their lowest-mean neighbour after the threshold, each tried with the thresholds of
#: the grid within 0.1 of the one chosen without clean-up.
MERGE_SMALL_NM3 = (0.0, 3e5, 5e5, 7e5, 1e6, 1.5e6, 2e6)
#: ``--merge-small joint`` (FlyEM, mean edges): supervoxels (the distance-seed settings of
#: SUPERVOXEL_GRID), threshold and clean-up size chosen together on the tuning crop.
JOINT_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.30, 0.61, 0.05))
#: Multicut thresholds (session 8): its objective changes faster with the threshold than the
#: mean's (z 60-79: 1.013 / 0.986 / 1.301 at 0.35 / 0.40 / 0.45), so a finer, narrower grid.
MULTICUT_THRESHOLDS = tuple(round(t, 3) for t in np.arange(0.30, 0.501, 0.025))
JOINT_MERGE_SMALL_NM3 = (0.0, 5e5, 7e5, 1e6, 1.5e6)


def boundary_targets(truth: np.ndarray, *, zero_is_boundary: bool = False) -> np.ndarray:
    """Forest targets from instance labels: 2 = boundary, 1 = interior, 0 = unlabelled (uint8).

    A voxel is boundary when a face neighbour has another label (so every
    object contact gives a two-voxel band); with `zero_is_boundary`, label-0
    voxels are boundary too (gala's membranes), else they are unlabelled.
    """
    g = truth.astype(np.int64)
    b = np.zeros(truth.shape, bool)
    for ax in range(truth.ndim):
        d = np.diff(g, axis=ax) != 0
        lo = [slice(None)] * truth.ndim
        hi = [slice(None)] * truth.ndim
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        b[tuple(lo)] |= d
        b[tuple(hi)] |= d
    out = np.where(b, 2, 1).astype(np.uint8)
    if zero_is_boundary:
        out[truth == 0] = 2
    else:
        out[truth == 0] = 0
    return out


def scores(truth: np.ndarray, segmentation: np.ndarray) -> dict[str, float]:
    """ARAND (CREMI), VOI split / merge (bits), ground-truth 0 ignored."""
    m = neuron_metrics(overlap_table(truth, segmentation))
    return {
        "adapted_rand_error_cremi": round(float(m["adapted_rand_error_cremi"]), 4),
        "voi_split": round(float(m["voi_split"]), 4),
        "voi_merge": round(float(m["voi_merge"]), 4),
    }


def train_boundary(
    image: np.ndarray, targets: np.ndarray, spacing: tuple[float, ...], args: argparse.Namespace
) -> PixelClassifier:
    return train_forest(
        image, targets, spacing=spacing, spec=feature_spec(spacing=spacing),
        class_names=("interior", "boundary"), stages=args.stages, n_estimators=args.trees,
        max_depth=args.max_depth, min_samples_leaf=args.min_leaf,
        max_samples_per_class=args.samples, seed=args.seed, n_jobs=2,
    )  # fmt: skip


def check_reused_model(model: PixelClassifier, args: argparse.Namespace) -> None:
    """Refuse a ``--boundary-model`` trained with other settings than the command line's."""
    forest = model.provenance.get("forest", {})
    want = {"n_estimators": args.trees, "max_depth": args.max_depth,
            "min_samples_leaf": args.min_leaf, "seed": args.seed}  # fmt: skip
    got = {k: forest.get(k) for k in want}
    if (
        got != want
        or len(model.stages) != args.stages
        or model.class_names
        != (
            "interior",
            "boundary",
        )
    ):
        raise SystemExit(
            f"--boundary-model was trained with {got}, {len(model.stages)} stages, classes "
            f"{model.class_names}; this command asks for {want}, {args.stages} stages."
        )


def boundary_map(model: PixelClassifier, image: np.ndarray) -> np.ndarray:
    """Probability of class "boundary", float32, whole image in memory."""
    probs = model.predict_proba(image, spacing=model.spacing, n_threads=2)
    return np.ascontiguousarray(probs[model.class_names.index("boundary")], dtype=np.float32)


def model_digest(model: PixelClassifier) -> str:
    """SHA-256 (first 16 hex digits) of the model's trees and settings."""
    h = hashlib.sha256(json.dumps([model.spec.to_dict(), list(model.spacing),
                                   list(model.context_scales)], sort_keys=True).encode())  # fmt: skip
    for stage in model.stages:
        for name, arr in sorted(stage.arrays().items()):
            h.update(name.encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def cached_boundary_map(model: PixelClassifier, image: np.ndarray, cache: str | None) -> np.ndarray:
    """:func:`boundary_map`, kept in `cache` (a folder) under the model's digest."""
    if not cache:
        return boundary_map(model, image)
    path = Path(cache) / f"flyem_boundary_{model_digest(model)}.npy"
    if path.exists():
        log.info("boundary map from %s", path)
        return np.load(path)
    out = boundary_map(model, image)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def deep_members(args: argparse.Namespace) -> list[tuple[str, int]]:
    """``(model, planes)`` of each deep model (``--deep-model`` with ``--planes``, one each or one for all)."""
    models, planes = list(args.deep_model), list(args.planes)
    if len(planes) == 1:
        planes = planes * len(models)
    if len(planes) != len(models):
        raise SystemExit(
            f"--planes: give one value, or one per --deep-model ({len(models)}); got {planes}"
        )
    return list(zip(models, planes, strict=True))


def deep_boundary_map(
    models: list[Any], image: np.ndarray, planes: list[int], *, tta: bool = False
) -> np.ndarray:
    """Channel "boundary" of a deep model, or the mean of several, quantised as ``emseg segment`` stores it.

    One model: ``predict_image(model, image, planes=, tta=)``; several (an
    ensemble, a preset's ``prediction.members``): the mean of their float32
    probabilities (:func:`emseg.semantic.deep.predict_members`), quantised once.
    `tta`: mean over the flips of each plane, as a preset with ``tta`` predicts.
    """
    from emseg.semantic.deep import Member, predict_image, predict_members

    if len(models) == 1:
        probs = predict_image(models[0], image, planes=planes[0], tta=tta)
    else:
        members = [Member(m, planes=p, tta=tta) for m, p in zip(models, planes, strict=True)]
        probs = predict_members(members, image)
    p = probs[models[0].output_names.index("boundary")]
    return (np.rint(np.clip(p, 0, 1) * 255) / 255).astype(np.float32)


def _weights_digest(models: list[Any]) -> str:
    h = hashlib.sha256()
    for model in models:
        for name, t in sorted(model.network.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().float().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_deep_map(
    models: list[Any],
    image: np.ndarray,
    planes: list[int],
    *,
    tta: Any,
    cache: str | None,
    ttas: list[Any] | None = None,
    weights: list[float] | None = None,
) -> np.ndarray:
    """:func:`deep_boundary_map`, kept in the folder `cache` under the weights' digests.

    `ttas` / `weights` (one per model; default: `tta` each, weight 1) give an ensemble whose
    members differ in test-time augmentation or weight. With a cache, every map is built from
    each member's float32 boundary probability (also cached, so a member shared by several
    candidates is predicted once) as :func:`emseg.semantic.deep.predict_members` averages
    them, and quantised once: the same arithmetic, so the same map as without a cache.
    """
    ttas = [tta] * len(models) if ttas is None else list(ttas)
    weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
    plain = len(set(map(str, ttas))) == 1 and ttas[0] in (True, False) and set(weights) == {1.0}
    if plain and not cache:
        return deep_boundary_map(models, image, planes, tta=ttas[0])
    tag = "".join(str(p) for p in planes)
    if plain:
        name = f"flyem_deep_{_weights_digest(models)}_p{tag}{'_tta' if ttas[0] else ''}.npy"
    else:
        how = "_".join(f"{_tta_tag(t)}{w:g}" for t, w in zip(ttas, weights, strict=True))
        name = f"flyem_deep_{_weights_digest(models)}_p{tag}_{how}.npy"
    path = Path(cache) / name if cache else None
    if path is not None and path.exists():
        log.info("boundary map from %s", path)
        return np.load(path)
    from emseg.semantic.deep._infer import weighted_add, weighted_mean

    acc = None
    for model, pl, t, w in zip(models, planes, ttas, weights, strict=True):
        acc = weighted_add(acc, cached_member_map(model, image, pl, t, cache), w)
    assert acc is not None
    p = weighted_mean(acc, weights)
    out = (np.rint(np.clip(p, 0, 1) * 255) / 255).astype(np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, out)
    return out


def _tta_tag(tta: Any) -> str:
    return {"flips+transpose": "ft", "flips": "f", "True": "f", "False": "n"}[str(tta)]


def cached_member_map(
    model: Any, image: np.ndarray, planes: int, tta: Any, cache: str | None
) -> np.ndarray:
    """One model's float32 boundary probability (``predict_image``), kept in `cache`."""
    from emseg.semantic.deep import predict_image

    path = None
    if cache:
        path = (
            Path(cache) / f"flyem_member_{_weights_digest([model])}_p{planes}_{_tta_tag(tta)}.npy"
        )
        if path.exists():
            log.info("member map from %s", path)
            return np.load(path)
    t0 = time.perf_counter()
    p = predict_image(model, image, planes=planes, tta=tta)
    out = np.ascontiguousarray(p[model.output_names.index("boundary")])
    log.info("member map in %.0f s", time.perf_counter() - t0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, out)
    return out


def member_record(
    model: Any, name: str, planes: int, tta: Any, weight: float = 1.0
) -> dict[str, Any]:
    """One deep member's identity and training, as a preset's ``training.boundary`` records it."""
    prov = model.provenance
    out = {"model": name, "planes": planes, "tta": tta}
    if weight != 1:
        out["weight"] = float(weight)
    return {**out, "dim": model.dim,
            "steps": prov.get("steps"), "train_seconds": prov.get("train_seconds"),
            "validation": prov.get("validation", {}),
            "orientations": list(model.config.data.orientations)}  # fmt: skip


def ensemble_map_description(
    members: list[tuple[str, int]] | list[dict[str, Any]], tta: Any
) -> str:
    """``mean boundary map of A tri-planar and B, test-time flips`` for a preset's description.

    `members`: ``(model, planes)`` pairs (all with `tta`), or ``{"model", "planes", "tta",
    "weight"}`` entries (each with its own tta; `tta` is then ignored). Members whose flips
    come with the y <-> x transpose while others' do not are marked ``(+ y/x transpose)``; a
    weight other than 1 makes it a weighted mean, each member marked ``(weight W)``.
    """
    entries = [m if isinstance(m, dict) else {"model": m[0], "planes": m[1], "tta": tta}
               for m in members]  # fmt: skip
    modes = [str(m["tta"]) for m in entries]
    weighted = any(float(m.get("weight", 1.0)) != 1 for m in entries)
    names = []
    for m, mode in zip(entries, modes, strict=True):
        marks = [f"weight {float(m.get('weight', 1.0)):g}"] if weighted else []
        if mode == "flips+transpose" and len(set(modes)) > 1:
            marks.append("+ y/x transpose")
        names.append(f"{m['model']}{' tri-planar' if m['planes'] == 3 else ''}"
                     + (f" ({', '.join(marks)})" if marks else ""))  # fmt: skip
    if set(modes) == {"flips+transpose"}:
        how = ", test-time flips and y/x transpose"
    else:
        how = ", test-time flips" if any(m["tta"] for m in entries) else ""
    return ("weighted " if weighted else "") + "mean boundary map of " + " and ".join(names) + how


def deep_record(models: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """The deep boundary model(s): identity and training, as recorded in the results JSON."""
    members = [member_record(model, name, planes, args.tta)
               for model, (name, planes) in zip(models, deep_members(args), strict=True)]  # fmt: skip
    if len(members) == 1:
        return {"kind": "deep", **members[0]}
    return {"kind": "deep", "members": members}


def forest_record(model: PixelClassifier, args: argparse.Namespace) -> dict[str, Any]:
    """The boundary forest's settings, as recorded in the results JSON."""
    return {"stages": args.stages, "trees": args.trees, "max_depth": args.max_depth,
            "min_samples_leaf": args.min_leaf, "samples_per_class": args.samples,
            "scales_nm": list(model.spec.scales), "mode": model.spec.mode}  # fmt: skip


def _relabel(
    rag: Any, fragments: np.ndarray, threshold: float, weights: Any = None, merge_small: int = 0
) -> np.ndarray:
    agg = agglomerate_graph(rag, threshold=threshold, edge_weights=weights, merge_small=merge_small)
    return agg.lookup(int(fragments.max()))[fragments]


def merge_small_voxels(size_nm3: float, spacing: tuple[float, ...]) -> int:
    """``merge_small`` voxels of a size in nm^3 (as ``agglomerate_blockwise`` converts it)."""
    from emseg.instance._agglomerate import merge_small_voxels as convert

    return convert(size_nm3 or None, spacing=spacing, ndim=len(spacing))


def joint_grid(
    graphs: dict[int, Any],
    truth: np.ndarray,
    z: slice,
    spacing: tuple[float, ...],
    linkage: str = "mean",
) -> list[dict[str, Any]]:
    """Scores on the crop `z` (`truth` = the truth there) of every joint-grid setting.

    `graphs` maps an index of ``SUPERVOXEL_GRID`` to its ``(fragments, rag)``; every
    distance-seed setting is tried with each clean-up size ``JOINT_MERGE_SMALL_NM3`` and
    threshold (``JOINT_THRESHOLDS`` for the mean linkage, ``MULTICUT_THRESHOLDS`` for
    ``linkage="multicut"``); rows: ``k``, ``merge_small_nm3``, ``threshold``, scores.
    """
    thresholds = MULTICUT_THRESHOLDS if linkage == "multicut" else JOINT_THRESHOLDS
    rows = []
    for k, n_nm3, t in itertools.product(
        range(len(SUPERVOXEL_GRID)), JOINT_MERGE_SMALL_NM3, thresholds
    ):
        if SUPERVOXEL_GRID[k]["seeds"] != "distance":
            continue
        frag, rag = graphs[k]
        agg = agglomerate_graph(rag, threshold=t, merge_small=merge_small_voxels(n_nm3, spacing),
                                linkage=linkage)  # type: ignore[arg-type]  # fmt: skip
        seg = agg.lookup(int(frag.max()))[frag[z]]
        rows.append({"k": k, "merge_small_nm3": n_nm3, "threshold": t, **scores(truth, seg)})
    return rows


def sweep_mean(fragments: np.ndarray, rag: Any, truth: np.ndarray) -> dict[float, dict]:
    return {t: scores(truth, _relabel(rag, fragments, t)) for t in MEAN_THRESHOLDS}


def sweep_learned(
    fragments: np.ndarray, rag: Any, truth: np.ndarray, p: np.ndarray
) -> dict[float, dict]:
    return {t: scores(truth, _relabel(rag, fragments, t, 1 - p)) for t in LEARNED_THRESHOLDS}


def criterion(s: dict[str, float]) -> float:
    """What the tuning minimises: both goals weighted alike, ARAND / 0.10 + VOI / 1.0 bits."""
    return s["adapted_rand_error_cremi"] / 0.10 + (s["voi_split"] + s["voi_merge"]) / 1.0


def _best(sweep: dict[float, dict]) -> float:
    return min(sweep, key=lambda t: (criterion(sweep[t]), t))


def run_pipeline(
    name: str,
    *,
    image_train: np.ndarray,
    truth_train: np.ndarray,
    image_tune: np.ndarray,
    truth_tune: np.ndarray,
    image_test: np.ndarray,
    truth_test: np.ndarray,
    spacing: tuple[float, ...],
    zero_is_boundary: bool,
    args: argparse.Namespace,
    boundary_of: Any = None,
) -> dict[str, Any]:
    """Train on `*_train`, choose settings on `*_tune`, score on `*_test`.

    `boundary_of` (optional) maps a model and a split name to the split's
    boundary map; by default each split's image is predicted on its own.
    """
    t0 = time.perf_counter()
    if getattr(args, "boundary_model", None):
        model = load_model(args.boundary_model)
        check_reused_model(model, args)
    else:
        targets = boundary_targets(truth_train, zero_is_boundary=zero_is_boundary)
        model = train_boundary(image_train, targets, spacing, args)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    if boundary_of is None:
        maps = {
            "train": boundary_map(model, image_train),
            "tune": boundary_map(model, image_tune),
            "test": boundary_map(model, image_test),
        }
    else:
        maps = {k: boundary_of(model, k) for k in ("train", "tune", "test")}
    t_pred = time.perf_counter() - t0
    pixel = {}
    for k, truth in (("tune", truth_tune), ("test", truth_test)):
        tb = boundary_targets(truth, zero_is_boundary=zero_is_boundary)
        known = tb > 0
        pixel[k] = round(float(((maps[k] > 0.5) == (tb == 2))[known].mean()), 4)
    log.info("%s: forest %.0f s, prediction %.0f s, boundary accuracy %s", name, t_train,
             t_pred, pixel)  # fmt: skip

    # supervoxels + mean agglomeration: seeds and threshold on the tuning split
    t0 = time.perf_counter()
    tuning = []
    for sv in SUPERVOXEL_GRID:
        frag = supervoxels(maps["tune"], spacing=spacing, **sv)
        rag = region_adjacency_graph(frag, maps["tune"])
        sweep = sweep_mean(frag, rag, truth_tune)
        best = _best(sweep)
        tuning.append({"supervoxels": sv, "fragments": int(frag.max()), "threshold": best,
                       **sweep[best]})  # fmt: skip
        log.info("%s tune %s: %d fragments, t=%.3f %s", name, sv, frag.max(), best, sweep[best])
    chosen = min(tuning, key=criterion)
    sv = chosen["supervoxels"]
    t_mean = chosen["threshold"]
    t_tune = time.perf_counter() - t0

    # learned edge classifier: trained on the training split's fragments and ground truth
    frag_train = supervoxels(maps["train"], spacing=spacing, **sv)
    rag_train = region_adjacency_graph(frag_train, maps["train"])
    clf = train_edge_classifier(
        [(rag_train, frag_train, truth_train)],
        n_estimators=args.edge_trees,
        min_samples_leaf=args.edge_min_leaf,
        seed=args.seed,
    )
    frag_tune = supervoxels(maps["tune"], spacing=spacing, **sv)
    rag_tune = region_adjacency_graph(frag_tune, maps["tune"])
    learned_sweep = sweep_learned(frag_tune, rag_tune, truth_tune, clf.merge_probability(rag_tune))
    t_learned = _best(learned_sweep)

    # the held-out split, scored once with the chosen settings
    t0 = time.perf_counter()
    frag = supervoxels(maps["test"], spacing=spacing, **sv)
    rag = region_adjacency_graph(frag, maps["test"])
    seg_mean = _relabel(rag, frag, t_mean)
    t_agg = time.perf_counter() - t0
    seg_learned = _relabel(rag, frag, t_learned, 1 - clf.merge_probability(rag))
    result = {
        "dataset": name,
        "forest": forest_record(model, args),
        "boundary_accuracy": pixel,
        "supervoxels": sv,
        "tuning": tuning,
        "fragments_test": int(frag.max()),
        "oversegmentation_test": scores(truth_test, frag),
        "mean": {"threshold": t_mean, "tune": chosen_scores(chosen),
                 "test": scores(truth_test, seg_mean)},
        "learned": {"threshold": t_learned, "tune": learned_sweep[t_learned],
                    "test": scores(truth_test, seg_learned), "edge_trees": args.edge_trees},
        "seconds": {"forest_train": round(t_train, 1), "forest_predict": round(t_pred, 1),
                    "tuning": round(t_tune, 1), "supervoxels_rag_agglomerate_test": round(t_agg, 1)},
    }  # fmt: skip
    result["_model"] = model
    result["_edge_classifier"] = clf
    return result


def chosen_scores(row: dict[str, Any]) -> dict[str, float]:
    return {k: row[k] for k in ("adapted_rand_error_cremi", "voi_split", "voi_merge")}


def given_boundary_map(paths: list[str], shape: tuple[int, ...]) -> np.ndarray:
    """The mean of the boundary maps in `paths` (.npy), quantised as ``emseg segment`` stores it.

    Each map is float in [0, 1] or uint8 levels ``round(255 p)``; the result is
    float32 ``round(255 mean) / 255`` (a float map already quantised is unchanged).
    """
    total = np.zeros(shape, np.float64)
    for p in paths:
        m = np.load(p, mmap_mode="r")
        if m.shape != shape:
            raise SystemExit(f"--boundary-map {p}: shape {m.shape}, the FlyEM volume is {shape}")
        total += m / 255.0 if m.dtype == np.uint8 else np.asarray(m, np.float64)
    mean = total / len(paths)
    return (np.rint(np.clip(mean, 0, 1) * 255) / 255).astype(np.float32)


def run_flyem(args: argparse.Namespace) -> dict[str, Any]:
    """FlyEM: segment the whole volume once (as a user would), tune on z 60-79, score z 80-124.

    The forest and the edge classifier learn from z 0-59 only; the threshold
    and supervoxel seeds are chosen on the z 60-79 crop of the whole-volume
    segmentation; the z 80-124 crop is scored once. (Segmenting each split on
    its own does not transfer: a threshold tuned on a 20-section slab merges
    too much on the 45-section test slab.)
    """
    image = np.asarray(open_dataset_file("flyem_medulla", "image")[:])
    truth = np.asarray(open_dataset_file("flyem_medulla", "groundtruth")[:])
    sp = DATASETS["flyem_medulla"].spacing
    tune, test = slice(60, 80), slice(80, 125)
    t0 = time.perf_counter()
    model: Any
    if args.boundary_map:
        model, t_train = None, 0.0
        bnd = given_boundary_map(args.boundary_map, truth.shape)
        record = {"kind": "map", "paths": [str(Path(p).resolve()) for p in args.boundary_map]}
    elif args.boundary == "deep":
        from emseg.semantic.deep import load_model as load_deep_model

        model = [load_deep_model(name) for name, _ in deep_members(args)]
        record = deep_record(model, args)
        t_train = sum(float(m.provenance.get("train_seconds", 0.0)) for m in model)
        t0 = time.perf_counter()
        bnd = cached_deep_map(model, image, [p for _, p in deep_members(args)], tta=args.tta,
                              cache=args.cache)  # fmt: skip
    else:
        if args.boundary_model:
            model = load_model(args.boundary_model)
            check_reused_model(model, args)
        else:
            model = train_boundary(image[:60], boundary_targets(truth[:60]), sp, args)
        record = forest_record(model, args)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        bnd = cached_boundary_map(model, image, args.cache)
    t_pred = time.perf_counter() - t0
    tb = boundary_targets(truth)
    pixel = {k: round(float(((bnd[z] > 0.5) == (tb[z] == 2)).mean()), 4)
             for k, z in (("tune", tune), ("test", test))}  # fmt: skip
    log.info(
        "flyem: boundary model trained in %.0f s, prediction %.0f s, boundary accuracy %s",
        t_train, t_pred, pixel,
    )  # fmt: skip

    def crop_scores(seg: np.ndarray, z: slice) -> dict[str, float]:
        return scores(truth[z], seg[z])

    t0 = time.perf_counter()
    tuning: list[dict[str, Any]] = []
    graphs: dict[int, Any] = {}
    for k, sv in enumerate(SUPERVOXEL_GRID):
        frag = supervoxels(bnd, spacing=sp, **sv)
        rag = region_adjacency_graph(frag, bnd)
        graphs[k] = (frag, rag)
        thresholds = DEEP_THRESHOLDS if args.boundary == "deep" else FLYEM_THRESHOLDS
        sweep = {t: crop_scores(_relabel(rag, frag, t), tune) for t in thresholds}
        best = _best(sweep)
        tuning.append({"supervoxels": sv, "fragments": int(frag.max()), "threshold": best,
                       **sweep[best]})  # fmt: skip
        log.info("flyem tune %s: %d fragments, t=%.3f %s", sv, frag.max(), best, sweep[best])
    k_best = min(range(len(tuning)), key=lambda k: criterion(tuning[k]))
    chosen = tuning[k_best]
    sv, t_mean = chosen["supervoxels"], chosen["threshold"]
    frag, rag = graphs[k_best]
    t_tune = time.perf_counter() - t0
    # learned edges: ground truth of z 0-59 only (other voxels are unlabelled for training)
    truth_train = truth.copy()
    truth_train[60:] = 0
    # learned edges (classifier from z 0-59, threshold on z 60-79) on the supervoxels chosen
    # for the mean agglomeration, or (--learned-supervoxels each) on every supervoxel setting,
    # choosing the setting for the learned agglomeration itself
    learned_tuning: list[dict[str, Any]] = []
    fitted = {}
    candidates = range(len(SUPERVOXEL_GRID)) if args.learned_supervoxels == "each" else [k_best]
    for k in candidates:
        sv_k = SUPERVOXEL_GRID[k]
        frag_k, rag_k = graphs[k]
        clf_k = train_edge_classifier([(rag_k, frag_k, truth_train)], n_estimators=args.edge_trees,
                                      min_samples_leaf=args.edge_min_leaf, seed=args.seed)  # fmt: skip
        pm_k = clf_k.merge_probability(rag_k)
        sweep_k = {t: crop_scores(_relabel(rag_k, frag_k, t, 1 - pm_k), tune)
                   for t in LEARNED_THRESHOLDS}  # fmt: skip
        t_k = _best(sweep_k)
        fitted[k] = (clf_k, pm_k)
        learned_tuning.append({"supervoxels": sv_k, "threshold": t_k, **sweep_k[t_k], "k": k})
        log.info("flyem tune learned %s: t=%.2f %s", sv_k, t_k, sweep_k[t_k])
    best_row = min(learned_tuning, key=criterion)
    k_learned = int(best_row.pop("k"))
    for row in learned_tuning:
        row.pop("k", None)
    sv_learned = best_row["supervoxels"]
    t_learned = best_row["threshold"]
    frag_l, rag_l = graphs[k_learned]
    clf, pm = fitted[k_learned]
    # small-segment clean-up (mean edges): size x threshold (within 0.1 of the plain choice)
    # on the chosen supervoxels
    small_nm3, small_tuning = 0.0, []
    t0 = time.perf_counter()
    if args.merge_small == "tune":
        grid = DEEP_THRESHOLDS if args.boundary == "deep" else FLYEM_THRESHOLDS
        thresholds = [t for t in grid if abs(t - t_mean) <= 0.1 + 1e-9]
        for n_nm3, t in itertools.product(MERGE_SMALL_NM3, thresholds):
            seg = _relabel(rag, frag, t, merge_small=merge_small_voxels(n_nm3, sp))
            small_tuning.append({"merge_small_nm3": n_nm3, "threshold": t,
                                 **crop_scores(seg, tune)})  # fmt: skip
        row = min(small_tuning, key=lambda r: (criterion(r), r["merge_small_nm3"], r["threshold"]))
        small_nm3, t_mean = row["merge_small_nm3"], row["threshold"]
        chosen = {**chosen, **chosen_scores(row), "threshold": t_mean}
        log.info("flyem tune merge_small: %.3g nm^3, t=%.2f %s", small_nm3, t_mean,
                 chosen_scores(row))  # fmt: skip
    elif args.merge_small == "joint":
        small_tuning = joint_grid(graphs, truth[tune], tune, sp)
        row = min(small_tuning,
                  key=lambda r: (criterion(r), r["k"], r["merge_small_nm3"], r["threshold"]))  # fmt: skip
        k_best = int(row["k"])
        small_nm3, t_mean = row["merge_small_nm3"], row["threshold"]
        sv, (frag, rag) = SUPERVOXEL_GRID[k_best], graphs[k_best]
        chosen = {"supervoxels": sv, "fragments": int(frag.max()), "threshold": t_mean,
                  **chosen_scores(row)}  # fmt: skip
        for r in small_tuning:
            r["supervoxels"] = SUPERVOXEL_GRID[int(r.pop("k"))]
        log.info("flyem tune jointly: %s, %.3g nm^3, t=%.2f %s", sv, small_nm3, t_mean,
                 chosen_scores(row))  # fmt: skip
    t_small = time.perf_counter() - t0
    seg_mean = _relabel(rag, frag, t_mean, merge_small=merge_small_voxels(small_nm3, sp))
    seg_learned = _relabel(rag_l, frag_l, t_learned, 1 - pm)
    shipped = np.asarray(open_dataset_file("flyem_medulla", "oversegmentation")[:])
    transfer = None
    if args.boundary == "deep" and model is not None:
        transfer = gala_transfer(
            model,
            {"mean": (sv, t_mean, None, small_nm3), "learned": (sv_learned, t_learned, clf, 0.0)},
            args,
        )
    return {
        "dataset": "flyem_medulla",
        "splits": {"train": "z 0-59", "tune": "z 60-79", "test": "z 80-124"},
        "protocol": "whole volume segmented once; crops scored",
        "boundary": record,
        "boundary_accuracy": pixel,
        "supervoxels": sv,
        "tuning": tuning,
        "fragments": int(frag.max()),
        "oversegmentation_test": crop_scores(frag, test),
        "mean": {"threshold": t_mean, "merge_small_nm3": small_nm3,
                 "tune": chosen_scores(chosen), "test": crop_scores(seg_mean, test),
                 "merge_small_tuning": small_tuning},
        "learned": {"supervoxels": sv_learned, "threshold": t_learned,
                    "tune": chosen_scores(best_row),
                    "test": crop_scores(seg_learned, test), "edge_trees": args.edge_trees,
                    "tuning": learned_tuning},
        "shipped_oversegmentation_test": scores(truth[test], shipped[test]),
        "gala_transfer": transfer,
        "seconds": {"boundary_train": round(t_train, 1), "boundary_predict": round(t_pred, 1),
                    "tuning": round(t_tune, 1), "merge_small_tuning": round(t_small, 1)},
        "_model": model,
        "_edge_classifier": clf,
    }  # fmt: skip


def gala_transfer(
    model: Any, chains: dict[str, tuple[dict[str, Any], float, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    """The FlyEM chains applied as is (no retraining, no retuning) to gala's test volume.

    `chains` maps "mean" / "learned" to (supervoxel settings, threshold, edge
    classifier or None, merge_small_nm3).
    """
    image = np.asarray(open_dataset_file("gala_fibsem", "test_image")[:])
    truth = np.asarray(open_dataset_file("gala_fibsem", "test_groundtruth")[:])
    sp = DATASETS["gala_fibsem"].spacing
    bnd = deep_boundary_map(model, image, [p for _, p in deep_members(args)], tta=args.tta)
    out = {}
    for name, (sv, t, clf, small_nm3) in chains.items():
        frag = supervoxels(bnd, spacing=sp, **sv)
        rag = region_adjacency_graph(frag, bnd)
        w = None if clf is None else 1 - clf.merge_probability(rag)
        out[name] = scores(truth, _relabel(rag, frag, t, w, merge_small_voxels(small_nm3, sp)))
    log.info("gala test volume, FlyEM chains as they are: %s", out)
    return out


def run_gala(args: argparse.Namespace) -> dict[str, Any]:
    img = {
        s: np.asarray(open_dataset_file("gala_fibsem", f"{s}_image")[:]) for s in ("train", "test")
    }
    gt = {s: np.asarray(open_dataset_file("gala_fibsem", f"{s}_groundtruth")[:]) for s in ("train", "test")}  # fmt: skip
    sp = DATASETS["gala_fibsem"].spacing
    result = run_pipeline(
        "gala_fibsem",
        image_train=img["train"][:30], truth_train=gt["train"][:30],
        image_tune=img["train"][30:], truth_tune=gt["train"][30:],
        image_test=img["test"], truth_test=gt["test"],
        spacing=sp, zero_is_boundary=True, args=args,
    )  # fmt: skip
    result["splits"] = {"train": "train z 0-29", "tune": "train z 30-49", "test": "test volume"}
    return result


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_preset(
    flyem: dict[str, Any], gala: dict[str, Any] | None, args: argparse.Namespace
) -> Path:
    """Write the neurons-fibsem preset (format: src/emseg/presets/README.md)."""
    from emseg import __version__

    PRESET_DIR.mkdir(parents=True, exist_ok=True)
    deep = flyem["boundary"].get("kind") == "deep"
    files: dict[str, str] = {}
    if deep:
        (PRESET_DIR / "boundary.safetensors").unlink(missing_ok=True)
        members = deep_members(args)
        flips = ", test-time flips" if args.tta else ""
        if len(members) == 1:
            ((name, planes),) = members
            prediction = {"kind": "deep", "model": name, "class": "boundary",
                          "planes": planes, "tta": args.tta}  # fmt: skip
            what = f"{'tri-planar ' if planes == 3 else ''}U-Net boundary map ({name}{flips})"
        else:
            prediction = {"kind": "deep", "class": "boundary",
                          "members": [{"model": n, "planes": p, "tta": args.tta} for n, p in members]}  # fmt: skip
            what = ensemble_map_description(members, args.tta)
    else:
        model_path = save_model(
            flyem["_model"], PRESET_DIR / "boundary.safetensors", overwrite=True
        )
        files[model_path.name] = _sha256(model_path)
        prediction = {"kind": "forest", "model": model_path.name, "class": "boundary"}
        what = "random-forest boundary map"
    method = args.preset_edges
    if method == "auto":  # the better of the two on the tuning split
        method = min(("mean", "learned"), key=lambda m: criterion(flyem[m]["tune"]))
    agg: dict[str, Any] = {"edges": method, "threshold": flyem[method]["threshold"],
                           "edge_classifier": None}  # fmt: skip
    if flyem[method].get("merge_small_nm3"):
        agg["merge_small_nm3"] = flyem[method]["merge_small_nm3"]
    if method == "learned":
        p = save_edge_classifier(
            flyem["_edge_classifier"], PRESET_DIR / "edges.safetensors", overwrite=True
        )
        agg["edge_classifier"] = p.name
        files[p.name] = _sha256(p)
    else:
        (PRESET_DIR / "edges.safetensors").unlink(missing_ok=True)
    other = {}
    if deep and flyem.get("gala_transfer"):
        other["gala_fibsem test volume (this preset as is: FlyEM-trained, FlyEM-tuned)"] = flyem[
            "gala_transfer"
        ][method]
    elif gala is not None:
        other["gala_fibsem test volume (same recipe, trained on its train volume)"] = gala[method][
            "test"
        ]
    other[f"flyem_medulla {flyem['splits']['tune']} (the tuning crop)"] = flyem[method]["tune"]
    sv = flyem[method].get("supervoxels", flyem["supervoxels"])
    halo = 2 * float(sv.get("min_seed_distance_nm", 0.0)) + 300.0
    meta = {
        "format": "emseg.preset",
        "format_version": 1,
        "name": "neurons-fibsem",
        "description": (
            f"Neurons in isotropic FIB-SEM (~10 nm voxels): {what}, "
            f"watershed supervoxels, {method} agglomeration (trained on FlyEM medulla)"
        ),
        "target": "neurons",
        "spacing": list(DATASETS["flyem_medulla"].spacing),
        "prediction": prediction,
        "instances": {
            "method": "agglomerate",
            "supervoxels": sv,
            "agglomeration": agg,
            "min_size_nm3": 0.0,
            "halo_nm": [halo, halo, halo],
            # one block up to 256^3: `emseg segment` then equals this script's in-memory chain
            "block_voxels": 2**24,
        },
        "validation": {
            "dataset": "flyem_medulla",
            "trained_on": flyem["splits"]["train"],
            "tuned_on": flyem["splits"]["tune"],
            "scored_on": flyem["splits"]["test"],
            "scores": flyem[method]["test"],
            "other": other,
        },
        "training": {
            "command": "python scripts/instance_results.py --save-preset "
            + " ".join(
                f"--{k.replace('_', '-')}"
                + (
                    ""
                    if v is True
                    else " " + (" ".join(map(str, v)) if isinstance(v, list) else str(v))
                )
                for k, v in {"only": args.only, **_cli_settings(args)}.items()
                if v is not None and v is not False
            ),
            "emseg": __version__,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "boundary": flyem["boundary"],
        },
        "files": files,
    }
    (PRESET_DIR / "preset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return PRESET_DIR


def _cli_settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("boundary", "deep_model", "planes", "tta", "learned_supervoxels", "merge_small", "stages", "trees", "max_depth", "min_leaf",
            "samples", "edge_trees", "edge_min_leaf", "seed", "preset_edges")  # fmt: skip
    return {k: getattr(args, k) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("flyem", "gala"), default=None)
    parser.add_argument("--boundary", choices=("forest", "deep"), default="forest",
                        help="FlyEM boundary map: a forest trained here, or a deep model")  # fmt: skip
    parser.add_argument("--deep-model", nargs="+", default=["boundaries-fibsem"],
                        help="with --boundary deep: a shipped model name or a model folder; "
                        "several: their mean probability (an ensemble)")  # fmt: skip
    parser.add_argument("--planes", type=int, nargs="+", choices=(1, 3), default=[3],
                        help="with --boundary deep: 3 = tri-planar prediction (2D models); one "
                        "value for all models or one per --deep-model")  # fmt: skip
    parser.add_argument("--tta", action="store_true",
                        help="with --boundary deep: test-time flips (the preset then predicts "
                        "with them too)")  # fmt: skip
    parser.add_argument("--stages", type=int, default=2, help="forest autocontext stages")
    parser.add_argument("--trees", type=int, default=30)
    parser.add_argument("--max-depth", type=int, default=14)
    parser.add_argument("--min-leaf", type=int, default=1)
    parser.add_argument("--samples", type=int, default=30_000, help="max samples per class")
    parser.add_argument("--edge-trees", type=int, default=30)
    parser.add_argument("--edge-min-leaf", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--boundary-model", default=None,
                        help="FlyEM only: reuse a boundary forest saved by an earlier run of this "
                        "script with the same settings (e.g. the preset's boundary.safetensors) "
                        "instead of training it again")  # fmt: skip
    parser.add_argument("--cache", default=None,
                        help="FlyEM only: folder keeping the predicted boundary map, keyed by the "
                        "model's digest (a rerun with the same model skips the prediction)")  # fmt: skip
    parser.add_argument("--learned-supervoxels", choices=("mean", "each"), default="mean",
                        help="FlyEM: train the edge classifier on the supervoxels chosen for the "
                        "mean agglomeration, or on each setting and choose among them on the "
                        "tuning crop")  # fmt: skip
    parser.add_argument("--merge-small", choices=("off", "tune", "joint"), default="off",
                        help="FlyEM, mean edges: after the threshold, merge segments smaller "
                        "than a size (nm^3) into their lowest-mean neighbour. tune: the size "
                        "(MERGE_SMALL_NM3) with the threshold, on the supervoxels chosen "
                        "without it; joint: supervoxels, threshold and size (JOINT_*) chosen "
                        "together")  # fmt: skip
    parser.add_argument("--boundary-map", nargs="+", default=None, metavar="NPY",
                        help="FlyEM only: score this boundary map (a .npy of the whole volume, "
                        "z-y-x, float in [0, 1] or uint8 levels; the mean of several) instead "
                        "of predicting one; quantised to round(255 p) / 255 as emseg segment "
                        "stores it. Not with --save-preset.")  # fmt: skip
    parser.add_argument("--save-preset", action="store_true")
    parser.add_argument("--preset-edges", choices=("auto", "mean", "learned"), default="auto",
                        help="which agglomeration the preset ships (auto: the better one on the "
                        "tuning split)")  # fmt: skip
    parser.add_argument("--out", default="bench_output/instance_results.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("numba").setLevel(logging.WARNING)
    if args.boundary_map:  # a U-Net-like map: the deep threshold grids
        args.boundary = "deep"
    results: dict[str, dict[str, Any]] = {}
    if args.only in (None, "flyem"):
        results["flyem"] = run_flyem(args)
    if args.only in (None, "gala"):
        results["gala"] = run_gala(argparse.Namespace(**{**vars(args), "boundary_model": None}))
    if args.save_preset:
        if args.boundary_map:
            parser.error("--save-preset needs a boundary model; --boundary-map has none")
        if "flyem" not in results:
            parser.error("--save-preset needs the FlyEM run (leave out --only gala)")
        path = save_preset(results["flyem"], results.get("gala"), args)
        print(f"preset written to {path}")
    clean = {k: {a: b for a, b in v.items() if not a.startswith("_")} for k, v in results.items()}
    clean["settings"] = _cli_settings(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(clean, indent=1))
    print(f"\n{'data / method':<40} {'ARAND':>7} {'VOI split':>10} {'VOI merge':>10}")
    for name, r in results.items():
        rows = [("supervoxels only", r["oversegmentation_test"]),
                (f"mean agglomeration t={r['mean']['threshold']}"
                 + (f" small<{r['mean']['merge_small_nm3']:.3g}nm3"
                    if r["mean"].get("merge_small_nm3") else ""), r["mean"]["test"]),
                (f"learned edges t={r['learned']['threshold']}", r["learned"]["test"])]  # fmt: skip
        if "shipped_oversegmentation_test" in r:
            rows.append(("shipped oversegmentation", r["shipped_oversegmentation_test"]))
        if r.get("gala_transfer"):
            rows += [(f"-> gala test, FlyEM chain as is, {k}", r["gala_transfer"][k])
                     for k in ("mean", "learned")]  # fmt: skip
        for label, s in rows:
            print(f"{name + ' ' + label:<40} {s['adapted_rand_error_cremi']:>7.4f} "
                  f"{s['voi_split']:>10.3f} {s['voi_merge']:>10.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
