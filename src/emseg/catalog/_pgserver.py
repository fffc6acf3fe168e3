"""A throwaway PostgreSQL server on loopback, for tests and benchmarks (not for production).

:class:`TempPostgres` finds the server binaries (``initdb`` and ``pg_ctl`` on
``PATH``, else the newest ``/usr/lib/postgresql/<version>/bin`` where the
Debian ``postgresql`` package puts them), creates a cluster in a fresh
temporary folder (``initdb -A trust -U postgres``), starts it on a free
loopback port (``listen_addresses='127.0.0.1'``, unix socket in the same
folder) and stops it with ``pg_ctl stop -m immediate``. PostgreSQL refuses to
run as root: when the caller is root, the cluster is created and run as the
``postgres`` system user if it exists (the Debian package makes it), else as
``nobody`` (``EMSEG_PG_USER`` overrides), and the folder is handed to that
user. Used by ``tests/catalog/conftest.py`` and ``benchmarks/bench_catalog.py``.

>>> from emseg.catalog._pgserver import TempPostgres, find_pg_bin
>>> if find_pg_bin() is not None:  # doctest: +SKIP
...     with TempPostgres() as pg:
...         url = pg.create_database("demo")  # postgresql://postgres@127.0.0.1:PORT/demo
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from emseg.errors import EmsegError

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def find_pg_bin() -> Path | None:
    """Folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None`` when not installed."""
    on_path = [shutil.which(n) for n in ("initdb", "pg_ctl", "postgres")]
    if all(on_path):
        return Path(os.path.realpath(str(on_path[0]))).parent
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        if all(os.access(os.path.join(d, n), os.X_OK) for n in ("initdb", "pg_ctl", "postgres")):
            version = os.path.basename(os.path.dirname(d))
            found.append((int(version) if version.isdigit() else 0, d))
    return Path(max(found)[1]) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as (``None``: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("EMSEG_PG_USER", ""), "postgres", "nobody"):
        if name:
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
    raise EmsegError(
        "PostgreSQL refuses to run as root and neither a 'postgres' nor a 'nobody' account "
        "exists; set EMSEG_PG_USER to an unprivileged user."
    )


class TempPostgres:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 (trust auth).

    Parameters
    ----------
    bin_dir : path, optional
        Where the server binaries are (default: :func:`find_pg_bin`).
    settings : dict of str, optional
        Extra ``-c name=value`` server settings (e.g. ``{"fsync": "off"}`` for tests).
    """

    def __init__(
        self, *, bin_dir: str | Path | None = None, settings: dict[str, str] | None = None
    ) -> None:
        found = Path(bin_dir) if bin_dir is not None else find_pg_bin()
        if found is None:
            raise EmsegError(
                "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in "
                "/usr/lib/postgresql/*/bin; install the 'postgresql' package."
            )
        self.bin_dir = found
        self.settings = dict(settings or {})
        self.port = 0
        self.root: Path | None = None
        self._user = _run_as()

    # -- process helpers -------------------------------------------------------------
    def _run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        kw: dict[str, Any] = {}
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "LANG": "C",
            "TZ": "UTC",
        }
        if self._user is not None:
            kw = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
            env["HOME"] = str(self.root)
        proc = subprocess.run(
            args, cwd=self.root, env=env, capture_output=True, text=True, timeout=120, **kw
        )
        if check and proc.returncode != 0:
            log_text = ""
            logfile = (self.root or Path(".")) / "server.log"
            if logfile.exists():
                log_text = logfile.read_text(errors="replace")[-2000:]
            raise EmsegError(
                f"{' '.join(args[:2])} failed (exit {proc.returncode}): "
                f"{proc.stderr.strip()[-2000:]}\n{log_text}"
            )
        return proc

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> TempPostgres:
        """Create the cluster and start the server (a few seconds)."""
        self.root = Path(tempfile.mkdtemp(prefix="emseg-pg-"))
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        data = self.root / "data"
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        last: Exception | None = None
        for _ in range(3):  # the free port may be taken between the probe and the start
            self.port = _free_port()
            opts = [
                f"-p {self.port}",
                f"-k {self.root}",
                "-c listen_addresses=127.0.0.1",
                *(f"-c {k}={v}" for k, v in self.settings.items()),
            ]
            try:
                self._run(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "start",
                        "-w",
                        "-t",
                        "60",
                        "-D",
                        str(data),
                        "-l",
                        str(self.root / "server.log"),
                        "-o",
                        " ".join(opts),
                    ]
                )
                log.info("temporary PostgreSQL on 127.0.0.1:%d (%s)", self.port, self.root)
                return self
            except EmsegError as exc:
                last = exc
        self.stop()
        raise EmsegError(f"could not start a temporary PostgreSQL server: {last}")

    def stop(self) -> None:
        """Stop the server at once and delete its folder."""
        if self.root is None:
            return
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            self._run(
                [str(self.bin_dir / "pg_ctl"), "stop", "-m", "immediate", "-w", "-D", str(data)],
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        """``postgresql://postgres@127.0.0.1:PORT/<database>``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database (`name`: lower-case letters, digits, _) and return its URL."""
        import psycopg

        if not _SAFE_NAME.match(name):
            raise EmsegError(f"database `name` must match {_SAFE_NAME.pattern}; got {name!r}.")
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # name checked above; DDL cannot bind it
        return self.url(name)
