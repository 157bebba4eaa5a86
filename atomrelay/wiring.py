"""The one place that builds parts: plan the ONVIF devices, build a generation from a config, build the relay.

Nothing else in the package creates long-lived objects; every class gets its reactor,
clock and HTTP client from here.
"""

from __future__ import annotations

from atomrelay import tls

# Before the imports below load Twisted's networking: without pyOpenSSL (see atomrelay.tls).
tls.import_twisted_without_tls()

import time
from dataclasses import dataclass, field
from typing import Any, Callable, cast
from urllib.parse import urlsplit

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.web import pages
from twisted.web.resource import Resource

from atomrelay import __version__
from atomrelay.auth.security import Authenticator
from atomrelay.auth.users import UserStore
from atomrelay.camera.client import CameraClient
from atomrelay.camera.health import HealthMonitor, RtspOptionsProbe
from atomrelay.camera.model import ModelRegistry, facts_for
from atomrelay.camera.ptz import PtzController, PtzControllers
from atomrelay.config import CameraConfig, Config, ConfigError, User
from atomrelay.discovery.responder import Target
from atomrelay.discovery.service import DiscoveryService
from atomrelay.events.consumers import NotifyClient, notify_client
from atomrelay.events.records import saved_state_name
from atomrelay.events.service import EventsService
from atomrelay.events.state import EventHub
from atomrelay.events.subscriptions import Subscriptions
from atomrelay.identity import Identity, load_identity
from atomrelay.mediamtx.client import MediamtxClient
from atomrelay.mediamtx.reconciler import Reconciler
from atomrelay.metrics import Registry
from atomrelay.net import ClosePools, connection_pool
from atomrelay.onvif.base import Service
from atomrelay.onvif.device import DeviceService
from atomrelay.onvif.elsewhere import DeviceAddress, DevicesElsewhere
from atomrelay.onvif.imaging import ImagingService
from atomrelay.onvif.media import MediaService
from atomrelay.onvif.media2 import Media2Service
from atomrelay.onvif.media_model import MediaModel
from atomrelay.onvif.ptz import PtzService, media_profile_lookup
from atomrelay.onvif.server import OnvifResource
from atomrelay.relay import RelayService
from atomrelay.state import StateError, StateStore
from atomrelay.web.dashboard import DashboardResource, assets
from atomrelay.web.limits import BoundedRequest, ConnectionLimits, GuardedSite
from atomrelay.web.mediamtx_auth import MediamtxAuthResource
from atomrelay.web.metrics import MetricsResource, RelayGauges, listener_sites
from atomrelay.web.report import Device, StatusReport
from atomrelay.web.snapshot import SnapshotResource
from atomrelay.web.status import StatusResource
from atomrelay.web.webhook import WebhookResource, access_log_formatter

log = Logger(namespace="atomrelay.wiring")


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
    notify_client: NotifyClient
    """Checks push consumer addresses and sends Notify requests (to allowed addresses only)."""
    users: UserStore | None = None
    """The current generation's user store (the Authenticator looks users up here)."""
    subscriptions: dict[str, Subscriptions] = field(default_factory=dict)
    """Each device's event subscriptions by device id; kept across reloads."""
    discovery: DiscoveryService | None = None
    """WS-Discovery; kept across reloads that leave the discovery settings alone (see ``RelayService``)."""
    authenticator: Authenticator = field(init=False)
    """WS-Security / HTTP Digest checks (its replay caches survive reloads)."""
    metrics: Registry = field(default_factory=Registry)
    """The counters of ``/metrics`` (they survive reloads)."""
    started: float = 0.0
    """When the relay was built (reactor seconds), for its uptime."""

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
    snapshots: SnapshotResource
    """The snapshot proxy, mounted on every device's site and the relay's: one image cache and one fetch in flight
    per camera, however many ports serve it."""
    events: EventHub
    notify_client: Any
    subscriptions: dict[str, Subscriptions]
    """Each device's event subscriptions by device id (the Persistent dict; read-only while building)."""
    on_install: list[Callable[[], None]]
    """What to change in the persistent parts once the generation is installed (never while building:
    a reload that fails must leave the running generation as it was)."""
    metrics: Registry
    """The process-wide metrics registry (the Persistent one)."""


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

    def use_count(token: str) -> int:
        return media.use_counts()[token] if media is not None else 0

    ptz = PtzService(wiring.reactor, plan.cameras, wiring.ptz, wiring.health.state, profile_camera=profile_camera,
                     use_count=use_count)
    media = MediaModel(
        plan.cameras, wiring.store, wiring.config.mediamtx.rtsp_port, wiring.config.onvif.max_profiles,
        device_id=plan.device_id, ptz_configuration=ptz.ptz_configuration_element,
    )
    wiring.models.on_change.append(lambda camera_id, facts: media.invalidate() if media is not None else None)
    cameras = {camera.id: wiring.cameras[camera.id] for camera in plan.cameras}
    cast(Any, root).putChild(b"snapshot", wiring.snapshots)
    subscriptions = wiring.subscriptions.get(plan.device_id)
    if subscriptions is None:
        subscriptions = Subscriptions(wiring.reactor, wiring.events, plan.cameras, wiring.notify_client,
                                      store=wiring.store, state_name=saved_state_name(plan.device_id),
                                      metrics=wiring.metrics)
        wiring.on_install.append(lambda: adopt_subscriptions(wiring, plan.device_id, subscriptions))
    else:
        existing = subscriptions
        wiring.on_install.append(lambda: existing.update_cameras(plan.cameras))
    services = [MediaService(media).service(), Media2Service(media).service()]
    if any(camera.model == "auto" or facts_for(camera.model).ptz for camera in plan.cameras):
        services.append(ptz.service())
    services.append(ImagingService(plan.cameras, cameras, wiring.health.state).service())
    services.append(EventsService(wiring.reactor, plan.cameras, wiring.events, subscriptions).service())
    return services


def adopt_subscriptions(wiring: Wiring, device_id: str, subscriptions: Subscriptions) -> None:
    """Keep a new device's event subscriptions across generations and start them (once installed)."""
    cast(Any, subscriptions).setServiceParent(wiring.relay)
    wiring.subscriptions[device_id] = subscriptions


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
    resource = OnvifResource(services, wiring.authenticator, plan.advertise_host, device_id=plan.device_id,
                             metrics=wiring.metrics)
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
    on_install: list[Callable[[], None]]
    """See ``Wiring.on_install``."""


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


def mediamtx_host(config: Config) -> str:
    """The host of mediamtx's Control API (push consumers may never reach it)."""
    return urlsplit(config.mediamtx.api_url).hostname or ""


def camera_http_client(reactor: Any, pool: Any = None) -> Any:
    """The treq client the relay talks to cameras and mediamtx with (on ``pool``, by default a new persistent one
    keeping 4 idle connections per host; no cookies)."""
    import treq

    if pool is None:
        pool = connection_pool(reactor, per_host=4)
    return treq.client.HTTPClient(tls.agent(reactor, pool=pool), cookiejar=no_cookies())


def build_relay(
    config: Config,
    reactor: Any,
    http_client: Any | None = None,
    config_path: str | None = None,
    access_log: bool = False,
) -> RelayService:
    """Wire the relay for ``config`` on ``reactor`` (``config_path``: reload it on SIGHUP;
    ``access_log``: log every HTTP request).

    Children start in this order (and stop in the reverse one): the HTTP client pools' closer
    (so their idle connections close last), the event hub, the HTTP listeners (``onvif.port``
    with the relay's own endpoints, then one per per-camera device), each device's event
    subscriptions, the generation (its camera workers, the mediamtx reconciler), and
    WS-Discovery last, so that Hello goes out only once every SOAP port listens and Bye before
    any socket closes.
    """
    from twisted.internet.threads import deferToThreadPool

    notify_pool = connection_pool(reactor, per_host=2)
    pools = [notify_pool]
    if http_client is None:
        pools.append(connection_pool(reactor, per_host=4))
        http_client = camera_http_client(reactor, pools[-1])
    store = StateStore(config.state_dir, run=lambda write: deferToThreadPool(reactor, reactor.getThreadPool(), write))
    store.remove_leftovers(time.time())
    try:
        identity = load_identity(store)
    except StateError as exc:
        raise ConfigError(
            f"state_dir: {exc} (the relay's user must be able to read and write {config.state_dir})") from None
    metrics = Registry()
    events = EventHub(reactor, config.cameras, config.events.motion_timeout, metrics)
    parts = Persistent(
        reactor=reactor,
        store=store,
        identity=identity,
        http_client=http_client,
        events=events,
        notify_client=notify_client(
            reactor, lambda: [*events.camera_hosts(), mediamtx_host(relay.config)], notify_pool
        ),
        metrics=metrics,
        started=reactor.seconds(),
    )
    parts.authenticator = Authenticator(
        reactor, parts.lookup_user, config.onvif.max_clock_skew, config.onvif.http_basic,
        allow_password_text=config.onvif.allow_password_text,
    )
    relay = RelayService(reactor, parts, RelayBuilder(parts, access_log), config_path)
    cast(Any, ClosePools(reactor, pools)).setServiceParent(relay)  # the first child: it stops last
    cast(Any, parts.events).setServiceParent(relay)
    relay.install(build_generation(parts, config, relay))
    return relay


def build_generation(parts: Persistent, config: Config, relay: RelayService) -> Generation:
    """Build (without starting) everything ``config`` asks for on top of the persistent parts."""
    reactor = parts.reactor
    store = parts.store
    users = UserStore(config.onvif.users, store)
    on_install: list[Callable[[], None]] = []

    def use_users() -> None:
        parts.users = users

    on_install.append(use_users)
    workers: Any = cast(Any, MultiService)()
    workers.setName("generation")
    mediamtx = MediamtxClient(parts.http_client, config.mediamtx, clock=reactor, metrics=parts.metrics)
    reconciler = Reconciler(reactor, mediamtx, config, store, metrics=parts.metrics)

    def reboot() -> None:
        relay.restart_workers_soon(1.0)

    http_root: Any = _Root()
    mediamtx_root: Any = _Root()
    mediamtx_root.putChild(b"auth", MediamtxAuthResource(users.lookup, config.mediamtx))
    http_root.putChild(b"mediamtx", mediamtx_root)
    clients = {camera.id: CameraClient(parts.http_client, camera, clock=reactor) for camera in config.cameras}
    models = ModelRegistry(reactor, config.cameras, clients, store, retry_interval=config.health.interval)
    health = HealthMonitor(reactor, config.cameras, clients, mediamtx, RtspOptionsProbe(reactor), config.health.interval,
                           paths_registered=lambda: reconciler.ready.called, metrics=parts.metrics)
    events = parts.events
    health.on_change.append(lambda camera_id, old, new: events.camera_health_changed(camera_id, new.state, new.reason))
    ptz = PtzControllers({
        camera.id: PtzController(reactor, camera, clients[camera.id], models, store,
                                 max_presets=config.onvif.max_presets)
        for camera in config.cameras
    })
    for worker in (models, health, ptz):
        cast(Any, worker).setServiceParent(workers)
    http_root.putChild(b"webhook", WebhookResource(reactor, events))
    snapshots = SnapshotResource(reactor, clients, parts.authenticator, metrics=parts.metrics)
    http_root.putChild(b"snapshot", snapshots)  # the dashboard's thumbnails, also in per_camera mode
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
        ptz=ptz.controllers,
        snapshots=snapshots,
        events=events,
        notify_client=parts.notify_client,
        subscriptions=parts.subscriptions,
        on_install=on_install,
        metrics=parts.metrics,
    )
    aggregate = config.onvif.mode != "per_camera"
    plans = plan_devices(config, parts.identity)
    devices = [build_device(wiring, plan, http_root if aggregate else _Root()) for plan in plans]
    report = StatusReport(
        reactor, config, health.state, models, events, mediamtx, reconciler, parts.subscriptions,
        [Device(plan.device_id, plan.port, plan.advertise_host) for plan in plans], parts.started, __version__,
    )
    http_root.putChild(b"", DashboardResource(parts.authenticator, report))
    http_root.putChild(b"assets", assets())
    http_root.putChild(b"status", StatusResource(parts.authenticator, report.document))
    gauges = RelayGauges(reactor, parts.metrics, health.states, parts.subscriptions,
                         lambda: listener_sites(relay.listeners), parts.started, __version__,
                         lambda: parts.authenticator.replay_memory_size)
    http_root.putChild(b"metrics", MetricsResource(parts.authenticator, parts.metrics, gauges,
                                                   public=config.http.metrics_public))
    roots: dict[tuple[str, int], tuple[str, Resource]] = {(config.onvif.bind, config.onvif.port): ("http", http_root)}
    for device in devices if not aggregate else []:
        roots[(device.plan.bind, device.plan.port)] = (f"onvif-{device.plan.device_id}", device.root)
    if not aggregate:
        http_root.putChild(b"onvif", DevicesElsewhere(
            [DeviceAddress(p.device_id, p.port, p.advertise_host) for p in plans]))
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
    return Generation(config, workers, reconciler, plans, devices, roots, targets, on_install)


@dataclass
class RelayBuilder:
    """``relay.Builder`` for the relay: generations, sites and WS-Discovery on the persistent parts."""

    parts: Persistent
    access_log: bool = False
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    """The connection caps, shared by every listener (per_camera mode has one per camera)."""

    def generation(self, config: Config, relay: RelayService) -> Generation:
        """See ``build_generation``."""
        return build_generation(self.parts, config, relay)

    def site(self, root: Resource) -> Any:
        """A guarded site (HTTP limits, the access log that hides webhook tokens) serving ``root``."""
        site: Any = GuardedSite(
            root, requestFactory=BoundedRequest, logFormatter=access_log_formatter(self.parts.events),
            access_log=self.access_log, limits=self.limits,
        )
        site.displayTracebacks = False
        return site

    def discovery(self, config: Config, targets: list[Target]) -> DiscoveryService:
        """WS-Discovery with ``config.discovery``, announcing ``targets``."""
        return DiscoveryService(self.parts.reactor, config.discovery, targets, self.parts.store)
