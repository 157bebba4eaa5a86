"""treq client for the ATOM Cam firmware's HTTP API (see shared/reference/atomcam.md).

Every request has a timeout, optional HTTP Digest (realm ``atomcam``), and replies are
stripped of the firmware's trailing NUL bytes and newlines. Failures are typed so
callers can tell an offline camera from a refusing one.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, TimeoutError
from twisted.internet.error import ConnectError, ConnectionLost, DNSLookupError, TimeoutError as ConnectTimeout
from twisted.logger import Logger
from twisted.web._newclient import RequestTransmissionFailed, ResponseNeverReceived
from twisted.web.client import ResponseFailed

from atomrelay.camera.digest import DigestError, authorization, pick_challenge
from atomrelay.config import CameraConfig

# hack_ini.cgi also holds Wi-Fi and account secrets: only these keys are ever read.
HACK_INI_KEYS = ("PRODUCT_MODEL", "HWADDR", "HOSTNAME", "appver", "ATOMHACKVER")


class CameraError(Exception):
    """Base class: the camera did not do what was asked."""


class CameraUnavailable(CameraError):
    """The camera did not answer (refused, unreachable, timed out)."""


class CameraHTTPError(CameraError):
    """The camera answered with an HTTP error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CameraAuthError(CameraHTTPError):
    """The camera refused our credentials (or needs some and we have none)."""


class CameraCommandError(CameraError):
    """A socket command answered ``error`` (or ``error : ...``)."""

    def __init__(self, reply: str) -> None:
        super().__init__(f"camera answered {reply!r}")
        self.reply = reply


class CameraBusy(CameraCommandError):
    """The camera rejected a move because another one won (``multiple request`` / ``dismiss request``)."""


class CameraCanceled(CameraCommandError):
    """A move was interrupted by another one (``error : canceled``)."""


def clean_reply(body: bytes) -> str:
    """Decode a firmware reply and strip trailing NULs, newlines and spaces."""
    return body.decode("utf-8", "replace").rstrip("\x00\r\n\t ").lstrip("\x00")


def command_error(reply: str) -> CameraCommandError | None:
    """The typed error for an ``error...`` reply, or None for a normal reply."""
    if not reply.startswith("error"):
        return None
    if "canceled" in reply:
        return CameraCanceled(reply)
    if "multiple request" in reply or "dismiss request" in reply:
        return CameraBusy(reply)
    return CameraCommandError(reply)


class CameraClient:
    """Talks to one camera's ``cmd.cgi``, ``get_jpeg.cgi`` and ``hack_ini.cgi``."""

    log = Logger()

    def __init__(self, http: Any, camera: CameraConfig, timeout: float = 5.0) -> None:
        self.http = http
        self.camera = camera
        self.timeout = timeout
        self.base = f"http://{_url_host(camera.host)}:{camera.http_port}"
        self._nc = 0

    async def request(self, method: str, path: str, body: bytes | None = None, timeout: float | None = None) -> bytes:
        """One request with Digest retry; return the body of a 2xx answer."""
        url = self.base + path
        headers: dict[str, list[str]] = {}
        if body is not None:
            headers["Content-Type"] = ["application/json"]
        response = await self._send(method, url, headers, body, timeout)
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
            response = await self._send(method, url, headers, body, timeout)
        content = await self._content(response, timeout)
        if response.code == 401:
            raise CameraAuthError(401, "camera refused the credentials" if self.camera.username else
                                  "camera requires a username and password")
        if not 200 <= response.code < 300:
            raise CameraHTTPError(response.code, f"camera answered HTTP {response.code}")
        return content

    async def _send(self, method: str, url: str, headers: dict[str, list[str]], body: bytes | None,
                    timeout: float | None) -> Any:
        try:
            return await self.http.request(method, url, headers=headers, data=body, timeout=timeout or self.timeout)
        except (ConnectError, DNSLookupError, ConnectTimeout, TimeoutError, CancelledError,
                ResponseFailed, ResponseNeverReceived, RequestTransmissionFailed, ConnectionLost) as exc:
            raise CameraUnavailable(f"{self.camera.host}:{self.camera.http_port} did not answer: {_describe(exc)}") from None

    async def _content(self, response: Any, timeout: float | None) -> bytes:
        try:
            content: bytes = await response.content()
            return content
        except (ResponseFailed, ConnectionLost, TimeoutError, CancelledError) as exc:
            raise CameraUnavailable(f"{self.camera.host} broke off its reply: {_describe(exc)}") from None

    async def status(self) -> dict[str, str]:
        """``cmd.cgi?name=status`` as a key → value mapping."""
        body = await self.request("GET", "/cgi-bin/cmd.cgi?name=status")
        return _key_values(clean_reply(body))

    async def hardware(self) -> dict[str, str]:
        """PRODUCT_MODEL, HWADDR and a few harmless keys from hack_ini.cgi (never the secrets)."""
        body = await self.request("GET", "/cgi-bin/hack_ini.cgi")
        values = _key_values(clean_reply(body))
        return {key: values[key] for key in HACK_INI_KEYS if key in values}

    async def command(self, command: str, timeout: float | None = None) -> str:
        """Run a socket command (``POST cmd.cgi?port=socket``); raise CameraCommandError on ``error``."""
        body = json.dumps({"exec": command}).encode("utf-8")
        reply = clean_reply(await self.request("POST", "/cgi-bin/cmd.cgi?port=socket", body, timeout))
        error = command_error(reply)
        if error is not None:
            raise error
        return reply

    async def snapshot(self) -> bytes:
        """One JPEG from ``get_jpeg.cgi``."""
        return await self.request("GET", "/cgi-bin/get_jpeg.cgi")


def _key_values(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _request_uri(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def _drain(response: Any) -> None:
    try:
        await response.content()
    except Exception:  # noqa: BLE001 - the body of a 401 does not matter
        pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (ResponseFailed, ResponseNeverReceived, RequestTransmissionFailed)):
        return "; ".join(str(reason.value) for reason in exc.reasons) or "connection lost"
    if isinstance(exc, (TimeoutError, CancelledError, ConnectTimeout)):
        return "timed out"
    return str(exc) or type(exc).__name__
