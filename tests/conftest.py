"""Shared fixtures: a real database per test (a SQLite file; in modules marked `both_backends` also a
PostgreSQL database, slow), the hashing embedder, real MCP clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp import Client

from mcp_memory.config import Config
from mcp_memory.manager import MemoryManager
from mcp_memory.server import build_server
from tests.postgres import fresh_database, postgres_server

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test of a `both_backends` module runs on each backend, unless it reads the SQLite file itself
    (it asks for `db_path`, or is marked `sqlite_only`)."""
    if (
        metafunc.definition.get_closest_marker("both_backends")
        and not metafunc.definition.get_closest_marker("sqlite_only")
        and "backend" in metafunc.fixturenames
        and "db_path" not in metafunc.definition._fixtureinfo.argnames
    ):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "memory.db"


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def config(db_path: Path, backend: str, request: pytest.FixtureRequest) -> Iterator[Config]:
    if backend == "postgres":
        with fresh_database(request.getfixturevalue("postgres_url")) as url:
            yield Config(db_url=url, embedder="hashing")
        return
    yield Config(db_path=db_path, embedder="hashing")


@pytest.fixture
async def manager(config: Config) -> AsyncIterator[MemoryManager]:
    async with MemoryManager(config) as started:
        yield started


@pytest.fixture
async def client(config: Config) -> AsyncIterator[Client]:
    """An in-process MCP client on a server that owns its manager (as a stdio process does)."""
    async with Client(build_server(config)) as connected:
        yield connected


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One throwaway PostgreSQL for the whole run (tests/postgres.py), started by the first test that asks."""
    with postgres_server() as url:
        yield url
