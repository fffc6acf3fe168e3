"""The catalog schema, shared by the SQLite and PostgreSQL backends.

Tables: ``emseg_meta`` (key/value: the schema version marks a file as a
catalog), ``datasets`` (name, image, segmentation, spacing, shape,
provenance) and ``objects`` (one morphometry row per object, its bounding box
in nm, class, an embedding and up to a few hundred surface points in nm as
float32 BLOBs). SQLite adds an R*Tree ``objects_rtree`` over the boxes;
PostgreSQL indexes the (x, y) boxes with GiST (an R-tree in the plane; z is
filtered on its candidates).
"""

from __future__ import annotations

#: Stored in ``emseg_meta`` under ``schema_version``.
SCHEMA_VERSION = 1

AXES = "zyx"

#: Numeric object columns (all REAL / DOUBLE PRECISION, NULL when not measured).
NUMERIC_COLUMNS: tuple[str, ...] = (
    "voxel_count",
    "volume_nm3",
    "area_nm2",
    "surface_area_nm2",
    "perimeter_nm",
    "equivalent_diameter_nm",
    "axis_1_nm",
    "axis_2_nm",
    "axis_3_nm",
    "elongation",
    "flatness",
    "feret_max_nm",
    "sphericity",
    "solidity",
    *(f"centroid_{a}_nm" for a in AXES),
    *(f"bbox_{a}{e}_vx" for a in AXES for e in "01"),
    *(f"bbox_{a}{e}_nm" for a in AXES for e in ("min", "max")),
    "intensity_mean",
    "intensity_std",
    "intensity_min",
    "intensity_max",
    "intensity_p05",
    "intensity_p25",
    "intensity_p50",
    "intensity_p75",
    "intensity_p95",
)

#: Columns a query may name, with their kind ('num', 'text', 'bool').
QUERY_COLUMNS: dict[str, str] = {
    "id": "num",
    "label": "num",
    "dataset_id": "num",
    "dataset": "text",
    "class": "text",
    "touches_border": "bool",
    **{c: "num" for c in NUMERIC_COLUMNS},
}

#: Columns returned by queries (besides the BLOBs), in order.
RESULT_COLUMNS: tuple[str, ...] = (
    "id",
    "dataset",
    "label",
    "class",
    *NUMERIC_COLUMNS,
    "touches_border",
)


#: PostgreSQL expression indexed with GiST: the object's box in the (x, y) plane.
PG_BOX_YX = "box(point(bbox_xmin_nm, bbox_ymin_nm), point(bbox_xmax_nm, bbox_ymax_nm))"


def ddl(dialect: str) -> list[str]:
    """CREATE statements for `dialect` ('sqlite' or 'postgres')."""
    real = "REAL" if dialect == "sqlite" else "DOUBLE PRECISION"
    blob = "BLOB" if dialect == "sqlite" else "BYTEA"
    ident = "INTEGER PRIMARY KEY" if dialect == "sqlite" else "BIGINT PRIMARY KEY"
    nums = ",\n  ".join(f"{c} {real}" for c in NUMERIC_COLUMNS)
    stmts = [
        "CREATE TABLE IF NOT EXISTS emseg_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS datasets (
  id {ident},
  name TEXT NOT NULL UNIQUE,
  image TEXT,
  labels TEXT,
  spacing TEXT NOT NULL,
  shape TEXT NOT NULL,
  provenance TEXT NOT NULL,
  created TEXT NOT NULL
)""",
        f"""CREATE TABLE IF NOT EXISTS objects (
  id {ident},
  dataset_id BIGINT NOT NULL REFERENCES datasets(id),
  label BIGINT NOT NULL,
  class TEXT,
  {nums},
  touches_border INTEGER,
  embedding {blob},
  points {blob}
)""",
        "CREATE INDEX IF NOT EXISTS objects_class ON objects (class)",
        "CREATE INDEX IF NOT EXISTS objects_dataset ON objects (dataset_id, label)",
        "CREATE INDEX IF NOT EXISTS objects_volume ON objects (volume_nm3)",
    ]
    if dialect == "sqlite":
        stmts.append(
            "CREATE VIRTUAL TABLE IF NOT EXISTS objects_rtree USING rtree("
            "id, minz, maxz, miny, maxy, minx, maxx)"
        )
    else:
        # an R-tree (GiST) over the (x, y) boxes; z is checked on the candidates
        stmts.append(
            f"CREATE INDEX IF NOT EXISTS objects_box_yx ON objects USING gist ({PG_BOX_YX})"
        )
    return stmts
