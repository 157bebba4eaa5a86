"""``GET /metrics``: the relay's metrics in the Prometheus text exposition format.

Behind the relay's users like ``/status`` (HTTP Digest, or Basic when enabled), or open
to anyone with ``http.metrics_public: true``. Counters live in the process-wide
``Registry`` (they survive config reloads); the gauges below are set from the current
generation just before each scrape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource

from atomrelay.auth.security import Authenticator, HttpRequest
from atomrelay.camera.health import HealthState
from atomrelay.clock import Clock
from atomrelay.events.state import HEALTH_STATES
from atomrelay.events.subscriptions import Subscriptions
from atomrelay.metrics import CONTENT_TYPE, Registry


class _Request(HttpRequest, Protocol):
    def setHeader(self, name: bytes, value: bytes) -> None: ...


class Listener(Protocol):
    """What the gauges read of a listening site: its open connection count."""

    open_connections: int


def resident_bytes() -> int | None:
    """This process's resident set size from ``/proc/self/statm`` (None where there is none)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


class RelayGauges:
    """Sets the gauges that describe the relay now: cameras by state, subscriptions, connections, memory."""

    def __init__(
        self,
        clock: IReactorTime,
        registry: Registry,
        health: Callable[[], Mapping[str, HealthState]],
        subscriptions: Mapping[str, Subscriptions],
        listeners: Callable[[], Mapping[str, Listener]],
        started: float,
        version: str,
        replay_entries: Callable[[], int] = lambda: 0,
    ) -> None:
        self._clock = cast(Clock, clock)
        self._replay_entries = replay_entries
        self._health = health
        self._subscriptions = subscriptions
        self._listeners = listeners
        self._started = started
        self._version = version
        self._cameras = registry.gauge("atomrelay_cameras", "Cameras by health state", ("state",))
        self._subs = registry.gauge("atomrelay_event_subscriptions", "Live event subscriptions, by kind", ("kind",))
        self._connections = registry.gauge(
            "atomrelay_open_connections", "Open HTTP connections, by listener", ("listener",)
        )
        self._rss = registry.gauge("process_resident_memory_bytes", "Resident memory size in bytes")
        self._uptime = registry.gauge("atomrelay_uptime_seconds", "Seconds since the relay started")
        self._info = registry.gauge("atomrelay_info", "The relay's version (always 1)", ("version",))
        self._replay = registry.gauge(
            "atomrelay_replay_memory_entries", "WS-Security tokens and HTTP Digest nonces the replay memory holds"
        )

    def __call__(self) -> None:
        """Set every gauge from the relay as it is now."""
        states = [state.state for state in self._health().values()]
        for name in HEALTH_STATES:
            self._cameras.set(states.count(name), name)
        kinds = [sub.kind for subscriptions in self._subscriptions.values() for sub in subscriptions.live()]
        for kind in ("pull", "push"):
            self._subs.set(kinds.count(kind), kind)
        self._connections.clear()
        for name, site in self._listeners().items():
            self._connections.set(site.open_connections, name)
        rss = resident_bytes()
        if rss is not None:
            self._rss.set(rss)
        self._uptime.set(round(self._clock.seconds() - self._started, 3))
        self._info.set(1, self._version)
        self._replay.set(self._replay_entries())


class MetricsResource(Resource):
    """The ``/metrics`` leaf resource."""

    isLeaf = True

    def __init__(
        self, authenticator: Authenticator, registry: Registry, collect: Callable[[], None], public: bool = False
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._authenticator = authenticator
        self._registry = registry
        self._collect = collect
        self.public = public

    def render_GET(self, request: _Request) -> bytes:
        """The metrics, after checking the credentials unless they are public."""
        if not self.public and self._authenticator.authenticate_http(request) is None:
            self._authenticator.challenge(request)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Authentication required.\n"
        self._collect()
        request.setHeader(b"content-type", CONTENT_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        return self._registry.exposition().encode("utf-8")


def listener_sites(listeners: Mapping[Any, tuple[Any, Any]]) -> dict[str, Listener]:
    """The sites of ``RelayService.listeners`` by listener name."""
    return {listener.name: listener.factory for listener, _ in listeners.values()}
