"""Write tests/data/minilm_reference.npz: varied texts and their float32 all-MiniLM-L6-v2 vectors.

    uv run python tools/minilm_reference.py --source PATH

PATH is a folder with all-MiniLM-L6-v2's ``model.safetensors`` and ``tokenizer.json`` (see
tools/build_minilm.py). The vectors come from tools/minilm_numpy.py, the float32 numpy implementation the
server used before the int8 graph, and are stored as float16 (error 5e-4, far below what the test allows).
tests/test_minilm.py checks the shipped embedder against them: cosine >= 0.99 for every text.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from minilm_numpy import MiniLMNumpy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "minilm_reference.npz"

# Edge cases: empty and blank text, symbols, code, numbers, other scripts, emoji, truncation at 256 tokens.
EDGE_CASES = [
    "",
    " ",
    "hello world",
    "This is an example sentence",
    "Each sentence is converted.",
    "Café déjà vu — 東京",
    "A man is eating food.",
    "A man is riding a horse.",
    "?!",
    "ok",
    "👍",
    "😀 🎉 🚀 — party time",
    "Привет, как дела? Встретимся завтра в 10:30.",
    "¿Dónde está la biblioteca? Está cerca del parque.",
    "Der Zug nach München fährt um 17:45 Uhr von Gleis 3 ab.",
    "東京で新しい仕事を始めました。毎日電車で通っています。",
    "我明天要去北京出差，下周一回来。",
    "مرحبا، كيف حالك اليوم؟",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "SELECT id, content FROM episodes WHERE group_id = ? ORDER BY sequence DESC LIMIT 10;",
    '{"topic": "deploy", "action": "moved to Friday", "outcome": "staging is stable"}',
    "https://github.com/modelcontextprotocol/servers/tree/main/src/memory#readme",
    "Call me at +1 (415) 555-0123 or email ana.silva@example.com",
    "Invoice #4471: 3 x 12.50 EUR = 37.50 EUR, due 2025-03-31",
    "1234567890 0987654321 3.14159 2.71828",
    "| tool | what it does |\n| --- | --- |\n| recall | hybrid search |",
    "ERROR 2025-01-07T09:13:55Z worker-3 Traceback (most recent call last): KeyError: 'session_id'",
    "lol yeah that's sooo true haha",
    "Mitochondria are the powerhouse of the cell.",
    "The mitochondria is the cell's power plant.",
    "I don't like horror movies.",
    "I love horror movies.",
    "the quarterly report shows revenue growth in every region " * 60,
    "word " * 300,
    "Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "ALL CAPS SHOUTING ABOUT THE MEETING TOMORROW",
    "    leading and trailing whitespace    ",
    "line one\nline two\n\nline four\ttabbed",
    "<html><body><p>Hello <b>there</b></p></body></html>",
    "C'est la vie, n'est-ce pas ? On verra demain.",
]

PEOPLE = [
    "Ana",
    "Caroline",
    "Melanie",
    "John",
    "Priya",
    "Tomás",
    "my sister",
    "the landlord",
    "our CTO",
    "Dr. Okafor",
]
ACTIVITIES = [
    "went hiking in the Alps",
    "started pottery classes",
    "adopted a rescue dog named Biscuit",
    "finished the marathon in under four hours",
    "moved to a flat near the river",
    "signed up for a Spanish course",
    "painted a sunset over the lake",
    "got promoted to team lead",
    "visited grandma in the hospital",
    "booked a trip to Kyoto for the cherry blossoms",
    "broke her wrist skateboarding",
    "switched the backend from Postgres to SQLite",
    "volunteered at the LGBTQ support group",
    "read 'The Midnight Library' twice",
    "lost the keys to the storage unit",
]
WHEN = [
    "last weekend",
    "on 7 May 2023",
    "yesterday",
    "two weeks ago",
    "in March",
    "the week before Christmas",
    "this morning",
    "back in 2019",
    "after the conference",
    "",
]
FEELINGS = [
    "and it felt amazing",
    "which was really stressful",
    "but honestly I'm still nervous about it",
    "so we celebrated with pizza",
    "and nobody noticed",
    "because the doctor said so",
    "",
]
QUESTIONS = [
    "What did {p} do {w}?",
    "When did {p} start {a}?",
    "Where does {p} live now?",
    "Why was {p} upset about the trip?",
    "How long has {p} been learning Spanish?",
    "Who went to the support group with {p}?",
    "what did we decide about the database",
    "when is the deploy?",
]


def conversational_turns(count: int, seed: int = 20250101) -> list[str]:
    """Chat-like turns and questions, seeded: the kind of text the server stores and recalls."""
    rng = random.Random(seed)
    texts = []
    for index in range(count):
        person, activity, when = rng.choice(PEOPLE), rng.choice(ACTIVITIES), rng.choice(WHEN)
        if index % 4 == 3:
            texts.append(rng.choice(QUESTIONS).format(p=person, w=when or "recently", a=activity))
        else:
            opener = rng.choice(["", "Guess what! ", "Hey, ", "So, ", "Honestly, ", "Oh and "])
            texts.append(f"{opener}{person} {activity} {when} {rng.choice(FEELINGS)}".strip() + ".")
    return texts


def readme_passages(count: int) -> list[str]:
    """Lines of this repository's README: prose, tables, commands, JSON."""
    lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines() if len(line.strip()) > 15]
    return lines[:count]


def reference_texts() -> list[str]:
    return EDGE_CASES + conversational_turns(160) + readme_passages(120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="folder with model.safetensors")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    texts = reference_texts()
    vectors = MiniLMNumpy(args.source).embed(texts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, texts=np.array(texts), vectors=vectors.astype(np.float16))
    print(f"{args.out}: {len(texts)} texts, {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
