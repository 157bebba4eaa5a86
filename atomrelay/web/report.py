"""The status document: every camera with its health, streams and recent events, and the relay.

``/status`` serves it as JSON (the keys are documented in the README and kept stable)
and the dashboard at ``/`` renders it. Administrators also get each camera's webhook URL;
nothing else secret is in it (no passwords; push consumers only by scheme, host and port).

mediamtx's runtime paths (``/v3/paths/list``: ready or not, how many readers) are asked
once per ``PATHS_MAX_AGE`` seconds however many pages are open; concurrent requests share
one call.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol, cast
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from atomrelay.auth.policy import Caller
from atomrelay.camera.health import HealthState
from atomrelay.camera.model import ModelFacts
from atomrelay.clock import Clock
from atomrelay.config import CameraConfig, Config
from atomrelay.events.records import PushSubscription, Subscription
from atomrelay.events.state import Event, EventHub
from atomrelay.events.subscriptions import Subscriptions
from atomrelay.events.topics import MOTION_ALARM, OBJECT, SIGNAL_LOSS
from atomrelay.mediamtx.paths import path_name
from atomrelay.onvif.media_types import host_without_port

PATHS_MAX_AGE = 2.0
"""Seconds one answer of mediamtx's path list is reused."""
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::[0-9]{1,5})?$")


class HostRequest(Protocol):
    """The part of a twisted.web request the report reads: how the client reached the relay."""

    def getHeader(self, key: bytes) -> bytes | None: ...

    def getHost(self) -> object: ...


class FactsLookup(Protocol):
    """The part of ``ModelRegistry`` the report uses."""

    def facts(self, camera_id: str) -> ModelFacts | None: ...


class PathLister(Protocol):
    """The part of ``MediamtxClient`` the report uses."""

    def list_paths(self) -> Awaitable[list[dict[str, Any]]]: ...


class MediamtxState(Protocol):
    """The part of the ``Reconciler`` the report uses."""

    version: str | None
    last_pass: tuple[float, str] | None

    @property
    def problem(self) -> str | None: ...


@dataclass(frozen=True)
class Device:
    """One ONVIF device the relay serves: its camera id ("" for the aggregate device) and address."""

    device_id: str
    port: int
    advertise_host: str | None


def iso(seconds: float) -> str:
    """UTC ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def request_host(header: bytes | None, fallback: str) -> str:
    """The host (and port) a client reached the relay by: its Host header when sane, else ``fallback``."""
    text = (header or b"").decode("latin-1").strip()
    return text if _HOST.match(text) else fallback


def _bare(host: str) -> str:
    """``host`` without its port; a bare IPv6 literal in brackets."""
    if host.count(":") > 1 and not host.startswith("["):
        return f"[{host}]"
    return host_without_port(host)


def _with_port(host: str, port: int) -> str:
    return f"{_bare(host)}:{port}"


class StatusReport:
    """Builds the status document for one generation of the relay."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        config: Config,
        health: Callable[[str], HealthState],
        models: FactsLookup,
        events: EventHub,
        mediamtx: PathLister,
        reconciler: MediamtxState,
        subscriptions: Mapping[str, Subscriptions],
        devices: Sequence[Device],
        started: float,
        version: str,
    ) -> None:
        self._clock = cast(Clock, clock)
        self.config = config
        self._health = health
        self._models = models
        self._events = events
        self._mediamtx = mediamtx
        self._reconciler = reconciler
        self._subscriptions = subscriptions
        self.devices = tuple(devices)
        self._started = started
        self._version = version
        self._paths_cache: tuple[float, dict[str, dict[str, Any]] | None] | None = None
        self._paths_waiters: list[Deferred[dict[str, dict[str, Any]] | None]] = []

    async def document(self, caller: Caller, request: HostRequest) -> dict[str, Any]:
        """The document as ``caller`` may see it, with URLs on the host the request reached the relay by."""
        local = getattr(request.getHost(), "host", "") or "localhost"
        host = request_host(request.getHeader(b"host"), str(local))
        paths = await self._paths()
        admin = caller.level == "Administrator"
        return {
            "generated": iso(self._clock.seconds()),
            "cameras": [self._camera(camera, paths, admin, host) for camera in self.config.cameras],
            "relay": self._relay(paths is not None, host),
        }

    # --- cameras ---------------------------------------------------------------------------

    def _camera(
        self, camera: CameraConfig, paths: dict[str, dict[str, Any]] | None, admin: bool, host: str
    ) -> dict[str, Any]:
        state = self._health(camera.id)
        facts = self._models.facts(camera.id)
        row: dict[str, Any] = {
            "id": camera.id,
            "name": camera.name,
            "host": camera.host,
            "model": facts.product_model if facts is not None else None,
            "product": facts.product if facts is not None else None,
            "ptz": facts.ptz if facts is not None else None,
            "state": state.state,
            "reason": state.reason,
            "since": iso(state.since),
            "snapshot": f"/snapshot/{camera.id}.jpg",
            "onvif": self._device_url(self._device_of(camera.id), host),
            "streams": [self._stream(camera, index, paths, host) for index in range(len(camera.streams))],
            "events": [_event(event) for event in self._events.recent(camera.id)],
        }
        if admin:
            port = self.config.onvif.port
            row["webhook"] = (
                f"http://{_with_port(self._advertised(host), port)}/webhook/{camera.id}/{camera.webhook_token}"
                if camera.webhook_token else None
            )
        return row

    def _stream(
        self, camera: CameraConfig, index: int, paths: dict[str, dict[str, Any]] | None, host: str
    ) -> dict[str, Any]:
        stream = camera.streams[index]
        name = path_name(camera, stream)
        item = paths.get(name) if paths is not None else None
        readers = item.get("readers") if item is not None else None
        mediamtx = self.config.mediamtx
        base = _bare(self._advertised(host))
        return {
            "name": stream.name,
            "codec": stream.codec,
            "width": stream.width,
            "height": stream.height,
            "fps": stream.fps,
            "audio": stream.audio,
            "path": name,
            "ready": bool(item.get("online", item.get("ready"))) if item is not None else None,
            "readers": len(readers) if isinstance(readers, list) else None,
            "rtsp": f"rtsp://{base}:{mediamtx.rtsp_port}/{name}",
            "webrtc": f"http://{base}:{mediamtx.webrtc_port}/{name}/" if mediamtx.webrtc_port else None,
            "hls": f"http://{base}:{mediamtx.hls_port}/{name}/" if mediamtx.hls_port else None,
        }

    # --- the relay ---------------------------------------------------------------------------

    def _relay(self, paths_known: bool, host: str) -> dict[str, Any]:
        reconciler = self._reconciler
        last = reconciler.last_pass
        now = self._clock.seconds()
        return {
            "version": self._version,
            "started": iso(self._started),
            "uptime": int(now - self._started),
            "mode": self.config.onvif.mode,
            "onvif": [self._device_url(device, host) for device in self.devices],
            "mediamtx": {
                "reachable": reconciler.problem is None and reconciler.version is not None and paths_known,
                "version": reconciler.version,
                "problem": reconciler.problem,
                "last_reconcile": {"time": iso(last[0]), "result": last[1]} if last is not None else None,
            },
            "subscriptions": [
                _subscription(device_id, sub, now)
                for device_id, subscriptions in sorted(self._subscriptions.items())
                for sub in subscriptions.live()
            ],
        }

    def _advertised(self, host: str) -> str:
        return self.config.onvif.advertise_host or host

    def _device_of(self, camera_id: str) -> Device | None:
        for device in self.devices:
            if device.device_id in ("", camera_id):
                return device
        return None

    def _device_url(self, device: Device | None, host: str) -> str | None:
        if device is None:
            return None
        advertised = device.advertise_host
        if advertised is not None and host_without_port(advertised) != advertised:
            address = advertised  # advertise_host names the port NVRs reach the device on
        else:
            address = _with_port(advertised or host, device.port)
        return f"http://{address}/onvif/device_service"

    # --- mediamtx paths ------------------------------------------------------------------------

    def _paths(self) -> Deferred[dict[str, dict[str, Any]] | None]:
        """mediamtx's runtime paths by name (None when it does not answer), at most PATHS_MAX_AGE old."""
        cached = self._paths_cache
        if cached is not None and self._clock.seconds() - cached[0] < PATHS_MAX_AGE:
            return succeed(cached[1])
        waiter: Deferred[dict[str, dict[str, Any]] | None] = Deferred()
        self._paths_waiters.append(waiter)
        if len(self._paths_waiters) == 1:
            Deferred.fromCoroutine(self._fetch_paths())
        return waiter

    async def _fetch_paths(self) -> None:
        paths: dict[str, dict[str, Any]] | None
        try:
            items = await self._mediamtx.list_paths()
            paths = {str(item.get("name")): item for item in items}
        except Exception as exc:  # noqa: BLE001 - the page shows "unknown" instead
            self.log.debug("status: mediamtx paths unknown: {error}", error=str(exc) or type(exc).__name__)
            paths = None
        self._paths_cache = (self._clock.seconds(), paths)
        waiters, self._paths_waiters = self._paths_waiters, []
        for waiter in waiters:
            waiter.callback(paths)


def _event(event: Event) -> dict[str, str]:
    values = dict(event.data)
    if event.topic is MOTION_ALARM:
        kind = "motion" if values.get("State") == "true" else "motion ended"
    elif event.topic is OBJECT:
        kind = "object: " + values.get("ClassTypes", "?")
    elif event.topic is SIGNAL_LOSS:
        kind = "signal lost" if values.get("State") == "true" else "signal back"
    else:
        kind = event.topic.text
    return {"kind": kind, "time": iso(event.time)}


def _subscription(device_id: str, sub: Subscription, now: float) -> dict[str, Any]:
    user, _, remote = sub.owner.rpartition("@")
    consumer = None
    if isinstance(sub, PushSubscription):
        parts = urlsplit(sub.consumer)
        consumer = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    return {
        "kind": sub.kind,
        "device": device_id,
        "user": user,
        "from": remote,
        "consumer": consumer,
        "expires_in": max(0, int(sub.termination - now)),
    }
