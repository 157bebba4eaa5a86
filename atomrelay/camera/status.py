"""``GET /status`` on the relay's HTTP port: the status document as JSON, for scripts.

Any relay user may look (HTTP Digest, or Basic when ``onvif.http_basic`` is on); no
credentials get a 401 with the Authenticator's challenges. The document (its keys are
listed in the README and kept stable) comes from ``report(caller, host)``; a browser
(``Accept: text/html``, or ``?format=html``) is sent to the dashboard at ``/`` instead.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Protocol, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from atomrelay.onvif.base import Caller
from atomrelay.onvif.security import Authenticator, HttpRequest

Report = Callable[[Caller, Any], Awaitable[dict[str, Any]]]
"""Builds the document for a verified caller and the request (its Host header names the relay)."""


class _Request(HttpRequest, Protocol):
    args: dict[bytes, list[bytes]]

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def notifyFinish(self) -> Deferred[None]: ...


class StatusResource(Resource):
    """The ``/status`` leaf resource."""

    isLeaf = True
    log = Logger()

    def __init__(self, authenticator: Authenticator, report: Report) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._authenticator = authenticator
        self._report = report

    def render_GET(self, request: _Request) -> bytes | int:
        """Answer with the document, after checking the credentials."""
        caller = self._authenticator.authenticate_http(request)
        if caller is None:
            self._authenticator.challenge(request)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Authentication required.\n"
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"vary", b"Accept")
        if _wants_html(request):
            request.setResponseCode(303)
            request.setHeader(b"location", b"/")
            return b""
        gone: list[bool] = []

        async def answer() -> None:
            document = await self._report(caller, request)
            if not gone:
                request.setHeader(b"content-type", b"application/json")
                request.write(json.dumps(document, indent=1).encode("utf-8") + b"\n")
                request.finish()

        def failed(failure: Failure) -> None:
            self.log.failure("the status document failed", failure)
            if not gone:
                request.setResponseCode(500)
                request.finish()

        cast(Any, request.notifyFinish()).addErrback(lambda _: gone.append(True))
        Deferred.fromCoroutine(answer()).addErrback(failed)
        return NOT_DONE_YET


def _wants_html(request: _Request) -> bool:
    chosen = request.args.get(b"format", [b""])[0].lower()
    if chosen in (b"html", b"json"):
        return chosen == b"html"
    accept = (request.getHeader(b"accept") or b"").lower()
    return b"text/html" in accept
