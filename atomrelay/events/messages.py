"""Event XML and time values: notification messages, Notify documents, xs:dateTime and
xs:duration.

Every time the relay writes is UTC with the ``Z`` indicator (Core "Basic Notification
Interface"); every time it reads may be absolute (xs:dateTime, a missing zone means UTC)
or relative (xs:duration).
"""

from __future__ import annotations

import datetime
import re

from lxml import etree
from lxml.etree import _Element

from atomrelay.events.state import Event
from atomrelay.events.topics import CONCRETE_SET
from atomrelay.onvif import ns
from atomrelay.onvif.soap import ENVELOPE_PREFIX, XML_DECLARATION, Maker

NOTIFY_ACTION = "http://docs.oasis-open.org/wsn/bw-2/NotificationConsumer/Notify"
NOTIFY_CONTENT_TYPE = f'application/soap+xml; charset=utf-8; action="{NOTIFY_ACTION}"'.encode("ascii")

_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
_DATETIME = re.compile(
    r"^(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})T(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
    r"(?P<fraction>\.\d+)?(?P<zone>Z|[+-]\d{2}:\d{2})?$"
)
_UNITS = {"years": 365 * 86400.0, "months": 30 * 86400.0, "days": 86400.0, "hours": 3600.0, "minutes": 60.0}

_NSMAP: dict[str | None, str] = {"wsnt": ns.WSNT, "wsa": ns.WSA, "tt": ns.TT, "tns1": ns.TNS1}
_WSNT = Maker(ns.WSNT, _NSMAP)
_WSA = Maker(ns.WSA, _NSMAP)
_TT = Maker(ns.TT, _NSMAP)
_ENVELOPE_NSMAP: dict[str | None, str] = {ENVELOPE_PREFIX: ns.SOAP12, **_NSMAP}
_ENV = Maker(ns.SOAP12, _ENVELOPE_NSMAP)


def xs_datetime(seconds: float, milliseconds: bool = False) -> str:
    """An xs:dateTime in UTC with ``Z``, e.g. ``2023-11-14T22:13:20Z`` (or ``...20.123Z``)."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    if milliseconds:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(text: str) -> float:
    """Seconds in an xs:duration (``PT60S``, ``PT1M``, ``P0DT0H1M0S``); raise ValueError if it is none.

    Years and months count as 365 and 30 days: no client waits that long.
    """
    match = _DURATION.match(text.strip())
    if match is None or text.strip().endswith(("P", "T")):
        raise ValueError(f"{text.strip()[:40]!r} is not an xs:duration")
    total = float(match.group("seconds") or 0)
    try:
        for unit, factor in _UNITS.items():
            total += int(match.group(unit) or 0) * factor
    except OverflowError:  # hundreds of digits: more than a float holds
        raise ValueError(f"{text.strip()[:40]!r} is too long a duration") from None
    return -total if match.group("sign") else total


def parse_datetime(text: str) -> float:
    """Seconds since the epoch of an xs:dateTime (no zone means UTC); raise ValueError if it is none."""
    match = _DATETIME.match(text.strip())
    if match is None:
        raise ValueError(f"{text.strip()[:40]!r} is not an xs:dateTime")
    zone_text = match.group("zone") or "Z"
    if zone_text == "Z":
        zone = datetime.timezone.utc
    else:
        sign = -1 if zone_text[0] == "-" else 1
        zone = datetime.timezone(sign * datetime.timedelta(hours=int(zone_text[1:3]), minutes=int(zone_text[4:6])))
    moment = datetime.datetime(
        int(match.group("year")),
        int(match.group("month")),
        int(match.group("day")),
        int(match.group("hour")),
        int(match.group("minute")),
        min(int(match.group("second")), 59),
        tzinfo=zone,
    )
    return moment.timestamp() + float(match.group("fraction") or 0)


def parse_time(text: str, now: float) -> float:
    """An AbsoluteOrRelativeTimeType value as seconds since the epoch (a duration counts from ``now``)."""
    stripped = text.strip()
    if stripped.startswith(("P", "-P")):
        return now + parse_duration(stripped)
    return parse_datetime(stripped)


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
