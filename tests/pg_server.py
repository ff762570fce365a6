"""A throw-away PostgreSQL server for tests and benchmarks, started with the machine's binaries.

``throwaway_postgres(root)`` runs ``initdb`` and ``pg_ctl start`` in ``root`` (as the ``postgres``
user when running as root, since initdb refuses root), yields a :class:`PgServer`, and stops it.
Each test gets its own database on the one server (:meth:`PgServer.new_database`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


class NoPostgres(RuntimeError):
    """This machine cannot run a throw-away PostgreSQL server (the reason says why)."""


def pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def new_database(self, prefix: str = "catalog") -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=self.host, port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def throwaway_postgres(root: Path, settings: tuple[str, ...] = ()) -> Iterator[PgServer]:
    """Start a PostgreSQL cluster in ``root`` (trust auth, loopback only), yield it, stop it.

    ``settings``: extra ``-c name=value`` server options (a benchmark may ask for more connections).
    """
    bindir = pg_bin()
    if bindir is None:
        raise NoPostgres("PostgreSQL server binaries (initdb) are not installed")
    try:
        import psycopg  # noqa: F401
    except ImportError as error:
        raise NoPostgres("psycopg is not installed") from error
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError as error:
            raise NoPostgres("running as root and there is no `postgres` user to own a cluster") from error
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    if user:
        os.chmod(root, 0o777)
        for parent in list(root.parents)[:4]:
            os.chmod(parent, os.stat(parent).st_mode | 0o011)  # let postgres traverse to it

    def run(*cmd: str, check: bool = True) -> int:
        full = ["runuser", "-u", "postgres", "--", *cmd] if user else list(cmd)
        return subprocess.run(full, check=check, capture_output=True, timeout=180).returncode

    port = _free_port()
    options = " ".join([f"-p {port}", f"-k {root}", "-c listen_addresses=127.0.0.1", *(f"-c {s}" for s in settings)])
    run(str(bindir / "initdb"), "-D", str(data), "-U", "wsireview", "--auth=trust", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o", options, "start")
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield PgServer("127.0.0.1", port, "wsireview")
    finally:
        # A loaded machine can take longer than pg_ctl's default wait to stop it: wait longer, and
        # fall back to an immediate stop rather than failing a test that has passed.
        if run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-t", "120", "stop", check=False):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop", check=False)
