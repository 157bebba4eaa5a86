"""Camera health: every ``health.interval`` seconds, is each camera online?

One round checks, for every camera at once, within ``timeout`` seconds each:

* the camera's HTTP API (``cmd.cgi?name=status``),
* the camera's RTSP port (an ``OPTIONS`` request; any RTSP answer, 401 included, counts),
* mediamtx's view of the camera's paths (``/v3/paths/list``, one call per round).

============  ===================================================================
state         when
============  ===================================================================
``online``    HTTP and RTSP answer and mediamtx has every path in a usable state
``degraded``  only one of HTTP and RTSP answers, or mediamtx lacks one of the
              camera's paths or has readers waiting on a path with no stream
``offline``   neither HTTP nor RTSP answers
``unknown``   before the first round has finished
============  ===================================================================

An on-demand path that nobody reads has no stream, and that is normal. mediamtx not
answering is not the camera's fault: the round then judges the camera on HTTP and
RTSP alone, as it does until the paths have been registered (the relay's first
reconcile pass), so that a first start on an empty mediamtx is not "degraded". A change of state is logged once and reported to the ``on_change``
callbacks as ``(camera_id, old, new)``; a new reason within the same state only
updates the reason. The round never raises: a dependency that throws counts as that
check failing (a raised exception would kill the LoopingCall).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence, TypeVar, cast

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from atomrelay.camera.client import CameraError
from atomrelay.clock import Clock
from atomrelay.config import CameraConfig
from atomrelay.metrics import Registry
from atomrelay.periodic import PeriodicService

T = TypeVar("T")

ONLINE = "online"
DEGRADED = "degraded"
OFFLINE = "offline"
UNKNOWN = "unknown"

MAX_RTSP_ANSWER = 4096
"""Bytes of an RTSP answer read before giving up on finding its status line."""


@dataclass(frozen=True)
class HealthState:
    """One camera's health: ``state`` (online/degraded/offline/unknown), why, and since when (clock seconds)."""

    state: str
    reason: str
    since: float


class ProbeFailed(Exception):
    """A health probe got no usable answer; the message says what happened."""


class StatusSource(Protocol):
    """The part of ``CameraClient`` the monitor uses."""

    def status(self, timeout: float | None = None) -> Awaitable[dict[str, str]]: ...


class PathLister(Protocol):
    """The part of ``MediamtxClient`` the monitor uses."""

    def list_paths(self) -> Awaitable[list[dict[str, Any]]]: ...


RtspProbe = Callable[[CameraConfig, float], Awaitable[None]]
"""Checks a camera's RTSP port within the given seconds; raises ProbeFailed (or anything) when it does not answer."""


class _RtspOptions(TwistedProtocol):
    """Sends one OPTIONS request and fires ``answered`` with the status line, or fails it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answered: Deferred[str] = Deferred()
        self._buffer = b""

    def connectionMade(self) -> None:
        """Ask."""
        request = f"OPTIONS {self.url} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: atomrelay-health\r\n\r\n"
        cast(Any, self.transport).write(request.encode("ascii"))

    def dataReceived(self, data: bytes) -> None:
        """Wait for the status line; anything but ``RTSP/1.x`` is not an RTSP server."""
        self._buffer += data
        line, newline, _ = self._buffer.partition(b"\r\n")
        if not newline and len(self._buffer) < MAX_RTSP_ANSWER:
            return
        transport = cast(Any, self.transport)
        if line.startswith(b"RTSP/1."):
            self._settle(line.decode("ascii", "replace"))
        else:
            self._settle(ProbeFailed(f"answer is not RTSP: {line[:40]!r}"))
        transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """A connection closed before the status line is a failure."""
        self._settle(ProbeFailed("connection closed without an RTSP answer"))

    def _settle(self, outcome: str | Exception) -> None:
        if self.answered.called:
            return
        if isinstance(outcome, Exception):
            self.answered.errback(outcome)
        else:
            self.answered.callback(outcome)


class RtspOptionsProbe:
    """Probes a camera's RTSP port with one ``OPTIONS`` request over TCP (the reactor makes the connection)."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._clock = cast(Clock, reactor)

    async def __call__(self, camera: CameraConfig, timeout: float) -> None:
        """Return when the port answers in RTSP within ``timeout`` seconds; raise ProbeFailed otherwise."""
        host = f"[{camera.host}]" if ":" in camera.host else camera.host
        protocol = _RtspOptions(f"rtsp://{host}:{camera.rtsp_port}/")
        endpoint = HostnameEndpoint(self._reactor, camera.host, camera.rtsp_port, timeout=timeout)
        work = Deferred.fromCoroutine(self._exchange(endpoint, protocol))
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            work.cancel()

        timer = self._clock.callLater(timeout, expire)
        try:
            await work
        except CancelledError:
            if expired:
                raise ProbeFailed(f"no RTSP answer within {timeout:g}s") from None
            raise
        finally:
            if timer.active():
                timer.cancel()

    async def _exchange(self, endpoint: HostnameEndpoint, protocol: _RtspOptions) -> None:
        try:
            await cast(Any, endpoint).connect(Factory.forProtocol(lambda: protocol))
        except CancelledError:
            raise
        except ConnectingCancelledError:  # our timer ran out before the port answered at all
            raise ProbeFailed("cannot connect: no answer to the connection attempt") from None
        except Exception as exc:
            raise ProbeFailed(f"cannot connect: {_short(exc)}") from None
        try:
            await protocol.answered
        except CancelledError:
            transport = protocol.transport
            if transport is not None:
                cast(Any, transport).abortConnection()
            raise


class HealthMonitor(PeriodicService):
    """Checks every camera each ``interval`` seconds and keeps its HealthState.

    ``clients`` maps camera ids to their ``CameraClient``; ``mediamtx`` is the
    ``MediamtxClient`` (None: no path checks); ``rtsp_probe`` checks the RTSP port
    (``RtspOptionsProbe(reactor)`` in the relay); ``paths_registered`` says whether the
    camera paths have been registered in mediamtx yet (no path checks until it is true). Each check is given ``timeout``
    seconds (default: a third of the interval, at most 5 s) and is abandoned as failed
    at 1.25 times that, whatever the dependency does, so a round never outlives its
    interval and a camera that stops answering is offline at the end of the first
    round after that.
    """

    log = Logger()
    what = "health loop"

    def __init__(
        self,
        clock: IReactorTime,
        cameras: Sequence[CameraConfig],
        clients: Mapping[str, StatusSource],
        mediamtx: PathLister | None,
        rtsp_probe: RtspProbe,
        interval: float = 30.0,
        timeout: float | None = None,
        paths_registered: Callable[[], bool] = lambda: True,
        metrics: Registry | None = None,
    ) -> None:
        super().__init__(clock, interval)
        self._paths_registered = paths_registered
        self._clock = cast(Clock, clock)
        self._cameras = tuple(cameras)
        self._clients = clients
        self._mediamtx = mediamtx
        self._rtsp_probe = rtsp_probe
        self.interval = interval
        self.timeout = timeout if timeout is not None else min(5.0, interval / 3)
        self.on_change: list[Callable[[str, HealthState, HealthState], None]] = []
        start = self._clock.seconds()
        self._states = {camera.id: HealthState(UNKNOWN, "not checked yet", start) for camera in self._cameras}
        self.rounds = 0
        """How many rounds have completed."""
        self._checks = (metrics or Registry()).summary(
            "atomrelay_camera_check_seconds", "Camera health checks and their duration, by check and outcome",
            ("camera", "check", "outcome"),
        )

    # --- lookups ---------------------------------------------------------------------------

    def state(self, camera_id: str) -> HealthState:
        """The camera's current HealthState (``unknown`` for a camera this monitor does not watch)."""
        state = self._states.get(camera_id)
        if state is None:
            return HealthState(UNKNOWN, "not monitored", 0.0)
        return state

    def states(self) -> dict[str, HealthState]:
        """Every watched camera's HealthState, in configuration order."""
        return dict(self._states)

    # --- one round ---------------------------------------------------------------------------

    async def round(self) -> None:
        """A round of the loop (PeriodicService): ``check()``."""
        await self.check()

    async def check(self) -> None:
        """One round over every camera, all checks at once; never raises (except when cancelled)."""
        try:
            results = await _gather([self._paths(), *(self._probe(camera) for camera in self._cameras)])
            paths = results[0]
            for camera, probes in zip(self._cameras, results[1:]):
                if probes is not None:
                    self._update(camera.id, *_verdict(camera, probes[0], probes[1], paths))
            self.rounds += 1
        except CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a raised exception would kill the LoopingCall
            self.log.failure("health round failed")

    async def _bounded(self, work: Awaitable[T]) -> T:
        """``work``, cancelled if it outlives the check timeout by a quarter (a dependency that ignores its own)."""
        deferred = Deferred.fromCoroutine(_wrap(work))
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            deferred.cancel()

        timer = self._clock.callLater(self.timeout * 1.25, expire)
        try:
            result: T = await deferred
            return result
        except CancelledError:
            if expired:
                raise ProbeFailed(f"no answer within {self.timeout:g}s") from None
            raise
        finally:
            if timer.active():
                timer.cancel()

    async def _paths(self) -> dict[str, dict[str, Any]] | None:
        """mediamtx's runtime paths by name, or None when mediamtx cannot tell (yet)."""
        if self._mediamtx is None or not self._paths_registered():
            return None
        try:
            items = await self._bounded(self._mediamtx.list_paths())
            return {str(item.get("name")): item for item in items if isinstance(item, dict)}
        except CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - mediamtx trouble is not a camera's fault
            self.log.debug("health: mediamtx paths unknown: {error}", error=_short(exc))
            return None

    async def _probe(self, camera: CameraConfig) -> tuple[str | None, str | None]:
        """(HTTP error, RTSP error) of one camera, None meaning it answered."""
        http, rtsp = await _gather([self._timed(camera, "http", self._http(camera)),
                                    self._timed(camera, "rtsp", self._rtsp(camera))])
        return http, rtsp

    async def _timed(self, camera: CameraConfig, check: str, work: Awaitable[str | None]) -> str | None:
        """``work`` (a check: its error or None), counted with its duration."""
        start = self._clock.seconds()
        error = await work
        self._checks.observe(self._clock.seconds() - start, camera.id, check, "failed" if error else "ok")
        return error

    async def _http(self, camera: CameraConfig) -> str | None:
        client = self._clients.get(camera.id)
        if client is None:
            return "no client"
        try:
            await self._bounded(client.status(self.timeout))
            return None
        except CancelledError:
            raise
        except (CameraError, ProbeFailed) as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - a broken client is a failed check, not a dead loop
            self.log.failure("health: HTTP check of camera {camera_id} crashed", camera_id=camera.id)
            return _short(exc)

    async def _rtsp(self, camera: CameraConfig) -> str | None:
        try:
            await self._bounded(self._rtsp_probe(camera, self.timeout))
            return None
        except CancelledError:
            raise
        except ProbeFailed as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - a broken probe is a failed check, not a dead loop
            self.log.failure("health: RTSP check of camera {camera_id} crashed", camera_id=camera.id)
            return _short(exc)

    def _update(self, camera_id: str, state: str, reason: str) -> None:
        old = self._states[camera_id]
        if old.state == state:
            if old.reason != reason:
                self._states[camera_id] = HealthState(state, reason, old.since)
                self.log.info("camera {camera_id} is still {state}: {reason}",
                              camera_id=camera_id, state=state, reason=reason)
            return
        new = self._states[camera_id] = HealthState(state, reason, self._clock.seconds())
        if state == ONLINE:
            self.log.info("camera {camera_id} is online ({reason})", camera_id=camera_id, reason=reason)
        else:
            self.log.warn("camera {camera_id} is {state}: {reason}", camera_id=camera_id, state=state, reason=reason)
        for callback in self.on_change:
            try:
                callback(camera_id, old, new)
            except Exception:  # noqa: BLE001 - one broken listener must not stop the others
                self.log.failure("a health listener failed for camera {camera_id}", camera_id=camera_id)


def _verdict(
    camera: CameraConfig, http_error: str | None, rtsp_error: str | None, paths: dict[str, dict[str, Any]] | None
) -> tuple[str, str]:
    """The camera's state and reason from its checks (see the module docstring)."""
    where = f"{camera.host}:{camera.http_port}"
    rtsp_where = f"{camera.host}:{camera.rtsp_port}"
    if http_error and rtsp_error:
        return OFFLINE, f"HTTP {where} does not answer ({http_error}); RTSP {rtsp_where} does not answer ({rtsp_error})"
    if http_error:
        return DEGRADED, f"HTTP {where} does not answer ({http_error}); RTSP answers"
    if rtsp_error:
        return DEGRADED, f"RTSP {rtsp_where} does not answer ({rtsp_error}); HTTP answers"
    problem = _path_problem(camera, paths)
    if problem:
        return DEGRADED, problem
    return ONLINE, "HTTP and RTSP answer"


def _path_problem(camera: CameraConfig, paths: dict[str, dict[str, Any]] | None) -> str:
    """What is wrong with the camera's mediamtx paths, or "" (also when mediamtx could not tell)."""
    if paths is None:
        return ""
    for stream in camera.streams:
        name = f"{camera.id}/{stream.name}"
        item = paths.get(name)
        if item is None:
            return f"mediamtx has no path {name}"
        live = item.get("online", item.get("ready"))
        readers = item.get("readers")
        if not live and isinstance(readers, list) and readers:
            return f"mediamtx path {name} has {len(readers)} reader(s) but no stream"
    return ""


async def _gather(awaitables: Sequence[Awaitable[Any]]) -> list[Any]:
    """Await all concurrently; results in order, None for a failure.

    Cancelling the gather cancels every member and raises CancelledError, as does a
    member that was cancelled.
    """
    deferreds = [Deferred.fromCoroutine(_wrap(a)) for a in awaitables]
    results = await DeferredList(deferreds, consumeErrors=True)
    if any(not ok and isinstance(value, Failure) and isinstance(value.value, CancelledError) for ok, value in results):
        raise CancelledError()
    return [value if ok else None for ok, value in results]


async def _wrap(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__


__all__ = [
    "DEGRADED",
    "OFFLINE",
    "ONLINE",
    "UNKNOWN",
    "HealthMonitor",
    "HealthState",
    "PathLister",
    "ProbeFailed",
    "RtspOptionsProbe",
    "RtspProbe",
    "StatusSource",
]
