"""Many HTTP clients at once: 50 SDK clients, each adding a memory and recalling, for 60 s, against one
authenticated server (SQLite, then PostgreSQL), and against two stateless replicas on one PostgreSQL.

Run with ``uv run python bench/http_clients.py [--clients 50] [--seconds 60] [--only sqlite|postgres|replicas]``.
Each server is a real ``mcp-memory serve --http`` process on 127.0.0.1 with a bearer token (the hashing
embedder, so the figures are the server's and not the model's). The clients are the SDK's
streamable-HTTP client (the 2026-07-28 protocol it picks by default), in this one process, on the same two
cores as the servers (and PostgreSQL). Client ``i`` writes to a session of its own in one of five groups:
``add_memory`` (with an idempotency key) then ``recall`` (a query, limit 5), again and again. With two
replicas, each call goes to the next replica in turn, as a round-robin balancer would send it.

Afterwards every session is read back: a write that was answered but is not stored is lost, one stored
more often than answered is duplicated. Reported: calls, errors, calls per second, p50/p95 per tool.
PostgreSQL is the throwaway server of tests/postgres.py (or ``MCP_MEMORY_TEST_POSTGRES_URL``).

Writes bench/results/http_clients.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import print_table, write_result  # noqa: E402
from bench.scale import latency_summary  # noqa: E402
from mcp_memory.server.auth.tokens import add_token  # noqa: E402
from tests.http_server import client, environment, running  # noqa: E402
from tests.postgres import fresh_database, postgres_server  # noqa: E402

GROUPS = 5
TOPICS = ["garden", "invoice", "trip to Porto", "piano lesson", "server outage", "birthday", "the new hire"]


class Load:
    """What the clients did: latencies per tool, errors, and the writes each client had answered."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {"add_memory": [], "recall": []}
        self.errors: list[str] = []
        self.answered: dict[tuple[str, str], int] = {}


async def one_client(n: int, urls: list[str], token: str, deadline: float, load: Load) -> None:
    group, session = f"g{n % GROUPS}", f"c{n}"
    load.answered[(group, session)] = 0
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(client(url, token)) for url in urls]
        await clients[0].call_tool("create_group", {"group_id": group, "user_ids": ["bench"]})
        await clients[0].call_tool("open_session", {"group_id": group, "session_id": session})
        step = 0
        while time.monotonic() < deadline:
            topic = TOPICS[(n + step) % len(TOPICS)]
            calls = [
                ("add_memory", {"group_id": group, "session_id": session, "producer": "bench",
                                "content": f"client {n} note {step}: about the {topic}",
                                "idempotency_key": f"c{n}-{step}"}),
                ("recall", {"group_id": group, "query": f"what about the {topic}", "limit": 5}),
            ]  # fmt: skip
            for name, arguments in calls:
                memory = clients[step % len(clients)]
                started = time.perf_counter()
                try:
                    result = await memory.call_tool(name, arguments)
                except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
                    load.errors.append(f"{name}: {exc!r}"[:300])
                    continue
                load.latency[name].append((time.perf_counter() - started) * 1000)
                if result.is_error:
                    load.errors.append(f"{name}: {result.content[0].text}"[:300])  # type: ignore[union-attr]
                elif name == "add_memory":
                    load.answered[(group, session)] += 1
            step += 1


async def stored_counts(url: str, token: str) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    async with client(url, token) as admin:
        for g in range(GROUPS):
            listed = await admin.call_tool("list_groups", {"group_id": f"g{g}"})
            for session in (listed.structured_content or {}).get("sessions", []):
                counts[(f"g{g}", session["session_id"])] = session["episode_count"]
    return counts


async def drive(urls: list[str], tokens: dict[str, str], clients: int, seconds: float) -> dict[str, Any]:
    load = Load()
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(*(one_client(n, urls, tokens["bench"], deadline, load) for n in range(clients)))
    elapsed = time.monotonic() - started
    stored = await stored_counts(urls[0], tokens["admin"])
    lost = sum(max(0, answered - stored.get(key, 0)) for key, answered in load.answered.items())
    duplicated = sum(max(0, stored.get(key, 0) - answered) for key, answered in load.answered.items())
    calls = sum(len(v) for v in load.latency.values())
    return {
        "servers": len(urls), "clients": clients, "seconds": round(elapsed, 1), "calls": calls,
        "errors": len(load.errors), "first_errors": load.errors[:5], "calls_per_s": round(calls / elapsed, 1),
        "writes_answered": sum(load.answered.values()), "writes_stored": sum(stored.values()),
        "lost": lost, "duplicated": duplicated,
        "latency_ms": {name: latency_summary(samples) for name, samples in load.latency.items()},
    }  # fmt: skip


@contextlib.contextmanager
def servers(root: Path, db: str, count: int, stateless: bool) -> Iterator[list[str]]:
    tokens_file = root / "tokens.json"
    with contextlib.ExitStack() as stack:
        urls = []
        for _ in range(count):
            args = ["--tokens-file", str(tokens_file), *(["--stateless"] if stateless else [])]
            env = {**environment(root), "MCP_MEMORY_LOG_LEVEL": "WARNING"}
            urls.append(stack.enter_context(running(root, *args, db=db, env=env)).url)
        yield urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--only", choices=("sqlite", "postgres", "replicas"), action="append")
    args = parser.parse_args()
    chosen = args.only or ["sqlite", "postgres", "replicas"]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder, postgres_server() as pg:
        root = Path(folder)
        tokens = {
            name: add_token(root / "tokens.json", name, [scope], [], None)[0]
            for name, scope in (("bench", "write"), ("admin", "admin"))
        }
        setups = {
            "sqlite": (1, False, lambda: contextlib.nullcontext(str(root / "m.db"))),
            "postgres": (1, False, lambda: fresh_database(pg)),
            "replicas": (2, True, lambda: fresh_database(pg)),
        }
        for name in chosen:
            count, stateless, database = setups[name]
            with database() as db, servers(root, db, count, stateless) as urls:
                print(
                    f"{name}: {count} server(s), {args.clients} clients, {args.seconds:.0f} s ...", flush=True
                )
                results[name] = asyncio.run(drive(urls, tokens, args.clients, args.seconds))
    rows = [
        [name, r["servers"], r["calls"], r["errors"], r["calls_per_s"], r["latency_ms"]["add_memory"]["p50"],
         r["latency_ms"]["add_memory"]["p95"], r["latency_ms"]["recall"]["p50"], r["latency_ms"]["recall"]["p95"],
         r["writes_answered"], r["lost"], r["duplicated"]]
        for name, r in results.items()
    ]  # fmt: skip
    print_table(
        ["setup", "servers", "calls", "errors", "calls/s", "add p50", "add p95", "recall p50", "recall p95",
         "writes", "lost", "dup"],
        rows, title=f"{args.clients} HTTP clients, {args.seconds:.0f} s, latencies in ms",
    )  # fmt: skip
    print(json.dumps({k: v["first_errors"] for k, v in results.items() if v["errors"]}, indent=2))
    write_result("http_clients", {"clients": args.clients, "seconds": args.seconds, "results": results})


if __name__ == "__main__":
    main()
