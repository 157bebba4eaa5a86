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

from atomrelay.auth.policy import Caller
from atomrelay.auth.security import Authenticator, HttpRequest

Report = Callable[[Caller, Any], Awaitable[dict[str, Any]]]
"""Builds the document for a verified caller and the request (its Host header names the relay)."""


class DocumentRequest(HttpRequest, Protocol):
    """The part of twisted.web's Request the resources use (typed for mypy)."""

    args: dict[bytes, list[bytes]]

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def notifyFinish(self) -> Deferred[None]: ...


class DocumentResource(Resource):
    """A leaf that answers relay users with a rendering of the status document.

    Subclasses say how: ``prepare`` sets headers (or answers without the document),
    ``render_document`` turns the document into the body.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, authenticator: Authenticator, report: Report) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._authenticator = authenticator
        self._report = report

    def prepare(self, request: DocumentRequest) -> bytes | None:
        """Set the response headers; bytes to answer with them instead of the document."""
        return None

    def render_document(self, request: DocumentRequest, caller: Caller, document: dict[str, Any]) -> bytes:
        """The body for ``document`` (set the Content-Type here)."""
        raise NotImplementedError

    def render_GET(self, request: DocumentRequest) -> bytes | int:
        """Check the credentials, then answer with the rendered document once it is built."""
        caller = self._authenticator.authenticate_http(request)
        if caller is None:
            self._authenticator.challenge(request)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Authentication required: log in as a relay (ONVIF) user.\n"
        early = self.prepare(request)
        if early is not None:
            return early
        gone: list[bool] = []

        async def answer() -> None:
            body = self.render_document(request, caller, await self._report(caller, request))
            if not gone:
                request.write(body)
                request.finish()

        def failed(failure: Failure) -> None:
            self.log.failure("rendering the status document failed", failure)
            if not gone:
                request.setResponseCode(500)
                request.finish()

        cast(Any, request.notifyFinish()).addErrback(lambda _: gone.append(True))
        Deferred.fromCoroutine(answer()).addErrback(failed)
        return NOT_DONE_YET


class StatusResource(DocumentResource):
    """The ``/status`` leaf resource."""

    def prepare(self, request: DocumentRequest) -> bytes | None:
        """No caching; a browser is sent to the dashboard."""
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"vary", b"Accept")
        if _wants_html(request):
            request.setResponseCode(303)
            request.setHeader(b"location", b"/")
            return b""
        return None

    def render_document(self, request: DocumentRequest, caller: Caller, document: dict[str, Any]) -> bytes:
        """The document as JSON."""
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(document, indent=1).encode("utf-8") + b"\n"


def _wants_html(request: DocumentRequest) -> bool:
    chosen = request.args.get(b"format", [b""])[0].lower()
    if chosen in (b"html", b"json"):
        return chosen == b"html"
    accept = (request.getHeader(b"accept") or b"").lower()
    return b"text/html" in accept
