"""A throwaway PostgreSQL cluster for the state backend tests (issue 12).

Debian's ``postgresql`` package (installed by ``./dev test``) puts initdb and pg_ctl in
/usr/lib/postgresql/<version>/bin. The cluster lives in a temporary folder, listens on a
free loopback port (its unix socket in the same folder), trusts local connections, and
is stopped and deleted at the end. initdb refuses to run as root, so as root the cluster
belongs to the ``postgres`` system user (or ``nobody``) and is run with runuser.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

USER = "poa"


def find_pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(os.path.realpath(initdb)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One PostgreSQL cluster; :meth:`new_database` gives each test a database of its own."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="poa-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._owner: str | None = None
        self._names = itertools.count(1)
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    continue
                self._owner = name
                break
            assert self._owner is not None, "no user to run PostgreSQL as"
            shutil.chown(self.root, self._owner)

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self._owner is not None:
            cmd = ["runuser", "-u", self._owner, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """initdb and start, waiting until it accepts connections."""
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "-E", "UTF8")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w",
            "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server and delete the cluster."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        """A DSN for ``dbname``, over TCP on loopback."""
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={dbname}"

    def new_database(self) -> str:
        """Create an empty database; return its DSN."""
        name = f"t{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def execute(self, dsn: str, sql: str) -> None:
        """Run ``sql`` on the database of ``dsn`` (autocommit), as the test's admin."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql)
