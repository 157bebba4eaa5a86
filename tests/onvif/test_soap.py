"""The SOAP server: content types, envelopes, dispatch, faults, limits and async handlers."""

from __future__ import annotations

import gc
import socket
import weakref
from typing import Any

import pytest
import pytest_twisted
import treq
from lxml import etree
from lxml.etree import _Element
from twisted.internet import reactor
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.web.server import Site

from atomrelay.auth.policy import ANONYMOUS
from atomrelay.onvif.server import OnvifResource
from atomrelay.web.limits import MAX_BODY, BoundedRequest
from atomrelay.xml import ns
from atomrelay.xml.parsing import MalformedXML, UnsafeXML, parse_untrusted
from atomrelay.xml.soap import MAX_REASON, SOAP_11, SOAP_12, SoapFault, _fault_bytes, fault_envelope, sender_fault
from tests.onvif.conftest import (
    EXAMPLE_NS,
    SOAP11_TYPE,
    SoapRelay,
    SoapReply,
    soap_envelope,
    soap_iso,
    soap_op,
    soap_security,
    soap_services,
)
from tests.onvif.schema import validate

GET_DATE = soap_envelope(soap_op("GetSystemDateAndTime"))
ENVELOPE_PREFIXES = {"tds", "trt", "tr2", "tptz", "timg", "tev", "tt", "ter", "wsa", "wsnt", "tns1"}

XXE = (
    b'<?xml version="1.0"?><!DOCTYPE s:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
    b'<GetHostname xmlns="http://www.onvif.org/ver10/device/wsdl">&xxe;</GetHostname></s:Body></s:Envelope>'
)
PARAMETER_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % ext SYSTEM "file:///etc/passwd"> %ext;]>'
    b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>'
)
BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (level, b"".join(b"&lol%s;" % (b"" if level == 1 else str(level - 1).encode())
                                                    for _ in range(10)))
        for level in range(1, 10)
    )
    + b']><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
    b'<GetHostname xmlns="http://www.onvif.org/ver10/device/wsdl">&lol9;</GetHostname></s:Body></s:Envelope>'
)


def assert_fault(reply: SoapReply, code: str, subcodes: tuple[str, ...], status: int) -> str:
    """Check a SOAP 1.2 fault precisely (and against the envelope schema); return its reason text."""
    assert reply.status == status, reply.body
    assert reply.content_type == "application/soap+xml; charset=utf-8"
    root = reply.xml()
    validate(root)
    fault = reply.payload()
    assert fault.tag == ns.q(ns.SOAP12, "Fault")
    assert [etree.QName(child).localname for child in fault] == ["Code", "Reason"]
    value = fault.find(f"{{{ns.SOAP12}}}Code/{{{ns.SOAP12}}}Value")
    assert value is not None and _resolve(value) == ns.q(ns.SOAP12, code)
    found = []
    level = fault.find(f"{{{ns.SOAP12}}}Code")
    while level is not None and (level := level.find(ns.q(ns.SOAP12, "Subcode"))) is not None:
        subvalue = level.find(ns.q(ns.SOAP12, "Value"))
        assert subvalue is not None
        resolved = _resolve(subvalue)
        assert resolved.startswith("{" + ns.TER + "}"), resolved
        found.append(etree.QName(resolved).localname)
    assert tuple(found) == subcodes
    text = fault.find(f"{{{ns.SOAP12}}}Reason/{{{ns.SOAP12}}}Text")
    assert text is not None and text.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert text.text
    return text.text


def _resolve(value: _Element) -> str:
    """A QName text value in Clark notation, resolved against the element's in-scope namespaces."""
    prefix, _, local = (value.text or "").partition(":")
    return ns.q(value.nsmap[prefix], local)


# --- content types and SOAP versions ------------------------------------------------------


def test_soap12_request_is_answered_in_soap12(soap_relay: SoapRelay) -> None:
    """A SOAP 1.2 request gets a SOAP 1.2 envelope declaring every ONVIF prefix, as application/soap+xml."""
    reply = soap_relay.post(GET_DATE)
    assert reply.status == 200
    assert reply.content_type == "application/soap+xml; charset=utf-8"
    root = reply.xml()
    assert root.tag == ns.q(ns.SOAP12, "Envelope")
    assert ENVELOPE_PREFIXES <= set(root.nsmap)
    assert all(root.nsmap[prefix] == ns.NSMAP[prefix] for prefix in ENVELOPE_PREFIXES)
    assert reply.payload().tag == ns.q(ns.TDS, "GetSystemDateAndTimeResponse")
    assert b"<SOAP-ENV:Body><tds:GetSystemDateAndTimeResponse/></SOAP-ENV:Body>" in reply.body
    assert reply.body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')


def test_soap11_request_is_answered_in_soap11(soap_relay: SoapRelay) -> None:
    """A SOAP 1.1 envelope posted as text/xml with SOAPAction gets a SOAP 1.1 answer as text/xml."""
    reply = soap_relay.post(
        soap_envelope(soap_op("GetSystemDateAndTime"), version=ns.SOAP11),
        content_type=SOAP11_TYPE,
        headers={"SOAPAction": '"http://www.onvif.org/ver10/device/wsdl/GetSystemDateAndTime"'},
    )
    assert reply.status == 200
    assert reply.content_type == "text/xml; charset=utf-8"
    assert reply.xml().tag == ns.q(ns.SOAP11, "Envelope")
    assert reply.payload().tag == ns.q(ns.TDS, "GetSystemDateAndTimeResponse")


def test_application_xml_is_accepted(soap_relay: SoapRelay) -> None:
    """Synology's Content-Type application/xml is served like SOAP 1.2."""
    reply = soap_relay.post(GET_DATE, content_type="application/xml")
    assert reply.status == 200
    assert reply.xml().tag == ns.q(ns.SOAP12, "Envelope")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/soap+xml",
        "application/soap+xml;",
        "application/soap+xml; charset=utf-8;",
        'application/soap+xml;charset=utf-8;action="http://www.onvif.org/ver10/device/wsdl/GetSystemDateAndTime"',
        'application/soap+xml; charset=utf-8; action="http://www.onvif.org/ver10/device/wsdl/GetSystemDateAndTime";',
        "Application/SOAP+XML; Charset=UTF-8",
    ],
)
def test_content_type_parameters_are_tolerated(soap_relay: SoapRelay, content_type: str) -> None:
    """The action= parameter, a trailing ';' and any letter case do not matter."""
    assert soap_relay.post(GET_DATE, content_type=content_type).status == 200


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415_without_soap(soap_relay: SoapRelay, content_type: str | None) -> None:
    """A body that is not declared as XML is refused with 415 and a plain-text explanation (Core "HTTP errors")."""
    reply = soap_relay.post(GET_DATE, content_type=content_type)
    assert reply.status == 415
    assert reply.content_type.startswith("text/plain")
    assert b"application/soap+xml" in reply.body
    assert not soap_relay.calls


# --- dispatch -----------------------------------------------------------------------------


def test_any_onvif_path_serves_any_operation(soap_relay: SoapRelay) -> None:
    """A device operation posted to the media path (and the reverse) is dispatched by the Body."""
    admin = soap_security("admin", "admin-secret", soap_iso(soap_relay.clock.seconds()))
    media = soap_envelope(soap_op("GetProfiles", ns.TRT), [admin])
    assert soap_relay.post(GET_DATE, path="/onvif/media_service").status == 200
    reply = soap_relay.post(media, path="/onvif/device_service")
    assert reply.status == 200
    assert reply.payload().tag == ns.q(ns.TRT, "GetProfilesResponse")
    assert [call.service_path for call in soap_relay.calls] == ["/onvif/media_service", "/onvif/device_service"]
    assert soap_relay.post(GET_DATE, path="/onvif/events_service/subscription/7").status == 200
    assert soap_relay.calls[-1].service_path == "/onvif/events_service/subscription/7"


def test_context_carries_caller_host_and_device(soap_relay: SoapRelay) -> None:
    """The handler sees the anonymous caller, the Host header, the peer and the device id."""
    soap_relay.post(GET_DATE)
    context = soap_relay.calls[0]
    assert context.caller == ANONYMOUS
    assert context.host == "relay.test:8080"
    assert context.remote == "127.0.0.1"
    assert context.device_id == "dev1"
    assert context.body.tag == ns.q(ns.TDS, "GetSystemDateAndTime")


def test_comments_around_the_operation_do_not_matter(soap_relay: SoapRelay) -> None:
    """Comments and processing instructions in the Body are dropped before dispatch."""
    body = GET_DATE.replace(b"<op:GetSystemDateAndTime", b"<!-- hello --><?pi x?><op:GetSystemDateAndTime")
    assert b"<!-- hello -->" in body
    assert soap_relay.post(body).payload().tag == ns.q(ns.TDS, "GetSystemDateAndTimeResponse")


def test_operation_in_another_namespace_is_dispatched(soap_relay: SoapRelay) -> None:
    """A Clark-notation table key (wsnt:Renew in the events service) routes that element."""
    reply = soap_relay.post(soap_envelope(soap_op("Renew", ns.WSNT)), path="/onvif/events_service")
    assert reply.status == 200
    assert reply.payload().tag == ns.q(ns.WSNT, "RenewResponse")


@pytest.mark.parametrize("path", ["/onvif/nope", "/onvif/", "/onvif"])
def test_unknown_paths_are_404(soap_relay: SoapRelay, path: str) -> None:
    """Only the services' paths exist below /onvif."""
    assert soap_relay.post(GET_DATE, path=path).status == 404


def test_get_is_405(soap_relay: SoapRelay) -> None:
    """A SOAP endpoint only answers POST."""
    reply = soap_relay.post(b"", method="GET", content_type=None)
    assert reply.status == 405
    assert "POST" in reply.header("allow")[0]


def test_unknown_operation_of_a_served_namespace_is_receiver_action_not_supported(soap_relay: SoapRelay) -> None:
    """An operation the device service does not implement is env:Receiver/ter:ActionNotSupported (Core 5.1.2)."""
    reason = assert_fault(
        soap_relay.post(soap_envelope(soap_op("GetDot11Status"))), "Receiver", ("ActionNotSupported",), 500
    )
    assert "not implemented" in reason


def test_operation_of_an_unknown_namespace_is_sender_action_not_supported(soap_relay: SoapRelay) -> None:
    """An element from a namespace no service serves is the sender's mistake."""
    reply = soap_relay.post(soap_envelope(soap_op("GetHostname", EXAMPLE_NS)))
    assert_fault(reply, "Sender", ("ActionNotSupported",), 400)


# --- malformed and hostile documents ------------------------------------------------------


@pytest.mark.parametrize("body", [b"hello", b"<s:Envelope", b'{"json": true}', b"\xff\xfe<\x00a\x00/\x00>\x00"])
def test_non_xml_is_well_formed_fault(soap_relay: SoapRelay, body: bytes) -> None:
    """Bytes that are not a UTF-8 XML document are env:Sender/ter:WellFormed (an empty body without credentials is
    challenged instead: test_empty_body_without_credentials_is_challenged)."""
    reason = assert_fault(soap_relay.post(body), "Sender", ("WellFormed",), 400)
    assert reason.startswith("Well-formed Error")


@pytest.mark.parametrize("payload", [XXE, PARAMETER_ENTITY, BILLION_LAUGHS], ids=["xxe", "parameter-entity", "lol"])
def test_doctype_payloads_are_refused_unexpanded(soap_relay: SoapRelay, payload: bytes) -> None:
    """XXE, external parameter entities and billion laughs are refused without expanding anything."""
    reply = soap_relay.post(payload)
    reason = assert_fault(reply, "Sender", ("WellFormed",), 400)
    assert "DOCTYPE" in reason
    assert b"root:" not in reply.body and b"lollol" not in reply.body
    assert not soap_relay.calls


def test_parser_refuses_doctype_and_deep_or_huge_trees() -> None:
    """parse_untrusted refuses DOCTYPE, nesting past 64 and more than 4096 elements, and rejects junk."""
    with pytest.raises(UnsafeXML, match="DOCTYPE"):
        parse_untrusted(XXE)
    deep = b"<a>" * 65 + b"</a>" * 65
    assert parse_untrusted(b"<a>" * 64 + b"</a>" * 64).tag == "a"
    with pytest.raises(UnsafeXML, match="deeper"):
        parse_untrusted(deep)
    with pytest.raises(UnsafeXML, match="4096"):
        parse_untrusted(b"<a>" + b"<b/>" * 4096 + b"</a>")
    with pytest.raises(MalformedXML):
        parse_untrusted(b"<a>&undeclared;</a>")
    with pytest.raises(MalformedXML):
        parse_untrusted('<?xml version="1.0" encoding="UTF-16"?><a/>'.encode("utf-16"))
    assert parse_untrusted(b"<a><!-- note --><?pi x?><b/></a>")[0].tag == "b"


def test_parser_counts_attributes_and_namespace_declarations() -> None:
    """parse_untrusted accepts 4096 attributes and namespace declarations together, and refuses one more of either."""
    attributes = b" ".join(b'a%d=""' % n for n in range(4096))
    assert len(parse_untrusted(b"<a " + attributes + b"/>").attrib) == 4096
    with pytest.raises(UnsafeXML, match="4096 attributes"):
        parse_untrusted(b'<a xmlns:p="u" ' + attributes + b"/>")
    declarations = b" ".join(b'xmlns:p%d="u"' % n for n in range(2048))
    half = b" ".join(b'a%d=""' % n for n in range(2048))
    assert parse_untrusted(b"<a " + declarations + b"><b " + half + b"/></a>")[0].tag == "b"
    with pytest.raises(UnsafeXML, match="namespace declarations"):
        parse_untrusted(b"<a " + declarations + b'><b x="" ' + half + b"/></a>")


def test_attribute_flood_is_a_well_formed_fault(soap_relay: SoapRelay) -> None:
    """GetSystemDateAndTime with 23,000 empty attributes in a header block is refused as env:Sender/ter:WellFormed."""
    attributes = " ".join(f'a{n}=""' for n in range(23_000))
    header = etree.fromstring(f'<h:Pad xmlns:h="urn:pad" {attributes}/>')
    body = soap_envelope(soap_op("GetSystemDateAndTime"), headers=[header])
    reason = assert_fault(soap_relay.post(body), "Sender", ("WellFormed",), 400)
    assert "more than 4096 attributes" in reason
    assert not soap_relay.calls


def test_deep_document_is_a_well_formed_fault(soap_relay: SoapRelay) -> None:
    """A request nested past the depth limit is refused as env:Sender/ter:WellFormed."""
    deep = etree.tostring(soap_op("SetHostname"))
    body = soap_envelope(etree.fromstring(b"<x>" * 70 + deep + b"</x>" * 70))
    assert_fault(soap_relay.post(body), "Sender", ("WellFormed",), 400)


def test_not_an_envelope_is_version_mismatch(soap_relay: SoapRelay) -> None:
    """A root other than a SOAP 1.2/1.1 Envelope is env:VersionMismatch (Core generic faults)."""
    wrong = etree.tostring(etree.Element(ns.q("http://example.com/soap", "Envelope")))
    assert_fault(soap_relay.post(wrong), "VersionMismatch", (), 500)
    assert_fault(soap_relay.post(b"<GetSystemDateAndTime/>"), "VersionMismatch", (), 500)


def test_empty_or_missing_body_is_tag_fault(soap_relay: SoapRelay) -> None:
    """An Envelope without Body, or with an empty Body, is env:Sender/ter:Tag."""
    maker_ns = ns.SOAP12
    empty = etree.tostring(
        etree.fromstring(f'<s:Envelope xmlns:s="{maker_ns}"><s:Header/><s:Body/></s:Envelope>'.encode())
    )
    no_body = etree.tostring(etree.Element(ns.q(maker_ns, "Envelope"), nsmap={"s": maker_ns}))
    assert "operation" in assert_fault(soap_relay.post(empty), "Sender", ("Tag",), 400)
    assert "Body" in assert_fault(soap_relay.post(no_body), "Sender", ("Tag",), 400)


def test_body_over_the_limit_is_413(soap_relay: SoapRelay) -> None:
    """A body over 256 KiB is refused with 413 even on a plain Site (checked in the resource)."""
    padding = etree.Element("pad")
    padding.text = "x" * MAX_BODY
    big = soap_envelope(soap_op("GetSystemDateAndTime"), [padding])
    reply = soap_relay.post(big)
    assert reply.status == 413
    assert not soap_relay.calls


@pytest.mark.parametrize(
    "bad",
    [
        {"body": b"<oops", "content_type": "application/soap+xml"},
        {"body": XXE, "content_type": "application/soap+xml"},
        {"body": GET_DATE, "content_type": "application/json"},
        {"body": b"x" * (MAX_BODY + 1), "content_type": "application/soap+xml"},
        {"body": soap_envelope(soap_op("Explode")), "content_type": "application/soap+xml"},
        {"body": soap_envelope(soap_op("Nope")), "content_type": "application/soap+xml"},
        {"body": soap_envelope(soap_op("GetHostname")), "content_type": "application/soap+xml"},
    ],
    ids=["malformed", "xxe", "content-type", "too-large", "crash", "unknown", "unauthenticated"],
)
def test_server_keeps_serving_after_a_bad_request(soap_relay: SoapRelay, bad: dict[str, Any]) -> None:
    """Whatever went wrong with one request, the next good one is answered normally."""
    assert soap_relay.post(bad["body"], content_type=bad["content_type"]).status >= 400
    assert soap_relay.post(GET_DATE).status == 200


# --- handler results ----------------------------------------------------------------------


def test_handler_fault_is_returned_with_its_subcodes(soap_relay: SoapRelay) -> None:
    """A SoapFault raised by a handler reaches the client with its ter: subcode chain and reason."""
    reason = assert_fault(
        soap_relay.post(soap_envelope(soap_op("Refuse"))), "Sender", ("InvalidArgVal", "NoProfile"), 400
    )
    assert reason == "Argument Value Invalid: no such profile"


def test_handler_fault_in_soap11(soap_relay: SoapRelay) -> None:
    """In SOAP 1.1 a handler's Sender fault is faultcode Client with the reason, as HTTP 500."""
    reply = soap_relay.post(soap_envelope(soap_op("Refuse"), version=ns.SOAP11), content_type=SOAP11_TYPE)
    assert reply.status == 500
    assert reply.content_type == "text/xml; charset=utf-8"
    fault = reply.payload()
    assert fault.tag == ns.q(ns.SOAP11, "Fault")
    code = fault.find("faultcode")
    assert code is not None and _resolve(code) == ns.q(ns.SOAP11, "Client")
    assert fault.findtext("faultstring") == "Argument Value Invalid: no such profile"


def test_a_change_a_reload_retired_is_answered_send_it_again(
    soap_relay: SoapRelay, soap_log: list[dict[str, Any]]
) -> None:
    """ChangeRetired from a handler (its objects belong to a generation a reload retired) is a Receiver ter:Action
    fault with its own text, not a crash with a traceback in the log."""
    reason = assert_fault(soap_relay.post(soap_envelope(soap_op("Retired"))), "Receiver", ("Action",), 500)
    assert "send it again" in reason
    assert not [event for event in soap_log if "log_failure" in event]


def test_handler_crash_is_receiver_action_without_traceback(
    soap_relay: SoapRelay, soap_log: list[dict[str, Any]]
) -> None:
    """An unexpected exception is answered as env:Receiver/ter:Action; the traceback goes to the log once."""
    reply = soap_relay.post(soap_envelope(soap_op("Explode")))
    reason = assert_fault(reply, "Receiver", ("Action",), 500)
    assert reason.startswith("Action Failed")
    assert b"Traceback" not in reply.body and b"secret internal detail" not in reply.body
    failures = [event for event in soap_log if "log_failure" in event]
    assert len(failures) == 1
    assert "secret internal detail" in failures[0]["log_failure"].getTraceback()


def test_a_bug_in_the_soap_layer_is_still_a_soap_fault(
    soap_relay: SoapRelay, soap_log: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error outside any handler is logged and answered as Receiver ter:Action, never an HTML 500."""

    def broken(self: OnvifResource, request: Any) -> str:
        raise ZeroDivisionError("bug in the relay")

    monkeypatch.setattr(OnvifResource, "_host", broken)
    reply = soap_relay.post(GET_DATE)
    assert_fault(reply, "Receiver", ("Action",), 500)
    assert b"bug in the relay" not in reply.body
    assert len([event for event in soap_log if "log_failure" in event]) == 1


def test_handler_returning_a_non_element_is_receiver_action(soap_relay: SoapRelay) -> None:
    """A handler bug (returning None) is a Receiver ter:Action fault, not a crash of the server."""
    assert_fault(soap_relay.post(soap_envelope(soap_op("Nothing"))), "Receiver", ("Action",), 500)


def test_deferred_handler_is_answered_when_it_fires(soap_relay: SoapRelay) -> None:
    """A handler returning a Deferred does not block; the answer goes out when the Deferred fires."""
    replies = soap_relay.pending_post(soap_envelope(soap_op("Later")))
    assert not replies
    assert soap_relay.post(GET_DATE).status == 200
    soap_relay.clock.advance(1.0)
    soap_relay.stub.flush()
    reply = _only(replies)
    assert reply.status == 200
    assert reply.payload().tag == ns.q(ns.TDS, "SetHostnameResponse")


def test_coroutine_handler_is_awaited(soap_relay: SoapRelay) -> None:
    """A coroutine handler is awaited without blocking the reactor."""
    replies = soap_relay.pending_post(soap_envelope(soap_op("Coroutine")))
    soap_relay.clock.advance(1.0)
    soap_relay.stub.flush()
    assert not replies
    soap_relay.clock.advance(1.0)
    soap_relay.stub.flush()
    assert _only(replies).status == 200


def test_async_handler_fault_is_returned(soap_relay: SoapRelay) -> None:
    """A SoapFault raised after an await is still answered as that fault."""
    replies = soap_relay.pending_post(soap_envelope(soap_op("LateFault")))
    soap_relay.clock.advance(1.0)
    soap_relay.stub.flush()
    assert_fault(_only(replies), "Sender", ("InvalidArgVal",), 400)


def test_client_disconnect_cancels_a_pending_handler() -> None:
    """When the client goes away, the handler's Deferred is cancelled and nothing is written."""
    relay = SoapRelay()
    channel, transport = _channel(relay)
    body = soap_envelope(soap_op("Later"))
    channel.dataReceived(
        b"POST /onvif/device_service HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/soap+xml\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert relay.calls and transport.value() == b""
    channel.connectionLost(Exception("client went away"))
    assert relay.cancelled == ["later"]
    relay.clock.advance(5)
    assert transport.value() == b""


def _only(replies: list[Any]) -> SoapReply:
    assert len(replies) == 1, replies
    reply = replies[0]
    if hasattr(reply, "raiseException"):
        reply.raiseException()
    assert isinstance(reply, SoapReply)
    return reply


# --- WS-Addressing ------------------------------------------------------------------------

WSA_ACTION = "http://www.onvif.org/ver10/events/wsdl/EventPortType/CreatePullPointSubscriptionRequest"


def _wsa_headers(message_id: str, must_understand: bool = True) -> list[_Element]:
    """zeep's WsAddressingPlugin headers (Action, MessageID, To), with mustUnderstand like zeep's WSA plugin."""
    mu = {ns.q(ns.SOAP12, "mustUnderstand"): "1"} if must_understand else {}
    action = etree.Element(ns.q(ns.WSA, "Action"), mu, nsmap={"wsa": ns.WSA})
    action.text = WSA_ACTION
    message = etree.Element(ns.q(ns.WSA, "MessageID"), nsmap={"wsa": ns.WSA})
    message.text = message_id
    to = etree.Element(ns.q(ns.WSA, "To"), mu, nsmap={"wsa": ns.WSA})
    to.text = "http://relay.test:8080/onvif/events_service"
    return [action, message, to]


def test_zeep_ws_addressing_headers_are_accepted_and_answered(soap_relay: SoapRelay) -> None:
    """wsa:Action/MessageID/To with mustUnderstand are accepted; the reply carries RelatesTo and the Response action."""
    admin = soap_security("admin", "admin-secret", soap_iso(soap_relay.clock.seconds()))
    headers = [*_wsa_headers("urn:uuid:1c3bd8e4-0ffb-4b2e-9b3c-6ad0d1c0a5a1"), admin]
    reply = soap_relay.post(
        soap_envelope(soap_op("CreatePullPointSubscription", ns.TEV), headers), path="/onvif/events_service"
    )
    assert reply.status == 200
    header = reply.xml().find(ns.q(ns.SOAP12, "Header"))
    assert header is not None
    assert header.findtext(ns.q(ns.WSA, "RelatesTo")) == "urn:uuid:1c3bd8e4-0ffb-4b2e-9b3c-6ad0d1c0a5a1"
    assert header.findtext(ns.q(ns.WSA, "Action")) == WSA_ACTION[: -len("Request")] + "Response"
    validate(header.find(ns.q(ns.WSA, "RelatesTo")))


def test_fault_reply_to_ws_addressing_request_has_fault_action(soap_relay: SoapRelay) -> None:
    """A fault answering a request with a MessageID relates to it with the WS-Addressing fault action."""
    reply = soap_relay.post(soap_envelope(soap_op("Refuse"), _wsa_headers("urn:uuid:42")))
    assert_fault(reply, "Sender", ("InvalidArgVal", "NoProfile"), 400)
    header = reply.xml().find(ns.q(ns.SOAP12, "Header"))
    assert header is not None
    assert header.findtext(ns.q(ns.WSA, "RelatesTo")) == "urn:uuid:42"
    assert header.findtext(ns.q(ns.WSA, "Action")) == "http://www.w3.org/2005/08/addressing/soap/fault"


def test_reply_without_message_id_has_no_header(soap_relay: SoapRelay) -> None:
    """Without wsa:MessageID in the request the reply has no Header at all."""
    assert soap_relay.post(GET_DATE).xml().find(ns.q(ns.SOAP12, "Header")) is None


# --- XAddr host ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host_header", "expected"),
    [
        ("relay.test:8080", "relay.test:8080"),
        ("Camera.LAN", "camera.lan"),
        ("192.168.1.20:8000", "192.168.1.20:8000"),
        ("[::1]:8080", "[::1]:8080"),
        ("[fe80::1]", "[fe80::1]"),
        ("evil host/../x", "127.0.0.1:8080"),
        ("0.0.0.0:8080", "127.0.0.1:8080"),
        ("[::]:8080", "127.0.0.1:8080"),
        ("relay.test:99999", "127.0.0.1:8080"),
        ("<script>", "127.0.0.1:8080"),
    ],
)
def test_host_for_xaddrs_comes_from_a_sane_host_header(soap_relay: SoapRelay, host_header: str, expected: str) -> None:
    """XAddrs use the Host header (port kept, IPv6 bracketed); garbage falls back to the local address."""
    soap_relay.post(GET_DATE, headers={"Host": host_header})
    assert soap_relay.calls[-1].host == expected


@pytest.mark.parametrize(
    ("advertise", "expected"),
    [("nvr-facing.example", "nvr-facing.example:8080"), ("10.0.0.5:9000", "10.0.0.5:9000"), ("fd00::5", "[fd00::5]:8080")],
)
def test_advertise_host_wins_over_the_host_header(advertise: str, expected: str) -> None:
    """advertise_host is used for XAddrs; without a port of its own it takes the request's port."""
    relay = SoapRelay(advertise_host=advertise)
    relay.post(GET_DATE)
    assert relay.calls[-1].host == expected


def test_bad_advertise_host_is_refused_at_start() -> None:
    """A misconfigured advertise_host fails when the resource is built, not per request."""
    with pytest.raises(ValueError, match="advertise_host"):
        SoapRelay(advertise_host="not a host!")


def test_two_services_claiming_one_operation_is_an_error(soap_relay: SoapRelay) -> None:
    """Dispatch is by operation element, so two handlers for one element are refused at start."""
    services = soap_services(soap_relay)
    with pytest.raises(ValueError, match="two services"):
        OnvifResource([*services, services[0]], soap_relay.authenticator, None)


# --- body size cap in the HTTP layer -----------------------------------------------------


class _HalfClosingTransport(StringTransport):
    """A StringTransport that also records a half close (shutdown of the write side)."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


class _RecordedRequest(BoundedRequest):
    """A BoundedRequest that remembers its instances, to inspect what they buffered."""

    made: list[BoundedRequest] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.made.append(self)


def _channel(relay: SoapRelay) -> tuple[Any, _HalfClosingTransport]:
    _RecordedRequest.made = []
    site = Site(relay.root, requestFactory=_RecordedRequest, reactor=relay.clock)
    channel = site.buildProtocol(None)
    transport = _HalfClosingTransport()
    channel.makeConnection(transport)
    return channel, transport


def test_declared_10mb_body_is_refused_before_reading_it() -> None:
    """BoundedRequest answers 413 as soon as a 10 MB Content-Length is seen and never buffers the body."""
    relay = SoapRelay()
    channel, transport = _channel(relay)
    channel.dataReceived(
        b"POST /onvif/device_service HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/soap+xml\r\n"
        b"Expect: 100-continue\r\nContent-Length: 10485760\r\n\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in transport.value()
    assert transport.write_closed and not transport.disconnected
    channel.dataReceived(b"x" * 65536)
    assert _RecordedRequest.made[0].content.getvalue() == b""
    assert not transport.disconnected
    channel.dataReceived(b"x" * MAX_BODY)
    assert transport.disconnected
    assert not relay.calls


def test_refused_connection_is_aborted_after_lingering() -> None:
    """A client that neither sends more nor closes is cut off after the linger time."""
    relay = SoapRelay()
    channel, transport = _channel(relay)
    channel.dataReceived(
        b"POST /onvif/device_service HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/soap+xml\r\n"
        b"Content-Length: 10485760\r\n\r\n"
    )
    relay.clock.advance(BoundedRequest.linger - 0.1)
    assert not transport.disconnected
    relay.clock.advance(0.2)
    assert transport.disconnected


def test_chunked_body_growing_past_the_limit_is_refused() -> None:
    """A chunked body is cut off with 413 the moment it passes 256 KiB."""
    relay = SoapRelay()
    channel, transport = _channel(relay)
    channel.dataReceived(
        b"POST /onvif/device_service HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/soap+xml\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"y" * 65536
    for _ in range(4):
        channel.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert transport.value() == b""
    channel.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert transport.value().startswith(b"HTTP/1.1 413 ")
    assert transport.write_closed
    assert _RecordedRequest.made[0].content.getvalue() == b""
    assert not relay.calls


def test_bounded_request_serves_normal_bodies() -> None:
    """Under the limit BoundedRequest behaves like any twisted.web request."""
    relay = SoapRelay()
    channel, transport = _channel(relay)
    channel.dataReceived(
        b"POST /onvif/device_service HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/soap+xml\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(GET_DATE), GET_DATE)
    )
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"GetSystemDateAndTimeResponse" in body
    assert b"Content-Length: %d" % len(body) in head.split(b"\r\n")
    assert b"chunked" not in head


# --- caching ------------------------------------------------------------------------------


def test_constant_faults_are_serialized_once() -> None:
    """Fault envelopes without reply headers are cached: the same bytes object comes back."""
    fault = sender_fault("NotAuthorized", reason="Sender not authorized")
    assert fault_envelope(SOAP_12, fault) is fault_envelope(SOAP_12, fault)
    assert fault_envelope(SOAP_11, fault) != fault_envelope(SOAP_12, fault)


def test_a_cached_fault_keeps_nothing_of_the_request_that_raised_it() -> None:
    """The cache keeps the fault's fields, not the raised SoapFault: its traceback (the handler's frames, the
    request and its tree) is freed once the answer is sent."""

    class Request:
        pass

    def handler() -> tuple[SoapFault, weakref.ref[Request]]:
        request = Request()
        try:
            raise sender_fault("InvalidArgVal", reason="'Toaster' is not a capability category")
        except SoapFault as fault:
            return fault, weakref.ref(request)

    fault, request = handler()
    assert fault.__traceback__ is not None
    fault_envelope(SOAP_12, fault)
    fault_envelope(SOAP_11, fault)
    del fault
    gc.collect()
    assert request() is None


def test_a_long_reason_is_cut_and_not_cached() -> None:
    """A reason quoting a huge request is cut to MAX_REASON characters, and such answers are not kept."""
    quoted = "x" * (MAX_BODY // 2)
    before = _fault_bytes.cache_info().currsize
    for version in (SOAP_12, SOAP_11):
        answer = etree.fromstring(fault_envelope(version, sender_fault("InvalidArgVal", reason=f"{quoted!r} is bad")))
        reason = "".join(answer.itertext())
        assert len(reason) <= MAX_REASON + 40 and reason.rstrip().endswith("…")
    assert _fault_bytes.cache_info().currsize == before
    short = fault_envelope(SOAP_12, sender_fault("InvalidArgVal", reason="'x' is bad"))
    assert short is fault_envelope(SOAP_12, sender_fault("InvalidArgVal", reason="'x' is bad"))


# --- real sockets -------------------------------------------------------------------------


@pytest.fixture
def soap_listening() -> Any:
    """The test relay on a real loopback port with the production Site settings."""
    relay = SoapRelay()
    site = Site(relay.root, requestFactory=BoundedRequest)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    yield relay, port.getHost().port
    port.stopListening()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_loopback_soap12_with_a_real_http_client(soap_listening: Any) -> None:
    """treq over a real socket gets a SOAP 1.2 answer, and a fault for a bad request on the same server."""
    relay, port = soap_listening
    url = f"http://127.0.0.1:{port}/onvif/device_service"
    response = await treq.post(url, GET_DATE, headers={"Content-Type": ["application/soap+xml; charset=utf-8"]})
    body = await response.content()
    assert response.code == 200
    assert b"GetSystemDateAndTimeResponse" in body
    response = await treq.post(url, b"<nope", headers={"Content-Type": ["application/soap+xml"]})
    assert response.code == 400
    assert b"ter:WellFormed" in await response.content()


def _send_huge(port: int) -> tuple[bytes, int]:
    """Try to upload 10 MB; return the response bytes and how many body bytes the server accepted."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /onvif/device_service HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/soap+xml\r\nContent-Length: 10485760\r\n\r\n"
        )
        chunk = b"z" * 65536
        try:
            while sent < 10 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        data = b""
        try:
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                data += piece
        except OSError:
            pass
    return data, sent


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_loopback_10mb_upload_is_cut_off_with_413(soap_listening: Any) -> None:
    """A real 10 MB upload gets 413 and a closed connection before the body is through."""
    relay, port = soap_listening
    data, sent = await deferToThread(_send_huge, port)
    assert data.startswith(b"HTTP/1.1 413 "), data[:100]
    assert sent < 10 * 1024 * 1024
    response = await treq.post(
        f"http://127.0.0.1:{port}/onvif/device_service", GET_DATE, headers={"Content-Type": ["application/soap+xml"]}
    )
    assert response.code == 200
    await response.content()
    assert len(relay.calls) == 1


@pytest.mark.parametrize("version", [SOAP_12, SOAP_11])
def test_a_fault_with_detail_carries_a_copy_of_it_in_each_soap_version(version: Any) -> None:
    """A fault's detail element goes in SOAP 1.2's env:Detail or SOAP 1.1's detail, after the reason; the fault
    keeps its own element, so it can be answered again."""
    detail = etree.Element(ns.q(ns.TEV, "PullMessagesFaultResponse"))
    etree.SubElement(detail, ns.q(ns.TEV, "MaxTimeout")).text = "PT600S"
    etree.SubElement(detail, ns.q(ns.TEV, "MaxMessageLimit")).text = "256"
    fault = SoapFault("Receiver", ("InvalidArgVal",), "too long", detail=detail)
    for _ in range(2):
        envelope = etree.fromstring(fault_envelope(version, fault))
        body = envelope[-1]
        (element,) = body
        holder = element[-1]
        assert holder.tag == (ns.q(ns.SOAP12, "Detail") if version is SOAP_12 else "detail")
        assert [child.tag for child in holder] == [detail.tag]
        assert holder[0].findtext(ns.q(ns.TEV, "MaxTimeout")) == "PT600S"
        validate(envelope if version is SOAP_12 else holder[0])  # the SOAP 1.1 envelope schema is not in the set
    assert detail.getparent() is None
