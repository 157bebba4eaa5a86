"""Test doubles for WS-Discovery: devices, a multicast port and a reactor on a Clock, plus message helpers."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError, MulticastJoinError
from twisted.internet.task import Clock
from wsdiscovery.actions import constructProbe, constructResolve
from wsdiscovery.message import createSOAPMessage, parseSOAPMessage
from wsdiscovery.qname import QName
from wsdiscovery.scope import Scope

from atomrelay.discovery.interfaces import Interface
from atomrelay.discovery.messages import DN, WSD
from atomrelay.discovery.responder import Target
from atomrelay.xml import ns

NVT = QName(DN, "NetworkVideoTransmitter", "dn")
TDS_DEVICE = QName(ns.TDS, "Device", "tds")
STREAMING = "onvif://www.onvif.org/Profile/Streaming"


@dataclass
class FakeDevice:
    """An AnnouncedDevice whose scopes and discovery mode the test sets."""

    name: str = "porch"
    mac: str = "02:00:00:00:00:01"
    extra: list[str] = field(default_factory=list)
    discoverable_flag: bool = True
    on_scopes_changed: list[Callable[[Sequence[str]], None]] = field(default_factory=list)
    on_discovery_mode_changed: list[Callable[[bool], None]] = field(default_factory=list)

    def scopes(self) -> list[str]:
        return [
            "onvif://www.onvif.org/type/video_encoder",
            STREAMING,
            "onvif://www.onvif.org/Profile/S",
            f"onvif://www.onvif.org/name/{self.name}",
            "onvif://www.onvif.org/hardware/ATOM_CamV3C",
            f"onvif://www.onvif.org/mac/{self.mac}",
            "onvif://www.onvif.org/location/unknown",
            *self.extra,
        ]

    @property
    def discoverable(self) -> bool:
        return self.discoverable_flag

    def change_scopes(self, extra: list[str]) -> None:
        self.extra = extra
        for callback in self.on_scopes_changed:
            callback(self.scopes())

    def set_discoverable(self, flag: bool) -> None:
        self.discoverable_flag = flag
        for callback in self.on_discovery_mode_changed:
            callback(flag)


def target(device: FakeDevice | None = None, number: int = 1, port: int = 8080, **kw: Any) -> Target:
    """A Target for a fake device with EPR ``urn:uuid:00000000-0000-4000-8000-00000000000<number>``."""
    return Target(device or FakeDevice(), f"urn:uuid:00000000-0000-4000-8000-{number:012d}", port, **kw)


class FixedRandom(random.Random):
    """A seeded Random whose ``uniform`` always returns ``delay`` (the ProbeMatch wait)."""

    def __init__(self, delay: float = 0.25) -> None:
        super().__init__(1234)
        self.delay = delay

    def uniform(self, a: float, b: float) -> float:
        assert a <= self.delay <= b
        return self.delay


@dataclass
class FakeTransport:
    """Records unicast writes of a DatagramProtocol."""

    sent: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


class FakeSocket:
    """Records setsockopt calls."""

    def __init__(self) -> None:
        self.options: list[tuple[int, int, Any]] = []

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        self.options.append((level, option, value))


class FakeMulticastPort:
    """A multicast UDP port: joins, outgoing interface and writes are recorded; joins may be made to fail."""

    def __init__(self, protocol: Any, log: list[tuple[Any, ...]], failing_joins: set[str]) -> None:
        self.protocol = protocol
        self.log = log
        self.failing_joins = failing_joins
        self.interface = "0.0.0.0"
        self.bound = ""
        """The address the port is bound to ("" for every address)."""
        self.ttl: int | None = None
        self.loopback: int | None = None
        self.handle = FakeSocket()
        self.stopped = False
        self.stop_deferred: Deferred[None] = succeed(None)

    def joinGroup(self, group: str, interface: str) -> Deferred[None]:
        if interface in self.failing_joins:
            self.log.append(("join-failed", group, interface))
            return fail(MulticastJoinError(group, interface, "No such device"))
        self.log.append(("join", group, interface))
        return succeed(None)

    def setOutgoingInterface(self, address: str) -> Deferred[int]:
        self.interface = address
        return succeed(1)

    def setTTL(self, ttl: int) -> None:
        self.ttl = ttl

    def setLoopbackMode(self, mode: int) -> None:
        self.loopback = mode

    def getHandle(self) -> FakeSocket:
        return self.handle

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.log.append(("write", data, addr, self.interface, self.bound))

    def stopListening(self) -> Deferred[None]:
        self.log.append(("stop",))
        self.stopped = True
        self.protocol.doStop()
        return self.stop_deferred


class FakeReactor(Clock):
    """A Clock with ``listenMulticast`` handing out FakeMulticastPorts (or failing a set number of times)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[Any, ...]] = []
        self.ports: list[FakeMulticastPort] = []
        self.listen_calls: list[dict[str, Any]] = []
        self.listen_failures = 0
        self.failing_joins: set[str] = set()
        self.failing_binds: set[str] = set()
        """Addresses a bind to fails (not up yet)."""

    def listenMulticast(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192,
                        listenMultiple: bool = False) -> FakeMulticastPort:
        self.listen_calls.append({"port": port, "interface": interface, "maxPacketSize": maxPacketSize,
                                  "listenMultiple": listenMultiple})
        if self.listen_failures:
            self.listen_failures -= 1
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        if interface in self.failing_binds:
            raise CannotListenError(interface, port, OSError(99, "Cannot assign requested address"))
        fake = FakeMulticastPort(protocol, self.log, self.failing_joins)
        fake.bound = interface
        protocol.makeConnection(fake)
        self.ports.append(fake)
        return fake

    def writes(self) -> list[tuple[bytes, tuple[str, int], str]]:
        """(data, destination, outgoing interface) of every write so far."""
        return [(entry[1], entry[2], entry[3]) for entry in self.log if entry[0] == "write"]

    def sources(self) -> list[tuple[bytes, tuple[str, int], str, str]]:
        """(data, destination, outgoing interface, bound address) of every write so far."""
        return [(entry[1], entry[2], entry[3], entry[4]) for entry in self.log if entry[0] == "write"]


def interface(name: str, address: str, up: bool = True, multicast: bool = True, loopback: bool = False,
              label: str | None = None, index: int | None = None) -> Interface:
    """An Interface entry such as ``interface("eth0", "10.1.0.5/24")``."""
    return Interface(name, index if index is not None else sum(map(ord, name)), label or name,
                     ipaddress.IPv4Interface(address), up, multicast, loopback)


def probe_bytes(types: list[QName] | None = None, scopes: list[str] | None = None) -> tuple[bytes, str]:
    """A Probe as the python WSDiscovery package (Home Assistant's) writes it, and its MessageID."""
    env = constructProbe(types or [], [Scope(s) for s in scopes or []])
    return createSOAPMessage(env).encode("utf-8"), env.getMessageId()


def resolve_bytes(epr: str) -> tuple[bytes, str]:
    """A Resolve as the python WSDiscovery package writes it, and its MessageID."""
    env = constructResolve(epr)
    return createSOAPMessage(env).encode("utf-8"), env.getMessageId()


def parse(data: bytes) -> Any:
    """A reply parsed by the python WSDiscovery package (None when it rejects it)."""
    return parseSOAPMessage(data, "192.0.2.1")


def raw_probe(types: str = "", scopes: str = "", message_id: str = "urn:uuid:11111111-2222-4333-8444-555555555555",
              extra_ns: str = "", soap: str = ns.SOAP12, match_by: str | None = None) -> bytes:
    """A hand-written Probe, for the quirks real clients have (prefixes, SOAP 1.1, empty Types)."""
    types_el = f"<d:Types>{types}</d:Types>" if types is not None else ""
    match = f' MatchBy="{match_by}"' if match_by else ""
    scopes_el = f"<d:Scopes{match}>{scopes}</d:Scopes>" if scopes else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{soap}" '
        f'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="{WSD}" {extra_ns}>'
        f"<s:Header><a:MessageID>{message_id}</a:MessageID>"
        f"<a:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>"
        f"<a:Action>{WSD}/Probe</a:Action></s:Header>"
        f"<s:Body><d:Probe>{types_el}{scopes_el}</d:Probe></s:Body></s:Envelope>"
    ).encode("utf-8")
