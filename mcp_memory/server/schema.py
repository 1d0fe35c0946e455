"""Lean input schemas: what every conversation pays for, in tokens, before a word is said.

pydantic's schemas are written for validators: a title on every property, an `anyOf` with null for every
optional argument, the lengths of ids. The server checks all of that itself and says what is wrong, so
the schema a model reads keeps only the types, the constraints it needs to choose values, the defaults
that matter and the descriptions. Unknown arguments are still refused (with the valid names), and every
limit still holds: the server checks them, the schema just does not spell them out.
"""

from __future__ import annotations

from typing import Any

DROPPED = frozenset({"title", "maxLength", "minLength"})


def lean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` without titles, null branches, null defaults and id lengths; unused `$defs` go too."""
    leaned = _lean(schema)
    if "$defs" in leaned and "$ref" not in repr({k: v for k, v in leaned.items() if k != "$defs"}):
        del leaned["$defs"]
    return leaned


def _lean(node: Any) -> Any:
    if isinstance(node, list):
        return [_lean(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = _without_null_branch(node)
    leaned: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED or (key == "default" and (value in (None, "", [], {}) or isinstance(value, bool))):
            continue  # a flag's default is the other way from what its description says to send
        if (
            key == "additionalProperties"
        ):  # unknown names are refused with the valid ones; JSON values are any
            continue
        if key in ("minimum", "maximum"):
            continue  # a range is in the description where a model needs it ("0-1", "1-100")
        if key == "type" and "enum" in node:
            continue  # the enum's values say it
        if key in ("properties", "$defs"):  # their keys are names, not keywords
            leaned[key] = {name: _lean(inner) for name, inner in value.items()}
        else:
            leaned[key] = _lean(value)
    return leaned


def _without_null_branch(node: dict[str, Any]) -> dict[str, Any]:
    """{"anyOf": [X, {"type": "null"}], ...} -> X merged with the rest: omitting the argument means null."""
    branches = node.get("anyOf")
    if not isinstance(branches, list):
        return node
    kept = [branch for branch in branches if branch != {"type": "null"}]
    if len(kept) != 1 or len(kept) == len(branches):
        return node
    rest = {key: value for key, value in node.items() if key != "anyOf"}
    return {**kept[0], **rest}
