"""The emseg demo: a chain of small steps over synthetic EM with exact ground truth.

:func:`run_demo` runs :data:`DEMO_STEPS` in order. Each step is a function
``step(ctx) -> dict`` that reads what earlier steps left in the shared
:class:`DemoContext` and returns its outputs (paths, numbers), which are
stored under the step's name and written to ``demo_summary.json``. Later
stages (segment, instances, evaluate, measure, catalog, view) are added by
appending a :class:`DemoStep` to :data:`DEMO_STEPS`.
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


def _evaluate(ctx: DemoContext) -> dict[str, Any]:
    """Evaluate a classical segmentation (threshold + components) against the true cells."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    from emseg.evaluation import evaluate
    from emseg.report import write_object_tables, write_report

    em = ctx.data["synthetic"]
    smooth = ndimage.gaussian_filter(em.image.astype(np.float32), sigma=(0, 1.5, 1.5))
    interior = smooth > threshold_otsu(smooth)  # membranes are dark
    interior = ndimage.binary_opening(interior, structure=np.ones((1, 3, 3), bool))
    pred, n = ndimage.label(interior)
    folder = ctx.out / "evaluation"
    folder.mkdir(parents=True, exist_ok=True)
    result = evaluate(
        em.cells, pred.astype(np.uint32), spacing=em.spacing, progress=False, n_workers=2
    )
    doc = result.to_json()
    (folder / "metrics.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    write_object_tables(result, folder)
    write_report(
        result, folder / "report.html", truth=em.cells, prediction=pred,
        title="emseg demo: threshold + components vs synthetic cells",
    )  # fmt: skip
    keys = ("adapted_rand_error_cremi", "voi_split", "voi_merge", "ap50", "dice")
    return {
        "prediction": "Otsu threshold of the smoothed image + 3D connected components",
        "n_predicted": int(n),
        "report": str(folder / "report.html"),
        "metrics_json": str(folder / "metrics.json"),
        "metrics": {k: doc[k] for k in keys},
    }


def _demo_objects(ctx: DemoContext) -> dict[str, tuple[np.ndarray, str, bool]]:
    """Label volumes to measure: name -> (labels, class, with geometry and descriptors).

    The synthetic cells (or the instances of an earlier step, when one left
    ``ctx.data["instances"]``) are measured without the per-object mesh and
    descriptors, which cost seconds on large cells; organelles get both.
    """
    from scipy import ndimage

    em = ctx.data["synthetic"]
    cells = ctx.data.get("instances", em.cells)
    return {
        "cells": (np.asarray(cells, np.uint32), "cell", False),
        "mitochondria": (np.asarray(em.mitochondria, np.uint32), "mitochondrion", True),
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
            cat.add_dataset(
                name,
                m.table,
                points=m.points,
                embeddings=emb,
                image=str(ctx.out / SYNTHETIC / "image.ome.zarr"),
                labels=str(ctx.out / SYNTHETIC / f"{name}.ome.zarr"),
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
    DemoStep("evaluate", "evaluate threshold + components against the true cells", _evaluate),
    DemoStep("measure", "morphometry of cells and organelles (Parquet + CSV)", _measure),
    DemoStep("catalog", "build a SQLite catalog of every measured object", _catalog),
    DemoStep("query", "one label, one proximity and one image-based query", _query),
]


def _outputs(out: Path) -> list[Path]:
    return [
        out / SUMMARY,
        out / SYNTHETIC,
        out / "preview.png",
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
        ``preview.png`` and ``demo_summary.json``.
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
        ctx.results[step.name] = step.run(ctx)
    summary = out / SUMMARY
    summary.write_text(json.dumps({"steps": ctx.results}, indent=2) + "\n")
    return DemoResult(out=out, summary_path=summary, steps=ctx.results)
