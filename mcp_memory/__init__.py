"""mcp_memory: a long memory for LLM clients, over MCP."""

__version__ = "0.1.0"
