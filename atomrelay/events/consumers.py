"""Push consumers: where a Notify may go, decided on resolved addresses, and the client that sends it.

A User-role account chooses the consumer URL, so the relay must not become its way to
the cameras (their ``cmd.cgi`` takes commands without a password), to the relay's host or
to anything else a LAN client cannot reach itself. Comparing host text cannot do that: a
URL host may be written ``3232255242``, ``0xc0a84d0a``, ``0300.0250.77.10``, ``192.168.77``,
``[::ffff:192.168.77.10]``, with a trailing dot, or as a name that resolves there. So:

* the URL must be ``http`` or ``https``, ASCII, at most 2048 characters, with a host,
  no user info and a port other than 0 (``ConsumerPolicy.check_url``);
* its host is resolved by the injected name resolver (the reactor's: getaddrinfo in a
  thread, which reads every numeric form the way the connection will), and so is every
  protected host: each configured camera's, and mediamtx's API host (mediamtx trusts
  requests from the relay's address, so a Notify must never reach its Control API);
* an address is refused when a protected host resolves to it, or when it is loopback
  (unless the policy allows it), unspecified, ``0.0.0.0/8``, link-local (``169.254/16``
  with the cloud metadata address, ``fe80::/10``), multicast, broadcast or reserved; an
  IPv4-mapped IPv6 address counts as its IPv4 address, and so does an address under NAT64's
  well-known prefix ``64:ff9b::/96`` or 6to4's ``2002::/16`` (a gateway takes it to that
  IPv4 address); the local-use NAT64 prefix ``64:ff9b:1::/48`` and Teredo's ``2001::/32``
  are refused, as where their IPv4 address sits is not fixed. A NAT64 prefix an operator
  chose from their own addresses cannot be told from any other IPv6 address: on such a
  network, cameras must not be reachable through it (or push subscriptions left unused);
* Subscribe is refused unless at least one address is allowed, and every connection
  resolves the host again and connects only to allowed addresses (a name may answer
  differently the second time).

Notify requests go through a twisted.web ``Agent`` (not treq, whose URL handling loses the
brackets of an IPv6 host: python-hyper/hyperlink#68), which follows no redirects, keeps
no cookies and aborts the connection of an answer over ``MAX_ANSWER_BYTES``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, cast
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, FirstError, gatherResults, succeed
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorTime,
    IResolutionReceiver,
)
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from atomrelay import tls
from atomrelay.events.messages import NOTIFY_CONTENT_TYPE
from atomrelay.net import ip_of

MAX_CONSUMER_URL = 2048
"""Longest consumer URL accepted (characters)."""
MAX_LOOKUPS = 64
"""Name lookups in flight (getaddrinfo in the reactor's thread pool, which the relay's file writes share) above
which Subscribe is refused: each check resolves the consumer's host and every protected host, and a lookup goes on
when the check is abandoned, so slow-resolving names cannot pile work onto the pool. Checks of Notify connections
are never refused."""
MAX_ANSWER_BYTES = 64 * 1024
"""Most bytes of a consumer's answer to a Notify, headers and body (it needs a few hundred)."""

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NOT_FIXED = (ipaddress.ip_network("64:ff9b:1::/48"), ipaddress.ip_network("2001::/32"))
"""Local-use NAT64 and Teredo: translated to an IPv4 address, but not one the address itself fixes."""


def reached(address: Address) -> Address | None:
    """The address a connection to ``address`` ends up at: the IPv4 address a NAT64 (well-known prefix) or 6to4
    address carries, else ``address``; None for local-use NAT64 and Teredo, whose IPv4 address cannot be told."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if any(address in network for network in _NOT_FIXED):
            return None
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def _reached_ip(host: str) -> Address | None:
    address = ip_of(host)
    return reached(address) if address is not None else None


class ConsumerRefused(Exception):
    """A push consumer address the relay will not send to; the message says why."""


@dataclass(frozen=True)
class ConsumerPolicy:
    """Which URLs and addresses a Notify may go to, cameras aside (see the module docstring)."""

    allow_loopback: bool = False

    def address_allowed(self, host: str) -> bool:
        """Whether an IP address (text) is an acceptable Notify destination."""
        written = ip_of(host)
        address = reached(written) if written is not None else None
        if address is None:
            return False
        if address.is_loopback:
            return self.allow_loopback and address == written  # a gateway's loopback is not the relay's
        if isinstance(address, ipaddress.IPv4Address) and (address in _THIS_NETWORK or address == _BROADCAST):
            return False
        return not (address.is_unspecified or address.is_link_local or address.is_multicast or address.is_reserved)

    def check_url(self, url: str) -> str:
        """The consumer URL if its form is acceptable (an IP literal host is checked too), else raise ConsumerRefused."""
        url = url.strip()
        if not url or len(url) > MAX_CONSUMER_URL or any(c.isspace() or ord(c) < 32 for c in url):
            raise ConsumerRefused("the consumer address is empty, too long or contains spaces")
        if not url.isascii():
            raise ConsumerRefused("the consumer address must be ASCII (percent-encode the path, punycode the host)")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ConsumerRefused("the consumer address is not a valid URL") from None
        if parts.scheme not in ("http", "https"):
            raise ConsumerRefused("the consumer address must be an http:// or https:// URL")
        if not parts.hostname:
            raise ConsumerRefused("the consumer address has no host")
        if "@" in parts.netloc:
            raise ConsumerRefused("the consumer address must not carry user credentials")
        if port == 0:
            raise ConsumerRefused("the consumer address has port 0")
        literal = ip_of(parts.hostname)
        if literal is not None and not self.address_allowed(str(literal)):
            raise ConsumerRefused(f"the relay does not send notifications to {literal}")
        return url


@implementer(IResolutionReceiver)
class _Collector:
    """Gathers a resolution's addresses; ``done`` fires with them when it completes, and ``finished`` is called then,
    even when ``done`` was cancelled (the lookup itself cannot be)."""

    def __init__(self, finished: Callable[[], None]) -> None:
        self.addresses: list[IAddress] = []
        self.done: Deferred[list[IAddress]] = Deferred()
        self._finished = finished

    def resolutionBegan(self, resolutionInProgress: Any) -> None:
        """Nothing to do yet."""

    def addressResolved(self, address: IAddress) -> None:
        """Keep it."""
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        """Hand the addresses over (a cancelled ``done`` ignores them)."""
        self._finished()
        self.done.callback(self.addresses)


def _address_text(address: IAddress) -> str:
    return str(getattr(address, "host", ""))


class ConsumerGuard:
    """Checks consumer URLs at Subscribe and consumer addresses at each connection.

    ``resolver`` resolves the consumer's and the cameras' hosts (the reactor's
    ``nameResolver`` in the relay); ``protected_hosts`` returns the hosts no Notify may
    reach, as configured at the moment (the cameras' and mediamtx's API host), so a config
    reload applies at once.
    """

    log = Logger()

    def __init__(
        self,
        resolver: Any,
        protected_hosts: Callable[[], Iterable[str]],
        policy: ConsumerPolicy = ConsumerPolicy(),
        max_lookups: int = MAX_LOOKUPS,
    ) -> None:
        self._resolver = resolver
        self._policy = policy
        self._protected_hosts = protected_hosts
        self.max_lookups = max_lookups
        self.lookups = 0
        """Name lookups in flight, counted until the resolver answers (a cancelled check's lookups go on)."""

    async def check(self, url: str) -> str:
        """The consumer URL if it is acceptable and its host has an allowed address, else raise ConsumerRefused."""
        url = self._policy.check_url(url)
        if self.lookups >= self.max_lookups:
            raise ConsumerRefused("the relay is busy resolving other consumers' names: subscribe again later")
        parts = urlsplit(url)
        host = parts.hostname or ""
        allowed, refused = await self._sort(host, parts.port or (443 if parts.scheme == "https" else 80), None)
        if allowed:
            return url
        if refused:
            address, why = refused[0]
            raise ConsumerRefused(f"the relay does not send notifications to {_address_text(address)} ({why})")
        raise ConsumerRefused(f"the consumer host {host} does not resolve")

    async def allowed(
        self, host: str, port: int, address_types: Sequence[type[IAddress]] | None = None
    ) -> list[IAddress]:
        """The addresses of ``host`` a connection may use now; refused ones are logged."""
        allowed, refused = await self._sort(host, port, address_types)
        for address, why in refused:
            self.log.warn(
                "refused to send a notification to {host} ({address}): {why}",
                host=host,
                address=_address_text(address),
                why=why,
            )
        return allowed

    def _resolve(
        self, host: str, port: int = 0, address_types: Sequence[type[IAddress]] | None = None
    ) -> Deferred[list[IAddress]]:
        """The addresses the resolver finds for ``host`` (none when it does not resolve), counted in ``lookups``."""

        def finished() -> None:
            self.lookups -= 1

        collector = _Collector(finished)
        self.lookups += 1
        self._resolver.resolveHostName(collector, host, port, address_types)
        return collector.done

    async def _sort(
        self, host: str, port: int, address_types: Sequence[type[IAddress]] | None
    ) -> tuple[list[IAddress], list[tuple[IAddress, str]]]:
        """``host``'s addresses, split into allowed ones and refused ones with the reason."""
        hosts = sorted(set(self._protected_hosts()))
        lookups = [self._resolve(host, port, address_types)]
        lookups += [self._resolve(protected) for protected in hosts]
        try:
            resolved = await gatherResults(lookups, consumeErrors=True)
        except FirstError as exc:  # a cancelled check (its client went away) fails as cancelled, not as a crash
            exc.subFailure.raiseException()
        protected = {_reached_ip(_address_text(address)) for addresses in resolved[1:] for address in addresses}
        allowed: list[IAddress] = []
        refused: list[tuple[IAddress, str]] = []
        for address in resolved[0]:
            ip = _reached_ip(_address_text(address))
            if ip is not None and ip in protected:
                refused.append((address, "a camera of this relay or its mediamtx"))
            elif not self._policy.address_allowed(_address_text(address)):
                refused.append((address, "loopback, link-local, multicast or reserved"))
            else:
                allowed.append(address)
        return allowed, refused


# --- the Notify HTTP agent: connects only to addresses the guard allows -------------------------


@implementer(IHostResolution)
class _Resolution:
    """A guarded resolution in progress."""

    def __init__(self, name: str, pending: Deferred[Any]) -> None:
        self.name = name
        self._pending = pending

    def cancel(self) -> None:
        """Stop waiting for it."""
        self._pending.cancel()


@implementer(IHostnameResolver)
class _GuardedResolver:
    """A name resolver that answers only the addresses the guard allows."""

    log = Logger()

    def __init__(self, guard: ConsumerGuard) -> None:
        self._guard = guard

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        """Resolve with the guard's resolver, then pass on the allowed addresses."""
        pending = Deferred.fromCoroutine(self._guard.allowed(hostName, portNumber, addressTypes))
        resolution = _Resolution(hostName, pending)
        resolutionReceiver.resolutionBegan(resolution)

        def deliver(addresses: list[IAddress]) -> None:
            for address in addresses:
                resolutionReceiver.addressResolved(address)

        def failed(failure: Failure) -> None:
            self.log.failure("resolving the push consumer {host} failed", failure, host=hostName)

        def complete(_: object) -> None:
            resolutionReceiver.resolutionComplete()

        pending.addCallbacks(deliver, failed).addBoth(complete)
        return resolution


@implementer(IReactorPluggableNameResolver, IReactorTCP, IReactorTime)
class _GuardedReactor:
    """The reactor, seen through the guarded name resolver (for HostnameEndpoint)."""

    def __init__(self, reactor: Any, guard: ConsumerGuard) -> None:
        self._reactor = reactor
        self.nameResolver = _GuardedResolver(guard)

    def installNameResolver(self, resolver: Any) -> Any:
        """Not for this view of the reactor."""
        raise NotImplementedError("the guarded reactor's resolver is fixed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


class _ReceiveLimit(ProtocolWrapper):
    """Aborts the connection when more than the factory's ``limit`` bytes arrive after the relay last wrote on it.

    twisted.web's client bounds no answer's header block (continuation lines grow one
    header without end), and a consumer's answer needs a few hundred bytes.
    """

    factory: _ReceiveLimitFactory

    def __init__(self, factory: _ReceiveLimitFactory, wrappedProtocol: Any) -> None:
        super().__init__(cast(Any, factory), wrappedProtocol)
        self.received = 0

    def write(self, data: bytes) -> None:
        """Send ``data``: a new request, so the count of answer bytes starts again."""
        self.received = 0
        super().write(data)  # type: ignore[no-untyped-call]

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """Send ``data`` (see ``write``)."""
        self.received = 0
        super().writeSequence(data)  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:
        """Pass ``data`` on, unless the answer is now over the limit: then abort the connection."""
        self.received += len(data)
        if self.received > self.factory.limit:
            cast(Any, self.transport).abortConnection()
            return
        super().dataReceived(data)  # type: ignore[no-untyped-call]


class _ReceiveLimitFactory(WrappingFactory):
    protocol = _ReceiveLimit
    noisy = False

    def __init__(self, wrappedFactory: Any, limit: int) -> None:
        super().__init__(wrappedFactory)  # type: ignore[no-untyped-call]
        self.limit = limit


class _ReceiveLimitEndpoints:
    """``tls.Endpoints`` whose connections are aborted past ``limit`` bytes of one answer."""

    def __init__(self, endpoints: tls.Endpoints, limit: int) -> None:
        self._endpoints = endpoints
        self._limit = limit

    def endpointForURI(self, uri: Any) -> Any:
        """The endpoint for ``uri``, its answers bounded (``_ReceiveLimit``)."""
        return tls.WrappingEndpoint(self._endpoints.endpointForURI(uri),
                                    lambda factory: _ReceiveLimitFactory(factory, self._limit))


def guarded_agent(reactor: Any, guard: ConsumerGuard, pool: Any = None, connect_timeout: float = 5.0) -> IAgent:
    """A twisted.web Agent for Notify requests that connects only to addresses ``guard`` allows; an answer over
    ``MAX_ANSWER_BYTES`` (headers and body) aborts its connection."""
    endpoints = _ReceiveLimitEndpoints(tls.Endpoints(_GuardedReactor(reactor, guard), connect_timeout),
                                       MAX_ANSWER_BYTES)
    factory: Callable[..., Agent] = cast(Any, Agent).usingEndpointFactory
    return cast(IAgent, factory(reactor, endpoints, pool=pool))


@implementer(IBodyProducer)
class _Body:
    """A request body that is all in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        """Write it all at once."""
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        """Nothing is left to pause."""

    def resumeProducing(self) -> None:
        """Nothing is left to resume."""

    def stopProducing(self) -> None:
        """Nothing is left to stop."""


class NotifyClient:
    """What push subscriptions use to reach consumers: the Subscribe check and the Notify POST.

    ``agent`` sends the requests: ``guarded_agent(reactor, guard, pool)`` in the relay, so
    that every connection is checked too.
    """

    def __init__(self, agent: Any, guard: ConsumerGuard) -> None:
        self._agent = agent
        self._guard = guard

    def check(self, url: str) -> Deferred[str]:
        """The consumer URL if the relay may send to it (see ``ConsumerGuard.check``)."""
        return Deferred.fromCoroutine(self._guard.check(url))

    def post(self, url: str, body: bytes) -> Deferred[IResponse]:
        """POST a Notify document to ``url`` (a URL ``check`` accepted)."""
        headers = Headers({b"Content-Type": [NOTIFY_CONTENT_TYPE]})
        response: Deferred[IResponse] = self._agent.request(b"POST", url.encode("ascii"), headers, _Body(body))
        return response


def notify_client(reactor: Any, protected_hosts: Callable[[], Iterable[str]], pool: Any = None) -> NotifyClient:
    """The relay's NotifyClient: the reactor's name resolver, the default policy, ``guarded_agent`` on ``pool``."""
    guard = ConsumerGuard(reactor.nameResolver, protected_hosts)
    return NotifyClient(guarded_agent(reactor, guard, pool), guard)
