"""Event subscriptions of one ONVIF device: pull points and push (Notify) subscriptions.

Each subscription has its own address, an optional topic filter, a termination time on
the injected clock and a bounded queue (the oldest message is dropped and counted when
it is full). The store is long-lived: keep it across config reloads and call
``update_cameras``; live subscriptions carry over.

Pull points (Core "Real-time Pull-Point Notification Interface"): PullMessages answers
at once when messages are queued, otherwise waits without blocking the reactor until a
message arrives or the timeout passes; a pull keeps the pull point alive for at least
its timeout. One pull may wait per pull point.

Push (WS-BaseNotification Subscribe): messages are POSTed as ``wsnt:Notify`` to the
consumer, one request at a time, queued messages batched. A failed or timed-out POST is
retried after each of ``retry_delays``; when the last retry fails too the subscription
is dropped (the consumer's next Renew gets a fault and it subscribes again).

Saved state: with a ``StateStore``, every live subscription (id and address, owner,
filters, termination time, push consumer) is kept in ``state_dir``
(``event_subscriptions.json``, ``event_subscriptions-<camera id>.json`` per per-camera
device) and restored when the store starts again, so that a client's next PullMessages
or Renew after a relay restart finds its subscription. Queued messages are not saved: a
restored subscription starts with the current value of every property (Initialized).
Expired subscriptions are not restored; an unreadable file is logged and ignored.


Consumer addresses (SSRF) are checked by ``events.consumers`` on resolved addresses, at
Subscribe and again at each connection: never a camera, loopback, link-local, multicast
and the like.
"""

from __future__ import annotations

import secrets
from typing import Any, Sequence, cast

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from atomrelay.clock import Clock, DelayedCall
from atomrelay.config import CameraConfig
from atomrelay.events.consumers import MAX_ANSWER_BYTES, NotifyClient
from atomrelay.events.messages import notify_document
from atomrelay.events.records import (
    SAVED_VERSION,
    PullPoint,
    PushSubscription,
    Subscription,
    parse_saved,
    saved,
    user_of,
)
from atomrelay.events.state import Event, EventHub
from atomrelay.events.topics import TOPICS, TopicFilter
from atomrelay.metrics import Registry
from atomrelay.net import read_body
from atomrelay.state import StateStore

MAX_SUBSCRIPTIONS = 64
"""Live subscriptions (pull and push together) per device; MaxPullPoints."""
MAX_PER_USER = 16
"""Live subscriptions of one user name per device, so that one account cannot take every one of them."""
QUEUE_LIMIT = 256
"""Messages queued per subscription before the oldest is dropped."""
MAX_TERMINATION = 3600.0
"""Longest lifetime granted at once; longer requests get this (renew to go on)."""
DEFAULT_TERMINATION = 60.0
"""Lifetime of a subscription that asked for none."""
NOTIFY_BATCH = 100
"""Most messages in one Notify."""
NOTIFY_TIMEOUT = 10.0
"""Seconds a consumer gets to answer a Notify, its answer's body included."""
RETRY_DELAYS = (1.0, 2.0, 4.0)
"""Waits before the retries of a failed Notify; then the subscription is dropped."""
PULL_GRACE = 10.0
"""A pull keeps its pull point alive this long past its timeout."""


class UnknownSubscription(Exception):
    """No live subscription has this id (never had, unsubscribed, expired or dropped)."""


class TooManySubscriptions(Exception):
    """The device already has its maximum of live subscriptions."""


class PullInProgress(Exception):
    """A PullMessages is already waiting on this pull point."""


class Subscriptions(Service):
    """The event subscriptions of one ONVIF device (pull points and push).

    ``cameras`` are the cameras the device exposes: only their events reach its
    subscriptions. ``notify`` checks consumer addresses and sends the Notify requests.
    With a ``store``, subscriptions are saved there under ``state_name`` and restored on
    start. Stopping the service ends every subscription in memory (the saved ones come
    back on the next start); a config reload should keep it running and call
    ``update_cameras``.
    """

    log = Logger()

    def __init__(
        self,
        clock: Clock,
        hub: EventHub,
        cameras: Sequence[CameraConfig],
        notify: NotifyClient,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
        max_per_user: int = MAX_PER_USER,
        queue_limit: int = QUEUE_LIMIT,
        notify_timeout: float = NOTIFY_TIMEOUT,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        store: StateStore | None = None,
        state_name: str = "event_subscriptions",
        metrics: Registry | None = None,
    ) -> None:
        self._clock = clock
        self._store = store
        self._state_name = state_name
        self._hub = hub
        self._notify = notify
        self.max_subscriptions = max_subscriptions
        self.max_per_user = max_per_user
        self.queue_limit = queue_limit
        self.notify_timeout = notify_timeout
        self.retry_delays = tuple(retry_delays)
        self._subs: dict[str, Subscription] = {}
        self._camera_ids: tuple[str, ...] = tuple(camera.id for camera in cameras)
        registry = metrics or Registry()
        self._delivered = registry.counter(
            "atomrelay_events_delivered_total", "Event messages handed to subscribers (pulled, or pushed and accepted)",
            ("kind",),
        )
        self._push_failures = registry.counter(
            "atomrelay_push_failures_total", "Notify requests to push consumers that failed"
        )

    # --- the store ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._subs)

    def live(self) -> list[Subscription]:
        """Every live subscription, oldest first."""
        return list(self._subs.values())

    def get(self, subscription_id: str) -> Subscription:
        """The live subscription with this id; raise UnknownSubscription."""
        sub = self._subs.get(subscription_id)
        if sub is None:
            raise UnknownSubscription(subscription_id)
        return sub

    def update_cameras(self, cameras: Sequence[CameraConfig]) -> None:
        """Serve a new camera list: Deleted for the properties of cameras gone, Initialized for new ones."""
        new_ids = tuple(camera.id for camera in cameras)
        gone = [c for c in self._camera_ids if c not in new_ids]
        added = [c for c in new_ids if c not in self._camera_ids]
        now = self._clock.seconds()
        deleted = [Event(t, c, now, (), "Deleted") for c in gone for t in TOPICS if t.is_property]
        self._camera_ids = new_ids
        for event in [*deleted, *self._hub.properties(added)]:
            self._deliver_to_all(event)

    # --- creating and ending ------------------------------------------------------------------

    def create_pull_point(
        self, address_prefix: str, filters: tuple[TopicFilter, ...], termination: float, owner: str
    ) -> PullPoint:
        """A new pull point at ``address_prefix + id``, primed with Initialized property events."""
        sub = PullPoint(*self._new_fields(address_prefix, filters, termination, owner))
        self._add(sub)
        return sub

    async def subscribe(
        self,
        consumer: str,
        address_prefix: str,
        filters: tuple[TopicFilter, ...],
        termination: float,
        owner: str,
    ) -> PushSubscription:
        """A new push subscription to ``consumer`` once its address is checked (ConsumerRefused if it is not
        acceptable); its first Notify (Initialized events) follows soon."""
        self._check_room(owner)  # before resolving the consumer's name: a full device costs no lookup
        consumer = await self._notify.check(consumer)
        sub = PushSubscription(*self._new_fields(address_prefix, filters, termination, owner), consumer=consumer)
        self._add(sub)
        return sub

    def _new_fields(
        self, address_prefix: str, filters: tuple[TopicFilter, ...], termination: float, owner: str
    ) -> tuple[str, str, tuple[TopicFilter, ...], float, str]:
        self._check_room(owner)
        subscription_id = secrets.token_hex(16)
        return subscription_id, address_prefix + subscription_id, filters, termination, owner

    def _check_room(self, owner: str) -> None:
        """Raise TooManySubscriptions when the device, or the owner's user, has no subscription left."""
        if len(self._subs) >= self.max_subscriptions:
            raise TooManySubscriptions(f"the device has its maximum of {self.max_subscriptions} subscriptions")
        user = user_of(owner)
        if sum(1 for sub in self._subs.values() if user_of(sub.owner) == user) >= self.max_per_user:
            raise TooManySubscriptions(f"user {user[:64]!r} has its maximum of {self.max_per_user} subscriptions "
                                       "on this device")

    def _add(self, sub: Subscription, restored: bool = False) -> None:
        self._subs[sub.id] = sub
        self._schedule_expiry(sub)
        self.log.info(
            "{kind} subscription {sub_id} {how} {owner}, {count} live",
            kind=sub.kind,
            sub_id=sub.id[:8],
            how="restored for" if restored else "created by",
            owner=sub.owner,
            count=len(self._subs),
        )
        if not restored:
            self._save()
        for event in self._hub.properties(self._camera_ids):
            if sub.wants(event):
                self._enqueue(sub, event)
        self._wake(sub)

    def renew(self, subscription_id: str, termination: float) -> Subscription:
        """Move a subscription's termination time (already clamped by the caller)."""
        sub = self.get(subscription_id)
        sub.termination = termination
        self._schedule_expiry(sub)
        self._save()
        return sub

    def unsubscribe(self, subscription_id: str) -> None:
        """End a subscription now (a waiting pull is answered with no messages)."""
        self._end(self.get(subscription_id), "unsubscribed")

    def synchronize(self, subscription_id: str) -> None:
        """SetSynchronizationPoint: queue every current property value as Initialized."""
        sub = self.get(subscription_id)
        for event in self._hub.properties(self._camera_ids):
            if sub.wants(event):
                self._enqueue(sub, event)
        self._wake(sub)

    def _schedule_expiry(self, sub: Subscription) -> None:
        delay = max(0.0, sub.termination - self._clock.seconds())
        if sub.expiry is not None and sub.expiry.active():
            sub.expiry.reset(delay)
        else:
            sub.expiry = self._clock.callLater(delay, self._expire, sub.id)

    def _expire(self, subscription_id: str) -> None:
        sub = self._subs.get(subscription_id)
        if sub is not None:
            self._end(sub, "expired")

    def _end(self, sub: Subscription, why: str, save: bool = True) -> None:
        if sub.closed:
            return
        sub.closed = True
        self._subs.pop(sub.id, None)
        for call in (sub.expiry, *self._timers(sub)):
            if call is not None and call.active():
                call.cancel()
        if isinstance(sub, PullPoint) and sub.waiter is not None:
            waiter, sub.waiter = sub.waiter, None
            waiter.callback([])
        if isinstance(sub, PushSubscription) and sub.sending is not None:
            sub.sending.cancel()
        self.log.info(
            "{kind} subscription {sub_id} of {owner} {why} ({dropped} messages dropped), {count} live",
            kind=sub.kind,
            sub_id=sub.id[:8],
            owner=sub.owner,
            why=why,
            dropped=sub.dropped,
            count=len(self._subs),
        )
        if save:
            self._save()

    @staticmethod
    def _timers(sub: Subscription) -> list[DelayedCall | None]:
        if isinstance(sub, PullPoint):
            return [sub.waiter_timeout, sub.answer_soon]
        if isinstance(sub, PushSubscription):
            return [sub.retry, sub.kick]
        return []

    def startService(self) -> None:
        """Listen to the hub (from here on, so that a generation built but never installed leaves no listener),
        and restore the saved subscriptions."""
        if self.publish not in self._hub.listeners:
            self._hub.listeners.append(self.publish)
        super().startService()  # type: ignore[no-untyped-call]
        self._restore()

    def stopService(self) -> None:
        """End every subscription, cancelling waiting pulls and Notify requests in flight; stop listening.

        The saved state is left as it is, so the subscriptions come back on the next start.
        """
        for sub in list(self._subs.values()):
            self._end(sub, "closed: the relay is stopping", save=False)
        if self.publish in self._hub.listeners:
            self._hub.listeners.remove(self.publish)
        super().stopService()  # type: ignore[no-untyped-call]

    # --- saved state ---------------------------------------------------------------------------

    def _save(self) -> None:
        """Write every live subscription to the store (the one place that saves)."""
        if self._store is None:
            return
        document = {"version": SAVED_VERSION, "subscriptions": [saved(sub) for sub in self._subs.values()]}
        for sub in self._subs.values():
            sub.saved_termination = sub.termination
        self._store.save_in_background(self._state_name, document, "event subscriptions (a restart will lose them)")

    def _restore(self) -> None:
        """Bring back the saved subscriptions that have not expired, each primed with Initialized events."""
        if self._store is None:
            return
        document = self._store.load(self._state_name, {})
        if not document:
            return
        # Whatever cannot be restored is kept aside for the operator (a file of a newer version after a downgrade,
        # an entry edited by hand): the next save writes only what was restored.
        try:
            saved, problems = parse_saved(document)
        except ValueError as exc:
            self._store.set_aside(self._state_name, f"cannot restore event subscriptions: {exc}")
            return
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            self._store.set_aside(self._state_name, f"cannot restore {len(problems)} event subscription(s): "
                                                    f"{problems[0]}{more}; restoring the other {len(saved)}")
        now = self._clock.seconds()
        for sub in saved:
            if sub.termination <= now or sub.id in self._subs or len(self._subs) >= self.max_subscriptions:
                continue
            # A restored push consumer was checked at Subscribe; every connection to it is checked again.
            sub.saved_termination = sub.termination
            self._add(sub, restored=True)
        if problems:
            self._save()  # the file was moved aside: what was restored is on the disk again

    # --- events -------------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        """The hub's listener: queue ``event`` on every subscription that wants it."""
        if event.camera_id in self._camera_ids:
            self._deliver_to_all(event)

    def _deliver_to_all(self, event: Event) -> None:
        for sub in list(self._subs.values()):
            if sub.wants(event):
                self._enqueue(sub, event)
                self._wake(sub)

    def _enqueue(self, sub: Subscription, event: Event) -> None:
        if len(sub.queue) >= self.queue_limit:
            sub.queue.popleft()
            if sub.dropped % 100 == 0:
                self.log.warn(
                    "{kind} subscription {sub_id} of {owner} is not read: dropping its oldest messages",
                    kind=sub.kind,
                    sub_id=sub.id[:8],
                    owner=sub.owner,
                )
            sub.dropped += 1
        sub.queue.append(event)

    def _wake(self, sub: Subscription) -> None:
        if isinstance(sub, PullPoint):
            if sub.waiter is not None and sub.queue and sub.answer_soon is None:
                # Answer at the end of this turn, so that simultaneous messages go together.
                sub.answer_soon = self._clock.callLater(0, self._answer, sub)
        elif isinstance(sub, PushSubscription):
            if sub.queue and sub.sending is None and sub.retry is None and sub.kick is None:
                sub.kick = self._clock.callLater(0, self._send_next, sub)

    # --- pull ---------------------------------------------------------------------------------

    def pull(self, subscription_id: str, timeout: float, limit: int) -> Deferred[list[Event]]:
        """PullMessages: up to ``limit`` queued messages now, or the first ones within ``timeout``."""
        sub = self.get(subscription_id)
        if not isinstance(sub, PullPoint):
            raise UnknownSubscription(subscription_id)
        if sub.waiter is not None:
            raise PullInProgress(subscription_id)
        keep_until = self._clock.seconds() + timeout + PULL_GRACE
        if keep_until > sub.termination:
            sub.termination = keep_until
            self._schedule_expiry(sub)
            if keep_until - sub.saved_termination >= PULL_GRACE:
                # One write per PULL_GRACE of keep-alive at most, however often a client pulls.
                self._save()
        if sub.queue or timeout <= 0:
            return succeed(self._pulled(self._take(sub, limit)))

        def abandon(waiter: Deferred[list[Event]]) -> None:
            if sub.waiter is waiter:
                self._forget_waiter(sub)

        waiter: Deferred[list[Event]] = Deferred(abandon)
        sub.waiter, sub.waiter_limit = waiter, limit
        sub.waiter_timeout = self._clock.callLater(timeout, self._answer, sub)
        return waiter

    def _answer(self, sub: PullPoint) -> None:
        sub.answer_soon = None
        waiter, limit = sub.waiter, sub.waiter_limit
        if waiter is None:
            return
        self._forget_waiter(sub)
        waiter.callback(self._pulled(self._take(sub, limit)))

    def _pulled(self, events: list[Event]) -> list[Event]:
        self._delivered.inc("pull", amount=len(events))
        return events

    def _forget_waiter(self, sub: PullPoint) -> None:
        for call in (sub.waiter_timeout, sub.answer_soon):
            if call is not None and call.active():
                call.cancel()
        sub.waiter = None
        sub.waiter_timeout = None
        sub.answer_soon = None

    @staticmethod
    def _take(sub: Subscription, limit: int) -> list[Event]:
        return [sub.queue.popleft() for _ in range(min(limit, len(sub.queue)))]

    # --- push ---------------------------------------------------------------------------------

    def _send_next(self, sub: PushSubscription) -> None:
        sub.kick = None
        sub.retry = None
        if sub.closed or sub.sending is not None or not sub.queue:
            return
        batch = self._take(sub, NOTIFY_BATCH)
        sending = Deferred.fromCoroutine(self._post(sub, batch))
        sending.addErrback(self._post_crashed, sub)
        if not sending.called:
            # _post clears sub.sending when it ends; it may already have ended here.
            sub.sending = sending

    async def _exchange(self, consumer: str, body: bytes) -> int:
        """POST one Notify and read the answer's body within the same deadline; the status code. An answer over
        ``MAX_ANSWER_BYTES`` fails (the relay's agent aborts it, headers included; ``read_body`` bounds the body)."""
        response = await self._notify.post(consumer, body)
        await read_body(response, MAX_ANSWER_BYTES)
        return int(response.code)

    def _post_crashed(self, failure: Failure, sub: PushSubscription) -> None:
        if not cast(Any, failure).check(CancelledError):
            self.log.failure("push subscription {sub_id}: delivery crashed", failure, sub_id=sub.id[:8])

    async def _post(self, sub: PushSubscription, batch: list[Event]) -> None:
        body = notify_document(sub.consumer, batch, sub.address)
        exchange = Deferred.fromCoroutine(self._exchange(sub.consumer, body))
        timed_out: list[bool] = []

        def give_up() -> None:
            timed_out.append(True)
            exchange.cancel()

        timer = self._clock.callLater(self.notify_timeout, give_up)
        outcome = ""
        try:
            code = await exchange
            if not 200 <= code < 300:
                outcome = f"HTTP {code}"
        except Exception as exc:  # noqa: BLE001 - any transport failure counts as a failed delivery
            if timed_out:
                outcome = f"no answer within {self.notify_timeout:g} s"
            else:
                outcome = f"{type(exc).__name__}: {str(exc)[:120]}"
        finally:
            if timer.active():
                timer.cancel()
        sub.sending = None
        if sub.closed:
            return
        if not outcome:
            self._delivered.inc("push", amount=len(batch))
            sub.failures = 0
            self._wake(sub)
            return
        sub.failures += 1
        self._push_failures.inc()
        if sub.failures > len(self.retry_delays):
            self.log.warn(
                "push subscription {sub_id} of {owner}: Notify to {consumer} failed {failures} times "
                "({outcome}); dropping the subscription",
                sub_id=sub.id[:8],
                owner=sub.owner,
                consumer=sub.consumer,
                failures=sub.failures,
                outcome=outcome,
            )
            self._end(sub, "dropped")
            return
        self.log.info(
            "push subscription {sub_id}: Notify to {consumer} failed ({outcome}); retrying in {delay:g} s",
            sub_id=sub.id[:8],
            consumer=sub.consumer,
            outcome=outcome,
            delay=self.retry_delays[sub.failures - 1],
        )
        for event in reversed(batch):
            sub.queue.appendleft(event)
        while len(sub.queue) > self.queue_limit:
            sub.queue.popleft()
            sub.dropped += 1
        sub.retry = self._clock.callLater(self.retry_delays[sub.failures - 1], self._send_next, sub)
