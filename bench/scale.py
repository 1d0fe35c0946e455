"""Recall latency at 1k, 10k and 100k memories in one group, against exact numpy search, and resident memory.

Run with ``uv run python bench/scale.py [--max-size 100000] [--queries 200] [--profile]``.

Everything goes through the project's public code path: memories are written with
``MemoryManager.add_memories`` (batches of 1000, spread over a handful of sessions) and read back
with ``MemoryManager.recall``. The scale runs use the deterministic hashing embedder so that
ingest is fast; query vectors are computed once up front, so every timing below excludes the
query embedding (MiniLM's query embedding is timed on its own, in a fresh process).

At each size it times, per query:
  * the engine's vector search (the entry point recall uses), unfiltered and filtered to one session;
  * the exact answer by numpy brute force (matrix-vector product over the same vectors, read back
    from the database), the physical reference: ours / numpy is reported, and recall@10 of our
    vector search against the exact top 10;
  * the BM25 keyword search alone: the engine's (the in-memory copy of the index recall uses) and
    FTS5's own bm25() over the same index, with how many queries they rank alike;
  * ``manager.recall`` end to end (unfiltered and one session).
Before timing, the engine's background loads (vectors, keyword index) are waited for.
Resident memory (VmRSS, and the peak VmHWM) is read in a fresh process on the largest database:
idle with the database open, then after the group's search is warmed, then with MiniLM loaded.
Prints tables and writes bench/results/scale.json; ``--max-size 1000000`` adds the 1M step.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # as the server does
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pstats  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Mapping, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import RESULTS, print_table, write_result  # noqa: E402
from mcp_memory.config import Config  # noqa: E402
from mcp_memory.llm.embeddings import HashingEmbedder  # noqa: E402
from mcp_memory.manager import MemoryManager  # noqa: E402
from mcp_memory.recall.engine import CANDIDATES_PER_RESULT, MIN_CANDIDATES, RecallQuery  # noqa: E402
from mcp_memory.recall.request import RecallRequest  # noqa: E402
from mcp_memory.store.sqlite.fts import fts_query  # noqa: E402
from mcp_memory.store.sqlite.store import Filters  # noqa: E402

GROUP = "bench"
USERS = ["maya", "tom", "lena"]
AGENTS = ["assistant"]
SIZES = (1_000, 10_000, 100_000, 1_000_000)
BATCH = 1000
LIMIT = 10
START = datetime(2024, 1, 1, tzinfo=UTC)
# Goals from the issue, query embedding excluded: p50 of the vector search and of the whole recall
# (keyword and vector search, fusion, reading the hits), and recall@10 against exact search.
GOALS = ({"size": 100_000, "target_ms": 15.0, "min_recall": 0.98}, {"size": 10_000, "target_ms": 3.0})
LOAD_WAIT_S = 300.0

# -- synthetic conversation -------------------------------------------------------------------

NAMES = """Maya Tom Lena Omar Priya Jonas Aiko Carlos Fatima Noah Sofia Ravi Elena Marcus Hana Diego
Ingrid Kwame Chloe Yusuf Greta Mateo Nadia Felix Amara Liam Zoe Hugo Leila Ben""".split()
PLACES = """the office, the airport, Lisbon, the gym, the farmers market, grandma's house, the dentist,
the coffee shop, Berlin, the library, the train station, the beach, the school, the clinic, the garage,
Tokyo, the bakery, the hospital, the park, the conference, the hotel, the client site, the warehouse,
the museum, Seattle, the cabin, the stadium, the pharmacy, the bank, the hardware store""".replace(
    "\n", " "
).split(", ")
THINGS = """laptop invoice contract bicycle recipe passport budget report deadline apartment lease
sofa guitar camera visa flight ticket dashboard database migration prototype roadmap presentation
playlist garden printer router thermostat insurance claim tax return wedding gift birthday cake
vaccine appointment blood test car battery kitchen sink puppy training course offer letter
spreadsheet heater dishwasher backpack novel podcast telescope suitcase""".split()
ADJECTIVES = """new old broken expensive cheap urgent boring tricky shiny quiet noisy huge tiny
overdue delayed surprising confusing handmade second-hand vintage fragile heavy spare missing
borrowed signed unsigned encrypted outdated reliable""".split()
ACTIONS = [
    "cancel the subscription", "call the landlord", "book a table", "renew the insurance",
    "fix the leaking tap", "send the quarterly numbers", "order new tyres", "water the plants",
    "pick up the kids", "update the firmware", "file the expense report", "practice the speech",
    "return the rental car", "schedule a vet visit", "pay the electricity bill", "back up the photos",
    "finish the chapter", "repaint the fence", "change the password", "ask for a refund",
    "migrate the mailing list", "rewrite the onboarding guide", "sell the old couch",
    "buy groceries for the week", "plan the team offsite", "test the new release",
    "clean out the garage", "compare mortgage offers", "write the thank-you notes", "learn some Portuguese",
]  # fmt: skip
TIMES = [
    "tomorrow morning", "on Monday", "next weekend", "before Friday", "after lunch", "tonight",
    "in two weeks", "by the end of the month", "on Thursday evening", "next spring", "this afternoon",
    "before the holidays", "after the meeting", "first thing on Tuesday", "over the summer",
]  # fmt: skip
FEELINGS = """great awful stressful relaxing exhausting fun weird disappointing exciting fine
frustrating hilarious calm chaotic""".split()
TEMPLATES = [
    "{name} told me the {adj} {thing} at {place} was {feeling}, so we should {action} {time}.",
    "I spent {n} hours at {place} with {name} trying to {action}, and honestly it felt {feeling}.",
    "Can you remind me to {action} {time}? {name} says the {adj} {thing} is still at {place}.",
    "We decided to {action} {time} because the {adj} {thing} from {place} keeps causing trouble.",
    "My favourite part of the trip to {place} was the {adj} {thing} that {name} found {time}.",
    "{name} and I could not agree whether to {action} or to {action2} before we go to {place}.",
    "Note for later: the {thing} cost {n} dollars at {place}, and {name} thinks it is {adj}.",
    "Yesterday {name} finally managed to {action}; the {thing} was {adj} but the day was {feeling}.",
    "Please keep in mind that {name} is allergic to the {thing} and wants to {action} {time}.",
    "The {adj} {thing} arrived at {place} {time}, so {name} asked me to {action} right away.",
]
TAILS = [
    " {name2} promised to help with it.",
    " I will ask {name2} about it {time2}.",
    " It is the {n2}th time this happened.",
    " {name2} was there too and found it {feeling2}.",
]
QUERY_TEMPLATES = [
    "what did {name} say about the {thing}?",
    "when do I need to {action}?",
    "the {adj} {thing} at {place}",
    "who went to {place} {time}?",
    "how much did the {thing} cost",
    "did we decide to {action}",
]


def _slots(rng: random.Random) -> dict[str, Any]:
    name, name2 = rng.sample(NAMES, 2)
    action, action2 = rng.sample(ACTIONS, 2)
    return {
        "name": name,
        "name2": name2,
        "place": rng.choice(PLACES),
        "thing": rng.choice(THINGS),
        "adj": rng.choice(ADJECTIVES),
        "action": action,
        "action2": action2,
        "time": rng.choice(TIMES),
        "time2": rng.choice(TIMES),
        "feeling": rng.choice(FEELINGS),
        "feeling2": rng.choice(FEELINGS),
        "n": rng.randint(2, 99),
        "n2": rng.randint(3, 20),
    }


def synthetic_turns(seed: int = 11) -> Iterator[str]:
    """An endless, seeded stream of short conversational turns (about 15-25 words each)."""
    rng = random.Random(seed)
    while True:
        slots = _slots(rng)
        text = rng.choice(TEMPLATES).format(**slots)
        tail = rng.choice(TAILS).format(**slots)
        if len(text.split()) < 15 or (rng.random() < 0.4 and len((text + tail).split()) <= 25):
            text += tail
        yield text[0].upper() + text[1:]


def synthetic_queries(count: int, seed: int = 23) -> list[str]:
    """Short questions about the same kind of things the turns talk about."""
    rng = random.Random(seed)
    return [rng.choice(QUERY_TEMPLATES).format(**_slots(rng)) for _ in range(count)]


def memories(turns: Iterator[str], count: int, first_index: int) -> list[dict[str, Any]]:
    """``count`` add_memories items: users and the assistant alternate, one turn a minute or so."""
    items = []
    for i in range(first_index, first_index + count):
        user = USERS[(i // 2) % len(USERS)]
        producer, role = (user, "user") if i % 2 == 0 else ("assistant", "assistant")
        moment = START + timedelta(seconds=47 * i)
        items.append(
            {"content": next(turns), "producer": producer, "role": role, "timestamp": moment.isoformat()}
        )
    return items


# -- pure helpers -----------------------------------------------------------------------------


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50, p95 and mean of latency samples in milliseconds (linear interpolation, as numpy)."""
    if not samples_ms:
        return {"p50": math.nan, "p95": math.nan, "mean": math.nan, "n": 0}
    values = np.asarray(samples_ms, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(values, 50)), 3),
        "p95": round(float(np.percentile(values, 95)), 3),
        "mean": round(float(values.mean()), 3),
        "n": len(values),
    }


def recall_at_k(
    found: Sequence[int], exact: Sequence[int], scores: Mapping[int, float], k: int, tol: float = 1e-5
) -> float:
    """The share of the exact top k that ``found`` recovered, counting ties with the k-th as correct.

    ``exact`` is the true ranking (best first) and ``scores`` the true similarity of every id in
    ``found`` and ``exact``: a found id scoring within ``tol`` of the exact k-th is as good as it,
    so equal-score neighbours returned in another order are not counted as misses.
    """
    truth = list(exact[:k])
    if not truth:
        return 1.0
    threshold = scores[truth[-1]] - tol
    unique = list(dict.fromkeys(found[:k]))
    hits = sum(1 for i in unique if scores.get(i, -math.inf) >= threshold)
    return min(hits, len(truth)) / len(truth)


def top_k(matrix: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (cosine, for unit rows): ids and scores, best first."""
    scores = matrix @ query
    k = min(k, len(scores))
    if k == 0:
        return ids[:0], scores[:0]
    part = np.argpartition(-scores, k - 1)[:k]
    order = part[np.argsort(-scores[part], kind="stable")]
    return ids[order], scores[order]


def read_status_mb() -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak resident) of this process in MiB, from /proc/self/status."""
    found: dict[str, float] = {}
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = round(int(value.split()[0]) / 1024, 1)
    return found


# -- the run ----------------------------------------------------------------------------------


class PrecomputedQueries:
    """The hashing embedder, answering the benchmark's queries from vectors computed up front."""

    def __init__(self, inner: HashingEmbedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.vectors: dict[str, np.ndarray] = {}

    def precompute(self, texts: Sequence[str]) -> None:
        for text, vector in zip(texts, self.inner.embed(list(texts)), strict=True):
            self.vectors[text] = vector

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 1 and texts[0] in self.vectors:
            return self.vectors[texts[0]][None, :]
        return self.inner.embed(texts)


@dataclass
class Exact:
    """The group's vectors as one float32 matrix, with their episode ids and sessions."""

    ids: np.ndarray
    sessions: np.ndarray
    matrix: np.ndarray
    _position: dict[int, int] | None = None

    @classmethod
    def read(cls, manager: MemoryManager) -> Exact:
        rows = manager.engine.store.read(
            "SELECT rowid, session_id, embedding FROM episode_vectors WHERE group_id = ?", (GROUP,)
        )
        dim = manager.embedder.dimension
        matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), dim)
        return cls(
            np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows]), matrix.copy()
        )

    def subset(self, session_id: str) -> Exact:
        mask = self.sessions == session_id
        return Exact(self.ids[mask], self.sessions[mask], np.ascontiguousarray(self.matrix[mask]))

    def scores_of(self, query: np.ndarray, wanted: Sequence[int]) -> dict[int, float]:
        """The exact similarity of each wanted id to the query (ids not in this set are left out)."""
        if self._position is None:
            self._position = {int(i): n for n, i in enumerate(self.ids)}
        rows = [(int(i), self._position[int(i)]) for i in wanted if int(i) in self._position]
        scores = self.matrix[[r for _, r in rows]] @ query
        return {i: float(score) for (i, _), score in zip(rows, scores, strict=True)}


def vector_search_entry(manager: MemoryManager) -> tuple[Callable[..., list[tuple[int, float]]], str]:
    """The vector search recall runs: the engine's own method when it has one, else the store's."""
    engine = manager.engine
    for owner in (engine, engine.store):
        method = getattr(owner, "vector_search", None)
        if callable(method):
            return method, f"{type(owner).__name__}.vector_search"
    raise RuntimeError("neither the engine nor the store has a vector_search method")


def config_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` settings for Config fields (e.g. ``vector_cache_mb=0``), cast like each default."""
    defaults = Config()
    names = {f.name for f in dataclasses.fields(Config)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in names:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(names))}")
        default = getattr(defaults, key)
        if isinstance(default, bool):
            out[key] = raw.lower() in ("1", "true", "yes", "on")
        elif isinstance(default, int | float):
            out[key] = type(default)(raw)
        else:
            out[key] = raw
    return out


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000, result


async def timed_async(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await fn()
    return (time.perf_counter() - start) * 1000, result


async def ingest(
    manager: MemoryManager, turns: Iterator[str], sessions: Sequence[str], have: int, want: int
) -> float:
    """Add memories until the group holds ``want``; returns the seconds spent in add_memories."""
    spent = 0.0
    while have < want:
        count = min(BATCH, want - have)
        batch = memories(turns, count, have)
        session = sessions[(have // BATCH) % len(sessions)]
        start = time.perf_counter()
        await manager.memories.add_memories(GROUP, session, batch)
        spent += time.perf_counter() - start
        have += count
    return spent


async def measure_size(
    manager: MemoryManager,
    queries: Sequence[str],
    embedder: PrecomputedQueries,
    session: str,
    warmup: int,
    baseline_queries: int,
) -> dict[str, Any]:
    """Every per-query timing at the current size, and recall@10 against exact."""
    search, entry = vector_search_entry(manager)
    pool = max(MIN_CANDIDATES, LIMIT * CANDIDATES_PER_RESULT)  # the candidate pool recall asks for
    loads_s = await wait_for_loads(manager)
    read_ms, exact = timed(lambda: Exact.read(manager))
    exact_session = exact.subset(session)
    vectors = [embedder.vectors[q] for q in queries]
    store = manager.engine.store
    one_session = Filters(session_id=session)

    def run(fn: Callable[[int], Any], count: int = len(queries)) -> tuple[list[float], list[Any]]:
        for i in range(min(warmup, count)):
            fn(i)
        samples, outputs = [], []
        for i in range(count):
            ms, out = timed(partial(fn, i))
            samples.append(ms)
            outputs.append(out)
        return samples, outputs

    ours_ms, ours = run(lambda i: search(GROUP, vectors[i], Filters(), pool))
    numpy_ms, truth = run(lambda i: top_k(exact.matrix, exact.ids, vectors[i], pool))
    f_ours_ms, f_ours = run(lambda i: search(GROUP, vectors[i], one_session, pool))
    f_numpy_ms, f_truth = run(lambda i: top_k(exact_session.matrix, exact_session.ids, vectors[i], pool))
    engine = manager.engine
    keyword_ms, keyword = run(lambda i: engine.keyword_search(GROUP, queries[i], Filters(), pool))
    n_fts = min(len(queries), max(baseline_queries, 1))
    fts_ms, fts_found = run(
        lambda i: store.keyword_search(GROUP, fts_query(queries[i]) or "x", Filters(), pool), n_fts
    )
    overlap = [top_overlap(a, b) for a, b in zip(keyword, fts_found, strict=False)]
    baseline = None
    if not entry.startswith("Store.") and baseline_queries > 0:  # what the engine's own search replaces
        n = min(baseline_queries, len(queries))
        base_ms, base = run(lambda i: store.vector_search(GROUP, vectors[i], Filters(), pool), n)

    def recalls(found: list[Any], exact_out: list[Any], source: Exact) -> list[float]:
        values = []
        for i, (hits, (true_ids, _)) in enumerate(zip(found, exact_out, strict=True)):
            ours_ids = [h[0] for h in hits][:LIMIT]
            true_top = [int(x) for x in true_ids[:LIMIT]]
            scores = source.scores_of(vectors[i], ours_ids + true_top)
            values.append(recall_at_k(ours_ids, true_top, scores, LIMIT))
        return values

    unfiltered_recall = recalls(ours, truth, exact)
    filtered_recall = recalls(f_ours, f_truth, exact_session)
    if not entry.startswith("Store.") and baseline_queries > 0:
        baseline = {
            "entry_point": "Store.vector_search (sqlite-vec)",
            "vector_search_ms": latency_summary(base_ms),
            "recall_at_10": round(float(np.mean(recalls(base, truth[:n], exact))), 4),
        }

    async def run_recall(session_id: str | None) -> list[float]:
        for q in queries[:warmup]:
            await manager.memories.recall(
                RecallRequest(group_id=GROUP, query=q, session_id=session_id, limit=LIMIT)
            )
        samples = []
        for q in queries:
            ms, _ = await timed_async(
                partial(
                    manager.memories.recall,
                    RecallRequest(group_id=GROUP, query=q, session_id=session_id, limit=LIMIT),
                )
            )
            samples.append(ms)
        return samples

    recall_ms = await run_recall(None)
    f_recall_ms = await run_recall(session)
    vector, reference = latency_summary(ours_ms), latency_summary(numpy_ms)
    f_vector, f_reference = latency_summary(f_ours_ms), latency_summary(f_numpy_ms)
    return {
        "size": int(len(exact.ids)),
        "vector_search_ms": vector,
        "numpy_exact_ms": reference,
        "ratio_p50": round(vector["p50"] / reference["p50"], 2),
        "ratio_p95": round(vector["p95"] / reference["p95"], 2),
        "recall_at_10": round(float(np.mean(unfiltered_recall)), 4),
        "recall_at_10_min": round(float(np.min(unfiltered_recall)), 4),
        "keyword_search_ms": latency_summary(keyword_ms),
        "keyword_entry_point": "in-memory index" if engine.keywords is not None else "FTS5",
        "fts5_keyword_ms": latency_summary(fts_ms),
        "keyword_top10_overlap_with_fts5": round(float(np.mean(overlap)), 4),
        "recall_ms": latency_summary(recall_ms),
        "filtered": {
            "filter": f"session_id={session}",
            "memories": int(len(exact_session.ids)),
            "vector_search_ms": f_vector,
            "numpy_exact_ms": f_reference,
            "ratio_p50": round(f_vector["p50"] / f_reference["p50"], 2),
            "recall_at_10": round(float(np.mean(filtered_recall)), 4),
            "recall_at_10_min": round(float(np.min(filtered_recall)), 4),
            "recall_ms": latency_summary(f_recall_ms),
        },
        "sqlite_vec": baseline,
        "read_vectors_ms": round(read_ms, 1),
        "background_loads_s": loads_s,
    }


def top_overlap(
    ours: Sequence[tuple[int, float]], fts5: Sequence[tuple[int, float]], k: int = LIMIT
) -> float:
    """The share of FTS5's top k that the in-memory index also ranks in its top k (its idf is Lucene's, not
    FTS5's: recall/keywords.py)."""
    theirs = {i for i, _ in fts5[:k]}
    return len(theirs & {i for i, _ in ours[:k]}) / len(theirs) if theirs else 1.0


async def wait_for_loads(manager: MemoryManager) -> float:
    """Wait until the group's vectors and the keyword index are in memory (loaded in the background
    past 20k rows); returns the seconds waited."""
    engine, started = manager.engine, time.perf_counter()
    while time.perf_counter() - started < LOAD_WAIT_S:
        vectors = engine.cache is None or engine._cached_group(GROUP) is not None
        keywords = engine.keywords is None or engine.keywords.current(GROUP) is not None
        if vectors and keywords:
            break
        await anyio.sleep(0.2)
    return round(time.perf_counter() - started, 2)


def profile_recall(manager: MemoryManager, queries: Sequence[str], top: int = 20) -> dict[str, Any]:
    """cProfile of the engine's recall (the body of manager.recall, run on this thread) over the queries."""
    engine = manager.engine
    engine.recall(RecallQuery(GROUP, queries[0], limit=LIMIT))
    profiler = cProfile.Profile()
    profiler.enable()
    for q in queries:
        engine.recall(RecallQuery(GROUP, q, limit=LIMIT))
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream).sort_stats("tottime")
    stats.print_stats(top)
    rows = []
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({
            "function": f"{Path(file).name}:{line}({func})",
            "calls": calls,
            "tottime_ms_per_query": round(tottime * 1000 / len(queries), 3),
            "cumtime_ms_per_query": round(cumtime * 1000 / len(queries), 3),
        })  # fmt: skip
    rows.sort(key=lambda r: -r["tottime_ms_per_query"])
    return {"queries": len(queries), "top_by_own_time": rows[:top], "text": stream.getvalue()}


def probe(
    db_path: Path, queries: Sequence[str], minilm_queries: int, settings: Sequence[str]
) -> dict[str, Any]:
    """In a fresh process on the database: RSS idle, after the first recall (which loads the group's
    search), after more recalls, and with MiniLM loaded too, as a server holds both; MiniLM's query
    embedding is timed here, on its own."""
    result: dict[str, Any] = {"after_imports": read_status_mb()}

    async def recalls() -> None:
        config = Config(db_path=db_path, embedder="hashing", **config_overrides(settings))
        manager = await MemoryManager(config, embedder=HashingEmbedder()).start()
        result["idle"] = read_status_mb()
        first_ms, _ = await timed_async(
            lambda: manager.memories.recall(RecallRequest(group_id=GROUP, query=queries[0], limit=LIMIT))
        )
        result["first_recall_ms"] = round(first_ms, 1)
        result["after_first_recall"] = read_status_mb()
        for q in queries[1:]:
            await manager.memories.recall(RecallRequest(group_id=GROUP, query=q, limit=LIMIT))
        result["loads_s"] = await wait_for_loads(manager)  # both copies in memory before "warm" is read
        first_warm_ms, _ = await timed_async(
            lambda: manager.memories.recall(RecallRequest(group_id=GROUP, query=queries[0], limit=LIMIT))
        )
        result["first_recall_after_loads_ms"] = round(first_warm_ms, 1)
        result["warm"] = read_status_mb()
        result["warm_recalls"] = len(queries)
        result["minilm_query_ms"] = time_minilm(queries, minilm_queries)
        if "skipped" not in result["minilm_query_ms"]:
            result["with_minilm"] = read_status_mb()
        await manager.shutdown()

    anyio.run(recalls)
    return result


def time_minilm(queries: Sequence[str], count: int) -> dict[str, Any]:
    """Load MiniLM (the default embedder) and time single-query embeddings, after one warm-up."""
    try:
        from mcp_memory.llm.embeddings import MiniLMEmbedder

        minilm = MiniLMEmbedder()
        load_ms, _ = timed(minilm.load)
    except (FileNotFoundError, ImportError) as exc:
        return {"skipped": str(exc)}
    minilm.embed([queries[0]])
    samples = [timed(partial(minilm.embed, [q]))[0] for q in (list(queries) * 4)[:count]]
    return {**latency_summary(samples), "load_ms": round(load_ms, 1)}


def run_probe(
    db_path: Path, warm_queries: int, minilm_queries: int, settings: Sequence[str]
) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--probe", str(db_path), "--queries", str(warm_queries),
         "--minilm-queries", str(minilm_queries), *(f"--set={s}" for s in settings)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [s for s in SIZES if s <= args.max_size]
    sessions = [f"s{i}" for i in range(args.sessions)]
    queries = synthetic_queries(args.queries)
    embedder = PrecomputedQueries(HashingEmbedder())
    hashing_ms = [timed(partial(embedder.inner.embed, [q]))[0] for q in queries]
    embedder.precompute(queries)
    turns = synthetic_turns()
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mcp-memory-scale-") as tmp:
        db_path = Path(tmp) / "memory.db"
        config = Config(db_path=db_path, embedder="hashing", **config_overrides(args.set))
        manager = await MemoryManager(config, embedder=embedder).start()
        rss_empty = read_status_mb()
        await manager.groups.create_group(GROUP, user_ids=USERS, agent_ids=AGENTS)
        for session in sessions:
            await manager.sessions.open_session(GROUP, session, mode="create")
        have = 0
        for size in sizes:
            print(f"ingesting up to {size:,} memories ...", flush=True)
            spent = await ingest(manager, turns, sessions, have, size)
            ingested = size - have
            have = size
            print(f"measuring {len(queries)} queries at {size:,} ...", flush=True)
            started = time.perf_counter()
            step = await measure_size(
                manager, queries, embedder, sessions[0], args.warmup, args.baseline_queries
            )
            step["ingest"] = {
                "memories": ingested,
                "seconds": round(spent, 2),
                "memories_per_s": round(ingested / spent, 1),
            }
            step["measure_s"] = round(time.perf_counter() - started, 1)
            steps.append(step)
            print_step(step)
        if args.profile:
            result["profile"] = profile_recall(manager, queries[: args.profile_queries])
            print(f"\nprofile of engine.recall at {have:,} memories, {args.profile_queries} queries:")
            print(result["profile"].pop("text"))
        rss_bench = read_status_mb()
        entry = vector_search_entry(manager)[1]
        for session in sessions:
            await manager.sessions.close_session(GROUP, session)
        await manager.shutdown()
        print(f"resident memory: fresh process on the {have:,}-memory database ...", flush=True)
        probed = run_probe(db_path, min(50, len(queries)), args.minilm_queries, args.set)
        db_bytes = db_path.stat().st_size + sum(p.stat().st_size for p in Path(tmp).glob("memory.db-*"))
    result.update({
        "parameters": {
            "sizes": sizes, "queries": len(queries), "warmup": args.warmup, "sessions": len(sessions),
            "batch": BATCH, "limit": LIMIT, "candidate_pool": max(MIN_CANDIDATES, LIMIT * CANDIDATES_PER_RESULT),
            "embedder": embedder.name, "vector_search_entry_point": entry, "config": args.set,
        },
        "sizes": steps,
        "query_embedding_ms": {"hashing": latency_summary(hashing_ms), "minilm": probed.pop("minilm_query_ms", None)},
        "rss_mb": {"bench_process_empty_db": rss_empty, "bench_process_end": rss_bench,
                   "fresh_process": probed, "largest_size": have},
        "database_mb": round(db_bytes / 2**20, 1),
        "goals": goals(steps),
    })  # fmt: skip
    return result


def goals(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    by_size = {s["size"]: s for s in steps}
    out = []
    for goal in GOALS:
        step = by_size.get(goal["size"])
        if step is None:
            continue
        for key, what in (("vector_search_ms", "vector search"), ("recall_ms", "whole recall")):
            p50 = step[key]["p50"]
            out.append({
                "goal": f"{goal['size']:,}: {what} p50 <= {goal['target_ms']:g} ms",
                "size": goal["size"], "target_ms": goal["target_ms"], "measured": p50,
                "met": p50 <= goal["target_ms"], "what": what,
            })  # fmt: skip
        if "min_recall" in goal:
            out.append({
                "goal": f"{goal['size']:,}: recall@10 vs exact >= {goal['min_recall']}",
                "size": goal["size"], "measured": step["recall_at_10"],
                "met": step["recall_at_10"] >= goal["min_recall"],
            })  # fmt: skip
    return out


def print_step(step: Mapping[str, Any]) -> None:
    f = step["filtered"]
    rows = [
        ["vector search (ours)", step["vector_search_ms"]["p50"], step["vector_search_ms"]["p95"], step["recall_at_10"]],
        ["numpy exact", step["numpy_exact_ms"]["p50"], step["numpy_exact_ms"]["p95"], 1.0],
        *([["sqlite-vec alone (store)", b["vector_search_ms"]["p50"], b["vector_search_ms"]["p95"], b["recall_at_10"]]]
          if (b := step.get("sqlite_vec")) else []),
        ["keyword search (BM25, ours)", step["keyword_search_ms"]["p50"], step["keyword_search_ms"]["p95"], None],
        ["keyword search (FTS5 bm25 alone)", step["fts5_keyword_ms"]["p50"], step["fts5_keyword_ms"]["p95"], None],
        ["manager.recall", step["recall_ms"]["p50"], step["recall_ms"]["p95"], None],
        [f"vector search, {f['filter']}", f["vector_search_ms"]["p50"], f["vector_search_ms"]["p95"], f["recall_at_10"]],
        [f"numpy exact, {f['filter']}", f["numpy_exact_ms"]["p50"], f["numpy_exact_ms"]["p95"], 1.0],
        [f"manager.recall, {f['filter']}", f["recall_ms"]["p50"], f["recall_ms"]["p95"], None],
    ]  # fmt: skip
    title = (
        f"{step['size']:,} memories (ingest {step['ingest']['memories_per_s']:,.0f}/s with hashing; "
        f"ours/numpy p50 {step['ratio_p50']}x, p95 {step['ratio_p95']}x)"
    )
    print_table(["query", "p50 ms", "p95 ms", "recall@10"], rows, title)


def print_summary(result: Mapping[str, Any]) -> None:
    print_table(
        ["memories", "ingest/s", "vector p50", "vector p95", "numpy p50", "numpy p95", "ratio p50",
         "recall@10", "filtered p50", "recall p50", "recall p95"],
        [
            [s["size"], s["ingest"]["memories_per_s"], s["vector_search_ms"]["p50"], s["vector_search_ms"]["p95"],
             s["numpy_exact_ms"]["p50"], s["numpy_exact_ms"]["p95"], s["ratio_p50"], s["recall_at_10"],
             s["filtered"]["vector_search_ms"]["p50"], s["recall_ms"]["p50"], s["recall_ms"]["p95"]]
            for s in result["sizes"]
        ],
        "summary (ms; query embedding excluded)",
    )  # fmt: skip
    embed = result["query_embedding_ms"]
    rows = [["hashing", embed["hashing"]["p50"], embed["hashing"]["p95"]]]
    minilm = embed.get("minilm") or {}
    if "p50" in minilm:
        rows.append(["MiniLM (default)", minilm["p50"], minilm["p95"]])
    print_table(["query embedding", "p50 ms", "p95 ms"], rows, "query embedding, timed on its own")
    rss = result["rss_mb"]
    fresh, size = rss["fresh_process"], f"{rss['largest_size']:,}"
    labels = {
        "idle": f"fresh process, {size}-memory database open (idle)",
        "after_first_recall": f"after its first recall ({fresh.get('first_recall_ms', '?')} ms; starts loading the vectors)",
        "warm": f"after {fresh.get('warm_recalls', '?')} recalls and the background loads ({fresh.get('loads_s', '?')} s)",
        "with_minilm": "warm, plus MiniLM loaded (as the default server)",
    }
    rows = [["bench process, empty database", *_rss(rss["bench_process_empty_db"])]]
    rows += [[label, *_rss(fresh[key])] for key, label in labels.items() if key in fresh]
    if "error" in fresh:
        print(f"resident-memory probe failed: {fresh['error']}")
    print_table(["resident memory", "VmRSS MiB", "VmHWM (peak) MiB"], rows, "resident memory")
    if result["goals"]:
        print_table(
            ["goal", "measured", "met"],
            [[g["goal"], g["measured"], g["met"]] for g in result["goals"]],
            "goals",
        )


def _rss(status: Mapping[str, float]) -> list[float | None]:
    return [status.get("VmRSS"), status.get("VmHWM")]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-size", type=int, default=100_000, help="largest group size (1000000 adds 1M)")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per size and measure")
    parser.add_argument("--warmup", type=int, default=5, help="untimed queries before each measure")
    parser.add_argument("--sessions", type=int, default=5, help="sessions the memories are spread over")
    parser.add_argument(
        "--baseline-queries", type=int, default=50, help="queries timed on sqlite-vec alone (0: skip)"
    )
    parser.add_argument("--minilm-queries", type=int, default=100, help="MiniLM query embeddings to time")
    parser.add_argument("--profile", action="store_true", help="cProfile the recall at the largest size")
    parser.add_argument("--profile-queries", type=int, default=50)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a Config field")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json", help="where to write the JSON")
    parser.add_argument("--probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe is not None:
        print(json.dumps(probe(args.probe, synthetic_queries(args.queries), args.minilm_queries, args.set)))
        return
    started, load = time.perf_counter(), os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = anyio.run(run, args)
    result["load_average_1m_at_start"] = load
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    print_summary(result)
    path = write_result("scale", result, args.out)
    print(f"\nwrote {path} in {result['elapsed_s']} s")


if __name__ == "__main__":
    main()
