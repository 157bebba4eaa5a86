"""Push consumers over real loopback sockets: addresses compared after resolution, at Subscribe and at each connection.

A "camera" HTTP server listens on 127.0.0.2 (a configured camera's host) and records every
request; consumers listen on 127.0.0.1 and ::1. The policy allows loopback, so that only
the camera rule can refuse 127.0.0.2. Names resolve through the reactor's own resolver
(getaddrinfo in a thread) or through a ``NameTable`` that tests can change between
Subscribe and the Notify.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, ClassVar

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.logger import Logger, formatEvent
from twisted.web.resource import Resource
from twisted.web.server import Site

from atomrelay.config import parse_config
from atomrelay.events.consumers import (
    MAX_ANSWER_BYTES,
    ConsumerGuard,
    ConsumerPolicy,
    ConsumerRefused,
    NotifyClient,
    guarded_agent,
)
from atomrelay.events.records import PushSubscription
from atomrelay.events.state import EventHub
from atomrelay.events.subscriptions import NOTIFY_TIMEOUT, Subscriptions
from tests.events.support import NameTable
from tests.helpers import poll

pytestmark = pytest.mark.integration


class Recorder(Resource):
    """Records every request (path and Cookie header) and sets a new cookie on each answer."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[bytes, bytes | None]] = []

    def render(self, request: Any) -> bytes:
        self.requests.append((request.uri, request.getHeader(b"cookie")))
        request.addCookie(f"s{len(self.requests)}".encode(), b"x", path=b"/")
        return b""


class Stalling(Protocol):
    """A consumer that answers each Notify with a status and headers announcing a body it never sends."""

    open: ClassVar[list[Stalling]] = []
    answered: ClassVar[int] = 0

    def connectionMade(self) -> None:
        self.open.append(self)
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.received.rstrip().endswith(b"Envelope>"):
            self.received = b""
            Stalling.answered += 1
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.open.remove(self)


@dataclass
class Rig:
    """A camera server on 127.0.0.2, consumer servers on 127.0.0.1 and ::1 (the same port where possible)."""

    camera: Recorder = field(default_factory=Recorder)
    consumer: Recorder = field(default_factory=Recorder)
    consumer6: Recorder = field(default_factory=Recorder)
    ports: list[Any] = field(default_factory=list)
    port: int = 0
    port6: int = 0
    stores: list[Subscriptions] = field(default_factory=list)
    hubs: list[EventHub] = field(default_factory=list)
    logged: list[str] = field(default_factory=list)

    def store(self, resolver: Any, notify_timeout: float = NOTIFY_TIMEOUT) -> Subscriptions:
        """A subscription store for camera 127.0.0.2 that resolves with ``resolver`` and allows loopback consumers."""
        config = parse_config(
            "onvif: {users: [{username: admin, password: secret}]}\n"
            "cameras:\n  - {id: cam, host: 127.0.0.2, streams: [{name: main, rtsp_path: v0}]}\n"
        )
        hub = EventHub(reactor, config.cameras, 20.0)
        guard = ConsumerGuard(resolver, hub.camera_hosts, ConsumerPolicy(allow_loopback=True))
        guard.log = Logger(observer=lambda event: self.logged.append(formatEvent(event)))
        store = Subscriptions(reactor, hub, config.cameras, NotifyClient(guarded_agent(reactor, guard), guard),
                              notify_timeout=notify_timeout, retry_delays=(30.0,))
        store.startService()
        self.stores.append(store)
        self.hubs.append(hub)
        return store

    def motion(self) -> None:
        """The camera reports motion (one more Notify for every subscription)."""
        self.hubs[-1].motion_detected("cam")


@pytest_twisted.async_yield_fixture
async def rig() -> AsyncIterator[Rig]:
    """The servers, listening; every store made from the rig is stopped afterwards."""
    rig = Rig()
    consumer = reactor.listenTCP(0, Site(rig.consumer), interface="127.0.0.1")
    rig.port = consumer.getHost().port
    rig.ports += [consumer, reactor.listenTCP(rig.port, Site(rig.camera), interface="127.0.0.2")]
    consumer6 = reactor.listenTCP(0, Site(rig.consumer6), interface="::1")
    rig.port6 = consumer6.getHost().port
    rig.ports.append(consumer6)
    try:
        yield rig
    finally:
        for store in rig.stores:
            store.stopService()
        for hub in rig.hubs:
            hub.stopService()
        for port in rig.ports:
            await port.stopListening()


class Flooding(Protocol):
    """A consumer that answers a Notify with a header block without end (continuation lines), until it is cut off."""

    open: ClassVar[list[Flooding]] = []
    sent: ClassVar[int] = 0

    def connectionMade(self) -> None:
        self.open.append(self)
        self.received = b""
        self.pump: LoopingCall | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.pump is None and self.received.rstrip().endswith(b"Envelope>"):
            self.transport.write(b"HTTP/1.1 200 OK\r\nX-Flood: a\r\n")
            self.pump = LoopingCall(self.more)
            self.pump.start(0.001)

    def more(self) -> None:
        self.transport.write(b" x\r\n" * 4096)
        Flooding.sent += 4 * 4096

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.pump is not None and self.pump.running:
            self.pump.stop()
        self.open.remove(self)


def listen_stalling(rig: Rig) -> int:
    """A ``Stalling`` consumer on 127.0.0.1, stopped with the rig; its port."""
    Stalling.open, Stalling.answered = [], 0
    port = reactor.listenTCP(0, Factory.forProtocol(Stalling), interface="127.0.0.1")
    rig.ports.append(port)
    return int(port.getHost().port)


async def subscribe(store: Subscriptions, consumer: str) -> PushSubscription:
    """Subscribe ``consumer`` for every topic."""
    sub = await store.subscribe(consumer, "http://relay.test/onvif/subscription/", (), reactor.seconds() + 600, "viewer")
    assert isinstance(sub, PushSubscription)
    return sub


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    "host",
    ["2130706434", "0x7f000002", "0177.0.0.2", "127.2", "0x7f.0.0.2", "[::ffff:127.0.0.2]", "[::ffff:7f00:2]"],
)
async def test_every_form_of_a_camera_address_is_refused(rig: Rig, host: str) -> None:
    """Decimal, hex, octal, short and IPv4-mapped forms of the camera's address, read by the reactor's resolver, are refused."""
    store = rig.store(reactor.nameResolver)
    with pytest.raises(ConsumerRefused, match=r"127\.0\.0\.2 \(a camera of this relay or its mediamtx\)"):
        await subscribe(store, f"http://{host}:{rig.port}/cgi-bin/cmd.cgi?port=socket")
    assert len(store) == 0 and rig.camera.requests == []


@pytest_twisted.ensureDeferred
async def test_names_are_checked_again_at_each_connection(rig: Rig) -> None:
    """A name that resolved to the consumer at Subscribe and to the camera later gets no connection to the camera."""
    names = NameTable({"rebind.test": ["127.0.0.1"]})
    store = rig.store(names)
    sub = await subscribe(store, f"http://rebind.test:{rig.port}/hook")
    await poll(lambda: len(rig.consumer.requests) == 1, timeout=10, what="the first Notify")
    names.names["rebind.test"] = ["127.0.0.2"]
    rig.motion()
    await poll(lambda: sub.failures == 1, timeout=10, what="the second Notify to fail")
    assert rig.camera.requests == [] and len(rig.consumer.requests) == 1
    assert any("rebind.test (127.0.0.2): a camera of this relay" in line for line in rig.logged), rig.logged
    with pytest.raises(ConsumerRefused, match="a camera of this relay"):
        await subscribe(store, f"http://REBIND.test.:{rig.port}/hook")


@pytest_twisted.ensureDeferred
async def test_ipv6_consumers_get_their_notifications(rig: Rig) -> None:
    """A consumer at http://[::1]:port/ gets every Notify; cookies it sets are never sent back."""
    logged: list[str] = []
    store = rig.store(reactor.nameResolver)
    store.log = Logger(observer=lambda event: logged.append(formatEvent(event)))
    sub = await subscribe(store, f"http://[::1]:{rig.port6}/hook")
    await poll(lambda: len(rig.consumer6.requests) == 1, timeout=10, what="the first Notify over IPv6")
    rig.motion()
    await poll(lambda: len(rig.consumer6.requests) == 2, timeout=10, what="the second Notify over IPv6")
    assert rig.consumer6.requests == [(b"/hook", None), (b"/hook", None)]
    assert sub.failures == 0 and not [line for line in logged if "crashed" in line or "failed" in line], logged


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("host", ["[64:ff9b::7f00:2]", "[64:ff9b::127.0.0.2]", "[2002:7f00:2::1]"])
async def test_ipv6_forms_a_gateway_translates_to_a_camera_are_refused(rig: Rig, host: str) -> None:
    """NAT64 (well-known prefix) and 6to4 addresses that reach the camera's IPv4 address through a gateway are refused
    (here already as a gateway's loopback: the rig allows only this host's loopback)."""
    store = rig.store(reactor.nameResolver)
    with pytest.raises(ConsumerRefused, match=r"the relay does not send notifications to"):
        await subscribe(store, f"http://{host}:{rig.port}/cgi-bin/cmd.cgi?port=socket")
    assert len(store) == 0 and rig.camera.requests == []


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("64:ff9b::c0a8:4d0a", True),  # 192.168.77.10 through NAT64: a LAN NVR may sit there
        ("64:ff9b::7f00:1", False),  # loopback through NAT64
        ("64:ff9b::a9fe:a9fe", False),  # the cloud metadata address through NAT64
        ("2002:a9fe:a9fe::1", False),  # ... and through 6to4
        ("64:ff9b:1:a9fe:a9fe::", False),  # local-use NAT64: where the IPv4 address sits is the operator's choice
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("fd00::10", True),
    ],
)
def test_translated_ipv6_destinations_are_judged_by_the_ipv4_address_they_reach(host: str, allowed: bool) -> None:
    assert ConsumerPolicy().address_allowed(host) is allowed


def test_allowing_loopback_allows_no_gateways_loopback() -> None:
    """``allow_loopback`` (tests, a consumer on the relay's host) is about this host: NAT64 and 6to4 forms of
    127.0.0.1 reach the gateway's loopback, and are refused."""
    policy = ConsumerPolicy(allow_loopback=True)
    assert policy.address_allowed("127.0.0.1") and policy.address_allowed("::1")
    assert not policy.address_allowed("64:ff9b::7f00:1") and not policy.address_allowed("2002:7f00:1::1")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("host", ["[64:ff9b::c0a8:4d0a]", "[2002:c0a8:4d0a::1]", "nat64.test"])
async def test_a_lan_camera_behind_a_gateway_prefix_is_refused(host: str) -> None:
    """A camera at 192.168.77.10 is refused in its NAT64 and 6to4 forms, literal or from a name, at Subscribe."""
    names = NameTable({"nat64.test": ["64:ff9b::c0a8:4d0a"], "camera.test": ["192.168.77.10"]})
    guard = ConsumerGuard(names, lambda: ["camera.test"], ConsumerPolicy())
    with pytest.raises(ConsumerRefused, match=r"\(a camera of this relay or its mediamtx\)"):
        await guard.check(f"http://{host}:80/cgi-bin/cmd.cgi")
    assert await guard.check("http://[64:ff9b::c0a8:4d0b]:80/notify")  # another LAN host: allowed


@pytest_twisted.ensureDeferred
async def test_a_consumer_that_never_ends_its_answer_fails_the_delivery_and_keeps_no_connection(rig: Rig) -> None:
    """A consumer answering 200 with a body it never sends gets a failed delivery once the Notify timeout runs out,
    and its connection is closed (each Notify would otherwise hold one for good)."""
    port = listen_stalling(rig)
    store = rig.store(reactor.nameResolver, notify_timeout=0.5)
    sub = await subscribe(store, f"http://127.0.0.1:{port}/hook")
    await poll(lambda: sub.failures == 1, timeout=10, what="the stalled Notify to count as failed")
    await poll(lambda: not Stalling.open, timeout=5, what="the consumer's connection to close")
    assert Stalling.answered == 1


@pytest_twisted.ensureDeferred
async def test_stopping_closes_a_notify_still_reading_its_answer(rig: Rig) -> None:
    """Stopping the store while a consumer's answer is still coming closes that connection."""
    port = listen_stalling(rig)
    store = rig.store(reactor.nameResolver)
    await subscribe(store, f"http://127.0.0.1:{port}/hook")
    await poll(lambda: Stalling.answered == 1, timeout=10, what="the consumer to answer the Notify's headers")
    store.stopService()
    await poll(lambda: not Stalling.open, timeout=5, what="the consumer's connection to close")


@pytest_twisted.ensureDeferred
async def test_an_answer_with_headers_without_end_is_cut_off(rig: Rig) -> None:
    """A consumer that streams header lines without end has its connection aborted once past the answer bound, long
    before the Notify timeout, and the delivery fails."""
    Flooding.open, Flooding.sent = [], 0
    port = reactor.listenTCP(0, Factory.forProtocol(Flooding), interface="127.0.0.1")
    rig.ports.append(port)
    store = rig.store(reactor.nameResolver)
    sub = await subscribe(store, f"http://127.0.0.1:{port.getHost().port}/hook")
    await poll(lambda: sub.failures == 1, timeout=NOTIFY_TIMEOUT / 2, what="the flooded Notify to fail")
    await poll(lambda: not Flooding.open, timeout=5, what="the consumer's connection to close")
    assert MAX_ANSWER_BYTES < Flooding.sent < 64 * MAX_ANSWER_BYTES
