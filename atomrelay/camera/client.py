"""treq client for the ATOM Cam firmware's HTTP API (see shared/reference/atomcam.md).

Every request has a timeout, optional HTTP Digest (realm ``atomcam``), and replies are
stripped of the firmware's trailing NUL bytes and newlines. Failures are typed so
callers can tell an offline camera from a slow one, from a refusing one:

=====================================  ==========================================
what happened                          exception
=====================================  ==========================================
refused, unreachable, connection lost  ``CameraUnavailable``
no complete answer within the timeout  ``CameraTimeout`` (a ``CameraUnavailable``)
HTTP error status                      ``CameraHTTPError`` (401: ``CameraAuthError``)
``error``                              ``CameraCommandError``
``error : canceled``                   ``CameraCanceled``
``error : multiple request.``          ``CameraMultipleRequest`` (a ``CameraBusy``)
``error : dismiss request.``           ``CameraDismissed`` (a ``CameraBusy``)
=====================================  ==========================================

With a ``clock`` the timeout covers the whole exchange, reply body included; without
one, treq's own timer (until the reply headers, on treq's default reactor) is used.
The composition root passes the reactor.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Coroutine, TypeVar, cast
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectError, ConnectingCancelledError, ConnectionLost, DNSLookupError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseFailed, ResponseNeverReceived

from atomrelay.camera.digest import DigestError, authorization, pick_challenge
from atomrelay.clock import Clock
from atomrelay.config import CameraConfig
from atomrelay.net import BodyTooLarge, describe, is_cancellation, printable, read_body, url_host

T = TypeVar("T")

# hack_ini.cgi also holds Wi-Fi and account secrets: only these keys are ever read.
HACK_INI_KEYS = ("PRODUCT_MODEL", "HWADDR")

MAX_REPLY_BYTES = 4 * 1024 * 1024
"""Largest body read from a camera (a 1080p ``get_jpeg.cgi`` snapshot is a few hundred KiB); past it, a
CameraReplyError and the connection is closed."""
MAX_DISCARDED_BYTES = 64 * 1024
"""Largest body of a 401 answer read (and dropped) before the Digest retry."""

NIGHT_MODES = ("on", "off", "auto")
"""The values of ``night <mode>`` and of ``property nightVision``."""


class CameraError(Exception):
    """Base class: the camera did not do what was asked."""


class CameraUnavailable(CameraError):
    """The camera did not answer (refused, unreachable, timed out)."""


class CameraTimeout(CameraUnavailable):
    """The camera did not answer completely within the request's timeout."""


class CameraHTTPError(CameraError):
    """The camera answered with an HTTP error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CameraAuthError(CameraHTTPError):
    """The camera refused our credentials (or needs some and we have none)."""


class CameraReplyError(CameraError):
    """The camera answered with text that is not what the command promises."""


class CameraCommandError(CameraError):
    """A socket command answered ``error`` (or ``error : ...``)."""

    def __init__(self, reply: str) -> None:
        super().__init__(f"camera answered {reply!r}")
        self.reply = reply


class CameraBusy(CameraCommandError):
    """The camera rejected a move because another one won (``multiple request`` / ``dismiss request``)."""


class CameraMultipleRequest(CameraBusy):
    """``error : multiple request.``: a move with a better priority is running."""


class CameraDismissed(CameraBusy):
    """``error : dismiss request.``: the motor task dismissed the move."""


class CameraCanceled(CameraCommandError):
    """A move was interrupted by another one (``error : canceled``)."""


@dataclass(frozen=True)
class MotorPosition:
    """Where the motors are, in the firmware's degrees (pan 0-355, tilt 0-180).

    The firmware already mirrors both angles when the image is flipped, so they are
    always relative to the picture the camera sends. ``idle`` is None when the reply
    did not say (a finished ``move`` reply has no idle field: the motor has stopped).
    """

    pan: float
    tilt: float
    hflip: bool = False
    vflip: bool = False
    idle: bool | None = None


def clean_reply(body: bytes) -> str:
    """Decode a firmware reply and strip trailing NULs, newlines and spaces."""
    return body.decode("utf-8", "replace").rstrip("\x00\r\n\t ").lstrip("\x00")


def command_error(reply: str) -> CameraCommandError | None:
    """The typed error for an ``error...`` reply, or None for a normal reply."""
    if not reply.startswith("error"):
        return None
    if "canceled" in reply:
        return CameraCanceled(reply)
    if "multiple request" in reply:
        return CameraMultipleRequest(reply)
    if "dismiss request" in reply:
        return CameraDismissed(reply)
    return CameraCommandError(reply)


def parse_motor_position(text: str) -> MotorPosition:
    """``<pan> <tilt> <hflip> <vflip> [<idle>]`` (MOTORPOS or a move reply); raise CameraReplyError otherwise."""
    words = text.split()
    try:
        if len(words) not in (4, 5):
            raise ValueError(text)
        pan, tilt = float(words[0]), float(words[1])
        flags = [int(word) for word in words[2:]]
    except ValueError:
        raise CameraReplyError(f"not a motor position: {text[:80]!r}") from None
    if not (math.isfinite(pan) and math.isfinite(tilt)):
        raise CameraReplyError(f"not a motor position: {text[:80]!r}")
    idle = bool(flags[2]) if len(flags) == 3 else None
    return MotorPosition(pan, tilt, bool(flags[0]), bool(flags[1]), idle)


class CameraClient:
    """Talks to one camera's ``cmd.cgi``, ``get_jpeg.cgi`` and ``hack_ini.cgi``."""

    log = Logger()

    def __init__(
        self, http: Any, camera: CameraConfig, timeout: float = 5.0, clock: IReactorTime | None = None
    ) -> None:
        self.http = http
        self.camera = camera
        self.timeout = timeout
        self.base = f"http://{url_host(camera.host)}:{camera.http_port}"
        self._clock = cast(Clock, clock) if clock is not None else None
        self._nc = 0

    async def request(self, method: str, path: str, body: bytes | None = None, timeout: float | None = None) -> bytes:
        """One request with Digest retry; return the body of a 2xx answer within ``timeout`` seconds."""
        limit = self.timeout if timeout is None else timeout
        return await self._bounded(self._request(method, path, body, limit), limit)

    def _bounded(self, coroutine: Coroutine[Any, Any, T], limit: float) -> Deferred[T]:
        """Run ``coroutine``; with a clock, cancel it after ``limit`` seconds and raise CameraTimeout."""
        deferred = Deferred.fromCoroutine(coroutine)
        if self._clock is None:
            return deferred
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            deferred.cancel()

        timer = self._clock.callLater(limit, expire)

        def finished(result: T | Failure) -> T | Failure:
            if timer.active():
                timer.cancel()
            if expired and isinstance(result, Failure) and isinstance(result.value, CancelledError):
                raise CameraTimeout(f"{self._where} did not answer within {limit:g}s")
            return result

        return deferred.addBoth(finished)

    @property
    def _where(self) -> str:
        return f"{self.camera.host}:{self.camera.http_port}"

    async def _request(self, method: str, path: str, body: bytes | None, limit: float) -> bytes:
        url = self.base + path
        headers: dict[str, list[str]] = {}
        if body is not None:
            headers["Content-Type"] = ["application/json"]
        response = await self._send(method, url, headers, body, limit)
        if response.code == 401 and self.camera.username is not None and self.camera.password is not None:
            await _drain(response)
            challenges = response.headers.getRawHeaders("www-authenticate", [])
            try:
                challenge = pick_challenge(challenges)
            except DigestError as exc:
                raise CameraAuthError(401, f"camera asks for authentication we cannot answer: {exc}") from None
            self._nc += 1
            headers["Authorization"] = [
                authorization(challenge, method, _request_uri(url), self.camera.username, self.camera.password, self._nc)
            ]
            response = await self._send(method, url, headers, body, limit)
        content = await self._content(response)
        if response.code == 401:
            raise CameraAuthError(401, "camera refused the credentials" if self.camera.username else
                                  "camera requires a username and password")
        if not 200 <= response.code < 300:
            raise CameraHTTPError(response.code, f"camera answered HTTP {response.code}")
        return content

    async def _send(self, method: str, url: str, headers: dict[str, list[str]], body: bytes | None,
                    limit: float) -> Any:
        kwargs: dict[str, Any] = {"headers": headers, "data": body, "unbuffered": True}
        if self._clock is None:
            kwargs["timeout"] = limit
        try:
            return await self.http.request(method, url, **kwargs)
        except (ConnectError, DNSLookupError, ConnectTimeout, TimeoutError, CancelledError, ConnectingCancelledError,
                ResponseFailed, ResponseNeverReceived, RequestTransmissionFailed, ConnectionLost) as exc:
            raise self._failure(exc, "did not answer") from None

    async def _content(self, response: Any) -> bytes:
        try:
            return await read_body(response, MAX_REPLY_BYTES)
        except BodyTooLarge:
            raise CameraReplyError(f"{self._where} sent a reply larger than {MAX_REPLY_BYTES} bytes") from None
        except (ResponseFailed, ConnectionLost, TimeoutError, CancelledError) as exc:
            raise self._failure(exc, "broke off its reply") from None

    def _failure(self, exc: BaseException, what: str) -> BaseException:
        """The exception to raise for a transport failure: cancellations stay cancellations when a clock times us."""
        if is_cancellation(exc):
            if self._clock is not None:
                return CancelledError()
            return CameraTimeout(f"{self._where} {what}: timed out")
        return CameraUnavailable(f"{self._where} {what}: {describe(exc)}")

    async def status(self, timeout: float | None = None) -> dict[str, str]:
        """``cmd.cgi?name=status`` as a key → value mapping; CameraReplyError for a page that is markup."""
        body = await self.request("GET", "/cgi-bin/cmd.cgi?name=status", timeout=timeout)
        text = clean_reply(body)
        # KEY=value lines never start with "<": this is a web page (another device, a login portal).
        if text.lstrip().startswith("<"):
            raise CameraReplyError(f"{self._where} answered with an HTML page, not the atomcam_tools status")
        return _key_values(text)

    async def hardware(self, timeout: float | None = None) -> dict[str, str]:
        """PRODUCT_MODEL and HWADDR from hack_ini.cgi (never the secrets the rest of it holds)."""
        body = await self.request("GET", "/cgi-bin/hack_ini.cgi", timeout=timeout)
        return _key_values(clean_reply(body), HACK_INI_KEYS)

    async def command(self, command: str, timeout: float | None = None) -> str:
        """Run a socket command (``POST cmd.cgi?port=socket``); raise CameraCommandError on ``error``."""
        body = json.dumps({"exec": command}).encode("utf-8")
        reply = clean_reply(await self.request("POST", "/cgi-bin/cmd.cgi?port=socket", body, timeout))
        error = command_error(reply)
        if error is not None:
            raise error
        return reply

    async def snapshot(self, timeout: float | None = None) -> bytes:
        """One JPEG from ``get_jpeg.cgi``."""
        return await self.request("GET", "/cgi-bin/get_jpeg.cgi", timeout=timeout)

    async def position(self, timeout: float | None = None) -> MotorPosition:
        """The motors' position and idle flag from MOTORPOS; CameraReplyError if the camera has no motors."""
        status = await self.status(timeout)
        if "MOTORPOS" not in status:
            raise CameraReplyError(f"{self._where} reports no MOTORPOS (not a pan/tilt camera?)")
        return parse_motor_position(status["MOTORPOS"])

    async def move(self, pan: float, tilt: float, speed: int = 9, priority: int = 2,
                   timeout: float | None = None) -> MotorPosition:
        """``move <pan> <tilt> <speed> <priority>``: answers when the motor has stopped, with where it stopped."""
        if not 1 <= speed <= 9 or not 0 <= priority <= 3:
            raise ValueError(f"speed {speed} / priority {priority} out of range")
        reply = await self.command(f"move {pan:.2f} {tilt:.2f} {speed} {priority}", timeout)
        return parse_motor_position(reply)

    async def night_mode(self, timeout: float | None = None) -> str:
        """The night-vision mode (``on``, ``off`` or ``auto``) the camera reports now."""
        reply = await self.command("property nightVision", timeout)
        if reply not in NIGHT_MODES:
            raise CameraReplyError(f"{self._where} reports night vision {reply[:40]!r}")
        return reply

    async def set_night_mode(self, mode: str, timeout: float | None = None) -> None:
        """``night on|off|auto``."""
        if mode not in NIGHT_MODES:
            raise ValueError(f"night mode {mode!r} is not one of {', '.join(NIGHT_MODES)}")
        await self.command(f"night {mode}", timeout)


def _key_values(text: str, wanted: tuple[str, ...] | None = None) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key = printable(key.strip())
        if sep and (wanted is None or key in wanted):
            values[key] = printable(value.strip())
    return values


def _request_uri(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def _drain(response: Any) -> None:
    try:
        await read_body(response, MAX_DISCARDED_BYTES)
    except CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the body of a 401 does not matter
        pass
