"""Limits for the relay's HTTP listeners: a deadline per request and caps on open connections.

twisted.web alone leaves a listener open to slow clients. Its only timer is the idle
timeout (``Site.timeOut``, 60 s), and every byte received restarts it, so a client that
dribbles a header byte every few seconds, or announces a body and never sends it all,
keeps its connection for ever; and nothing limits how many connections are open (each
one costs a file descriptor, 1024 by default). ``GuardedSite`` is a ``Site`` that adds:

* a request deadline: the request line, the headers and the whole body must arrive within
  ``request_timeout`` seconds of the request's first byte, else the client gets
  ``408 Request Timeout`` and the connection is closed (aborted ``abortTimeout`` seconds
  later if the peer does not let it close). Time spent answering is not counted, and an
  idle keep-alive connection is left to the idle timeout (``idle_timeout``);
* one timer per site instead of per connection: twisted.web re-arms, cancels and
  re-creates a connection's idle-timeout call for every request, and a per-connection
  deadline call would add to that. Here a connection only notes the time of its last
  byte and of its request's first byte, and one sweep (every ``tick``: a quarter of the
  shorter limit, at most 1 s, running only while connections are open) closes the ones
  past a limit. A limit therefore fires up to one tick late, never early;
* an access log only when asked for (``access_log=True``): twisted.web formats a line
  for every request, which costs a fifth of a small SOAP request's CPU time;
* a first-byte deadline: a connection that has sent nothing ``first_byte_timeout``
  seconds after it opened is closed, so that silent connections give their slot back
  long before the idle timeout;
* connection caps (``ConnectionLimits``, one object shared by every listener of the
  process): at most ``max_connections`` connections at once, at most ``max_per_source``
  from one source network (a /24 for IPv4, a /64 for IPv6, an IPv4-mapped IPv6 address
  counting as its IPv4 address), so that one host with many addresses cannot take every
  slot, and at most ``max_per_address`` from one address, so that one host cannot take
  every slot of its network (where the NVR and the cameras usually are). A connection over a cap gets
  ``503 Service Unavailable`` with ``Retry-After`` and is closed before anything is
  read from it.

Requests cut off, bodies refused as too large and connections refused are logged at most
once per ``LOG_INTERVAL`` seconds each, with how many there were, so that a flood of slow
or oversized requests is not also a flood of log lines.

Use it wherever a ``Site`` would be: ``GuardedSite(root, requestFactory=BoundedRequest,
limits=shared_limits)``.
"""

from __future__ import annotations

import io
import ipaddress
from collections import Counter
from typing import Any, cast

from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request as ServerRequest
from twisted.web.server import Site

from atomrelay.net import ip_of

REQUEST_TIMEOUT = 10.0
"""Seconds a client has to send one whole request (line, headers and body)."""
FIRST_BYTE_TIMEOUT = 9.0
"""Seconds a new connection has to send its first byte (closed within 10 s, the sweep's tick included)."""
IDLE_TIMEOUT = 60.0
"""Seconds a connection may sit idle between requests (twisted.web's default)."""
MAX_CONNECTIONS = 512
"""Open connections on all listeners together (the systemd units allow 4096 file descriptors)."""
MAX_PER_SOURCE = 128
"""Open connections from one source network, /24 or /64 (an NVR with many cameras opens several per camera)."""
MAX_PER_ADDRESS = 64
"""Open connections from one address: half its network's share (an NVR holds about three per camera device)."""
LOG_INTERVAL = 10.0
"""Seconds between two log lines about refused connections."""

# Not a class-level ``log``: on a Site that name is the access-log method (HTTPFactory.log).
_log = Logger(namespace="atomrelay.web.limits")

_TIMEOUT_BODY = b"No complete request within the time allowed.\n"
_BUSY_BODY = b"Too many connections; try again.\n"

MAX_BODY = 256 * 1024
"""Largest request body accepted (bytes)."""
PLAIN_TEXT = b"text/plain; charset=utf-8"
TOO_LARGE = b"Request body too large.\n"


def _plain_response(status: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n" + extra + b"Connection: close\r\n\r\n" + body
    )


_TIMEOUT_RESPONSE = _plain_response(b"408 Request Timeout", _TIMEOUT_BODY)
_BUSY_RESPONSE = _plain_response(b"503 Service Unavailable", _BUSY_BODY, b"Retry-After: 1\r\n")


class _Tally:
    """Counts events and says when they may be logged again (at most once per LOG_INTERVAL)."""

    def __init__(self) -> None:
        self._count = 0
        self._logged_at: float | None = None

    def due(self, now: float) -> int:
        """Count one event; how many to report now, or 0 while the last report is recent."""
        self._count += 1
        if self._logged_at is not None and now - self._logged_at < LOG_INTERVAL:
            return 0
        count, self._count, self._logged_at = self._count, 0, now
        return count


def source_network(host: str) -> str:
    """The network a peer address counts against: its /24 (IPv4, IPv4-mapped IPv6 too) or /64 (IPv6).

    Anything that is no IP address (a UNIX socket path, say) is its own source.
    """
    address = ip_of(host)
    if address is None:
        return host
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network((address, prefix), strict=False))


def address_key(host: str) -> str:
    """The address a peer counts against: the address itself, an IPv4-mapped IPv6 one as its IPv4 address."""
    address = ip_of(host)
    return host if address is None else str(address)


class ConnectionLimits:
    """The connection caps of every listener of the process: one total, one per source network.

    Give the same object to every ``GuardedSite`` so that the caps hold across listeners
    (per_camera mode opens one listener per camera).
    """

    def __init__(
        self,
        max_connections: int = MAX_CONNECTIONS,
        max_per_source: int = MAX_PER_SOURCE,
        max_per_address: int = MAX_PER_ADDRESS,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.max_per_address = max_per_address
        self.open_connections = 0
        self._per_source: Counter[str] = Counter()
        self._per_address: Counter[str] = Counter()
        self._refused = _Tally()

    def admit(self, source: str, address: str) -> bool:
        """Take a slot for a connection from ``address`` in ``source`` (its ``source_network``); False when a cap
        is reached."""
        if (
            self.open_connections >= self.max_connections
            or self._per_source[source] >= self.max_per_source
            or self._per_address[address] >= self.max_per_address
        ):
            return False
        self.open_connections += 1
        self._per_source[source] += 1
        self._per_address[address] += 1
        return True

    def release(self, source: str, address: str) -> None:
        """Give back the slot of a connection from ``address`` in ``source``."""
        self.open_connections -= 1
        for counter, key in ((self._per_source, source), (self._per_address, address)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    def note_refusal(self, now: float, address: str, source: str) -> None:
        """Log (now and then) that connections were refused."""
        count = self._refused.due(now)
        if count:
            _log.warn(
                "refused {count} connection(s) over the limits (latest from {peer}: {address_open} open from it, "
                "{source_open} from {source}, {open} in all; limits {per_address} per address, {per_source} per "
                "source network, {total} in all)",
                count=count,
                peer=address or "?",
                address_open=self._per_address[address],
                source=source or "?",
                source_open=self._per_source[source],
                open=self.open_connections,
                per_address=self.max_per_address,
                per_source=self.max_per_source,
                total=self.max_connections,
            )


class GuardedChannel(HTTPChannel):
    """An HTTP/1.1 channel whose timeouts and request deadline are checked by its site's sweep.

    twisted.web's ``TimeoutMixin`` calls (``setTimeout``/``resetTimeout``) only record
    times here; ``GuardedSite`` calls ``check`` every tick.
    """

    site: GuardedSite
    _now: Any = None
    """The site's clock (its reactor's ``seconds``)."""
    peer_host = ""
    source = ""
    """The peer's ``source_network``: the slot it holds in the site's limits."""
    _opened_at: float | None = None
    """When the connection opened; None once its first byte came."""
    _idle_since = 0.0
    """When the connection last received data or changed its idle timeout (``timeOut``)."""
    _request_started: float | None = None
    """When the first byte of the request now arriving came; None between requests and once its body is in."""
    _abort_call: Any = None
    """The pending abort of a connection closed for being too slow."""

    _peer: Any = None
    _local: Any = None

    def connectionMade(self) -> None:
        """Start the first-byte deadline."""
        self._opened_at = self._now()
        super().connectionMade()  # type: ignore[no-untyped-call]

    def setTimeout(self, period: int | None) -> int | None:
        """Set the idle timeout (None: off, as while a request is answered); the previous one."""
        previous = self.timeOut
        self.timeOut = period
        if period is not None:
            self._idle_since = self._now()
        return previous

    def getPeer(self) -> Any:
        """The peer's address, asked of the transport once (twisted.web asks for every request)."""
        if self._peer is None:
            self._peer = super().getPeer()  # type: ignore[no-untyped-call]
        return self._peer

    def getHost(self) -> Any:
        """The local address, asked of the transport once (a ``getsockname`` call per request otherwise)."""
        if self._local is None:
            self._local = super().getHost()  # type: ignore[no-untyped-call]
        return self._local

    def resetTimeout(self) -> None:
        """Data arrived: the idle time starts again."""
        self._idle_since = self._now()

    def dataReceived(self, data: bytes) -> None:
        """Start the request deadline on the first byte of a request, then parse as usual."""
        # ``requests`` is empty only between requests: the deadline starts with the first
        # byte of the next one (buffered pipelined bytes come back here once it is).
        if data and self._request_started is None and not self.requests:
            self._request_started = self._now()
            self._opened_at = None
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def allContentReceived(self) -> None:
        """The whole request is in: its deadline no longer applies."""
        self._request_started = None
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Give the connection's slot back."""
        self._request_started = None
        self._opened_at = None
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        self.site.release(self)

    def check(self, now: float) -> None:
        """Close the connection if it is silent, its request overdue or it has been idle too long (the site's sweep)."""
        started = self._request_started
        opened = self._opened_at
        if opened is not None and now - opened >= self.site.first_byte_timeout:
            self._opened_at = None
            self.timeOut = None
            self.site.note_silent(self.peer_host)
            self._close()
        elif started is not None and now - started >= self.site.request_timeout:
            self._too_slow()
        elif self.timeOut is not None and now - self._idle_since >= self.timeOut:
            self.timeOut = None  # fires once, as twisted's timeout call does
            self.timeoutConnection()  # type: ignore[no-untyped-call]

    def _too_slow(self) -> None:
        self._request_started = None
        self.timeOut = None
        transport: Any = self.transport
        if transport is None:
            return
        self.site.note_too_slow(self.peer_host)
        transport.write(_TIMEOUT_RESPONSE)
        self._close()

    def _close(self) -> None:
        """Close the connection; abort it ``abortTimeout`` seconds later if the peer does not let it close."""
        if self.transport is None:
            return
        if self.abortTimeout is not None:
            self._abort_call = self.callLater(  # type: ignore[no-untyped-call]
                self.abortTimeout, self.forceAbortClient
            )
        self.loseConnection()  # type: ignore[no-untyped-call]


class _Refusal(Protocol):
    """Answers 503 at once and closes: the connection is over a cap."""

    def connectionMade(self) -> None:
        """Refuse without reading anything."""
        transport: Any = self.transport
        transport.write(_BUSY_RESPONSE)
        transport.loseConnection()


class GuardedSite(Site):
    """A ``Site`` with a first-byte deadline, a per-request deadline, an idle timeout and connection caps.

    ``limits`` holds the caps; without it the site gets limits of its own, from
    ``max_connections``, ``max_per_source`` and ``max_per_address``. Other keyword arguments go to ``Site``
    (``requestFactory``, ``logFormatter``, ``reactor``...).
    """

    protocol = GuardedChannel  # type: ignore[assignment]  # plain HTTP/1.1: no HTTP/2 negotiation without TLS

    def __init__(
        self,
        resource: Any,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        first_byte_timeout: float = FIRST_BYTE_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        limits: ConnectionLimits | None = None,
        max_connections: int = MAX_CONNECTIONS,
        max_per_source: int = MAX_PER_SOURCE,
        max_per_address: int = MAX_PER_ADDRESS,
        access_log: bool = False,
        **site_arguments: Any,
    ) -> None:
        super().__init__(resource, timeout=idle_timeout, **site_arguments)  # type: ignore[no-untyped-call]
        self.access_log = access_log
        self.request_timeout = request_timeout
        self.first_byte_timeout = first_byte_timeout
        self.limits = limits if limits is not None else ConnectionLimits(
            max_connections, max_per_source, max_per_address)
        self.tick = min(1.0, request_timeout / 4, first_byte_timeout / 4, idle_timeout / 4)
        """Seconds between two sweeps over the open connections."""
        self._channels: set[GuardedChannel] = set()
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = self.reactor
        self._too_slow = _Tally()
        self._silent = _Tally()
        self._too_large = _Tally()

    @property
    def open_connections(self) -> int:
        """Connections open on this site."""
        return len(self._channels)

    def buildProtocol(self, addr: Any) -> Any:
        """A guarded channel, or a 503 refusal when a connection cap is reached."""
        host = str(getattr(addr, "host", "") or "")
        source = source_network(host)
        address = address_key(host)
        if not self.limits.admit(source, address):
            self.limits.note_refusal(self.seconds(), address, source)
            refusal = _Refusal()
            refusal.factory = cast(Any, self)
            return refusal
        channel = cast(GuardedChannel, super().buildProtocol(addr))  # type: ignore[no-untyped-call]
        channel.peer_host = host
        channel.source = source
        channel._now = cast(Any, self.reactor).seconds
        self._channels.add(channel)
        if not self._sweeper.running:
            self._sweeper.start(self.tick, now=False)
        return channel

    def seconds(self) -> float:
        """The site's clock (its reactor's, or the one given for tests)."""
        now: float = cast(Any, self.reactor).seconds()
        return now

    def _sweep(self) -> None:
        """Close the connections past a limit (every tick while any are open)."""
        now = self.seconds()
        for channel in list(self._channels):
            channel.check(now)

    def getResourceFor(self, request: Any) -> Any:
        """The resource for ``request``; a path the root lists in its ``routes`` goes straight to that leaf.

        A root may offer ``routes``: exact request paths (as received, before unquoting)
        mapped to the leaf resource the tree would give for them, every segment consumed.
        Such a request gets the same ``prepath``, ``postpath`` and ``sitepath`` as after
        ``Site.getResourceFor``'s walk, without the walk (a call per path segment).
        """
        routes = getattr(self.resource, "routes", None)
        leaf = routes.get(request.path) if routes else None
        if leaf is None:
            return super().getResourceFor(request)  # type: ignore[no-untyped-call]
        request.site = self
        request.sitepath = []
        request.prepath, request.postpath = request.postpath, []
        return leaf

    def log(self, request: Any) -> None:
        """The access log line for ``request``, when the access log is on."""
        if self.access_log:
            super().log(request)

    def release(self, channel: GuardedChannel) -> None:
        """A guarded channel closed: its slot is free again."""
        if channel not in self._channels:
            return
        self._channels.discard(channel)
        self.limits.release(channel.source, address_key(channel.peer_host))
        if not self._channels and self._sweeper.running:
            self._sweeper.stop()

    def note_too_slow(self, host: str) -> None:
        """Log (now and then) that connections were cut off for not sending a whole request in time."""
        count = self._too_slow.due(self.seconds())
        if count:
            _log.info(
                "closed {count} connection(s) that sent no complete request within {timeout:g}s (latest from {peer})",
                count=count,
                timeout=self.request_timeout,
                peer=host or "?",
            )

    def note_too_large(self, host: str, size: int, limit: int) -> None:
        """Log (now and then) that request bodies over the cap were refused."""
        count = self._too_large.due(self.seconds())
        if count:
            _log.info(
                "refused {count} request bod(ies) over {limit} bytes (latest from {peer}: {size} bytes or more)",
                count=count,
                limit=limit,
                peer=host or "?",
                size=size,
            )

    def note_silent(self, host: str) -> None:
        """Log (now and then) that connections were closed for sending nothing."""
        count = self._silent.due(self.seconds())
        if count:
            _log.info(
                "closed {count} connection(s) that sent nothing within {timeout:g}s (latest from {peer})",
                count=count,
                timeout=self.first_byte_timeout,
                peer=host or "?",
            )


class BoundedRequest(ServerRequest):
    """A twisted.web request that refuses a body over ``max_body`` without buffering it.

    twisted.web buffers whole request bodies before rendering, so the cap lives here:
    a Content-Length over the cap is answered 413 as soon as the headers are in (no
    ``100 Continue``), a chunked body the moment it grows past the cap. The refusal is
    a lingering close: the 413 is sent and the write side shut, then further body bytes
    are read and dropped for at most ``linger`` seconds or ``max_body`` more bytes
    before the connection is aborted, so that the client reads the 413 instead of a
    reset. Use it for the relay's Site: ``Site(root, requestFactory=BoundedRequest)``.
    """

    log = Logger()
    max_body = MAX_BODY
    linger = 2.0
    _refused = False
    _received = 0
    _discarded = 0
    _buffer: io.BytesIO
    _abort_call: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No POST to the relay is an HTML form: skip twisted.web's form parsing, whose
        # Content-Type parsing through email.message alone cost ~15 % of a SOAP request.
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    def render(self, resource: Any) -> None:
        """Render ``resource`` as twisted.web does, without the Server header naming the Twisted version."""
        self.responseHeaders.removeHeader(b"server")
        super().render(resource)  # type: ignore[no-untyped-call]

    def gotLength(self, length: int | None) -> None:
        """Refuse a declared length over the cap; otherwise buffer in memory (never a temp file)."""
        self.content = self._buffer = io.BytesIO()
        if length is not None and length > self.max_body:
            self._refuse(length)

    def handleContentChunk(self, data: bytes) -> None:
        """Keep a chunk unless the body has grown past the cap; after a refusal, drop it."""
        if self._refused:
            self._discarded += len(data)
            if self._discarded > self.max_body:
                self._abort()
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._refuse(self._received)
            return
        self._buffer.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """Process the request unless it was refused (the connection is closing)."""
        if not self._refused:
            super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure) -> None:
        """Forget the pending abort of a refused request."""
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _refuse(self, size: int) -> None:
        self._refused = True
        self.content = self._buffer = io.BytesIO()
        # twisted.web sends "100 Continue" after gotLength unless the header is gone.
        self.requestHeaders.removeHeader(b"expect")
        channel: Any = self.channel
        transport = channel.transport
        remote = str(getattr(transport.getPeer(), "host", "?"))
        if isinstance(channel.site, GuardedSite):
            channel.site.note_too_large(remote, size, self.max_body)
        else:
            self.log.info("refused a request body of {size} bytes or more from {remote} (limit {limit})",
                          size=size, remote=remote, limit=self.max_body)
        transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: " + PLAIN_TEXT + b"\r\n"
            b"Content-Length: " + str(len(TOO_LARGE)).encode("ascii") + b"\r\n"
            b"Connection: close\r\n\r\n" + TOO_LARGE
        )
        transport.loseWriteConnection()
        self._abort_call = channel.callLater(self.linger, self._abort)

    def _abort(self) -> None:
        channel: Any = self.channel
        if channel is not None and channel.transport is not None:
            channel.transport.abortConnection()
