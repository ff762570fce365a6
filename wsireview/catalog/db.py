"""Opening a catalog: engine, SQLite pragmas, migrations to head, sessions."""

from __future__ import annotations

import fcntl
import os
import re
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

import wsireview
from wsireview.errors import WsireviewError

SQLITE_BUSY_TIMEOUT_MS = 30_000
VERSION_TABLE = "alembic_version"  # Alembic's default, which migrations/env.py keeps


def migrations_dir() -> Path:
    """The Alembic scripts: inside the installed wheel, else the checkout's top-level ``migrations/``."""
    packaged = Path(wsireview.__file__).parent / "_migrations"
    if (packaged / "env.py").exists():
        return packaged
    return Path(wsireview.__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str):
    from alembic.config import Config  # imported on use: alembic costs most of a cold start

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite catalog URL (None for an in-memory catalog or another database), so callers
    can tell whether the catalog exists before opening it creates it."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1] if "///" in url else ""
    return Path(path) if path and path != ":memory:" else None


def make_engine(url: str) -> Engine:
    """An engine with the project's settings; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


class UnknownRevision(WsireviewError):
    """The catalog is stamped with a schema revision none of the migrations here defines."""


def refuse_unknown_revision(engine: Engine) -> None:
    """Raise :class:`UnknownRevision` when the catalog's revision is not one this wsireview knows
    (a newer wsireview wrote it): Alembic would fail with a traceback, and nothing can migrate it."""
    current = current_revision(engine)
    if current is not None and current not in _revisions()[0]:
        raise UnknownRevision(f"the catalog {engine.url.render_as_string()} is at schema revision {current!r}, which "
                              f"this wsireview ({wsireview.__version__}) does not know: open it with the newer "
                              "wsireview that wrote it, or restore a backup")


def default_root(url: str) -> Path | None:
    """The workspace of a catalog opened by URL alone: the folder of its SQLite file (where a
    workspace keeps ``catalog.sqlite``); None for another database, whose workspace must be given."""
    path = sqlite_path(url)
    return path.resolve().parent if path is not None else None


def upgrade(engine: Engine, revision: str = "head", root: Path | None = None) -> None:
    """Migrate to ``revision``. ``root``: the workspace folder, for migrations that move data into
    workspace files (default: the SQLite catalog's folder)."""
    from alembic import command

    refuse_unknown_revision(engine)

    url = engine.url.render_as_string(hide_password=False)
    cfg = alembic_config(url)
    cfg.attributes["workspace_root"] = root or default_root(url)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str = "base", root: Path | None = None) -> None:
    from alembic import command

    refuse_unknown_revision(engine)

    url = engine.url.render_as_string(hide_password=False)
    cfg = alembic_config(url)
    cfg.attributes["workspace_root"] = root or default_root(url)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """The catalog's schema revision (None before the first migration).

    Read with one query rather than through Alembic, whose import would cost every start-up
    about 0.3 s; Alembic is only imported when a migration has to run.
    """
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


_REVISION_LINE = re.compile(r'^(down_revision|revision)\s*(?::[^=]*)?=\s*["\']?([\w]+)["\']?', re.M)


def _revisions() -> tuple[set[str], set[str | None]]:
    """Every revision the migration scripts define, and every one they name as a ``down_revision``
    (read from the scripts' ``revision = "NNNN"`` lines, without importing Alembic)."""
    revisions: set[str] = set()
    parents: set[str | None] = set()
    for script in sorted((migrations_dir() / "versions").glob("*.py")):
        found = dict(_REVISION_LINE.findall(script.read_text(encoding="utf-8")))
        if "revision" in found:
            revisions.add(found["revision"])
            parents.add(found.get("down_revision"))
    return revisions, parents


def head_revision() -> str:
    """The newest revision: the one no script names as its ``down_revision``."""
    revisions, parents = _revisions()
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migrations in {migrations_dir()} have {len(heads)} heads, expected one: {sorted(heads)}")
    return heads.pop()


class WriterQueue:
    """Writers to one SQLite catalog take turns on an advisory lock file beside it (``flock``).

    SQLite lets one writer in at a time and makes the others poll, sleeping 1, 2, 5 ... up to 100 ms
    between tries, so with several reviewers committing at once a waiting writer can miss its turn
    again and again (commit p99 in the hundreds of milliseconds). Waiting on a kernel lock instead
    wakes the next writer the moment the lock is released. Threads of one process take turns on an
    ``RLock`` first (an flock is shared by a process's threads). Readers never wait on it; a writer
    that does not use it (another program) still meets SQLite's own lock and busy timeout.
    """

    def __init__(self, database: Path | None) -> None:
        self._path = database.with_name(database.name + ".writers") if database is not None else None
        self._thread_lock = threading.RLock()
        self._fd: int | None = None
        self._depth = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._thread_lock:
            if self._path is None:  # an in-memory catalog: one process
                yield
                return
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o666)
            if self._depth == 0:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock file, after any writer of this process still in its turn."""
        with self._thread_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class Catalog:
    """An opened catalog: an engine migrated to head and a session factory.

    ``root`` is the workspace folder the paths stored in the catalog are relative to (score files
    are read through it); by default the folder of a SQLite catalog file.
    """

    def __init__(self, url: str, migrate: bool = True, root: Path | None = None):
        self.url = url
        self.root = Path(root).resolve() if root is not None else default_root(url)
        self.engine = make_engine(url)
        if migrate and current_revision(self.engine) != head_revision():
            upgrade(self.engine, root=self.root)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writers = WriterQueue(sqlite_path(url)) if url.startswith("sqlite") else None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A Core connection in a transaction that reads and then writes, holding the database's
        write lock from its first statement: on SQLite ``BEGIN IMMEDIATE`` (a deferred transaction
        that read first could not take the lock once another writer committed, and writers would
        read stale rows), after its turn in the :class:`WriterQueue`; elsewhere a plain transaction
        (PostgreSQL locks rows as it goes). Short by design: everyone else's writes wait for it."""
        with self._turn(), self.engine.connect() as connection:
            if self._writers is not None:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.commit()
            except BaseException:
                connection.rollback()
                raise

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """:meth:`session` for the short writes reviewers make many times a minute (a verdict, an
        undo): on SQLite it waits its turn in the :class:`WriterQueue` and holds the write lock from
        the start, as :meth:`writing` does."""
        with self._turn(), self._sessions() as session:
            try:
                if self._writers is not None:
                    session.connection().exec_driver_sql("BEGIN IMMEDIATE")
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def _turn(self):
        return self._writers.turn() if self._writers is not None else nullcontext()

    def close(self) -> None:
        self.engine.dispose()
        if self._writers is not None:
            self._writers.close()


def open_catalog(url: str, migrate: bool = True, root: Path | None = None) -> Catalog:
    return Catalog(url, migrate=migrate, root=root)
