"""GuardedChannel's way in for whole plain requests answers exactly as twisted.web's line reader does.

Each request is sent twice, to two channels of the same site on the same clock: one that
may take plain requests past the line reader, one that may not. Everything written back,
whether the connection closes, and what the resource saw must be the same; the explicit
cases also say which requests take the plain way.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource

from atomrelay.web.limits import GuardedChannel, GuardedSite
from atomrelay.onvif.server import BoundedRequest


class Echo(Resource):
    """Answers every method with what it saw of the request, and keeps that too."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Any, ...]] = []

    def render(self, request: Any) -> bytes:
        seen = (request.method, request.uri, request.clientproto, sorted(request.requestHeaders.getAllRawHeaders()),
                request.content.read())
        self.seen.append(seen)
        return repr(seen).encode("utf-8")


class SmallBody(BoundedRequest):
    max_body = 64


class Transport(StringTransport):
    """A StringTransport that can shut its write side (a 413 does) and, like a TCP transport, lets a channel
    resume reading after it asked to close (a no-op then)."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def resumeProducing(self) -> None:
        if not self.disconnecting:
            super().resumeProducing()


class ClosingRequest(BoundedRequest):
    """Closes the connection as soon as the head is in (as a refusal might)."""

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)
        self.channel.transport.loseConnection()


Before = Callable[[Any, Clock], None]


def exchange(chunks: list[bytes], plain: bool, before: Before | None = None,
             factory: type[BoundedRequest] = SmallBody) -> tuple[Any, ...]:
    """Feed ``chunks`` to a new channel (after ``before``); what it wrote, its state after, and what the resource
    saw."""
    echo = Echo()
    clock = Clock()
    site = GuardedSite(echo, requestFactory=factory, reactor=clock)
    channel: Any = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    channel.plain_requests = plain
    taken: list[bool] = []
    if plain:
        original = channel._plain_request

        def spy(data: bytes) -> bool:
            taken.append(original(data))
            return taken[-1]

        channel._plain_request = spy
    transport = Transport()
    channel.makeConnection(transport)
    if before is not None:
        before(channel, clock)
    raised = []
    for chunk in chunks:
        try:
            channel.dataReceived(chunk)
        except Exception as error:  # twisted.web's own slips (a reactor would drop the connection)
            raised.append(repr(error))
    state = (transport.value(), transport.disconnecting, transport.write_closed, echo.seen, raised,
             channel.persistent, channel.line_mode, channel._buffer, len(channel.requests), channel._request_started)
    return state, taken


def same_either_way(chunks: list[bytes], **setup: Any) -> list[bool]:
    """Assert both channels behave alike; which calls of the plain way took the request."""
    plain, taken = exchange(chunks, True, **setup)
    reference, _ = exchange(chunks, False, **setup)
    assert plain == reference
    return taken


def post(body: bytes, *headers: str, target: str = "/onvif/device_service", version: str = "HTTP/1.1") -> bytes:
    head = f"POST {target} {version}\r\nHost: relay\r\n" + "".join(f"{h}\r\n" for h in headers)
    return head.encode("latin-1") + b"\r\n" + body


BODY = b"<s:Envelope/>"
LENGTH = f"Content-Length: {len(BODY)}"


@pytest.mark.parametrize(
    ("chunks", "taken"),
    [
        ([b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n"], True),
        ([b"GET /a HTTP/1.1\r\n\r\n"], True),
        ([post(BODY, LENGTH, "Content-Type: application/soap+xml")], True),
        ([post(BODY, "content-LENGTH:\t0013 ")], True),
        ([post(BODY, LENGTH, "Expect: 100-continue")], True),  # 100 Continue still sent, as twisted.web does
        ([post(BODY, LENGTH, "Connection: close")], True),
        ([post(BODY, LENGTH, version="HTTP/1.0")], True),
        ([post(b"x" * 65, "Content-Length: 65")], True),  # refused 413 by BoundedRequest either way
        ([post(b"", "Content-Length: 0")], True),
        ([post(BODY, "Content-Length: 13, 13")], False),
        ([post(BODY, LENGTH, LENGTH)], False),
        ([post(BODY, LENGTH, "Transfer-Encoding: chunked")], False),
        ([post(b"d\r\n<s:Envelope/>\r\n0\r\n\r\n", "Transfer-Encoding: chunked")], False),
        ([post(BODY, "Content-Length: 12")], False),  # a byte more than declared
        ([post(BODY, "Content-Length: 14")], False),  # a byte short: waits for it
        ([post(BODY, "Content-Length: +13")], False),
        ([post(BODY, LENGTH, "X-Folded: a", " b")], False),
        ([post(BODY, LENGTH, "Bad Name: x")], False),
        ([post(BODY, LENGTH, "X-Latin: caf\xe9")], False),
        ([post(BODY, LENGTH, target="*")], False),
        ([post(BODY, LENGTH, target="http://relay/onvif")], False),
        ([post(BODY, LENGTH, version="HTTP/2.0")], False),
        ([b"GET / HTTP/1.1\nHost: relay\n\n"], False),
        ([b"\r\nGET / HTTP/1.1\r\n\r\n"], False),
        ([b"GET / HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"], False),  # pipelined
        ([post(BODY, LENGTH)[:20], post(BODY, LENGTH)[20:]], False),
    ],
)
def test_plain_requests_and_others(chunks: list[bytes], taken: bool) -> None:
    """Plain whole requests take the plain way; every request is answered as twisted.web alone answers it."""
    assert (True in same_either_way(chunks)) is taken


def test_kept_alive_requests_each_take_the_plain_way() -> None:
    """On a kept-alive connection every whole plain request after the first takes it as well."""
    taken = same_either_way([post(BODY, LENGTH)] * 3 + [b"GET /x HTTP/1.1\r\n\r\n"] * 2)
    assert taken == [True] * 5


def idle_too_long(channel: Any, clock: Clock) -> None:
    """The idle timeout closes the connection; over TLS, data may still come in while it closes."""
    clock.advance(61)
    assert channel.transport.disconnecting


def small_limits(channel: Any, clock: Clock) -> None:
    channel.maxHeaders = 5
    channel.totalHeadersSize = 100


HEADERS_AS_BODY = b"X-Injected: from-body\r\n\r\n"


@pytest.mark.parametrize(
    ("chunks", "setup", "taken"),
    [
        ([b"GET /a HTTP/1.1\r\nHost: relay\r\n\r\n", b"\r\n"], {"before": idle_too_long}, False),
        ([post(HEADERS_AS_BODY, "Content-Length: 25"), b"x", b"x", b"B" * 25], {"before": idle_too_long}, False),
        ([post(BODY, LENGTH, "Expect: 100-continue")], {"before": idle_too_long}, False),
        ([b"GET /a HTTP/1.1\r\nHost: relay\r\n\r\n", b"GET /b HTTP/1.1\r\n\r\n"], {"factory": ClosingRequest},
         True),
        ([post(HEADERS_AS_BODY, "Content-Length: 25"), b"more"], {"factory": ClosingRequest}, True),
        ([post(b"", *[f"X-{n}: v" for n in range(10)])], {"before": small_limits}, False),
        ([post(b"", *[f"X-{n}: {'v' * 60}" for n in range(3)])], {"before": small_limits}, False),
    ],
)
def test_closing_connections_and_smaller_limits(chunks: list[bytes], setup: dict[str, Any], taken: bool) -> None:
    """A connection closing (idle timeout, or closed from gotLength) and a channel with smaller header limits are
    read as twisted.web reads them: a body is never read as headers, a limit never passed."""
    assert (True in same_either_way(chunks, **setup)) is taken


_GOOD_NAMES = ["Host", "Content-Type", "Expect", "Connection", "X-A", "Cookie", "SOAPAction", "User-Agent"]
_GOOD_VALUES = ["", "relay", "100-continue", "close", "keep-alive", "a=b; c=d", "application/soap+xml", " x\t"]
_MUTATIONS = [
    "method", "target", "version", "newline", "name", "value", "length", "second length", "transfer-encoding",
    "pipelined", "extra empty line",
]


@st.composite
def requests(draw: Any) -> list[bytes]:
    """A request in one or more chunks: mostly plain, or with one thing made unusual."""
    mutation = draw(st.one_of(st.none(), st.sampled_from(_MUTATIONS)))
    method = draw(st.sampled_from(["GET", "POST", "PUT", "HEAD"]))
    target = draw(st.sampled_from(["/", "/onvif/device_service", "/%20?a=b"]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    newline = "\r\n"
    headers = draw(st.lists(st.tuples(st.sampled_from(_GOOD_NAMES), st.sampled_from(_GOOD_VALUES)), max_size=4))
    body = draw(st.binary(max_size=80))
    length = str(len(body))
    if mutation == "method":
        method = draw(st.sampled_from(["get", "P@ST", "", "G ET"]))
    elif mutation == "target":
        target = draw(st.sampled_from(["/a b", "*", "http://x/", "/\xe9", "", "/\x7f"]))
    elif mutation == "version":
        version = draw(st.sampled_from(["HTTP/2.0", "http/1.1", "HTTP/1.1 ", "HTTP/1"]))
    elif mutation == "newline":
        newline = "\n"
    elif mutation == "name":
        headers.append((draw(st.sampled_from(["Bad Name", "", "X\x00", "X\xe9", " Host"])), "x"))
    elif mutation == "value":
        headers.append(("X-B", draw(st.text(alphabet=" \t\x00\x7fa:\xe9\r\n,0", max_size=6))))
    elif mutation == "length":
        length = draw(st.sampled_from([str(len(body) + 1), str(max(len(body) - 1, 0)), "+1", "-1", "a", " ", "1 1"]))
    elif mutation == "second length":
        headers.append(("content-length", draw(st.sampled_from([length, "0"]))))
    elif mutation == "transfer-encoding":
        headers.append(("Transfer-Encoding", draw(st.sampled_from(["chunked", "identity", "gzip"]))))
    if body or mutation in ("length", "second length") or draw(st.booleans()):
        headers.insert(draw(st.integers(0, len(headers))), (draw(st.sampled_from(["Content-Length", "content-length"])),
                                                           length))
    lines = [f"{method} {target} {version}"] + [f"{name}: {value}" for name, value in headers]
    data = (newline.join(lines) + newline + newline).encode("latin-1") + body
    if mutation == "pipelined":
        data += draw(st.sampled_from([b"GET /next HTTP/1.1\r\n\r\n", b"GET /partial HTTP/1.1\r\nHo", b"\r\n"]))
    elif mutation == "extra empty line":
        data = b"\r\n" + data
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=2)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


@settings(max_examples=400, deadline=None)
@given(requests())
def test_any_request_is_answered_as_twisted_web_answers_it(chunks: list[bytes]) -> None:
    """Over many requests, good and bad: the same bytes back, the same state, the same requests seen."""
    same_either_way(chunks)


def test_the_plain_way_is_on_with_the_installed_twisted() -> None:
    """The twisted.web state it relies on is where it expects it (else every request takes the line reader)."""
    assert GuardedChannel.plain_requests is True
