"""One event subscription: a pull point or a push subscription, and its JSON form in ``state_dir``."""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred

from atomrelay.clock import DelayedCall
from atomrelay.events.state import Event
from atomrelay.events.topics import TopicFilter

SAVED_VERSION = 1
"""Version of the saved subscriptions document."""
_SUBSCRIPTION_ID = re.compile(r"^[0-9a-f]{32}$")


def owner_of(username: str | None, remote: str) -> str:
    """A subscription's ``owner``: ``user@address`` of the caller who made it."""
    return f"{username or 'anonymous'}@{remote or '?'}"


def user_of(owner: str) -> str:
    """The user name part of an ``owner`` (a user name may hold an ``@``, an address never does)."""
    return owner.rpartition("@")[0]


@dataclass(eq=False)
class Subscription:
    """A live subscription: where it is, what it wants, when it ends, what waits in it."""

    id: str
    address: str
    filters: tuple[TopicFilter, ...]
    termination: float
    owner: str
    """``owner_of`` the caller who made it."""
    queue: deque[Event] = field(default_factory=deque)
    dropped: int = 0
    """Messages lost to the queue bound."""
    expiry: DelayedCall | None = None
    closed: bool = False
    saved_termination: float = 0.0
    """The termination time last written to the store."""

    @property
    def kind(self) -> str:
        """``pull`` or ``push``, for logs."""
        return "pull"

    def wants(self, event: Event) -> bool:
        """Whether the subscription's filters pass ``event``."""
        return all(f.matches(event.topic) for f in self.filters)


@dataclass(eq=False)
class PullPoint(Subscription):
    """A pull point and its (at most one) waiting PullMessages."""

    waiter: Deferred[list[Event]] | None = None
    waiter_limit: int = 0
    waiter_timeout: DelayedCall | None = None
    answer_soon: DelayedCall | None = None


@dataclass(eq=False)
class PushSubscription(Subscription):
    """A push subscription and its delivery state."""

    consumer: str = ""
    sending: Deferred[None] | None = None
    retry: DelayedCall | None = None
    kick: DelayedCall | None = None
    failures: int = 0

    @property
    def kind(self) -> str:
        """``push``."""
        return "push"



def saved_state_name(device_id: str) -> str:
    """The StateStore name of a device's saved subscriptions (``device_id`` empty: the aggregate device)."""
    return f"event_subscriptions-{device_id}" if device_id else "event_subscriptions"


def saved(sub: Subscription) -> dict[str, Any]:
    """The JSON form of a subscription."""
    saved: dict[str, Any] = {
        "id": sub.id,
        "kind": sub.kind,
        "address": sub.address,
        "owner": sub.owner,
        "termination": sub.termination,
        "filters": [[[list(path), subtree] for path, subtree in f.alternatives] for f in sub.filters],
    }
    if isinstance(sub, PushSubscription):
        saved["consumer"] = sub.consumer
    return saved


def parse_saved(document: Any) -> tuple[list[Subscription], list[str]]:
    """The subscriptions of a saved document, and what is wrong with each entry left out; raise ValueError naming
    what is wrong with the document as a whole (another version, no list)."""
    if not isinstance(document, dict) or document.get("version") != SAVED_VERSION:
        raise ValueError(f"not a version {SAVED_VERSION} subscriptions document")
    entries = document.get("subscriptions")
    if not isinstance(entries, list):
        raise ValueError("'subscriptions' is not a list")
    subscriptions: list[Subscription] = []
    problems: list[str] = []
    for index, entry in enumerate(entries):
        try:
            subscriptions.append(_parse_entry(index, entry))
        except ValueError as exc:
            problems.append(str(exc))
    return subscriptions, problems


def _parse_entry(index: int, entry: Any) -> Subscription:
    where = f"subscriptions[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not an object")
    texts = {}
    for key in ("id", "kind", "address", "owner"):
        value = entry.get(key)
        if not isinstance(value, str):
            raise ValueError(f"{where}.{key} is not a string")
        texts[key] = value
    if not _SUBSCRIPTION_ID.match(texts["id"]) or not texts["address"].endswith(texts["id"]):
        raise ValueError(f"{where}.id is not the id of its address")
    termination = entry.get("termination")
    if isinstance(termination, bool) or not isinstance(termination, (int, float)) or not math.isfinite(termination):
        raise ValueError(f"{where}.termination is not a number")
    filters = tuple(_parse_filter(f"{where}.filters", f) for f in _list(entry.get("filters"), f"{where}.filters"))
    fields = (texts["id"], texts["address"], filters, float(termination), texts["owner"])
    if texts["kind"] == "pull":
        return PullPoint(*fields)
    consumer = entry.get("consumer")
    if texts["kind"] != "push" or not isinstance(consumer, str):
        raise ValueError(f"{where} is neither a pull point nor a push subscription with a consumer")
    return PushSubscription(*fields, consumer=consumer)


def _parse_filter(where: str, saved: Any) -> TopicFilter:
    alternatives = []
    for alternative in _list(saved, where):
        if not (isinstance(alternative, list) and len(alternative) == 2 and isinstance(alternative[1], bool)):
            raise ValueError(f"{where} has an alternative that is not [path, subtree]")
        path = _list(alternative[0], where)
        if not path or not all(isinstance(name, str) for name in path):
            raise ValueError(f"{where} has a topic path that is not a list of names")
        alternatives.append((tuple(path), alternative[1]))
    return TopicFilter(tuple(alternatives))


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > 100:
        raise ValueError(f"{where} is not a list of at most 100 items")
    return value
