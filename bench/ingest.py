"""Ingest throughput: memories per second through ``manager.memories.add_memories``, with and without embedding.

Run with ``uv run python bench/ingest.py [--scale 1.0] [--embedder local]``.

Each run stores synthetic conversational turns (15-25 words, seeded; see bench/scale.py) in a fresh
database, through the public path the ``add_memory`` tool takes: 1 memory per call ("single"), 100
per call and 1000 per call. "embedding" uses the default local embedder (all-MiniLM-L6-v2 on onnxruntime,
one thread as the server sets it, loaded and warmed before timing); "none" stores into a session
configured ``{"long_term": {"enabled": false}}``, so no vector is computed (counted, to be sure).
Prints a table and writes bench/results/ingest.json. Goal: at least 100 memories/s with the local
embedder in batch mode on 2 cores.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # as the server does
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import RESULTS, print_table, write_result  # noqa: E402
from bench.scale import AGENTS, GROUP, USERS, latency_summary, memories, synthetic_turns  # noqa: E402
from mcp_memory.config import Config  # noqa: E402
from mcp_memory.llm.embeddings import Embedder, make_embedder  # noqa: E402
from mcp_memory.manager import MemoryManager  # noqa: E402

BATCHES = (1, 100, 1000)
# Memories per run at --scale 1: enough calls for steady numbers, a few minutes in all on 2 cores.
COUNTS = {
    ("embedding", 1): 300,
    ("embedding", 100): 2000,
    ("embedding", 1000): 3000,
    ("none", 1): 3000,
    ("none", 100): 20000,
    ("none", 1000): 20000,
}
NO_VECTORS = {"long_term": {"enabled": False}}
GOAL_PER_S = 100.0


class CountingEmbedder:
    """Passes calls through to an embedder, counting the texts and the seconds spent embedding."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.texts = 0
        self.seconds = 0.0
        self._lock = threading.Lock()

    def load(self) -> None:
        load = getattr(self.inner, "load", None)
        if callable(load):
            load()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        start = time.perf_counter()
        vectors = self.inner.embed(texts)
        with self._lock:
            self.seconds += time.perf_counter() - start
            self.texts += len(texts)
        return vectors

    def reset(self) -> None:
        self.texts, self.seconds = 0, 0.0


async def one_run(embedder: CountingEmbedder, mode: str, batch: int, count: int) -> dict[str, Any]:
    """Store ``count`` memories ``batch`` at a time in a fresh database; returns the timings."""
    turns = synthetic_turns(seed=101 + batch)
    items = memories(turns, count + 1, 0)
    warm, items = items[:1], items[1:]
    with tempfile.TemporaryDirectory(prefix="mcp-memory-ingest-") as tmp:
        config = Config(db_path=Path(tmp) / "memory.db", embedder="local")
        async with MemoryManager(config, embedder=embedder) as manager:
            await manager.groups.create_group(GROUP, user_ids=USERS, agent_ids=AGENTS)
            configuration = NO_VECTORS if mode == "none" else None
            async with manager.sessions.created(GROUP, "s", configuration=configuration):
                await manager.memories.add_memories(
                    GROUP, "s", warm
                )  # first write: pages, statements, threads
                embedder.reset()
                calls: list[float] = []
                pending = 0
                started = time.perf_counter()
                for i in range(0, len(items), batch):
                    t0 = time.perf_counter()
                    result = await manager.memories.add_memories(GROUP, "s", items[i : i + batch])
                    calls.append((time.perf_counter() - t0) * 1000)
                    pending += result.embedding_pending
                    assert result.stored == len(items[i : i + batch]), result
                wall = time.perf_counter() - started
            stats = await manager.upkeep.stats()
    return {
        "embedding": mode,
        "batch": batch,
        "memories": len(items),
        "calls": len(calls),
        "seconds": round(wall, 3),
        "memories_per_s": round(len(items) / wall, 1),
        "call_ms": latency_summary(calls),
        "texts_embedded": embedder.texts,
        "embed_seconds": round(embedder.seconds, 3),
        "embed_share": round(embedder.seconds / wall, 3),
        "batches_left_pending": pending,
        "pending_vectors": stats.pending_vectors,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    inner, warning = make_embedder(args.embedder)
    if warning:
        print(f"WARNING: {warning}")
    embedder = CountingEmbedder(inner)
    load_s = time.perf_counter()
    embedder.load()
    embedder.embed(["warm up the embedder before timing"])
    load_s = time.perf_counter() - load_s
    sample = list(itertools.islice(synthetic_turns(seed=101), 2000))
    runs = []
    for mode in ("embedding", "none"):
        for batch in BATCHES:
            count = max(batch, round(COUNTS[(mode, batch)] * args.scale / batch) * batch)
            label = f"{mode}, {batch} per call"
            print(f"{label}: {count:,} memories ...", flush=True)
            runs.append(await one_run(embedder, mode, batch, count))
            print(f"  {runs[-1]['memories_per_s']:,.1f} memories/s", flush=True)
    goals = [
        {
            "goal": f"{r['batch']} per call with {embedder.name}: >= {GOAL_PER_S:g} memories/s",
            "measured": r["memories_per_s"],
            "met": r["memories_per_s"] >= GOAL_PER_S,
        }
        for r in runs
        if r["embedding"] == "embedding" and r["batch"] > 1
    ]
    return {
        "parameters": {"scale": args.scale, "batches": list(BATCHES), "embedder_requested": args.embedder},
        "embedder": embedder.name,
        "embedder_warning": warning,
        "embedder_load_s": round(load_s, 2),
        "mean_words_per_memory": round(statistics.mean(len(t.split()) for t in sample), 1),
        "runs": runs,
        "goals": goals,
    }


def print_results(result: dict[str, Any]) -> None:
    print_table(
        ["embedding", "per call", "memories", "seconds", "memories/s", "call p50 ms", "call p95 ms",
         "embedded", "embed share"],
        [
            [f"{result['embedder']}" if r["embedding"] == "embedding" else "none (long_term off)", r["batch"],
             r["memories"], r["seconds"], r["memories_per_s"], r["call_ms"]["p50"], r["call_ms"]["p95"],
             r["texts_embedded"], f"{r['embed_share']:.0%}"]
            for r in result["runs"]
        ],
        f"add_memories throughput ({result['mean_words_per_memory']} words per memory on average; "
        f"embedder loaded in {result['embedder_load_s']} s, not counted)",
    )  # fmt: skip
    print_table(
        ["goal", "measured", "met"], [[g["goal"], g["measured"], g["met"]] for g in result["goals"]], "goals"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the memories per run (0.1: quick)")
    parser.add_argument(
        "--embedder", default="local", choices=("local", "hashing"), help="the embedding runs"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "ingest.json", help="where to write the JSON")
    args = parser.parse_args(argv)
    started, load = time.perf_counter(), os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = anyio.run(run, args)
    result["load_average_1m_at_start"] = load
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    print_results(result)
    path = write_result("ingest", result, args.out)
    print(f"\nwrote {path} in {result['elapsed_s']} s")


if __name__ == "__main__":
    main()
