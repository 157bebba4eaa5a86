"""Connection slots on real loopback sockets: silent connections, caps per source network, one cap for all listeners.

The attack: a few hosts open connections that never send a byte until every slot is
taken, and every other client gets 503 for as long as those connections stay open. The
sites here serve a fixed resource with small caps; 127.0.x.y are all loopback addresses
on Linux, so clients bind to 127.0.1.2, 127.0.2.2... to come from other /24 networks.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.resource import Resource

from atomrelay.web.limits import BoundedRequest, ConnectionLimits, GuardedSite
from tests.helpers import poll
from tests.robustness.support import RawConnection, raw_connect

pytestmark = pytest.mark.integration

HELLO = b"GET / HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"


class Hello(Resource):
    """Answers every GET with a fixed body."""

    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        return b"hello"


def listen(site: GuardedSite) -> tuple[Any, int]:
    """``site`` on a free loopback port: the listening port and its number."""
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    return port, port.getHost().port


async def answer(port: int, source: str) -> int:
    """The status a GET from ``source`` gets on a new connection (0: closed without an answer)."""
    connection = await raw_connect(port, source)
    try:
        connection.send(HELLO)
        await poll(lambda: connection.reply() is not None or connection.closed, timeout=5, interval=0.01,
                   what="an answer")
        reply = connection.reply()
        return reply.status if reply is not None else 0
    finally:
        connection.abort()


async def close_all(connections: list[RawConnection], *sites: GuardedSite) -> None:
    """Abort ``connections`` and wait until every site has given their slots back."""
    for connection in connections:
        connection.abort()
    await poll(lambda: all(site.open_connections == 0 for site in sites), timeout=5, what="every slot released")


@pytest_twisted.ensureDeferred
async def test_silent_connections_are_closed_at_the_first_byte_deadline() -> None:
    """Silent connections filling every slot are closed 1 s after they opened, not at the 30 s idle timeout: the
    client refused meanwhile is served once they are gone."""
    site = GuardedSite(Hello(), requestFactory=BoundedRequest, first_byte_timeout=1.0, idle_timeout=30.0,
                       max_connections=12, max_per_source=4)
    listening, port = listen(site)
    started = time.monotonic()
    silent = [await raw_connect(port, f"127.0.{network}.{host}") for network in (1, 2, 3) for host in (2, 3, 4, 5)]
    try:
        await poll(lambda: site.open_connections == 12, timeout=5, what="12 silent connections")
        assert await answer(port, "127.0.9.2") == 503
        await poll(lambda: all(c.closed for c in silent), timeout=5, interval=0.02, what="the silent ones closed")
        assert 0.9 <= time.monotonic() - started <= 2.5
        assert all(c.received == b"" for c in silent)
        assert await answer(port, "127.0.9.2") == 200
    finally:
        await close_all(silent, site)
        await listening.stopListening()


def test_the_default_first_byte_deadline_closes_within_10_seconds() -> None:
    """With the default limits a silent connection is closed within 10 s, its sweep's tick included."""
    site = GuardedSite(Hello(), requestFactory=BoundedRequest)
    assert site.first_byte_timeout + site.tick <= 10.0


@pytest_twisted.ensureDeferred
async def test_the_per_source_cap_counts_a_whole_slash_24() -> None:
    """Four addresses of one /24 take its four slots: a fifth address of that /24 gets 503, another /24 is served."""
    site = GuardedSite(Hello(), requestFactory=BoundedRequest, max_connections=20, max_per_source=4)
    listening, port = listen(site)
    held = [await raw_connect(port, f"127.0.3.{host}") for host in (2, 3, 4, 5)]
    try:
        await poll(lambda: site.open_connections == 4, timeout=5, what="4 connections")
        assert await answer(port, "127.0.3.6") == 503
        assert await answer(port, "127.0.4.2") == 200
    finally:
        await close_all(held, site)
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_one_address_takes_at_most_its_own_share_of_its_network() -> None:
    """One host holding keep-alive connections gets its per-address share and then 503; another host of its /24
    (the NVR) is still served, and a slot given back is taken again."""
    site = GuardedSite(Hello(), requestFactory=BoundedRequest, max_connections=20, max_per_source=4, max_per_address=2)
    listening, port = listen(site)
    held = [await raw_connect(port, "127.0.3.2") for _ in range(2)]
    try:
        await poll(lambda: site.open_connections == 2, timeout=5, what="2 connections")
        assert await answer(port, "127.0.3.2") == 503
        assert await answer(port, "127.0.3.3") == 200
        held.pop().abort()
        await poll(lambda: site.open_connections == 1, timeout=5, what="a slot back")
        assert await answer(port, "127.0.3.2") == 200
    finally:
        await close_all(held, site)
        await listening.stopListening()


def test_the_default_caps_leave_a_network_room_besides_its_busiest_host() -> None:
    """By default one address may hold half of its network's share, and a network a quarter of all slots."""
    limits = ConnectionLimits()
    assert limits.max_per_address * 2 == limits.max_per_source and limits.max_per_source * 4 == limits.max_connections


@pytest_twisted.ensureDeferred
async def test_one_total_cap_is_shared_by_every_listener() -> None:
    """Two listeners with one ConnectionLimits of 6 hold 6 connections between them; the 7th, on either, is 503."""
    limits = ConnectionLimits(max_connections=6, max_per_source=100)
    sites = [GuardedSite(Hello(), requestFactory=BoundedRequest, limits=limits) for _ in range(2)]
    ports = [listen(site) for site in sites]
    held = [await raw_connect(port, f"127.0.{n}.2") for _, port in ports for n in (5, 6, 7)]
    try:
        await poll(lambda: limits.open_connections == 6, timeout=5, what="6 connections")
        assert [await answer(port, "127.0.8.2") for _, port in ports] == [503, 503]
        held.pop().abort()
        await poll(lambda: limits.open_connections == 5, timeout=5, what="a slot back")
        assert await answer(ports[0][1], "127.0.8.2") == 200
    finally:
        await close_all(held, *sites)
        for listening, _ in ports:
            await listening.stopListening()
