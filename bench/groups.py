"""Many groups in one database: what a group's recall costs when the database holds many others.

Run: `uv run python bench/groups.py [--groups 400] [--size 250] [--sample 30] [--out bench/results/groups.json]`.

One database of `--groups` groups of `--size` memories each (synthetic turns, hashing embedder, so the
numbers are the storage and the indexes, not the model), built once, then measured by a server process
that has not seen it yet (a MemoryManager in a process of its own):

  * first recall in a group this process has not touched (keyword and vector copies loaded from the file),
    p50 over `--sample` groups;
  * warm recall in those groups, p50, side by side with the same measure in a database of one group of
    `--size` (built in the same run): with per-group indexes the two should match;
  * first recall after adding a batch of `--size` memories to a new group, p50 over `--sample` new groups
    (and what the add itself took);
  * resident memory (RSS) after touching every group once, and what the keyword and vector copies hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcp_memory.config import Config  # noqa: E402
from mcp_memory.llm.embeddings import HashingEmbedder  # noqa: E402
from mcp_memory.manager import MemoryManager  # noqa: E402
from mcp_memory.recall.request import RecallRequest  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WORDS = (
    "garden lantern kite river blue notebook drawer painting sunrise lake violin candle mirror pebble hill door "
    "key pot dentist friday lisbon porto coffee tea book train station market bread cheese wine bicycle "
    "harbour letter forest ticket concert museum recipe soup cousin birthday holiday mountain beach storm"
).split()
QUERIES = [
    "blue notebook in the drawer",
    "violin by the lake",
    "train to porto on friday",
    "birthday soup recipe",
]


def turns(rng: random.Random, count: int) -> list[dict[str, Any]]:
    return [{"content": " ".join(rng.choices(WORDS, k=12)), "producer": "u"} for _ in range(count)]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def p50(samples: Sequence[float]) -> float:
    return round(statistics.median(samples), 2)


async def timed_recall(manager: MemoryManager, group_id: str, query: str) -> float:
    started = time.perf_counter()
    await manager.memories.recall(RecallRequest(group_id=group_id, query=query))
    return (time.perf_counter() - started) * 1000


def config(path: Path) -> Config:
    return Config(db_path=path, embedder="hashing")


async def build(path: Path, groups: int, size: int, seed: int) -> float:
    rng = random.Random(seed)
    started = time.perf_counter()
    async with MemoryManager(config(path), embedder=HashingEmbedder()) as manager:
        for number in range(groups):
            group_id = f"g{number:05d}"
            await manager.groups.create_group(group_id, user_ids=["u"])
            await manager.sessions.open_session(group_id, "s")
            await manager.memories.add_memories(group_id, "s", turns(rng, size))
    return time.perf_counter() - started


async def measure(path: Path, groups: int, size: int, sample: int) -> dict[str, Any]:
    rng = random.Random(5)
    chosen = [f"g{n:05d}" for n in sorted(rng.sample(range(groups), min(sample, groups)))]
    result: dict[str, Any] = {}
    async with MemoryManager(config(path), embedder=HashingEmbedder()) as manager:
        first = [await timed_recall(manager, g, QUERIES[0]) for g in chosen]
        warm = [await timed_recall(manager, g, q) for g in chosen for q in QUERIES[1:]]
        result["first_recall_untouched_group_ms"] = {"p50": p50(first), "max": round(max(first), 1)}
        result["warm_recall_ms"] = {"p50": p50(warm)}
        adds, after_add = [], []
        for number in range(min(sample, 20)):
            group_id = f"new{number:03d}"
            await manager.groups.create_group(group_id, user_ids=["u"])
            await manager.sessions.open_session(group_id, "s")
            started = time.perf_counter()
            await manager.memories.add_memories(group_id, "s", turns(rng, size))
            adds.append((time.perf_counter() - started) * 1000)
            after_add.append(await timed_recall(manager, group_id, QUERIES[1]))
        result["add_batch_ms"] = {"p50": p50(adds)}
        result["first_recall_after_batch_ms"] = {"p50": p50(after_add), "max": round(max(after_add), 1)}
        before = rss_mb()
        for number in range(groups):
            await timed_recall(manager, f"g{number:05d}", QUERIES[number % len(QUERIES)])
        engine = manager.engine
        result["rss_mb"] = {"before_touching_all": before, "after_touching_all": rss_mb()}
        result["copies_mb"] = {
            "keywords": None if engine.keywords is None else round(_nbytes(engine.keywords) / 2**20, 1),
            "vectors": None if engine.cache is None else round(engine.cache.nbytes / 2**20, 1),
            "keyword_budget": manager.config.keyword_cache_mb,
            "vector_budget": manager.config.vector_cache_mb,
        }
    return result


def _nbytes(keywords: Any) -> int:
    held = getattr(keywords, "nbytes", None)
    if held is not None:
        return int(held)
    index = getattr(keywords, "_index", None)  # the whole-table copy of earlier versions
    return 0 if index is None else int(index.nbytes)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="mcp-memory-groups-"))
    many, one = folder / "many.db", folder / "one.db"
    built_s = await build(many, args.groups, args.size, seed=1)
    await build(one, 1, args.size, seed=1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return {
        "commit": commit.stdout.strip() or None,
        "groups": args.groups,
        "size": args.size,
        "memories": args.groups * args.size,
        "build_s": round(built_s, 1),
        "database_mb": round(many.stat().st_size / 2**20, 1),
        "many_groups": measured_apart(many, args.groups, args.size, args.sample),
        "one_group": measured_apart(one, 1, args.size, args.sample),
    }


def measured_apart(path: Path, groups: int, size: int, sample: int) -> dict[str, Any]:
    """`measure` in a process of its own: a server that has not seen the file, its memory its own."""
    command = [sys.executable, __file__, "--measure", str(path), "--groups", str(groups), "--size", str(size)]
    done = subprocess.run([*command, "--sample", str(sample)], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--groups", type=int, default=400)
    parser.add_argument("--size", type=int, default=250, help="memories per group")
    parser.add_argument("--sample", type=int, default=30, help="groups timed (first and warm recall)")
    parser.add_argument("--out", type=Path, default=RESULTS / "groups.json")
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(asyncio.run(measure(args.measure, args.groups, args.size, args.sample))))
        return
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
