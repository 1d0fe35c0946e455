"""The test PostgreSQL (tests/postgres.py) starts, has pgvector, and is gone afterwards."""

from __future__ import annotations

import psycopg
import pytest

from tests.postgres import postgres_server

pytestmark = pytest.mark.slow


def test_a_throwaway_postgres_with_pgvector_answers_and_stops() -> None:
    with postgres_server() as url, psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SHOW server_version").fetchone()[0].startswith("18")  # type: ignore[index]
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        distance = conn.execute("SELECT '[1,0]'::vector <=> '[0,1]'::vector").fetchone()
        assert distance is not None and distance[0] == pytest.approx(1.0)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
