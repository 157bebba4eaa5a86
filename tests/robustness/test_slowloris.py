"""Slow and greedy clients against the relay's resources behind ``GuardedSite``, on real loopback sockets.

twisted.web by itself only has an idle timeout that every received byte restarts, no
deadline for a whole request and no connection cap (see ``atomrelay.web.limits``). These
tests serve the relay's real site root (built by ``build_relay``) through a GuardedSite
with short limits: a 0.5 s request deadline, a 2 s idle timeout, 8 connections per
source network (/24) and 20 in all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from lxml import etree
from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.server import Site

from atomrelay.web.limits import BoundedRequest, GuardedSite
from atomrelay.xml import ns
from tests.helpers import poll
from tests.robustness.support import (
    GET_DATE,
    InProcessRelay,
    RawConnection,
    Rig,
    authed,
    check_reply,
    op,
    raw_connect,
    relay_sites,
    start_inprocess_relay,
    start_rig,
)

pytestmark = pytest.mark.integration

REQUEST_TIMEOUT = 0.5
IDLE_TIMEOUT = 2.0
MAX_PER_SOURCE = 8
MAX_CONNECTIONS = 20


@dataclass
class Guarded:
    """The relay's site root served by a GuardedSite with short limits."""

    relay: InProcessRelay
    site: GuardedSite
    port: int


def guard(relay: InProcessRelay) -> tuple[GuardedSite, Any]:
    """The relay's site root behind a new GuardedSite with the short limits, listening on a free port."""
    site = GuardedSite(relay.site.resource, requestFactory=BoundedRequest, request_timeout=REQUEST_TIMEOUT,
                       idle_timeout=IDLE_TIMEOUT, max_connections=MAX_CONNECTIONS, max_per_source=MAX_PER_SOURCE)
    return site, reactor.listenTCP(0, site, interface="127.0.0.1")


@pytest_twisted.async_yield_fixture(scope="module")
async def guarded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Guarded]:
    """An in-process relay whose site root is also served on another port through a GuardedSite."""
    rig: Rig = start_rig()
    relay = await start_inprocess_relay(rig, tmp_path_factory.mktemp("slowloris"))
    site, listening = guard(relay)
    try:
        yield Guarded(relay, site, listening.getHost().port)
    finally:
        await listening.stopListening()
        await relay.stop()
        await rig.stop()


def request_bytes(body: bytes = GET_DATE, path: str = "/onvif/device_service", keep_alive: bool = False) -> bytes:
    """A whole HTTP/1.1 SOAP POST."""
    connection = b"keep-alive" if keep_alive else b"close"
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: relay\r\nContent-Type: application/soap+xml\r\n"
            b"Connection: " + connection + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def dribble(connection: RawConnection, data: bytes, every: float = 0.05) -> LoopingCall:
    """Send ``data`` one byte every ``every`` seconds (a slowloris client) until it is all sent or the connection closes."""
    position = [0]

    def step() -> None:
        if connection.closed or position[0] >= len(data):
            if loop.running:
                loop.stop()
            return
        connection.send(data[position[0]:position[0] + 1])
        position[0] += 1

    loop = LoopingCall(step)
    loop.start(every)
    return loop


async def served(port: int, source: str | None = None, within: float = 1.0) -> None:
    """A complete GetSystemDateAndTime on a new connection is answered 200 within ``within`` seconds."""
    start = time.monotonic()
    connection = await raw_connect(port, source)
    try:
        connection.send(request_bytes())
        await poll(lambda: connection.reply() is not None or connection.closed, timeout=within + 2, interval=0.01,
                   what="an answer")
        reply = connection.reply()
        assert reply is not None and reply.status == 200, connection.received[:300]
        assert time.monotonic() - start < within
    finally:
        connection.abort()


async def cut_off(connection: RawConnection, started: float, limit: float) -> None:
    """The server closes ``connection`` no sooner than ``limit`` and within ``limit`` + 1.5 s of ``started``."""
    await poll(lambda: connection.closed, timeout=limit + 5, interval=0.02, what="the server to close the connection")
    elapsed = time.monotonic() - started
    assert limit - 0.1 <= elapsed <= limit + 1.5, elapsed


async def no_connections_left(site: GuardedSite) -> None:
    """Every slot has been given back."""
    await poll(lambda: site.open_connections == 0, timeout=5, what="every connection slot to be released")


@pytest_twisted.ensureDeferred
async def test_dribbled_headers_get_408_and_are_closed(guarded: Guarded) -> None:
    """Headers sent a byte at a time never finish: the client gets 408 at the request deadline and is disconnected."""
    connection = await raw_connect(guarded.port)
    started = time.monotonic()
    loop = dribble(connection, b"POST /onvif/device_service HTTP/1.1\r\nHost: relay\r\nX-Padding: " + b"a" * 1000)
    try:
        await cut_off(connection, started, REQUEST_TIMEOUT)
    finally:
        if loop.running:
            loop.stop()
    reply = connection.reply()
    assert reply is not None and reply.status == 408 and reply.header("connection") == "close"
    await no_connections_left(guarded.site)


@pytest_twisted.ensureDeferred
async def test_plain_site_lets_a_dribbling_client_stay(guarded: Guarded) -> None:
    """Why the guard exists: twisted.web's own idle timeout (1 s here) never fires for a client sending a byte every 0.2 s."""
    plain = Site(guarded.relay.site.resource, timeout=1.0)
    listening = reactor.listenTCP(0, plain, interface="127.0.0.1")
    connection = await raw_connect(listening.getHost().port)
    loop = dribble(connection, b"POST /onvif/device_service HTTP/1.1\r\nX-Padding: " + b"p" * 100, every=0.2)
    try:
        until = time.monotonic() + 2.5
        await poll(lambda: time.monotonic() > until or connection.closed, timeout=5, what="2.5 s of dribbling")
        assert not connection.closed
    finally:
        if loop.running:
            loop.stop()
        connection.abort()
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_unfinished_body_gets_408_and_is_closed(guarded: Guarded) -> None:
    """A body that stops (and then trickles) short of its Content-Length is cut off at the deadline, never dispatched."""
    connection = await raw_connect(guarded.port)
    started = time.monotonic()
    head = request_bytes(GET_DATE + b" " * 1000)[: -1000]
    connection.send(head)
    loop = dribble(connection, b" " * 500, every=0.1)
    try:
        await cut_off(connection, started, REQUEST_TIMEOUT)
    finally:
        if loop.running:
            loop.stop()
    reply = connection.reply()
    assert reply is not None and reply.status == 408, connection.received[:300]
    assert b"UTCDateTime" not in connection.received
    await no_connections_left(guarded.site)


@pytest_twisted.ensureDeferred
async def test_idle_connection_is_closed(guarded: Guarded) -> None:
    """A connection that never sends a byte is closed after the idle timeout."""
    connection = await raw_connect(guarded.port)
    await cut_off(connection, time.monotonic(), IDLE_TIMEOUT)
    assert connection.received == b""
    await no_connections_left(guarded.site)


@pytest_twisted.ensureDeferred
async def test_slow_clients_do_not_block_others(guarded: Guarded) -> None:
    """While seven clients dribble headers, another network gets twenty answers at once; the seven cost one log line."""
    site, listening = guard(guarded.relay)  # its own site: no log line of another test counts against it
    port = listening.getHost().port
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    slow = [await raw_connect(port) for _ in range(MAX_PER_SOURCE - 1)]
    started = time.monotonic()
    loops = [dribble(c, b"POST /onvif/device_service HTTP/1.1\r\n" + b"X: " + b"b" * 200, every=0.02) for c in slow]
    try:
        for _ in range(20):
            await served(port, source="127.0.1.2", within=0.5)
        assert time.monotonic() - started < REQUEST_TIMEOUT + 1.5
        for connection in slow:
            await cut_off(connection, started, REQUEST_TIMEOUT)
    finally:
        globalLogPublisher.removeObserver(events.append)
        for loop in loops:
            if loop.running:
                loop.stop()
        await listening.stopListening()
    await no_connections_left(site)
    lines = [formatEvent(e) for e in events if e.get("log_namespace") == "atomrelay.web.limits"]
    assert len(lines) == 1 and "sent no complete request within 0.5s" in lines[0], lines


@pytest_twisted.ensureDeferred
async def test_per_source_cap_holds_and_spares_other_networks(guarded: Guarded) -> None:
    """One address gets at most 8 connections (the 9th is a 503, closed at once); another /24 is still served."""
    held = [await raw_connect(guarded.port) for _ in range(MAX_PER_SOURCE)]
    try:
        await poll(lambda: guarded.site.open_connections == MAX_PER_SOURCE, timeout=5, what="8 connections accepted")
        extra = await raw_connect(guarded.port)
        await poll(lambda: extra.closed, timeout=2, interval=0.01, what="the 9th connection to be refused")
        reply = extra.reply()
        assert reply is not None and reply.status == 503 and reply.header("retry-after") == "1"
        await served(guarded.port, source="127.0.1.2")
        assert guarded.site.open_connections == MAX_PER_SOURCE
        assert not any(connection.closed for connection in held)
    finally:
        for connection in held:
            connection.abort()
    await no_connections_left(guarded.site)
    await served(guarded.port)


@pytest_twisted.ensureDeferred
async def test_total_cap_holds_and_frees_up(guarded: Guarded) -> None:
    """Across networks at most 20 connections are open; the next one is refused, and slots come back when they close."""
    sources = [f"127.0.{n}.1" for n in range(1, 11)]
    held = [await raw_connect(guarded.port, source) for source in sources for _ in range(2)]
    try:
        await poll(lambda: guarded.site.open_connections == MAX_CONNECTIONS, timeout=5, what="20 connections")
        extra = await raw_connect(guarded.port, "127.0.11.1")
        await poll(lambda: extra.closed, timeout=2, interval=0.01, what="the 21st connection to be refused")
        assert extra.reply() is not None and extra.reply().status == 503  # type: ignore[union-attr]
    finally:
        for connection in held:
            connection.abort()
    await no_connections_left(guarded.site)
    await served(guarded.port, source="127.0.11.1")


@pytest_twisted.ensureDeferred
async def test_keep_alive_gap_is_not_a_slow_request(guarded: Guarded) -> None:
    """The deadline runs only while a request arrives: a keep-alive connection idle longer than it still works."""
    connection = await raw_connect(guarded.port)
    try:
        connection.send(request_bytes(keep_alive=True))
        await poll(lambda: connection.reply() is not None, timeout=3, interval=0.01, what="the first answer")
        first = len(connection.received)
        idle_until = time.monotonic() + REQUEST_TIMEOUT * 3
        await poll(lambda: time.monotonic() > idle_until or connection.closed, timeout=5, what="a pause")
        assert not connection.closed
        connection.send(request_bytes())
        await poll(lambda: b"UTCDateTime" in connection.received[first:], timeout=3, interval=0.01,
                   what="the second answer")
    finally:
        connection.abort()


@pytest_twisted.ensureDeferred
async def test_slow_answer_is_not_cut_off(guarded: Guarded) -> None:
    """A PullMessages that waits longer than the request deadline is answered normally (the deadline ends with the request)."""
    create = await raw_exchange_on(guarded.port, authed(op(ns.TEV, "CreatePullPointSubscription")),
                                   "/onvif/events_service")
    address = etree.fromstring(create).findtext(f".//{{{ns.WSA}}}Address")
    assert address is not None
    path = "/" + address.split("/", 3)[3]
    pull = op(ns.TEV, "PullMessages", "<Timeout>PT1S</Timeout><MessageLimit>100</MessageLimit>")
    await raw_exchange_on(guarded.port, authed(pull), path)  # the initial property messages
    started = time.monotonic()
    body = await raw_exchange_on(guarded.port, authed(pull), path)
    assert time.monotonic() - started >= 0.9
    assert b"PullMessagesResponse" in body


async def raw_exchange_on(port: int, body: bytes, path: str) -> bytes:
    """POST ``body`` to ``path`` on a raw connection; the 200 answer's body."""
    connection = await raw_connect(port)
    try:
        connection.send(request_bytes(body, path))
        await poll(lambda: connection.reply() is not None or connection.closed, timeout=10, interval=0.01,
                   what="an answer")
        reply = connection.reply()
        check_reply(reply)
        assert reply is not None and reply.status == 200, connection.received[:500]
        return reply.body
    finally:
        connection.abort()


@pytest_twisted.ensureDeferred
async def test_relay_listeners_are_guarded(guarded: Guarded) -> None:
    """Every listener build_relay makes serves through a GuardedSite with the BoundedRequest body cap."""
    sites = relay_sites(guarded.relay.service)
    assert sites
    assert all(isinstance(site, GuardedSite) and site.requestFactory is BoundedRequest for site in sites), sites
