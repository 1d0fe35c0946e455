"""The connection layer: the only module that imports a SQLite driver or sqlite-vec.

It picks the driver (the standard library's sqlite3 when it can load extensions, else
sqlean), opens one connection per thread with WAL, foreign keys and a busy timeout, and
runs reads and write transactions. Writes take the write lock up front (`BEGIN IMMEDIATE`)
and are retried while another process holds it. `Store` (store/sqlite/store.py) builds on `Database`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
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
    if not Path(path).is_file():
        return None
    try:
        rows = dict(_probe(Path(path), lambda conn: conn.execute("SELECT key, value FROM meta").fetchall()))
    except Exception:  # noqa: BLE001 - no meta table, not a database: nothing recorded
        return None
    if "embedder_name" not in rows:
        return None
    return rows["embedder_name"], int(rows["embedder_dimension"])


def _probe(path: Path, read: Any) -> Any:
    """`read(conn)` on a read-only connection that leaves no file behind. Without a -wal file the main
    file is whole and is read as immutable (no -shm or -wal is created); with one, or if that read fails
    (another process may be writing), it is read as SQLite reads a shared database."""
    db = driver()
    modes = ["mode=ro&immutable=1", "mode=ro"] if not _wal(path).exists() else ["mode=ro"]
    for i, mode in enumerate(modes):
        try:
            conn = db.connect(f"file:{path.as_posix()}?{mode}", uri=True)
            try:
                return read(conn)
            finally:
                conn.close()
        except db.Error:
            if i == len(modes) - 1:
                raise
    return None


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


APPLICATION_ID = 0x4D43506D  # "MCPm" in PRAGMA application_id: this file is an mcp-memory database
OUR_TABLES = frozenset({"meta", "groups", "sessions", "episodes"})  # what databases from before the id hold
SQLITE_HEADER = b"SQLite format 3\x00"


def check_database_file(path: Path) -> None:
    """Refuse, before anything opens it for writing, a path that cannot be a usable mcp-memory database:
    a folder, a file of another kind or another application, a damaged file, or one we may not write."""
    if path.is_dir():
        raise StoreError(f"{path} is a folder; pass --db with a file path, such as {path / 'memory.db'}")
    if not path.exists():
        _check_writable_folder(path)
        return
    if not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(
            f"the database {path} is read-only for this user; make it writable (chmod u+rw {path}) "
            "or pass --db with another path"
        )
    _check_writable_folder(path)
    size = path.stat().st_size
    if size == 0:
        return  # SQLite's own empty database: ours from the first migration
    with path.open("rb") as file:
        header = file.read(100)
    if not header.startswith(SQLITE_HEADER):
        raise StoreError(
            f"{path} is not an SQLite database (another kind of file, or a damaged one); mcp-memory leaves it "
            "as it is: pass --db with another path, or move the file aside"
        )
    _check_not_truncated(path, header, size)
    _check_ours(path)


def _check_writable_folder(path: Path) -> None:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(
            f"the folder {folder} is read-only for this user, and SQLite keeps its journal files beside the "
            f"database; make the folder writable or pass --db with a path in a folder you can write"
        )


def _check_not_truncated(path: Path, header: bytes, size: int) -> None:
    """The header's page count (trusted only when its valid-for number matches the change counter)."""
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages, change_counter, valid_for = (int.from_bytes(header[i : i + 4], "big") for i in (28, 24, 92))
    if pages and valid_for == change_counter and size < pages * page_size:
        raise StoreError(
            f"the database {path} is damaged: it holds {size} bytes but its header says {pages * page_size}; "
            "restore it from a backup, or move it aside and start again (mcp-memory leaves it as it is)"
        )


def _check_ours(path: Path) -> None:
    def read(conn: Any) -> tuple[int, set[str]]:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return application_id, tables

    try:
        application_id, tables = _probe(path, read)
    except Exception as exc:  # noqa: BLE001 - whatever SQLite says, the file cannot be used
        raise StoreError(
            f"the database {path} cannot be read ({exc}); restore it from a backup, or move it aside and start "
            "again (mcp-memory leaves it as it is)"
        ) from None
    if application_id == APPLICATION_ID or tables >= OUR_TABLES or (application_id == 0 and not tables):
        return
    names = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise StoreError(
        f"{path} is another application's SQLite database (tables: {names or 'none'}); mcp-memory will not "
        "change it: pass --db with a path of its own"
    )


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
