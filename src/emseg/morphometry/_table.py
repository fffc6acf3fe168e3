"""The morphometry table: one row per object, units in the column names; Parquet and CSV I/O.

Coordinates follow one convention everywhere (catalog included): the centre
of voxel ``i`` along an axis is at ``i * spacing`` nm, so a box of voxels
``[begin, end)`` spans ``[(begin - 0.5) * spacing, (end - 0.5) * spacing]`` nm.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emseg.errors import EmsegValueError, FormatError, OutputExistsError
from emseg.morphometry._regions import RegionSums, histogram_percentiles
from emseg.morphometry._shape import (
    axis_ratios,
    equivalent_diameter,
    principal_axes,
    sphericity,
)

if TYPE_CHECKING:
    import pandas as pd

#: Percentiles of the intensity reported per object.
PERCENTILES = (5, 25, 50, 75, 95)

#: Unit of each column (the suffix of its name says it too).
UNITS = {
    "volume_nm3": "nm^3",
    "area_nm2": "nm^2",
    "surface_area_nm2": "nm^2",
    "perimeter_nm": "nm",
    "equivalent_diameter_nm": "nm",
    "feret_max_nm": "nm",
}

AXES3 = "zyx"


def _axis_names(ndim: int) -> str:
    return AXES3[3 - ndim :]


def build_table(
    sums: RegionSums,
    *,
    spacing: tuple[float, ...],
    shape: tuple[int, ...],
    geometry: dict[str, np.ndarray] | None = None,
    class_names: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """Turn merged :class:`RegionSums` (and per-object geometry) into the table.

    Parameters
    ----------
    sums : RegionSums
        The merged reduction over the whole volume.
    spacing : tuple of float
        Voxel size in nm.
    shape : tuple of int
        Shape of the label volume (for the border flag).
    geometry : dict of str to (N,) ndarray, optional
        Extra columns computed per object (surface area, Feret, solidity...),
        in the order of ``sums.labels``.
    class_names : tuple of str, optional
        Names of the semantic classes (index = class value).

    Returns
    -------
    pandas.DataFrame
        One row per label, sorted by label.
    """
    import pandas as pd

    d = sums.ndim
    sp = np.asarray(spacing, np.float64)
    names = _axis_names(d)
    vox = float(np.prod(sp))
    size = sums.count * vox
    cols: dict[str, Any] = {"label": sums.labels.astype(np.uint64)}
    if len(sums.classes.keys):
        cols["class"] = _majority_class(sums, class_names)
    cols["voxel_count"] = sums.count
    cols["volume_nm3" if d == 3 else "area_nm2"] = size
    cols["equivalent_diameter_nm"] = equivalent_diameter(size, d)
    cov = sums.covariance() * (sp[:, None] * sp[None, :])
    axes = principal_axes(cov)
    for k in range(d):
        cols[f"axis_{k + 1}_nm"] = axes[:, k]
    cols.update(axis_ratios(axes))
    for key, values in (geometry or {}).items():
        cols[key] = values
    if d == 3 and "surface_area_nm2" in cols:
        cols["sphericity"] = sphericity(size, cols["surface_area_nm2"])
    for k, a in enumerate(names):
        cols[f"centroid_{a}_nm"] = sums.mean[:, k] * sp[k]
    for k, a in enumerate(names):
        cols[f"bbox_{a}0_vx"] = sums.bbox_min[:, k]
        cols[f"bbox_{a}1_vx"] = sums.bbox_max[:, k]
    for k, a in enumerate(names):
        cols[f"bbox_{a}min_nm"] = (sums.bbox_min[:, k] - 0.5) * sp[k]
        cols[f"bbox_{a}max_nm"] = (sums.bbox_max[:, k] - 0.5) * sp[k]
    shp = np.asarray(shape)
    cols["touches_border"] = np.any(sums.bbox_min == 0, axis=1) | np.any(
        sums.bbox_max == shp[None, :], axis=1
    )
    if sums.hist.shape[1] or np.isfinite(sums.imin).any():
        n = np.maximum(sums.count, 1)
        mean = sums.isum / n
        cols["intensity_mean"] = mean
        cols["intensity_std"] = np.sqrt(np.clip(sums.isumsq / n - mean**2, 0, None))
        cols["intensity_min"] = sums.imin
        cols["intensity_max"] = sums.imax
        for q in PERCENTILES:
            cols[f"intensity_p{q:02d}"] = histogram_percentiles(sums.hist, sums.edges, q)
    df = pd.DataFrame(cols)
    df.attrs["emseg"] = table_metadata(spacing, shape)
    return df


def _majority_class(sums: RegionSums, class_names: tuple[str, ...] | None) -> np.ndarray:
    keys, counts = sums.classes.keys, sums.classes.counts
    # for each label the class with most voxels (ties: the smaller class value)
    order = np.lexsort((keys[:, 1], -counts, keys[:, 0]))
    k = keys[order]
    first = np.ones(len(k), bool)
    first[1:] = k[1:, 0] != k[:-1, 0]
    best = dict(zip(k[first, 0].tolist(), k[first, 1].tolist(), strict=True))
    out = []
    for lab in sums.labels.tolist():
        c = best.get(lab)
        if c is None:
            out.append("")
        elif class_names is not None and 0 <= c < len(class_names):
            out.append(class_names[c])
        else:
            out.append(str(c))
    return np.asarray(out, dtype=object)


def table_metadata(spacing: tuple[float, ...], shape: tuple[int, ...]) -> dict[str, Any]:
    """The JSON-able metadata stored with a table (spacing, shape, units, conventions)."""
    from emseg import __version__

    return {
        "spacing_nm": list(map(float, spacing)),
        "shape": list(map(int, shape)),
        "axes": _axis_names(len(shape)),
        "units": UNITS,
        "coordinates": "voxel centre i at i * spacing nm; *_vx boxes are [begin, end) voxels",
        "produced_by": f"emseg {__version__} morphometry",
    }


def write_table(table: pd.DataFrame, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a morphometry table as Parquet (``.parquet``) or CSV (``.csv``).

    Parquet keeps the metadata (spacing, units) in the schema under the key
    ``emseg``; CSV gets it in a ``<name>.json`` sidecar.

    Raises
    ------
    OutputExistsError
        When `path` exists and `overwrite` is false.
    EmsegValueError
        For any other extension.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{str(path)!r} exists; pass overwrite=True (--overwrite).")
    meta = table.attrs.get("emseg", {})
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        t = pa.Table.from_pandas(table, preserve_index=False)
        md = dict(t.schema.metadata or {})
        md[b"emseg"] = json.dumps(meta).encode()
        pq.write_table(t.replace_schema_metadata(md), path)
    elif suffix == ".csv":
        table.to_csv(path, index=False)
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    else:
        raise EmsegValueError(
            f"`path` must end in .parquet or .csv; got {str(path)!r}. Pick one of those."
        )
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_table` (metadata in ``df.attrs['emseg']``)."""
    import pandas as pd

    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            t = pq.read_table(path)
            df = t.to_pandas()
            raw = (t.schema.metadata or {}).get(b"emseg")
            df.attrs["emseg"] = json.loads(raw) if raw else {}
        else:
            df = pd.read_csv(path)
            side = path.with_suffix(".json")
            df.attrs["emseg"] = json.loads(side.read_text()) if side.exists() else {}
    except (OSError, ValueError) as exc:
        raise FormatError(f"cannot read morphometry table {str(path)!r}: {exc}") from exc
    return df
