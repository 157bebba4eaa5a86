"""twistd entry: ``Options`` and ``makeService``, the only composition root.

Nothing else in the package creates long-lived objects or touches the global reactor;
every class gets its reactor, clock and HTTP client from here.
"""

from __future__ import annotations

from atomrelay import tls

# Before the imports below load Twisted's networking: without pyOpenSSL (see atomrelay.tls).
tls.import_twisted_without_tls()

import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, cast

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage
from twisted.web import pages
from twisted.web.resource import Resource

from atomrelay import __version__
from atomrelay.camera.client import CameraClient
from atomrelay.camera.health import HealthMonitor, RtspOptionsProbe
from atomrelay.camera.model import ModelRegistry, facts_for
from atomrelay.camera.ptz import PtzController
from atomrelay.camera.snapshot import SnapshotResource
from atomrelay.camera.status import StatusResource
from atomrelay.config import CameraConfig, Config, ConfigError, User, load_config
from atomrelay.discovery.responder import Target
from atomrelay.discovery.service import DiscoveryService
from atomrelay.events.service import EventsService
from atomrelay.events.state import EventHub
from atomrelay.events.subscriptions import ConsumerPolicy, Subscriptions, guarded_agent
from atomrelay.events.webhook import WebhookResource, access_log_formatter
from atomrelay.httpguard import ConnectionLimits, GuardedSite
from atomrelay.identity import Identity, load_identity
from atomrelay.mediamtx.auth import MediamtxAuthResource
from atomrelay.mediamtx.client import MediamtxClient
from atomrelay.mediamtx.reconciler import Reconciler
from atomrelay.onvif.base import Service
from atomrelay.onvif.device import DeviceService
from atomrelay.onvif.imaging import ImagingService
from atomrelay.onvif.media import MediaService
from atomrelay.onvif.media2 import Media2Service
from atomrelay.onvif.media_model import MediaModel
from atomrelay.onvif.ptz import PtzService, media_profile_lookup
from atomrelay.onvif.security import Authenticator
from atomrelay.onvif.server import BoundedRequest, OnvifResource
from atomrelay.onvif.users import UserStore
from atomrelay.state import StateError, StateStore
from atomrelay.systemd import SystemdNotifier, listener_service, when_listening

log = Logger(namespace="atomrelay.tap")


class Options(usage.Options):
    """Command-line options of ``twistd atomrelay`` and ``atomrelay run``."""

    synopsis = "-c CONFIG"
    optParameters = [
        ["config", "c", "/etc/atomrelay/config.yaml", "Path to the YAML configuration file."],
    ]
    optFlags = [
        ["access-log", None, "Log one line per HTTP request (off by default: it costs CPU on every request)."],
    ]

    def postOptions(self) -> None:
        """Load and validate the config now so that twistd refuses to start on errors."""
        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as exc:
            raise usage.UsageError(str(exc)) from None


class RelayService(MultiService):
    """The running relay: HTTP/SOAP listeners that live as long as the process, and a
    *generation* of everything built from the config (camera clients, health, PTZ,
    ONVIF devices, the mediamtx reconciler), and WS-Discovery, always the last child.

    A config reload (SIGHUP) builds a new generation and swaps it in: listeners whose
    address stays keep their sockets (their site root just points at the new
    generation's resources), the event hub and every live event subscription are kept,
    and saved state (presets, profiles, users, identity) lives in ``state_dir``.
    WS-Discovery is kept too while its settings stay: devices that go say Bye before
    their ports close, new or changed ones say Hello once they listen, and unchanged ones
    say nothing (a changed ``discovery`` section restarts it: Bye, then Hello for all).
    """

    log = Logger()

    def __init__(
        self, reactor: Any, parts: Persistent, config_path: str | None = None, access_log: bool = False
    ) -> None:
        cast(Any, MultiService).__init__(self)
        self.reactor = reactor
        self.parts = parts
        self.config_path = config_path
        self.access_log = access_log
        self.listeners: dict[tuple[str, int], tuple[Any, SwitchRoot]] = {}
        self.limits = ConnectionLimits()
        """The connection caps, shared by every listener."""
        self.generation: Generation | None = None
        self.on_reloading: list[Callable[[], None]] = []
        self.on_reloaded: list[Callable[[str], None]] = []
        self._reloading = False
        self._reload_again = False
        self._previous_handler: Any = None

    @property
    def config(self) -> Config:
        """The config the relay runs on now."""
        assert self.generation is not None
        return self.generation.config

    @property
    def reconciler(self) -> Reconciler:
        """The current generation's mediamtx reconciler."""
        assert self.generation is not None
        return self.generation.reconciler

    @property
    def devices(self) -> list[OnvifDevice]:
        """The ONVIF devices served now (one in aggregate mode, one per camera in per_camera mode)."""
        return self.generation.devices if self.generation is not None else []

    def install(self, generation: Generation) -> None:
        """Make ``generation`` the served one: listeners first, then its workers (not started here)."""
        for key, (name, root) in generation.roots.items():
            if key in self.listeners:
                self.listeners[key][1].switch(root)
                continue
            switch = SwitchRoot(root)
            site: Any = GuardedSite(
                switch, requestFactory=BoundedRequest, logFormatter=access_log_formatter, access_log=self.access_log,
                limits=self.limits,
            )
            site.displayTracebacks = False
            listener: Any = listener_service(self.reactor, _strport(*key), site)
            listener.is_listener = True
            listener.setName(name)
            listener.setServiceParent(self)
            self.listeners[key] = (listener, switch)
        self.generation = generation
        cast(Any, generation.workers).setServiceParent(self)
        discovery = self.parts.discovery
        if discovery is None and generation.config.discovery.enabled:
            discovery = self.parts.discovery = DiscoveryService(
                self.reactor, generation.config.discovery, generation.targets, self.parts.store
            )
            cast(Any, discovery).setName("discovery")
            cast(Any, discovery).setServiceParent(self)
        elif discovery is not None:
            # Last child: it starts after every listener and stops (Bye) before any of them closes.
            services: list[Any] = cast(Any, self).services
            services.remove(discovery)
            services.append(discovery)

    def startService(self) -> None:
        """Start everything and, when the config came from a file, reload it on SIGHUP."""
        cast(Any, MultiService).startService(self)
        if self.config_path is not None:
            self._previous_handler = signal.signal(signal.SIGHUP, self._on_sighup)

    def stopService(self) -> Deferred[None]:
        """Stop everything (Bye, reconciler, listeners) and restore the SIGHUP handler."""
        if self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._previous_handler = None
        return cast(Deferred[None], cast(Any, MultiService).stopService(self))

    def _on_sighup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> Deferred[None]:
        """Re-read the config file and apply it; an invalid file changes nothing (one log line why)."""

        async def run() -> None:
            if self._reloading:
                self._reload_again = True
                return
            self._reloading = True
            try:
                while True:
                    self._reload_again = False
                    await self._reload_once()
                    if not self._reload_again:
                        return
            finally:
                self._reloading = False

        return Deferred.fromCoroutine(run())

    async def _reload_once(self) -> None:
        assert self.config_path is not None and self.generation is not None
        for hook in self.on_reloading:
            hook()
        try:
            config = load_config(self.config_path)
            if config.state_dir != self.config.state_dir:
                raise ConfigError(f"{self.config_path}: state_dir: changing it needs a restart")
        except ConfigError as exc:
            self.log.error("config reload refused, still running on the previous config: {error}", error=str(exc))
            for done in self.on_reloaded:
                done("config reload refused: " + str(exc).splitlines()[0])
            return
        old = self.generation
        new = build_generation(self.parts, config, self)
        await _maybe_deferred(cast(Any, old.workers).disownServiceParent())
        discovery = self.parts.discovery
        kept = discovery is not None and config.discovery.enabled and discovery.config == config.discovery
        if discovery is not None and not kept:
            self.parts.discovery = None
            await _maybe_deferred(cast(Any, discovery).disownServiceParent())  # Bye for every device
        elif discovery is not None:
            await discovery.retire({target.endpoint_reference for target in new.targets})  # before their ports close
        keys = set(new.roots)
        for key in [k for k in self.listeners if k not in keys]:
            listener, _ = self.listeners.pop(key)
            await _maybe_deferred(listener.disownServiceParent())
        self.parts.events.update_cameras(config.cameras, config.events.motion_timeout)
        self.parts.authenticator.max_clock_skew = config.onvif.max_clock_skew
        self.parts.authenticator.http_basic = config.onvif.http_basic
        for device_id in [d for d in self.parts.subscriptions if d not in {p.device_id for p in new.plans}]:
            await _maybe_deferred(cast(Any, self.parts.subscriptions.pop(device_id)).disownServiceParent())
        self.install(new)
        if kept and discovery is not None:
            await discovery.update(new.targets)
        self.log.info(
            "config reloaded: {cameras} cameras, {streams} streams, {devices} ONVIF devices",
            cameras=len(config.cameras), streams=sum(len(c.streams) for c in config.cameras),
            devices=len(new.devices),
        )
        for done in self.on_reloaded:
            done("config reloaded")

    def restart_workers(self) -> Deferred[None]:
        """Restart every child except the listeners (ONVIF SystemReboot)."""

        async def restart() -> None:
            workers: list[Any] = [svc for svc in self if not getattr(svc, "is_listener", False)]
            for svc in reversed(workers):
                await _maybe_deferred(svc.stopService())
            for svc in workers:
                svc.startService()

        return Deferred.fromCoroutine(restart())


class SwitchRoot(Resource):
    """A site root that serves whatever the current generation's root serves.

    ``routes`` lists the current root's SOAP endpoints by exact path, for ``GuardedSite``
    to serve without walking the resource tree.
    """

    def __init__(self, current: Resource) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.switch(current)

    def switch(self, current: Resource) -> None:
        """Serve ``current`` from now on."""
        self.current = current
        onvif = cast(Any, current).children.get(b"onvif")
        self.routes: dict[bytes, Resource] = onvif.routes(b"/onvif/") if isinstance(onvif, OnvifResource) else {}

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        """Delegate child lookup to the current root."""
        return cast(Any, self.current).getChildWithDefault(path, request)

    def render(self, request: Any) -> Any:
        """Delegate rendering of ``/`` to the current root."""
        return cast(Any, self.current).render(request)


async def _maybe_deferred(result: Any) -> None:
    if isinstance(result, Deferred):
        await result


def _strport(bind: str, port: int) -> str:
    interface = bind.replace(":", "\\:")
    return f"tcp:{port}:interface={interface}"


_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class DevicePlan:
    """One ONVIF device: the cameras it exposes, where it listens and who it says it is."""

    device_id: str
    """Empty for the aggregate device, else the camera id (per_camera mode)."""
    cameras: tuple[CameraConfig, ...]
    identity: Identity
    bind: str
    port: int
    advertise_host: str | None
    """Host (and maybe port) for XAddrs and URIs; None means the Host header each client used."""


def plan_devices(config: Config, identity: Identity) -> list[DevicePlan]:
    """The ONVIF devices the config asks for.

    aggregate: one device on ``onvif.bind:onvif.port`` exposing every camera, with the
    relay's identity. per_camera: one device per camera on ``cameras[].onvif_port``
    (and ``onvif_bind`` if set, else ``onvif.bind``) with ``Identity.for_camera``; a
    camera bound to its own address advertises that address.
    """
    onvif = config.onvif
    if onvif.mode != "per_camera":
        return [DevicePlan("", config.cameras, identity, onvif.bind, onvif.port, onvif.advertise_host)]
    plans = []
    for camera in config.cameras:
        if camera.onvif_port is None:
            raise ConfigError(f"cameras: {camera.id!r} has no onvif_port (required when onvif.mode is per_camera)")
        bind = camera.onvif_bind or onvif.bind
        own_address = camera.onvif_bind if camera.onvif_bind and camera.onvif_bind not in _ANY_ADDRESS else None
        plans.append(
            DevicePlan(
                camera.id, (camera,), identity.for_camera(camera.id), bind, camera.onvif_port,
                own_address or onvif.advertise_host,
            )
        )
    return plans


class _Root(Resource):
    """A site root whose unknown children are a plain 404 page."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def getChild(self, path: bytes, request: Any) -> Any:
        """404 for every path no endpoint was put at."""
        return pages.notFound()


@dataclass
class Persistent:
    """What lives as long as the process, across config reloads."""

    reactor: Any
    store: StateStore
    identity: Identity
    http_client: Any
    events: EventHub
    """Motion, object and health state of every camera; webhooks and the health monitor feed it."""
    notify_client: Any
    """treq HTTPClient for push Notify requests (on guarded_agent: refused destinations stay refused)."""
    users: UserStore | None = None
    """The current generation's user store (the Authenticator looks users up here)."""
    subscriptions: dict[str, Subscriptions] = field(default_factory=dict)
    """Each device's event subscriptions by device id; kept across reloads."""
    discovery: DiscoveryService | None = None
    """WS-Discovery; kept across reloads that leave the discovery settings alone (see ``RelayService``)."""
    authenticator: Authenticator = field(init=False)
    """WS-Security / HTTP Digest checks (its replay caches survive reloads)."""

    def lookup_user(self, username: str) -> User | None:
        """The user named ``username`` in the current config and saved users."""
        return self.users.lookup(username) if self.users is not None else None


@dataclass
class Wiring:
    """The long-lived objects of one generation; what a service constructor may ask for."""

    reactor: Any
    config: Config
    store: StateStore
    users: UserStore
    authenticator: Authenticator
    http_client: Any
    cameras: dict[str, CameraClient]
    """One HTTP client per camera id, shared by every service that talks to the cameras."""
    relay: RelayService
    """Parent of what outlives a generation (event subscriptions)."""
    workers: MultiService
    """Parent for this generation's worker services: ``svc.setServiceParent(wiring.workers)``."""
    http_root: Resource
    """The site root on ``onvif.port``: the relay's own endpoints (mediamtx auth, webhooks, status)."""
    reboot: Callable[[], None]
    models: ModelRegistry
    """Each camera's model facts (PTZ or not, ranges, FOV), detected with ``model: auto``."""
    health: HealthMonitor
    """Each camera's online / degraded / offline state."""
    ptz: dict[str, PtzController]
    """The PTZ emulation engine per camera id (shared by every device)."""
    events: EventHub
    notify_client: Any
    subscriptions: dict[str, Subscriptions]
    """Each device's event subscriptions by device id (the Persistent dict)."""


@dataclass
class OnvifDevice:
    """One built ONVIF device: its plan, its Device service, every service it serves and its site root."""

    plan: DevicePlan
    device: DeviceService
    services: list[Service]
    resource: OnvifResource
    root: Resource
    """The root of the site the device is served on (``/onvif`` lives there)."""


def device_services(wiring: Wiring, plan: DevicePlan, root: Resource) -> list[Service]:
    """The services one device serves besides its Device service; add each service here, one line each.

    Every service is constructed once per device for ``plan.cameras`` (every camera in
    aggregate mode, the one camera in per_camera mode); all devices share the service
    code, the mode only decides which cameras a device exposes and where it listens.
    HTTP endpoints whose URLs a service hands out on the device's own host:port (snapshot
    URIs) are mounted on ``root``.
    """
    media: MediaModel | None = None

    def profile_camera(token: str) -> str | None:
        return media_profile_lookup(media)(token) if media is not None else None

    ptz = PtzService(wiring.reactor, plan.cameras, wiring.ptz, wiring.health.state, profile_camera=profile_camera)
    media = MediaModel(
        plan.cameras, wiring.store, wiring.config.mediamtx.rtsp_port, wiring.config.onvif.max_profiles,
        device_id=plan.device_id, ptz_configuration=ptz.ptz_configuration_element,
    )
    wiring.models.on_change.append(lambda camera_id, facts: media.invalidate() if media is not None else None)
    cameras = {camera.id: wiring.cameras[camera.id] for camera in plan.cameras}
    cast(Any, root).putChild(b"snapshot", SnapshotResource(wiring.reactor, cameras, wiring.authenticator))
    subscriptions = wiring.subscriptions.get(plan.device_id)
    if subscriptions is None:
        subscriptions = Subscriptions(wiring.reactor, wiring.events, plan.cameras, wiring.notify_client)
        cast(Any, subscriptions).setServiceParent(wiring.relay)
        wiring.subscriptions[plan.device_id] = subscriptions
    else:
        subscriptions.update_cameras(plan.cameras)
    services = [MediaService(media).service(), Media2Service(media).service()]
    if any(camera.model == "auto" or facts_for(camera.model).ptz for camera in plan.cameras):
        services.append(ptz.service())
    services.append(ImagingService(plan.cameras, cameras, wiring.health.state).service())
    services.append(EventsService(wiring.reactor, plan.cameras, wiring.events, subscriptions).service())
    return services


def build_device(wiring: Wiring, plan: DevicePlan, root: Resource) -> OnvifDevice:
    """The Device service, the other services and the ``/onvif`` resource of one device, mounted on ``root``."""
    services: list[Service] = []
    device = DeviceService(
        clock=wiring.reactor,
        config=wiring.config,
        identity=plan.identity,
        users=wiring.users,
        store=wiring.store,
        services=lambda: services,
        reboot=wiring.reboot,
        version=__version__,
        device_id=plan.device_id,
    )
    services.append(device.service())
    services.extend(device_services(wiring, plan, root))
    resource = OnvifResource(services, wiring.authenticator, plan.advertise_host, device_id=plan.device_id)
    cast(Any, root).putChild(b"onvif", resource)
    return OnvifDevice(plan, device, services, resource, root)


@dataclass
class Generation:
    """Everything one config builds: workers to start, devices, and the site root per listener."""

    config: Config
    workers: MultiService
    reconciler: Reconciler
    plans: list[DevicePlan]
    devices: list[OnvifDevice]
    roots: dict[tuple[str, int], tuple[str, Resource]]
    """(bind, port) → (listener name, site root)."""
    targets: list[Target]
    """What WS-Discovery announces: one target per device."""


def no_cookies() -> Any:
    """A cookie jar for treq that keeps no cookie.

    The relay's HTTP clients (cameras, mediamtx, event consumers) never need cookies, and
    treq's default jar keeps every cookie without an expiry date for the life of the
    process: a camera behind a login portal or an event consumer setting new cookies on
    every answer would grow it without end.
    """
    from http.cookiejar import CookieJar, DefaultCookiePolicy

    # treq annotates its own CookieJar subclass, but needs only the standard one (not every
    # treq release the relay supports has that subclass).
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def build_relay(
    config: Config,
    reactor: Any,
    http_client: Any | None = None,
    config_path: str | None = None,
    access_log: bool = False,
) -> RelayService:
    """Wire the relay for ``config`` on ``reactor`` (``config_path``: reload it on SIGHUP;
    ``access_log``: log every HTTP request).

    Children start in this order: the HTTP listeners (``onvif.port`` with the relay's own
    endpoints, then one per per-camera device), the event hub, the generation (its camera
    workers, the mediamtx reconciler), and WS-Discovery last, so that Hello goes out only
    once every SOAP port listens and Bye before any socket closes.
    """
    import treq
    from twisted.web.client import HTTPConnectionPool

    if http_client is None:
        pool = cast(Any, HTTPConnectionPool)(reactor, persistent=True)
        pool.maxPersistentPerHost = 4
        http_client = treq.client.HTTPClient(tls.agent(reactor, pool=pool), cookiejar=no_cookies())
    store = StateStore(config.state_dir)
    try:
        identity = load_identity(store)
    except StateError as exc:
        raise ConfigError(f"state_dir: {exc}") from None
    notify_pool: Any = cast(Any, HTTPConnectionPool)(reactor, persistent=True)
    notify_pool.maxPersistentPerHost = 2
    parts = Persistent(
        reactor=reactor,
        store=store,
        identity=identity,
        http_client=http_client,
        events=EventHub(reactor, config.cameras, config.events.motion_timeout),
        notify_client=treq.client.HTTPClient(guarded_agent(reactor, ConsumerPolicy(), notify_pool),
                                             cookiejar=no_cookies()),
    )
    parts.authenticator = Authenticator(
        reactor, parts.lookup_user, config.onvif.max_clock_skew, config.onvif.http_basic
    )
    relay = RelayService(reactor, parts, config_path, access_log)
    cast(Any, parts.events).setServiceParent(relay)
    relay.install(build_generation(parts, config, relay))
    return relay


def build_generation(parts: Persistent, config: Config, relay: RelayService) -> Generation:
    """Build (without starting) everything ``config`` asks for on top of the persistent parts."""
    reactor = parts.reactor
    store = parts.store
    users = UserStore(config.onvif.users, store)
    parts.users = users
    workers: Any = cast(Any, MultiService)()
    workers.setName("generation")
    mediamtx = MediamtxClient(parts.http_client, config.mediamtx, clock=reactor)
    reconciler = Reconciler(reactor, mediamtx, config, store)

    def reboot() -> None:
        reactor.callLater(1.0, relay.restart_workers)

    http_root: Any = _Root()
    mediamtx_root: Any = _Root()
    mediamtx_root.putChild(b"auth", MediamtxAuthResource(users.lookup, config.mediamtx))
    http_root.putChild(b"mediamtx", mediamtx_root)
    clients = {camera.id: CameraClient(parts.http_client, camera, clock=reactor) for camera in config.cameras}
    models = ModelRegistry(reactor, config.cameras, clients, store, retry_interval=config.health.interval)
    health = HealthMonitor(reactor, config.cameras, clients, mediamtx, RtspOptionsProbe(reactor), config.health.interval)
    events = parts.events
    health.on_change.append(lambda camera_id, old, new: events.camera_health_changed(camera_id, new.state, new.reason))
    for worker in (models, health):
        cast(Any, worker).setServiceParent(workers)
    http_root.putChild(b"status", StatusResource(reactor, parts.authenticator, config.cameras, health.state, models))
    http_root.putChild(b"webhook", WebhookResource(reactor, events))
    wiring = Wiring(
        reactor=reactor,
        config=config,
        store=store,
        users=users,
        authenticator=parts.authenticator,
        http_client=parts.http_client,
        cameras=clients,
        relay=relay,
        workers=workers,
        http_root=http_root,
        reboot=reboot,
        models=models,
        health=health,
        ptz={
            camera.id: PtzController(reactor, camera, clients[camera.id], models, store,
                                     max_presets=config.onvif.max_presets)
            for camera in config.cameras
        },
        events=events,
        notify_client=parts.notify_client,
        subscriptions=parts.subscriptions,
    )
    aggregate = config.onvif.mode != "per_camera"
    plans = plan_devices(config, parts.identity)
    devices = [build_device(wiring, plan, http_root if aggregate else _Root()) for plan in plans]
    roots: dict[tuple[str, int], tuple[str, Resource]] = {(config.onvif.bind, config.onvif.port): ("http", http_root)}
    for device in devices if not aggregate else []:
        roots[(device.plan.bind, device.plan.port)] = (f"onvif-{device.plan.device_id}", device.root)
    cast(Any, reconciler).setServiceParent(workers)
    targets = [
        Target(d.device, d.plan.identity.endpoint_reference, d.plan.port, d.plan.bind, d.plan.advertise_host)
        for d in devices
    ]
    log.info(
        "atomrelay {version}: {cameras} cameras, {streams} streams, {mode} mode with {devices} ONVIF devices, "
        "HTTP on {bind}:{port}, WS-Discovery {discovery}, mediamtx at {api}",
        version=__version__,
        cameras=len(config.cameras),
        streams=sum(len(c.streams) for c in config.cameras),
        mode=config.onvif.mode,
        devices=len(devices),
        bind=config.onvif.bind,
        port=config.onvif.port,
        discovery="on" if config.discovery.enabled else "off",
        api=config.mediamtx.api_url,
    )
    return Generation(config, workers, reconciler, plans, devices, roots, targets)


def makeService(options: usage.Options) -> IService:
    """Build the relay service from parsed ``Options`` (twistd calls this)."""
    from twisted.internet import reactor

    config = options["loaded"] if "loaded" in options else load_config(options["config"])
    relay = build_relay(config, reactor, config_path=options["config"], access_log=bool(options["access-log"]))
    listeners = [svc for svc in relay if getattr(svc, "is_listener", False)]
    notifier = SystemdNotifier(
        reactor,
        ready=lambda: [*(when_listening(svc) for svc in listeners), relay.reconciler.ready],
        status=lambda: relay_status(relay.config, relay),
    )
    relay.on_reloading.append(notifier.reloading)
    relay.on_reloaded.append(lambda outcome: notifier.reloaded())
    top: Any = cast(Any, MultiService)()
    cast(Any, relay).setServiceParent(top)
    # After the relay: READY once every listener listens and paths are registered; stops
    # first (STOPPING=1). Outside the relay so SystemReboot's restart never says STOPPING.
    cast(Any, notifier).setServiceParent(top)
    return cast(IService, top)


def relay_status(config: Config, relay: RelayService) -> str:
    """The systemd STATUS= line: what the relay serves and how much of it mediamtx has."""
    streams = sum(len(camera.streams) for camera in config.cameras)
    return (
        f"{len(config.cameras)} cameras, {streams} streams; "
        f"{len(relay.reconciler.owned_paths)} mediamtx paths registered"
    )


# --- the demo: simulated cameras and a mediamtx stand-in on loopback ---------------------------

DEMO_CAMERAS = (
    ("cam2", "ATOM Cam 2", "ATOM_CamV3C"),
    ("swing", "ATOM Cam Swing", "ATOM_CAKP1JZJP"),
    ("wyze", "Wyze Cam v3", "WYZE_CAKP2JFUS"),
)


class DemoService(MultiService):
    """Simulated cameras + mediamtx stand-in (or a real mediamtx) + the relay, all on 127.0.0.1."""

    log = Logger()

    def __init__(self, reactor: Any, port: int = 8080, state_dir: Path | None = None) -> None:
        cast(Any, MultiService).__init__(self)
        self.reactor = reactor
        self.port = port
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="atomrelay-demo-"))
        self.relay: RelayService | None = None
        self._ports: list[Any] = []
        self._mediamtx_process: Any = None

    def startService(self) -> None:
        """Start the simulators, then build and start the relay pointing at them."""
        from atomrelay.sim.camera import SimulatedCamera, listen_camera
        from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx

        cast(Any, MultiService).startService(self)
        cameras = []
        for index, (cam_id, name, model) in enumerate(DEMO_CAMERAS):
            camera = SimulatedCamera(self.reactor, model, hostname=cam_id, hwaddr=f"02:00:00:00:00:{index + 1:02x}")
            port: Any = listen_camera(self.reactor, camera)
            self._ports.append(port)
            cameras.append((cam_id, name, model, int(port.getHost().port)))
        api_port = self._start_mediamtx(FakeMediamtx, listen_mediamtx)
        config = demo_config(self.port, api_port, cameras, self.state_dir)
        self.relay = build_relay(config, self.reactor)
        cast(Any, self.relay).setServiceParent(self)
        print_demo_banner(config, cameras)

    def _start_mediamtx(self, fake_cls: Any, listen: Any) -> int:
        binary = shutil.which("mediamtx")
        if binary is None:
            fake = fake_cls(self.reactor)
            port = listen(self.reactor, fake)
            self._ports.append(port)
            self.log.info("demo: mediamtx API stand-in (a test double) on 127.0.0.1:{port}", port=port.getHost().port)
            return int(port.getHost().port)
        return self._spawn_mediamtx(binary)

    def _spawn_mediamtx(self, binary: str) -> int:
        from twisted.internet.protocol import ProcessProtocol

        api_port = 9997
        conf = self.state_dir / "mediamtx.yml"
        conf.write_text(
            "logLevel: info\napi: yes\napiAddress: 127.0.0.1:9997\nrtspAddress: 127.0.0.1:8554\n"
            "rtspTransports: [tcp]\nsrt: yes\nsrtAddress: 127.0.0.1:8890\nrtmp: no\nhls: no\nwebrtc: no\n"
            "readTimeout: 15m\nwriteQueueSize: 4096\npaths: {}\n",
            encoding="utf-8",
        )
        self._mediamtx_process = self.reactor.spawnProcess(
            ProcessProtocol(), binary, [binary, str(conf)], env=dict(os.environ)
        )
        self.log.info("demo: started the real mediamtx at {binary}", binary=binary)
        return api_port

    def stopService(self) -> Deferred[None]:
        """Stop the relay, then the simulators."""

        async def stop() -> None:
            await _maybe_deferred(cast(Any, MultiService).stopService(self))
            for port in self._ports:
                await _maybe_deferred(port.stopListening())
            if self._mediamtx_process is not None:
                try:
                    self._mediamtx_process.signalProcess("TERM")
                except Exception:  # noqa: BLE001 - already gone
                    pass

        return Deferred.fromCoroutine(stop())


def demo_config(port: int, api_port: int, cameras: list[tuple[str, str, str, int]], state_dir: Path) -> Config:
    """The demo's configuration: admin/admin, loopback only, one or two streams per camera."""
    lines = [
        "onvif:",
        "  bind: 127.0.0.1",
        f"  port: {port}",
        "  device: {manufacturer: atomrelay, model: ATOM Cam relay (demo), name: atomrelay-demo}",
        "  users:",
        "    - {username: admin, password: admin, role: Administrator}",
        "discovery: {enabled: false}",
        "mediamtx:",
        f"  api_url: http://127.0.0.1:{api_port}",
        "  wait_timeout: 10s",
        f"state_dir: {state_dir}",
        "cameras:",
    ]
    for cam_id, name, model, http_port in cameras:
        lines += [
            f"  - id: {cam_id}",
            f"    name: {name}",
            "    host: 127.0.0.1",
            f"    http_port: {http_port}",
            f"    model: {model}",
            "    streams:",
            "      - {name: main, rtsp_path: video0_unicast, codec: h264, audio: transcode}",
            "      - {name: sub, rtsp_path: video1_unicast, codec: h265, audio: transcode, width: 640, height: 360}",
        ]
    from atomrelay.config import parse_config

    return parse_config("\n".join(lines) + "\n", "<demo>")


def print_demo_banner(config: Config, cameras: list[tuple[str, str, str, int]]) -> None:
    """Tell the user what to point an ONVIF client at."""
    port = config.onvif.port
    text = [
        "",
        "atomrelay demo is running (everything on 127.0.0.1; Ctrl-C stops it)",
        f"  ONVIF device service: http://127.0.0.1:{port}/onvif/device_service",
        "  user: admin   password: admin",
        f"  mediamtx API: {config.mediamtx.api_url}",
        "  simulated cameras:",
    ]
    for cam_id, name, model, http_port in cameras:
        text.append(f"    {cam_id:6} {name:16} {model:16} http://127.0.0.1:{http_port}/cgi-bin/cmd.cgi?name=status")
    text += [
        "  try: onvif-cli / ONVIF Device Manager, or",
        f"    curl -s -H 'Content-Type: application/soap+xml' --data "
        f"'<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body>"
        f"<GetSystemDateAndTime xmlns=\"http://www.onvif.org/ver10/device/wsdl\"/></s:Body></s:Envelope>' "
        f"http://127.0.0.1:{port}/onvif/device_service",
        "",
    ]
    print("\n".join(text), flush=True)


def make_demo_service(reactor: Any, port: int = 8080) -> DemoService:
    """The demo service (``atomrelay demo``)."""
    return DemoService(reactor, port)

