"""Token counting offline: shipped encodings, hash-checked, with a labelled fallback."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_memory.tokens import DATA_DIR, token_counter


def test_o200k_and_cl100k_give_the_published_token_ids_offline() -> None:
    assert token_counter("o200k_base")._encoding.encode("hello world") == [24912, 2375]
    assert token_counter("cl100k_base")._encoding.encode("hello world") == [15339, 1917]
    assert token_counter().exact and token_counter().name == "o200k_base"


def test_counting_needs_no_network_and_no_cache_directory(tmp_path: Path) -> None:
    script = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network is off in this test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from mcp_memory.tokens import token_counter\n"
        "print(token_counter().count('Tokens are counted without a download.'))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TIKTOKEN_CACHE_DIR": str(tmp_path / "never")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert int(out.stdout) == 7
    assert not (tmp_path / "never").exists()


def test_special_token_text_in_content_is_counted_as_text() -> None:
    assert token_counter().count("<|endoftext|>") > 1


def test_a_damaged_file_falls_back_to_a_labelled_estimate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("o200k_base", "cl100k_base"):
        shutil.copy(DATA_DIR / f"{name}.tiktoken", tmp_path / f"{name}.tiktoken")
    (tmp_path / "o200k_base.tiktoken").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING):
        counter = token_counter("o200k_base", tmp_path)
    assert not counter.exact and "estimate" in counter.name
    assert counter.count("x" * 40) == 10
    assert "expected SHA-256" in caplog.text
    assert token_counter("cl100k_base", tmp_path).exact


def test_an_unknown_encoding_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="o200k_base, cl100k_base"):
        token_counter("p50k_base")
