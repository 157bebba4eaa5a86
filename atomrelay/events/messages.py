"""Event XML: notification messages and Notify documents."""

from __future__ import annotations

from lxml import etree
from lxml.etree import _Element

from atomrelay.events.state import Event
from atomrelay.events.topics import CONCRETE_SET
from atomrelay.xml import ns
from atomrelay.xml.soap import ENVELOPE_PREFIX, XML_DECLARATION, Maker
from atomrelay.xml.xstypes import xs_datetime

NOTIFY_ACTION = "http://docs.oasis-open.org/wsn/bw-2/NotificationConsumer/Notify"
NOTIFY_CONTENT_TYPE = f'application/soap+xml; charset=utf-8; action="{NOTIFY_ACTION}"'.encode("ascii")


_NSMAP: dict[str | None, str] = {"wsnt": ns.WSNT, "wsa": ns.WSA, "tt": ns.TT, "tns1": ns.TNS1}
_WSNT = Maker(ns.WSNT, _NSMAP)
_WSA = Maker(ns.WSA, _NSMAP)
_TT = Maker(ns.TT, _NSMAP)
_ENVELOPE_NSMAP: dict[str | None, str] = {ENVELOPE_PREFIX: ns.SOAP12, **_NSMAP}
_ENV = Maker(ns.SOAP12, _ENVELOPE_NSMAP)


def message_element(event: Event) -> _Element:
    """The ``tt:Message`` of one event: UtcTime, PropertyOperation, Source and Data items."""
    attributes = {"UtcTime": xs_datetime(event.time, milliseconds=True)}
    if event.operation is not None:
        attributes["PropertyOperation"] = event.operation
    parts = [_TT("Source", *(_TT("SimpleItem", {"Name": n, "Value": v}) for n, v in event.topic.source_items(event.camera_id)))]
    if event.operation != "Deleted":
        parts.append(_TT("Data", *(_TT("SimpleItem", {"Name": n, "Value": v}) for n, v in event.data)))
    return _TT("Message", attributes, *parts)


def notification_message(event: Event, subscription: str | None = None) -> _Element:
    """A ``wsnt:NotificationMessage``: SubscriptionReference (if given), Topic, Message."""
    parts = []
    if subscription is not None:
        parts.append(_WSNT("SubscriptionReference", _WSA("Address", subscription)))
    parts.append(_WSNT("Topic", {"Dialect": CONCRETE_SET}, event.topic.text))
    parts.append(_WSNT("Message", message_element(event)))
    return _WSNT("NotificationMessage", *parts)


def notify_element(events: list[Event], subscription: str | None = None) -> _Element:
    """The ``wsnt:Notify`` body element for a batch of events."""
    return _WSNT("Notify", *(notification_message(event, subscription) for event in events))


def notify_document(consumer: str, events: list[Event], subscription: str | None = None) -> bytes:
    """A complete SOAP 1.2 Notify request to ``consumer`` with WS-Addressing Action and To."""
    envelope = _ENV(
        "Envelope",
        _ENV("Header", _WSA("Action", NOTIFY_ACTION), _WSA("To", consumer)),
        _ENV("Body", notify_element(events, subscription)),
    )
    return XML_DECLARATION + etree.tostring(envelope, encoding="UTF-8", xml_declaration=False)
