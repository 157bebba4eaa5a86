"""GuardedSite's access log: off unless asked for (it costs CPU on every request), complete when on."""

from __future__ import annotations

import io
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource

from atomrelay.events.state import EventHub
from atomrelay.web.limits import BoundedRequest, ConnectionLimits, GuardedChannel, GuardedSite, source_network
from atomrelay.web.webhook import access_log_formatter


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        return b"hello"


def serve(site: GuardedSite, requests: int) -> bytes:
    """Send ``requests`` keep-alive GETs through one channel; everything the site wrote back."""
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    for number in range(requests):
        channel.dataReceived(f"GET /n{number} HTTP/1.1\r\nHost: relay\r\n\r\n".encode("ascii"))
    channel.connectionLost(None)
    return transport.value()


@pytest.mark.parametrize("access_log", [False, True])
def test_access_log_only_when_asked_for(access_log: bool) -> None:
    """Off: no line is formatted or written. On: one line per request, through the relay's formatter."""
    site = GuardedSite(Hello(), requestFactory=BoundedRequest, logFormatter=access_log_formatter(EventHub(Clock(), (), 20.0)),
                       access_log=access_log, reactor=Clock())
    log = io.StringIO()
    site._logFile = log  # where HTTPFactory.log writes (startFactory points it at twisted's log)

    answered = serve(site, 3)

    assert answered.count(b"HTTP/1.1 200 OK") == 3
    lines = log.getvalue().splitlines()
    if access_log:
        assert [line.split('"')[3] for line in lines] == ["GET /n0 HTTP/1.1", "GET /n1 HTTP/1.1", "GET /n2 HTTP/1.1"]
    else:
        assert lines == []


def guarded_connection() -> tuple[Clock, Any, StringTransport]:
    """A GuardedSite (10 s request deadline, 60 s idle timeout) on a Clock, a connection to it, and its first
    request answered at t=0."""
    clock = Clock()
    site = GuardedSite(Hello(), requestFactory=BoundedRequest, request_timeout=10.0, idle_timeout=60.0, reactor=clock)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: relay\r\n\r\n")
    assert transport.value().count(b" 200 OK") == 1
    return clock, channel, transport


def test_request_deadline_restarts_with_each_request_on_a_kept_connection() -> None:
    """Each request gets the whole deadline from its own first byte; time idle between requests never counts."""
    clock, channel, transport = guarded_connection()

    clock.advance(15)  # idle past the request deadline: nothing happens
    assert not transport.disconnecting
    channel.dataReceived(b"GET /b HTTP/1.1\r\nHost: re")  # the second request starts at t=15 and stalls
    clock.advance(9.9)
    assert not transport.disconnecting and b"408" not in transport.value()
    clock.advance(0.2)  # t=25.1: 10 s after its first byte
    assert b"HTTP/1.1 408 Request Timeout" in transport.value()
    assert transport.disconnecting


def test_a_request_finished_in_time_is_not_cut_off_later() -> None:
    """A deadline set for a request that arrived whole is never applied to the connection afterwards."""
    clock, channel, transport = guarded_connection()
    clock.advance(5)
    channel.dataReceived(b"GET /b HTTP/1.1\r\nHost: relay\r\n\r\n")  # at t=5: deadline moved to t=15
    for _ in range(30):
        clock.advance(1)
    assert transport.value().count(b" 200 OK") == 2
    assert b"408" not in transport.value() and not transport.disconnecting


def test_a_request_started_soon_after_another_gets_its_own_whole_deadline() -> None:
    """Request b starts at t=5 while a's deadline call (t=10) is still pending: b is cut off at t=15, not t=10."""
    clock, channel, transport = guarded_connection()
    clock.advance(5)
    channel.dataReceived(b"GET /b HTTP/1.1\r\n")
    clock.advance(5.1)
    assert b"408" not in transport.value() and not transport.disconnecting
    clock.advance(5)
    assert b"HTTP/1.1 408 Request Timeout" in transport.value()


def test_an_idle_connection_is_closed_by_the_sweep_within_a_tick_of_the_idle_timeout() -> None:
    """The idle timeout counts from the last byte; the site's one sweep closes the connection, never early."""
    clock, channel, transport = guarded_connection()
    site = channel.site
    assert site.tick == 1.0
    clock.advance(30)
    channel.dataReceived(b"GET /b HTTP/1.1\r\nHost: relay\r\n\r\n")  # t=30: idle again from here
    clock.advance(59.5)
    assert not transport.disconnecting
    clock.advance(1.0)  # t=90.5: 60 s idle since t=30, found by the sweep at t=90
    assert transport.disconnecting and b"408" not in transport.value()


def test_the_sweep_runs_only_while_connections_are_open() -> None:
    """No timer per connection, and none at all once the last connection has gone."""
    clock, channel, _ = guarded_connection()
    second = channel.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40002))
    second.makeConnection(StringTransport())
    assert len(clock.getDelayedCalls()) == 1
    channel.connectionLost(None)
    assert len(clock.getDelayedCalls()) == 1
    second.connectionLost(None)
    assert clock.getDelayedCalls() == []


def test_answers_carry_a_date_and_no_server_header() -> None:
    """BoundedRequest keeps twisted.web's Date header and does not name the server (nor its Twisted version)."""
    site = GuardedSite(Hello(), requestFactory=BoundedRequest, reactor=Clock())
    answered = serve(site, 2)
    assert answered.count(b"\r\nDate: ") == 2
    assert b"Server:" not in answered and b"Twisted" not in answered


class Where(Resource):
    """A leaf that answers with where the walk left the request."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return repr((request.prepath, request.postpath, request.sitepath)).encode("ascii")


class RoutedWhere(Where):
    """The same, marked: reached through ``routes``."""

    def render_GET(self, request: Any) -> bytes:
        return b"routed " + super().render_GET(request)


def where(root: Resource, path: str) -> bytes:
    site = GuardedSite(root, requestFactory=BoundedRequest, reactor=Clock())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40003))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(f"GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n".encode("ascii"))
    channel.connectionLost(None)
    return transport.value().split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize("path", ["/a/b", "/a/b/c", "/a/%62", "/a/b?x=1"])
def test_routes_reach_the_leaf_the_walk_would_reach_in_the_same_state(path: str) -> None:
    """A root's ``routes`` skip the walk for exact paths only; the request ends up exactly as after the walk."""

    class Routed(Resource):
        routes: dict[bytes, Resource] = {}

    walked, routed = Resource(), Routed()
    for root in (walked, routed):
        middle = Resource()
        root.putChild(b"a", middle)
        middle.putChild(b"b", Where())
    routed.routes = {b"/a/b": RoutedWhere()}
    answer = where(routed, path)
    assert answer.removeprefix(b"routed ") == where(walked, path)
    assert answer.startswith(b"routed ") == (path in ("/a/b", "/a/b?x=1"))


def test_a_connection_asks_its_transport_for_the_addresses_once() -> None:
    """twisted.web asks the channel for both addresses on every request; the transport is asked once."""

    class Counting(StringTransport):
        asked = 0

        def getHost(self) -> Any:
            self.asked += 1
            return super().getHost()

        def getPeer(self) -> Any:
            self.asked += 1
            return super().getPeer()

    site = GuardedSite(Hello(), requestFactory=BoundedRequest, reactor=Clock())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40004))
    transport = Counting()
    channel.makeConnection(transport)
    for _ in range(3):
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n")
    assert transport.value().count(b" 200 OK") == 3
    assert transport.asked == 2


@pytest.mark.parametrize(
    ("host", "network"),
    [
        ("192.168.1.23", "192.168.1.0/24"),
        ("::ffff:192.168.1.77", "192.168.1.0/24"),
        ("fd00::10", "fd00::/64"),
        ("fd00::ffff:0:10", "fd00::/64"),
        ("fd00:0:0:1::10", "fd00:0:0:1::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("/run/atomrelay.sock", "/run/atomrelay.sock"),
    ],
)
def test_peers_count_against_their_slash_24_or_slash_64(host: str, network: str) -> None:
    """IPv4 peers count per /24, IPv6 per /64, an IPv4-mapped IPv6 peer as its IPv4 address."""
    assert source_network(host) == network


def test_ipv6_peers_of_one_slash_64_share_its_slots() -> None:
    """Two IPv6 addresses of one /64 and an IPv4-mapped one of the same /24 as an IPv4 peer share their caps."""
    from twisted.internet.address import IPv6Address

    site = GuardedSite(Hello(), requestFactory=BoundedRequest, reactor=Clock(),
                       limits=ConnectionLimits(max_connections=10, max_per_source=1))
    assert isinstance(site.buildProtocol(IPv6Address("TCP", "fd00::1", 40000)), GuardedChannel)
    assert not isinstance(site.buildProtocol(IPv6Address("TCP", "fd00::2", 40000)), GuardedChannel)
    assert isinstance(site.buildProtocol(IPv4Address("TCP", "10.1.2.3", 40000)), GuardedChannel)
    assert not isinstance(site.buildProtocol(IPv6Address("TCP", "::ffff:10.1.2.200", 40000)), GuardedChannel)


def test_a_silent_connection_is_closed_at_the_first_byte_deadline() -> None:
    """A connection that sends nothing is closed 9 s after it opened; one that sent a byte is left to its request
    deadline."""
    clock = Clock()
    site = GuardedSite(Hello(), requestFactory=BoundedRequest, reactor=clock)
    silent = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40005))
    silent.makeConnection(StringTransport())
    talking = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40006))
    talking.makeConnection(StringTransport())
    clock.advance(8.5)
    talking.dataReceived(b"G")
    assert not silent.transport.disconnecting
    clock.advance(1.0)
    assert silent.transport.disconnecting and silent.transport.value() == b""
    assert not talking.transport.disconnecting


def test_bodies_refused_as_too_large_are_logged_now_and_then_with_a_count() -> None:
    """A flood of requests announcing huge bodies is answered 413 each time, but logged once per interval, with how
    many were refused: one line at the first, one with the other 49 after the interval."""
    from twisted.logger import globalLogPublisher

    from atomrelay.web.limits import LOG_INTERVAL

    clock = Clock()
    site = GuardedSite(Hello(), requestFactory=BoundedRequest, reactor=clock)
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if "request bod" in str(event.get("log_format", "")):
            lines.append(str(event["count"]))

    class HalfClosing(StringTransport):
        def loseWriteConnection(self) -> None:
            self.loseConnection()

    def refused(port: int) -> bytes:
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.7", port))
        transport = HalfClosing()
        channel.makeConnection(transport)
        channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: relay\r\nContent-Length: 999999999\r\n\r\n")
        return transport.value()

    globalLogPublisher.addObserver(observe)
    try:
        answers = [refused(41000 + number) for number in range(50)]
        clock.advance(LOG_INTERVAL)
        answers.append(refused(42000))
    finally:
        globalLogPublisher.removeObserver(observe)
    assert all(answer.startswith(b"HTTP/1.1 413 ") for answer in answers)
    assert lines == ["1", "50"]
