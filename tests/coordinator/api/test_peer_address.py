"""Loopback is judged by the socket's peer address, never by a header a client writes."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from coordinator.api.app import _from_loopback, make_app, peer_address
from coordinator.api.auth import ControlToken, is_loopback_address, is_loopback_host
from coordinator.runtime import Coordinator

FORGED = {
    "X-Forwarded-For": "127.0.0.1",
    "X-Real-IP": "127.0.0.1",
    "Forwarded": "for=127.0.0.1;host=localhost",
}


class PeerTransport:
    """Only what a request asks of its transport here: the peer's address."""

    def __init__(self, peername: Any) -> None:
        self.peername = peername

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peername if name == "peername" else default

    def is_closing(self) -> bool:
        return False


def request_from(peername: Any, headers: dict[str, str] | None = None) -> web.Request:
    return make_mocked_request(
        "POST", "/kill-switch", headers=headers, transport=PeerTransport(peername)
    )


@pytest.mark.parametrize(
    "peername",
    [("127.0.0.1", 50000), ("127.0.0.2", 50000), ("::1", 50000, 0, 0),
     ("::ffff:127.0.0.1", 50000, 0, 0)],
)
def test_a_loopback_peer_is_loopback(peername: Any) -> None:
    assert _from_loopback(request_from(peername))


@pytest.mark.parametrize(
    "peername",
    [("192.0.2.7", 50000), ("10.0.0.1", 50000), ("fd00::2", 50000, 0, 0),
     ("::ffff:10.0.0.1", 50000, 0, 0), None, "/run/some.sock"],
)
def test_a_forged_forwarding_header_does_not_make_another_peer_loopback(peername: Any) -> None:
    request = request_from(peername, FORGED)

    assert not _from_loopback(request)
    assert peer_address(request) in ("unknown", peername[0] if isinstance(peername, tuple) else "")


def test_the_peer_address_is_the_transports_not_the_headers() -> None:
    assert peer_address(request_from(("192.0.2.7", 50000), FORGED)) == "192.0.2.7"
    assert peer_address(request_from(None, FORGED)) == "unknown"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("", False), ("::", False), ("192.0.2.2", False),
     ("coordinator.example", False), ("not an address", False)],
)
def test_which_hosts_bind_loopback_only(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
    assert is_loopback_address("localhost") is False  # a peer address is never a name


def non_loopback_address() -> str | None:
    """This machine's address on its default route, when it has one that is not loopback."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.254", 9))  # no packet is sent: this only picks a route
            address: str = sock.getsockname()[0]
    except OSError:
        return None
    return None if is_loopback_address(address) or address == "0.0.0.0" else address


@pytest.fixture
async def remote_client(
    coordinator: Coordinator, token: ControlToken, admin_token: ControlToken
) -> AsyncIterator[TestClient]:
    """A client whose peer address, as the server sees it, is not loopback."""
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    server = TestServer(make_app(coordinator, token, admin_token, bind_host=address), host=address)
    async with TestClient(server) as client:
        yield client


async def test_another_machine_cannot_activate_without_a_token_whatever_its_headers_say(
    remote_client: TestClient, auth: dict[str, str]
) -> None:
    response = await remote_client.post(
        "/kill-switch", json={"action": "activate", "reason": "forged"}, headers=FORGED
    )

    assert response.status == 401
    assert "another machine needs a token" in (await response.json())["error"]["message"]
    status = await (await remote_client.get("/kill-switch")).json()
    assert status["active"] is False

    with_token = await remote_client.post(
        "/kill-switch", json={"action": "activate", "reason": "with a token"}, headers=auth
    )
    assert with_token.status == 200
    assert (await with_token.json())["active"] is True
