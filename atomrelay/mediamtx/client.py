"""A treq client for the mediamtx Control API v3 (the parts the relay uses).

Every method returns a Deferred that fires with checked, typed data or fails with a
:class:`MediamtxError` subclass that says what went wrong in words an operator can act
on: unreachable, timed out, refused credentials, an HTTP error with mediamtx's own
``error`` text, or a reply that is not the JSON the OpenAPI spec promises.

Path names contain ``/`` (``<camera>/<stream>``); mediamtx routes them with a gin
catch-all parameter (``/v3/config/paths/get/*name``), so the slash goes into the URL
as it is.
"""

from __future__ import annotations

import json
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar, cast
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from atomrelay.clock import Clock, DelayedCall
from atomrelay.config import MediamtxConfig
from atomrelay.metrics import Registry
from atomrelay.net import BodyTooLarge, describe, is_cancellation, printable, read_body

T = TypeVar("T")

MAX_REPLY_BYTES = 16 * 1024 * 1024
ITEMS_PER_PAGE = 100
MAX_PAGES = 1000


class MediamtxError(Exception):
    """Talking to the mediamtx Control API failed."""


class MediamtxUnavailable(MediamtxError):
    """mediamtx could not be reached: connection refused or lost, name lookup failed, no answer in time."""


class MediamtxBadReply(MediamtxError):
    """mediamtx answered with something that is not the JSON the API promises."""


class MediamtxHTTPError(MediamtxError):
    """mediamtx answered with an HTTP error status; ``message`` is its ``error`` text."""

    def __init__(self, status: int, message: str, what: str = "") -> None:
        self.status = status
        self.message = message
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}HTTP {status}: {message}")


class MediamtxAuthFailed(MediamtxHTTPError):
    """mediamtx refused the relay's API credentials (HTTP 401)."""


class PathExists(MediamtxHTTPError):
    """Adding a path failed because a path configuration with that name exists."""


class PathNotFound(MediamtxHTTPError):
    """The path configuration does not exist."""


class RouteNotFound(MediamtxHTTPError):
    """The server has no such API route (an older mediamtx): a 404 without a JSON error body."""


class MediamtxClient:
    """Calls the mediamtx Control API v3 at ``config.api_url`` with an injected treq ``HTTPClient``.

    Basic auth is sent when ``config.username``/``password`` are set. With a ``clock``
    each call, reply body included, must finish within ``timeout`` seconds of it;
    without one, treq's own timeout (until the reply headers) is used, on treq's
    default reactor. Pass the clock.
    """

    log = Logger()

    def __init__(
        self,
        http: HTTPClient,
        config: MediamtxConfig,
        timeout: float = 5.0,
        clock: IReactorTime | None = None,
        metrics: Registry | None = None,
    ) -> None:
        self._http = http
        self._base = config.api_url.rstrip("/")
        self._auth: tuple[str, str] | None = None
        if config.username is not None and config.password is not None:
            self._auth = (config.username, config.password)
        self._timeout = timeout
        self._clock = cast(Clock, clock) if clock is not None else None
        self._writes = (metrics or Registry()).counter(
            "atomrelay_mediamtx_path_writes_total", "Path configuration writes sent to mediamtx, by kind", ("kind",)
        )

    @property
    def api_url(self) -> str:
        """The API base URL, for log messages."""
        return self._base

    # -- plumbing ---------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T], what: str) -> Deferred[T]:
        """Run ``coroutine`` as a Deferred cancelled after the timeout (mapped to MediamtxUnavailable)."""
        deferred = Deferred.fromCoroutine(coroutine)
        # Without a clock, treq's own timer cancels the request; its cancellation cannot
        # be told from the caller's, and both are reported as no answer.
        timed_out = self._clock is None
        timer: DelayedCall | None = None

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            deferred.cancel()

        if self._clock is not None:
            timer = self._clock.callLater(self._timeout, expire)

        def finished(result: T | Failure) -> T | Failure:
            if timer is not None and timer.active():
                timer.cancel()
            if timed_out and isinstance(result, Failure) and isinstance(result.value, CancelledError):
                raise MediamtxUnavailable(f"{what}: no answer from mediamtx within {self._timeout:g}s")
            return result

        return deferred.addBoth(finished)

    def _url(self, route: str, name: str | None = None) -> str:
        url = f"{self._base}{route}"
        if name is not None:
            url += "/" + quote(name, safe="/")
        return url

    async def _exchange(
        self, method: str, url: str, what: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, bytes, str]:
        """Send one request; return (status, body bytes, content type)."""
        kwargs: dict[str, Any] = {"headers": {"Accept": ["application/json"]}, "unbuffered": True}
        if body is not None:
            kwargs["json"] = dict(body)
        if self._auth is not None:
            kwargs["auth"] = self._auth
        if self._clock is None:
            kwargs["timeout"] = self._timeout
        try:
            response = await self._http.request(method, url, **kwargs)
            content = await read_body(response, MAX_REPLY_BYTES)
        except BodyTooLarge:
            raise MediamtxBadReply(f"{what}: reply larger than {MAX_REPLY_BYTES} bytes") from None
        except CancelledError:
            raise
        except Exception as exc:
            if is_cancellation(exc):
                raise CancelledError() from exc
            raise MediamtxUnavailable(f"{what}: cannot reach mediamtx at {self._base}: {describe(exc)}") from exc
        content_type = (response.headers.getRawHeaders("content-type") or [b""])[0]
        if isinstance(content_type, bytes):
            content_type = content_type.decode("latin-1")
        return int(response.code), content, content_type

    async def _json(
        self, method: str, route: str, name: str | None = None, body: Mapping[str, Any] | None = None
    ) -> Any:
        """One API call; the decoded JSON of a 200 reply, or a typed error."""
        url = self._url(route, name)
        what = f"{method} {route}" + (f"/{name}" if name is not None else "")
        status, raw, content_type = await self._exchange(method, url, what, body)
        if status == 200:
            try:
                return json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise MediamtxBadReply(f"{what}: reply is not JSON: {_snippet(raw)}") from None
        raise _http_error(status, raw, content_type, what)

    # -- API ----------------------------------------------------------------

    def info(self) -> Deferred[dict[str, Any]]:
        """``GET /v3/info``: the Info object, checked to carry string ``version`` and ``started``.

        A new ``started`` value means mediamtx restarted.
        """

        async def call() -> dict[str, Any]:
            reply = _object(await self._json("GET", "/v3/info"), "GET /v3/info")
            if not isinstance(reply.get("version"), str) or not isinstance(reply.get("started"), str):
                raise MediamtxBadReply(f"GET /v3/info: expected string 'version' and 'started', got {_snippet(reply)}")
            reply["version"] = printable(reply["version"])
            return reply

        return self._call(call(), "GET /v3/info")

    def global_config(self) -> Deferred[dict[str, Any]]:
        """``GET /v3/config/global/get``: the global configuration."""

        async def call() -> dict[str, Any]:
            route = "/v3/config/global/get"
            return _object(await self._json("GET", route), "GET " + route)

        return self._call(call(), "GET /v3/config/global/get")

    async def _paged(self, route: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 0
        while True:
            what = f"GET {route} page {page}"
            url_route = f"{route}?page={page}&itemsPerPage={ITEMS_PER_PAGE}"
            reply = _object(await self._json("GET", url_route), what)
            page_items, page_count = reply.get("items"), reply.get("pageCount")
            if not isinstance(page_items, list) or not isinstance(page_count, int) or isinstance(page_count, bool):
                raise MediamtxBadReply(f"{what}: expected 'items' list and integer 'pageCount', got {_snippet(reply)}")
            for item in page_items:
                items.append(_object(item, what + " item"))
            page += 1
            if page >= page_count or not page_items:
                return items
            if page >= MAX_PAGES:
                raise MediamtxBadReply(f"GET {route}: more than {MAX_PAGES} pages (pageCount {page_count})")

    def list_path_confs(self) -> Deferred[dict[str, dict[str, Any]]]:
        """``GET /v3/config/paths/list``, all pages: path configurations by name."""

        async def call() -> dict[str, dict[str, Any]]:
            result: dict[str, dict[str, Any]] = {}
            for item in await self._paged("/v3/config/paths/list"):
                name = item.get("name")
                if not isinstance(name, str) or not name:
                    raise MediamtxBadReply(f"GET /v3/config/paths/list: item without a name: {_snippet(item)}")
                result[name] = item
            return result

        return self._call(call(), "GET /v3/config/paths/list")

    def list_paths(self) -> Deferred[list[dict[str, Any]]]:
        """``GET /v3/paths/list``, all pages: the runtime paths (ready, readers, tracks...)."""
        return self._call(self._paged("/v3/paths/list"), "GET /v3/paths/list")

    def _write(self, method: str, route: str, name: str, conf: Mapping[str, Any] | None) -> Deferred[None]:
        async def call() -> None:
            self.log.debug("mediamtx {method} {route}/{name}", method=method, route=route, name=name)
            self._writes.inc(route.rsplit("/", 1)[1])
            await self._json(method, route, name, conf)

        return self._call(call(), f"{method} {route}/{name}")

    def add_path(self, name: str, conf: Mapping[str, Any]) -> Deferred[None]:
        """``POST /v3/config/paths/add/<name>``; fails with PathExists if it exists."""
        return self._write("POST", "/v3/config/paths/add", name, conf)

    def replace_path(self, name: str, conf: Mapping[str, Any]) -> Deferred[None]:
        """``POST /v3/config/paths/replace/<name>``: set exactly these fields.

        Fails with RouteNotFound on servers without the route, and with PathNotFound
        on servers whose replace does not create missing paths.
        """
        return self._write("POST", "/v3/config/paths/replace", name, conf)

    def delete_path(self, name: str) -> Deferred[None]:
        """``DELETE /v3/config/paths/delete/<name>``; fails with PathNotFound if it does not exist."""
        return self._write("DELETE", "/v3/config/paths/delete", name, None)


def _snippet(value: object, limit: int = 200) -> str:
    """A bounded, printable excerpt of a reply for error messages."""
    if isinstance(value, bytes):
        text = value.decode("utf-8", errors="replace")
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str)[: limit + 1]
    text = printable(text.replace("\n", " ").replace("\r", " "))
    if not text:
        return "(empty)"
    return text if len(text) <= limit else text[:limit] + "..."


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MediamtxBadReply(f"{what}: expected a JSON object, got {_snippet(value)}")
    return value


def _http_error(status: int, raw: bytes, content_type: str, what: str) -> MediamtxHTTPError:
    """The typed error for a non-200 reply."""
    message: str | None = None
    try:
        decoded = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        message = decoded["error"]
    if status == 401:
        return MediamtxAuthFailed(
            status,
            f"{message or _snippet(raw)} (check mediamtx.username/password and mediamtx's API permissions)",
            what,
        )
    if message is None:
        text = _snippet(raw)
        if status == 404:
            return RouteNotFound(status, f"no such API route ({text})", what)
        return MediamtxHTTPError(status, text, what)
    if status == 404 or (status == 400 and message.endswith("not found")):
        return PathNotFound(status, message, what)
    if status == 400 and message == "path already exists":
        return PathExists(status, message, what)
    return MediamtxHTTPError(status, message, what)
