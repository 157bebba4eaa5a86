"""The running relay: its listeners, the generation built from the config, and the all-or-nothing reload.

``RelayService`` owns what lives as long as the process (the HTTP listeners, the
persistent parts) and swaps generations on SIGHUP; ``wiring`` builds what it serves.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any, Callable, Protocol, cast

from twisted.application import service
from twisted.application.service import MultiService
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, FirstError, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from atomrelay.config import Config, ConfigError, load_config
from atomrelay.mediamtx.reconciler import Reconciler
from atomrelay.net import ClosePools
from atomrelay.onvif.server import OnvifResource

if TYPE_CHECKING:
    from atomrelay.discovery.responder import Target
    from atomrelay.discovery.service import DiscoveryService
    from atomrelay.wiring import Generation, OnvifDevice, Persistent


class Builder(Protocol):
    """What the relay asks ``wiring`` to build: a generation, a listener's site, WS-Discovery."""

    def generation(self, config: Config, relay: RelayService) -> Generation:
        """Everything ``config`` asks for (built, not started; no change to the running relay)."""

    def site(self, root: Resource) -> Any:
        """The HTTP site a listener serves ``root`` with."""

    def discovery(self, config: Config, targets: list[Target]) -> DiscoveryService:
        """WS-Discovery for ``targets``."""


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

    def __init__(self, reactor: Any, parts: Persistent, builder: Builder, config_path: str | None = None) -> None:
        cast(Any, MultiService).__init__(self)
        self.reactor = reactor
        self.parts = parts
        self.builder = builder
        self.config_path = config_path
        self.listeners: dict[tuple[str, int], tuple[Any, SwitchRoot]] = {}
        self.generation: Generation | None = None
        self.on_reloading: list[Callable[[], None]] = []
        self.on_reloaded: list[Callable[[str], None]] = []
        self.reload_outcome = ""
        """What the last reload did ("config reloaded", "config reload refused: ...", "config reload failed: ...")."""
        self._reloading = False
        self._reload_again = False
        self._previous_handler: Any = None
        self._restart: Any = None
        """The pending call of ``restart_workers_soon``."""
        self._restarting: Deferred[None] | None = None
        """The restart under way (``restart_workers``), until it is done."""

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

    def listeners_for(self, generation: Generation) -> dict[tuple[str, int], tuple[Listener, SwitchRoot]]:
        """New (unbound, unstarted) listeners for the addresses of ``generation`` that nothing listens on yet."""
        fresh: dict[tuple[str, int], tuple[Listener, SwitchRoot]] = {}
        for key, (name, root) in generation.roots.items():
            if key in self.listeners:
                continue
            switch = SwitchRoot(root)
            listener = Listener(self.reactor, key[0], key[1], self.builder.site(switch))
            cast(Any, listener).setName(name)
            fresh[key] = (listener, switch)
        return fresh

    def install(
        self, generation: Generation, fresh: dict[tuple[str, int], tuple[Listener, SwitchRoot]] | None = None
    ) -> None:
        """Make ``generation`` the served one (``serve``), then add its workers (``start_workers``)."""
        self.serve(generation, fresh)
        self.start_workers(generation)

    def serve(
        self, generation: Generation, fresh: dict[tuple[str, int], tuple[Listener, SwitchRoot]] | None = None
    ) -> None:
        """Answer requests from ``generation``'s resources: listeners first (``fresh`` ones may be bound
        already), then the persistent parts it changes (``on_install``); synchronous, so no request
        falls between the two generations."""
        for key, (name, root) in generation.roots.items():
            if key in self.listeners:
                self.listeners[key][1].switch(root)
        for key, (listener, switch) in (self.listeners_for(generation) if fresh is None else fresh).items():
            cast(Any, listener).setServiceParent(self)
            self.listeners[key] = (listener, switch)
        self.generation = generation
        for action in generation.on_install:
            action()

    def start_workers(self, generation: Generation) -> None:
        """Add ``generation``'s workers (started if the relay runs), and keep WS-Discovery the last child."""
        cast(Any, generation.workers).setServiceParent(self)
        discovery = self.parts.discovery
        if discovery is None and generation.config.discovery.enabled:
            discovery = self.parts.discovery = self.builder.discovery(generation.config, generation.targets)
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
        """Stop everything (Bye, reconciler, listeners), restore the SIGHUP handler, and fire once every save
        is on the disk."""
        if self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._previous_handler = None
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        stopped = cast(Deferred[None], cast(Any, MultiService).stopService(self))
        # What was answered before the stop (a Subscribe saved in the background) is on the disk before the exit.
        return stopped.addCallback(lambda _: self.parts.store.flushed())

    def _on_sighup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(lambda: self.reload().addErrback(self.log_failure, "config reload"))

    def log_failure(self, failure: Failure, what: str) -> None:
        """Errback for work nobody waits for: log what failed, with its traceback."""
        self.log.failure("{what} failed", failure, what=what)

    def reload(self) -> Deferred[None]:
        """Re-read the config file and apply it, all or nothing: anything that fails leaves the relay
        serving the previous config (one log line why), and systemd hears READY either way."""

        async def run() -> None:
            if self._reloading:
                self._reload_again = True
                return
            self._reloading = True
            try:
                while True:
                    self._reload_again = False
                    for hook in self.on_reloading:
                        hook()
                    try:
                        outcome = await self._reload_once()
                    except Exception as exc:  # noqa: BLE001 - a bug: say so, and systemd still hears READY
                        self.log.failure("config reload failed, still running on the previous config")
                        outcome = f"config reload failed: {type(exc).__name__}: {exc}"
                    self.reload_outcome = outcome
                    for done in self.on_reloaded:
                        done(outcome)
                    if not self._reload_again:
                        return
            finally:
                self._reloading = False

        return Deferred.fromCoroutine(run())

    async def _reload_once(self) -> str:
        """Apply the config file once; the outcome for systemd's STATUS line."""
        assert self.config_path is not None and self.generation is not None
        try:
            config = load_config(self.config_path)
            if config.state_dir != self.config.state_dir:
                raise ConfigError(f"{self.config_path}: state_dir: changing it needs a restart")
        except ConfigError as exc:
            self.log.error("config reload refused, still running on the previous config: {error}", error=str(exc))
            return "config reload refused: " + str(exc).splitlines()[0]
        fresh: dict[tuple[str, int], tuple[Listener, SwitchRoot]] = {}
        # The running generation's changes under way (a SetPreset reading the camera's position) end and are on
        # disk before the new one reads them; changes asked for from now on wait until the new generation serves
        # (``StateStore.pause_changes``). From the build to serve() nothing yields to the reactor while requests
        # could come in (binding a TCP port answers at once), so no change falls between the two generations.
        store = self.parts.store
        try:
            await store.pause_changes()
            try:
                new = self.builder.generation(config, self)
                fresh = self.listeners_for(new)
                await gatherResults([listener.bind() for listener, _ in fresh.values()], consumeErrors=True)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the running generation stays
                error = exc.subFailure.value if isinstance(exc, FirstError) else exc
                for listener, _ in fresh.values():
                    await listener.stopService()
                self.log.error("config reload failed, still running on the previous config: {error}",
                               error=f"{type(error).__name__}: {error}" if not isinstance(error, OSError)
                               else str(error))
                return f"config reload failed: {error}"
            try:
                await self._switch(new, fresh)
            except Exception as exc:  # noqa: BLE001 - a bug past the point of no return: say so, keep serving
                self.log.failure("config reload failed while switching to the new config")
                return f"config reload failed while switching: {type(exc).__name__}: {exc}"
        finally:
            store.resume_changes(retire=False)  # the reload failed before serving the new generation (else a no-op)
        self.log.info(
            "config reloaded: {cameras} cameras, {streams} streams, {devices} ONVIF devices",
            cameras=len(config.cameras), streams=sum(len(c.streams) for c in config.cameras),
            devices=len(new.devices),
        )
        return "config reloaded"

    async def _switch(self, new: Generation, fresh: dict[tuple[str, int], tuple[Listener, SwitchRoot]]) -> None:
        """Serve ``new`` (built, its new sockets bound), then retire the old generation's workers, WS-Discovery
        announcements and listeners, and start the new workers."""
        config = new.config
        old = self.generation
        assert old is not None
        self.parts.events.update_cameras(config.cameras, config.events.motion_timeout)
        self.parts.authenticator.max_clock_skew = config.onvif.max_clock_skew
        self.parts.authenticator.http_basic = config.onvif.http_basic
        self.parts.authenticator.allow_password_text = config.onvif.allow_password_text
        try:
            self.serve(new, fresh)
        finally:
            self.parts.store.resume_changes(retire=self.generation is new)
        await finished(cast(Any, old.workers).disownServiceParent())
        discovery = self.parts.discovery
        kept = discovery is not None and config.discovery.enabled and discovery.config == config.discovery
        if discovery is not None and not kept:
            self.parts.discovery = None
            await finished(cast(Any, discovery).disownServiceParent())  # Bye for every device
        elif discovery is not None:
            await discovery.retire({target.endpoint_reference for target in new.targets})  # before their ports close
        keys = set(new.roots)
        for key in [k for k in self.listeners if k not in keys]:
            listener, _ = self.listeners.pop(key)
            await finished(listener.disownServiceParent())
        for device_id in [d for d in self.parts.subscriptions if d not in {p.device_id for p in new.plans}]:
            await finished(cast(Any, self.parts.subscriptions.pop(device_id)).disownServiceParent())
        await self.parts.store.flushed()  # what the old workers saved (the reconciler's paths) is read by the new
        self.start_workers(new)
        if kept and discovery is not None:
            await discovery.update(new.targets)

    def restart_workers_soon(self, delay: float) -> None:
        """Restart the workers ``delay`` seconds from now (ONVIF SystemReboot, whose answer goes out first), unless
        the relay stops before; a request while a restart is pending or under way joins that one."""
        if (self._restart is not None and self._restart.active()) or self._restarting is not None:
            return

        def restart() -> None:
            self.restart_workers().addErrback(self.log_failure, "SystemReboot")

        self._restart = self.reactor.callLater(delay, restart)

    def restart_workers(self) -> Deferred[None]:
        """Stop every child except the listeners and the HTTP client pools, then start the children of that
        moment, if the relay still runs (a reload may have replaced the generation meanwhile)."""

        def restartable() -> list[Any]:
            return [svc for svc in self if not isinstance(svc, (Listener, ClosePools))]

        async def restart() -> None:
            if not self.running:
                return
            for svc in reversed(restartable()):
                await finished(svc.stopService())
            await self.parts.store.flushed()  # the services read back what they saved (a Subscribe just answered)
            for svc in restartable() if self.running else []:
                if not svc.running:
                    svc.startService()

        def done(result: object) -> object:
            self._restarting = None
            return result

        self._restarting = Deferred.fromCoroutine(restart())
        return self._restarting.addBoth(done)


class Listener(service.Service):
    """One TCP listener of the relay, whose socket can be bound before it is put in service.

    A reload binds the new generation's listeners (``bind``) before it touches the
    running one, so that a taken port is found while the old config still serves.
    """

    log = Logger()

    def __init__(self, reactor: Any, bind: str, port: int, factory: Any) -> None:
        self.address = f"{bind}:{port}"
        self._endpoint = cast(Any, endpoints.serverFromString)(reactor, _strport(bind, port))
        self.factory = factory
        """The site served on this socket."""
        self._port: Any = None
        self._failure: Failure | None = None
        self._state = "unbound"  # unbound -> binding -> done
        self._observers: list[Deferred[None]] = []

    def bind(self) -> Deferred[None]:
        """Fires once the socket is bound (binding it on the first call), fails with why it could not be."""
        observer: Deferred[None] = Deferred()
        self._observers.append(observer)
        if self._state == "unbound":
            self._state = "binding"
            self._endpoint.listen(self.factory).addBoth(self._bound)
        elif self._state == "done":
            self._tell()
        return observer

    def _bound(self, result: object) -> None:
        if isinstance(result, Failure):
            self._failure = result
        else:
            self._port = result
        self._state = "done"
        self._tell()

    def _tell(self) -> None:
        observers, self._observers = self._observers, []
        for observer in observers:
            if self._failure is not None:
                observer.errback(self._failure)
            else:
                observer.callback(None)

    def startService(self) -> None:
        """Bind (unless a reload already did); a failure is logged, and READY is never sent."""
        cast(Any, service.Service).startService(self)

        def failed(failure: Failure) -> None:
            self.log.error("cannot listen on {address}: {error}", address=self.address, error=str(failure.value))

        self.bind().addErrback(failed)

    def stopService(self) -> Deferred[None]:
        """Close the socket, if it was bound."""
        cast(Any, service.Service).stopService(self)
        port, self._port, self._failure, self._state = self._port, None, None, "unbound"
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)


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


async def finished(result: Any) -> None:
    """Wait for what a service method returned, if it is a Deferred (they may return None)."""
    if isinstance(result, Deferred):
        await result


def _strport(bind: str, port: int) -> str:
    interface = bind.replace(":", "\\:")
    return f"tcp:{port}:interface={interface}"


def relay_status(config: Config, relay: RelayService) -> str:
    """The systemd STATUS= line: what the relay serves and how much of it mediamtx has."""
    streams = sum(len(camera.streams) for camera in config.cameras)
    status = (
        f"{len(config.cameras)} cameras, {streams} streams; "
        f"{len(relay.reconciler.owned_paths)} mediamtx paths registered"
    )
    outcome = relay.reload_outcome
    if outcome.startswith("config reload failed while switching"):
        status += f"; {outcome} (restart the relay)"
    elif outcome and outcome != "config reloaded":
        status += f"; {outcome} (still on the previous config)"
    return status

