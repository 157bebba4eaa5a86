"""Home Assistant's ONVIF library against the real Events service on loopback, for real time.

The relay (Device + Events services, webhook receiver) listens on 127.0.0.1 with a 1 s
motion timeout; onvif-zeep-async drives it exactly as Home Assistant does (pull-point
manager, then the notification manager for push, parsing Notify with the library's own
``NotificationManager.process``). Webhooks are real HTTP POSTs. The relay runs on the
asyncio reactor, so aiohttp and twisted.web share one loop (see tests/onvif/test_zeep_device.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, TypeVar

import onvif
import onvif_parsers
import pytest
import pytest_twisted
import treq
from onvif import ONVIFCamera
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Site

from atomrelay.auth.security import Authenticator
from atomrelay.auth.users import UserStore
from atomrelay.config import parse_config
from atomrelay.events.consumers import ConsumerGuard, ConsumerPolicy, NotifyClient, guarded_agent
from atomrelay.events.service import EventsService
from atomrelay.events.state import EventHub
from atomrelay.events.subscriptions import Subscriptions
from atomrelay.identity import Identity
from atomrelay.onvif.base import Service
from atomrelay.onvif.device import DeviceService
from atomrelay.onvif.server import OnvifResource
from atomrelay.state import StateStore
from atomrelay.web.limits import BoundedRequest
from atomrelay.web.webhook import WebhookResource
from tests.helpers import GET_DATE, poll

pytestmark = [pytest.mark.integration, pytest.mark.aio]

T = TypeVar("T")
WSDL_DIR = os.path.join(os.path.dirname(onvif.__file__), "wsdl")
TOKEN = "loopback-token-0123456789"
MOTION = "tns1:VideoSource/MotionAlarm"
CELL = "tns1:RuleEngine/CellMotionDetector/Motion"
INTERVAL = dt.timedelta(seconds=600)  # Home Assistant's subscription interval (PT600S)


def aio(coroutine: Awaitable[T]) -> Deferred[T]:
    """Run an asyncio coroutine on the reactor's loop and await it as a Deferred."""
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


class Consumer(Resource):
    """A push consumer on loopback (Home Assistant's webhook endpoint stand-in)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []
        self.received: list[float] = []

    def render_POST(self, request: Any) -> bytes:
        self.bodies.append(request.content.read())
        self.received.append(time.monotonic())
        return b""


@dataclass
class Loopback:
    """The relay's HTTP side on 127.0.0.1 and a push consumer on 127.0.0.1."""

    port: int
    consumer_port: int
    consumer: Consumer
    hub: EventHub
    subscriptions: Subscriptions
    ports: list[Any] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def alarm(self) -> int:
        """POST an alarmEvent webhook as the firmware does; the status."""
        return await self.webhook({"type": "alarmEvent", "device": "atomcam"})

    async def webhook(self, document: dict[str, Any]) -> int:
        """POST a webhook document as the firmware does; the status."""
        response = await treq.post(
            f"{self.base}/webhook/cam/{TOKEN}",
            data=json.dumps(document).encode(),
            headers={b"Content-Type": [b"application/json"]},
        )
        await treq.content(response)
        return int(response.code)


@pytest_twisted.async_yield_fixture
async def loopback(tmp_path: Path) -> AsyncIterator[Loopback]:
    """The relay (Device + Events services, webhooks) and a consumer, each on a free loopback port."""
    config = parse_config(
        f"""\
onvif:
  users: [{{username: admin, password: secret, role: Administrator}}]
events: {{motion_timeout: 1s}}
state_dir: {tmp_path}
cameras:
  - {{id: cam, host: 192.0.2.10, webhook_token: {TOKEN}, streams: [{{name: main, rtsp_path: video0_unicast}}]}}
"""
    )
    store = StateStore(tmp_path)
    users = UserStore(config.onvif.users, store)
    hub = EventHub(reactor, config.cameras, config.events.motion_timeout)
    guard = ConsumerGuard(reactor.nameResolver, hub.camera_hosts, ConsumerPolicy(allow_loopback=True))
    subscriptions = Subscriptions(reactor, hub, config.cameras, NotifyClient(guarded_agent(reactor, guard), guard))
    subscriptions.startService()
    events = EventsService(reactor, config.cameras, hub, subscriptions)
    services: list[Service] = []
    device = DeviceService(
        clock=reactor,
        config=config,
        identity=Identity(uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")),
        users=users,
        store=store,
        services=lambda: services,
        reboot=lambda: None,
        version="1.0",
    )
    services += [device.service(), events.service()]
    root = Resource()
    root.putChild(b"onvif", OnvifResource(services, Authenticator(reactor, users.lookup, 300.0, False), None))
    root.putChild(b"webhook", WebhookResource(reactor, hub))
    port = reactor.listenTCP(0, Site(root, requestFactory=BoundedRequest), interface="127.0.0.1")
    consumer = Consumer()
    consumer_port = reactor.listenTCP(0, Site(consumer), interface="127.0.0.1")
    harness = Loopback(port.getHost().port, consumer_port.getHost().port, consumer, hub, subscriptions, [port, consumer_port])
    try:
        yield harness
    finally:
        subscriptions.stopService()
        hub.stopService()
        for listening in harness.ports:
            await listening.stopListening()


async def open_camera(port: int) -> ONVIFCamera:
    """Home Assistant's bootstrap: the camera object and its service addresses."""
    camera = ONVIFCamera("127.0.0.1", port, "admin", "secret", WSDL_DIR, no_cache=True)
    await aio(camera.update_xaddrs())
    return camera


def home_assistant_states(messages: Any) -> list[tuple[str, str, bool]]:
    """What Home Assistant's parsers make of MotionAlarm and CellMotionDetector messages: (topic, source, value)."""
    states = []
    for msg in messages:
        topic = msg.Topic._value_1.rstrip("/.")
        payload = msg.Message._value_1
        if topic in (MOTION, CELL):
            states.append((topic, payload.Source.SimpleItem[0].Value, payload.Data.SimpleItem[0].Value == "true"))
    return states


@pytest_twisted.ensureDeferred
async def test_home_assistant_pull_point_for_real(loopback: Loopback) -> None:
    """onvif-zeep-async's pull-point manager sees Initialized false, true right after a webhook, false after the 1 s timeout."""
    camera = await open_camera(loopback.port)
    try:
        lost: list[bool] = []
        manager = await aio(camera.create_pullpoint_manager(INTERVAL, lambda: lost.append(True)))
        assert not camera._has_broken_relative_timestamps  # TerminationTime - CurrentTime is the 600 s asked for
        await aio(manager.set_synchronization_point())
        service = manager.get_service()
        pull = {"Timeout": dt.timedelta(seconds=60), "MessageLimit": 100}

        initial = await aio(service.PullMessages(pull))
        assert home_assistant_states(initial.NotificationMessage) == [
            (MOTION, "cam.vs", False), (CELL, "cam.vsc", False)
        ] * 2
        assert initial.TerminationTime - initial.CurrentTime >= dt.timedelta(seconds=60)

        waiting = asyncio.ensure_future(service.PullMessages(pull))
        await poll(lambda: any(getattr(sub, "waiter", None) is not None
                               for sub in loopback.subscriptions._subs.values()),
                   timeout=10, what="the pull to be parked on the relay")
        assert not waiting.done()  # a long-poll with nothing to report
        sent = time.monotonic()
        assert await loopback.alarm() == 204
        on = await aio(waiting)
        latency = time.monotonic() - sent
        assert home_assistant_states(on.NotificationMessage) == [(MOTION, "cam.vs", True), (CELL, "cam.vsc", True)]
        assert [m.Message._value_1.PropertyOperation for m in on.NotificationMessage] == ["Changed", "Changed"]

        waiting = asyncio.ensure_future(service.PullMessages(pull))
        off = await aio(waiting)
        quiet = time.monotonic() - sent
        assert home_assistant_states(off.NotificationMessage) == [(MOTION, "cam.vs", False), (CELL, "cam.vsc", False)]
        assert 0.9 <= quiet < 5.0

        subscription = await aio(camera.create_subscription_service("PullPointSubscription"))
        renewed = await aio(subscription.Renew("PT600S"))
        assert renewed.TerminationTime - renewed.CurrentTime == dt.timedelta(seconds=600)
        await aio(manager.shutdown())
        assert len(loopback.subscriptions) == 0 and not lost
        print(f"webhook to PullMessages answer: {latency * 1000:.1f} ms; motion end after {quiet:.2f} s")
    finally:
        await aio(camera.close())


async def home_assistant_entities(messages: Any) -> list[tuple[str, str, str, Any]]:
    """What Home Assistant's event parser (onvif-parsers) makes of each message, as Home Assistant calls it:
    (name, platform, device class, value) of every entity; topics it has no parser for are left out."""
    entities = []
    for msg in messages:
        topic = msg.Topic._value_1.rstrip("/.")
        try:
            parsed = await aio(onvif_parsers.parse(topic, "00:11:22:33:44:55", msg))
        except onvif_parsers.errors.UnknownTopicError:
            continue
        for entity in parsed:
            if "MyRuleDetector" in topic:  # one sensor per camera, keyed by the video source token
                assert entity.uid == f"00:11:22:33:44:55_{topic}_cam.vs"
            entities.append((entity.name, entity.platform, entity.device_class, entity.value))
    return entities


@pytest_twisted.ensureDeferred
async def test_home_assistant_parses_person_and_vehicle_detection(loopback: Loopback) -> None:
    """onvif-parsers turns the pulled MyRuleDetector messages into Person, Vehicle and Pet sensors: off, then person and
    vehicle on after a recognitionNotify naming both, then off again after the 1 s timeout."""
    camera = await open_camera(loopback.port)
    try:
        manager = await aio(camera.create_pullpoint_manager(INTERVAL, lambda: None))
        service = manager.get_service()
        pull = {"Timeout": dt.timedelta(seconds=60), "MessageLimit": 100}
        initial = await aio(service.PullMessages(pull))
        assert sorted(await home_assistant_entities(initial.NotificationMessage)) == [
            ("Cell Motion Detection", "binary_sensor", "motion", False),
            ("Motion Alarm", "binary_sensor", "motion", False),
            ("Person Detection", "binary_sensor", "motion", False),
            ("Pet Detection", "binary_sensor", "motion", False),
            ("Vehicle Detection", "binary_sensor", "motion", False),
        ]
        recognition = {"type": "recognitionNotify", "device": "atomcam", "data": "alarmType:person,car"}
        assert await loopback.webhook(recognition) == 204
        on = await aio(service.PullMessages(pull))
        assert await home_assistant_entities(on.NotificationMessage) == [
            ("Person Detection", "binary_sensor", "motion", True),
            ("Vehicle Detection", "binary_sensor", "motion", True),
        ]
        sent = time.monotonic()
        off = await aio(service.PullMessages(pull))
        assert await home_assistant_entities(off.NotificationMessage) == [
            ("Person Detection", "binary_sensor", "motion", False),
            ("Vehicle Detection", "binary_sensor", "motion", False),
        ]
        assert time.monotonic() - sent < 5.0
        await aio(manager.shutdown())
    finally:
        await aio(camera.close())


@pytest_twisted.ensureDeferred
async def test_home_assistant_push_for_real(loopback: Loopback) -> None:
    """onvif-zeep-async's notification manager gets Notify POSTs it parses as Home Assistant does: false, true, false."""
    camera = await open_camera(loopback.port)
    consumer_url = f"http://127.0.0.1:{loopback.consumer_port}/api/webhook/onvif0123456789ab"
    try:
        manager = await aio(camera.create_notification_manager(consumer_url, INTERVAL, lambda: None))
        await aio(manager.set_synchronization_point())
        await poll(lambda: len(loopback.consumer.bodies) >= 2, what="the Initialized Notify requests")

        def states() -> list[tuple[str, str, bool]]:
            found = []
            for body in loopback.consumer.bodies:
                result = manager.process(body)  # Home Assistant's webhook handler does exactly this
                assert result is not None
                found.extend(home_assistant_states(result.NotificationMessage))
            return found

        assert states() == [(MOTION, "cam.vs", False), (CELL, "cam.vsc", False)] * 2
        sent = time.monotonic()
        assert await loopback.alarm() == 204
        await poll(lambda: len(states()) >= 6, what="the motion Notify")
        latency = loopback.consumer.received[2] - sent
        assert states()[4:] == [(MOTION, "cam.vs", True), (CELL, "cam.vsc", True)]
        await poll(lambda: len(states()) >= 8, timeout=5, what="the motion-over Notify")
        assert states()[6:] == [(MOTION, "cam.vs", False), (CELL, "cam.vsc", False)]
        await aio(manager.shutdown())
        assert len(loopback.subscriptions) == 0
        print(f"webhook to Notify received: {latency * 1000:.1f} ms")
    finally:
        await aio(camera.close())


@pytest_twisted.ensureDeferred
async def test_webhook_flood_on_loopback_leaves_the_relay_serving(loopback: Loopback) -> None:
    """50 concurrent webhooks over real sockets: 10 accepted, the rest 429; SOAP keeps answering."""
    started = time.monotonic()
    statuses = await asyncio_gather([aio_deferred(loopback.alarm()) for _ in range(50)])
    refilled = int((time.monotonic() - started) * 2.0)  # the bucket refills 2 per second meanwhile
    assert 10 <= statuses.count(204) <= 10 + refilled
    assert statuses.count(204) + statuses.count(429) == 50
    response = await treq.post(
        f"{loopback.base}/onvif/device_service", data=GET_DATE,
        headers={b"Content-Type": [b"application/soap+xml"]},
    )
    await treq.content(response)
    assert response.code == 200
    assert loopback.hub.motion("cam")


def aio_deferred(coroutine: Awaitable[T]) -> Deferred[T]:
    """A Deferred for a Twisted coroutine."""
    return Deferred.fromCoroutine(coroutine)


async def asyncio_gather(deferreds: list[Deferred[T]]) -> list[T]:
    """Await every Deferred, in order."""
    return [await d for d in deferreds]


@pytest_twisted.ensureDeferred
async def test_guarded_agent_refuses_names_that_resolve_to_refused_addresses(loopback: Loopback) -> None:
    """With the default policy a host name resolving to loopback never gets a connection; a permissive policy reaches it."""
    url = f"http://localhost:{loopback.consumer_port}/hook"
    strict = HTTPClient(guarded_agent(reactor, ConsumerGuard(reactor.nameResolver, frozenset)))
    with pytest.raises(Exception) as refused:
        await strict.post(url, data=b"<x/>")
    assert "localhost" in str(refused.value) or "DNS" in type(refused.value).__name__
    assert loopback.consumer.bodies == []
    permissive = HTTPClient(guarded_agent(reactor, ConsumerGuard(reactor.nameResolver, frozenset, ConsumerPolicy(allow_loopback=True))))
    response = await permissive.post(url, data=b"<x/>")
    await treq.content(response)
    assert response.code == 200 and loopback.consumer.bodies == [b"<x/>"]
