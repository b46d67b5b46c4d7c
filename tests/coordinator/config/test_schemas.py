"""The JSON Schemas themselves: valid draft 2020-12, closed, and documented."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from coordinator.config import CONFIG_FILES, schema_dir

SCHEMA_FILES = [name.replace(".json", ".schema.json") for name in CONFIG_FILES]

# Strategy params depend on the strategy; its params model (extra="forbid") closes them instead.
OPEN_OBJECTS = {("bots.schema.json", "$defs/strategy/properties/params")}


def load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((schema_dir() / name).read_text(encoding="utf-8"))
    return schema


def object_schemas(node: Any, at: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield at.lstrip("/"), node
        for key, child in node.items():
            yield from object_schemas(child, f"{at}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from object_schemas(child, f"{at}/{index}")


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_every_object_refuses_unknown_keys(name: str) -> None:
    objects = list(object_schemas(load(name)))
    assert objects
    for at, node in objects:
        if (name, at) in OPEN_OBJECTS:
            continue
        assert node.get("additionalProperties") is False, f"{name}: {at or '(root)'}"


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_pins_version_one_and_describes_itself(name: str) -> None:
    schema = load(name)
    assert schema["properties"]["version"]["const"] == 1
    assert "version" in schema["required"]
    assert schema["description"]
