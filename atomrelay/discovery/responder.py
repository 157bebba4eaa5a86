"""The WS-Discovery target service: a DatagramProtocol answering Probe and Resolve.

Each ONVIF device of the relay is one ``Target``. A matching Probe or Resolve is
answered unicast to its sender, one message per device, after the random
0-``APP_MAX_DELAY`` wait WS-Discovery asks for. Everything that could make the relay a
reflector or a victim is refused before any work is queued: senders with port 0 or a
multicast/broadcast address, malformed or oversized datagrams, repeats of a MessageID
already seen, and senders over their token-bucket budget.
"""

from __future__ import annotations

import ipaddress
import random
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence
from urllib.parse import urlsplit

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from atomrelay.clock import Clock, DelayedCall
from atomrelay.discovery import messages
from atomrelay.discovery.messages import MalformedMessage, Match, Probe, Resolve, Sequencing
from atomrelay.onvif.base import DEVICE_SERVICE_PATH as PATH

APP_MAX_DELAY = 0.5
"""Longest random wait before a ProbeMatch/ResolveMatch (WS-Discovery APP_MAX_DELAY)."""
MAX_PENDING = 256
"""Most replies waiting for their delay at once; more are dropped."""
DUPLICATE_WINDOW = 10.0
"""Seconds a (sender, MessageID) is remembered so that SOAP-over-UDP repeats are answered once."""
MAX_REMEMBERED = 1024

_UNSPECIFIED = frozenset({"", "0.0.0.0", "::"})


class AnnouncedDevice(Protocol):
    """What discovery needs from an ONVIF device; ``DeviceService`` is one."""

    on_scopes_changed: list[Callable[[Sequence[str]], None]]
    on_discovery_mode_changed: list[Callable[[bool], None]]

    def scopes(self) -> list[str]: ...

    @property
    def discoverable(self) -> bool: ...


@dataclass(eq=False)
class Target:
    """One ONVIF device as WS-Discovery announces it.

    XAddrs use ``advertise_host`` when set (its port, else ``port``), else ``bind``
    when the device listens on one address, else the local address the responder
    picks for the sender. ``metadata_version`` is kept by the DiscoveryService.
    """

    device: AnnouncedDevice
    endpoint_reference: str
    port: int
    bind: str = "0.0.0.0"
    advertise_host: str | None = None
    metadata_version: int = 1

    def xaddrs(self, local: ipaddress.IPv4Address | None) -> list[str]:
        """The device service URL(s) to announce, given the local address facing the client."""
        port = self.port
        if self.advertise_host:
            host, advertised_port = _split_host(self.advertise_host)
            port = advertised_port or port
        elif self.bind not in _UNSPECIFIED:
            host = self.bind
        elif local is not None:
            host = str(local)
        else:
            return []
        if ":" in host:
            host = f"[{host}]"
        return [f"http://{host}:{port}{PATH}"]

    @property
    def own_address(self) -> str | None:
        """The (non-loopback) IPv4 address the device alone listens on, whose socket its messages leave from; else None."""
        try:
            address = ipaddress.IPv4Address(self.bind)
        except ValueError:
            return None
        return None if address.is_unspecified or address.is_loopback else str(address)

    def match(self, local: ipaddress.IPv4Address | None) -> Match | None:
        """What to say about the device now, or None when it has no XAddr to give."""
        xaddrs = self.xaddrs(local)
        if not xaddrs:
            return None
        return Match(self.endpoint_reference, self.device.scopes(), xaddrs, self.metadata_version)


@dataclass(frozen=True)
class Limits:
    """Reply budgets: token buckets per sender address and for all senders together.

    One answered request (whatever the number of devices answering it) costs one token.
    """

    burst: float = 8.0
    rate: float = 2.0
    total_burst: float = 64.0
    total_rate: float = 32.0
    max_sources: int = 4096


class RateLimiter:
    """Token buckets keyed by sender address, plus one shared bucket, on an injected clock."""

    def __init__(self, clock: Clock, limits: Limits) -> None:
        self._clock = clock
        self._limits = limits
        self._total = (limits.total_burst, clock.seconds())
        self._sources: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str) -> bool:
        """Take a token for ``source`` if both its bucket and the shared one have one."""
        limits, now = self._limits, self._clock.seconds()
        total = _refill(self._total, now, limits.total_burst, limits.total_rate)
        own = _refill(self._sources.get(source, (limits.burst, now)), now, limits.burst, limits.rate)
        if total < 1.0 or own < 1.0:
            self._total = (total, now)
            self._remember(source, own, now)
            return False
        self._total = (total - 1.0, now)
        self._remember(source, own - 1.0, now)
        return True

    def _remember(self, source: str, tokens: float, now: float) -> None:
        self._sources[source] = (tokens, now)
        self._sources.move_to_end(source)
        while len(self._sources) > self._limits.max_sources:
            self._sources.popitem(last=False)


def _refill(bucket: tuple[float, float], now: float, burst: float, rate: float) -> float:
    tokens, stamp = bucket
    return min(burst, tokens + max(0.0, now - stamp) * rate)


class DiscoveryResponder(DatagramProtocol):
    """Answers WS-Discovery Probe and Resolve for the relay's devices; builds their Hello and Bye.

    ``local_addresses`` returns the addresses (with prefixes) of the interfaces
    discovery joined, in order: a reply's XAddrs use the one whose subnet holds the
    sender, else the first. ``own_transport`` gives the sending socket bound to a
    device's own address (``Target.own_address``), if one is open: that device's replies
    leave from it, so that clients keying devices by the reply's source address (UniFi
    Protect, onvifscout) see each device; other replies leave from the shared socket.
    ``instance_id`` is set by the owning service on every start (WS-Discovery
    AppSequence).
    """

    log = Logger()

    def __init__(
        self,
        clock: Clock,
        targets: Sequence[Target],
        local_addresses: Callable[[], Sequence[ipaddress.IPv4Interface]],
        rng: random.Random,
        limits: Limits = Limits(),
        own_transport: Callable[[str], Any] = lambda address: None,
    ) -> None:
        self.targets = list(targets)
        self.instance_id = 1
        self._own_transport = own_transport
        self._clock = clock
        self._local_addresses = local_addresses
        self._rng = rng
        self._limiter = RateLimiter(clock, limits)
        self._message_number = 0
        self._pending: set[DelayedCall] = set()
        self._recent: OrderedDict[tuple[str, int, str], float] = OrderedDict()

    # --- receiving ---------------------------------------------------------------------------

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """Answer a Probe or Resolve; drop everything else silently (debug log only)."""
        host, port = addr[0], addr[1]
        sender = self._sender(host, port)
        if sender is None:
            self.log.debug("dropped a WS-Discovery datagram from unanswerable source {host}:{port}", host=host, port=port)
            return
        try:
            request = messages.parse_request(datagram)
        except MalformedMessage as exc:
            self.log.debug(
                "dropped a malformed WS-Discovery datagram ({size} bytes) from {host}: {reason}",
                size=len(datagram), host=host, reason=exc.reason,
            )
            return
        if request is None or self._repeated(host, port, request.message_id):
            return
        targets = self._matching(request)
        if not targets:
            return
        if not self._limiter.allow(host):
            self.log.debug("rate limit: not answering {host}", host=host)
            return
        for target in targets:
            self._schedule(request, target, sender, (host, port))

    def _sender(self, host: str, port: int) -> ipaddress.IPv4Address | None:
        """The sender's address if a reply to it is safe: a real unicast host on a real port."""
        if not 0 < port < 65536:
            return None
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            return None
        if address.is_multicast or address.is_unspecified or address.is_reserved or address == _BROADCAST:
            return None
        for local in self._local_addresses():
            network = local.network
            if network.prefixlen < 31 and address == network.broadcast_address:
                return None
        return address

    def _repeated(self, host: str, port: int, message_id: str) -> bool:
        now = self._clock.seconds()
        while self._recent and (
            len(self._recent) >= MAX_REMEMBERED or next(iter(self._recent.values())) < now - DUPLICATE_WINDOW
        ):
            self._recent.popitem(last=False)
        key = (host, port, message_id)
        if key in self._recent:
            return True
        self._recent[key] = now
        return False

    def _matching(self, request: Probe | Resolve) -> list[Target]:
        found = []
        for target in self.targets:
            if not target.device.discoverable:
                continue
            if isinstance(request, Resolve):
                if request.address == target.endpoint_reference:
                    found.append(target)
            elif messages.types_match(request.types) and messages.scopes_match(
                request.scopes, request.match_by, target.device.scopes()
            ):
                found.append(target)
        return found

    # --- replying ----------------------------------------------------------------------------

    def _schedule(
        self, request: Probe | Resolve, target: Target, sender: ipaddress.IPv4Address, addr: tuple[str, int]
    ) -> None:
        if len(self._pending) >= MAX_PENDING:
            self.log.debug("too many WS-Discovery replies waiting; not answering {host}", host=addr[0])
            return
        delay = self._rng.uniform(0.0, APP_MAX_DELAY)
        call: DelayedCall | None = None

        def fire() -> None:
            if call is not None:
                self._pending.discard(call)
            self._reply(request, target, sender, addr)

        call = self._clock.callLater(delay, fire)
        self._pending.add(call)

    def _reply(
        self, request: Probe | Resolve, target: Target, sender: ipaddress.IPv4Address, addr: tuple[str, int]
    ) -> None:
        if self.transport is None or not target.device.discoverable:
            return
        match = target.match(self.local_address_for(sender))
        if match is None:
            self.log.debug("no local address to put in XAddrs for {host}; not answering", host=addr[0])
            return
        if isinstance(request, Probe):
            data = messages.probe_matches(request, match, self.sequencing())
        else:
            data = messages.resolve_matches(request, match, self.sequencing())
        self.send(data, addr, target.own_address)

    def local_address_for(self, sender: ipaddress.IPv4Address) -> ipaddress.IPv4Address | None:
        """The joined interface address whose subnet holds ``sender``, else the first one, else None."""
        addresses = list(self._local_addresses())
        for local in addresses:
            if sender in local.network:
                return local.ip
        return addresses[0].ip if addresses else None

    def send(self, data: bytes, addr: tuple[str, int], source: str | None = None) -> bool:
        """Write one datagram, from the socket of the own address ``source`` if one is open; a failure is logged,
        never raised."""
        transport: Any = (self._own_transport(source) if source is not None else None) or self.transport
        if transport is None:
            return False
        try:
            transport.write(data, addr)
        except Exception as exc:  # noqa: BLE001 - a send error must never break the responder
            self.log.warn("cannot send a WS-Discovery message to {host}: {error}", host=addr[0], error=str(exc))
            return False
        return True

    # --- announcements -----------------------------------------------------------------------

    def sequencing(self) -> Sequencing:
        """A fresh MessageID and the next AppSequence message number."""
        self._message_number += 1
        message_id = uuid.UUID(int=self._rng.getrandbits(128), version=4).urn
        return Sequencing(message_id, self.instance_id, self._message_number)

    def hello(self, target: Target, local: ipaddress.IPv4Address) -> bytes | None:
        """The Hello for ``target`` on the interface with address ``local`` (None without XAddrs)."""
        match = target.match(local)
        return messages.hello(match, self.sequencing()) if match is not None else None

    def bye(self, target: Target) -> bytes:
        """The Bye for ``target``."""
        return messages.bye(target.endpoint_reference, self.sequencing())

    def cancel_pending(self) -> None:
        """Forget every reply still waiting for its delay (the responder is stopping)."""
        for call in self._pending:
            if call.active():
                call.cancel()
        self._pending.clear()


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _split_host(value: str) -> tuple[str, int | None]:
    """``advertise_host`` as (host, port): ``name``, ``name:port``, ``[v6]:port`` or a bare IPv6 literal."""
    try:
        return str(ipaddress.IPv6Address(value)), None
    except ValueError:
        pass
    parts = urlsplit("//" + value)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname or value, port
