"""The structure catalog: datasets and their measured objects, and three kinds of queries.

Label queries (:meth:`Catalog.query` with the safe language of
:func:`parse_query`), proximity queries (:func:`near`, :func:`contacts`,
surface-to-surface in nm through the spatial index) and image-based queries
(:func:`like` over per-object descriptors, :func:`describe_objects`; exact
below :data:`ANN_MIN_OBJECTS` objects, a faiss IVF-Flat index from there on).
The embedded default is one SQLite file with an R*Tree (:class:`SQLiteCatalog`);
:class:`PostgresCatalog` runs the same schema and SQL on PostgreSQL.
See ``docs/catalog.md``.
"""

from __future__ import annotations

from pathlib import Path

from emseg.catalog._ann import ANN_MIN_OBJECTS, AnnIndexInfo
from emseg.catalog._catalog import Catalog
from emseg.catalog._embed import FEATURES, describe_objects, describe_patch, like
from emseg.catalog._postgres import PostgresCatalog
from emseg.catalog._proximity import DIRECTIONS, contacts, near
from emseg.catalog._query import parse_query, to_sql
from emseg.catalog._schema import SCHEMA_VERSION
from emseg.catalog._sqlite import SQLiteCatalog


def open_catalog(location: str | Path, *, create: bool = True) -> Catalog:
    """Open (or create) a catalog: a SQLite file path, or a ``postgresql://`` URL.

    Raises
    ------
    FormatError
        When the file or database exists but is not an emseg catalog.
    DatasetNotFoundError
        When it does not exist and `create` is false.
    """
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresCatalog(text, create=create)
    return SQLiteCatalog(location, create=create)


__all__ = [
    "ANN_MIN_OBJECTS",
    "DIRECTIONS",
    "FEATURES",
    "SCHEMA_VERSION",
    "AnnIndexInfo",
    "Catalog",
    "PostgresCatalog",
    "SQLiteCatalog",
    "contacts",
    "describe_objects",
    "describe_patch",
    "like",
    "near",
    "open_catalog",
    "parse_query",
    "to_sql",
]
