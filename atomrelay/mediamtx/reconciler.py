"""Keeps mediamtx's path configuration equal to what the relay's config asks for.

Lifecycle (a ``twisted.application.service.Service``):

1. **WaitReady**: poll ``/v3/info`` every 2 s for up to ``mediamtx.wait_timeout``.
2. **ConfigurePaths**: one reconcile pass; then :attr:`Reconciler.ready` fires (it also
   fires when the wait gives up, so that startup never hangs on mediamtx).
3. **Reconcile loop**: every ``poll_interval`` read ``/v3/info`` and the path
   configuration list; add what is missing, replace what differs in the fields the
   relay sets (see :data:`atomrelay.mediamtx.paths.MANAGED_FIELDS`), delete paths the
   relay recorded as its own whose camera stream left the config. A pass that finds
   everything in order writes nothing.

Ownership: paths named ``<camera id>/<stream name>`` for configured streams belong to
the relay (replacing one it did not create is logged as a warning). The names it has
written are recorded in state_dir (``mediamtx_paths.json``) so that it can remove them
after their camera leaves the config. Any other path is never touched.

While mediamtx is unreachable or misbehaving the loop retries with a backoff capped at
``poll_interval`` and logs once per change of state, not per attempt. No exception ends
the loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from atomrelay.clock import Clock
from atomrelay.config import Config
from atomrelay.mediamtx.client import (
    MediamtxAuthFailed,
    MediamtxBadReply,
    MediamtxClient,
    MediamtxError,
    MediamtxHTTPError,
    MediamtxUnavailable,
    PathExists,
    PathNotFound,
    RouteNotFound,
)
from atomrelay.mediamtx.paths import PathConfError, build_path_conf, path_conf_differences, path_name
from atomrelay.metrics import Registry
from atomrelay.state import StateStore

Info = dict[str, Any]

STATE_NAME = "mediamtx_paths"
"""StateStore document listing the path names the relay created: ``{"paths": [...]}``."""

WAIT_POLL_INTERVAL = 2.0
FIRST_BACKOFF = 0.5


def _problem_key(error: MediamtxError) -> str:
    """What kind of trouble ``error`` is, so that each kind is logged once."""
    if isinstance(error, MediamtxUnavailable):
        return "is unreachable"
    if isinstance(error, MediamtxAuthFailed):
        return "refuses the relay's credentials"
    if isinstance(error, MediamtxHTTPError):
        return f"answers HTTP {error.status}"
    if isinstance(error, MediamtxBadReply):
        return "answers with malformed replies"
    return "is failing"


class Reconciler(Service):
    """Registers one mediamtx path per configured camera stream and keeps it registered."""

    log = Logger()

    def __init__(
        self, clock: IReactorTime, client: MediamtxClient, config: Config, store: StateStore,
        metrics: Registry | None = None,
    ) -> None:
        self._clock = cast(Clock, clock)
        self._client = client
        self._config = config
        self._store = store
        self.ready: Deferred[None] = Deferred()
        self._owned: set[str] = set()
        """The paths the relay made (read from ``state_dir`` when the service starts)."""
        self._started: str | None = None
        self._problem: str | None = None
        self._backoff = 0.0
        self._has_replace: bool | None = None
        self._loop: Deferred[None] | None = None
        self._stopping = False
        self._path_errors: dict[str, str] = {}
        self._conf_errors: dict[str, str] = {}
        self._warned_foreign: set[str] = set()
        registry = metrics or Registry()
        self._passes = registry.counter(
            "atomrelay_mediamtx_reconcile_passes_total", "mediamtx reconcile passes, by outcome", ("outcome",)
        )
        self._restarts = registry.counter("atomrelay_mediamtx_restarts_total", "mediamtx restarts the relay noticed")
        self.version: str | None = None
        """The version mediamtx last reported (None until it answered)."""
        self.last_pass: tuple[float, str] | None = None
        """When the last reconcile pass ended (clock seconds) and its outcome in words."""

    # -- Service --------------------------------------------------------------

    def startService(self) -> None:
        """Start waiting for mediamtx, then configure paths and keep reconciling."""
        super().startService()  # type: ignore[no-untyped-call]
        self._owned = self._load_owned()
        self._stopping = False
        self._loop = Deferred.fromCoroutine(self._run())
        self._loop.addErrback(lambda failure: self.log.failure("the mediamtx reconciler stopped", failure))

    def stopService(self) -> Deferred[None]:
        """Stop the loop; the Deferred fires once in-flight requests are done or cancelled."""
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping = True
        loop, self._loop = self._loop, None
        if loop is None or loop.called:
            return succeed(None)
        done: Deferred[None] = Deferred()
        loop.addBoth(lambda _: done.callback(None))
        loop.cancel()
        return done

    @property
    def problem(self) -> str | None:
        """What is wrong with mediamtx now (e.g. "is unreachable"), or None while it answers."""
        return self._problem

    @property
    def owned_paths(self) -> frozenset[str]:
        """The path names the relay has recorded as its own."""
        return frozenset(self._owned)

    # -- the loop ---------------------------------------------------------------

    async def _run(self) -> None:
        try:
            info = await self._wait_ready()
            if info is not None:
                delay = await self._pass(info)
            else:
                delay = self._backoff = self._config.mediamtx.poll_interval
            if not self.ready.called:
                self.ready.callback(None)
            while True:
                await self._wait(delay)
                delay = await self._pass(None)
        except CancelledError:
            if not self._stopping:
                raise

    async def _wait_ready(self) -> Info | None:
        """Poll /v3/info until it answers or ``wait_timeout`` passes; the info, or None on giving up."""
        settings = self._config.mediamtx
        start = self._clock.seconds()
        deadline = start + settings.wait_timeout
        self.log.info(
            "waiting for mediamtx at {url} (up to {timeout:g}s)", url=self._client.api_url, timeout=settings.wait_timeout
        )
        while True:
            attempt = self._clock.seconds()
            try:
                info = await self._client.info()
            except MediamtxError as error:
                now = self._clock.seconds()
                if now >= deadline:
                    self._problem = _problem_key(error)
                    self.log.warn(
                        "mediamtx at {url} did not become ready within {timeout:g}s ({error}); "
                        "carrying on, paths are registered as soon as it answers",
                        url=self._client.api_url, timeout=settings.wait_timeout, error=str(error),
                    )
                    if not self.ready.called:
                        self.ready.callback(None)
                    return None
                await self._wait(max(0.0, min(attempt + WAIT_POLL_INTERVAL, deadline) - now))
                continue
            self.log.info(
                "mediamtx {version} at {url} is ready after {elapsed:.1f}s",
                version=info["version"], url=self._client.api_url, elapsed=self._clock.seconds() - start,
            )
            self._started = info["started"]
            self.version = info["version"]
            return info

    async def _pass(self, info: Info | None) -> float:
        """One reconcile pass that never raises (except cancellation); the delay before the next."""
        poll_interval = self._config.mediamtx.poll_interval
        try:
            await self._reconcile(info)
        except CancelledError:
            if self._stopping:
                raise
            delay = poll_interval
            self._ended("cancelled", "cancelled")
        except MediamtxError as error:
            if self._stopping:
                raise CancelledError() from error
            self._note_problem(error)
            self._backoff = min(poll_interval, self._backoff * 2 if self._backoff else FIRST_BACKOFF)
            delay = self._backoff
            self._ended("error", f"mediamtx {_problem_key(error)}: {error}")
        except Exception as error:
            self.log.failure("mediamtx reconcile pass failed unexpectedly: {error}", error=repr(error))
            delay = poll_interval
            self._ended("error", f"failed unexpectedly: {error!r}")
        else:
            self._note_recovered()
            self._backoff = 0.0
            delay = poll_interval
            failed = len(self._path_errors) + len(self._conf_errors)
            self._ended("ok", f"{len(self._owned)} paths registered" + (f", {failed} failing" if failed else ""))
        return delay

    def _ended(self, outcome: str, text: str) -> None:
        self._passes.inc(outcome)
        self.last_pass = (self._clock.seconds(), text)

    async def _wait(self, delay: float) -> None:
        """Wait ``delay`` seconds; a stop that came while a pass ran (even from inside it) ends the loop here."""
        if self._stopping:
            raise CancelledError()
        await deferLater(cast(IReactorTime, self._clock), delay)

    def _note_problem(self, error: MediamtxError) -> None:
        key = _problem_key(error)
        if key != self._problem:
            self._problem = key
            self.log.error(
                "mediamtx at {url} {problem}: {error}; retrying every {interval:g}s at most",
                url=self._client.api_url, problem=key, error=str(error),
                interval=self._config.mediamtx.poll_interval,
            )

    def _note_recovered(self) -> None:
        if self._problem is not None:
            self.log.info("mediamtx at {url} answers again", url=self._client.api_url)
            self._problem = None

    def _note_started(self, info: Info) -> None:
        if self._started is not None and info["started"] != self._started:
            self.log.info(
                "mediamtx restarted (started {started}); re-registering the relay's paths", started=info["started"]
            )
            self._warned_foreign.clear()
            self._restarts.inc()
        self._started = info["started"]
        self.version = info["version"]

    # -- reconciling ------------------------------------------------------------

    async def _reconcile(self, info: Info | None) -> None:
        if info is None:
            info = await self._client.info()
        self._note_started(info)
        config = self._config
        current = await self._client.list_path_confs()
        desired, unbuildable = self._desired(config)
        for name, wanted in desired.items():
            await self._ensure(name, wanted, current.get(name))
        for name in sorted(self._owned - desired.keys() - unbuildable):
            await self._remove_stale(name, name in current)

    def _desired(self, config: Config) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """The wanted PathConf by path name, and the configured names whose conf cannot be built."""
        desired: dict[str, dict[str, Any]] = {}
        unbuildable: set[str] = set()
        for camera in config.cameras:
            for stream in camera.streams:
                name = path_name(camera, stream)
                try:
                    desired[name] = build_path_conf(camera, stream, config.mediamtx)
                except PathConfError as error:
                    unbuildable.add(name)
                    if self._conf_errors.get(name) != str(error):
                        self._conf_errors[name] = str(error)
                        self.log.error("cannot register mediamtx path {name}: {error}", name=name, error=str(error))
        return desired, unbuildable

    async def _ensure(self, name: str, wanted: Mapping[str, Any], actual: Mapping[str, Any] | None) -> None:
        """Make path ``name`` carry ``wanted``; path-specific failures are logged, not raised."""
        if actual is not None:
            differences = path_conf_differences(wanted, actual)
            if not differences:
                self._path_ok(name)
                return
        try:
            if actual is None:
                await self._add(name, wanted)
                self.log.info("registered mediamtx path {name}", name=name)
            else:
                if name not in self._owned and name not in self._warned_foreign:
                    self._warned_foreign.add(name)
                    self.log.warn(
                        "mediamtx path {name} was not created by the relay but is named after a configured "
                        "camera stream; replacing it (differs in {fields})",
                        name=name, fields=", ".join(differences),
                    )
                else:
                    self.log.info(
                        "mediamtx path {name} differs in {fields}; updating it", name=name, fields=", ".join(differences)
                    )
                await self._replace(name, wanted)
        except (MediamtxUnavailable, MediamtxAuthFailed):
            raise
        except MediamtxError as error:
            if self._path_errors.get(name) != str(error):
                self._path_errors[name] = str(error)
                self.log.error("cannot register mediamtx path {name}: {error}", name=name, error=str(error))
            return
        self._path_ok(name)

    def _path_ok(self, name: str) -> None:
        if self._path_errors.pop(name, None) is not None:
            self.log.info("mediamtx path {name} is registered now", name=name)
        self._own(name)

    async def _add(self, name: str, wanted: Mapping[str, Any]) -> None:
        try:
            await self._client.add_path(name, wanted)
        except PathExists:
            await self._replace(name, wanted)

    async def _replace(self, name: str, wanted: Mapping[str, Any]) -> None:
        """Set exactly ``wanted`` on an existing path: replace where available, else delete and add."""
        if self._has_replace is not False:
            try:
                await self._client.replace_path(name, wanted)
                self._has_replace = True
                return
            except RouteNotFound:
                self._lacks_replace()
            except PathNotFound:
                # The path vanished meanwhile, or the route is missing behind a JSON 404.
                try:
                    await self._client.add_path(name, wanted)
                    return
                except PathExists:
                    self._lacks_replace()
        try:
            await self._client.delete_path(name)
        except PathNotFound:
            pass
        await self._client.add_path(name, wanted)

    def _lacks_replace(self) -> None:
        if self._has_replace is not False:
            self._has_replace = False
            self.log.info("this mediamtx has no /v3/config/paths/replace; updating paths by delete and add")

    async def _remove_stale(self, name: str, present: bool) -> None:
        if present:
            try:
                await self._client.delete_path(name)
            except PathNotFound:
                pass
            except (MediamtxUnavailable, MediamtxAuthFailed):
                raise
            except MediamtxError as error:
                if self._path_errors.get(name) != str(error):
                    self._path_errors[name] = str(error)
                    self.log.error("cannot delete stale mediamtx path {name}: {error}", name=name, error=str(error))
                return
            self.log.info("deleted mediamtx path {name}: its camera stream left the config", name=name)
        self._path_errors.pop(name, None)
        self._disown(name)

    # -- ownership state ----------------------------------------------------------

    def _load_owned(self) -> set[str]:
        document = self._store.load(STATE_NAME, {})
        paths = document.get("paths") if isinstance(document, dict) else None
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            if document != {}:
                self.log.warn("ignoring malformed saved state {name}: expected {{\"paths\": [names]}}", name=STATE_NAME)
            return set()
        return set(paths)

    def _own(self, name: str) -> None:
        if name not in self._owned:
            self._owned.add(name)
            self._save_owned()

    def _disown(self, name: str) -> None:
        if name in self._owned:
            self._owned.discard(name)
            self._save_owned()

    def _save_owned(self) -> None:
        self._store.save_in_background(STATE_NAME, {"paths": sorted(self._owned)}, "the relay's mediamtx paths")
