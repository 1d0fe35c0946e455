"""What a recall's `similarity` (and so `min_similarity`) means with the shipped MiniLM: the cosine between a
question and the turns that answer it, next to the cosine of the best turns for questions the memory cannot
answer, and what each threshold keeps and drops.

Run: `uv run python bench/similarity.py [--conversations 0-2] [--out results.json]`. LoCoMo's conversations are
stored as bench/locomo.py stores them; each answerable question (categories 1-4) is embedded and compared with
its evidence turns, exactly as the engine embeds them (`producer: content`); then off-topic questions (below:
nothing in a chat between two friends answers them) and LoCoMo's questions recall with each threshold. A
threshold drops only memories found by meaning alone; keyword matches stay.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.locomo import DEFAULT_DATA, ingest, load_data, parse_indices  # noqa: E402
from mcp_memory.config import Config  # noqa: E402
from mcp_memory.episodes import embedding_text  # noqa: E402
from mcp_memory.manager import MemoryManager  # noqa: E402
from mcp_memory.models import ReadOptions  # noqa: E402
from mcp_memory.recall.request import RecallRequest  # noqa: E402

THRESHOLDS = (-1.0, 0.1, 0.2, 0.3, 0.4, 0.5)
LIMIT = 5
OFF_TOPIC = (
    "What is the boiling point of tungsten?",
    "How do I configure a Kubernetes ingress controller?",
    "Which year did the Byzantine empire fall?",
    "What is the derivative of the natural logarithm?",
    "How many moons does Neptune have?",
    "What port does PostgreSQL listen on by default?",
    "Explain the rules of cricket's leg before wicket",
    "What is the capital of Burkina Faso?",
    "How do you compile a Rust crate for WebAssembly?",
    "Who wrote the Critique of Pure Reason?",
    "What is the half-life of carbon 14?",
    "How is a mortgage amortization schedule computed?",
    "qwerty zxcvb asdfgh",
    "What torque should the wheel nuts of a truck have?",
    "What is the airspeed velocity of an unladen swallow?",
    "Which enzyme breaks down lactose?",
    "How does TCP congestion control work?",
    "What is the melting point of gallium?",
    "Who won the 1966 football world cup?",
    "What does the sqlite-vec vec0 table store?",
)


def percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(array, q)), 3) for q in (5, 10, 25, 50, 75, 90, 95)} | {
        "n": len(values)
    }


async def measure(data: Path, indices: list[int]) -> dict[str, Any]:
    conversations = load_data(data, indices)
    with tempfile.TemporaryDirectory() as folder:
        config = Config(db_path=Path(folder) / "memory.db", embedder="local", log_level="WARNING")
        async with MemoryManager(config) as manager:
            embed = manager.embedder.embed
            evidence_cosines: list[float] = []
            for conversation in conversations:
                await ingest(manager, conversation)
                turns = {
                    m["metadata"]["dia_id"]: embedding_text(m["producer"], m["content"])
                    for session in conversation.sessions
                    for m in session.memories
                }
                for question in conversation.questions:
                    texts = [turns[d] for d in question.evidence if d in turns]
                    if not texts:
                        continue
                    vectors = embed([question.text, *texts])
                    evidence_cosines += [float(v) for v in vectors[1:] @ vectors[0]]
            off_topic_top: list[float] = []
            kept: dict[float, dict[str, float]] = {}
            for threshold in THRESHOLDS:
                options = ReadOptions(min_similarity=threshold)
                off_hits = answerable_hits = answerable = 0
                for conversation in conversations:
                    for query in OFF_TOPIC:
                        result = await manager.memories.recall(
                            RecallRequest(
                                group_id=conversation.group_id, query=query, limit=LIMIT, options=options
                            )
                        )
                        off_hits += len(result.hits)
                        if threshold == THRESHOLDS[0]:
                            off_topic_top += [
                                h.similarity for h in result.hits[:1] if h.similarity is not None
                            ]
                    for question in conversation.questions:
                        result = await manager.memories.recall(
                            RecallRequest(
                                group_id=conversation.group_id,
                                query=question.text,
                                limit=LIMIT,
                                options=options,
                            )
                        )
                        answerable_hits += len(result.hits)
                        answerable += 1
                kept[threshold] = {
                    "off_topic_hits_per_recall": round(off_hits / (len(OFF_TOPIC) * len(conversations)), 2),
                    "answerable_hits_per_recall": round(answerable_hits / answerable, 2),
                }
    return {
        "limit": LIMIT,
        "evidence_cosine": percentiles(evidence_cosines),
        "off_topic_top_hit_cosine": percentiles(off_topic_top),
        "by_threshold": {str(t): v for t, v in kept.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--conversations", type=parse_indices, default=parse_indices("0-2"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = anyio.run(measure, args.data, args.conversations)
    print(f"cosine of a question to a turn that answers it: {report['evidence_cosine']}")
    print(f"cosine of an off-topic question's best turn:    {report['off_topic_top_hit_cosine']}")
    print(f"\nhits per recall at limit {LIMIT} (keyword matches always stay)")
    print(f"{'min_similarity':<16}{'off-topic':>10}{'answerable':>12}")
    for threshold, row in report["by_threshold"].items():
        print(f"{threshold:<16}{row['off_topic_hits_per_recall']:>10}{row['answerable_hits_per_recall']:>12}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
