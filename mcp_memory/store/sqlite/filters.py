"""Recall filters and the SQL that applies them inside each search.

`filter_sql` turns `Filters` into conditions on the episodes table (for the keyword search
and the vector cache's candidates); `vector_filter_sql` turns them into KNN constraints on
the vec0 table, using its metadata columns where they exist. All values are parameters.
"""

from __future__ import annotations

import json
from typing import Any

from mcp_memory.store.records import RANGE_OPERATORS, Filters


def filter_sql(filters: Filters, alias: str) -> tuple[str, list[Any]]:
    """AND-ed SQL conditions on the episodes table for every filter that is set."""
    clauses: list[str] = []
    params: list[Any] = []

    def add(sql: str, *values: Any) -> None:
        clauses.append(sql.replace("e.", f"{alias}."))
        params.extend(values)

    if filters.session_id is not None and filters.group_wide_types:
        add(
            "(e.session_id = ? OR e.memory_type IN (SELECT value FROM json_each(?)))",
            filters.session_id,
            json.dumps(list(filters.group_wide_types)),
        )
    elif filters.session_id is not None:
        add("e.session_id = ?", filters.session_id)
    if filters.since is not None:
        add("e.ts_epoch >= ?", filters.since)
    if filters.until is not None:
        add("e.ts_epoch <= ?", filters.until)
    if filters.producer is not None:
        add("e.producer_id = ?", filters.producer)
    if filters.role is not None:
        add("e.producer_role = ?", filters.role)
    if filters.memory_types:
        add("e.memory_type IN (SELECT value FROM json_each(?))", json.dumps(list(filters.memory_types)))
    if filters.min_importance is not None:
        add("e.effective_importance >= ?", filters.min_importance)
    if filters.max_importance is not None:
        add("e.effective_importance <= ?", filters.max_importance)
    if filters.exclude_types:
        add("e.memory_type NOT IN (SELECT value FROM json_each(?))", json.dumps(list(filters.exclude_types)))
    if filters.step_from is not None:
        add("e.step >= ?", filters.step_from)
    if filters.step_to is not None:
        add("e.step <= ?", filters.step_to)
    for path, value in filters.metadata:
        sql, values = _metadata_condition(path, value)
        add(sql, *values)
    return "".join(f" AND {c}" for c in clauses), params


def _metadata_condition(path: str, value: Any) -> tuple[str, list[Any]]:
    """Equality on a metadata value at a dotted path; a list means any of its values."""
    json_path = "$." + ".".join(json.dumps(part, ensure_ascii=False) for part in path.split("."))
    if isinstance(value, list):
        return (
            "json_extract(e.metadata, ?) IN (SELECT value FROM json_each(?))",
            [json_path, json.dumps(value)],
        )
    if isinstance(value, dict):  # a range: {"gte": 5, "lt": 10}
        bounds = [f"json_extract(e.metadata, ?) {RANGE_OPERATORS[op]} ?" for op in value]
        params: list[Any] = []
        for bound in value.values():
            params += [json_path, bound]
        return "(" + " AND ".join(bounds) + ")", params
    if isinstance(value, bool):
        value = int(value)
    return "json_extract(e.metadata, ?) = ?", [json_path, value]


def vector_filter_sql(filters: Filters) -> tuple[str, list[Any]]:
    """KNN constraints: vec0 metadata columns where they exist, a rowid subquery for the rest."""
    clauses: list[str] = []
    params: list[Any] = []
    simple = {
        "session_id = ?": filters.session_id,
        "producer_id = ?": filters.producer,
        "role = ?": filters.role,
        "ts >= ?": None if filters.since is None else float(filters.since),
        "ts <= ?": None if filters.until is None else float(filters.until),
    }
    for sql, value in simple.items():
        if value is not None:
            clauses.append(sql)
            params.append(value)
    if filters.memory_types:
        marks = ",".join("?" * len(filters.memory_types))
        clauses.append(f"memory_type IN ({marks})")
        params.extend(filters.memory_types)
    if filters.beyond_cache:
        rest = sql_only(filters)
        where, rest_params = filter_sql(rest, "e")
        clauses.append(f"rowid IN (SELECT e.id FROM episodes e WHERE 1 {where})")
        params.extend(rest_params)
    return "".join(f" AND {c}" for c in clauses), params


def sql_only(filters: Filters) -> Filters:
    """Only the conditions vec0 and the in-memory copies cannot check themselves."""
    return Filters(
        metadata=filters.metadata,
        min_importance=filters.min_importance,
        max_importance=filters.max_importance,
        step_from=filters.step_from,
        step_to=filters.step_to,
        exclude_types=filters.exclude_types,
    )
