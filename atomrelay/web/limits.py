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
* connection caps: at most ``max_connections`` connections at once, and at most
  ``max_per_peer`` from one IP address, so that one client cannot take every slot. A
  connection over a cap gets ``503 Service Unavailable`` with ``Retry-After`` and is
  closed before anything is read from it;
* a quicker way in for the common request: one that arrives whole in one read, on an
  idle connection, with a plain head (see ``GuardedChannel._plain_request``). twisted.web's
  line reader calls Python code for every line and checks the request target byte by
  byte, about a tenth of a small SOAP request's CPU time.

Requests cut off and connections refused are logged at most once per ``LOG_INTERVAL``
seconds each, with how many there were, so that a flood of slow clients is not also a
flood of log lines.

Use it wherever a ``Site`` would be: ``GuardedSite(root, requestFactory=BoundedRequest)``.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, cast

from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.iweb import INonQueuedRequestFactory
from twisted.web.server import Site

REQUEST_TIMEOUT = 10.0
"""Seconds a client has to send one whole request (line, headers and body)."""
IDLE_TIMEOUT = 60.0
"""Seconds a connection may sit idle between requests (twisted.web's default)."""
MAX_CONNECTIONS = 512
"""Open connections per listener; half the default file descriptor limit of 1024."""
MAX_PER_PEER = 128
"""Open connections from one IP address (an NVR with many cameras opens several per camera)."""
LOG_INTERVAL = 10.0
"""Seconds between two log lines about refused connections."""

# Not a class-level ``log``: on a Site that name is the access-log method (HTTPFactory.log).
_log = Logger(namespace="atomrelay.web.limits")

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PLAIN_HEAD = re.compile(
    rb"(" + _TOKEN + rb") (/[!-~]*) (HTTP/1\.[01])\r\n((?:" + _TOKEN + rb":[ \t!-~]*\r\n){0,100})\r\n"
)
"""A plain request head: method, origin-form target and version, then at most 100 header
lines, each a name, a colon and visible ASCII or blanks, every line ended by CRLF."""
_PLAIN_HEAD_MAX = 8192
"""Bytes a plain head may take (twisted.web allows 16384 for the request line and headers)."""
_LENGTH_FIELD = b"\ncontent-length:"
_KNOWN_TWISTED = all(
    hasattr(owner, name)
    for owner, name in (
        (HTTPChannel, "_HTTPChannel__first_line"), (LineReceiver, "_buffer"), (LineReceiver, "_busyReceiving"),
        (HTTPChannel, "headerReceived"), (HTTPChannel, "allHeadersReceived"), (HTTPChannel, "allContentReceived"),
    )
)
"""The twisted.web channel state the plain-request path sets is where it expects it."""

_TIMEOUT_BODY = b"No complete request within the time allowed.\n"
_BUSY_BODY = b"Too many connections; try again.\n"


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


class GuardedChannel(HTTPChannel):
    """An HTTP/1.1 channel whose idle timeout and request deadline are checked by its site's sweep.

    twisted.web's ``TimeoutMixin`` calls (``setTimeout``/``resetTimeout``) only record
    times here; ``GuardedSite`` calls ``check`` every tick.
    """

    site: GuardedSite
    _now: Any = None
    """The site's clock (its reactor's ``seconds``)."""
    peer_host = ""
    _idle_since = 0.0
    """When the connection last received data or changed its idle timeout (``timeOut``)."""
    _request_started: float | None = None
    """When the first byte of the request now arriving came; None between requests and once its body is in."""

    _peer: Any = None
    _local: Any = None
    plain_requests = _KNOWN_TWISTED
    """Take whole plain requests past twisted.web's line reader (``dataReceived``)."""

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
            if self.plain_requests and self._plain_request(data):
                return
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def _plain_request(self, data: bytes) -> bool:
        """Handle ``data`` if it is one whole plain request on an idle channel; False to leave it to twisted.web.

        Plain: ``_PLAIN_HEAD`` matches within the channel's limits on line, head and header
        count, there is no Transfer-Encoding, at most one Content-Length, and the body is
        exactly that long (no more bytes, no fewer). Any other request, a partial one or
        pipelined ones included, goes through twisted.web's line reader as before. A plain request is then handled by twisted.web's own steps
        (``headerReceived`` for each header line, ``allHeadersReceived``,
        ``rawDataReceived`` or ``allContentReceived``), called in the order its line reader
        calls them, so what it accepts, refuses and answers is the same; only the split
        into lines and the request-line check are done here, by one regular expression.
        """
        # twisted.web's own channel state, untyped there: the line reader idle and empty,
        # before the first line of a request (1: not even an extra empty line seen), on a
        # connection not closing (a TLS connection still delivers data while it closes,
        # and the line reader then takes one line per read).
        state: Any = self
        transport = state.transport
        if (not self.line_mode or state._buffer or state._busyReceiving or self.paused or not self.persistent
                or state._HTTPChannel__first_line != 1 or transport is None or transport.disconnecting):
            return False
        head = _PLAIN_HEAD.match(data, 0, min(_PLAIN_HEAD_MAX, self.totalHeadersSize, self.MAX_LENGTH))
        if head is None:
            return False
        fields = head[4]
        if fields.count(b"\n") > self.maxHeaders:
            return False
        lowered = b"\n" + fields.lower()
        body = data[head.end():]
        at = lowered.find(_LENGTH_FIELD)
        if at < 0:
            if body:
                return False
        elif lowered.find(_LENGTH_FIELD, at + 1) >= 0:
            return False
        else:
            declared = lowered[at + len(_LENGTH_FIELD):lowered.index(b"\r", at)].strip(b" \t")
            if not declared.isdigit() or int(declared) != len(body):
                return False
        if b"\ntransfer-encoding:" in lowered:
            return False
        self.resetTimeout()
        factory = self.requestFactory
        self.requests.append(factory(self) if INonQueuedRequestFactory.providedBy(factory) else factory(self, 0))
        state._HTTPChannel__first_line = 0
        state._command, state._path, state._version = head[1], head[2], head[3]
        state._busyReceiving = True
        try:
            for line in fields.split(b"\r\n")[:-1]:
                if not state.headerReceived(line):  # answered 400 and closing (the checks above leave no cause)
                    return True
            # What the line reader does on the empty line ending the head, and after it.
            state.allHeadersReceived()
            if self.length == 0:
                self.allContentReceived()
            else:
                state.setRawMode()
                if transport.disconnecting:  # e.g. closed by gotLength: the line reader keeps the body unread
                    state._buffer = body
                    return True
                self.rawDataReceived(body)
        finally:
            state._busyReceiving = False
        if state._buffer:  # bytes handed back while the request was answered
            super().dataReceived(b"")  # type: ignore[no-untyped-call]
        return True

    def allContentReceived(self) -> None:
        """The whole request is in: its deadline no longer applies."""
        self._request_started = None
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Give the connection's slot back."""
        self._request_started = None
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        self.site.release(self)

    def check(self, now: float) -> None:
        """Close the connection if its request is overdue or it has been idle too long (the site's sweep)."""
        started = self._request_started
        if started is not None and now - started >= self.site.request_timeout:
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
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(  # type: ignore[no-untyped-call]
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
    """A ``Site`` with a per-request deadline, an idle timeout and caps on open connections.

    Keyword arguments other than the limits go to ``Site`` (``requestFactory``,
    ``logFormatter``, ``reactor``...).
    """

    protocol = GuardedChannel  # type: ignore[assignment]  # plain HTTP/1.1: no HTTP/2 negotiation without TLS

    def __init__(
        self,
        resource: Any,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        max_per_peer: int = MAX_PER_PEER,
        access_log: bool = False,
        **site_arguments: Any,
    ) -> None:
        super().__init__(resource, timeout=idle_timeout, **site_arguments)  # type: ignore[no-untyped-call]
        self.access_log = access_log
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.open_connections = 0
        self.tick = min(1.0, request_timeout / 4, idle_timeout / 4)
        """Seconds between two sweeps over the open connections."""
        self._channels: set[GuardedChannel] = set()
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = self.reactor
        self._per_peer: Counter[str] = Counter()
        self._too_slow = _Tally()
        self._refused = _Tally()

    def buildProtocol(self, addr: Any) -> Any:
        """A guarded channel, or a 503 refusal when a connection cap is reached."""
        host = str(getattr(addr, "host", "") or "")
        if self.open_connections >= self.max_connections or self._per_peer[host] >= self.max_per_peer:
            self._note_refusal(host)
            refusal = _Refusal()
            refusal.factory = cast(Any, self)
            return refusal
        channel = cast(GuardedChannel, super().buildProtocol(addr))  # type: ignore[no-untyped-call]
        channel.peer_host = host
        channel._now = cast(Any, self.reactor).seconds
        self.open_connections += 1
        self._per_peer[host] += 1
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
        self.open_connections -= 1
        self._channels.discard(channel)
        if not self._channels and self._sweeper.running:
            self._sweeper.stop()
        self._per_peer[channel.peer_host] -= 1
        if self._per_peer[channel.peer_host] <= 0:
            del self._per_peer[channel.peer_host]

    def note_too_slow(self, host: str) -> None:
        """Log (now and then) that connections were cut off for not sending a whole request in time."""
        count = self._too_slow.due(cast(Any, self.reactor).seconds())
        if count:
            _log.info(
                "closed {count} connection(s) that sent no complete request within {timeout:g}s (latest from {peer})",
                count=count,
                timeout=self.request_timeout,
                peer=host or "?",
            )

    def _note_refusal(self, host: str) -> None:
        count = self._refused.due(cast(Any, self.reactor).seconds())
        if count:
            _log.warn(
                "refused {count} connection(s) over the limits (latest from {peer}: {peer_open} open from it, "
                "{open} in all; limits {per_peer} per address, {total} in all)",
                count=count,
                peer=host or "?",
                peer_open=self._per_peer[host],
                open=self.open_connections,
                per_peer=self.max_per_peer,
                total=self.max_connections,
            )
