"""The connection layer: the only module that imports a SQLite driver or sqlite-vec.

It picks the driver (the standard library's sqlite3 when it can load extensions, else
sqlean), opens one connection per thread with WAL, foreign keys and a busy timeout, and
runs reads and write transactions. Writes take the write lock up front (`BEGIN IMMEDIATE`)
and are retried while another process holds it. `Store` (store.py) builds on `Database`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from mcp_memory.errors import ExtensionLoadError, StoreError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5_000
LOCK_RETRY_BUDGET_S = 60.0


def driver() -> ModuleType:
    """The first SQLite driver that can load extensions: the standard library's, else sqlean."""
    import sqlite3

    if _can_load_extensions(sqlite3):
        return sqlite3
    try:
        import sqlean  # type: ignore[import-untyped]
    except ImportError:
        raise ExtensionLoadError(
            "this Python's sqlite3 cannot load extensions and the sqlean.py package is not installed; "
            "install it with `pip install sqlean.py` (Linux, macOS) or use a Python whose sqlite3 supports "
            "enable_load_extension (python.org and Windows builds do)"
        ) from None
    if not _can_load_extensions(sqlean):
        raise ExtensionLoadError("neither sqlite3 nor sqlean can load the sqlite-vec extension here")
    return sqlean


def _can_load_extensions(module: ModuleType) -> bool:
    try:
        conn = module.connect(":memory:")
    except Exception:  # noqa: BLE001 - any failure means "not this driver"
        return False
    try:
        load_vec(conn)
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        conn.close()


def load_vec(conn: Any) -> None:
    """Load the sqlite-vec extension into a connection."""
    import sqlite_vec

    conn.enable_load_extension(True)
    try:
        sqlite_vec.load(conn)
    finally:
        conn.enable_load_extension(False)


def recorded_embedder(path: Path) -> tuple[str, int] | None:
    """The embedder name and dimension a database was built with, read without changing the file."""
    if not Path(path).exists():
        return None
    db = driver()
    try:
        conn = db.connect(f"file:{Path(path).as_posix()}?mode=ro", uri=True)
        try:
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        finally:
            conn.close()
    except db.Error:
        return None
    if "embedder_name" not in rows:
        return None
    return rows["embedder_name"], int(rows["embedder_dimension"])


class Database:
    """A SQLite file opened once per thread; reads and write transactions retried while it is locked."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder for the database {self.path}: {exc.strerror}; "
                "pass --db (or MCP_MEMORY_DB) with a path in a folder you can write"
            ) from None
        self._db = driver()
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        self._savepoints = itertools.count(1)

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreError("the store is closed")
            conn = self._open_connection()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _open_connection(self) -> Any:
        try:
            conn = self._db.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=5)
        except self._db.Error as exc:
            raise StoreError(f"cannot open the database at {self.path}: {exc}") from None
        load_vec(conn)
        conn.row_factory = self._db.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _retry(self, fn: Any) -> Any:
        """Run `fn`, retrying while another process holds the lock, within LOCK_RETRY_BUDGET_S."""
        deadline = time.monotonic() + LOCK_RETRY_BUDGET_S
        delay = 0.01
        while True:
            try:
                return fn()
            except self._db.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"the database {self.path} stayed locked by another process for "
                        f"{LOCK_RETRY_BUDGET_S:.0f} s; nothing was written, try again"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[Any]:
        """A write transaction (BEGIN IMMEDIATE), or a uniquely named savepoint when already inside one.

        It ends committed or rolled back, never open: a COMMIT that fails (the lock-retry budget runs
        out, a full disk, an I/O error, a deferred constraint) is rolled back and re-raised, so no later
        write on this thread can land in a transaction that will never commit.
        """
        conn = self._conn()
        if conn.in_transaction:
            with self._savepoint(conn):
                yield conn
            return
        self._retry(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            yield conn
            if (
                not conn.in_transaction
            ):  # SQLite rolled it back itself (a full disk, say) and the caller went on
                raise StoreError(
                    f"the write to {self.path} was rolled back by SQLite; nothing was written, try again"
                )
            self._retry(lambda: conn.execute("COMMIT"))
        except BaseException:
            self._rollback(conn)
            raise

    @contextlib.contextmanager
    def _savepoint(self, conn: Any) -> Iterator[None]:
        name = f"nested_{next(self._savepoints)}"
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            if conn.in_transaction:  # some errors (SQLITE_FULL, say) roll back the whole transaction first
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
            raise
        conn.execute(f"RELEASE {name}")

    def _rollback(self, conn: Any) -> None:
        """Roll back whatever is open; a connection that cannot even do that is closed and replaced."""
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except self._db.Error as exc:
            log.warning("could not roll back on %s (%s); reopening the connection", self.path, exc)
            self._discard(conn)

    def _discard(self, conn: Any) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        with contextlib.suppress(Exception):
            conn.close()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Any]:
        """A read transaction: every statement inside sees the file as it was at the first one."""
        conn = self._conn()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                try:
                    conn.execute("COMMIT")
                except self._db.Error:
                    self._rollback(conn)

    def write(self, fn: Any) -> Any:
        """Run `fn(conn)` in one write transaction, retried as a whole while the file is locked."""

        def attempt() -> Any:
            with self.atomic() as conn:
                return fn(conn)

        return self._retry(attempt)

    def read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        return self._retry(lambda: self._conn().execute(sql, params).fetchall())

    def close(self) -> None:
        """Close every connection this store opened; later calls fail with StoreError."""
        self._closed = True
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(Exception):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()
