"""Would a query cache pay? Measure before building one (issue 11): what a repeated recall costs, what a cache
could save of it, and how often queries repeat.

Run: `uv run python bench/query_cache.py [--sizes 10000,100000] [--queries 200] [--out results.json]`.

For each size: a group of synthetic turns (bench/scale.py's), the local MiniLM embedder, and `queries`
distinct questions, each asked twice through `MemoryManager.recall` (the second time is what a cache would
answer). Timed per recall: the query embedding alone, the whole recall, and the part a result cache could
never skip (checking that the group has not changed since, and counting the retrieval, which recall writes).
LoCoMo's questions are counted for repeats too: how often would one hit a cache at all.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from anyio.to_thread import run_sync

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.locomo import DEFAULT_DATA  # noqa: E402
from bench.scale import AGENTS, GROUP, USERS, ingest, synthetic_queries, synthetic_turns  # noqa: E402
from mcp_memory.config import Config  # noqa: E402
from mcp_memory.manager import MemoryManager  # noqa: E402
from mcp_memory.recall.request import RecallRequest  # noqa: E402


def p50(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


async def measure(size: int, queries: list[str], folder: Path) -> dict[str, Any]:
    config = Config(db_path=folder / f"cache{size}.db", log_level="WARNING")
    async with MemoryManager(config) as manager:
        await manager.groups.create_group(GROUP, user_ids=USERS, agent_ids=AGENTS)
        sessions = [f"s{i}" for i in range(10)]
        for session in sessions:
            await manager.sessions.open_session(GROUP, session)
        await ingest(manager, synthetic_turns(), sessions, 0, size)
        await run_sync(manager.embedder.load)  # type: ignore[attr-defined]
        for query in queries[:20]:  # warm the caches of the group (vectors, keywords)
            await manager.memories.recall(RecallRequest(group_id=GROUP, query=query))
        embed, first, second, fixed = [], [], [], []
        store = manager.engine.store
        for query in queries:
            started = time.perf_counter()
            await run_sync(manager.embedder.embed, [query])
            embed.append(time.perf_counter() - started)
            for samples in (first, second):
                started = time.perf_counter()
                result = await manager.memories.recall(RecallRequest(group_id=GROUP, query=query))
                samples.append(time.perf_counter() - started)
            ids = [hit.id for hit in result.hits]
            started = time.perf_counter()  # what even a cache hit pays: is the group unchanged? count it
            await run_sync(store.vector_revision, GROUP)
            await run_sync(store.keyword_log, GROUP)
            await run_sync(store.touch, ids, "2026-01-01T00:00:00+00:00")
            fixed.append(time.perf_counter() - started)
    return {
        "memories": size,
        "query_embedding_ms_p50": p50(embed),
        "recall_ms_p50_first": p50(first),
        "recall_ms_p50_repeated": p50(second),
        "cache_hit_floor_ms_p50": p50(fixed),
        "best_saving_ms_p50": round(p50(second) - p50(fixed), 3),
    }


def locomo_repeats(data: Path) -> dict[str, Any]:
    """How many of LoCoMo's questions are asked more than once, word for word, within a conversation."""
    if not data.is_file():
        return {"questions": 0, "repeated": 0}
    total = repeated = 0
    for conversation in json.loads(data.read_text()):
        asked = [qa["question"].strip().lower() for qa in conversation["qa"]]
        total += len(asked)
        repeated += len(asked) - len(set(asked))
    return {"questions": total, "repeated": repeated}


async def run(sizes: list[int], count: int) -> dict[str, Any]:
    queries = synthetic_queries(count)
    with tempfile.TemporaryDirectory() as folder:
        results = [await measure(size, queries, Path(folder)) for size in sizes]
    return {"queries": count, "sizes": results, "locomo": locomo_repeats(DEFAULT_DATA)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = anyio.run(run, [int(s) for s in args.sizes.split(",")], args.queries)
    print(f"{'memories':>9}{'embed':>8}{'recall':>9}{'again':>8}{'hit floor':>11}{'saving':>9}  (ms, p50)")
    for row in result["sizes"]:
        print(
            f"{row['memories']:>9}{row['query_embedding_ms_p50']:>8}{row['recall_ms_p50_first']:>9}"
            f"{row['recall_ms_p50_repeated']:>8}{row['cache_hit_floor_ms_p50']:>11}{row['best_saving_ms_p50']:>9}"
        )
    print(f"LoCoMo: {result['locomo']['repeated']} of {result['locomo']['questions']} questions asked twice")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
