"""The PostgreSQL store's own concerns (its contract tests are in tests/test_store_contract.py): migrations
applied once when servers start together, and a clear error without the driver."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest

from mcp_memory.errors import ConfigurationError
from mcp_memory.store.postgres.migrations import MIGRATIONS
from mcp_memory.store.postgres.store import PostgresStore
from tests.postgres import fresh_database

pytestmark = pytest.mark.slow


def test_servers_starting_together_migrate_once(postgres_url: str) -> None:
    with fresh_database(postgres_url) as url:
        stores: list[Any] = []
        errors: list[BaseException] = []

        def start() -> None:
            try:
                stores.append(PostgresStore(url, embedder_name="together-4", dimension=4))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        try:
            assert errors == [] and len(stores) == 6
            assert {store.schema_version for store in stores} == {len(MIGRATIONS)}
            assert stores[0].get_meta("schema_version") == str(len(MIGRATIONS))
        finally:
            for store in stores:
                store.close()


def test_the_location_names_the_server_and_database_but_never_the_password() -> None:
    store = PostgresStore.__new__(PostgresStore)
    store.url = "postgresql://team:s3cret@db.example:6543/memory"
    assert store.location == "postgresql://db.example:6543/memory"


def test_without_the_driver_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'mcp-memory\[postgres\]'"):
        PostgresStore("postgresql://nowhere/none", embedder_name="any-4", dimension=4)
