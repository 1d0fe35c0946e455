"""Prompts a person picks from the client's menu. Each one reads the memory first and hands the model
what it found, with the tool call that finishes the job, so one pick does what would take a person
several instructions."""

from __future__ import annotations

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage

from mcp_memory.recall.request import RecallRequest
from mcp_memory.server.access import manager_of, prompt_errors
from mcp_memory.server.render import memory_line, render

PROMPT_RECALL_LIMIT = 20


def register_prompts(server: MCPServer) -> None:
    @server.prompt(title="What do we know about...")
    @prompt_errors
    async def recall_topic(group_id: str, topic: str, ctx: Context) -> list[UserMessage]:
        """Recall everything the memory holds about a topic and answer from it."""
        found = await (await manager_of(ctx)).memories.recall(
            RecallRequest(group_id=group_id, query=topic, limit=PROMPT_RECALL_LIMIT)
        )
        memories = render("recall", found.model_dump(mode="json"))
        return [
            UserMessage(
                f"What do we know about {topic}? Answer from these memories of the group {group_id!r}, citing "
                f"their #ids, and say plainly what they do not tell. If they are not enough, call recall with "
                f"other words.\n\n{memories}"
            )
        ]

    @server.prompt(title="Summarise this session")
    @prompt_errors
    async def summarize_conversation(group_id: str, session_id: str, ctx: Context) -> list[UserMessage]:
        """Summarise a session from its latest turns and store the summary."""
        detail = await (await manager_of(ctx)).memories.session_detail(group_id, session_id)
        turns = "\n".join(memory_line(e.model_dump(mode="json")) for e in detail.recent) or "(no turns yet)"
        earlier = f"Earlier in the session: {detail.rolling_summary}\n" if detail.rolling_summary else ""
        return [
            UserMessage(
                f"Summarise session {session_id!r} of group {group_id!r}: its topic, what was done and the "
                f"outcome. Then store it with summarize_session(group_id={group_id!r}, session_id={session_id!r}, "
                f'summary={{"topic": ..., "action": ..., "outcome": ...}}).\n\n{earlier}Latest turns:\n{turns}'
            )
        ]

    @server.prompt(title="Review facts about...")
    @prompt_errors
    async def review_facts(group_id: str, subject: str, ctx: Context) -> list[UserMessage]:
        """Review what the memory holds as facts about a subject, with their history."""
        listed = await (await manager_of(ctx)).facts.list_facts(group_id, subject=subject)
        lines = [
            f"#{f.id} {f.subject} / {f.predicate} / {f.object}"
            + (" (current)" if f.current else f" (until {f.valid_to:%Y-%m-%d})" if f.valid_to else "")
            for f in listed.facts
        ]
        facts = "\n".join(lines) or "(no facts yet)"
        return [
            UserMessage(
                f"Review these facts about {subject} in group {group_id!r}. Which still hold? Which contradict "
                f"each other or what we said lately? Propose corrections as add_fact calls (replace=true when a "
                f"value changed), and ask me before storing them.\n\n{facts}"
            )
        ]
