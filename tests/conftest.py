"""Shared fixtures: a real SQLite file per test, the hashing embedder, real MCP clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp import Client

from mcp_memory.config import Config
from mcp_memory.manager import MemoryManager
from mcp_memory.server import build_server
from tests.postgres import postgres_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "memory.db"


@pytest.fixture
def config(db_path: Path) -> Config:
    return Config(db_path=db_path, embedder="hashing")


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
