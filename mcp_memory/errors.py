"""The exceptions mcp_memory raises; each message says what to do next.

Every error a tool can meet is a `MemoryServerError`, and its class names a stable `category`, the
first word of the message the model reads (`not_found: group 'g' does not exist; ...`), so a client can
tell a missing thing from a bad argument without parsing the text:

    invalid      an argument cannot work as sent; nothing was written
    not_found    a group, session, memory or task does not exist
    conflict     it exists already, is in use, or a key was reused for other memories
    limit        a limit was reached (the lightweight summaries of a session)
    unavailable  a dependency cannot serve now: the database, the language model, a closed server
    denied       the caller's token does not allow it (a scope it lacks, a group it may not use)
"""

from __future__ import annotations

from typing import ClassVar


class MemoryServerError(Exception):
    """Base class of every error this package raises on purpose."""

    category: ClassVar[str] = "invalid"


class ConfigurationError(MemoryServerError, ValueError):
    """The configuration or environment cannot work as given."""


class ValidationFailed(MemoryServerError, ValueError):
    """An argument is invalid; nothing was written."""


class FactNotNewer(ValidationFailed):
    """A fact would replace a current one that became valid after it; nothing was stored. (A fact stamped
    "now" meets this only when another server stored its replacement in between: it is stamped again.)"""


class InvalidSummary(MemoryServerError, ValueError):
    """A summary (from the LLM or the caller) does not have the required shape; nothing was stored."""


class GroupNotFound(MemoryServerError, LookupError):
    """The group does not exist."""

    category = "not_found"


class SessionNotFound(MemoryServerError, LookupError):
    """The session does not exist in its group."""

    category = "not_found"


class MemoryNotFound(MemoryServerError, LookupError):
    """No memory with that id exists in the group."""

    category = "not_found"


class TaskNotFound(MemoryServerError, LookupError):
    """No task has that id (it never existed, or it finished long ago and expired)."""

    category = "not_found"


class NoEpisodes(MemoryServerError, LookupError):
    """The session has no episodes to summarise."""

    category = "not_found"


class GroupExists(MemoryServerError, ValueError):
    """A group with that id already exists (with other participants or configuration)."""

    category = "conflict"


class SessionExists(MemoryServerError, ValueError):
    """A session with that id already exists in its group."""

    category = "conflict"


class SessionInUse(MemoryServerError, RuntimeError):
    """The session still has open references."""

    category = "conflict"


class IdempotencyConflict(MemoryServerError, ValueError):
    """An idempotency key was sent again with other memories than the first time."""

    category = "conflict"


class RateLimited(MemoryServerError, RuntimeError):
    """The session has used all its lightweight summaries."""

    category = "limit"


class StoreError(MemoryServerError, RuntimeError):
    """The database cannot be opened, migrated or written."""

    category = "unavailable"


class ExtensionLoadError(StoreError):
    """No SQLite driver here can load the sqlite-vec extension."""


class EmbedderMismatch(StoreError):
    """The database was built with another embedder or dimension."""


class AccessDenied(MemoryServerError, PermissionError):
    """The authenticated principal may not do this: its token lacks the scope, or the group is not its own."""

    category = "denied"


class ManagerClosed(MemoryServerError, RuntimeError):
    """The memory manager has been shut down."""

    category = "unavailable"


class LLMError(MemoryServerError, RuntimeError):
    """A language model request failed or no language model is available."""

    category = "unavailable"


class LLMNotConfigured(LLMError):
    """No LLM endpoint is configured and the client offers no sampling."""


class ExtractionFailed(LLMError):
    """Facts could not be extracted from text: the language model failed or its answer was unusable."""


class EmbeddingError(RuntimeError):
    """An embedding backend failed or returned vectors that cannot be used (recall falls back to keywords)."""


CATEGORIES = ("invalid", "not_found", "conflict", "limit", "unavailable", "denied", "internal")
"""The category words, in the order of the docstring; `internal` marks a bug (the server's log has it)."""
