"""The emseg demo: a chain of small steps over synthetic EM with exact ground truth.

:func:`run_demo` runs :data:`DEMO_STEPS` in order. Each step is a function
``step(ctx) -> dict`` that reads what earlier steps left in the shared
:class:`DemoContext` and returns its outputs (paths, numbers), which are
stored under the step's name and written to ``demo_summary.json``. Later
stages are added by appending a :class:`DemoStep` to :data:`DEMO_STEPS`.
The chain: synthesize -> write -> preview -> forest (scribbles from the
truth, a preset folder) -> segment (``emseg segment`` with that preset) ->
evaluate (against the true mitochondria, HTML report) -> measure -> catalog
-> query.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emseg._checks import parse_shape
from emseg.errors import EmsegValueError, OutputExistsError

log = logging.getLogger(__name__)

#: What the demo writes at the top of its output folder.
SUMMARY = "demo_summary.json"
SYNTHETIC = "synthetic"


@dataclass
class DemoContext:
    """What the steps share: the settings, the output folder and every result so far."""

    out: Path
    shape: tuple[int, int, int]
    seed: int
    spacing: tuple[float, float, float] = (40.0, 4.0, 4.0)
    data: dict[str, Any] = field(default_factory=dict)  # in-memory objects between steps
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # JSON-able, per step


@dataclass(frozen=True)
class DemoStep:
    """One stage of the demo: a name, a one-line description and the function."""

    name: str
    description: str
    run: Callable[[DemoContext], dict[str, Any]]


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its outputs and what each step reported."""

    out: Path
    summary_path: Path
    steps: dict[str, dict[str, Any]]


def _synthesize(ctx: DemoContext) -> dict[str, Any]:
    from emseg.data import synthetic_em

    t0 = time.perf_counter()
    em = synthetic_em(ctx.shape, spacing=ctx.spacing, seed=ctx.seed)
    ctx.data["synthetic"] = em
    counts = {
        "cells": len(np.unique(em.cells)),
        "mitochondria": len(np.unique(em.mitochondria)) - int((em.mitochondria == 0).any()),
    }
    fractions = {name: float((em.classes == i).mean()) for i, name in enumerate(em.class_names)}
    return {
        "shape": list(em.image.shape),
        "spacing": list(em.spacing),
        "seed": em.seed,
        "params": em.params,
        "class_names": list(em.class_names),
        "class_fractions": fractions,
        "counts": counts,
        "cell_ids_max": int(em.cells.max()),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _write_synthetic(ctx: DemoContext) -> dict[str, Any]:
    from emseg.io import write_image

    em = ctx.data["synthetic"]
    folder = ctx.out / SYNTHETIC
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("image", "cells", "membranes", "mitochondria", "vesicles", "nucleus", "classes"):
        array = getattr(em, name)
        if array.dtype == bool:
            array = array.astype(np.uint8)
        path = folder / f"{name}.ome.zarr"
        write_image(
            array,
            path,
            spacing=em.spacing,
            labels=name != "image",
            overwrite=True,
            attrs={"emseg": {"produced_by": "emseg demo: synthetic_em", "seed": em.seed}},
        )
        paths[name] = str(path)
    return {"paths": paths}


def _preview(ctx: DemoContext) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    em = ctx.data["synthetic"]
    z = em.image.shape[0] // 2
    colours = ListedColormap(
        [
            (0, 0, 0, 0),
            (0.1, 0.6, 1.0, 0.55),
            (1.0, 0.3, 0.1, 0.6),
            (1.0, 0.9, 0.1, 0.8),
            (0.6, 0.2, 1.0, 0.35),
        ]
    )
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    for ax in axes:
        ax.imshow(em.image[z], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_axis_off()
    axes[1].imshow(em.classes[z], cmap=colours, vmin=0, vmax=4, interpolation="nearest")
    axes[0].set_title(f"synthetic EM, section {z}")
    axes[1].set_title(" / ".join(em.class_names[1:]) + " (ground truth)", fontsize=9)
    fig.tight_layout()
    path = ctx.out / "preview.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return {"path": str(path), "section": z}


#: The demo's preset: a forest trained on scribbles + components (sizes in nm^3).
DEMO_PRESET = "demo-mitochondria"
DEMO_COMPONENTS = {"threshold": 0.7, "max_hole_nm3": 2.0e5}
DEMO_MIN_SIZE_NM3 = 4.0e5


def _forest(ctx: DemoContext) -> dict[str, Any]:
    """Scribbles from the synthetic truth -> a small forest -> a preset folder (seconds)."""
    from scipy import ndimage

    from emseg.features import feature_spec
    from emseg.presets import write_preset
    from emseg.semantic.forest import save_model, train_forest

    em = ctx.data["synthetic"]
    rng = np.random.default_rng(ctx.seed)
    mito = em.mitochondria > 0
    inside = ndimage.binary_erosion(mito, structure=np.ones((1, 3, 3), bool))
    far = ~ndimage.binary_dilation(mito, structure=np.ones((1, 7, 7), bool))
    dark = far & (em.classes > 0)  # membranes, vesicles, nucleus: the look-alikes
    scribbles = np.zeros(em.image.shape, np.uint8)
    scribbles[far & (rng.random(mito.shape) < 0.01)] = 1
    scribbles[dark & (rng.random(mito.shape) < 0.03)] = 1
    scribbles[inside & (rng.random(mito.shape) < 0.25)] = 2
    if not (scribbles == 2).any():  # a volume too small to hold a mitochondrion's interior
        scribbles[mito] = 2
    if not (scribbles == 2).any():
        scribbles[np.unravel_index(int(np.argmin(em.image)), em.image.shape)] = 2
    spec = feature_spec(  # per section: cheap, and enough at 40 nm between sections
        spacing=em.spacing,
        features=("gaussian", "hessian", "structure"),
        scales=(8.0, 24.0, 48.0),
        mode="2d",
    )
    t0 = time.perf_counter()
    model = train_forest(
        em.image,
        scribbles,
        spacing=em.spacing,
        spec=spec,
        class_names=["background", "mitochondrion"],
        n_estimators=12,
        max_depth=10,
        max_samples_per_class=20_000,
        seed=ctx.seed,
        n_jobs=2,
    )
    folder = ctx.out / "preset"
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, folder / "mitochondria.safetensors", overwrite=True)
    preset = write_preset(
        {
            "name": DEMO_PRESET,
            "description": "mitochondria of the synthetic demo volume (forest + components)",
            "target": "mitochondria",
            "spacing": list(em.spacing),
            "prediction": {
                "kind": "forest",
                "model": "mitochondria.safetensors",
                "class": "mitochondrion",
            },
            "instances": {
                "method": "components",
                "components": dict(DEMO_COMPONENTS),
                "min_size_nm3": DEMO_MIN_SIZE_NM3,
                "halo_nm": [160.0, 64.0, 64.0],
            },
            "training": {"command": "emseg demo", "scribbles": "from the synthetic truth"},
        },
        folder,
    )
    return {
        "preset": str(preset.path),
        "scribbles": {
            "background": int((scribbles == 1).sum()),
            "mitochondrion": int((scribbles == 2).sum()),
        },
        "trees": 12,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _segment(ctx: DemoContext) -> dict[str, Any]:
    """``emseg segment`` with the demo preset: blockwise probabilities, then instances."""
    from emseg.io import open_image
    from emseg.presets import segment

    t0 = time.perf_counter()
    result = segment(
        ctx.out / SYNTHETIC / "image.ome.zarr",
        ctx.results["forest"]["preset"],
        ctx.out / "segment",
        n_workers=2,
        progress=False,
    )
    ctx.data["instances"] = np.asarray(open_image(result.labels)[...], np.uint32)
    return {
        "probabilities": str(result.probabilities),
        "labels": str(result.labels),
        "n_objects": result.n_objects,
        "stages": result.seconds,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _evaluate(ctx: DemoContext) -> dict[str, Any]:
    """Evaluate the predicted mitochondria against the synthetic instance truth (+ HTML report)."""
    from emseg.evaluation import evaluate
    from emseg.report import write_object_tables, write_report

    em = ctx.data["synthetic"]
    pred = ctx.data["instances"]
    truth = np.asarray(em.mitochondria, np.uint32)
    folder = ctx.out / "evaluation"
    folder.mkdir(parents=True, exist_ok=True)
    result = evaluate(truth, pred, spacing=em.spacing, progress=False, n_workers=2)
    doc = result.to_json()
    (folder / "metrics.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    write_object_tables(result, folder)
    write_report(
        result, folder / "report.html", truth=truth, prediction=pred,
        title="emseg demo: forest + components vs synthetic mitochondria",
    )  # fmt: skip
    keys = ("ap50", "ap75", "pq", "dice", "adapted_rand_error_cremi", "voi_split", "voi_merge")
    metrics = {k: doc[k] for k in keys if k in doc}
    return {
        "prediction": "forest on scribbles -> probabilities -> threshold + components (emseg "
        "segment with the demo preset)",
        "n_predicted": int(len(np.unique(pred)) - int((pred == 0).any())),
        "n_truth": int(len(np.unique(truth)) - int((truth == 0).any())),
        "report": str(folder / "report.html"),
        "metrics_json": str(folder / "metrics.json"),
        "metrics": metrics,
        "answers": [
            f"  mitochondria: {int(len(np.unique(pred)) - 1)} predicted, "
            f"{int(len(np.unique(truth)) - 1)} true; "
            + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, int | float) and v is not None else f"{k} {v}"
                for k, v in metrics.items()
            ),
            f"  evaluation report: {folder / 'report.html'}",
        ],
    }


def _demo_objects(ctx: DemoContext) -> dict[str, tuple[np.ndarray, str, bool]]:
    """Label volumes to measure: name -> (labels, class, with geometry and descriptors).

    The synthetic cells are measured without the per-object mesh and
    descriptors, which cost seconds on large cells; organelles get both. The
    mitochondria are the predicted instances of the segment step when it ran
    (``ctx.data["instances"]``), else the synthetic truth.
    """
    from scipy import ndimage

    em = ctx.data["synthetic"]
    mito = ctx.data.get("instances", em.mitochondria)
    return {
        "cells": (np.asarray(em.cells, np.uint32), "cell", False),
        "mitochondria": (np.asarray(mito, np.uint32), "mitochondrion", True),
        "nucleus": (ndimage.label(em.nucleus)[0].astype(np.uint32), "nucleus", True),
        "vesicles": (ndimage.label(em.vesicles)[0].astype(np.uint32), "vesicle", True),
    }


def _measure(ctx: DemoContext) -> dict[str, Any]:
    """Morphometry of the cells and organelles -> morphometry/<name>.parquet and .csv."""
    from emseg.morphometry import measure, write_table

    em = ctx.data["synthetic"]
    folder = ctx.out / "morphometry"
    folder.mkdir(parents=True, exist_ok=True)
    measured: dict[str, Any] = {}
    counts, paths = {}, {}
    for name, (labels, cls, geometry) in _demo_objects(ctx).items():
        m = measure(labels, image=em.image, spacing=em.spacing, geometry=geometry, n_workers=2)
        m.table.insert(1, "class", cls)
        measured[name] = (labels, m, geometry)
        for ext in ("parquet", "csv"):
            paths[f"{name}.{ext}"] = str(write_table(m.table, folder / f"{name}.{ext}"))
        counts[name] = len(m.table)
    ctx.data["morphometry"] = measured
    return {"objects": counts, "paths": paths}


def _catalog(ctx: DemoContext) -> dict[str, Any]:
    """Every measured table in one SQLite catalog (with surface points and descriptors)."""
    from emseg.catalog import describe_objects, open_catalog

    em = ctx.data["synthetic"]
    path = ctx.out / "catalog.sqlite"
    with open_catalog(path) as cat:
        for name, (labels, m, geometry) in ctx.data["morphometry"].items():
            emb = (
                describe_objects(em.image, labels, m.table, spacing=em.spacing)
                if geometry and len(m.table)
                else None
            )
            labels_path = ctx.out / SYNTHETIC / f"{name}.ome.zarr"
            if name == "mitochondria" and "segment" in ctx.results:
                labels_path = Path(ctx.results["segment"]["labels"])
            cat.add_dataset(
                name,
                m.table,
                points=m.points,
                embeddings=emb,
                image=str(ctx.out / SYNTHETIC / "image.ome.zarr"),
                labels=str(labels_path),
                provenance={"produced_by": "emseg demo", "seed": ctx.seed},
            )
        n = len(cat)
    return {"path": str(path), "objects": n}


def _fmt_rows(df: Any, extra: str, unit: str) -> list[str]:
    if len(df) == 0:
        return ["    (no objects)"]
    return [
        f"    id {int(r.id):>4}  {r['class']:<13} {float(r[extra]):>10.3g} {unit:<4}  centroid "
        f"(z, y, x) = ({r.centroid_z_nm:.0f}, {r.centroid_y_nm:.0f}, {r.centroid_x_nm:.0f}) nm"
        for _, r in df.iterrows()
    ]


def _query(ctx: DemoContext) -> dict[str, Any]:
    """One label, one proximity and one image-based query on the demo catalog."""
    from emseg.catalog import like, near, open_catalog

    answers: list[str] = []
    result: dict[str, Any] = {}
    with open_catalog(ctx.results["catalog"]["path"], create=False) as cat:
        expr = "class = mitochondrion AND volume_nm3 > 1e5"
        df = cat.query(expr, sort="volume_nm3", descending=True, limit=5)
        answers += [f"  label query: {expr} (largest 5)", *_fmt_rows(df, "volume_nm3", "nm3")]
        result["label"] = {"query": expr, "ids": df["id"].tolist()}

        within = 500.0
        if len(cat.ids("class = nucleus")):
            df = near(cat, "nucleus", within=within, where="class = mitochondrion")
        else:
            df = cat.query("id < 0")
            df["distance_nm"] = []
        answers += [
            f"  proximity: mitochondria within {within:g} nm of the nucleus (surface to surface)",
            *_fmt_rows(df, "distance_nm", "nm"),
        ]
        result["proximity"] = {"within_nm": within, "ids": df["id"].tolist()}

        candidates = cat.query("class = mitochondrion", sort="volume_nm3", descending=True)
        if len(candidates) == 0:
            candidates = cat.query("class != cell", sort="volume_nm3", descending=True)
        if len(candidates) and next(cat.iter_embeddings(), None) is not None:
            example = int(candidates["id"].iloc[0])
            df = like(cat, example, top=3)
            answers += [
                f"  image-based: the 3 objects that look most like object {example} "
                "(hand-crafted descriptor, exact search)",
                *_fmt_rows(df, "distance", "sd"),
            ]
            result["image"] = {"example": example, "ids": df["id"].tolist()}
        else:
            answers += ["  image-based: no organelles with descriptors in this volume"]
            result["image"] = {"example": None, "ids": []}
    result["answers"] = answers
    return result


#: The demo's stages, in order. Append a DemoStep to extend the demo.
DEMO_STEPS: list[DemoStep] = [
    DemoStep("synthesize", "make a synthetic EM volume with exact ground truth", _synthesize),
    DemoStep("write", "write the image and every ground truth as OME-Zarr", _write_synthetic),
    DemoStep("preview", "PNG of the middle section with the class overlay", _preview),
    DemoStep("forest", "train a small forest on scribbles from the truth -> a preset", _forest),
    DemoStep("segment", "emseg segment: blockwise probabilities, then instances", _segment),
    DemoStep("evaluate", "evaluate the predicted mitochondria against the truth", _evaluate),
    DemoStep("measure", "morphometry of cells and organelles (Parquet + CSV)", _measure),
    DemoStep("catalog", "build a SQLite catalog of every measured object", _catalog),
    DemoStep("query", "one label, one proximity and one image-based query", _query),
]


def _outputs(out: Path) -> list[Path]:
    return [
        out / SUMMARY,
        out / SYNTHETIC,
        out / "preview.png",
        out / "preset",
        out / "segment",
        out / "evaluation",
        out / "morphometry",
        out / "catalog.sqlite",
        out / "catalog.sqlite-wal",
        out / "catalog.sqlite-shm",
    ]


def run_demo(
    out: str | Path = "demo_output",
    *,
    shape: Sequence[int] = (32, 256, 256),
    seed: int = 0,
    overwrite: bool = False,
    steps: Sequence[DemoStep] | None = None,
) -> DemoResult:
    """Run the demo steps and write their outputs under `out`.

    Parameters
    ----------
    out : path
        Output folder (created). Holds ``synthetic/*.ome.zarr``,
        ``preview.png``, ``preset/`` (the forest and its preset.json),
        ``segment/`` (probabilities and instances), ``evaluation/``
        (``report.html``, metrics), ``morphometry/``, ``catalog.sqlite`` and
        ``demo_summary.json``.
    shape : sequence of 3 int
        (Z, Y, X) of the synthetic volume (40 x 4 x 4 nm voxels).
    seed : int
        Seed of the synthetic volume.
    overwrite : bool
        Replace the demo outputs of an earlier run in `out`.
    steps : sequence of DemoStep, optional
        The steps to run (default :data:`DEMO_STEPS`).

    Returns
    -------
    DemoResult

    Raises
    ------
    OutputExistsError
        When `out` already holds demo outputs and `overwrite` is false.
    """
    shp = parse_shape(shape, name="shape", ndim=3)
    if min(shp[1:]) < 16:
        raise EmsegValueError(f"`shape` must be at least 16 voxels in y and x; got {shp}.")
    out = Path(out)
    existing = [p for p in _outputs(out) if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{str(out)!r} already holds demo outputs ({existing[0].name}); "
            "pass --overwrite to replace them or choose another --out."
        )
    for p in existing:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out=out, shape=(shp[0], shp[1], shp[2]), seed=seed)
    for step in DEMO_STEPS if steps is None else steps:
        log.info("demo step %s: %s", step.name, step.description)
        t0 = time.perf_counter()
        ctx.results[step.name] = step.run(ctx)
        ctx.results[step.name].setdefault("seconds", round(time.perf_counter() - t0, 3))
    summary = out / SUMMARY
    summary.write_text(json.dumps({"steps": ctx.results}, indent=2) + "\n")
    return DemoResult(out=out, summary_path=summary, steps=ctx.results)
