"""Network helpers: HTTP client connection pools (closed when the relay stops), answers' bodies read within a
bound, the HTTP clients' transport failures told apart and said in a few words, peers' text made printable, hosts in
URLs, IP addresses read from text."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterable, cast
from urllib.parse import quote

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, gatherResults
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss

_CANCELLATIONS = (CancelledError, TimeoutError, ConnectingCancelledError)
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def printable(text: str) -> str:
    """``text`` with each control character (and each one XML cannot hold) as ``?``.

    For values read from cameras and mediamtx: they end up in log lines, the status
    document and the dashboard, where a control character would garble a terminal or make
    the page unbuildable.
    """
    return _UNPRINTABLE.sub("?", text)


def connection_pool(reactor: Any, per_host: int) -> HTTPConnectionPool:
    """A pool of persistent HTTP client connections, at most ``per_host`` kept idle for each host and port."""
    pool = cast(Any, HTTPConnectionPool)(reactor, persistent=True)
    pool.maxPersistentPerHost = per_host
    return cast(HTTPConnectionPool, pool)


class ClosePools(Service):
    """Closes the pools' idle connections when stopped (else they stay open until the process exits, and a peer
    sees them go only when its own idle timeout ends them)."""

    def __init__(self, clock: Any, pools: Iterable[HTTPConnectionPool], timeout: float = 2.0) -> None:
        self.clock = clock
        self.pools = list(pools)
        self.timeout = timeout
        """Seconds a stop waits for the connections to close: a TLS peer that never answers close_notify, or one
        that went away, must not hold the stop up."""

    def stopService(self) -> Deferred[None]:
        """Stop, and fire once every pool's idle connections are closed, or after ``timeout`` seconds (the closing
        goes on; nothing is cancelled, which would leave Twisted's own Deferreds with unhandled errors)."""
        cast(Any, Service).stopService(self)
        closed = gatherResults([cast(Any, pool).closeCachedConnections() for pool in self.pools], consumeErrors=True)
        stopped: Deferred[None] = Deferred()

        def done(_: object = None) -> None:
            if timer.active():
                timer.cancel()
            if not stopped.called:
                stopped.callback(None)

        timer = self.clock.callLater(self.timeout, done)
        closed.addBoth(done)
        return stopped


class BodyTooLarge(Exception):
    """An answer's body went past the bound its reader set; the connection was closed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer's body is larger than {limit} bytes")
        self.limit = limit


class _BodyReader(Protocol):
    """Keeps a body's bytes up to a bound; closes the connection past it or when its reader gives up."""

    def __init__(self, finished: Deferred[bytes], limit: int) -> None:
        self.finished = finished
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.chunks.clear()
            self.finished.errback(BodyTooLarge(self.limit))
            self.hang_up()
            return
        self.chunks.append(data)

    def hang_up(self) -> None:
        """Close the connection (the body transport is a push producer; stopping it closes the connection)."""
        if self.transport is not None:
            cast(Any, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:
            return
        if cast(Any, reason).check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)


def read_body(response: Any, limit: int) -> Deferred[bytes]:
    """The body of an HTTP client's answer (an ``IResponse``), at most ``limit`` bytes.

    Fails with ``BodyTooLarge`` past the bound and with the transport's failure when the
    answer is cut off. Cancelling it (a timeout) closes the connection, so a peer that
    stalls or never ends a body holds neither a connection nor memory. Ask treq for the
    answer with ``unbuffered=True``: its buffered answers keep every byte whoever reads them.
    """
    finished: Deferred[bytes] = Deferred(lambda _: reader.hang_up())  # cancelled only once ``reader`` exists
    reader = _BodyReader(finished, limit)
    response.deliverBody(reader)
    return finished


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is (or wraps, as treq's ResponseNeverReceived does) a cancellation or a timeout.

    A request cancelled while still connecting fails with ConnectingCancelledError; one
    cancelled by ``Deferred.addTimeout`` with TimeoutError.
    """
    if isinstance(exc, _CANCELLATIONS):
        return True
    reasons = getattr(exc, "reasons", None) or []
    return any(isinstance(r, Failure) and isinstance(r.value, _CANCELLATIONS) for r in reasons)


def describe(exc: BaseException) -> str:
    """A short human description of a connection-level failure, for a log line or an error message."""
    if isinstance(exc, (ResponseFailed, ResponseNeverReceived, RequestTransmissionFailed)):
        inner = "; ".join(
            describe(r.value) if isinstance(r, Failure) and r.value is not None else str(r) for r in exc.reasons
        ) or "connection lost"
        if isinstance(exc, ResponseNeverReceived):
            return f"connection closed without an answer ({inner})"
        if isinstance(exc, ResponseFailed):
            return f"answer cut off ({inner})"
        return inner
    if isinstance(exc, ConnectTimeout):
        return "timed out"
    text = str(exc).strip() or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


def url_host(host: str) -> str:
    """``host`` as it goes into a URL's authority: an IPv6 address in brackets, its zone as ``%25zone``."""
    if ":" in host and not host.startswith("["):
        address, _, zone = host.partition("%")
        return f"[{address}%25{quote(zone, safe='')}]" if zone else f"[{address}]"
    return host


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address written in ``host`` (scope id dropped, IPv4-mapped IPv6 as IPv4), or None for a name."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
