"""The relay's HTTP clients keep no cookie: a camera or event consumer setting them cannot grow a jar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
import treq.client
from twisted.internet import reactor
from twisted.web.client import Agent
from twisted.web.resource import Resource
from twisted.web.server import Site

from atomrelay.config import load_config
from atomrelay.wiring import build_relay, no_cookies
from tests.test_cli import relay_config


class SetsCookies(Resource):
    """Sets a new session cookie on every answer and notes the Cookie header each request brought."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.brought: list[bytes | None] = []

    def render_GET(self, request: Any) -> bytes:
        self.brought.append(request.getHeader(b"cookie"))
        request.addCookie(f"s{len(self.brought)}".encode(), b"x" * 100, path=b"/")
        return b"ok"


async def three_requests(jar: Any) -> tuple[list[bytes | None], Any]:
    """What a server setting cookies saw of three requests from a treq client with ``jar`` (None: treq's own)."""
    server = SetsCookies()
    port = reactor.listenTCP(0, Site(server), interface="127.0.0.1")  # type: ignore[attr-defined]
    client = treq.client.HTTPClient(Agent(reactor), cookiejar=jar)
    try:
        for _ in range(3):
            response = await client.get(f"http://127.0.0.1:{port.getHost().port}/")
            await response.content()
    finally:
        await port.stopListening()
    return server.brought, client._cookiejar


@pytest_twisted.ensureDeferred
async def test_no_cookie_is_kept_or_sent() -> None:
    """With the relay's jar nothing is kept or sent back; with treq's default every cookie is kept and sent."""
    brought, jar = await three_requests(no_cookies())
    assert brought == [None, None, None] and len(jar) == 0
    brought, jar = await three_requests(None)
    assert brought[0] is None and brought[2] is not None and len(jar) == 3


def test_the_relay_s_clients_use_it(tmp_path: Path) -> None:
    """build_relay gives the camera/mediamtx client a jar that refuses every cookie (Notify requests go through a plain
    Agent, which keeps none: tests/events/test_consumers.py)."""
    relay: Any = build_relay(load_config(str(relay_config(tmp_path, 9, 9, 8080))), reactor)
    assert relay.parts.http_client._cookiejar._policy.allowed_domains() == ()
