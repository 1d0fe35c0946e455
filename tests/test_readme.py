"""The README's Python example runs as written: a real database in a temporary folder, the shipped MiniLM."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

pytestmark = pytest.mark.anyio


def python_example() -> str:
    section = README.read_text().split("## Use it from Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's Python section has no code block"
    return match.group(1)


async def test_the_python_example_runs_and_finds_what_it_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    source = "async def example():\n" + textwrap.indent(python_example(), "    ")
    namespace: dict[str, object] = {}
    exec(compile(source, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    await namespace["example"]()  # type: ignore[operator]
    assert capsys.readouterr().out == "I moved to Lisbon in March\n"
    assert (tmp_path / "memory.db").exists()
