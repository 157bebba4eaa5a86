"""The SOAP server's cache of serialized answers (``Operation.reply_key``) and its users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lxml.etree import _Element
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyChannel

from atomrelay.auth.policy import AccessClass
from atomrelay.onvif.base import Operation, RequestContext, Service
from atomrelay.onvif.server import OnvifResource
from atomrelay.web.limits import BoundedRequest
from atomrelay.xml import ns
from atomrelay.xml.soap import Maker, sender_fault
from tests.helpers import settled
from tests.media.support import MediaHarness
from tests.onvif.conftest import (
    SOAP11_TYPE,
    SOAP_NOW,
    SoapRelay,
    soap_envelope,
    soap_iso,
    soap_op,
    soap_security,
)

TDS = Maker(ns.TDS, dict(ns.NSMAP))
TRT = Maker(ns.TRT, {"trt": ns.TRT, "tt": ns.TT})
WSA = Maker(ns.WSA, {"wsa": ns.WSA})


class Counted:
    """A device service whose GetHostname answers are cached under ``key`` and whose calls are counted."""

    def __init__(self) -> None:
        self.calls = 0
        self.key: Any = "one"
        self.fail = False
        self.padding = ""

    def get_hostname(self, ctx: RequestContext) -> _Element:
        self.calls += 1
        if self.fail:
            raise sender_fault("InvalidArgVal", reason="Argument Value Invalid: not now")
        return TDS("GetHostnameResponse", TDS("HostnameInformation", str(self.calls) + self.padding))

    def service(self) -> Service:
        return Service(ns.TDS, "/onvif/device_service", (2, 40), {
            "GetHostname": Operation(self.get_hostname, AccessClass.READ_SYSTEM, reply_key=lambda ctx: self.key),
        })


def counted_relay() -> tuple[SoapRelay, Counted]:
    relay = SoapRelay()
    counted = Counted()
    relay.resource = OnvifResource([counted.service()], relay.authenticator, None)
    relay.root.putChild(b"onvif", relay.resource)
    return relay, counted


def signed(operation: _Element, extra: list[_Element] | None = None, version: str = ns.SOAP12) -> bytes:
    security = soap_security("admin", "admin-secret", soap_iso(SOAP_NOW))
    return soap_envelope(operation, [security, *(extra or [])], version=version)


def test_equal_keys_share_one_serialized_answer() -> None:
    """Requests with the same reply key get the same bytes from one handler call; a new key calls it again."""
    relay, counted = counted_relay()
    first = relay.post(signed(soap_op("GetHostname")))
    second = relay.post(signed(soap_op("GetHostname")))
    assert (first.status, second.status, counted.calls) == (200, 200, 1)
    assert second.body == first.body
    counted.key = "two"
    third = relay.post(signed(soap_op("GetHostname")))
    assert counted.calls == 2
    assert third.payload()[0].text == "2"


def test_each_soap_version_has_its_own_entry() -> None:
    """A SOAP 1.1 request after a cached SOAP 1.2 answer gets a SOAP 1.1 envelope and content type."""
    relay, counted = counted_relay()
    relay.post(signed(soap_op("GetHostname")))
    reply = relay.post(signed(soap_op("GetHostname"), version=ns.SOAP11), content_type=SOAP11_TYPE)
    assert reply.content_type == SOAP11_TYPE
    assert reply.xml().tag == ns.q(ns.SOAP11, "Envelope")
    assert counted.calls == 2


def test_ws_addressing_requests_are_answered_afresh() -> None:
    """A request with a wsa:MessageID gets its own RelatesTo, never a cached answer."""
    relay, counted = counted_relay()
    relay.post(signed(soap_op("GetHostname")))
    reply = relay.post(signed(soap_op("GetHostname"), [WSA("MessageID", "urn:uuid:42")]))
    assert counted.calls == 2
    assert reply.xml().findtext(f"{{{ns.SOAP12}}}Header/{{{ns.WSA}}}RelatesTo") == "urn:uuid:42"


def test_faults_are_not_cached_and_access_is_still_checked() -> None:
    """A fault is asked again next time, and a cached answer still needs valid credentials."""
    relay, counted = counted_relay()
    counted.fail = True
    assert relay.post(signed(soap_op("GetHostname"))).status == 400
    counted.fail = False
    assert relay.post(signed(soap_op("GetHostname"))).status == 200
    assert counted.calls == 2
    assert relay.post(soap_envelope(soap_op("GetHostname"))).status == 401


def test_the_cache_is_bounded_in_bytes() -> None:
    """The answers kept never add up to more than the cache's bytes, whatever the number of keys, and an answer
    over a quarter of them is not kept."""
    relay, counted = counted_relay()
    replies = relay.resource._replies
    replies.max_bytes = 8192
    for key in range(100):
        counted.key = key
        relay.post(signed(soap_op("GetHostname")))
        assert 0 < replies.size <= 8192
    counted.key, counted.padding = "big", "x" * 2100
    calls = counted.calls
    for _ in range(2):
        assert relay.post(signed(soap_op("GetHostname"))).status == 200
    assert counted.calls == calls + 2


def test_media_get_profiles_answer_follows_profile_changes(tmp_path: Path) -> None:
    """Cached GetProfiles bytes are replaced once a profile is created (the model generation is in the key)."""
    harness = MediaHarness(tmp_path)
    relay = SoapRelay()
    relay.resource = OnvifResource([harness.media, harness.media2], relay.authenticator, None)
    relay.root.putChild(b"onvif", relay.resource)

    def tokens() -> list[str]:
        reply = relay.post(signed(TRT("GetProfiles")), path="/onvif/media_service")
        return [p.get("token") or "" for p in reply.payload()]

    before = tokens()
    assert tokens() == before
    settled(harness.model.create_profile("new", None))
    assert tokens() == [*before, "profile1"]


def test_system_date_and_time_changes_with_the_second(tmp_path: Path) -> None:
    """GetSystemDateAndTime answers from the cache within one clock second and afresh in the next."""
    from tests.onvif.test_device import Harness

    harness = Harness(tmp_path)
    relay = SoapRelay()
    relay.resource = OnvifResource([harness.device.service()], relay.authenticator, None)
    relay.root.putChild(b"onvif", relay.resource)

    def seconds() -> str | None:
        reply = relay.post(soap_envelope(soap_op("GetSystemDateAndTime")))
        return reply.payload().findtext(f".//{{{ns.TT}}}UTCDateTime/{{{ns.TT}}}Time/{{{ns.TT}}}Second")

    harness.clock.advance(1.1 - harness.clock.seconds() % 1)
    first = seconds()
    harness.clock.advance(0.5)
    assert seconds() == first
    harness.clock.advance(1.0)
    assert seconds() != first


def test_bounded_request_leaves_form_bodies_alone() -> None:
    """A form-encoded POST body is not parsed into request.args (no POST to the relay is a form)."""
    seen: list[dict[bytes, list[bytes]]] = []

    class Recorder(Resource):
        isLeaf = True

        def render_POST(self, request: Any) -> bytes:
            seen.append(dict(request.args))
            return b""

    channel = DummyChannel()
    channel.site = Site(Recorder())
    request = BoundedRequest(channel)
    request.requestHeaders.setRawHeaders(b"content-type", [b"application/x-www-form-urlencoded"])
    request.requestHeaders.setRawHeaders(b"content-length", [b"3"])
    request.gotLength(3)
    request.handleContentChunk(b"a=b")
    request.requestReceived(b"POST", b"/form", b"HTTP/1.1")
    assert seen == [{}]


def test_the_fault_cache_is_bounded_in_entries_and_bytes() -> None:
    """Cached fault answers (whose reasons may quote the request) are at most 3 KiB each and 128 in all: 384 KiB."""
    from atomrelay.xml import soap
    from atomrelay.xml.soap import SoapFault

    longest = "\U0001f600" * 200  # the longest cached reason, in the widest UTF-8 characters
    for version in (soap.SOAP_12, soap.SOAP_11):
        body = soap.fault_envelope(version, SoapFault("Sender", ("ActionNotSupported", "X" * 40), longest))
        assert len(body) <= 3072
    soap._fault_bytes.cache_clear()
    for n in range(300):
        soap.fault_envelope(soap.SOAP_12, SoapFault("Sender", ("ActionNotSupported",), f"reason {n}"))
    assert soap._fault_bytes.cache_info().currsize == 128


def test_a_host_header_too_long_for_a_host_name_is_not_remembered() -> None:
    """A Host value over 300 bytes (no DNS name is that long) gives XAddrs on the local address and is not kept."""
    relay, _ = counted_relay()
    host = "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + "." + "e" * 60 + ".example"
    assert relay.post(signed(soap_op("GetHostname")), headers={"Host": host}).status == 200
    assert relay.post(signed(soap_op("GetHostname")), headers={"Host": "relay.example:8080"}).status == 200
    assert list(relay.resource._hosts.values()) == ["relay.example:8080"]
