"""twistd entry: ``Options`` and ``makeService``, the only composition root.

Nothing else in the package creates long-lived objects or touches the global reactor;
every class gets its reactor, clock and HTTP client from here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, cast

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage
from twisted.web import pages
from twisted.web.resource import Resource
from twisted.web.server import Site

from atomrelay import __version__
from atomrelay.camera.client import CameraClient
from atomrelay.camera.health import HealthMonitor, RtspOptionsProbe
from atomrelay.camera.model import ModelRegistry, facts_for
from atomrelay.camera.ptz import PtzController
from atomrelay.camera.snapshot import SnapshotResource
from atomrelay.camera.status import StatusResource
from atomrelay.config import CameraConfig, Config, ConfigError, load_config
from atomrelay.discovery.responder import Target
from atomrelay.discovery.service import DiscoveryService
from atomrelay.events.service import EventsService
from atomrelay.events.state import EventHub
from atomrelay.events.subscriptions import ConsumerPolicy, Subscriptions, guarded_agent
from atomrelay.events.webhook import WebhookResource, access_log_formatter
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
from atomrelay.systemd import SystemdNotifier, when_listening

log = Logger(namespace="atomrelay.tap")


class Options(usage.Options):
    """Command-line options of ``twistd atomrelay`` and ``atomrelay run``."""

    synopsis = "-c CONFIG"
    optParameters = [
        ["config", "c", "/etc/atomrelay/config.yaml", "Path to the YAML configuration file."],
    ]

    def postOptions(self) -> None:
        """Load and validate the config now so that twistd refuses to start on errors."""
        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as exc:
            raise usage.UsageError(str(exc)) from None


class RelayService(MultiService):
    """The running relay: its HTTP/SOAP listeners, the mediamtx reconciler, WS-Discovery and friends.

    ``devices`` lists the ONVIF devices it serves (one in aggregate mode, one per camera
    in per_camera mode).
    """

    def __init__(self, reconciler: Reconciler) -> None:
        cast(Any, MultiService).__init__(self)
        self.reconciler = reconciler
        self.devices: list[OnvifDevice] = []

    def restart_workers(self) -> Deferred[None]:
        """Restart every child except the listeners (ONVIF SystemReboot)."""

        async def restart() -> None:
            workers: list[Any] = [svc for svc in self if not getattr(svc, "is_listener", False)]
            for svc in reversed(workers):
                await _maybe_deferred(svc.stopService())
            for svc in workers:
                svc.startService()

        return Deferred.fromCoroutine(restart())


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
class Wiring:
    """The long-lived objects shared by every device; what a service constructor may ask for."""

    reactor: Any
    config: Config
    store: StateStore
    users: UserStore
    authenticator: Authenticator
    http_client: Any
    cameras: dict[str, CameraClient]
    """One HTTP client per camera id, shared by every service that talks to the cameras."""
    relay: RelayService
    """Parent for worker services (health monitors, event buses): ``svc.setServiceParent(wiring.relay)``."""
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
    """Motion, object and health state of every camera; webhooks and the health monitor feed it."""
    notify_client: Any
    """treq HTTPClient for push Notify requests (on guarded_agent: refused destinations stay refused)."""
    subscriptions: dict[str, Subscriptions] = field(default_factory=dict)
    """Each device's event subscriptions by device id."""


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


def _listen(wiring: Wiring, root: Resource, bind: str, port: int, name: str) -> None:
    site: Any = cast(Any, Site)(root, requestFactory=BoundedRequest, logFormatter=access_log_formatter)
    site.displayTracebacks = False
    listener: Any = strports.service(_strport(bind, port), site, reactor=wiring.reactor)
    listener.is_listener = True
    listener.setName(name)
    listener.setServiceParent(wiring.relay)


def build_relay(config: Config, reactor: Any, http_client: Any | None = None) -> RelayService:
    """Wire the relay for ``config`` on ``reactor``.

    Children start in this order: worker services the device builders add, the HTTP
    listeners (``onvif.port`` with the relay's own endpoints, then one per per-camera
    device), the mediamtx reconciler, and WS-Discovery last, so that Hello goes out
    only once every SOAP port listens and Bye before any socket closes.
    """
    import treq
    from twisted.web.client import Agent, HTTPConnectionPool

    if http_client is None:
        pool = cast(Any, HTTPConnectionPool)(reactor, persistent=True)
        pool.maxPersistentPerHost = 4
        http_client = treq.client.HTTPClient(cast(Any, Agent)(reactor, pool=pool))
    store = StateStore(config.state_dir)
    try:
        identity = load_identity(store)
    except StateError as exc:
        raise ConfigError(f"state_dir: {exc}") from None
    users = UserStore(config.onvif.users, store)
    mediamtx = MediamtxClient(http_client, config.mediamtx, clock=reactor)
    reconciler = Reconciler(reactor, mediamtx, config, store)
    relay = RelayService(reconciler)

    def reboot() -> None:
        reactor.callLater(1.0, relay.restart_workers)

    http_root: Any = _Root()
    mediamtx_root: Any = _Root()
    mediamtx_root.putChild(b"auth", MediamtxAuthResource(users.lookup, config.mediamtx))
    http_root.putChild(b"mediamtx", mediamtx_root)
    authenticator = Authenticator(reactor, users.lookup, config.onvif.max_clock_skew, config.onvif.http_basic)
    clients = {camera.id: CameraClient(http_client, camera, clock=reactor) for camera in config.cameras}
    models = ModelRegistry(reactor, config.cameras, clients, store, retry_interval=config.health.interval)
    health = HealthMonitor(reactor, config.cameras, clients, mediamtx, RtspOptionsProbe(reactor), config.health.interval)
    events = EventHub(reactor, config.cameras, config.events.motion_timeout)
    health.on_change.append(lambda camera_id, old, new: events.camera_health_changed(camera_id, new.state, new.reason))
    for worker in (models, health, events):
        cast(Any, worker).setServiceParent(relay)
    http_root.putChild(b"status", StatusResource(reactor, authenticator, config.cameras, health.state, models))
    http_root.putChild(b"webhook", WebhookResource(reactor, events))
    notify_pool: Any = cast(Any, HTTPConnectionPool)(reactor, persistent=True)
    notify_pool.maxPersistentPerHost = 2
    wiring = Wiring(
        reactor=reactor,
        config=config,
        store=store,
        users=users,
        authenticator=authenticator,
        http_client=http_client,
        cameras=clients,
        relay=relay,
        http_root=http_root,
        reboot=reboot,
        models=models,
        health=health,
        ptz={camera.id: PtzController(reactor, camera, clients[camera.id], models, store) for camera in config.cameras},
        events=events,
        notify_client=treq.client.HTTPClient(guarded_agent(reactor, ConsumerPolicy(), notify_pool)),
    )
    aggregate = config.onvif.mode != "per_camera"
    relay.devices = [
        build_device(wiring, plan, http_root if aggregate else _Root()) for plan in plan_devices(config, identity)
    ]
    _listen(wiring, http_root, config.onvif.bind, config.onvif.port, "http")
    for device in relay.devices if not aggregate else []:
        _listen(wiring, device.root, device.plan.bind, device.plan.port, f"onvif-{device.plan.device_id}")
        log.info(
            "ONVIF device {device_id} on {bind}:{port}", device_id=device.plan.device_id, bind=device.plan.bind,
            port=device.plan.port,
        )
    cast(Any, reconciler).setServiceParent(relay)
    if config.discovery.enabled:
        discovery = DiscoveryService(
            reactor,
            config.discovery,
            [
                Target(d.device, d.plan.identity.endpoint_reference, d.plan.port, d.plan.bind, d.plan.advertise_host)
                for d in relay.devices
            ],
            store,
        )
        cast(Any, discovery).setName("discovery")
        cast(Any, discovery).setServiceParent(relay)
    log.info(
        "atomrelay {version}: {cameras} cameras, {streams} streams, {mode} mode with {devices} ONVIF devices, "
        "HTTP on {bind}:{port}, WS-Discovery {discovery}, mediamtx at {api}",
        version=__version__,
        cameras=len(config.cameras),
        streams=sum(len(c.streams) for c in config.cameras),
        mode=config.onvif.mode,
        devices=len(relay.devices),
        bind=config.onvif.bind,
        port=config.onvif.port,
        discovery="on" if config.discovery.enabled else "off",
        api=config.mediamtx.api_url,
    )
    return relay


def makeService(options: usage.Options) -> IService:
    """Build the relay service from parsed ``Options`` (twistd calls this)."""
    from twisted.internet import reactor

    config = options["loaded"] if "loaded" in options else load_config(options["config"])
    relay = build_relay(config, reactor)
    listeners = [svc for svc in relay if getattr(svc, "is_listener", False)]
    notifier = SystemdNotifier(
        reactor,
        ready=lambda: [*(when_listening(svc) for svc in listeners), relay.reconciler.ready],
        status=lambda: relay_status(config, relay),
    )
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

