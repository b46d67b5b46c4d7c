"""The OpenAPI document: valid OpenAPI 3.1, in step with the routes, and true of real answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from openapi_spec_validator.validation import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from coordinator.api.app import make_app
from coordinator.api.auth import ControlToken
from coordinator.api.openapi import OPENAPI_PATH, OPERATIONS, build_document, route_keys
from coordinator.config.models import CoordinatorConfig
from coordinator.runtime import Coordinator

DOC_URI = "urn:bot-coordinator:openapi"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def pointer(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


@pytest.fixture
def document(coordinator: Coordinator, token: ControlToken) -> dict[str, Any]:
    return build_document(make_app(coordinator, token))


# -- the document itself --------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate_openapi(document, cls=OpenAPIV31SpecValidator)


def test_every_ref_resolves_and_every_schema_is_json_schema_2020_12(
    document: dict[str, Any],
) -> None:
    found = sorted(set(refs(document)))
    assert "#/components/schemas/ErrorResponse" in found
    for ref in found:
        pointer(document, ref)  # a KeyError names the ref that does not resolve
    assert document["components"]["schemas"]
    for name, schema in document["components"]["schemas"].items():
        assert isinstance(schema, dict), name
        Draft202012Validator.check_schema(schema)


def test_every_route_is_in_the_document_and_every_documented_path_is_a_route(
    coordinator: Coordinator, token: ControlToken, document: dict[str, Any]
) -> None:
    routes = route_keys(make_app(coordinator, token))
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }
    assert documented == routes
    assert set(OPERATIONS) == routes, "OPERATIONS in coordinator/api/openapi.py and the routes"
    assert ("GET", "/bots/{name}") in routes
    bot = document["paths"]["/bots/{name}"]
    assert [p["name"] for p in bot["parameters"]] == ["name"]


def test_every_request_example_is_valid_against_its_body_schema(document: dict[str, Any]) -> None:
    registry = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(document))
    checked = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS or "requestBody" not in operation:
                continue
            media = operation["requestBody"]["content"]["application/json"]
            where = f"/paths/{escape(path)}/{method}/requestBody/content/application~1json/schema"
            validator = Draft202012Validator({"$ref": DOC_URI + "#" + where}, registry=registry)
            for name, example in media.get("examples", {}).items():
                errors = [e.message for e in validator.iter_errors(example["value"])]
                assert not errors, (method, path, name, errors)
                checked += 1
    assert checked >= 10


def test_every_error_status_is_answered_with_the_one_error_shape(document: dict[str, Any]) -> None:
    error_ref = "#/components/schemas/ErrorResponse"
    assert pointer(document, error_ref)["required"] == ["error"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            answers = operation["responses"]
            assert answers["default"] == {"$ref": "#/components/responses/Error"}, path
            for status, answer in answers.items():
                if status.startswith(("4", "5")) and (method, path, status) != (
                    "get",
                    "/health",
                    "503",
                ):
                    assert answer["content"]["application/json"]["schema"] == {"$ref": error_ref}


# -- real answers ---------------------------------------------------------------------------------


@dataclass
class Served:
    client: TestClient[Any, Any]
    auth: dict[str, str]
    admin: dict[str, str]
    document: dict[str, Any]
    registry: Registry[Any]
    checked: set[tuple[str, str]]

    async def check(self, response: ClientResponse, template: str) -> Any:
        """Validate an answer against the document's schema of its operation and status."""
        method = response.method.lower()
        operation = self.document["paths"][template][method]
        status = str(response.status)
        answer = operation["responses"].get(status, operation["responses"]["default"])
        if "$ref" in answer:
            answer = pointer(self.document, answer["$ref"])
        content_type = response.content_type
        assert content_type in answer["content"], (template, status, content_type)
        text = await response.text()
        body: Any = json.loads(text) if content_type == "application/json" else text
        key = status if status in operation["responses"] else "default"
        where = f"/paths/{escape(template)}/{method}/responses/{key}"
        if key == "default":
            where = "/components/responses/Error"
        where += f"/content/{escape(content_type)}/schema"
        validator = Draft202012Validator({"$ref": DOC_URI + "#" + where}, registry=self.registry)
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
        assert not errors, (method, template, status, errors)
        self.checked.add((method.upper(), template))
        return body


@pytest.fixture
async def served(
    config: CoordinatorConfig,
    data_dir: Path,
    tmp_path: Path,
    token: ControlToken,
    admin_token: ControlToken,
) -> AsyncIterator[Served]:
    """A coordinator with backups behind the real app; the document as the app serves it."""
    coordinator = await Coordinator.open(config, data_dir, backup_dir=tmp_path / "backups")
    try:
        async with TestClient(TestServer(make_app(coordinator, token, admin_token))) as client:
            response = await client.get(OPENAPI_PATH)
            assert response.status == 200
            document = await response.json()
            registry: Registry[Any] = Registry().with_resource(
                DOC_URI, Resource.from_contents(document, default_specification=DRAFT202012)
            )
            yield Served(
                client,
                {"Authorization": f"Bearer {token.value}"},
                {"Authorization": f"Bearer {admin_token.value}"},
                document,
                registry,
                set(),
            )
    finally:
        await coordinator.close(grace_seconds=0.5)


async def test_the_served_document_is_the_built_one_and_needs_no_token(served: Served) -> None:
    response = await served.client.get(OPENAPI_PATH)

    assert response.status == 200
    assert response.content_type == "application/json"
    assert await served.check(response, OPENAPI_PATH) == served.document
    assert served.document["paths"]["/status"]["get"]["operationId"] == "get_status"


async def test_every_get_answers_as_the_document_says(served: Served) -> None:
    s, get = served, served.client.get
    status = await s.check(await get("/status"), "/status")
    bot = status["bots"][0]["name"]
    await s.check(await get("/status", params={"view": "summary"}), "/status")
    await s.check(await get("/status", params={"bot": bot}), "/status")
    await s.check(await get(f"/bots/{bot}"), "/bots/{name}")
    await s.check(await get(f"/bots/{bot}/series", params={"points": "50"}), "/bots/{name}/series")
    await s.check(await get("/"), "/")
    await s.check(await get("/ui/"), "/ui/")
    await s.check(await get("/ui/dashboard.js"), "/ui/{file}")
    await s.check(await get("/health"), "/health")
    await s.check(await get("/alerts"), "/alerts")
    await s.check(await get("/metrics"), "/metrics")
    await s.check(await get("/audit", params={"limit": "5"}), "/audit")
    await s.check(await get("/breakers"), "/breakers")
    await s.check(await get("/kill-switch"), "/kill-switch")
    await s.check(await get("/reconcile"), "/reconcile")
    await s.check(await get("/reconcile", params={"format": "table"}), "/reconcile")
    await s.check(await get("/backups"), "/backups")
    await s.check(await get("/backups", params={"verify": "true"}), "/backups")
    await s.check(await get("/config"), "/config")
    await s.check(await get("/config/diff"), "/config/diff")
    await s.check(await get("/config/diff", params={"bot": bot}), "/config/diff")
    opened = await s.client.post("/incidents", json={"issue": "drill"}, headers=s.auth)
    record = await s.check(opened, "/incidents")
    await s.check(await get("/incidents"), "/incidents")
    await s.check(await get(f"/incidents/{record['id']}"), "/incidents/{id}")
    await s.check(await get(f"/incidents/{record['id']}/markdown"), "/incidents/{id}/markdown")
    await s.check(await get(OPENAPI_PATH), OPENAPI_PATH)

    gets = {key for key in OPERATIONS if key[0] == "GET"}
    assert gets <= s.checked, sorted(gets - s.checked)


async def test_the_main_posts_answer_as_the_document_says(served: Served) -> None:
    s, post = served, served.client.post
    status = await (await s.client.get("/status")).json()
    bot = status["bots"][0]["name"]
    await s.check(
        await post("/start", json={"bot": bot, "safe_mode": True}, headers=s.auth), "/start"
    )
    await s.check(await post("/start-sequential", headers=s.auth), "/start-sequential")
    await s.check(await post("/stop", json={"bot": bot}, headers=s.auth), "/stop")
    drill = {"bot": bot, "reject_next": 3}
    await s.check(await post("/paper/drill", json=drill, headers=s.auth), "/paper/drill")
    await s.check(await post("/reconcile", json={}), "/reconcile")
    await s.check(
        await post("/reconcile", json={"bot": bot}, params={"format": "table"}), "/reconcile"
    )
    await s.check(await post("/backups", headers=s.auth), "/backups")
    reset = {"name": "global", "approved_by": "alice"}
    await s.check(await post("/breakers/reset", json=reset, headers=s.auth), "/breakers/reset")
    await s.check(
        await post("/config/approve", json={"approved_by": "alice"}, headers=s.auth),
        "/config/approve",
    )
    await s.check(await s.client.get("/reconcile"), "/reconcile")  # now with a last report
    record = await s.check(
        await post("/incidents", json={"issue": "drill", "bots": [bot]}, headers=s.auth),
        "/incidents",
    )
    note = {"text": "started it", "action": True, "tick": ["document"]}
    notes = f"/incidents/{record['id']}/notes"
    await s.check(await post(notes, json=note, headers=s.auth), "/incidents/{id}/notes")
    close = {"root_cause": "a drill", "outcome": "success"}
    closing = f"/incidents/{record['id']}/close"
    closed = await s.check(await post(closing, json=close, headers=s.auth), "/incidents/{id}/close")
    assert closed["unticked"]
    await s.check(await post(closing, json=close, headers=s.auth), "/incidents/{id}/close")  # 409


async def test_the_kill_switch_answers_as_the_document_says(served: Served) -> None:
    s, post = served, served.client.post
    bot = (await (await s.client.get("/status")).json())["bots"][0]["name"]
    activated = await s.check(
        await post("/kill-switch", json={"action": "activate", "reason": "drill"}), "/kill-switch"
    )
    assert activated["active"] is True
    await s.check(await post("/kill-switch"), "/kill-switch")  # no body at all stops too
    refused = await post(
        "/kill-switch", json={"action": "override", "reason": "fixed"}, headers=s.auth
    )
    assert refused.status == 409
    await s.check(refused, "/kill-switch")
    forced = {"action": "force_override", "reason": "Circuit breaker reset", "approved_by": "admin"}
    lifted = await s.check(await post("/kill-switch", json=forced, headers=s.admin), "/kill-switch")
    assert lifted["active"] is False
    scoped = {"action": "reduce_only", "reason": "unwind", "scope": {"bot": bot}}
    await s.check(await post("/kill-switch", json=scoped), "/kill-switch")
    await s.check(await s.client.get("/kill-switch"), "/kill-switch")


async def test_error_answers_are_in_the_document(served: Served) -> None:
    s, get, post = served, served.client.get, served.client.post
    answers = [
        (await get("/bots/nope"), "/bots/{name}", 404),
        (await get("/audit", params={"limit": "0"}), "/audit", 400),
        (await get("/status", params={"nope": "1"}), "/status", 400),
        (await get("/backups", params={"verify": "yes"}), "/backups", 400),
        (await post("/start", json={"bot": "ndax"}), "/start", 401),
        (await post("/start", json={"bot": "nope"}, headers=s.auth), "/start", 404),
        (await post("/start", json={"bot": "ndax", "extra": 1}, headers=s.auth), "/start", 400),
        (await post("/stop", data=b"x" * (65 * 1024), headers=s.auth), "/stop", 413),
        (
            await post(
                "/kill-switch",
                json={"action": "force_override", "reason": "r", "approved_by": "a"},
                headers=s.auth,
            ),
            "/kill-switch",
            403,
        ),
        (
            await post("/kill-switch", json={"action": "override"}, headers=s.auth),
            "/kill-switch",
            400,
        ),
        (
            await post("/bots/ndax/enable", json={"approved_by": "alice"}, headers=s.auth),
            "/bots/{name}/enable",
            409,
        ),
        (await post("/reconcile", json={"apply": True}), "/reconcile", 401),
    ]
    for response, template, status in answers:
        assert response.status == status, (template, await response.text())
        body = await s.check(response, template)
        assert set(body) == {"error"}
