"""Token counting with tiktoken, offline.

`tiktoken.get_encoding` downloads its BPE files on first use, and nothing may download
here. The o200k_base and cl100k_base files ship in `mcp_memory/data/` (the files OpenAI
publishes for tiktoken, MIT licensed), checked against tiktoken's own SHA-256 hashes
before use. If a file cannot be read, counting falls back to characters/4, which is off
by up to 4x on code and non-Latin text, so it says so (`exact` is False) and logs it once.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_ENCODING = "o200k_base"
ENDOFTEXT = "<|endoftext|>"
ENDOFPROMPT = "<|endofprompt|>"

# The split patterns and special tokens below are tiktoken's own (tiktoken_ext/openai_public.py),
# which builds them only next to a download; the hashes are the ones it checks.
_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""


@dataclass(frozen=True)
class _Spec:
    sha256: str
    pattern: str
    special_tokens: dict[str, int]


ENCODINGS: dict[str, _Spec] = {
    "o200k_base": _Spec(
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        _O200K_PATTERN,
        {ENDOFTEXT: 199999, ENDOFPROMPT: 200018},
    ),
    "cl100k_base": _Spec(
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        _CL100K_PATTERN,
        {
            ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            ENDOFPROMPT: 100276,
        },
    ),  # fmt: skip
}


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of text; `exact` is False for the characters/4 fallback."""

    name: str
    exact: bool
    _encoding: Any = None

    def count(self, text: str) -> int:
        if self._encoding is None:
            return math.ceil(len(text) / 4)
        return len(self._encoding.encode(text, disallowed_special=()))


@functools.cache
def token_counter(name: str = DEFAULT_ENCODING, data_dir: Path = DATA_DIR) -> TokenCounter:
    """The counter for an encoding, loaded once from the shipped file; an unknown name is a ValueError."""
    spec = ENCODINGS.get(name)
    if spec is None:
        raise ValueError(f"unknown token encoding {name!r}; use one of {', '.join(ENCODINGS)}")
    try:
        return TokenCounter(name, True, _load(name, spec, data_dir / f"{name}.tiktoken"))
    except (OSError, ValueError) as exc:
        log.warning(
            "cannot load the %s token encoding (%s); counting tokens as characters/4, an estimate", name, exc
        )
        return TokenCounter(f"{name} (estimate: characters/4)", False)


def _load(name: str, spec: _Spec, path: Path) -> Any:
    import tiktoken

    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != spec.sha256:
        raise ValueError(f"{path} does not have the expected SHA-256; reinstall mcp-memory")
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }
    return tiktoken.Encoding(
        name, pat_str=spec.pattern, mergeable_ranks=ranks, special_tokens=spec.special_tokens
    )
