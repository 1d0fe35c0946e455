"""Facts: add_fact, the facts resource and recall through a real in-process MCP client; extraction
against a real loopback OpenAI-compatible server; the answer parser; the migration."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import sqlean
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcp_memory.config import Config
from mcp_memory.errors import ExtractionFailed, LLMError, ValidationFailed
from mcp_memory.llm.client import DEFAULT_LLM_MODEL, OpenAIChatLLM
from mcp_memory.llm.extraction import NOT_CONFIGURED, extract_facts, parse_triplets
from mcp_memory.manager import MemoryManager, configured_llm
from mcp_memory.models import GroupInfo
from mcp_memory.server import build_server
from mcp_memory.store.records import NewEpisode, NewFact
from mcp_memory.store.sqlite.migrations import MIGRATIONS
from mcp_memory.store.sqlite.store import Store
from tests.fake_openai import FakeOpenAI, serve
from tests.helpers import SEEDED_AT, call, call_error, seed_store

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

GROUP = "household"
SESSION = "monday"
LISBON = {"subject": "Ana", "predicate": "lives in", "object": "Lisbon"}
PORTO = {"subject": "Ana", "predicate": "lives in", "object": "Porto"}


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def llm() -> Iterator[FakeOpenAI]:
    yield from serve()


@pytest.fixture
async def llm_client(db_path: Path, llm: FakeOpenAI) -> AsyncIterator[Client]:
    """A client of a server whose LLM is the loopback fake."""
    config = Config(
        db_path=db_path,
        embedder="hashing",
        llm_base_url=llm.base_url,
        llm_api_key="sk-facts",
        llm_model="tiny-chat",
    )
    async with Client(build_server(config)) as connected:
        yield connected


async def ready(client: Client) -> None:
    """A group with users ana and bob and agent helper, and one open session."""
    await call(client, "create_group", group_id=GROUP, user_ids=["ana", "bob"], agent_ids=["helper"])
    await call(client, "open_session", group_id=GROUP, session_id=SESSION)


DETAILS = ("session_id", "source", "confidence", "valid_from")


def fact(**arguments: Any) -> dict[str, Any]:
    """add_fact's arguments as the tool takes them: where and when a fact holds go in `details`."""
    details = {name: arguments.pop(name) for name in DETAILS if name in arguments}
    return {**arguments, **({"details": details} if details else {})}


async def add_fact(client: Client, **arguments: Any) -> dict:
    return await call(client, "add_fact", group_id=GROUP, **fact(**arguments))


async def add_one(client: Client, **arguments: Any) -> dict:
    """Store one fact; returns its entry."""
    result = await add_fact(client, **arguments)
    [fact] = result["facts"]
    return fact


async def facts(client: Client, group_id: str = GROUP, **filters: str) -> dict:
    """The facts resource, with query filters."""
    query = "&".join(f"{name}={quote(value)}" for name, value in filters.items())
    uri = f"memory://groups/{group_id}/facts" + (f"?{query}" if query else "")
    result = await client.read_resource(uri, cache_mode="bypass")
    [content] = result.contents
    assert content.mime_type == "application/json"
    return json.loads(content.text)


async def objects(client: Client, **filters: str) -> list[tuple[str, bool]]:
    """(object, current) of every listed fact, in the resource's order."""
    return [(f["object"], f["current"]) for f in (await facts(client, **filters))["facts"]]


async def sessions(client: Client) -> set[str]:
    result = await client.read_resource(f"memory://groups/{GROUP}", cache_mode="bypass")
    return {s["session_id"] for s in json.loads(result.contents[0].text)["sessions"]}


async def recall(client: Client, query: str, **arguments: Any) -> list[dict]:
    return (await call(client, "recall", group_id=GROUP, query=query, **arguments))["hits"]


async def every_memory(client: Client) -> list[str]:
    """The group's memories in order (a listing: no query, so no ranking and no threshold)."""
    return [h["content"] for h in (await call(client, "recall", group_id=GROUP, limit=100))["hits"]]


async def nothing_stored(client: Client) -> bool:
    return (await facts(client))["total"] == 0 and "facts" not in await sessions(client)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def answer(items: Any) -> str:
    return json.dumps(items)


# -- storing and duplicates -----------------------------------------------------------------------


async def test_a_fact_is_stored_current_and_linked_to_a_memory_of_type_fact(client: Client) -> None:
    await ready(client)
    result = await add_fact(client, **LISBON, source="chat on monday", confidence=0.9)
    assert (result["stored"], result["duplicates"], result["replaced"]) == (1, 0, [])
    assert result["extracted"] is None and result["skipped_malformed"] is None
    [fact] = result["facts"]
    assert (fact["subject"], fact["predicate"], fact["object"]) == ("Ana", "lives in", "Lisbon")
    assert fact["current"] and fact["valid_to"] is None and not fact["duplicate"]
    assert (fact["source"], fact["confidence"]) == ("chat on monday", 0.9)
    [hit] = await recall(client, "Lisbon", filters={"memory_types": ["fact"]})
    assert hit["id"] == fact["memory_id"]
    assert (hit["content"], hit["memory_type"], hit["role"]) == ("Ana lives in Lisbon", "fact", "system")
    assert hit["metadata"] == {"fact": {"id": fact["id"], "current": True}}


async def test_the_same_triple_twice_returns_the_same_fact_marked_duplicate(client: Client) -> None:
    await ready(client)
    first = await add_one(client, **LISBON)
    again = await add_fact(client, **LISBON)
    assert (again["stored"], again["duplicates"]) == (0, 1)
    assert again["facts"][0]["id"] == first["id"] and again["facts"][0]["duplicate"]
    assert (await facts(client))["total"] == 1
    assert len(await recall(client, "Lisbon", filters={"memory_types": ["fact"]})) == 1


async def test_a_triple_differing_only_in_case_and_spacing_is_the_same_fact(client: Client) -> None:
    await ready(client)
    first = await add_one(client, **LISBON)
    again = await add_one(client, subject="  ana ", predicate="LIVES \t  in", object="lisbon\n")
    assert again["id"] == first["id"] and again["duplicate"]
    assert (again["subject"], again["predicate"], again["object"]) == ("Ana", "lives in", "Lisbon")


async def test_inner_whitespace_is_collapsed_in_the_stored_text(client: Client) -> None:
    await ready(client)
    fact = await add_one(client, subject=" Bob ", predicate="works\tat", object="the   harbour ")
    assert (fact["subject"], fact["predicate"], fact["object"]) == ("Bob", "works at", "the harbour")


async def test_without_replace_a_second_value_is_kept_beside_the_first(client: Client) -> None:
    await ready(client)
    await add_fact(client, subject="Ana", predicate="likes", object="tea")
    second = await add_fact(client, subject="Ana", predicate="likes", object="coffee")
    assert second["replaced"] == []
    assert sorted(await objects(client)) == [("coffee", True), ("tea", True)]


async def test_a_fact_without_a_session_goes_to_the_groups_facts_session_created_on_demand(
    client: Client,
) -> None:
    await ready(client)
    assert "facts" not in await sessions(client)
    fact = await add_one(client, **LISBON)
    assert fact["session_id"] is None
    assert "facts" in await sessions(client)
    [hit] = await recall(client, "Lisbon")
    assert hit["session_id"] == "facts"


async def test_a_fact_learned_in_a_session_is_stored_in_that_session(client: Client) -> None:
    await ready(client)
    fact = await add_one(client, **LISBON, session_id=SESSION)
    assert fact["session_id"] == SESSION
    [hit] = await recall(client, "Lisbon")
    assert hit["id"] == fact["memory_id"] and hit["session_id"] == SESSION
    assert "facts" not in await sessions(client)


async def test_facts_are_kept_per_group(client: Client) -> None:
    await ready(client)
    await call(client, "create_group", group_id="other", user_ids=["ana"])
    mine = await add_one(client, **LISBON)
    theirs = await call(client, "add_fact", group_id="other", **LISBON)
    assert theirs["facts"][0]["id"] != mine["id"] and not theirs["facts"][0]["duplicate"]
    assert (await facts(client, group_id="other"))["total"] == 1


# -- replace and history --------------------------------------------------------------------------


async def test_replace_closes_the_old_fact_at_the_new_ones_valid_from_and_keeps_it_as_history(
    client: Client,
) -> None:
    await ready(client)
    lisbon = await add_one(client, **LISBON, valid_from="2024-01-01T00:00:00Z")
    moved = await add_fact(client, **PORTO, valid_from="2025-03-01T12:00:00Z", replace=True)
    porto = moved["facts"][0]
    assert moved["replaced"] == [lisbon["id"]] and porto["current"]
    listed = (await facts(client))["facts"]
    assert [(f["object"], f["current"]) for f in listed] == [("Porto", True), ("Lisbon", False)]
    assert when(listed[1]["valid_to"]) == when("2025-03-01T12:00:00+00:00") == when(porto["valid_from"])
    assert when(listed[1]["valid_from"]) == when("2024-01-01T00:00:00+00:00")


async def test_replace_without_valid_from_closes_the_old_fact_now(client: Client) -> None:
    await ready(client)
    await add_fact(client, **LISBON)
    porto = await add_one(client, **PORTO, replace=True)
    lisbon = (await facts(client))["facts"][1]
    assert lisbon["object"] == "Lisbon" and lisbon["valid_to"] == porto["valid_from"]


async def test_replace_only_closes_facts_of_the_same_subject_and_predicate(client: Client) -> None:
    await ready(client)
    await add_fact(client, **LISBON)
    await add_fact(client, subject="Bob", predicate="lives in", object="Faro")
    await add_fact(client, subject="Ana", predicate="works in", object="Lisbon")
    moved = await add_fact(client, **PORTO, replace=True)
    assert len(moved["replaced"]) == 1
    assert await objects(client, subject="Bob") == [("Faro", True)]
    assert await objects(client, predicate="works in") == [("Lisbon", True)]


async def test_replace_with_the_current_value_closes_the_others_and_returns_it(client: Client) -> None:
    await ready(client)
    tea = await add_one(client, subject="Ana", predicate="likes", object="tea")
    coffee = await add_one(client, subject="Ana", predicate="likes", object="coffee")
    result = await add_fact(client, subject="ana", predicate="likes", object="TEA", replace=True)
    assert result["facts"][0]["id"] == tea["id"] and result["facts"][0]["duplicate"]
    assert result["replaced"] == [coffee["id"]]
    assert await objects(client) == [("tea", True), ("coffee", False)]


async def test_moving_back_makes_a_new_current_fact_and_keeps_the_whole_history(client: Client) -> None:
    await ready(client)
    first = await add_one(client, **LISBON, valid_from="2020-01-01T00:00:00Z")
    await add_fact(client, **PORTO, valid_from="2022-01-01T00:00:00Z", replace=True)
    back = await add_one(client, **LISBON, valid_from="2024-01-01T00:00:00Z", replace=True)
    assert back["id"] != first["id"] and not back["duplicate"]
    assert await objects(client) == [("Lisbon", True), ("Porto", False), ("Lisbon", False)]


async def test_replace_before_the_current_facts_valid_from_is_refused_and_stores_nothing(
    client: Client,
) -> None:
    await ready(client)
    await add_fact(client, **LISBON, valid_from="2025-01-01T00:00:00Z")
    text = await call_error(
        client, "add_fact", group_id=GROUP, **fact(**PORTO, valid_from="2020-01-01T00:00:00Z", replace=True)
    )
    assert "valid_from" in text and "pass a later valid_from" in text and "nothing was stored" in text
    assert await objects(client) == [("Lisbon", True)]
    assert await every_memory(client) == ["Ana lives in Lisbon"]


# -- the facts resource ---------------------------------------------------------------------------


async def test_the_facts_template_is_listed_with_its_query_variables(client: Client) -> None:
    templates = {t.uri_template: t for t in (await client.list_resource_templates()).resource_templates}
    template = templates["memory://groups/{group_id}/facts{?subject,predicate}"]
    assert template.mime_type == "application/json" and template.description


async def test_the_resource_filters_by_subject_and_predicate_in_any_case_and_spacing(
    client: Client,
) -> None:
    await ready(client)
    await add_fact(client, **LISBON, valid_from="2024-01-01T00:00:00Z")
    await add_fact(client, **PORTO, valid_from="2025-01-01T00:00:00Z", replace=True)
    await add_fact(client, subject="Ana", predicate="likes", object="tea")
    await add_fact(client, subject="Bob", predicate="lives in", object="Faro")
    history = await facts(client, subject="ANA", predicate="lives  In")
    assert [(f["object"], f["current"]) for f in history["facts"]] == [("Porto", True), ("Lisbon", False)]
    assert history["total"] == 2
    assert sorted(await objects(client, subject="ana")) == [("Lisbon", False), ("Porto", True), ("tea", True)]
    assert sorted(await objects(client, predicate="lives in")) == [
        ("Faro", True),
        ("Lisbon", False),
        ("Porto", True),
    ]
    assert (await facts(client))["total"] == 4
    assert (await facts(client, subject="nobody"))["facts"] == []


async def test_the_resource_lists_current_facts_first_then_the_most_recently_replaced(
    client: Client,
) -> None:
    await ready(client)
    await add_fact(client, **LISBON, valid_from="2020-01-01T00:00:00Z")
    await add_fact(client, **PORTO, valid_from="2021-01-01T00:00:00Z", replace=True)
    await add_fact(client, **{**LISBON, "object": "Faro"}, valid_from="2022-01-01T00:00:00Z", replace=True)
    await add_fact(client, **{**LISBON, "object": "Braga"}, valid_from="2023-01-01T00:00:00Z")
    assert await objects(client) == [("Braga", True), ("Faro", True), ("Porto", False), ("Lisbon", False)]


async def test_an_empty_filter_means_no_filter(client: Client) -> None:
    await ready(client)
    await add_fact(client, **LISBON)
    assert (await facts(client, subject="", predicate=""))["total"] == 1


async def test_a_subject_that_looks_like_a_path_can_be_a_filter(client: Client) -> None:
    await ready(client)
    await add_fact(client, subject="/etc/hosts", predicate="is managed by", object="ansible")
    assert await objects(client, subject="/etc/hosts") == [("ansible", True)]


async def test_the_facts_of_an_unknown_group_are_an_error_that_says_to_create_it(client: Client) -> None:
    with pytest.raises(MCPError) as caught:
        await client.read_resource("memory://groups/nobody/facts", cache_mode="bypass")
    assert "create_group" in caught.value.message


# -- recall ---------------------------------------------------------------------------------------


async def test_recall_finds_a_fact_by_its_words_and_by_its_embedding(client: Client) -> None:
    await ready(client)
    fact = await add_one(client, subject="Bob", predicate="is allergic to", object="peanuts")
    await call(
        client, "add_memory", group_id=GROUP, session_id=SESSION, content="we had lunch", producer="bob"
    )
    [hit] = await recall(client, "peanuts allergy", filters={"memory_types": ["fact"]})
    assert hit["id"] == fact["memory_id"] and hit["matched_by"] == ["keyword", "vector"]
    assert (await recall(client, "peanuts allergy"))[0]["id"] == fact["memory_id"]


async def test_recall_ranks_the_current_fact_above_the_one_it_replaced(client: Client) -> None:
    await ready(client)
    lisbon = await add_one(client, **LISBON, valid_from="2024-01-01T00:00:00Z")
    porto = await add_one(client, **PORTO, valid_from="2025-01-01T00:00:00Z", replace=True)
    hits = await recall(client, "where does Ana live")
    assert [h["id"] for h in hits[:2]] == [porto["memory_id"], lisbon["memory_id"]]
    assert hits[0]["metadata"] == {"fact": {"id": porto["id"], "current": True}}
    assert hits[1]["metadata"]["fact"]["current"] is False
    assert when(hits[1]["metadata"]["fact"]["valid_to"]) == when(porto["valid_from"])


async def test_the_current_fact_ranks_first_whichever_order_the_facts_were_stored_in(
    client: Client,
) -> None:
    await ready(client)
    await add_fact(client, **PORTO)
    await add_fact(client, **LISBON, replace=True)  # Ana moved from Porto to Lisbon
    hits = await recall(client, "Ana lives in", filters={"memory_types": ["fact"]})
    assert [h["content"] for h in hits] == ["Ana lives in Lisbon", "Ana lives in Porto"]


async def test_a_replaced_fact_is_still_found_when_asked_about(client: Client) -> None:
    await ready(client)
    await add_fact(client, **LISBON)
    await add_fact(client, **PORTO, replace=True)
    hits = await recall(client, "Lisbon")
    assert hits[0]["content"] == "Ana lives in Lisbon"


async def test_a_facts_words_do_not_make_the_turns_beside_it_match_nor_theirs_the_fact(
    client: Client,
) -> None:
    await ready(client)
    for content in ("we talked about the move", "the flat has a balcony"):
        await call(client, "add_memory", group_id=GROUP, session_id=SESSION, content=content, producer="bob")
    await add_fact(client, **PORTO, session_id=SESSION)
    await call(
        client, "add_memory", group_id=GROUP, session_id=SESSION, content="sounds lovely", producer="bob"
    )
    assert [h["content"] for h in await recall(client, "Porto") if "keyword" in h["matched_by"]] == [
        "Ana lives in Porto"
    ]
    balcony = {h["content"] for h in await recall(client, "balcony") if "keyword" in h["matched_by"]}
    # the turns around it still hold it as context, across the fact between them
    assert balcony == {"we talked about the move", "the flat has a balcony", "sounds lovely"}


async def test_a_fact_about_a_participant_is_found_when_the_query_only_names_them(client: Client) -> None:
    await ready(client)
    fact = await add_one(client, subject="Ana", predicate="prefers", object="green tea")
    [hit] = await recall(client, "Ana?", filters={"memory_types": ["fact"]})
    assert hit["id"] == fact["memory_id"] and hit["producer"] == "ana"


async def test_a_fact_about_someone_outside_the_group_is_produced_by_the_groups_agent(
    client: Client,
) -> None:
    await ready(client)
    await add_fact(client, subject="The garden shed", predicate="is painted", object="blue")
    [hit] = await recall(client, "shed")
    assert hit["producer"] == "helper"


async def test_recall_by_role_user_leaves_facts_out(client: Client) -> None:
    await ready(client)
    await add_fact(client, **LISBON)
    await call(
        client, "add_memory", group_id=GROUP, session_id=SESSION, content="Lisbon was sunny", producer="ana"
    )
    assert [h["content"] for h in await recall(client, "Lisbon", filters={"role": "user"})] == [
        "Lisbon was sunny"
    ]


async def test_recall_can_ask_for_current_facts_only_through_metadata(client: Client) -> None:
    await ready(client)
    await add_fact(client, **LISBON)
    await add_fact(client, **PORTO, replace=True)
    hits = await recall(client, "Ana lives", filters={"metadata": {"fact.current": True}})
    assert [h["content"] for h in hits] == ["Ana lives in Porto"]


async def test_deleting_a_facts_memory_deletes_the_fact(client: Client) -> None:
    await ready(client)
    fact = await add_one(client, **LISBON)
    await add_fact(client, subject="Ana", predicate="likes", object="tea")
    await call(client, "delete_memory", group_id=GROUP, memory_ids=[fact["memory_id"]])
    assert await objects(client) == [("tea", True)]
    again = await add_one(client, **LISBON)
    assert not again["duplicate"]


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("part", ["subject", "predicate", "object"])
async def test_an_empty_part_is_an_error_naming_it_and_nothing_is_stored(client: Client, part: str) -> None:
    await ready(client)
    text = await call_error(client, "add_fact", group_id=GROUP, **{**LISBON, part: "  \t "})
    assert f"{part} is empty" in text and "pass" in text
    assert await nothing_stored(client)


@pytest.mark.parametrize("part", ["subject", "predicate", "object"])
async def test_a_missing_part_is_an_error_naming_it(client: Client, part: str) -> None:
    await ready(client)
    arguments = {name: value for name, value in LISBON.items() if name != part}
    assert f"{part} is empty" in await call_error(client, "add_fact", group_id=GROUP, **arguments)
    assert await nothing_stored(client)


async def test_a_part_that_is_too_long_is_an_error(client: Client) -> None:
    await ready(client)
    text = await call_error(client, "add_fact", group_id=GROUP, **{**LISBON, "object": "x" * 501})
    assert "object has 501 characters" in text and "add_memory" in text


@pytest.mark.parametrize("confidence", [-0.1, 1.5])
async def test_confidence_outside_zero_to_one_is_an_error(client: Client, confidence: float) -> None:
    await ready(client)
    text = await call_error(client, "add_fact", group_id=GROUP, **fact(**LISBON, confidence=confidence))
    assert "confidence" in text
    assert await nothing_stored(client)


@pytest.mark.parametrize("confidence", [0.0, 1.0])
async def test_confidence_at_the_bounds_is_accepted(client: Client, confidence: float) -> None:
    await ready(client)
    assert (await add_one(client, **LISBON, confidence=confidence))["confidence"] == confidence


async def test_the_manager_checks_confidence_itself(manager: MemoryManager) -> None:
    await manager.groups.create_group(GROUP, user_ids=["ana"])
    with pytest.raises(ValidationFailed, match=r"confidence 1.5 is outside \[0, 1\]; pass a probability"):
        await manager.facts.add_fact(GROUP, "Ana", "lives in", "Lisbon", confidence=1.5)
    assert (await manager.facts.list_facts(GROUP)).total == 0


async def test_an_unknown_group_is_an_error_that_says_to_create_it(client: Client) -> None:
    text = await call_error(client, "add_fact", group_id="nobody", **LISBON)
    assert "group 'nobody' does not exist" in text and "create_group" in text


async def test_an_unknown_session_is_an_error_that_says_to_open_it_and_nothing_is_stored(
    client: Client,
) -> None:
    await ready(client)
    text = await call_error(client, "add_fact", group_id=GROUP, **fact(**LISBON, session_id="tuesday"))
    assert "session 'tuesday' does not exist" in text and "open_session" in text
    assert await nothing_stored(client)
    assert "tuesday" not in await sessions(client)


async def test_a_bad_valid_from_is_an_error_that_shows_the_format(client: Client) -> None:
    await ready(client)
    text = await call_error(client, "add_fact", group_id=GROUP, **fact(**LISBON, valid_from="last spring"))
    assert "valid_from 'last spring' is not a time" in text and "ISO 8601" in text
    assert await nothing_stored(client)


async def test_text_together_with_a_triple_is_an_error(client: Client) -> None:
    await ready(client)
    text = await call_error(client, "add_fact", group_id=GROUP, subject="Ana", text="Ana lives in Porto")
    assert "either text or subject, predicate and object" in text


async def test_neither_text_nor_a_triple_is_an_error_saying_what_to_pass(client: Client) -> None:
    await ready(client)
    text = await call_error(client, "add_fact", group_id=GROUP)
    assert "subject is empty" in text and "or pass text" in text


# -- extraction with a language model -------------------------------------------------------------


async def test_without_an_llm_text_is_an_error_saying_how_to_configure_one(client: Client) -> None:
    await ready(client)
    text = await call_error(client, "add_fact", group_id=GROUP, text="Ana moved to Porto last year")
    assert text.endswith(NOT_CONFIGURED)
    assert NOT_CONFIGURED.startswith("LLM not configured — fact extraction unavailable; set LLM_API_KEY")
    assert await nothing_stored(client)


async def test_facts_are_extracted_from_text_by_the_configured_model(
    llm_client: Client, llm: FakeOpenAI
) -> None:
    await ready(llm_client)
    llm.queue_chat(answer([LISBON, {"subject": "Bob", "predicate": "works at", "object": "the harbour"}]))
    result = await add_fact(llm_client, text="Ana lives in Lisbon. Bob works at the harbour.", source="chat")
    assert (result["extracted"], result["skipped_malformed"], result["stored"]) == (2, 0, 2)
    assert [(f["subject"], f["object"], f["source"]) for f in result["facts"]] == [
        ("Ana", "Lisbon", "chat"),
        ("Bob", "the harbour", "chat"),
    ]
    [request] = llm.requests_to("/chat/completions")
    assert request.authorization == "Bearer sk-facts" and request.json["model"] == "tiny-chat"
    assert request.json["temperature"] == 0 and request.json["max_tokens"] > 0
    assert "Ana lives in Lisbon. Bob works at the harbour." in request.json["messages"][-1]["content"]
    assert (await recall(llm_client, "harbour"))[0]["content"] == "Bob works at the harbour"


async def test_facts_found_in_text_replace_the_current_value_unless_told_not_to(
    llm_client: Client, llm: FakeOpenAI
) -> None:
    await ready(llm_client)
    await add_fact(llm_client, **PORTO)
    llm.queue_chat(answer([LISBON]))
    result = await add_fact(llm_client, text="Ana moved to Lisbon.")
    assert len(result["replaced"]) == 1
    assert await objects(llm_client, subject="Ana") == [("Lisbon", True), ("Porto", False)]
    llm.queue_chat(answer([{"subject": "Ana", "predicate": "lives in", "object": "Faro"}]))
    kept = await add_fact(llm_client, text="Ana also lives in Faro in summer.", replace=False)
    assert kept["replaced"] == []
    assert ("Lisbon", True) in await objects(llm_client, subject="Ana")


async def test_a_fenced_answer_with_prose_around_it_is_read(llm_client: Client, llm: FakeOpenAI) -> None:
    await ready(llm_client)
    llm.queue_chat(f"Here are the facts:\n```json\n{answer([['Ana', 'lives in', 'Porto']])}\n```\nDone.")
    result = await add_fact(llm_client, text="Ana now lives in Porto.")
    assert [(f["subject"], f["predicate"], f["object"]) for f in result["facts"]] == [
        ("Ana", "lives in", "Porto")
    ]


async def test_an_answer_that_is_not_json_is_an_error_and_nothing_is_stored(
    llm_client: Client, llm: FakeOpenAI
) -> None:
    await ready(llm_client)
    llm.queue_chat("Ana lives in Lisbon, I think.")
    text = await call_error(llm_client, "add_fact", group_id=GROUP, text="Ana lives in Lisbon")
    assert "not a JSON list of facts" in text and "Ana lives in Lisbon, I think." in text
    assert "nothing was stored" in text and "pass subject, predicate and object yourself" in text
    assert await nothing_stored(llm_client)


async def test_an_answer_nested_thousands_deep_is_an_error_and_nothing_is_stored(
    llm_client: Client, llm: FakeOpenAI
) -> None:
    await ready(llm_client)
    llm.queue_chat("[" * 5000 + "]" * 5000)
    text = await call_error(llm_client, "add_fact", group_id=GROUP, text="Ana lives in Lisbon")
    assert "not a JSON list of facts" in text and "nothing was stored" in text
    assert await nothing_stored(llm_client)


async def test_an_empty_list_is_an_empty_result(llm_client: Client, llm: FakeOpenAI) -> None:
    await ready(llm_client)
    llm.queue_chat("[]")
    result = await add_fact(llm_client, text="Hello! How are you today?")
    assert result["facts"] == []
    assert (result["extracted"], result["skipped_malformed"], result["stored"]) == (0, 0, 0)
    assert await nothing_stored(llm_client)


async def test_malformed_items_are_skipped_and_counted(llm_client: Client, llm: FakeOpenAI) -> None:
    await ready(llm_client)
    llm.queue_chat(
        answer(
            [
                LISBON,
                {"subject": "Ana"},
                ["Bob", "lives in"],
                "Bob lives in Faro",
                {"subject": "", "predicate": "likes", "object": "tea"},
                {"subject": "Bob", "predicate": "likes", "object": ["tea", "cake"]},
                ["Bob", "lives in", "Faro"],
            ]
        )
    )
    result = await add_fact(llm_client, text="...")
    assert (result["extracted"], result["skipped_malformed"], result["stored"]) == (2, 5, 2)
    assert sorted(await objects(llm_client)) == [("Faro", True), ("Lisbon", True)]


async def test_only_malformed_items_store_nothing_and_say_how_many(
    llm_client: Client, llm: FakeOpenAI
) -> None:
    await ready(llm_client)
    llm.queue_chat(answer([{"fact": "Ana lives in Lisbon"}]))
    result = await add_fact(llm_client, text="Ana lives in Lisbon")
    assert (result["extracted"], result["skipped_malformed"], result["facts"]) == (0, 1, [])
    assert await nothing_stored(llm_client)


async def test_an_http_500_after_the_retries_is_an_error_and_nothing_is_stored(
    llm_client: Client, llm: FakeOpenAI
) -> None:
    await ready(llm_client)
    llm.queue_chat(500, 500, 500)
    text = await call_error(llm_client, "add_fact", group_id=GROUP, text="Ana lives in Lisbon")
    assert "HTTP 500" in text and "tiny-chat" in text and "check the server's logs" in text
    assert "nothing was stored" in text and "pass subject, predicate and object yourself" in text
    assert len(llm.requests_to("/chat/completions")) == 3  # the first try and max_retries=2
    assert await nothing_stored(llm_client)


async def test_a_server_error_then_success_is_retried_and_stores_the_facts(
    llm_client: Client, llm: FakeOpenAI
) -> None:
    await ready(llm_client)
    llm.queue_chat(503, answer([LISBON]))
    assert (await add_fact(llm_client, text="Ana lives in Lisbon"))["stored"] == 1


async def test_an_unreachable_model_is_an_error_naming_the_variable_to_check(
    llm_client: Client, llm: FakeOpenAI
) -> None:
    await ready(llm_client)
    base_url = llm.base_url
    llm.stop()
    text = await call_error(llm_client, "add_fact", group_id=GROUP, text="Ana lives in Lisbon")
    assert f"cannot connect to model 'tiny-chat' at {base_url}" in text and "LLM_BASE_URL" in text
    assert "nothing was stored" in text
    assert await nothing_stored(llm_client)


async def test_an_empty_reply_is_an_error_naming_the_model_and_nothing_is_stored(
    llm_client: Client, llm: FakeOpenAI
) -> None:
    await ready(llm_client)
    llm.queue_chat("")
    text = await call_error(llm_client, "add_fact", group_id=GROUP, text="Ana lives in Lisbon")
    assert "'tiny-chat'" in text and "empty reply" in text and "nothing was stored" in text
    assert await nothing_stored(llm_client)


async def test_extraction_and_summaries_ask_the_same_endpoint_with_the_same_timeout_and_retries(
    db_path: Path,
) -> None:
    config = Config(db_path=db_path, embedder="hashing", llm_base_url="http://127.0.0.1:9/v1")
    async with MemoryManager(config) as configured:
        facts, summaries = configured.models.facts, configured.models.chat
        assert isinstance(facts, OpenAIChatLLM) and isinstance(summaries, OpenAIChatLLM)
        assert (facts.base_url, facts.model, facts.timeout_s, facts.max_retries) == (
            summaries.base_url,
            summaries.model,
            summaries.timeout_s,
            summaries.max_retries,
        )
        assert (facts.temperature, summaries.temperature) == (0.0, None)


async def test_extracted_facts_are_deduplicated_against_stored_ones(
    llm_client: Client, llm: FakeOpenAI
) -> None:
    await ready(llm_client)
    stored = await add_one(llm_client, **LISBON)
    llm.queue_chat(answer([{"subject": "ana", "predicate": "lives in", "object": "LISBON"}]))
    result = await add_fact(llm_client, text="Ana lives in Lisbon")
    assert result["facts"][0]["id"] == stored["id"] and result["duplicates"] == 1


async def test_extracted_facts_can_replace_and_never_replace_each_other(
    llm_client: Client, llm: FakeOpenAI
) -> None:
    await ready(llm_client)
    lisbon = await add_one(llm_client, **LISBON)
    llm.queue_chat(answer([PORTO, ["Ana", "likes", "tea"], ["Ana", "likes", "coffee"]]))
    result = await add_fact(llm_client, text="Ana moved to Porto; she likes tea and coffee.", replace=True)
    assert result["replaced"] == [lisbon["id"]] and result["stored"] == 3
    assert sorted(await objects(llm_client, predicate="likes")) == [("coffee", True), ("tea", True)]


async def test_a_failed_replace_in_an_extraction_stores_none_of_its_facts(
    llm_client: Client, llm: FakeOpenAI
) -> None:
    await ready(llm_client)
    await add_fact(llm_client, **LISBON, valid_from="2025-01-01T00:00:00Z")
    llm.queue_chat(answer([["Bob", "likes", "tea"], PORTO]))
    text = await call_error(
        llm_client,
        "add_fact",
        group_id=GROUP,
        **fact(text="...", valid_from="2020-01-01T00:00:00Z", replace=True),
    )
    assert "cannot replace it" in text
    assert await objects(llm_client) == [("Lisbon", True)]
    assert await every_memory(llm_client) == ["Ana lives in Lisbon"]


async def test_at_most_fifty_facts_are_stored_from_one_text(llm_client: Client, llm: FakeOpenAI) -> None:
    await ready(llm_client)
    llm.queue_chat(answer([["Ana", "owns", f"book {i}"] for i in range(60)]))
    result = await add_fact(llm_client, text="Ana's library")
    assert (result["extracted"], len(result["facts"]), result["stored"]) == (60, 50, 50)


async def test_the_llm_is_not_asked_when_the_group_does_not_exist(
    llm_client: Client, llm: FakeOpenAI
) -> None:
    text = await call_error(llm_client, "add_fact", group_id="nobody", text="Ana lives in Lisbon")
    assert "create_group" in text
    assert llm.requests_to("/chat/completions") == []


# -- the answer parser ----------------------------------------------------------------------------


def test_a_list_of_objects_is_read() -> None:
    found = parse_triplets(answer([LISBON, {"subject": "Bob", "predicate": "is", "object": "a sailor"}]))
    assert found.triplets == [("Ana", "lives in", "Lisbon"), ("Bob", "is", "a sailor")]
    assert (found.found, found.malformed) == (2, 0)


def test_a_list_of_three_item_lists_is_read() -> None:
    assert parse_triplets('[["Ana", "lives in", "Lisbon"]]').triplets == [("Ana", "lives in", "Lisbon")]


@pytest.mark.parametrize(
    "reply",
    [
        '```json\n[["Ana", "lives in", "Lisbon"]]\n```',
        '```\n[["Ana", "lives in", "Lisbon"]]\n```',
        '```JSON [["Ana", "lives in", "Lisbon"]]```',
        'Sure! ```json\n[["Ana", "lives in", "Lisbon"]]\n``` Anything else?',
        '```json\n[["Ana", "lives in", "Lisbon"]]',
        'The facts are [["Ana", "lives in", "Lisbon"]] as requested.',
        '{"facts": [["Ana", "lives in", "Lisbon"]]}',
        '{"triplets": [{"subject": "Ana", "predicate": "lives in", "object": "Lisbon"}]}',
        '{"subject": "Ana", "predicate": "lives in", "object": "Lisbon"}',
    ],
)
def test_json_is_found_in_fences_prose_and_wrapping_objects(reply: str) -> None:
    assert parse_triplets(reply).triplets == [("Ana", "lives in", "Lisbon")]


def test_numbers_are_read_as_text_and_booleans_and_nulls_are_malformed() -> None:
    found = parse_triplets(
        answer([["Ana", "is aged", 34], ["Ana", "is", True], ["Ana", "owns", None], ["Pi", "is", 3.14]])
    )
    assert found.triplets == [("Ana", "is aged", "34"), ("Pi", "is", "3.14")]
    assert found.malformed == 2


def test_the_same_triple_twice_in_an_answer_is_one_fact() -> None:
    found = parse_triplets(answer([LISBON, ["ana", "LIVES in", "lisbon"]]))
    assert found.triplets == [("Ana", "lives in", "Lisbon")] and found.found == 1


def test_an_empty_list_is_no_facts_and_no_error() -> None:
    found = parse_triplets("[]")
    assert (found.triplets, found.found, found.malformed) == ([], 0, 0)


@pytest.mark.parametrize("reply", ["", "   ", "no facts here", "[unclosed", '{"subject": "Ana",'])
def test_an_answer_without_json_is_an_error(reply: str) -> None:
    with pytest.raises(ExtractionFailed, match="not a JSON list of facts.*nothing was stored"):
        parse_triplets(reply)


@pytest.mark.parametrize("reply", ['"Ana lives in Lisbon"', "42", "null"])
def test_json_that_is_not_a_list_is_an_error(reply: str) -> None:
    with pytest.raises(ExtractionFailed, match="not a list of facts"):
        parse_triplets(reply)


def test_the_limit_keeps_the_first_facts_and_counts_them_all() -> None:
    found = parse_triplets(answer([["Ana", "owns", f"book {i}"] for i in range(5)]), limit=3)
    assert [t[2] for t in found.triplets] == ["book 0", "book 1", "book 2"] and found.found == 5


class ScriptedLLM:
    """An `LLMClient` that records its prompts and answers from a script (a reply or an LLMError)."""

    def __init__(self, reply: str | LLMError) -> None:
        self.reply = reply
        self.prompts: list[str] = []

    async def complete(self, system: str, prompt: str, *, max_tokens: int) -> str:
        self.prompts.append(prompt)
        if isinstance(self.reply, LLMError):
            raise self.reply
        return self.reply


async def test_extraction_sends_the_text_in_the_prompt_to_any_llm_client() -> None:
    model = ScriptedLLM(answer([LISBON]))
    found = await extract_facts("Ana said she lives in Lisbon.", model, limit=7)
    assert found.triplets == [("Ana", "lives in", "Lisbon")]
    assert "Ana said she lives in Lisbon." in model.prompts[0] and "at most 7" in model.prompts[0]


async def test_a_failing_llm_client_is_an_extraction_error_that_keeps_its_reason() -> None:
    with pytest.raises(
        ExtractionFailed, match="^the model is asleep; nothing was stored; try again, or pass"
    ):
        await extract_facts("Ana lives in Lisbon", ScriptedLLM(LLMError("the model is asleep")))


async def test_extraction_talks_to_an_openai_compatible_server_through_the_shared_client(
    llm: FakeOpenAI,
) -> None:
    llm.queue_chat("[]")
    found = await extract_facts("hello", OpenAIChatLLM(llm.base_url, None, "tiny-chat"))
    assert (found.triplets, found.found, found.malformed) == ([], 0, 0)
    [request] = llm.requests_to("/chat/completions")
    assert request.authorization == "Bearer not-needed" and "temperature" not in request.json
    system, user = request.json["messages"]
    assert system["role"] == "system" and "JSON" in system["content"]
    assert user["role"] == "user" and "hello" in user["content"]


# -- configuration --------------------------------------------------------------------------------


def test_the_llm_is_configured_from_the_environment(tmp_path: Path) -> None:
    env = {"LLM_API_KEY": "sk-1", "LLM_BASE_URL": "http://localhost:11434/v1", "LLM_MODEL": "llama3.2"}
    config = Config.from_env(env)
    assert (config.llm_api_key, config.llm_base_url, config.llm_model) == (
        "sk-1",
        env["LLM_BASE_URL"],
        "llama3.2",
    )
    assert "sk-1" not in repr(config)
    llm = configured_llm(config)
    assert llm is not None and (llm.model, llm.base_url) == ("llama3.2", env["LLM_BASE_URL"])


def test_memoria_llm_api_key_is_read_when_llm_api_key_is_not_set() -> None:
    assert Config.from_env({"MEMORIA_LLM_API_KEY": "sk-m"}).llm_api_key == "sk-m"
    assert Config.from_env({"MEMORIA_LLM_API_KEY": "sk-m", "LLM_API_KEY": "sk-l"}).llm_api_key == "sk-l"


def test_a_key_or_a_base_url_alone_configures_the_llm_with_the_default_model() -> None:
    assert configured_llm(Config.from_env({})) is None
    for env in ({"LLM_API_KEY": "sk"}, {"LLM_BASE_URL": "http://localhost:1234/v1"}):
        llm = configured_llm(Config.from_env(env))
        assert llm is not None and llm.model == DEFAULT_LLM_MODEL


# -- the migration --------------------------------------------------------------------------------


def fact_episode(content: str) -> NewEpisode:
    return NewEpisode(
        producer_id="u", producer_role="system", produced_for_id=None, content=content, memory_type="fact",
        importance=0.5, metadata_json="{}", timestamp="2024-01-01T00:00:00.000000+00:00",
        ts_epoch=1_704_067_200.0, content_hash=content, dedup_key=None,
    )  # fmt: skip


def new_fact(obj: str, valid_from: str = "2024-01-01T00:00:00.000000+00:00", subject: str = "Ana") -> NewFact:
    return NewFact(subject, "lives in", obj, None, None, None, valid_from)


def insert_fact(store: Store, obj: str, *, supersede: bool = False) -> Any:
    return store.insert_facts(
        "g", "s", [new_fact(obj)], [fact_episode(f"Ana lives in {obj}")], None,
        supersede=supersede, index_vectors=False, created_at="2024-01-01T00:00:00.000000+00:00",
    )  # fmt: skip


def test_the_facts_migration_applies_to_an_empty_database(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db", embedder_name="test", dimension=4)
    assert store.schema_version == len(MIGRATIONS) >= 4
    indexes = {row[0] for row in store.read("SELECT name FROM sqlite_master WHERE tbl_name = 'facts'")}
    assert {"facts_subject_predicate", "facts_current_triple", "facts_memory"} <= indexes
    assert store.list_facts("g", None, None, 10) == ([], 0)
    store.close()


def test_a_version_three_database_with_data_upgrades_and_stores_facts(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    conn = sqlean.connect(str(path), isolation_level=None)
    for migration in MIGRATIONS[:3]:
        migration(conn)
    conn.execute("PRAGMA user_version = 3")
    conn.execute(
        "INSERT INTO groups VALUES ('g', '[\"u\"]', '[]', NULL, '{}', '2024-01-01T00:00:00+00:00', 0)"
    )
    conn.execute("INSERT INTO sessions VALUES ('g', 's', '{}', '{}', '2024-01-01T00:00:00+00:00')")
    conn.execute(
        "INSERT INTO episodes(group_id, session_id, sequence, producer_id, producer_role, content, memory_type, "
        "importance, timestamp, ts_epoch, created_at, content_hash) VALUES ('g', 's', 1, 'u', 'user', "
        "'an old turn', 'message', 0.5, '2024-01-01T00:00:00+00:00', 1704067200, '2024-01-01T00:00:00+00:00', 'h')"
    )
    conn.close()
    store = Store(path, embedder_name="test", dimension=4)
    assert store.schema_version == len(MIGRATIONS)
    assert [row[0] for row in store.read("SELECT content FROM episodes")] == ["an old turn"]
    stored = insert_fact(store, "Lisbon")
    [fact] = stored.facts
    assert fact.object == "Lisbon" and fact.current and stored.new_episodes[0][1] == fact.memory_id
    assert [r[0] for r in store.read("SELECT sequence FROM episodes ORDER BY sequence")] == [1, 2]
    store.close()


def test_the_database_forbids_two_current_identical_triples_but_not_history(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db", embedder_name="test", dimension=4)
    store.insert_group(GroupInfo(group_id="g", user_ids=["u"], agent_ids=[], created_at=SEEDED_AT))
    columns = (
        "group_id, subject, predicate, object, subject_key, predicate_key, object_key, valid_from, "
        "valid_to, created_at"
    )
    day = "'2024-01-01T00:00:00.000000+00:00'"
    values = f"'g', 'Ana', 'lives in', 'Lisbon', 'ana', 'lives in', 'lisbon', {day}, ?, {day}"

    def insert(valid_to: str | None) -> None:
        store.write(lambda conn: conn.execute(f"INSERT INTO facts({columns}) VALUES ({values})", (valid_to,)))

    insert("2025-01-01T00:00:00.000000+00:00")
    insert(None)
    with pytest.raises(sqlean.IntegrityError, match="UNIQUE"):
        insert(None)
    assert store.list_facts("g", "ANA", None, 10)[1] == 2
    store.close()


def test_a_failed_write_leaves_no_fact_and_no_episode(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db", embedder_name="test", dimension=4)
    seed_store(store)
    insert_fact(store, "Lisbon")
    early = "2020-01-01T00:00:00.000000+00:00"
    batch = [new_fact("Faro", early, subject="Bob"), new_fact("Porto", early)]
    with pytest.raises(ValidationFailed, match="cannot replace it"):
        store.insert_facts(
            "g", "s", batch, [fact_episode("Bob lives in Faro"), fact_episode("Ana lives in Porto")],
            np.eye(4, dtype=np.float32)[:2], supersede=True, index_vectors=True,
            created_at="2024-01-01T00:00:00.000000+00:00",
        )  # fmt: skip
    assert store.list_facts("g", None, None, 10)[1] == 1
    assert store.read("SELECT count(*) FROM episodes")[0][0] == 1
    assert store.read("SELECT count(*) FROM episode_vectors")[0][0] == 0
    store.close()
