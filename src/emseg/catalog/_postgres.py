"""The same catalog on PostgreSQL (multi-user, large deployments).

Same schema (:func:`~emseg.catalog._schema.ddl` with ``'postgres'``) and the
same SQL as SQLite, with ``%s`` placeholders; boxes are indexed with a GiST
R-tree over their (x, y) extent (core ``box`` type, no extension needed) and
z is filtered on the candidates, instead of SQLite's 3D R*Tree. Needs the
``psycopg`` (version 3) driver, which is an optional dependency
(``pip install "psycopg[binary]>=3.2"``).

The ANN index of image queries (:mod:`emseg.catalog._ann`) is stored in
the table ``emseg_ann`` (created on first use) as BYTEA parts of at most
:data:`ANN_PART` bytes, replaced in one transaction.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from emseg.catalog._catalog import Catalog
from emseg.catalog._schema import PG_BOX_YX, SCHEMA_VERSION, ddl
from emseg.errors import DatasetNotFoundError, EmsegError, FormatError

#: Advisory lock key held while the schema is created ("emseg" in ASCII).
CREATE_LOCK = 0x656D736567
#: Largest BYTEA value written for the ANN index (PostgreSQL's limit is 1 GB).
ANN_PART = 64 * 2**20


def redact(url: str) -> str:
    """`url` with any password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


class PostgresCatalog(Catalog):
    """A catalog in a PostgreSQL database given by a ``postgresql://`` URL.

    The connection runs in autocommit mode, so reads never hold a transaction
    open; each :meth:`~emseg.catalog.Catalog.add_dataset` is one explicit
    transaction that takes a ``SHARE ROW EXCLUSIVE`` lock on the two tables
    (writers queue, readers go on) and loads the objects with ``COPY``.
    """

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
        self.db_error = psycopg.Error
        shown = redact(url)
        try:
            self.conn = psycopg.connect(url, autocommit=True)
        except psycopg.OperationalError as exc:
            raise DatasetNotFoundError(
                f"cannot connect to the PostgreSQL catalog {shown!r}: {str(exc).strip()}; "
                "check the host, port, user and database in the URL."
            ) from exc
        cur = self.conn.cursor()
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        tables = {r[0] for r in cur.fetchall()}
        if tables and "emseg_meta" not in tables:
            self.conn.close()
            raise FormatError(
                f"database {shown!r} holds tables ({', '.join(sorted(tables)[:5])}) but is not "
                "an emseg catalog (no emseg_meta table); use an empty database."
            )
        if not tables:
            if not create:
                self.conn.close()
                raise FormatError(
                    f"database {shown!r} holds no emseg catalog; create it with `emseg catalog add`."
                )
            with self.conn.transaction():
                # two processes creating the same catalog at once: one at a time
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK,))
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
                self.conn.close()
                raise FormatError(
                    f"database {shown!r} has catalog schema version {row and row[0]}; "
                    f"this emseg reads version {SCHEMA_VERSION}."
                )

    def _begin_write(self, cur: Any) -> None:
        # one writer at a time assigns ids; readers are not blocked
        cur.execute("BEGIN")
        cur.execute("LOCK TABLE datasets, objects IN SHARE ROW EXCLUSIVE MODE")

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield

    def _ann_load(self) -> bytes | None:
        cur = self.conn.cursor()
        cur.execute("SELECT to_regclass('emseg_ann')")
        if cur.fetchone()[0] is None:
            return None
        cur.execute("SELECT data FROM emseg_ann ORDER BY part")
        parts = [bytes(r[0]) for r in cur.fetchall()]
        return b"".join(parts) if parts else None

    def _ann_store(self, parts: Iterator[bytes | memoryview]) -> str:
        cur = self.conn.cursor()
        with self.conn.transaction():
            # two processes storing at once: one at a time (CREATE IF NOT EXISTS can race)
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK + 1,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS emseg_ann "
                "(part INTEGER PRIMARY KEY, data BYTEA NOT NULL)"
            )
            cur.execute("DELETE FROM emseg_ann")
            n = 0
            for part in parts:
                view = memoryview(part)
                for s in range(0, len(view), ANN_PART):
                    cur.execute(
                        "INSERT INTO emseg_ann (part, data) VALUES (%s, %s)",
                        (n, view[s : s + ANN_PART].tobytes()),
                    )
                    n += 1
        return f"table emseg_ann of {redact(self.url)}"

    def _insert_rows(self, cur: Any, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        with cur.copy(f"COPY objects ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def box_candidates(
        self, box: Sequence[float] | np.ndarray, *, exclude_dataset: int | None = None
    ) -> np.ndarray:
        z0, z1, y0, y1, x0, x1 = map(float, box)
        cur = self.conn.cursor()
        cur.execute(
            f"SELECT id FROM objects WHERE {PG_BOX_YX} && box(point(%s, %s), point(%s, %s)) "
            "AND bbox_zmax_nm >= %s AND bbox_zmin_nm <= %s "
            "AND bbox_ymax_nm >= %s AND bbox_ymin_nm <= %s "
            "AND bbox_xmax_nm >= %s AND bbox_xmin_nm <= %s ORDER BY id",
            (x0, y0, x1, y1, z0, z1, y0, y1, x0, x1),
        )
        return np.array([r[0] for r in cur.fetchall()], np.int64)
