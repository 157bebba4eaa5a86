"""Fixtures for the SOAP layer tests: a relay with small test services behind StubTreq.

Fixture and class names used by the SOAP/security tests start with ``soap_``/``Soap``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest
from lxml import etree
from lxml.etree import _Element
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import Logger, formatEvent
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from atomrelay.auth.policy import AccessClass
from atomrelay.auth.security import Authenticator
from atomrelay.config import User
from atomrelay.onvif.base import Operation, RequestContext, Service
from atomrelay.onvif.server import OnvifResource
from atomrelay.state import ChangeRetired
from atomrelay.xml import ns
from atomrelay.xml.soap import Maker, sender_fault

SOAP_NOW = 1_700_000_000.0
"""The test clock's start (2023-11-14T22:13:20Z)."""
SOAP_SKEW = 300.0
SOAP_USERS = {
    user.username: user
    for user in (
        User("admin", "admin-secret", "Administrator"),
        User("operator", "operator-secret", "Operator"),
        User("viewer", "viewer-secret", "User"),
    )
}
SOAP12_TYPE = "application/soap+xml; charset=utf-8"
SOAP11_TYPE = "text/xml; charset=utf-8"
BASE_URL = "http://relay.test:8080"
EXAMPLE_NS = "urn:example:not-onvif"

_SOAP_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


@dataclass
class SoapReply:
    """One HTTP answer from the relay."""

    status: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> list[str]:
        """All values of a response header."""
        return [value.decode("latin-1") for value in self.headers.getRawHeaders(name.encode("ascii"), [])]

    @property
    def content_type(self) -> str:
        """The Content-Type response header."""
        return self.header("content-type")[0]

    def xml(self) -> _Element:
        """The body parsed as XML."""
        return etree.fromstring(self.body, _SOAP_XML_PARSER)

    def payload(self) -> _Element:
        """The first element of the SOAP Body."""
        root = self.xml()
        namespace = etree.QName(root).namespace
        body = root.find(ns.q(namespace or "", "Body"))
        assert body is not None, self.body
        return body[0]


@dataclass
class SoapRelay:
    """An OnvifResource with test services, an Authenticator on a Clock, driven through StubTreq."""

    http_basic: bool = False
    advertise_host: str | None = None
    clock: Any = field(default_factory=Clock)
    """A Clock advanced to SOAP_NOW, or the real reactor for loopback tests."""
    calls: list[RequestContext] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    log_events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.clock, Clock):
            self.clock.advance(SOAP_NOW)
        self.authenticator = Authenticator(self.clock, SOAP_USERS.get, SOAP_SKEW, self.http_basic)
        self.resource = OnvifResource(soap_services(self), self.authenticator, self.advertise_host, device_id="dev1")
        root = Resource()
        root.putChild(b"onvif", self.resource)
        self.root = root
        self.stub = StubTreq(root)

    def post(
        self,
        body: bytes,
        path: str = "/onvif/device_service",
        content_type: str | None = SOAP12_TYPE,
        headers: dict[str, str] | None = None,
        method: str = "POST",
    ) -> SoapReply:
        """Send one request and return the reply."""
        all_headers = {"Content-Type": content_type} if content_type is not None else {}
        all_headers.update(headers or {})
        done = self.stub.request(
            method,
            BASE_URL + path,
            data=body,
            headers={key: [value] for key, value in all_headers.items()},
        )
        replies: list[Any] = []
        done.addCallback(self._collect).addBoth(replies.append)
        self.stub.flush()
        assert replies, "the relay did not answer"
        if hasattr(replies[0], "raiseException"):
            replies[0].raiseException()
        reply: SoapReply = replies[0]
        return reply

    def _collect(self, response: Any) -> Deferred[SoapReply]:
        body: Deferred[bytes] = self.stub.content(response)
        return body.addCallback(lambda data: SoapReply(response.code, response.headers, data))

    def pending_post(self, body: bytes, headers: dict[str, str] | None = None) -> list[Any]:
        """Start a request whose answer comes later; the list fills when it does."""
        all_headers = {"Content-Type": SOAP12_TYPE, **(headers or {})}
        done = self.stub.request(
            "POST", BASE_URL + "/onvif/device_service", data=body,
            headers={key: [value] for key, value in all_headers.items()},
        )
        replies: list[Any] = []
        done.addCallback(self._collect).addBoth(replies.append)
        self.stub.flush()
        return replies

    def formatted_log(self) -> list[str]:
        """Every captured log event, formatted."""
        return [formatEvent(event) for event in self.log_events]


TDS = Maker(ns.TDS, dict(ns.NSMAP))
TRT = Maker(ns.TRT, dict(ns.NSMAP))
TEV = Maker(ns.TEV, dict(ns.NSMAP))
WSNT = Maker(ns.WSNT, dict(ns.NSMAP))


def soap_services(relay: SoapRelay) -> list[Service]:
    """A device, media and events service whose handlers record their RequestContext."""

    def answer(maker: Maker, name: str) -> Any:
        def handler(context: RequestContext) -> _Element:
            relay.calls.append(context)
            return maker(name)

        return handler

    def explode(context: RequestContext) -> _Element:
        relay.calls.append(context)
        raise RuntimeError("secret internal detail /etc/atomrelay")

    def refuse(context: RequestContext) -> _Element:
        raise sender_fault("InvalidArgVal", "NoProfile", reason="Argument Value Invalid: no such profile")

    def nothing(context: RequestContext) -> Any:
        return None

    def later(context: RequestContext) -> Deferred[_Element]:
        relay.calls.append(context)
        result: Deferred[_Element] = Deferred(lambda d: relay.cancelled.append("later"))
        relay.clock.callLater(1.0, lambda: None if result.called else result.callback(TDS("SetHostnameResponse")))
        return result

    async def coroutine(context: RequestContext) -> _Element:
        relay.calls.append(context)
        await deferLater(relay.clock, 2.0, lambda: None)
        return TDS("SetHostnameResponse")

    async def retired(context: RequestContext) -> _Element:
        raise ChangeRetired("the relay's config was reloaded while this change waited to begin: send it again")

    async def late_fault(context: RequestContext) -> _Element:
        await deferLater(relay.clock, 1.0, lambda: None)
        raise sender_fault("InvalidArgVal", reason="Argument Value Invalid: late")

    device = Service(
        ns.TDS,
        "/onvif/device_service",
        (2, 40),
        {
            "GetSystemDateAndTime": Operation(answer(TDS, "GetSystemDateAndTimeResponse"), AccessClass.PRE_AUTH),
            "GetHostname": Operation(answer(TDS, "GetHostnameResponse"), AccessClass.READ_SYSTEM),
            "GetNetworkInterfaces": Operation(
                answer(TDS, "GetNetworkInterfacesResponse"), AccessClass.READ_SYSTEM_SENSITIVE
            ),
            "GetSystemLog": Operation(answer(TDS, "GetSystemLogResponse"), AccessClass.READ_SYSTEM_SECRET),
            "SetHostname": Operation(answer(TDS, "SetHostnameResponse"), AccessClass.WRITE_SYSTEM),
            "SetSystemFactoryDefault": Operation(
                answer(TDS, "SetSystemFactoryDefaultResponse"), AccessClass.UNRECOVERABLE
            ),
            "Explode": Operation(explode, AccessClass.PRE_AUTH),
            "Refuse": Operation(refuse, AccessClass.PRE_AUTH),
            "Nothing": Operation(nothing, AccessClass.PRE_AUTH),
            "Later": Operation(later, AccessClass.PRE_AUTH),
            "Coroutine": Operation(coroutine, AccessClass.PRE_AUTH),
            "LateFault": Operation(late_fault, AccessClass.PRE_AUTH),
            "Retired": Operation(retired, AccessClass.PRE_AUTH),
        },
    )
    media = Service(
        ns.TRT,
        "/onvif/media_service",
        (2, 60),
        {
            "GetProfiles": Operation(answer(TRT, "GetProfilesResponse"), AccessClass.READ_MEDIA),
            "CreateProfile": Operation(answer(TRT, "CreateProfileResponse"), AccessClass.ACTUATE),
        },
    )
    events = Service(
        ns.TEV,
        "/onvif/events_service",
        (2, 60),
        {
            "CreatePullPointSubscription": Operation(
                answer(TEV, "CreatePullPointSubscriptionResponse"), AccessClass.READ_MEDIA
            ),
            ns.q(ns.WSNT, "Renew"): Operation(answer(WSNT, "RenewResponse"), AccessClass.PRE_AUTH),
        },
    )
    return [device, media, events]


def soap_envelope(
    operation: _Element,
    headers: list[_Element] | None = None,
    version: str = ns.SOAP12,
    prefix: str = "s",
) -> bytes:
    """A request envelope around ``operation`` with optional header blocks."""
    maker = Maker(version, {prefix: version})
    parts = [maker("Header", *headers)] if headers else []
    return etree.tostring(maker("Envelope", *parts, maker("Body", operation)))


def soap_op(name: str, namespace: str = ns.TDS) -> _Element:
    """An empty operation element, e.g. ``tds:GetHostname``."""
    return Maker(namespace, {"op": namespace})(name)


WSSE = Maker(ns.WSSE, {"wsse": ns.WSSE, "wsu": ns.WSU})
WSU = Maker(ns.WSU, {"wsu": ns.WSU})


def soap_iso(seconds: float) -> str:
    """An xs:dateTime in Zulu form for a POSIX time."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def soap_security(
    username: str,
    password: str,
    created: str | None,
    nonce: bytes | None = None,
    digest: bool = True,
) -> _Element:
    """A wsse:Security header with a UsernameToken computed per the profile (PasswordDigest or Text)."""
    nonce = os.urandom(16) if nonce is None and digest else nonce
    if digest:
        assert nonce is not None and created is not None
        value = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()
        password_type = ns.PASSWORD_DIGEST
    else:
        value, password_type = password, ns.PASSWORD_TEXT
    parts: list[Any] = [WSSE("Username", username), WSSE("Password", value, {"Type": password_type})]
    if nonce is not None:
        parts.append(WSSE("Nonce", base64.b64encode(nonce).decode()))
    if created is not None:
        parts.append(WSU("Created", created))
    return WSSE("Security", WSSE("UsernameToken", *parts))


@pytest.fixture
def soap_relay() -> SoapRelay:
    """A relay with Digest and WS-Security (no Basic) and the test services."""
    return SoapRelay()


@pytest.fixture
def soap_basic_relay() -> SoapRelay:
    """A relay with HTTP Basic enabled as well."""
    return SoapRelay(http_basic=True)


@pytest.fixture
def soap_log(soap_relay: SoapRelay, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Log events of the OnvifResource and the Authenticator of ``soap_relay``."""
    observer = soap_relay.log_events.append
    monkeypatch.setattr(OnvifResource, "log", Logger(observer=observer))
    monkeypatch.setattr(Authenticator, "log", Logger(observer=observer))
    yield soap_relay.log_events
