"""What a recall costs in the conversation: the tokens of the text the `recall` tool answers with, per hit,
next to the tokens of the memories it carries and of the pretty-printed JSON it used to answer with.

Run: `uv run python bench/recall_text.py [--conversations 0-1] [--neighbours N] [--out results.json]`. LoCoMo's turns (one
memory per turn, as bench/locomo.py stores them) and its questions, asked through a real in-process MCP
client at limit 5 and 10; o200k_base tokens, counted offline. With `--neighbours N` each hit comes with its
N turns before and after (`options.neighbours`), and the figures count them: a hit's text and memory tokens
include its context's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.locomo import DEFAULT_DATA, load_data, parse_indices  # noqa: E402
from mcp_memory.config import Config  # noqa: E402
from mcp_memory.server import build_server  # noqa: E402
from mcp_memory.tokens import token_counter  # noqa: E402

LIMITS = (5, 10)


async def seed(client: Client, conversation: Any) -> None:
    await client.call_tool(
        "create_group", {"group_id": conversation.group_id, "user_ids": conversation.speakers}
    )
    for session in conversation.sessions:
        await client.call_tool(
            "open_session", {"group_id": conversation.group_id, "session_id": session.session_id}
        )
        memories = [
            {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in m.items()}
            for m in session.memories
        ]
        await client.call_tool(
            "add_memory",
            {"group_id": conversation.group_id, "session_id": session.session_id, "memories": memories},
        )


async def measure(data: Path, indices: list[int], neighbours: int = 0) -> dict[str, Any]:
    count = token_counter().count
    rows: dict[int, list[dict[str, float]]] = {limit: [] for limit in LIMITS}
    with tempfile.TemporaryDirectory() as folder:
        config = Config(db_path=Path(folder) / "memory.db", embedder="hashing", log_level="WARNING")
        async with Client(build_server(config)) as client:
            for conversation in load_data(data, indices):
                await seed(client, conversation)
                for question in conversation.questions:
                    for limit in LIMITS:
                        arguments = {
                            "group_id": conversation.group_id,
                            "query": question.text,
                            "limit": limit,
                        }
                        if neighbours:
                            arguments["options"] = {"neighbours": neighbours}
                        result = await client.call_tool("recall", arguments)
                        hits = result.structured_content["hits"]  # type: ignore[index]
                        if not hits:
                            continue
                        rows[limit].append(
                            {
                                "hits": len(hits),
                                "text": count(result.content[0].text),  # type: ignore[union-attr]
                                "memories": sum(count(h["content"]) for h in hits)
                                + sum(count(t["content"]) for h in hits for t in h["context"]),
                                "context": sum(len(h["context"]) for h in hits),
                                "pretty_json": count(json.dumps(result.structured_content, indent=2)),
                            }
                        )
    return {f"k{limit}": _summary(rows[limit]) for limit in LIMITS}


def _summary(rows: list[dict[str, float]]) -> dict[str, float]:
    hits = sum(r["hits"] for r in rows)
    return {
        "recalls": len(rows),
        "context_turns_per_hit": sum(r["context"] for r in rows) / hits,
        "text_tokens_per_hit": sum(r["text"] for r in rows) / hits,
        "memory_tokens_per_hit": sum(r["memories"] for r in rows) / hits,
        "pretty_json_tokens_per_hit": sum(r["pretty_json"] for r in rows) / hits,
        "text_over_memory_median": statistics.median(r["text"] / r["memories"] for r in rows),
        "text_over_memory_max": max(r["text"] / r["memories"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--conversations", type=parse_indices, default=parse_indices("0-1"))
    parser.add_argument("--neighbours", type=int, default=0, help="turns before and after each hit (0-5)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    summary = anyio.run(measure, args.data, args.conversations, args.neighbours)
    print(
        f"{'limit':<7}{'recalls':>8}{'context/hit':>12}{'text/hit':>10}{'memory/hit':>12}{'old JSON/hit':>14}{'text/memory p50':>17}{'max':>7}"
    )
    for key, s in summary.items():
        print(
            f"{key:<7}{s['recalls']:>8}{s['context_turns_per_hit']:>12.2f}{s['text_tokens_per_hit']:>10.1f}{s['memory_tokens_per_hit']:>12.1f}"
            f"{s['pretty_json_tokens_per_hit']:>14.1f}{s['text_over_memory_median']:>17.2f}{s['text_over_memory_max']:>7.2f}"
        )
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
