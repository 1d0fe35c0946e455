"""Recall filters as SQL conditions on PostgreSQL's episodes table (alias `e`), every value a parameter.

The same conditions as store/sqlite/filters.py; metadata values are compared as jsonb (a boolean also
matches 1 or 0, as SQLite's json_extract reads it).
"""

from __future__ import annotations

import json
from typing import Any

from mcp_memory.store.records import RANGE_OPERATORS, Filters


def filter_sql(filters: Filters) -> tuple[str, list[Any]]:
    """AND-ed conditions (each starting with ' AND ') for every filter that is set."""
    clauses: list[str] = []
    params: list[Any] = []

    def add(sql: str, *values: Any) -> None:
        clauses.append(sql)
        params.extend(values)

    if filters.session_id is not None and filters.group_wide_types:
        add(
            "(e.session_id = %s OR e.memory_type = ANY(%s))",
            filters.session_id,
            list(filters.group_wide_types),
        )
    elif filters.session_id is not None:
        add("e.session_id = %s", filters.session_id)
    if filters.since is not None:
        add("e.ts_epoch >= %s", filters.since)
    if filters.until is not None:
        add("e.ts_epoch <= %s", filters.until)
    if filters.producer is not None:
        add("e.producer_id = %s", filters.producer)
    if filters.role is not None:
        add("e.producer_role = %s", filters.role)
    if filters.memory_types:
        add("e.memory_type = ANY(%s)", list(filters.memory_types))
    if filters.min_importance is not None:
        add("e.effective_importance >= %s", filters.min_importance)
    if filters.max_importance is not None:
        add("e.effective_importance <= %s", filters.max_importance)
    if filters.exclude_types:
        add("NOT (e.memory_type = ANY(%s))", list(filters.exclude_types))
    if filters.step_from is not None:
        add("e.step >= %s", filters.step_from)
    if filters.step_to is not None:
        add("e.step <= %s", filters.step_to)
    for path, value in filters.metadata:
        sql, values = _metadata_condition(path.split("."), value)
        add(sql, *values)
    return "".join(f" AND {c}" for c in clauses), params


def _metadata_condition(path: list[str], value: Any) -> tuple[str, list[Any]]:
    """Equality on a metadata value at a dotted path; a list means any of its values, a dict a range."""
    if isinstance(value, list):
        options = [option for item in value for option in _equal(item)]
        return "(e.metadata #> %s) = ANY(%s::jsonb[])", [path, options]
    if isinstance(value, dict):  # a range: {"gte": 5, "lt": 10}
        bounds = [f"(e.metadata #> %s) {RANGE_OPERATORS[op]} %s::jsonb" for op in value]
        params: list[Any] = []
        for bound in value.values():
            params += [path, json.dumps(bound)]
        return "(" + " AND ".join(bounds) + ")", params
    return "(e.metadata #> %s) = ANY(%s::jsonb[])", [path, _equal(value)]


def _equal(value: Any) -> list[str]:
    """The jsonb texts a filter value matches: a boolean matches its number too."""
    if isinstance(value, bool):
        return [json.dumps(value), json.dumps(int(value))]
    return [json.dumps(value)]
