"""WS-Discovery message parsing, matching rules and message building (no network)."""

from __future__ import annotations

import pytest
from lxml import etree

from atomrelay.discovery import messages
from atomrelay.discovery.messages import (
    DN,
    RFC2396,
    STRCMP0,
    WSA,
    WSD,
    MalformedMessage,
    Match,
    Probe,
    Resolve,
    Sequencing,
    parse_request,
    scopes_match,
    types_match,
)
from atomrelay.xml import ns
from tests.discovery.support import NVT, STREAMING, TDS_DEVICE, parse, probe_bytes, raw_probe, resolve_bytes

# The Core spec's example device (section "Scopes").
CORE_EXAMPLE = [
    "onvif://www.onvif.org/Profile/Streaming",
    "onvif://www.onvif.org/hardware/D1-566",
    "onvif://www.onvif.org/location/country/china",
    "onvif://www.onvif.org/location/city/bejing",
    "onvif://www.onvif.org/location/building/headquarter",
    "onvif://www.onvif.org/location/floor/R5",
    "onvif://www.onvif.org/name/ARV-453",
]
MATCH = Match("urn:uuid:5f1c0c7e-9b39-4a7e-8f1b-2a0e5b1f8d11", ["onvif://www.onvif.org/name/porch", STREAMING],
              ["http://10.1.0.5:8080/onvif/device_service"], 7)
SEQ = Sequencing("urn:uuid:aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", 1700000000, 42)


def test_parses_a_wsdiscovery_probe() -> None:
    """A Probe from the python WSDiscovery package yields its MessageID, QName types and scopes."""
    data, message_id = probe_bytes([NVT], [STREAMING])
    probe = parse_request(data)
    assert isinstance(probe, Probe)
    assert probe.message_id == message_id
    assert probe.types == ((DN, "NetworkVideoTransmitter"),)
    assert probe.scopes == (STREAMING,)
    assert probe.match_by == messages.RFC3986
    assert probe.soap == ns.SOAP12


def test_parses_a_wsdiscovery_resolve() -> None:
    """A Resolve yields the endpoint reference address it asks about."""
    data, message_id = resolve_bytes("urn:uuid:5f1c0c7e-9b39-4a7e-8f1b-2a0e5b1f8d11")
    resolve = parse_request(data)
    assert resolve == Resolve(message_id, ns.SOAP12, "urn:uuid:5f1c0c7e-9b39-4a7e-8f1b-2a0e5b1f8d11")


def test_types_are_matched_by_namespace_not_prefix() -> None:
    """``dp0:NetworkVideoTransmitter`` bound to the ONVIF network namespace is an NVT probe."""
    probe = parse_request(raw_probe("dp0:NetworkVideoTransmitter", extra_ns=f'xmlns:dp0="{DN}"'))
    assert isinstance(probe, Probe) and probe.types == ((DN, "NetworkVideoTransmitter"),)
    assert types_match(probe.types)


def test_a_prefix_bound_to_another_namespace_does_not_match() -> None:
    """``dn:NetworkVideoTransmitter`` with ``dn`` bound to some other namespace is not ONVIF's type."""
    probe = parse_request(raw_probe("dn:NetworkVideoTransmitter", extra_ns='xmlns:dn="urn:example:other"'))
    assert isinstance(probe, Probe) and not types_match(probe.types)


def test_undeclared_conventional_prefixes_are_tolerated() -> None:
    """A client that forgets to declare ``dn``/``tds`` still finds ONVIF devices."""
    probe = parse_request(raw_probe("dn:NetworkVideoTransmitter tds:Device"))
    assert isinstance(probe, Probe) and probe.types == ((DN, "NetworkVideoTransmitter"), (ns.TDS, "Device"))
    assert types_match(probe.types)


def test_type_matching() -> None:
    """NVT, tds:Device, both, or none match; a printer type or an unknown namespace does not."""
    assert types_match([])
    assert types_match([(DN, "NetworkVideoTransmitter")])
    assert types_match([(ns.TDS, "Device")])
    assert types_match([(ns.TDS, "Device"), (DN, "NetworkVideoTransmitter")])
    assert not types_match([("http://schemas.xmlsoap.org/ws/2006/02/devprof", "Device")])
    assert not types_match([("", "NetworkVideoTransmitter")])


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        ("onvif://www.onvif.org", True),
        ("onvif://www.onvif.org/", True),
        ("onvif://www.onvif.org/location/country/china", True),
        ("onvif://www.onvif.org/location/country/china/", True),
        ("onvif://www.onvif.org/location", True),
        ("onvif://www.onvif.org/hardware/D1", False),
        ("ONVIF://WWW.ONVIF.ORG/Profile/Streaming", True),
        ("onvif://www.onvif.org/profile/streaming", False),
        ("onvif://www.onvif.org/name/ARV%2D453", True),
        ("onvif://www.onvif.org/location/country/china/../china", False),
        ("onvif://www.onvif.org/location/country/china/beijing", False),
        ("onvif://other.example/Profile/Streaming", False),
        ("http://www.onvif.org/Profile/Streaming", False),
    ],
)
def test_rfc3986_scope_matching(probe: str, expected: bool) -> None:
    """The Core spec's example and WS-Discovery's segment-wise rule: case rules, prefixes, escapes, dot segments."""
    assert scopes_match([probe], messages.RFC3986, CORE_EXAMPLE) is expected
    assert scopes_match([probe], RFC2396, CORE_EXAMPLE) is expected


def test_every_probed_scope_must_match() -> None:
    """Two scopes match only if both match; no scopes match everything."""
    assert scopes_match([], messages.RFC3986, CORE_EXAMPLE)
    assert scopes_match([STREAMING, "onvif://www.onvif.org/name/ARV-453"], messages.RFC3986, CORE_EXAMPLE)
    assert not scopes_match([STREAMING, "onvif://www.onvif.org/name/other"], messages.RFC3986, CORE_EXAMPLE)


def test_strcmp0_and_unknown_rules() -> None:
    """strcmp0 compares whole strings; an unsupported rule (ldap) matches nothing."""
    assert scopes_match([STREAMING], STRCMP0, CORE_EXAMPLE)
    assert not scopes_match(["onvif://www.onvif.org/Profile"], STRCMP0, CORE_EXAMPLE)
    assert not scopes_match([STREAMING], WSD + "/ldap", CORE_EXAMPLE)


def test_match_by_is_read_from_the_probe() -> None:
    """The Scopes MatchBy attribute selects the rule."""
    probe = parse_request(raw_probe(scopes="onvif://www.onvif.org/Profile", match_by=STRCMP0))
    assert isinstance(probe, Probe) and probe.match_by == STRCMP0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\xff\xfe<not xml", "not well-formed"),
        (raw_probe(scopes=STREAMING)[:-40], "truncated"),
        (b"<a/>", "not a SOAP envelope"),
        (raw_probe(message_id=""), "no wsa:MessageID"),
        (raw_probe(message_id="x" * 2000), "too long"),
        (raw_probe(scopes=" ".join(f"onvif://www.onvif.org/s{i}" for i in range(65))), "more than 64"),
    ],
)
def test_malformed_requests_are_refused(data: bytes, reason: str) -> None:
    """Garbage, truncated XML, foreign XML, a missing or oversized MessageID and too many scopes are refused."""
    with pytest.raises(MalformedMessage):
        parse_request(data)


def test_xxe_and_entity_expansion_are_refused() -> None:
    """A DOCTYPE with an external entity or a billion-laughs payload never reaches the parser's entity code."""
    xxe = (b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           + raw_probe(scopes="&x;").split(b"?>", 1)[1])
    laughs = (b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">]>'
              + raw_probe(scopes="&b;").split(b"?>", 1)[1])
    for data in (xxe, laughs):
        with pytest.raises(MalformedMessage) as info:
            parse_request(data)
        assert "DOCTYPE" in info.value.reason


def test_other_messages_are_not_requests() -> None:
    """Hello, Bye and other devices' ProbeMatches are well-formed but ignored (None)."""
    assert parse_request(messages.hello(MATCH, SEQ)) is None
    assert parse_request(messages.bye(MATCH.endpoint_reference, SEQ)) is None
    data, _ = probe_bytes()
    assert parse_request(messages.probe_matches(parse_request(data), MATCH, SEQ)) is None  # type: ignore[arg-type]


def test_probe_matches_parse_in_wsdiscovery() -> None:
    """A ProbeMatches carries RelatesTo, MessageID, Action, AppSequence, and one match the library reads in full."""
    data, message_id = probe_bytes([NVT])
    probe = parse_request(data)
    assert isinstance(probe, Probe)
    reply = messages.probe_matches(probe, MATCH, SEQ)
    env = parse(reply)
    assert env.getAction() == WSD + "/ProbeMatches"
    assert env.getRelatesTo() == message_id
    assert env.getMessageId() == SEQ.message_id
    assert (env.getInstanceId(), env.getMessageNumber()) == ("1700000000", "42")
    [match] = env.getProbeResolveMatches()
    assert match.getEPR() == MATCH.endpoint_reference
    assert [t.getFullname() for t in match.getTypes()] == [NVT.getFullname(), TDS_DEVICE.getFullname()]
    assert [s.getValue() for s in match.getScopes()] == list(MATCH.scopes)
    assert match.getXAddrs() == list(MATCH.xaddrs)
    assert match.getMetadataVersion() == "7"
    root = etree.fromstring(reply)
    assert root.findtext(f"{{{ns.SOAP12}}}Header/{{{WSA}}}To") == WSA + "/role/anonymous"
    assert len(root.findall(f".//{{{WSD}}}ProbeMatch")) == 1


def test_resolve_matches_hello_and_bye_parse_in_wsdiscovery() -> None:
    """ResolveMatches, Hello and Bye are read by the library with EPR, XAddrs and MetadataVersion."""
    data, message_id = resolve_bytes(MATCH.endpoint_reference)
    resolve = parse_request(data)
    assert isinstance(resolve, Resolve)
    env = parse(messages.resolve_matches(resolve, MATCH, SEQ))
    assert env.getRelatesTo() == message_id
    [match] = env.getProbeResolveMatches()
    assert (match.getEPR(), match.getXAddrs(), match.getMetadataVersion()) == (
        MATCH.endpoint_reference, list(MATCH.xaddrs), "7")
    hello = parse(messages.hello(MATCH, SEQ))
    assert hello.getAction() == WSD + "/Hello"
    assert hello.getTo() == "urn:schemas-xmlsoap-org:ws:2005:04:discovery"
    assert (hello.getEPR(), hello.getXAddrs(), hello.getMetadataVersion()) == (
        MATCH.endpoint_reference, list(MATCH.xaddrs), "7")
    assert [s.getValue() for s in hello.getScopes()] == list(MATCH.scopes)
    bye = parse(messages.bye(MATCH.endpoint_reference, SEQ))
    assert (bye.getAction(), bye.getEPR()) == (WSD + "/Bye", MATCH.endpoint_reference)


def test_soap11_probe_is_answered_in_soap11() -> None:
    """A SOAP 1.1 Probe gets a SOAP 1.1 ProbeMatches."""
    probe = parse_request(raw_probe("", soap=ns.SOAP11))
    assert isinstance(probe, Probe) and probe.soap == ns.SOAP11
    root = etree.fromstring(messages.probe_matches(probe, MATCH, SEQ))
    assert root.tag == f"{{{ns.SOAP11}}}Envelope"
