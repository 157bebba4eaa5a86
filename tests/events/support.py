"""A relay with the Events service and the webhook receiver on a Clock, driven through StubTreq.

``EventsRelay`` wires what ``tap.py`` wires (hub, subscription store, Events service,
SOAP server with the real Authenticator, webhook resource) with a ``Clock`` and a push
consumer that lives behind its own StubTreq. Requests are SOAP 1.2 with HTTP Basic
credentials (the WS-Security/Digest paths are the SOAP layer's and are covered there
and in the loopback tests).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lxml import etree
from lxml.builder import ElementMaker
from lxml.etree import _Element
from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHostnameResolver, IHostResolution
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from atomrelay.auth.security import Authenticator
from atomrelay.config import Config, User, parse_config
from atomrelay.events.consumers import ConsumerGuard, ConsumerPolicy, NotifyClient
from atomrelay.events.service import PATH, EventsService
from atomrelay.events.state import EventHub
from atomrelay.events.subscriptions import Subscriptions
from atomrelay.onvif.server import OnvifResource
from atomrelay.state import StateStore
from atomrelay.web.webhook import WebhookResource
from atomrelay.xml import ns
from tests.onvif import schema

NOW = 1_700_000_000.0
"""The test clock's start (2023-11-14T22:13:20Z)."""
TOKEN1 = "cam1-secret-token-0123456789"
TOKEN2 = "cam2-secret-token-9876543210"
BASE = "http://relay.test:8080"
CONSUMER = "http://consumer.test/hook"
USERS = {
    "admin": User("admin", "secret", "Administrator"),
    "viewer": User("viewer", "viewer-secret", "User"),
}
CONFIG = f"""\
onvif:
  users:
    - {{username: admin, password: secret, role: Administrator}}
events: {{motion_timeout: 20s}}
cameras:
  - {{id: cam1, host: 192.0.2.11, webhook_token: {TOKEN1}, streams: [{{name: main, rtsp_path: video0_unicast}}]}}
  - {{id: cam2, host: 192.0.2.12, webhook_token: {TOKEN2}, streams: [{{name: main, rtsp_path: video0_unicast}}]}}
  - {{id: cam3, host: cam3.lan, streams: [{{name: main, rtsp_path: video0_unicast}}]}}
"""

TEV = ElementMaker(namespace=ns.TEV, nsmap={"tev": ns.TEV})
WSNT = ElementMaker(namespace=ns.WSNT, nsmap={"wsnt": ns.WSNT, "tns1": ns.TNS1})
WSA = ElementMaker(namespace=ns.WSA, nsmap={"wsa": ns.WSA})
ENV = ElementMaker(namespace=ns.SOAP12, nsmap={"s": ns.SOAP12})

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


NAMES = {
    "consumer.test": ["192.0.2.50"],
    "ha.example": ["192.0.2.60", "2001:db8::60"],
    "homeassistant.local": ["192.168.1.30", "fe80::30"],
    "cam3.lan": ["192.0.2.13"],
    "localhost": ["127.0.0.1", "::1"],
}
"""The names ``NameTable`` resolves by default (camera hosts of CONFIG: 192.0.2.11, 192.0.2.12, cam3.lan)."""


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class NameTable:
    """A name resolver for tests: names from a table (case and a trailing dot ignored, as DNS does),
    numeric hosts as getaddrinfo reads them (AI_NUMERICHOST: no network); answers after ``delay``
    seconds on ``clock`` when given, else at once."""

    def __init__(self, names: dict[str, list[str]] | None = None, clock: Clock | None = None, delay: float = 0.0) -> None:
        self.names = dict(NAMES if names is None else names)
        self.clock = clock
        self.delay = delay
        self.asked: list[str] = []

    def addresses(self, host: str) -> list[str]:
        """What ``host`` resolves to now."""
        known = self.names.get(host.lower().rstrip("."))
        if known is not None:
            return known
        try:
            infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
        except (socket.gaierror, UnicodeError):
            return []
        return [str(info[4][0]) for info in infos]

    def resolveHostName(self, resolutionReceiver: Any, hostName: str, portNumber: int = 0,
                        addressTypes: Sequence[type] | None = None, transportSemantics: str = "TCP") -> Any:
        """Answer from the table (or the numeric parse)."""
        self.asked.append(hostName)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)

        def answer() -> None:
            for text in self.addresses(hostName):
                kind = IPv6Address if ipaddress.ip_address(text.split("%")[0]).version == 6 else IPv4Address
                if addressTypes is None or kind in addressTypes:
                    resolutionReceiver.addressResolved(kind("TCP", text, portNumber))
            resolutionReceiver.resolutionComplete()

        if self.clock is not None and self.delay:
            self.clock.callLater(self.delay, answer)
        else:
            answer()
        return resolution


def load_config(text: str = CONFIG) -> Config:
    return parse_config(text)


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])

    def payload(self) -> _Element:
        """The first element of the SOAP Body (the response or the Fault)."""
        root = etree.fromstring(self.body, _PARSER)
        body = root.find(ns.q(ns.SOAP12, "Body"))
        assert body is not None, self.body
        return body[0]

    def valid_payload(self) -> _Element:
        """The payload, asserted 200 and schema-valid."""
        assert self.status == 200, (self.status, self.body)
        payload = self.payload()
        schema.validate(payload)
        return payload

    def fault(self) -> tuple[str, list[str], str]:
        """(code, subcodes, reason) of a SOAP 1.2 fault answer (the Fault is schema-valid)."""
        fault = self.payload()
        assert fault.tag == ns.q(ns.SOAP12, "Fault"), self.body
        schema.validate(fault)
        code = fault.findtext(f"{{{ns.SOAP12}}}Code/{{{ns.SOAP12}}}Value") or ""
        subcodes = [v.text or "" for v in fault.iter(ns.q(ns.SOAP12, "Value"))][1:]
        reason = fault.findtext(f"{{{ns.SOAP12}}}Reason/{{{ns.SOAP12}}}Text") or ""
        return code, subcodes, reason


class Consumer(Resource):
    """A push consumer: records every POST, answers ``status`` or hangs when ``hang`` is set."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []
        self.content_types: list[str] = []
        self.times: list[float] = []
        self.status = 200
        self.hang = False
        self.clock: Clock | None = None

    def render_POST(self, request: Any) -> Any:
        self.bodies.append(request.content.read())
        self.content_types.append((request.getHeader(b"content-type") or b"").decode())
        self.times.append(self.clock.seconds() if self.clock is not None else 0.0)
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        return b""

    def notifications(self) -> list[list[tuple[str, str, str | None, dict[str, str], dict[str, str]]]]:
        """Every Notify received, each as a list of messages (see ``messages``); every one schema-checked."""
        result = []
        for body in self.bodies:
            envelope = etree.fromstring(body, _PARSER)
            notify = envelope.find(f"{{{ns.SOAP12}}}Body/{{{ns.WSNT}}}Notify")
            assert notify is not None, body
            schema.validate(notify)
            result.append(messages(notify))
        return result


def messages(parent: _Element) -> list[tuple[str, str, str | None, dict[str, str], dict[str, str]]]:
    """The NotificationMessages under ``parent`` as (topic, UtcTime, PropertyOperation, Source, Data)."""
    found = []
    for holder in parent.iter(ns.q(ns.WSNT, "NotificationMessage")):
        topic = (holder.findtext(ns.q(ns.WSNT, "Topic")) or "").strip()
        message = holder.find(f"{{{ns.WSNT}}}Message/{{{ns.TT}}}Message")
        assert message is not None
        source = {i.get("Name", ""): i.get("Value", "") for i in message.iterfind(f"{{{ns.TT}}}Source/{{{ns.TT}}}SimpleItem")}
        data = {i.get("Name", ""): i.get("Value", "") for i in message.iterfind(f"{{{ns.TT}}}Data/{{{ns.TT}}}SimpleItem")}
        found.append((topic, message.get("UtcTime", ""), message.get("PropertyOperation"), source, data))
    return found


@dataclass
class EventsRelay:
    """The events side of the relay on a Clock (see the module docstring)."""

    config_text: str = CONFIG
    policy: ConsumerPolicy = field(default_factory=ConsumerPolicy)
    resolver: NameTable = field(default_factory=NameTable)
    max_subscriptions: int = 64
    max_per_user: int = 16
    device_cameras: tuple[str, ...] | None = None
    clock: Clock = field(default_factory=Clock)
    state_dir: Path | None = None
    """Where the subscriptions are saved (None: not saved)."""

    def __post_init__(self) -> None:
        if self.clock.seconds() == 0:
            self.clock.advance(NOW)
        self.config = load_config(self.config_text)
        cameras = [c for c in self.config.cameras if self.device_cameras is None or c.id in self.device_cameras]
        self.hub = EventHub(self.clock, self.config.cameras, self.config.events.motion_timeout)
        self.consumer = Consumer()
        self.consumer.clock = self.clock
        consumer_root = Resource()
        consumer_root.putChild(b"hook", self.consumer)
        self.consumer_agent = RequestTraversalAgent(consumer_root)
        guard = ConsumerGuard(self.resolver, self.hub.camera_hosts, self.policy)
        self.subscriptions = Subscriptions(
            self.clock, self.hub, cameras, NotifyClient(self.consumer_agent, guard),
            max_subscriptions=self.max_subscriptions,
            max_per_user=self.max_per_user,
            store=StateStore(self.state_dir) if self.state_dir is not None else None,
        )
        if self.state_dir is None:  # with saved state, the test starts it (that restores what was saved)
            self.subscriptions.startService()
        self.events = EventsService(self.clock, cameras, self.hub, self.subscriptions)
        self.authenticator = Authenticator(self.clock, USERS.get, 300.0, True)
        self.webhooks = WebhookResource(self.clock, self.hub)
        root = Resource()
        root.putChild(b"onvif", OnvifResource([self.events.service()], self.authenticator, None))
        root.putChild(b"webhook", self.webhooks)
        self.http = StubTreq(root)

    # --- HTTP ---------------------------------------------------------------------------------

    def start(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> list[Any]:
        """Send a request; the returned list gets the Reply once the relay answers."""
        done = self.http.request(
            method, BASE + path, data=body, headers={k: [v] for k, v in (headers or {}).items()}
        )
        replies: list[Any] = []

        def collect(response: Any) -> Any:
            content = self.http.content(response)
            return content.addCallback(
                lambda data: Reply(
                    response.code,
                    {k.decode().lower(): [x.decode() for x in v] for k, v in response.headers.getAllRawHeaders()},
                    data,
                )
            )

        done.addCallback(collect).addBoth(replies.append)
        self.http.flush()
        return replies

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
        """Send a request that is answered at once."""
        replies = self.start(method, path, body, headers)
        return self.result(replies)

    def result(self, replies: list[Any]) -> Reply:
        """The reply collected by ``start`` (asserts that it came)."""
        self.http.flush()
        assert replies, "the relay did not answer"
        if hasattr(replies[0], "raiseException"):
            replies[0].raiseException()
        reply: Reply = replies[0]
        return reply

    def soap_start(self, operation: _Element, path: str = PATH, user: str | None = "admin") -> list[Any]:
        """POST a SOAP 1.2 request (HTTP Basic as ``user``); the list gets the Reply."""
        envelope = etree.tostring(ENV.Envelope(ENV.Body(operation)))
        headers = {"Content-Type": "application/soap+xml; charset=utf-8"}
        if user is not None:
            password = USERS[user].password
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return self.start("POST", path, envelope, headers)

    def soap(self, operation: _Element, path: str = PATH, user: str | None = "admin") -> Reply:
        """POST a SOAP request that is answered at once."""
        return self.result(self.soap_start(operation, path, user))

    def webhook(self, camera: str, token: str, document: Any, raw: bytes | None = None) -> Reply:
        """POST a webhook as the firmware does."""
        body = raw if raw is not None else json.dumps(document).encode()
        return self.request("POST", f"/webhook/{camera}/{token}", body, {"Content-Type": "application/json"})

    def alarm(self, camera: str = "cam1", token: str = TOKEN1) -> Reply:
        """An ``alarmEvent`` webhook."""
        return self.webhook(camera, token, {"type": "alarmEvent", "device": "atomcam"})

    # --- time ---------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the clock, then let both HTTP sides run."""
        self.clock.advance(seconds)
        self.pump()

    def pump(self) -> None:
        """Run what is due now (zero-delay calls) and deliver pending HTTP on both sides."""
        for _ in range(5):
            self.clock.advance(0)
            self.consumer_agent.flush()
            self.http.flush()

    # --- Events operations ----------------------------------------------------------------------

    def create_pull_point(self, termination: str | None = "PT600S", *extra: _Element) -> tuple[str, _Element]:
        """CreatePullPointSubscription; the subscription's path and the (valid) response."""
        parts: list[Any] = list(extra)
        if termination is not None:
            parts.append(TEV.InitialTerminationTime(termination))
        payload = self.soap(TEV.CreatePullPointSubscription(*parts)).valid_payload()
        address = payload.findtext(f"{{{ns.TEV}}}SubscriptionReference/{{{ns.WSA}}}Address") or ""
        assert address.startswith(BASE + PATH + "/subscription/"), address
        return address[len(BASE):], payload

    def pull_start(self, path: str, timeout: str = "PT60S", limit: int = 100) -> list[Any]:
        """PullMessages (as Home Assistant: PT60S, 100) without waiting for the answer."""
        return self.soap_start(TEV.PullMessages(TEV.Timeout(timeout), TEV.MessageLimit(str(limit))), path)

    def pull(self, path: str, timeout: str = "PT0S", limit: int = 100) -> list[tuple[str, str, str | None, dict[str, str], dict[str, str]]]:
        """PullMessages answered at once (queued messages or a zero timeout); the messages."""
        reply = self.result(self.pull_start(path, timeout, limit))
        return messages(reply.valid_payload())
