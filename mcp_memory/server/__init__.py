"""The MCP surface: the only package that imports `mcp`.

    app.py        MemoryServer (strict arguments, short answers, error categories), build_server, lifespan
    tools.py      the tools: each checks nothing itself, calls the manager and returns a model
    resources.py  the memory:// resources
    prompts.py    prompts a person picks (recall a topic, summarise a session, review facts)
    render.py     the short text the model reads for each result (structured content keeps every field)
    store/sqlite/migrations.py     lean input schemas: every conversation pays for them in tokens
    arguments.py  arguments read strictly, pydantic's verdicts in the server's words
    stdio.py      stdio that answers every request line, whatever it holds

Nothing here imports the manager, the store or numpy at import time: the handshake is answered while
the manager starts beside it (app.py).
"""

from __future__ import annotations

from mcp_memory.server.app import INSTRUCTIONS, MemoryServer, build_server

__all__ = ["INSTRUCTIONS", "MemoryServer", "build_server"]
