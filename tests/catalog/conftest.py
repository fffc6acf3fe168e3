"""Catalog fixtures: every catalog test runs on SQLite and on a real PostgreSQL server.

The PostgreSQL server is a throwaway cluster on loopback
(:class:`emseg.catalog._pgserver.TempPostgres`), started once per session.
When no server binary is installed the PostgreSQL cases skip, except in CI
(``CI``, ``EMSEG_REQUIRE_DATA=1`` or ``EMSEG_REQUIRE_POSTGRES=1``), where they
fail.
"""

from __future__ import annotations

import itertools
import os

import pytest

from emseg.catalog._pgserver import TempPostgres, find_pg_bin

BACKENDS = ("sqlite", "postgresql")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def require_postgres() -> bool:
    """Whether a missing PostgreSQL server fails the tests instead of skipping them."""
    return any(_flag(n) for n in ("CI", "EMSEG_REQUIRE_DATA", "EMSEG_REQUIRE_POSTGRES"))


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server on 127.0.0.1 for the session (trust auth, fsync off)."""
    if find_pg_bin() is None:
        msg = (
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
            "/usr/lib/postgresql/*/bin; install the 'postgresql' package"
        )
        if require_postgres():
            pytest.fail(f"CI requires PostgreSQL: {msg}")
        pytest.skip(msg)
    server = TempPostgres(settings={"fsync": "off", "full_page_writes": "off"})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_url(pg_server):
    """``postgresql://postgres@127.0.0.1:PORT/postgres`` of the session's server."""
    return pg_server.url()


@pytest.fixture(scope="session")
def new_location(tmp_path_factory, request):
    """Factory ``new_location(backend)``: a fresh, empty catalog location.

    A SQLite file path for ``"sqlite"``; a new database's URL on the session
    server for ``"postgresql"``.
    """
    counter = itertools.count()

    def make(backend: str):
        n = next(counter)
        if backend == "sqlite":
            return tmp_path_factory.mktemp("catalog") / f"cat{n}.sqlite"
        server = request.getfixturevalue("pg_server")
        return server.create_database(f"emseg_test_{n}")

    return make


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend name in turn."""
    return request.param
