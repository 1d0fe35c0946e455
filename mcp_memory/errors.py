"""The exceptions mcp_memory raises; each message says what to do next.

server.py maps every `MemoryServerError` onto the SDK's `ToolError` in one place,
so the model reads these messages verbatim.
"""

from __future__ import annotations


class MemoryServerError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(MemoryServerError, ValueError):
    """The configuration or environment cannot work as given."""


class StoreError(MemoryServerError, RuntimeError):
    """The database cannot be opened, migrated or written."""


class ExtensionLoadError(StoreError):
    """No SQLite driver here can load the sqlite-vec extension."""


class EmbedderMismatch(StoreError):
    """The database was built with another embedder or dimension."""


class ValidationFailed(MemoryServerError, ValueError):
    """An argument is invalid; nothing was written."""


class GroupNotFound(MemoryServerError, LookupError):
    """The group does not exist."""


class GroupExists(MemoryServerError, ValueError):
    """A group with that id already exists."""


class SessionNotFound(MemoryServerError, LookupError):
    """The session does not exist in its group."""


class MemoryNotFound(MemoryServerError, LookupError):
    """No memory with that id exists in the group."""


class SessionExists(MemoryServerError, ValueError):
    """A session with that id already exists in its group."""


class IdempotencyConflict(MemoryServerError, ValueError):
    """An idempotency key was sent again with other memories than the first time."""


class SessionInUse(MemoryServerError, RuntimeError):
    """The session still has open references."""


class ManagerClosed(MemoryServerError, RuntimeError):
    """The memory manager has been shut down."""


class ExtractionFailed(MemoryServerError, RuntimeError):
    """Facts could not be extracted from text: the language model failed or its answer was unusable."""
