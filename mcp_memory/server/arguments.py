"""What a client sends a tool, read strictly: the names, the text, the nesting and the size of every
argument, checked before pydantic reads them, and pydantic's verdict put in the server's words.

Every message names the argument (its path, e.g. `memories[2].metadata.tags`) and says what to send
instead. Values are quoted with repr, which escapes control characters and unpaired surrogates, so a
message can always be written back as JSON.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mcp_memory.errors import ValidationFailed
from mcp_memory.models import STRICT_INPUT

MAX_ARGUMENT_DEPTH = 32
"""Lists and objects inside one argument nest at most this deep (metadata, configuration, a summary)."""
MAX_OBJECT_ARGUMENT_CHARS = 64_000
"""An argument that is a JSON object (metadata, configuration, a summary) holds at most this much JSON."""
MAX_INT = 2**63 - 1  # SQLite's integers
PREVIEW_CHARS = 60
M = TypeVar("M", bound=BaseModel)

KIND_EXPECTED = {
    "string_type": "text (a JSON string)",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a JSON object",
    "none_required": "null",
    "literal_error": None,  # pydantic's own text names the allowed values
    "datetime_type": None,  # a time: see TIME
}
TIME = "a time: ISO 8601 text, epoch seconds or epoch milliseconds"


def strict_model(model: type[M]) -> type[M]:
    """`model` reading its input strictly (STRICT_INPUT); its JSON schema says additionalProperties: false."""
    namespace = {"model_config": STRICT_INPUT, "__module__": model.__module__, "__doc__": model.__doc__}
    return cast(type[M], type(model.__name__, (model,), namespace))


def accepted_names(model: type[BaseModel]) -> list[str]:
    """The argument names a model takes, in declaration order, as clients spell them."""
    return [field.alias or name for name, field in model.model_fields.items()]


def check_arguments(tool: str, arguments: Mapping[str, Any], accepted: Sequence[str]) -> None:
    """Unknown names, unpaired surrogates, NaN, huge integers, deep nesting and oversized objects."""
    check_names(tool, arguments, accepted)
    for name, value in arguments.items():
        check_value(name, value)
        if isinstance(value, dict):
            _check_size(name, value)


def check_names(
    tool: str, arguments: Mapping[str, Any], accepted: Sequence[str], what: str = "argument"
) -> None:
    """Every name is one `tool` (or an object argument) takes; else the first unknown, the closest, the valid."""
    unknown = [str(name) for name in arguments if name not in accepted]
    if unknown:
        takes = f"{tool} takes: {', '.join(accepted)}" if accepted else f"{tool} takes no {what}s"
        raise ValidationFailed(
            f"unknown {what} {_quote(unknown[0])} for {tool}{_suggestion(unknown[0], accepted)} {takes}"
        )


def check_batch(name: str, items: Sequence[Any], model: type[BaseModel], noun: str) -> None:
    """Each item of a batch argument (memories) read by `model` before anything is written; the first bad
    one fails, named by its index."""
    for index, item in enumerate(items):
        read_model(f"{name}[{index}]", item, model, noun, suffix="; nothing was stored")


def read_model(where: str, value: Any, model: type[M], noun: str, suffix: str = "") -> M:
    """An object argument (filters, a batch item) read by `model`: an unknown field is named with the valid
    ones, any other fault in the words of the other argument errors."""
    accepted = accepted_names(model)
    unknown = [str(key) for key in value if key not in accepted] if isinstance(value, dict) else []
    if unknown:
        place = f" in {where}" if where else ""
        raise ValidationFailed(
            f"unknown field {_quote(unknown[0])}{place}{_suggestion(unknown[0], accepted)} "
            f"{noun} takes: {', '.join(accepted)}{suffix}"
        )
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ValidationFailed(f"{validation_message(exc, value, within=where)}{suffix}") from None


def unknown_tool_message(name: str, tools: Sequence[str]) -> str:
    return f"unknown tool {_quote(name)}{_suggestion(name, tools)} the tools are: {', '.join(tools)}"


def _suggestion(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f"; did you mean {close[0]!r}?" if close else ";"


def check_value(path: str, value: Any) -> None:
    """Walk one argument without recursion (it may nest 100,000 levels): every string, key and number."""
    stack: list[tuple[str, Any, int]] = [(path, value, 0)]
    while stack:
        where, item, depth = stack.pop()
        if isinstance(item, str):
            check_text(where, item)
        elif isinstance(item, float):
            _check_float(where, item)
        elif isinstance(item, int) and not isinstance(item, bool):
            _check_int(where, item)
        elif isinstance(item, dict | list | tuple):
            if depth >= MAX_ARGUMENT_DEPTH:
                raise ValidationFailed(
                    f"{path} nests lists and objects more than {MAX_ARGUMENT_DEPTH} levels deep; "
                    f"flatten it to at most {MAX_ARGUMENT_DEPTH} levels"
                )
            stack.extend((child, inner, depth + 1) for child, inner in _children(where, item))


def _children(where: str, item: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> Iterator[tuple[str, Any]]:
    if not isinstance(item, dict):
        yield from ((f"{where}[{index}]", inner) for index, inner in enumerate(item))
        return
    for key, inner in item.items():
        if isinstance(key, str):
            check_text(f"a key of {where}", key)
        yield _key_path(where, key), inner


def _key_path(where: str, key: Any) -> str:
    return f"{where}.{key}" if isinstance(key, str) and key.isidentifier() else f"{where}[{key!r}]"


def check_text(where: str, text: str) -> None:
    """Text with an unpaired surrogate is not Unicode: it cannot be stored, searched or sent back."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationFailed(
            f"{where} holds an unpaired surrogate (U+{ord(text[exc.start]):04X}) at position {exc.start}, "
            "which is not valid Unicode; send valid text (a character beyond U+FFFF as a surrogate pair)"
        ) from None


def _check_float(where: str, number: float) -> None:
    if not math.isfinite(number):
        raise ValidationFailed(f"{where} is {number!r}; send a finite number")


def _check_int(where: str, number: int) -> None:
    if not -MAX_INT - 1 <= number <= MAX_INT:
        # not the digits: Python refuses to print an integer of more than 4,300 of them
        raise ValidationFailed(f"{where} is too large; integers must lie between -2**63 and 2**63-1")


def _check_size(name: str, value: dict[Any, Any]) -> None:
    size = len(json.dumps(value, ensure_ascii=False, default=repr))
    if size > MAX_OBJECT_ARGUMENT_CHARS:
        raise ValidationFailed(
            f"{name} is {size:,} characters as JSON; an object argument holds at most "
            f"{MAX_OBJECT_ARGUMENT_CHARS:,}: keep large text in content"
        )


def validation_message(exc: ValidationError, arguments: Mapping[str, Any], within: str = "") -> str:
    """One sentence for pydantic's verdict on a tool's arguments (or on a batch item `within`): the first
    argument at fault, what it must be and what came instead; the names of other faulty ones after it."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    same = [error for error in errors if error["loc"][:1] == first["loc"][:1]]
    message = _describe(same, arguments, within)
    others = sorted({_field(within, e["loc"][0]) for e in errors if e["loc"][:1] != first["loc"][:1]})
    return f"{message} (also check {', '.join(others)})" if others else message


def _field(within: str, name: int | str) -> str:
    return f"{within}.{name}" if within else str(name)


def _describe(errors: list[ErrorDetails], arguments: Mapping[str, Any], within: str) -> str:
    first = errors[0]
    path, value = _locate(first["loc"], arguments, within)
    kind = first["type"]
    if kind == "missing":
        return f"{path} is required"
    if all(error["type"] in KIND_EXPECTED for error in errors):
        return _wrong_kind(path, value, errors)
    if kind == "string_too_long":
        return f"{path} has {len(value)} characters; send at most {first['ctx']['max_length']}"
    if kind == "readable_id":
        return f"{path} {first['msg']}"
    text = first["msg"]
    if text.startswith("Input should be "):
        return f"{path} must be {text.removeprefix('Input should be ')}; got {_preview(value)}"
    return f"{path}: {text.removeprefix('Value error, ')}; got {_preview(value)}"


def _wrong_kind(path: str, value: Any, errors: list[ErrorDetails]) -> str:
    literal = next((error for error in errors if error["type"] == "literal_error"), None)
    if literal is not None:
        expected = literal["msg"].removeprefix("Input should be ")
    elif any(error["type"] == "datetime_type" for error in errors):
        expected = TIME
    else:
        kinds = [KIND_EXPECTED[error["type"]] for error in errors]
        expected = " or ".join(dict.fromkeys(kind for kind in kinds if kind))
    message = f"{path} must be {expected}; got {_preview(value)} ({_kind(value)})"
    if isinstance(value, str) and _is_json_container(value):
        message += "; send the value itself, not JSON text"
    return message


def _locate(loc: tuple[int | str, ...], arguments: Mapping[str, Any], within: str) -> tuple[str, Any]:
    """The readable path of an error and the value there; pydantic's union tags ('str', 'int') are skipped."""
    if not loc:
        return within or "the arguments", arguments
    path, value = _field(within, loc[0]), arguments.get(str(loc[0]))
    for step in loc[1:]:
        if isinstance(value, list | tuple) and isinstance(step, int) and 0 <= step < len(value):
            path, value = f"{path}[{step}]", value[step]
        elif isinstance(value, dict) and step in value:
            path, value = _key_path(path, step), value[step]
        elif isinstance(value, dict) and isinstance(step, str) and step not in ("str", "int", "float"):
            path, value = _key_path(path, step), None  # a field that is missing: name it
    return path, value


def _is_json_container(text: str) -> bool:
    try:
        return isinstance(json.loads(text), list | dict)
    except (ValueError, RecursionError):
        return False


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _preview(value: Any) -> str:
    """The value as the client wrote it (JSON), shortened; repr-escaped where JSON cannot show it."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


def _quote(name: str) -> str:
    """A name as repr quotes it (control characters and surrogates escaped), shortened."""
    text = repr(name)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 4] + "...'"
