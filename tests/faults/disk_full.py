"""Fill a small tmpfs with memories until SQLite reports the disk full, then free space and write again.

Run as `unshare -rm python -m tests.faults.disk_full FOLDER` (a private mount namespace, so the tmpfs
vanishes with the process). Prints one JSON line: what was acknowledged, what failed, and what another
connection reads afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import sqlean  # type: ignore[import-untyped]

from mcp_memory.store.records import NewEpisode
from mcp_memory.store.sqlite.store import Store
from tests.helpers import seed_store

TMPFS_SIZE = "4m"
FILLER_BYTES = 256 * 1024


def episode(i: int) -> NewEpisode:
    content = f"turn {i} " + os.urandom(600).hex()
    return NewEpisode(
        "u",
        "user",
        None,
        content,
        "message",
        0.5,
        "{}",
        "2024-01-01T00:00:00+00:00",
        float(i),
        content[:24],
        None,
    )


def add(store: Store, i: int) -> int:
    batch = store.insert_episodes(
        "g", "s", [episode(i)], np.ones((1, 4), np.float32), index_vectors=True,
        created_at="2024-01-01T00:00:00+00:00", retry_window_start="2023-01-01T00:00:00+00:00",
    )  # fmt: skip
    return batch.items[0].id


def other_connection(path: Path) -> tuple[set[int], str]:
    with closing(sqlean.connect(str(path))) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM episodes")}
        return ids, conn.execute("PRAGMA integrity_check").fetchone()[0]


def main(folder: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(folder)], check=True)
    store = Store(folder / "m.db", embedder_name="test", dimension=4)
    seed_store(store)
    filler = folder / "filler"
    filler.write_bytes(b"x" * FILLER_BYTES)
    acknowledged: list[int] = []
    errors: list[str] = []
    for i in range(10_000):
        try:
            acknowledged.append(add(store, i))
        except Exception as exc:  # noqa: BLE001 - what fails is what we report
            errors.append(f"{type(exc).__name__}: {exc}")
            if len(errors) == 3:
                break
    left_open = store._conn().in_transaction  # noqa: SLF001
    filler.unlink()
    after = add(store, 10_000)
    store.close()
    ids, integrity = other_connection(folder / "m.db")
    print(json.dumps({
        "acknowledged": acknowledged, "errors": errors, "left_open": left_open,
        "after": after, "stored": sorted(ids), "integrity": integrity,
    }))  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]))
