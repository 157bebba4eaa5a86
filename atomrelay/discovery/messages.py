"""WS-Discovery 2005/04 messages as ONVIF uses them: reading Probe/Resolve, writing the rest.

Requests are parsed only with ``xmlsafe.parse_untrusted``. Replies are built with lxml
and answer in the SOAP version of the request (SOAP 1.2 for announcements). Every
outgoing message carries ``wsa:Action``, ``wsa:MessageID``, ``wsa:To`` and
``d:AppSequence``; replies add ``wsa:RelatesTo``, and every match carries the
EndpointReference address, Types, Scopes, XAddrs and ``d:MetadataVersion`` (the python
WSDiscovery parser used by Home Assistant indexes all of them).

Matching follows WS-Discovery section 5.1 with ONVIF's ``rfc3986`` rule as default:
types are compared as QNames (namespace + local name, whatever the prefix), scopes by
case-insensitive scheme and authority and a case-sensitive, segment-wise path prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence
from urllib.parse import unquote, urlsplit

from lxml import etree
from lxml.etree import _Element

from atomrelay.xml import ns
from atomrelay.xml.parsing import XMLRejected, parse_untrusted
from atomrelay.xml.soap import Maker

WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
"""WS-Addressing 2004/08, the version WS-Discovery 2005/04 (and so ONVIF) uses."""
WSA_2005 = ns.WSA
"""WS-Addressing 1.0; its MessageID is accepted in requests too."""
DN = "http://www.onvif.org/ver10/network/wsdl"

MULTICAST_TO = "urn:schemas-xmlsoap-org:ws:2005:04:discovery"
ANONYMOUS = WSA + "/role/anonymous"
ACTION_HELLO = WSD + "/Hello"
ACTION_BYE = WSD + "/Bye"
ACTION_PROBE_MATCHES = WSD + "/ProbeMatches"
ACTION_RESOLVE_MATCHES = WSD + "/ResolveMatches"

RFC3986 = WSD + "/rfc3986"
RFC2396 = WSD + "/rfc2396"
STRCMP0 = WSD + "/strcmp0"
_URI_RULES = frozenset({RFC3986, RFC2396})

DEVICE_TYPES: tuple[tuple[str, str], ...] = ((DN, "NetworkVideoTransmitter"), (ns.TDS, "Device"))
"""What every ONVIF device announces: ``dn:NetworkVideoTransmitter tds:Device``."""
_TYPES_TEXT = "dn:NetworkVideoTransmitter tds:Device"
_CONVENTIONAL_PREFIXES = {"dn": DN, "tds": ns.TDS}
"""Used only for a prefix the probe forgot to declare (interop over pedantry)."""

MAX_ITEMS = 64
"""Most Types or Scopes entries accepted in one request (real clients send one or two)."""
MAX_URI = 1024
"""Longest MessageID, scope or EndpointReference accepted (MessageIDs are echoed back)."""

_NSMAP: dict[str | None, str] = {"a": WSA, "d": WSD, "dn": DN, "tds": ns.TDS}
_A = Maker(WSA)
_D = Maker(WSD)
_ENVELOPES = {soap: Maker(soap, {"s": soap, **_NSMAP}) for soap in (ns.SOAP12, ns.SOAP11)}


class MalformedMessage(Exception):
    """A datagram that is no usable WS-Discovery request; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Probe:
    """A Probe: the QName types and scopes a client looks for."""

    message_id: str
    soap: str
    """Envelope namespace of the request; the reply uses the same."""
    types: tuple[tuple[str, str], ...] = ()
    """(namespace, local name) pairs; an unresolvable prefix gives namespace ``""``."""
    scopes: tuple[str, ...] = ()
    match_by: str = RFC3986


@dataclass(frozen=True)
class Resolve:
    """A Resolve: the endpoint reference address a client wants XAddrs for."""

    message_id: str
    soap: str
    address: str


@dataclass(frozen=True)
class Match:
    """What one ProbeMatch / ResolveMatch / Hello says about a device."""

    endpoint_reference: str
    scopes: Sequence[str]
    xaddrs: Sequence[str]
    metadata_version: int


@dataclass(frozen=True)
class Sequencing:
    """The ``d:AppSequence`` of one outgoing message plus its own MessageID."""

    message_id: str
    instance_id: int
    message_number: int


def parse_request(data: bytes) -> Probe | Resolve | None:
    """The Probe or Resolve in ``data``; None for other well-formed SOAP (Hello, Bye, other devices' matches).

    Raises MalformedMessage for anything that is not a well-formed, bounded SOAP
    envelope with a MessageID.
    """
    try:
        root = parse_untrusted(data)
    except XMLRejected as exc:
        raise MalformedMessage(exc.reason) from None
    soap = etree.QName(root).namespace if isinstance(root.tag, str) else None
    if soap not in (ns.SOAP12, ns.SOAP11) or etree.QName(root).localname != "Envelope":
        raise MalformedMessage("not a SOAP envelope")
    header = root.find(ns.q(soap, "Header"))
    body = root.find(ns.q(soap, "Body"))
    if body is None or len(body) == 0:
        raise MalformedMessage("no SOAP body")
    operation = body[0]
    if operation.tag not in (ns.q(WSD, "Probe"), ns.q(WSD, "Resolve")):
        return None
    message_id = _message_id(header)
    if operation.tag == ns.q(WSD, "Resolve"):
        address = _text(operation.find(f"{ns.q(WSA, 'EndpointReference')}/{ns.q(WSA, 'Address')}"))
        if not address:
            raise MalformedMessage("Resolve without an EndpointReference address")
        return Resolve(message_id, soap, address)
    types_element = operation.find(ns.q(WSD, "Types"))
    types: tuple[tuple[str, str], ...] = ()
    if types_element is not None:
        types = tuple(_qname(token, types_element) for token in _tokens(types_element))
    scopes_element = operation.find(ns.q(WSD, "Scopes"))
    scopes: tuple[str, ...] = ()
    match_by = RFC3986
    if scopes_element is not None:
        scopes = _tokens(scopes_element)
        match_by = (scopes_element.get("MatchBy") or "").strip() or RFC3986
    return Probe(message_id, soap, types, scopes, match_by)


def types_match(wanted: Iterable[tuple[str, str]], offered: Sequence[tuple[str, str]] = DEVICE_TYPES) -> bool:
    """Whether every probed type is one the device offers (no types match every device)."""
    return all(item in offered for item in wanted)


def scopes_match(wanted: Iterable[str], match_by: str, offered: Sequence[str]) -> bool:
    """Whether every probed scope matches one of the device's scopes under ``match_by``.

    Supported rules: rfc3986 (ONVIF's, also the default), rfc2396 (the same
    comparison) and strcmp0; any other rule matches nothing.
    """
    wanted = list(wanted)
    if not wanted:
        return True
    if match_by == STRCMP0:
        return all(scope in offered for scope in wanted)
    if match_by not in _URI_RULES:
        return False
    split_offered = [parts for parts in map(_split_uri, offered) if parts is not None]
    for scope in wanted:
        probe = _split_uri(scope)
        if probe is None or not any(_uri_prefix(probe, candidate) for candidate in split_offered):
            return False
    return True


def probe_matches(request: Probe, match: Match, sequencing: Sequencing) -> bytes:
    """A ProbeMatches message holding exactly one ProbeMatch (agsh and UniFi break on more)."""
    body = _D("ProbeMatches", _D("ProbeMatch", *_match_children(match)))
    return _envelope(request.soap, ACTION_PROBE_MATCHES, ANONYMOUS, sequencing, request.message_id, body)


def resolve_matches(request: Resolve, match: Match, sequencing: Sequencing) -> bytes:
    """A ResolveMatches message for the resolved device."""
    body = _D("ResolveMatches", _D("ResolveMatch", *_match_children(match)))
    return _envelope(request.soap, ACTION_RESOLVE_MATCHES, ANONYMOUS, sequencing, request.message_id, body)


def hello(match: Match, sequencing: Sequencing) -> bytes:
    """A multicast Hello announcing a device (or its new metadata)."""
    body = _D("Hello", *_match_children(match))
    return _envelope(ns.SOAP12, ACTION_HELLO, MULTICAST_TO, sequencing, None, body)


def bye(endpoint_reference: str, sequencing: Sequencing) -> bytes:
    """A multicast Bye: the device leaves the network."""
    body = _D("Bye", _endpoint_reference(endpoint_reference))
    return _envelope(ns.SOAP12, ACTION_BYE, MULTICAST_TO, sequencing, None, body)


# --- reading -----------------------------------------------------------------------------------


def _text(element: _Element | None) -> str:
    text = (element.text or "").strip() if element is not None else ""
    if len(text) > MAX_URI:
        raise MalformedMessage("a value is too long")
    return text


def _message_id(header: _Element | None) -> str:
    if header is not None:
        for namespace in (WSA, WSA_2005):
            value = _text(header.find(ns.q(namespace, "MessageID")))
            if value:
                return value
    raise MalformedMessage("no wsa:MessageID")


def _tokens(element: _Element) -> tuple[str, ...]:
    items = (element.text or "").split()
    if len(items) > MAX_ITEMS:
        raise MalformedMessage(f"more than {MAX_ITEMS} entries in {etree.QName(element).localname}")
    if any(len(item) > MAX_URI for item in items):
        raise MalformedMessage("a value is too long")
    return tuple(items)


def _qname(token: str, context: _Element) -> tuple[str, str]:
    prefix, _, local = token.rpartition(":")
    namespaces = context.nsmap
    if not prefix:
        return namespaces.get(None, ""), local
    namespace = namespaces.get(prefix) or _CONVENTIONAL_PREFIXES.get(prefix, "")
    return namespace, local


def _split_uri(uri: str) -> tuple[str, str, tuple[str, ...]] | None:
    """Scheme, authority (both lower-cased) and unescaped path segments; None if it has dot segments."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    segments = parts.path.split("/")
    if segments and segments[0] == "":
        segments = segments[1:]
    if segments and segments[-1] == "":
        segments = segments[:-1]
    decoded = tuple(unquote(segment) for segment in segments)
    if any(segment in (".", "..") for segment in decoded):
        return None
    return parts.scheme.lower(), parts.netloc.lower(), decoded


def _uri_prefix(probe: tuple[str, str, tuple[str, ...]], scope: tuple[str, str, tuple[str, ...]]) -> bool:
    scheme, authority, segments = probe
    return (
        scheme == scope[0]
        and authority == scope[1]
        and len(segments) <= len(scope[2])
        and scope[2][: len(segments)] == segments
    )


# --- writing -----------------------------------------------------------------------------------


def _endpoint_reference(address: str) -> _Element:
    return _A("EndpointReference", _A("Address", address))


def _match_children(match: Match) -> list[_Element]:
    return [
        _endpoint_reference(match.endpoint_reference),
        _D("Types", _TYPES_TEXT),
        _D("Scopes", " ".join(match.scopes)),
        _D("XAddrs", " ".join(match.xaddrs)),
        _D("MetadataVersion", str(match.metadata_version)),
    ]


def _envelope(
    soap: str, action: str, to: str, sequencing: Sequencing, relates_to: str | None, body: _Element
) -> bytes:
    envelope = _ENVELOPES[soap]
    headers = [_A("Action", action), _A("MessageID", sequencing.message_id)]
    if relates_to is not None:
        headers.append(_A("RelatesTo", relates_to))
    headers.append(_A("To", to))
    headers.append(
        _D("AppSequence", {"InstanceId": str(sequencing.instance_id), "MessageNumber": str(sequencing.message_number)})
    )
    document = envelope("Envelope", envelope("Header", *headers), envelope("Body", body))
    return etree.tostring(document, xml_declaration=True, encoding="UTF-8")
