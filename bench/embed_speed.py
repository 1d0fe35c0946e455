"""Time the local MiniLM embedder: model load, single-query latency and batch throughput.

Run with ``uv run python bench/embed_speed.py [--turns 500] [--out results.json]``. Thread counts are
inherited from the environment (e.g. OPENBLAS_NUM_THREADS=1) so settings can be compared; ``--contend``
keeps one CPU busy with a spinning subprocess during the measurements, as a busy laptop would.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcp_memory.embeddings import MiniLMEmbedder  # noqa: E402

SUBJECTS = ["I", "we", "my manager", "the team", "our client", "you", "the new intern", "my sister"]
VERBS = ["need to", "decided to", "want to", "forgot to", "promised to", "will try to", "should"]
ACTIONS = [
    "move the deploy to Friday",
    "rewrite the billing service in Go",
    "book flights to Lisbon for the conference",
    "review the pull request about caching",
    "switch the database from Postgres to SQLite",
    "prepare slides for the quarterly planning meeting",
    "fix the flaky integration test on CI",
    "call the dentist about the appointment",
]
TAILS = [
    "because the staging cluster keeps timing out",
    "before the end of the sprint",
    "so that the numbers are ready for the board",
    "after we talk to the security team",
    "unless the budget gets approved this week",
    "and let everyone know in the channel",
]
QUERIES = ["when is the deploy?", "what did we decide about the database", "flights to Lisbon"]
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def synthetic_turns(count: int, seed: int = 7) -> list[str]:
    """Deterministic short conversational turns of roughly 15-25 words."""
    rng = random.Random(seed)
    turns = []
    for _ in range(count):
        parts = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(ACTIONS), rng.choice(TAILS)]
        if rng.random() < 0.5:
            parts.append("— " + rng.choice(TAILS))
        turns.append(" ".join(parts) + ".")
    return turns


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def time_load(embedder: MiniLMEmbedder) -> float:
    """Seconds to load tokenizer and weights."""
    start = time.perf_counter()
    embedder.load()
    return time.perf_counter() - start


def time_queries(embedder: MiniLMEmbedder, repeats: int) -> list[float]:
    """Milliseconds per single-text embed call, after one warm-up."""
    embedder.embed([QUERIES[0]])
    samples = []
    for i in range(repeats):
        start = time.perf_counter()
        embedder.embed([QUERIES[i % len(QUERIES)]])
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def time_batch(embedder: MiniLMEmbedder, turns: list[str], rounds: int) -> float:
    """Best turns/second over a few rounds of embedding all turns in one call."""
    embedder.embed(turns[:64])
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        embedder.embed(turns)
        best = min(best, time.perf_counter() - start)
    return len(turns) / best


def start_spinner() -> subprocess.Popen[bytes]:
    """A subprocess that keeps one CPU core busy until terminated."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run(args: argparse.Namespace) -> dict[str, object]:
    """Run every measurement (optionally next to a spinning process) and return the results."""
    spinner = start_spinner() if args.contend else None
    try:
        return measure(args)
    finally:
        if spinner is not None:
            spinner.terminate()
            spinner.wait()


def measure(args: argparse.Namespace) -> dict[str, object]:
    """Load time, single-query latency and batch throughput as a dict."""
    embedder = MiniLMEmbedder(batch_size=args.batch_size)
    turns = synthetic_turns(args.turns)
    load_s = time_load(embedder)
    latencies = time_queries(embedder, args.queries)
    tokens = [len(ids) for ids in embedder._get_model().tokenize(turns)]
    return {
        "load_s": round(load_s, 3),
        "query_ms_p50": round(statistics.median(latencies), 2),
        "query_ms_p95": round(percentile(latencies, 95), 2),
        "batch_turns_per_s": round(time_batch(embedder, turns, args.rounds), 1),
        "turns": len(turns),
        "mean_words_per_turn": round(statistics.mean(len(t.split()) for t in turns), 1),
        "mean_tokens_per_turn": round(statistics.mean(tokens), 1),
        "batch_size": args.batch_size,
        "contended": args.contend,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "threads": {name: os.environ.get(name, "") for name in THREAD_VARS},
    }


def print_table(results: dict[str, object]) -> None:
    """Print the results as a two-column table."""
    for key, value in results.items():
        print(f"{key:<22} {value}")


def main() -> None:
    """Parse arguments, run the benchmark, print and optionally save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5, help="batch rounds; the best one is reported")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--contend", action="store_true", help="keep one CPU busy while measuring")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON to this path")
    args = parser.parse_args()
    results = run(args)
    print_table(results)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
