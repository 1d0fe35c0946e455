"""Turning an OpenAI-compatible server's error into a short message the user can act on."""

from __future__ import annotations

from typing import Any

MAX_CHARS = 300


def api_error_text(exc: Any) -> str:
    """The server's own error message from an `openai.APIStatusError` (or any exception), shortened."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body["error"] if isinstance(body.get("error"), dict) else body
        if inner.get("message"):
            return str(inner["message"])[:MAX_CHARS]
    return str(getattr(exc, "message", exc))[:MAX_CHARS]
