"""The PostgreSQL connection layer: the pool, one transaction per call, and pgvector's vectors as numpy.

The driver (psycopg 3 and its pool) is the `postgres` extra; without it, opening a PostgreSQL database says
how to install it. Vectors go to the server as pgvector's text form and come back in its binary form, read
straight into numpy (a loader registered on every pooled connection), so loading a group's vectors costs
no text parsing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from mcp_memory.errors import ConfigurationError, StoreError, ValidationFailed

T = TypeVar("T")
POOL_SIZE = 4


def driver() -> Any:
    """psycopg_pool, or a ConfigurationError saying how to install it."""
    try:
        import psycopg_pool
    except ImportError:
        raise ConfigurationError(
            "PostgreSQL needs the postgres extra: pip install 'mcp-memory[postgres]' "
            "(or uv tool install 'mcp-memory[postgres]')"
        ) from None
    return psycopg_pool


def vector_text(vector: np.ndarray) -> str:
    """pgvector's text form of a vector."""
    return "[" + ",".join(map(repr, np.asarray(vector, np.float32).tolist())) + "]"


def _register_vector(conn: Any) -> bool:
    """Read pgvector's `vector` in binary as float32 numpy arrays on this connection."""
    from psycopg.adapt import Loader
    from psycopg.pq import Format
    from psycopg.types import TypeInfo

    class VectorLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> np.ndarray:
            size = int.from_bytes(bytes(data[:2]), "big")
            return np.frombuffer(bytes(data), ">f4", count=size, offset=4).astype(np.float32)

    info = TypeInfo.fetch(conn, "vector")
    if info is None:  # not yet: the first migration creates the extension
        return False
    conn.adapters.register_loader(info.oid, VectorLoader)
    return True


class PgDatabase:
    """A pool of connections to one PostgreSQL database; `_run` gives each call its own transaction."""

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self._closed = False
        self._pool = driver().ConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, configure=self._configure, check=None
        )
        try:
            self._pool.open(wait=True, timeout=30)
        except Exception as exc:  # noqa: BLE001 - the pool's own error names no fix
            self._pool.close()
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.location}: {exc}; check the URL, that the server "
                "runs, and that it accepts this user"
            ) from None

    @staticmethod
    def _configure(conn: Any) -> None:
        conn.autocommit = True  # a transaction is always explicit (conn.transaction())
        conn.execute("SET application_name = 'mcp-memory'")

    def _vector_ready(self, conn: Any) -> None:
        if not getattr(conn, "_mcp_memory_vectors", False):
            conn._mcp_memory_vectors = _register_vector(conn)

    @property
    def location(self) -> str:
        """The server and database, never the password."""
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(self.url)
        host, port, name = (
            parts.get("host") or "localhost",
            parts.get("port") or 5432,
            parts.get("dbname") or "",
        )
        return f"postgresql://{host}:{port}/{name}"

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        if self._closed:
            raise StoreError("the memory database is closed")
        with self._pool.connection() as conn:
            self._vector_ready(conn)
            yield conn

    def _run(self, work: Callable[[Any], T]) -> T:
        """`work(conn)` in one transaction on a pooled connection; text PostgreSQL cannot hold (a NUL, in
        metadata or anywhere the callers' checks do not look) rolls it back as a ValidationFailed."""
        from psycopg import DataError
        from psycopg.errors import CharacterNotInRepertoire, UntranslatableCharacter

        try:
            with self._connection() as conn, conn.transaction():
                return work(conn)
        except DataError as exc:
            unstorable = isinstance(exc, UntranslatableCharacter | CharacterNotInRepertoire) or "NUL" in str(
                exc
            )
            if not unstorable:
                raise
            raise ValidationFailed(
                "the text holds a NUL character (U+0000), which PostgreSQL cannot store; remove it; nothing was "
                "stored"
            ) from None

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One statement's rows (a statement alone is its own transaction: no BEGIN and COMMIT to wait for)."""
        with self._connection() as conn:
            return list(conn.execute(sql, params).fetchall())

    def _count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """The rows one statement changed (atomic by itself)."""
        with self._connection() as conn:
            return int(conn.execute(sql, params).rowcount)

    def close(self) -> None:
        self._closed = True
        self._pool.close()


def lock_group(conn: Any, group_id: str) -> None:
    """Hold the group's row until commit: a group's writers take turns, so its sequence numbers, retry
    checks, fact replacements and change feed are exact (and the feed in commit order)."""
    conn.execute("SELECT 1 FROM groups WHERE group_id = %s FOR NO KEY UPDATE", (group_id,))
