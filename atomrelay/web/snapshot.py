"""The snapshot proxy: ``GET /snapshot/<camera id>.jpg`` on the relay's HTTP port.

GetSnapshotUri points NVRs here. The camera's ``get_jpeg.cgi`` is slow and answers 503
when its queue of 8 is full, so the proxy protects it:

* the caller must be an ONVIF user (HTTP Digest, or Basic when ``onvif.http_basic``);
* concurrent requests for one camera share one upstream fetch;
* an image at most ``max_age`` seconds old (1 s by default) is served from memory;
* a camera 503 is retried once after ``retry_delay`` seconds (never hammered);
* the whole fetch, retry included, is abandoned after ``timeout`` seconds (at most 5):
  the client then gets a 503 with a short text, never a hang.

=====================================  ======================================
outcome                                answer
=====================================  ======================================
a JPEG                                 200 ``image/jpeg``
no or bad credentials                  401 + Digest (and Basic) challenges
unknown camera or path                 404
camera silent, refusing, timed out,    503 ``text/plain`` (``Retry-After: 1``)
or still busy after the retry
camera refuses the relay's             502 ``text/plain``
credentials, other HTTP error, not a
JPEG
=====================================  ======================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from atomrelay.auth.policy import AccessClass, allowed
from atomrelay.auth.security import Authenticator, HttpRequest
from atomrelay.camera.client import CameraAuthError, CameraClient, CameraHTTPError, CameraUnavailable
from atomrelay.clock import Clock
from atomrelay.metrics import Registry

MAX_TIMEOUT = 5.0
"""The longest a snapshot request may wait for the camera (seconds)."""
_PLAIN_TEXT = b"text/plain; charset=utf-8"
_JPEG_START = b"\xff\xd8"


class _Request(HttpRequest, Protocol):
    """The part of twisted.web's Request the proxy uses (typed for mypy)."""

    postpath: list[bytes]

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def notifyFinish(self) -> Deferred[None]: ...


class SnapshotTimeout(Exception):
    """The camera did not deliver a snapshot in time."""


class NotAJpeg(Exception):
    """The camera answered 2xx with something that is not a JPEG image."""


@dataclass
class _Fetch:
    """One upstream fetch and the requests waiting for it."""

    waiters: list[Deferred[bytes]] = field(default_factory=list)


class SnapshotResource(Resource):
    """``/snapshot``: serves ``<camera id>.jpg`` for the cameras in ``clients`` (id -> CameraClient).

    Mount it as the ``snapshot`` child of the site root. ``clock`` schedules the retry
    and the timeout; ``max_age`` is how long a fetched image is reused (0 disables the
    memory cache, not the coalescing).
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        clients: Mapping[str, CameraClient],
        authenticator: Authenticator,
        max_age: float = 1.0,
        timeout: float = MAX_TIMEOUT,
        retry_delay: float = 0.5,
        metrics: Registry | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if not 0 < timeout <= MAX_TIMEOUT:
            raise ValueError(f"timeout must be in (0, {MAX_TIMEOUT}] seconds")
        self._clock = clock
        self._time = cast(Clock, clock)
        self._clients = dict(clients)
        self._authenticator = authenticator
        self.max_age = max_age
        self.timeout = timeout
        self.retry_delay = retry_delay
        self._images: dict[str, tuple[float, bytes]] = {}
        self._fetches: dict[str, _Fetch] = {}
        registry = metrics or Registry()
        self._requests = registry.counter(
            "atomrelay_snapshot_requests_total", "Authorised snapshot requests for a known camera", ("camera",)
        )
        self._upstream = registry.counter(
            "atomrelay_snapshot_fetches_total", "Snapshots asked of the camera (get_jpeg.cgi calls)", ("camera",)
        )
        self._failures = registry.counter(
            "atomrelay_snapshot_failures_total", "Shared snapshot fetches that failed, by reason", ("camera", "reason")
        )

    def render_GET(self, request: _Request) -> bytes | int:
        """Authenticate, then answer from memory or from the (shared) camera fetch."""
        caller = self._authenticator.authenticate_http(request)
        if caller is None:
            self._authenticator.challenge(request)
            return _text(request, 401, "Authentication required.")
        if not allowed(caller.level, AccessClass.READ_MEDIA):
            return _text(request, 403, "This user may not see snapshots.")
        camera_id = _camera_id(request.postpath)
        if camera_id is None or camera_id not in self._clients:
            return _text(request, 404, "No such camera.")
        self._requests.inc(camera_id)
        cached = self._images.get(camera_id)
        if cached is not None and self._time.seconds() - cached[0] <= self.max_age:
            return _jpeg(request, cached[1])
        waiter = self._wait_for(camera_id)
        gone: list[bool] = []

        def answer(image: bytes) -> None:
            if not gone:
                request.write(_jpeg(request, image))
                request.finish()

        def fail(failure: Failure) -> None:
            if gone or isinstance(failure.value, CancelledError):
                return
            status, text = self._describe(camera_id, failure)
            if status == 503:
                request.setHeader(b"retry-after", b"1")
            request.write(_text(request, status, text))
            request.finish()

        def disconnected(reason: Failure) -> None:
            gone.append(True)
            waiter.cancel()

        waiter.addCallbacks(answer, fail)
        request.notifyFinish().addErrback(disconnected)
        return NOT_DONE_YET

    def _wait_for(self, camera_id: str) -> Deferred[bytes]:
        """A Deferred for the next image of ``camera_id``, joining a fetch in flight or starting one."""
        waiter: Deferred[bytes] = Deferred()
        fetch = self._fetches.get(camera_id)
        if fetch is not None:
            fetch.waiters.append(waiter)
            return waiter
        fetch = self._fetches[camera_id] = _Fetch([waiter])
        # The fetch may finish synchronously, so the waiter is registered first.
        work = Deferred.fromCoroutine(self._fetch(camera_id))
        work.addTimeout(self.timeout, self._clock, onTimeoutCancel=_timed_out)
        work.addBoth(self._fetched, camera_id, fetch)
        return waiter

    async def _fetch(self, camera_id: str) -> bytes:
        client = self._clients[camera_id]
        self._upstream.inc(camera_id)
        try:
            image = await client.snapshot()
        except CameraHTTPError as exc:
            if exc.status != 503:
                raise
            self.log.info(
                "camera {camera_id} is busy (snapshot 503); retrying once in {delay}s",
                camera_id=camera_id,
                delay=self.retry_delay,
            )
            await deferLater(cast(Any, self._clock), self.retry_delay, lambda: None)
            self._upstream.inc(camera_id)
            image = await client.snapshot()
        if not image.startswith(_JPEG_START):
            raise NotAJpeg(f"{len(image)} bytes starting {image[:8]!r}")
        return image

    def _fetched(self, result: bytes | Failure, camera_id: str, fetch: _Fetch) -> None:
        if self._fetches.get(camera_id) is fetch:
            del self._fetches[camera_id]
        if isinstance(result, bytes):
            self._images[camera_id] = (self._time.seconds(), result)
        elif isinstance(result.value, _EXPECTED):
            reason = next(label for kind, label in _FAILURE_REASONS if isinstance(result.value, kind))
            self._failures.inc(camera_id, reason)
            self.log.warn(
                "snapshot of camera {camera_id} failed ({waiting} waiting): {reason}",
                camera_id=camera_id,
                waiting=len(fetch.waiters),
                reason=str(result.value) or type(result.value).__name__,
            )
        else:
            self._failures.inc(camera_id, "other")
            self.log.failure("snapshot of camera {camera_id} failed", result, camera_id=camera_id)
        for waiter in fetch.waiters:
            if isinstance(result, bytes):
                waiter.callback(result)
            else:
                waiter.errback(result)
        fetch.waiters.clear()

    def _describe(self, camera_id: str, failure: Failure) -> tuple[int, str]:
        """The status and text a client gets for a failed fetch (logged once, in ``_fetched``)."""
        error = failure.value
        if isinstance(error, SnapshotTimeout):
            return 503, f"Camera {camera_id} did not send a snapshot within {self.timeout:g} s."
        if isinstance(error, CameraUnavailable):
            return 503, f"Camera {camera_id} is not answering."
        if isinstance(error, CameraAuthError):
            return 502, f"Camera {camera_id} refused the relay's credentials."
        if isinstance(error, CameraHTTPError) and error.status == 503:
            return 503, f"Camera {camera_id} is busy; try again shortly."
        if isinstance(error, CameraHTTPError):
            return 502, f"Camera {camera_id} answered HTTP {error.status}."
        if isinstance(error, NotAJpeg):
            return 502, f"Camera {camera_id} sent something that is not a JPEG image."
        return 500, "The snapshot failed."


_EXPECTED = (SnapshotTimeout, CameraUnavailable, CameraHTTPError, NotAJpeg)
_FAILURE_REASONS = (
    (SnapshotTimeout, "timeout"), (CameraUnavailable, "unavailable"), (CameraAuthError, "auth"),
    (CameraHTTPError, "http"), (NotAJpeg, "not_jpeg"),
)
"""The ``reason`` label of a failed fetch: the first class the error is an instance of."""


def _timed_out(result: Any, timeout: float) -> Failure:
    """``addTimeout``'s replacement for whatever the cancelled fetch ended with."""
    failure: Failure = cast(Any, Failure)(SnapshotTimeout(f"no snapshot within {timeout:g} s"))
    return failure


def _camera_id(postpath: list[bytes]) -> str | None:
    if len(postpath) != 1 or not postpath[0].endswith(b".jpg"):
        return None
    try:
        return postpath[0][: -len(b".jpg")].decode("ascii")
    except UnicodeDecodeError:
        return None


def _jpeg(request: _Request, image: bytes) -> bytes:
    request.setResponseCode(200)
    request.setHeader(b"content-type", b"image/jpeg")
    request.setHeader(b"content-length", str(len(image)).encode("ascii"))
    request.setHeader(b"cache-control", b"no-store")
    return image


def _text(request: _Request, status: int, text: str) -> bytes:
    body = text.encode("utf-8") + b"\n"
    request.setResponseCode(status)
    request.setHeader(b"content-type", _PLAIN_TEXT)
    request.setHeader(b"content-length", str(len(body)).encode("ascii"))
    return body
