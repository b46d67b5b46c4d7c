"""Configuration problems, and their translation into words an operator can act on.

jsonschema and pydantic both describe a problem in their own vocabulary (`Additional properties
are not allowed ('foo' was unexpected)`, `Decimal('0.01') is less than the minimum of ...`); the
functions here turn both into `ConfigIssue`s with a JSON path and a plain reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from jsonschema import ValidationError
from pydantic import ValidationError as PydanticValidationError

PathParts = Sequence[str | int]


# --- the error types -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem: the file's name, a JSON path into it such as `$.bots[0].mode`, and why."""

    file: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.reason}"


class ConfigError(Exception):
    """The configuration cannot be used; `issues` holds every problem found, in file order."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(dict.fromkeys(issues))
        super().__init__("\n".join(str(issue) for issue in self.issues))


def json_path(parts: Iterable[str | int]) -> str:
    """`("bots", 0, "mode")` -> `$.bots[0].mode`; keys that are not plain names are quoted."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part and all(c.isalnum() or c in "_-" for c in part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


# --- jsonschema and pydantic errors --------------------------------------------------------------


def schema_error_issues(file: str, error: ValidationError) -> list[ConfigIssue]:
    """Operator-readable issues for one jsonschema error (some errors name several keys)."""
    at = tuple(error.absolute_path)
    instance, schema = error.instance, error.schema
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        return [
            ConfigIssue(file, json_path((*at, key)), _unknown_key_reason(key, patterns))
            for key in instance
            if key not in known and not any(search(p, key) for p in patterns)
        ]
    if error.validator == "required" and isinstance(instance, dict):
        return [
            ConfigIssue(file, json_path((*at, key)), f"missing required key {key!r}")
            for key in error.validator_value
            if key not in instance
        ]
    return [ConfigIssue(file, json_path(at), _reason(error))]


def _unknown_key_reason(key: str, patterns: Mapping[str, Any]) -> str:
    if patterns:
        return f"key {key!r} does not match {' or '.join(map(repr, patterns))}"
    return f"unknown key {key!r}"


def search(pattern: str, text: str) -> bool:
    """`re.search`, as JSON Schema's `pattern` applies a regular expression."""
    return re.search(pattern, text) is not None


_BOUND_WORDS: Final = {
    "minimum": "is less than the minimum of",
    "maximum": "is greater than the maximum of",
    "exclusiveMinimum": "must be greater than",
    "exclusiveMaximum": "must be less than",
}


def _reason(error: ValidationError) -> str:
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind == "type":
        wanted = " or ".join([value] if isinstance(value, str) else value)
        return f"expected {wanted}, got {_describe(instance)}"
    if kind == "enum":
        return f"{_show(instance)} is not one of {list(value)!r}"
    if kind == "const":
        return f"must be {_show(value)}, got {_show(instance)}"
    if kind == "pattern":
        hint = error.schema.get("description") if isinstance(error.schema, dict) else None
        return f"{instance!r} does not match {value!r}" + (f" ({hint})" if hint else "")
    if kind in _BOUND_WORDS:
        return f"{_show(instance)} {_BOUND_WORDS[kind]} {_show(value)}"
    if kind in _SIZE_WORDS:
        size = len(instance) if isinstance(instance, list | dict | str) else 0
        return f"has {size} {_SIZE_WORDS[kind][0]}, {_SIZE_WORDS[kind][1]} {value}"
    return _shorten(str(error.message))


_SIZE_WORDS = {
    "maxItems": ("items", "more than the maximum of"),
    "minItems": ("items", "fewer than the minimum of"),
    "maxProperties": ("keys", "more than the maximum of"),
    "minProperties": ("keys", "fewer than the minimum of"),
    "maxLength": ("characters", "more than the maximum of"),
    "minLength": ("characters", "fewer than the minimum of"),
}
_MAX_REASON = 200


def _shorten(text: str) -> str:
    """jsonschema's own messages repeat the offending value: never print a whole file back."""
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def _show(value: Any) -> str:
    """A value as it reads in JSON (no `Decimal('...')`)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, Decimal | int | float):
        return str(value)
    if isinstance(value, str):
        return repr(value)
    return "an object" if isinstance(value, dict) else "an array"


def _describe(value: Any) -> str:
    if isinstance(value, dict | list):
        return _show(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {_show(value)}"
    if isinstance(value, str):
        return f"string {_show(value)}"
    return f"number {_show(value)}"


def pydantic_error_issues(
    file: str, error: PydanticValidationError, prefix: PathParts = ()
) -> list[ConfigIssue]:
    """Issues for a pydantic error; `prefix` is where the validated object sits in the file."""
    issues = []
    for detail in error.errors():
        at = [*prefix, *(p for p in detail["loc"] if p != "[key]")]
        if detail["type"] == "missing":
            reason = f"missing required key {at[-1]!r}"
        elif detail["type"] == "extra_forbidden":
            reason = f"unknown key {at[-1]!r}"
        elif detail["type"] == "value_error":
            reason = detail["msg"].removeprefix("Value error, ")
        else:
            message = detail["msg"].replace("Input should be", "must be", 1)
            reason = f"{message} (got {_show(detail['input'])})"
        issues.append(ConfigIssue(file, json_path(at), reason))
    return issues
