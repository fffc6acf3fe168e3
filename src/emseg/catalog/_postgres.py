"""The same catalog on PostgreSQL (multi-user, large deployments).

Same schema (:func:`~emseg.catalog._schema.ddl` with ``'postgres'``) and the
same SQL as SQLite, with ``%s`` placeholders; boxes are indexed with btrees
on their (min, max) columns per axis instead of an R*Tree. Needs the
``psycopg`` (version 3) driver, which is an optional dependency
(``pip install "psycopg[binary]>=3.2"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emseg.catalog._catalog import Catalog
from emseg.catalog._schema import SCHEMA_VERSION, ddl
from emseg.errors import EmsegError, FormatError


class PostgresCatalog(Catalog):
    """A catalog in a PostgreSQL database given by a ``postgresql://`` URL."""

    ph = "%s"
    dialect = "postgres"

    def __init__(self, url: str, *, create: bool = True) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise EmsegError(
                "a PostgreSQL catalog needs the psycopg driver: pip install 'psycopg[binary]>=3.2'."
            ) from exc
        self.url = url
        self.conn = psycopg.connect(url)
        cur = self.conn.cursor()
        cur.execute("SELECT to_regclass('emseg_meta'), to_regclass('objects')")
        meta, objects = cur.fetchone()
        if objects is not None and meta is None:
            raise FormatError(f"database {url!r} has an objects table but is not an emseg catalog.")
        if meta is None:
            if not create:
                raise FormatError(f"database {url!r} holds no emseg catalog.")
            for stmt in ddl("postgres"):
                cur.execute(stmt)
            cur.execute(
                "INSERT INTO emseg_meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO NOTHING",
                (str(SCHEMA_VERSION),),
            )
        else:
            cur.execute("SELECT value FROM emseg_meta WHERE key = 'schema_version'")
            row = cur.fetchone()
            if row is None or int(row[0]) != SCHEMA_VERSION:
                raise FormatError(
                    f"database {url!r} has catalog schema {row}; expected {SCHEMA_VERSION}."
                )
        self.conn.commit()

    def _begin_write(self, cur: Any) -> None:
        # one writer at a time assigns ids; readers are not blocked
        cur.execute("LOCK TABLE datasets, objects IN SHARE ROW EXCLUSIVE MODE")

    def box_candidates(
        self, box: Sequence[float] | np.ndarray, *, exclude_dataset: int | None = None
    ) -> np.ndarray:
        z0, z1, y0, y1, x0, x1 = map(float, box)
        cur = self.conn.cursor()
        cur.execute(
            "SELECT id FROM objects WHERE bbox_zmax_nm >= %s AND bbox_zmin_nm <= %s "
            "AND bbox_ymax_nm >= %s AND bbox_ymin_nm <= %s "
            "AND bbox_xmax_nm >= %s AND bbox_xmin_nm <= %s ORDER BY id",
            (z0, z1, y0, y1, x0, x1),
        )
        return np.array([r[0] for r in cur.fetchall()], np.int64)
