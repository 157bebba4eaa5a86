"""The ONVIF Events service (``tev``) at ``/onvif/events_service``.

Event service operations are answered here; the subscription manager operations
(PullMessages, SetSynchronizationPoint, Renew, Unsubscribe) are posted to a
subscription's own address, ``/onvif/events_service/subscription/<id>``, which the SOAP
server routes to this service with the full path in ``RequestContext.service_path``.
WS-BaseNotification operations live in the ``wsnt`` namespace (Subscribe, Renew,
Unsubscribe). Not implemented, so ``ter:ActionNotSupported``: Seek (no persistent
storage), GetCurrentMessage, PauseSubscription, the event broker operations.

Faults follow Core "SOAP Fault Messages": failures of WS-BaseNotification requests and
of unknown subscriptions are ``env:Receiver`` (HTTP 500) with ``ter:`` subcodes naming
the WS-BaseNotification fault (``ResourceUnknown``, ``InvalidFilter``,
``UnacceptableInitialTerminationTime``, ``UnacceptableTerminationTime``,
``SubscribeCreationFailed``); malformed PullMessages arguments are
``env:Sender/ter:InvalidArgVal``.

Times: requested termination times may be absolute or relative; a time already past is
refused, one beyond an hour is granted an hour. A PullMessages Timeout beyond ten
minutes is refused with a ``PullMessagesFaultResponse`` naming both limits; a MessageLimit
beyond the queue bound returns at most the queue bound. The WS-BaseNotification faults carry
their fault element (``wsrf-r:ResourceUnknownFault``, ``wsnt:UnacceptableTerminationTimeFault``
with the minimum and maximum times, ...) with its Timestamp in the Detail.
``tev:SubscriptionPolicy`` (ChangedOnly) and MessageContent filters are ignored
(WSSubscriptionPolicySupport is false; GetEventProperties lists no
MessageContentFilterDialect).
"""

from __future__ import annotations

import copy
import functools
from typing import Sequence

from lxml import etree
from lxml.etree import _Element
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from atomrelay.auth.policy import AccessClass
from atomrelay.clock import Clock
from atomrelay.config import CameraConfig
from atomrelay.events.consumers import ConsumerRefused
from atomrelay.events.messages import notification_message
from atomrelay.events.records import owner_of
from atomrelay.events.state import Event, EventHub
from atomrelay.events.subscriptions import (
    DEFAULT_TERMINATION,
    MAX_TERMINATION,
    PullInProgress,
    Subscriptions,
    TooManySubscriptions,
    UnknownSubscription,
)
from atomrelay.events.topics import DIALECTS, FilterError, TopicFilter, parse_topic_expression, topic_set
from atomrelay.onvif.base import Handler, Operation, RequestContext, Service
from atomrelay.xml import ns
from atomrelay.xml.soap import Maker, SoapFault, receiver_fault, sender_fault
from atomrelay.xml.xstypes import format_duration, parse_duration, parse_time, xs_datetime

PATH = "/onvif/events_service"
SUBSCRIPTION_PATH = PATH + "/subscription/"
VERSION = (24, 12)
"""The event.wsdl release this service is written against."""
MAX_PULL_TIMEOUT = 600.0
MAX_FILTERS = 16
"""Most TopicExpressions in one Filter (each must pass); more is an InvalidFilter."""
TOPIC_NAMESPACE_LOCATION = "http://www.onvif.org/onvif/ver10/topics/topicns.xml"
SCHEMA_LOCATION = "http://www.onvif.org/onvif/ver10/schema/onvif.xsd"

_NSMAP: dict[str | None, str] = {"tev": ns.TEV, "wsnt": ns.WSNT, "wsa": ns.WSA, "tt": ns.TT, "tns1": ns.TNS1}
TEV = Maker(ns.TEV, _NSMAP)
WSNT = Maker(ns.WSNT, _NSMAP)
WSA = Maker(ns.WSA, _NSMAP)
_XSI_NIL = ns.q(ns.XSI, "nil")


def _ws_fault(subcode: str, reason: str, fault: str, now: float, *more: _Element) -> SoapFault:
    """An ``env:Receiver/ter:InvalidArgVal/ter:<subcode>`` fault whose Detail is the WS-BaseNotification fault
    element ``fault`` (a Clark name) with its Timestamp and ``more`` (Core "SOAP Fault Messages")."""
    detail = etree.Element(fault, nsmap={"wsrf-bf": ns.WSRF_BF, "wsrf-r": ns.WSRF_R, "wsnt": ns.WSNT})
    timestamp = etree.SubElement(detail, ns.q(ns.WSRF_BF, "Timestamp"))
    timestamp.text = xs_datetime(now)
    detail.extend(more)
    return SoapFault("Receiver", ("InvalidArgVal", subcode), reason, detail=detail)


def _creation_failed(reason: str, now: float) -> SoapFault:
    return _ws_fault("SubscribeCreationFailed", reason, ns.q(ns.WSNT, "SubscribeCreationFailedFault"), now)


class EventsService:
    """The Events service of one (aggregate or per-camera) ONVIF device.

    ``cameras`` are the cameras the device exposes; building the service points the
    long-lived ``subscriptions`` store at them (a reload builds a new EventsService
    with the new list; live subscriptions carry over).
    """

    log = Logger()

    def __init__(
        self, clock: Clock, cameras: Sequence[CameraConfig], hub: EventHub, subscriptions: Subscriptions
    ) -> None:
        self._clock = clock
        self._cameras = tuple(cameras)
        self._hub = hub
        self._subscriptions = subscriptions
        subscriptions.update_cameras(self._cameras)
        self._service: Service | None = None

    def service(self) -> Service:
        """The ``Service`` to hand to the SOAP server (built once)."""
        if self._service is None:
            self._service = Service(
                namespace=ns.TEV,
                path=PATH,
                version=VERSION,
                operations=self._operations(),
                capabilities=lambda ctx: self._capabilities(),
            )
        return self._service

    def _operations(self) -> dict[str, Operation]:
        media = AccessClass.READ_MEDIA
        table: dict[str, tuple[Handler, AccessClass]] = {
            "GetServiceCapabilities": (self.get_service_capabilities, AccessClass.PRE_AUTH),
            "GetEventProperties": (self.get_event_properties, media),
            "CreatePullPointSubscription": (self.create_pull_point_subscription, media),
            "PullMessages": (self.pull_messages, media),
            "SetSynchronizationPoint": (self.set_synchronization_point, media),
            ns.q(ns.WSNT, "Subscribe"): (self.subscribe, media),
            ns.q(ns.WSNT, "Renew"): (self.renew, media),
            ns.q(ns.WSNT, "Unsubscribe"): (self.unsubscribe, media),
        }
        return {name: Operation(handler, access) for name, (handler, access) in table.items()}

    # --- event service ---------------------------------------------------------------------

    def _capabilities(self) -> _Element:
        return _capabilities_element(self._subscriptions.max_subscriptions)

    def get_service_capabilities(self, ctx: RequestContext) -> _Element:
        """GetServiceCapabilities: pull points and WS-BaseNotification, no policies, no storage.

        ``WSPullPointSupport`` is not a tev:Capabilities attribute (it is the legacy
        GetCapabilities flag) but the type allows any attribute and clients look for it.
        """
        return TEV("GetServiceCapabilitiesResponse", self._capabilities())

    def get_event_properties(self, ctx: RequestContext) -> _Element:
        """GetEventProperties: the fixed topic set with message descriptions and the dialects."""
        return copy.deepcopy(_event_properties())

    def create_pull_point_subscription(self, ctx: RequestContext) -> _Element:
        """CreatePullPointSubscription: a new pull point with its own address, primed with Initialized events."""
        now = self._clock.seconds()
        filters = _filters(_child(ctx.body, "Filter"))
        termination = self._termination(_child(ctx.body, "InitialTerminationTime"), now, "UnacceptableInitialTerminationTime")
        try:
            sub = self._subscriptions.create_pull_point(_address_prefix(ctx), filters, termination, _owner(ctx))
        except TooManySubscriptions as exc:
            raise receiver_fault("Action", "MaxPullPoints", reason=f"Action Failed: {exc}") from None
        return TEV(
            "CreatePullPointSubscriptionResponse",
            TEV("SubscriptionReference", WSA("Address", sub.address)),
            WSNT("CurrentTime", xs_datetime(now)),
            WSNT("TerminationTime", xs_datetime(sub.termination)),
        )

    def subscribe(self, ctx: RequestContext) -> Deferred[_Element]:
        """Subscribe: a push subscription that POSTs Notify to the consumer reference (answered once the
        consumer's address is resolved and checked)."""
        now = self._clock.seconds()
        reference = _child(ctx.body, "ConsumerReference")
        address = _child(reference, "Address") if reference is not None else None
        if address is None or not (address.text or "").strip():
            raise _creation_failed("Subscribe needs ConsumerReference/Address", now)
        filters = _filters(_child(ctx.body, "Filter"))
        termination = self._termination(_child(ctx.body, "InitialTerminationTime"), now, "UnacceptableInitialTerminationTime")
        return Deferred.fromCoroutine(self._subscribe(ctx, address.text or "", filters, termination, now))

    async def _subscribe(
        self, ctx: RequestContext, consumer: str, filters: tuple[TopicFilter, ...], termination: float, now: float
    ) -> _Element:
        try:
            sub = await self._subscriptions.subscribe(consumer, _address_prefix(ctx), filters, termination, _owner(ctx))
        except ConsumerRefused as exc:
            raise _creation_failed(str(exc), now) from None
        except TooManySubscriptions as exc:
            raise receiver_fault("Action", "MaxNotificationProducers", reason=f"Action Failed: {exc}") from None
        return WSNT(
            "SubscribeResponse",
            WSNT("SubscriptionReference", WSA("Address", sub.address)),
            WSNT("CurrentTime", xs_datetime(now)),
            WSNT("TerminationTime", xs_datetime(sub.termination)),
        )

    # --- subscription managers ---------------------------------------------------------------

    def pull_messages(self, ctx: RequestContext) -> Deferred[_Element]:
        """PullMessages: queued messages now, else wait (without blocking) for the first or the Timeout."""
        subscription_id = self._subscription_id(ctx)
        timeout_text = _required(ctx.body, "Timeout")
        limit_text = _required(ctx.body, "MessageLimit")
        try:
            timeout = parse_duration(timeout_text)
        except ValueError as exc:
            raise sender_fault("InvalidArgVal", reason=f"Argument Value Invalid: Timeout {exc}") from None
        try:
            limit = int(limit_text)
        except ValueError:
            raise sender_fault("InvalidArgVal", reason=f"Argument Value Invalid: MessageLimit {limit_text[:20]!r}") from None
        if timeout < 0 or limit < 1:
            raise sender_fault("InvalidArgVal", reason="Argument Value Invalid: Timeout must not be negative, MessageLimit at least 1")
        if timeout > MAX_PULL_TIMEOUT:
            # Core PullMessages: a Timeout over the device's limit gets PullMessagesFaultResponse with both limits.
            longest = format_duration(MAX_PULL_TIMEOUT)
            raise SoapFault("Receiver", ("InvalidArgVal",), f"Argument Value Invalid: Timeout {timeout_text[:40]} is "
                            f"over the longest this device waits, {longest}",
                            detail=TEV("PullMessagesFaultResponse", TEV("MaxTimeout", longest),
                                       TEV("MaxMessageLimit", str(self._subscriptions.queue_limit))))
        limit = min(limit, self._subscriptions.queue_limit)
        try:
            waiting = self._subscriptions.pull(subscription_id, timeout, limit)
        except UnknownSubscription:
            raise self._unknown(ctx) from None
        except PullInProgress:
            raise receiver_fault(
                "Action", "UnableToGetMessages", reason="Action Failed: a PullMessages is already waiting on this pull point"
            ) from None
        return waiting.addCallback(self._pull_response, subscription_id)

    def _pull_response(self, events: list[Event], subscription_id: str) -> _Element:
        now = self._clock.seconds()
        try:
            termination = self._subscriptions.get(subscription_id).termination
        except UnknownSubscription:
            termination = now
        return TEV(
            "PullMessagesResponse",
            TEV("CurrentTime", xs_datetime(now)),
            TEV("TerminationTime", xs_datetime(termination)),
            *(notification_message(event) for event in events),
        )

    def set_synchronization_point(self, ctx: RequestContext) -> _Element:
        """SetSynchronizationPoint: every current property again, as Initialized."""
        try:
            self._subscriptions.synchronize(self._subscription_id(ctx))
        except UnknownSubscription:
            raise self._unknown(ctx) from None
        return TEV("SetSynchronizationPointResponse")

    def renew(self, ctx: RequestContext) -> _Element:
        """Renew: a new termination time for a pull point or push subscription."""
        now = self._clock.seconds()
        subscription_id = self._subscription_id(ctx)
        requested = _child(ctx.body, "TerminationTime")
        if requested is None:
            raise _unacceptable_time("UnacceptableTerminationTime", "Renew needs TerminationTime", now)
        termination = self._termination(requested, now, "UnacceptableTerminationTime")
        try:
            sub = self._subscriptions.renew(subscription_id, termination)
        except UnknownSubscription:
            raise self._unknown(ctx) from None
        return WSNT(
            "RenewResponse",
            WSNT("TerminationTime", xs_datetime(sub.termination)),
            WSNT("CurrentTime", xs_datetime(now)),
        )

    def unsubscribe(self, ctx: RequestContext) -> _Element:
        """Unsubscribe: end the subscription now."""
        try:
            self._subscriptions.unsubscribe(self._subscription_id(ctx))
        except UnknownSubscription:
            raise self._unknown(ctx) from None
        return WSNT("UnsubscribeResponse")

    # --- helpers -----------------------------------------------------------------------------

    def _subscription_id(self, ctx: RequestContext) -> str:
        """The subscription a manager operation was posted to, from the request path."""
        if not ctx.service_path.startswith(SUBSCRIPTION_PATH):
            raise self._unknown(ctx)
        return ctx.service_path[len(SUBSCRIPTION_PATH) :].strip("/")

    def _unknown(self, ctx: RequestContext) -> SoapFault:
        """The fault for a manager operation posted to no live subscription."""
        return _ws_fault(
            "ResourceUnknown",
            f"Argument Value Invalid: no subscription at {ctx.service_path} (never created, ended or expired)",
            ns.q(ns.WSRF_R, "ResourceUnknownFault"), self._clock.seconds(),
        )

    def _termination(self, element: _Element | None, now: float, subcode: str) -> float:
        """The termination time a request asks for, clamped to MAX_TERMINATION (absent: the default)."""
        if element is None:
            return now + DEFAULT_TERMINATION
        if element.get(_XSI_NIL) in ("true", "1"):
            return now + MAX_TERMINATION
        text = (element.text or "").strip()
        try:
            when = parse_time(text, now)
        except ValueError as exc:
            raise _unacceptable_time(subcode, f"Argument Value Invalid: {exc}", now) from None
        if when <= now:
            raise _unacceptable_time(subcode, f"Argument Value Invalid: {text[:40]} is not in the future", now)
        return min(when, now + MAX_TERMINATION)


def _unacceptable_time(subcode: str, reason: str, now: float) -> SoapFault:
    """``UnacceptableTerminationTime`` or ``UnacceptableInitialTerminationTime``, with the times that would do."""
    return _ws_fault(subcode, reason, ns.q(ns.WSNT, subcode + "Fault"), now,
                     WSNT("MinimumTime", xs_datetime(now)), WSNT("MaximumTime", xs_datetime(now + MAX_TERMINATION)))


@functools.lru_cache(maxsize=8)
def _capabilities_element(maximum: int) -> _Element:
    return TEV(
        "Capabilities",
        {
            "WSPullPointSupport": "true",
            "WSSubscriptionPolicySupport": "false",
            "WSPausableSubscriptionManagerInterfaceSupport": "false",
            "MaxNotificationProducers": str(maximum),
            "MaxPullPoints": str(maximum),
            "PersistentNotificationStorage": "false",
        },
    )


@functools.lru_cache(maxsize=1)
def _event_properties() -> _Element:
    return TEV(
        "GetEventPropertiesResponse",
        TEV("TopicNamespaceLocation", TOPIC_NAMESPACE_LOCATION),
        WSNT("FixedTopicSet", "true"),
        topic_set(),
        *(WSNT("TopicExpressionDialect", dialect) for dialect in DIALECTS),
        TEV("MessageContentFilterDialect", ""),
        TEV("MessageContentSchemaLocation", SCHEMA_LOCATION),
    )


def _child(parent: _Element | None, local: str) -> _Element | None:
    """The first child element named ``local`` in any namespace (clients disagree on namespaces)."""
    if parent is None:
        return None
    for child in parent:
        if isinstance(child.tag, str) and etree.QName(child).localname == local:
            return child
    return None


def _required(parent: _Element, local: str) -> str:
    element = _child(parent, local)
    if element is None:
        raise sender_fault("InvalidArgs", reason=f"Invalid Args: {etree.QName(parent).localname} needs {local}")
    return (element.text or "").strip()


def _filters(element: _Element | None) -> tuple[TopicFilter, ...]:
    """The topic filters of a Filter element (all must pass); MessageContent is ignored."""
    if element is None:
        return ()
    filters: list[TopicFilter] = []
    for child in element:
        if not isinstance(child.tag, str) or etree.QName(child).localname != "TopicExpression":
            continue
        if len(filters) == MAX_FILTERS:
            reason = f"Argument Value Invalid: a Filter may have at most {MAX_FILTERS} TopicExpressions"
            raise receiver_fault("InvalidArgVal", "InvalidFilter", reason=reason)
        try:
            filters.append(parse_topic_expression(child.text or "", child.get("Dialect", ""), dict(child.nsmap)))
        except FilterError as exc:
            raise receiver_fault("InvalidArgVal", "InvalidFilter", reason=f"Argument Value Invalid: {exc}") from None
    return tuple(filters)


def _address_prefix(ctx: RequestContext) -> str:
    return f"http://{ctx.host}{SUBSCRIPTION_PATH}"


def _owner(ctx: RequestContext) -> str:
    return owner_of(ctx.caller.username, ctx.remote)
