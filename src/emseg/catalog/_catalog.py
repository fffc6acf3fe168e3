"""The backend-independent part of a catalog: adding datasets, label queries, reading rows.

A backend (:class:`~emseg.catalog.SQLiteCatalog`,
:class:`~emseg.catalog.PostgresCatalog`) supplies a DB-API connection, its
placeholder style and one spatial primitive, :meth:`Catalog.box_candidates`
(the ids whose box meets a box). Everything else is the same SQL on both.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import secrets
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from emseg.catalog._ann import (
    ANN_MIN_OBJECTS,
    AnnIndex,
    Fingerprint,
    build_index,
    from_bytes,
    to_parts,
)
from emseg.catalog._query import Node, check_sort, parse_query, to_sql
from emseg.catalog._schema import AXES, NUMERIC_COLUMNS, RESULT_COLUMNS
from emseg.errors import EmsegValueError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Rows inserted per executemany call.
BATCH = 5000


def _objects(values: np.ndarray) -> list[float | None]:
    """Python floats of a float64 array, NaN as None (SQL NULL)."""
    out: list[float | None] = values.tolist()
    for k in np.flatnonzero(np.isnan(values)).tolist():
        out[k] = None
    return out


class Catalog:
    """An open catalog; use :func:`~emseg.catalog.open_catalog` to get one.

    Subclasses set ``conn``, ``ph`` (the placeholder) and implement
    :meth:`box_candidates`, :meth:`_begin_write`, :meth:`_insert_boxes`,
    :meth:`_snapshot` and the ANN index storage (:meth:`_ann_load`,
    :meth:`_ann_store`).

    Attributes
    ----------
    ann_min_objects : int
        Image queries on a catalog with at least this many objects use the
        ANN index (default :data:`~emseg.catalog._ann.ANN_MIN_OBJECTS`,
        20,000); set it on an open catalog to change the switch-over.
    """

    conn: Any
    ph: str = "?"
    dialect: str = "sqlite"
    ann_min_objects: int = ANN_MIN_OBJECTS
    #: The driver's base exception class (``sqlite3.Error``, ``psycopg.Error``).
    db_error: type[Exception] = Exception
    _ann: AnnIndex | None = None

    # -- backend hooks -------------------------------------------------------------
    def box_candidates(
        self, box: Sequence[float] | np.ndarray, *, exclude_dataset: int | None = None
    ) -> np.ndarray:
        """Ids of objects whose box (nm: zmin, zmax, ymin, ymax, xmin, xmax) meets `box`."""
        raise NotImplementedError

    def _begin_write(self, cur: Any) -> None:
        raise NotImplementedError

    def _insert_boxes(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        """Index the boxes of new objects (SQLite: R*Tree; PostgreSQL: nothing extra)."""

    def _insert_rows(self, cur: Any, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        """Insert object rows (PostgreSQL overrides this with ``COPY``)."""
        ph = ", ".join([self.ph] * len(columns))
        cur.executemany(f"INSERT INTO objects ({', '.join(columns)}) VALUES ({ph})", rows)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction: every statement inside sees the same state of the catalog."""
        raise NotImplementedError
        yield

    def _ann_load(self) -> bytes | None:
        """The stored ANN index bytes, or None."""
        raise NotImplementedError

    def _ann_store(self, parts: Iterator[bytes | memoryview]) -> str:
        """Store the ANN index bytes (given in parts); return where (for messages)."""
        raise NotImplementedError

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------
    def add_dataset(
        self,
        name: str,
        table: pd.DataFrame,
        *,
        points: dict[int, np.ndarray] | None = None,
        embeddings: np.ndarray | None = None,
        image: str | None = None,
        labels: str | None = None,
        spacing: Sequence[float] | None = None,
        shape: Sequence[int] | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> int:
        """Add a dataset and its objects (one morphometry row each) in one transaction.

        Parameters
        ----------
        name : str
            Unique dataset name (stored as data, never as SQL).
        table : pandas.DataFrame
            A :func:`emseg.morphometry.measure` table (``label`` column and
            the measures; unknown columns are ignored).
        points : dict of int to (P, D) ndarray, optional
            Surface points (nm) per label, for surface-to-surface proximity.
        embeddings : (N, E) ndarray, optional
            One descriptor per row of `table`.
        image, labels : str, optional
            Paths of the image and the segmentation.
        spacing, shape : sequence, optional
            Geometry of the volume (default from ``table.attrs['emseg']``).
        provenance : dict, optional
            Anything JSON-able (tool, parameters).

        Returns
        -------
        int
            The dataset id.

        Raises
        ------
        EmsegValueError
            When `name` already exists or `embeddings` has the wrong length.
        """
        if not isinstance(name, str) or not name:
            raise EmsegValueError(f"`name` must be a non-empty string; got {name!r}.")
        meta = table.attrs.get("emseg", {})
        spacing = list(map(float, spacing if spacing is not None else meta.get("spacing_nm", [])))
        shape = list(map(int, shape if shape is not None else meta.get("shape", [])))
        if embeddings is not None and len(embeddings) != len(table):
            raise EmsegValueError(
                f"`embeddings` must have one row per object ({len(table)}); got {len(embeddings)}."
            )
        cur = self.conn.cursor()
        try:
            self._begin_write(cur)
            cur.execute(f"SELECT id FROM datasets WHERE name = {self.ph}", (name,))
            if cur.fetchone() is not None:
                raise EmsegValueError(
                    f"a dataset named {name!r} is already in the catalog; choose another `name`."
                )
            cur.execute("SELECT COALESCE(MAX(id), 0) FROM datasets")
            did = int(cur.fetchone()[0]) + 1
            cur.execute(
                "INSERT INTO datasets (id, name, image, labels, spacing, shape, provenance, created) "
                f"VALUES ({', '.join([self.ph] * 8)})",
                (
                    did,
                    name,
                    image,
                    labels,
                    json.dumps(spacing),
                    json.dumps(shape),
                    json.dumps(provenance or {}),
                    datetime.datetime.now(datetime.UTC).isoformat(),
                ),
            )
            cur.execute("SELECT COALESCE(MAX(id), 0) FROM objects")
            first = int(cur.fetchone()[0]) + 1
            n_rows = self._insert_objects(cur, did, first, table, points, embeddings)
            # invalidates any ANN index built before (see emseg.catalog._ann)
            cur.execute(
                "INSERT INTO emseg_meta (key, value) VALUES ('objects_generation', '1') "
                "ON CONFLICT (key) DO UPDATE "
                "SET value = CAST(CAST(emseg_meta.value AS BIGINT) + 1 AS TEXT)"
            )
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        finally:
            cur.close()
        log.info("catalog: added dataset %r with %d objects", name, n_rows)
        return did

    def _insert_objects(
        self,
        cur: Any,
        did: int,
        first: int,
        table: pd.DataFrame,
        points: dict[int, np.ndarray] | None,
        embeddings: np.ndarray | None,
    ) -> int:
        cols = [
            "id",
            "dataset_id",
            "label",
            "class",
            *NUMERIC_COLUMNS,
            "touches_border",
            "embedding",
            "points",
        ]
        present = [c for c in NUMERIC_COLUMNS if c in table.columns]
        data = {c: table[c].to_numpy(np.float64) for c in present}
        n = len(table)
        zero = np.zeros(n)
        for a in AXES:  # 2D tables: the boxes live at z = 0
            for c in (f"centroid_{a}_nm", f"bbox_{a}min_nm", f"bbox_{a}max_nm"):
                data.setdefault(c, zero)
        labels = table["label"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
        classes = table["class"].astype(str).tolist() if "class" in table.columns else [None] * n
        border = table["touches_border"].to_numpy(bool) if "touches_border" in table else None
        emb = None if embeddings is None else np.ascontiguousarray(embeddings, np.float32)
        if emb is not None:
            emb = emb.reshape(n, -1)
        blob = (lambda b: b) if self.dialect == "sqlite" else bytes
        box_cols = [f"bbox_{a}{e}_nm" for a in AXES for e in ("min", "max")]
        # column-wise conversion to Python objects (NaN -> NULL): no per-value Python calls
        for s in range(0, n, BATCH):
            e = min(n, s + BATCH)
            ids = list(range(first + s, first + e))
            labs = labels[s:e].tolist()
            nums = [
                _objects(data[c][s:e]) if c in data else [None] * (e - s) for c in NUMERIC_COLUMNS
            ]
            bord = [None] * (e - s) if border is None else border[s:e].astype(int).tolist()
            if emb is None:
                embs: list[Any] = [None] * (e - s)
            else:
                raw = emb[s:e].tobytes()
                w = emb.shape[1] * 4
                embs = [blob(raw[k * w : (k + 1) * w]) for k in range(e - s)]
            pts: list[Any] = [None] * (e - s)
            if points:
                for k, lab in enumerate(labs):
                    p = points.get(lab)
                    if p is not None:
                        p = np.asarray(p, np.float32)
                        if p.shape[1] == 2:
                            p = np.concatenate([np.zeros((len(p), 1), np.float32), p], axis=1)
                        pts[k] = blob(p.tobytes())
            rows = list(
                zip(ids, [did] * (e - s), labs, classes[s:e], *nums, bord, embs, pts, strict=True)
            )
            self._insert_rows(cur, cols, rows)
            boxes = list(zip(ids, *(data[c][s:e].tolist() for c in box_cols), strict=True))
            self._insert_boxes(cur, boxes)
        return n

    # -- reading -------------------------------------------------------------------
    def datasets(self) -> pd.DataFrame:
        """One row per dataset (id, name, image, labels, spacing, shape, provenance, created)."""
        import pandas as pd

        cur = self.conn.cursor()
        cur.execute(
            "SELECT id, name, image, labels, spacing, shape, provenance, created "
            "FROM datasets ORDER BY id"
        )
        rows = cur.fetchall()
        df = pd.DataFrame(
            rows,
            columns=["id", "name", "image", "labels", "spacing", "shape", "provenance", "created"],
        )
        for c in ("spacing", "shape", "provenance"):
            df[c] = [json.loads(v) for v in df[c]]
        return df

    def _select(self) -> str:
        cols = ", ".join(
            "d.name AS dataset" if c == "dataset" else f"o.{c}" for c in RESULT_COLUMNS
        )
        return f"SELECT {cols} FROM objects o JOIN datasets d ON d.id = o.dataset_id"

    def _frame(self, rows: list[tuple[Any, ...]]) -> pd.DataFrame:
        import pandas as pd

        df = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
        df["touches_border"] = df["touches_border"].astype("boolean")
        return df

    def query(
        self,
        expr: str = "",
        *,
        sort: str | None = None,
        descending: bool = False,
        limit: int | None = None,
        ids: Iterable[int] | None = None,
    ) -> pd.DataFrame:
        """Objects matching a label query (see :func:`~emseg.catalog.parse_query`).

        Parameters
        ----------
        expr : str
            e.g. ``"class = 'mitochondrion' AND volume_nm3 > 1e7"``; empty: all.
        sort : str, optional
            A column to order by (default: id).
        descending : bool
            Sort order.
        limit : int, optional
            At most this many rows.
        ids : iterable of int, optional
            Restrict to these object ids.

        Returns
        -------
        pandas.DataFrame
            :data:`RESULT_COLUMNS` (``dataset`` is the dataset's name).
        """
        where, params = to_sql(parse_query(expr), self.ph)
        order = check_sort(sort) or "o.id"
        sql = f"{self._select()} WHERE {where}"
        if ids is not None:
            id_list = [int(i) for i in ids]
            if not id_list:
                return self._frame([])
            sql += f" AND o.id IN ({', '.join([self.ph] * len(id_list))})"
            params = params + id_list
        sql += f" ORDER BY {order} {'DESC' if descending else 'ASC'}, o.id"
        if limit is not None:
            if int(limit) < 0:
                raise EmsegValueError(f"`limit` must be >= 0; got {limit}.")
            sql += f" LIMIT {int(limit)}"
        cur = self.conn.cursor()
        cur.execute(sql, params)
        return self._frame(cur.fetchall())

    def count(self, expr: str | Node = "") -> int:
        """Number of objects matching `expr` (counted in SQL; no rows are read)."""
        node = parse_query(expr) if isinstance(expr, str) else expr
        where, params = to_sql(node, self.ph)
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT COUNT(*) FROM objects o JOIN datasets d ON d.id = o.dataset_id WHERE {where}",
            params,
        )
        return int(cur.fetchone()[0])

    def ids(self, expr: str | Node = "", *, among: Iterable[int] | None = None) -> np.ndarray:
        """Ids (int64, sorted) of the objects matching `expr` (text or a parsed query).

        `among` restricts the answer to these ids (looked up in chunks, so a
        filter over a few candidates never reads every matching id).
        """
        node = parse_query(expr) if isinstance(expr, str) else expr
        where, params = to_sql(node, self.ph)
        sql = f"SELECT o.id FROM objects o JOIN datasets d ON d.id = o.dataset_id WHERE {where}"
        cur = self.conn.cursor()
        if among is None:
            cur.execute(sql + " ORDER BY o.id", params)
            return np.array([r[0] for r in cur.fetchall()], np.int64)
        found: list[int] = []
        for chunk in _chunks(sorted({int(i) for i in among}), 900):
            cur.execute(f"{sql} AND o.id IN ({', '.join([self.ph] * len(chunk))})", params + chunk)
            found += [r[0] for r in cur.fetchall()]
        return np.array(sorted(found), np.int64)

    def _blobs(self, column: str, ids: Iterable[int], width: int | None) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        id_list = [int(i) for i in ids]
        cur = self.conn.cursor()
        for chunk in _chunks(id_list, 900):
            cur.execute(
                f"SELECT id, {column} FROM objects WHERE id IN ({', '.join([self.ph] * len(chunk))})",
                chunk,
            )
            for oid, raw in cur.fetchall():
                if raw is not None:
                    a = np.frombuffer(bytes(raw), np.float32)
                    out[int(oid)] = a.reshape(-1, width) if width else a
        return out

    def points(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Stored surface points (P, 3) float32 nm of each id that has them."""
        return self._blobs("points", ids, 3)

    def embeddings(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Stored embedding vectors (float32) of each id that has one."""
        return self._blobs("embedding", ids, None)

    def iter_embeddings(self, batch: int = 50000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids, embeddings) in batches, for exact nearest-neighbour scans."""
        cur = self.conn.cursor()
        last = 0
        while True:
            cur.execute(
                f"SELECT id, embedding FROM objects WHERE id > {self.ph} AND embedding IS NOT NULL "
                f"ORDER BY id LIMIT {int(batch)}",
                (last,),
            )
            rows = cur.fetchall()
            if not rows:
                return
            ids = np.array([r[0] for r in rows], np.int64)
            emb = np.frombuffer(b"".join(bytes(r[1]) for r in rows), np.float32)
            emb = emb.reshape(len(rows), -1)
            last = int(ids[-1])
            yield ids, emb

    def centroids(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Centroid (z, y, x) in nm per id."""
        out = {}
        cur = self.conn.cursor()
        for chunk in _chunks([int(i) for i in ids], 900):
            cur.execute(
                "SELECT id, centroid_z_nm, centroid_y_nm, centroid_x_nm FROM objects "
                f"WHERE id IN ({', '.join([self.ph] * len(chunk))})",
                chunk,
            )
            for r in cur.fetchall():
                out[int(r[0])] = np.array([float(v or 0.0) for v in r[1:]])
        return out

    def boxes(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Box (zmin, zmax, ymin, ymax, xmin, xmax) in nm per id."""
        out = {}
        cols = ", ".join(f"bbox_{a}{e}_nm" for a in AXES for e in ("min", "max"))
        cur = self.conn.cursor()
        for chunk in _chunks([int(i) for i in ids], 900):
            cur.execute(
                f"SELECT id, {cols} FROM objects WHERE id IN ({', '.join([self.ph] * len(chunk))})",
                chunk,
            )
            for r in cur.fetchall():
                out[int(r[0])] = np.array([float(v or 0.0) for v in r[1:]])
        return out

    # -- nearest-neighbour index ---------------------------------------------------
    def _fingerprint(self) -> Fingerprint:
        cur = self.conn.cursor()
        cur.execute("SELECT value FROM emseg_meta WHERE key = 'objects_generation'")
        row = cur.fetchone()
        cur.execute("SELECT COALESCE(MAX(id), 0) FROM objects")
        return Fingerprint(int(row[0]) if row else 0, int(cur.fetchone()[0]))

    def _ann_key(self) -> bytes | None:
        """This catalog's secret HMAC key for its stored ANN index (created on first use).

        ``None`` when there is none and the catalog is read-only: the index is
        then built in memory, never loaded from or written to storage.
        """
        cur = self.conn.cursor()
        cur.execute("SELECT value FROM emseg_meta WHERE key = 'ann_key'")
        row = cur.fetchone()
        if row is None:
            try:
                cur.execute(
                    f"INSERT INTO emseg_meta (key, value) VALUES ('ann_key', {self.ph}) "
                    "ON CONFLICT (key) DO NOTHING",
                    (secrets.token_hex(32),),
                )
            except self.db_error as exc:
                log.warning("catalog: read-only, the ANN index is kept in memory only (%s)", exc)
                return None
            cur.execute("SELECT value FROM emseg_meta WHERE key = 'ann_key'")
            row = cur.fetchone()
        return bytes.fromhex(row[0])

    def ann_index(self, *, rebuild: bool = False) -> AnnIndex:
        """The ANN index over this catalog's descriptors, up to date (see ``emseg.catalog._ann``).

        Reuses the index held by this object or the stored one when it was
        built from the catalog's current state and carries this catalog's
        HMAC; otherwise (or with `rebuild`) builds it and stores it.

        Returns
        -------
        AnnIndex
            ``.info`` (:class:`~emseg.catalog.AnnIndexInfo`) describes it.
        """
        fp = self._fingerprint()
        if not rebuild and self._ann is not None and self._ann.fingerprint == fp:
            return self._ann
        key = self._ann_key()
        if key is None:
            self._ann = build_index(self)
            return self._ann
        if not rebuild:
            blob = self._ann_load()
            if blob is not None:
                loaded = from_bytes(blob, key, fp)
                del blob
                if loaded is not None:
                    self._ann = loaded
                    return loaded
        ann = build_index(self)
        try:
            where = self._ann_store(to_parts(ann, key))
            log.info("catalog: ANN index stored in %s", where)
        except OSError as exc:
            log.warning("catalog: cannot store the ANN index (%s); it is kept in memory only", exc)
        self._ann = ann
        return ann

    def __len__(self) -> int:
        cur = self.conn.cursor()
        cur.execute("SELECT COUNT(*) FROM objects")
        return int(cur.fetchone()[0])


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
