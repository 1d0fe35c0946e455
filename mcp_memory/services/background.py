"""Work that outlives the request that starts it: the manager's background task group, shared by the services.

The manager's background runner (`MemoryManager.run_background`) opens the task group and hands it here;
services start jobs in it (summaries, rolling-summary passes, maintenance every N inserts). Without a runner
(a manager used from Python, or a CLI command) `start_soon` says so and the caller does without.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import anyio.abc


class Background:
    """The task group background jobs run in, while the manager's runner is running."""

    def __init__(self) -> None:
        self.group: anyio.abc.TaskGroup | None = None

    @property
    def running(self) -> bool:
        return self.group is not None

    def start_soon(
        self, job: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str | None = None
    ) -> bool:
        """Start `job(*args)` in the background; False (nothing started) when no runner is running."""
        if self.group is None:
            return False
        self.group.start_soon(job, *args, name=name)
        return True
