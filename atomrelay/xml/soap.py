"""SOAP 1.2 and 1.1 envelopes: reading requests, writing responses and faults.

Requests are answered in the SOAP version of their envelope. Every response declares
the envelope prefix and every ONVIF prefix (``tds trt tr2 tptz timg tev tt ter wsa
wsnt wstop tns1`` plus ``xs``/``xsi``) on the Envelope, so handlers may put QNames such
as ``tns1:VideoSource/MotionAlarm`` or ``xs:boolean`` in text and attribute values.

Faults follow ONVIF Core 5.11: SOAP 1.2 ``Code/Value`` + a ``Subcode`` chain of ``ter:``
QNames + ``Reason/Text xml:lang="en"``. SOAP 1.1 has no subcodes: ``faultcode`` is
``Client``/``Server`` and ``faultstring`` the reason. HTTP status: ``fault.http_status``
when set, else 400 for a SOAP 1.2 Sender fault and 500 for every other fault (SOAP 1.2
HTTP binding; SOAP 1.1 and WS-I BP R1126 answer every fault with 500).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any, Callable

from lxml import etree
from lxml.builder import ElementMaker  # type: ignore[import-not-found, unused-ignore]
from lxml.etree import _Element

from atomrelay.xml import ns
from atomrelay.xml.parsing import first_children

ENVELOPE_PREFIX = "SOAP-ENV"
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
WSA_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"

_SOAP11_CODES = {
    "Sender": "Client",
    "Receiver": "Server",
    "VersionMismatch": "VersionMismatch",
    "MustUnderstand": "MustUnderstand",
    "DataEncodingUnknown": "Client",
}


@dataclass(frozen=True)
class SoapFault(Exception):
    """An ONVIF fault: SOAP code (Sender/Receiver), ter: subcodes, a reason text.

    ``subcodes`` are local names in the ``ter`` namespace, outermost first, e.g.
    ``("InvalidArgVal", "NoProfile")``. ``http_status`` overrides the default
    (400 for Sender, 500 for Receiver). ``detail``, when given, is a copy of the element the
    fault's Detail carries (WS-BaseNotification fault elements, PullMessagesFaultResponse).
    """

    code: str
    subcodes: tuple[str, ...]
    reason: str
    http_status: int | None = None
    detail: _Element | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.code}/{'/'.join(self.subcodes)}: {self.reason}"


def sender_fault(*subcodes: str, reason: str) -> SoapFault:
    """A Sender fault (the client's mistake), e.g. sender_fault("InvalidArgVal", "NoProfile", reason=...)."""
    return SoapFault("Sender", tuple(subcodes), reason)


def receiver_fault(*subcodes: str, reason: str) -> SoapFault:
    """A Receiver fault (the device cannot do it), e.g. receiver_fault("Action", "MaxNVTProfiles", reason=...)."""
    return SoapFault("Receiver", tuple(subcodes), reason)


@dataclass(frozen=True)
class SoapVersion:
    """One SOAP version: its envelope namespace and the Content-Type of its messages."""

    label: str
    namespace: str
    content_type: bytes

    @property
    def nsmap(self) -> dict[str | None, str]:
        """The prefixes every response of this version declares on its Envelope."""
        return _response_nsmap(self.namespace)

    @property
    def maker(self) -> Maker:
        """An element maker for this version's envelope elements."""
        return _maker(self.namespace)


class Maker:
    """A typed front for an lxml ``ElementMaker`` (lxml-stubs lacks lxml.builder): ``maker("Tag", *children)``,
    or with attribute access as lxml's ElementMaker has it: ``TT.Name("x")`` builds ``tt:Name``."""

    def __init__(self, namespace: str | None, nsmap: dict[str | None, str] | None = None) -> None:
        self._maker = ElementMaker(namespace=namespace, nsmap=nsmap)

    def __call__(self, tag: str, *children: Any) -> _Element:
        element: _Element = self._maker(tag, *children)
        return element

    def __getattr__(self, tag: str) -> Callable[..., _Element]:
        if tag.startswith("_"):
            raise AttributeError(tag)
        return functools.partial(self, tag)


SOAP_12 = SoapVersion("1.2", ns.SOAP12, b"application/soap+xml; charset=utf-8")
SOAP_11 = SoapVersion("1.1", ns.SOAP11, b"text/xml; charset=utf-8")
_BY_ENVELOPE_TAG = {ns.q(v.namespace, "Envelope"): v for v in (SOAP_12, SOAP_11)}


@functools.lru_cache(maxsize=None)
def _response_nsmap(envelope_namespace: str) -> dict[str | None, str]:
    return {ENVELOPE_PREFIX: envelope_namespace, **ns.NSMAP, "xs": ns.XSD, "xsi": ns.XSI}


@functools.lru_cache(maxsize=None)
def _maker(envelope_namespace: str) -> Maker:
    return Maker(envelope_namespace, _response_nsmap(envelope_namespace))


_WSA = Maker(ns.WSA, {"wsa": ns.WSA})
_PLAIN = Maker(None)


@dataclass(slots=True)
class Envelope:
    """A parsed request envelope: its SOAP version, header blocks and operation element (read it, never change it).

    Not frozen, like ``onvif.base.RequestContext``: one is built per request, and a frozen
    dataclass sets each field through ``object.__setattr__``.
    """

    version: SoapVersion
    header: _Element | None
    operation: _Element
    """The first element child of the Body, e.g. ``{tds-namespace}GetDeviceInformation``."""

    header_blocks: dict[str, _Element] = field(default_factory=dict, compare=False, repr=False)
    """The header's blocks by Clark name, the first of each (``header_block`` reads it)."""

    def header_block(self, namespace: str, local: str) -> _Element | None:
        """The first header block with this namespace and local name (prefixes are irrelevant)."""
        return self.header_blocks.get(ns.q(namespace, local))

    def _wsa_text(self, tag: str) -> str | None:
        block = self.header_blocks.get(tag)
        if block is None or not block.text:
            return None
        return block.text.strip() or None

    @property
    def message_id(self) -> str | None:
        """The WS-Addressing MessageID of the request, if it had one."""
        return self._wsa_text(_WSA_MESSAGE_ID)

    @property
    def action(self) -> str | None:
        """The WS-Addressing Action of the request, if it had one."""
        return self._wsa_text(_WSA_ACTION)


_WSA_MESSAGE_ID = ns.q(ns.WSA, "MessageID")
_WSA_ACTION = ns.q(ns.WSA, "Action")
_HEADER_AND_BODY = {version: (ns.q(version.namespace, "Header"), ns.q(version.namespace, "Body"))
                    for version in (SOAP_12, SOAP_11)}


def version_of(root: _Element) -> SoapVersion | None:
    """The SOAP version whose Envelope ``root`` is, or None."""
    tag = root.tag
    return _BY_ENVELOPE_TAG.get(tag) if isinstance(tag, str) else None


def read_envelope(root: _Element) -> Envelope:
    """Split a parsed request into header and operation; raise SoapFault if it is no envelope.

    A root that is not a SOAP 1.2 or 1.1 Envelope is ``env:VersionMismatch`` (Core table
    "Generic faults"); an Envelope without a Body, or a Body without an element, is
    ``env:Sender/ter:Tag`` ("XML element tag was missing").
    """
    version = version_of(root)
    if version is None:
        raise SoapFault(
            "VersionMismatch", (), "SOAP version mismatch: the document is not a SOAP 1.2 or 1.1 Envelope"
        )
    header_tag, body_tag = _HEADER_AND_BODY[version]
    header: _Element | None = None
    body: _Element | None = None
    for child in root:
        tag = child.tag
        if tag == body_tag:
            body = child
            break
        if tag == header_tag and header is None:
            header = child
    if body is None:
        raise sender_fault("Tag", reason="No Tag: the Envelope has no Body")
    operation = next(iter(body), None)
    if operation is None:
        raise sender_fault("Tag", reason="No Tag: the Body has no operation element")
    return Envelope(version, header, operation, first_children(header) if header is not None else {})


def response_action(request_action: str | None, payload: _Element) -> str:
    """The WS-Addressing Action of a reply: the request's ``...Request`` action turned into ``...Response``."""
    if request_action:
        if request_action.endswith("Request"):
            return request_action[: -len("Request")] + "Response"
        return request_action + "Response"
    name = etree.QName(payload)
    return f"{name.namespace}/{name.localname}"


def _reply_headers(request: Envelope | None, action: str) -> list[_Element]:
    if request is None or request.message_id is None:
        return []
    return [_WSA("RelatesTo", request.message_id), _WSA("Action", action)]


def _serialize(version: SoapVersion, headers: list[_Element], payload: _Element) -> bytes:
    maker = version.maker
    parts = [maker("Header", *headers)] if headers else []
    envelope = maker("Envelope", *parts, maker("Body", payload))
    return XML_DECLARATION + etree.tostring(envelope, encoding="UTF-8", xml_declaration=False)


def response_envelope(version: SoapVersion, payload: _Element, request: Envelope | None = None) -> bytes:
    """Serialize ``payload`` (the ``...Response`` element) in an envelope of ``version``.

    ``payload`` is moved into the envelope unless it belongs to another tree, which is
    copied. With ``request`` given, a request that carried a ``wsa:MessageID`` gets
    ``wsa:RelatesTo`` and ``wsa:Action`` reply headers.
    """
    if payload.getparent() is not None:
        payload = copy.deepcopy(payload)
    action = response_action(request.action if request else None, payload)
    return _serialize(version, _reply_headers(request, action), payload)


MAX_REASON = 1000
"""Characters of a fault's reason sent; a longer one (it may quote the request) is cut, with "…"."""
_CACHED_REASON = 200
"""Fault answers with reasons up to this long are serialized once and kept."""


def fault_element(version: SoapVersion, fault: SoapFault) -> _Element:
    """The ``Fault`` element for ``fault`` in ``version``."""
    reason = fault.reason
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 1] + "…"
    maker = version.maker
    detail = [copy.deepcopy(fault.detail)] if fault.detail is not None else []
    if version is SOAP_11:
        return maker(
            "Fault",
            _PLAIN("faultcode", f"{ENVELOPE_PREFIX}:{_SOAP11_CODES.get(fault.code, 'Server')}"),
            _PLAIN("faultstring", reason, {_XML_LANG: "en"}),
            *([_PLAIN("detail", *detail)] if detail else []),
        )
    code = maker("Code", maker("Value", f"{ENVELOPE_PREFIX}:{fault.code}"))
    parent = code
    for subcode in fault.subcodes:
        child = maker("Subcode", maker("Value", f"ter:{subcode}"))
        parent.append(child)
        parent = child
    return maker("Fault", code, maker("Reason", maker("Text", reason, {_XML_LANG: "en"})),
                 *([maker("Detail", *detail)] if detail else []))


@functools.lru_cache(maxsize=128)
def _fault_bytes(version: SoapVersion, code: str, subcodes: tuple[str, ...], reason: str) -> bytes:
    # Keyed by the fault's fields, never by the SoapFault: a raised one keeps its traceback,
    # and with it the request, its parsed tree and the handler's frames. The fault built here
    # is never raised and not kept.
    return _serialize(version, [], fault_element(version, SoapFault(code, subcodes, reason)))


def fault_envelope(version: SoapVersion, fault: SoapFault, request: Envelope | None = None) -> bytes:
    """Serialize ``fault`` in an envelope of ``version`` (cached when no reply headers are needed and the
    reason is short)."""
    headers = _reply_headers(request, WSA_FAULT_ACTION)
    if not headers and len(fault.reason) <= _CACHED_REASON and fault.detail is None:
        return _fault_bytes(version, fault.code, fault.subcodes, fault.reason)
    return _serialize(version, headers, fault_element(version, fault))


def fault_status(version: SoapVersion, fault: SoapFault) -> int:
    """The HTTP status code that carries ``fault`` (see the module docstring)."""
    if fault.http_status is not None:
        return fault.http_status
    if version is SOAP_12 and fault.code == "Sender":
        return 400
    return 500
