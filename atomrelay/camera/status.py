"""``GET /status`` on the relay's HTTP port: every camera's health, as JSON or a small HTML table.

Any relay user may look (HTTP Digest, or Basic when ``onvif.http_basic`` is on); no
credentials get a 401 with the Authenticator's challenges. JSON unless the client
prefers HTML (a browser's ``Accept``) or asks with ``?format=html``::

    {"cameras": [{"id": "swing", "name": "...", "host": "192.0.2.10", "model": "ATOM_CAKP1JZJP",
                  "product": "ATOM Cam Swing", "ptz": true, "state": "online",
                  "reason": "HTTP and RTSP answer", "since": "2026-01-02T03:04:05Z"}],
     "generated": "2026-01-02T03:04:35Z"}

Nothing secret is shown: no credentials, no webhook tokens.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any, Callable, Protocol, Sequence, cast

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource

from atomrelay.camera.health import HealthState
from atomrelay.camera.model import ModelFacts
from atomrelay.clock import Clock
from atomrelay.config import CameraConfig
from atomrelay.onvif.security import Authenticator


class _Request(Protocol):
    args: dict[bytes, list[bytes]]

    def getHeader(self, key: bytes) -> bytes | None: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def setResponseCode(self, code: int) -> None: ...


class FactsLookup(Protocol):
    """The part of ``ModelRegistry`` the page uses."""

    def facts(self, camera_id: str) -> ModelFacts | None: ...


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class StatusResource(Resource):
    """The ``/status`` leaf resource."""

    isLeaf = True

    def __init__(
        self,
        clock: IReactorTime,
        authenticator: Authenticator,
        cameras: Sequence[CameraConfig],
        health: Callable[[str], HealthState],
        models: FactsLookup | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._clock = cast(Clock, clock)
        self._authenticator = authenticator
        self._cameras = tuple(cameras)
        self._health = health
        self._models = models

    def report(self) -> dict[str, Any]:
        """The status document."""
        rows = []
        for camera in self._cameras:
            state = self._health(camera.id)
            facts = self._models.facts(camera.id) if self._models is not None else None
            rows.append({
                "id": camera.id,
                "name": camera.name,
                "host": camera.host,
                "model": facts.product_model if facts is not None else None,
                "product": facts.product if facts is not None else None,
                "ptz": facts.ptz if facts is not None else None,
                "state": state.state,
                "reason": state.reason,
                "since": _iso(state.since),
            })
        return {"cameras": rows, "generated": _iso(self._clock.seconds())}

    def render_GET(self, request: _Request) -> bytes:
        """Answer with the report, after checking the credentials."""
        if self._authenticator.authenticate_http(cast(Any, request)) is None:
            self._authenticator.challenge(cast(Any, request))
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Authentication required.\n"
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"vary", b"Accept")
        report = self.report()
        if _wants_html(request):
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return _html(report).encode("utf-8")
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(report, indent=1).encode("utf-8") + b"\n"


def _wants_html(request: _Request) -> bool:
    chosen = request.args.get(b"format", [b""])[0].lower()
    if chosen in (b"html", b"json"):
        return chosen == b"html"
    accept = (request.getHeader(b"accept") or b"").lower()
    return b"text/html" in accept


_COLOURS = {"online": "#2e7d32", "degraded": "#ef6c00", "offline": "#c62828"}


def _html(report: dict[str, Any]) -> str:
    rows = []
    for camera in report["cameras"]:
        colour = _COLOURS.get(camera["state"], "#555")
        cells = [
            html.escape(camera["id"]),
            html.escape(camera["name"]),
            html.escape(camera["host"]),
            html.escape(camera["product"] or "unknown"),
            "yes" if camera["ptz"] else "no",
            f'<b style="color:{colour}">{html.escape(camera["state"])}</b>',
            html.escape(camera["reason"]),
            html.escape(camera["since"]),
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    head = "".join(f"<th>{title}</th>" for title in
                   ("id", "name", "host", "model", "PTZ", "state", "reason", "since (UTC)"))
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>atomrelay status</title>"
        "<style>body{font-family:sans-serif}td,th{padding:4px 8px;text-align:left;border-bottom:1px solid #ddd}"
        "</style></head><body><h1>atomrelay cameras</h1>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table>"
        f"<p>generated {html.escape(report['generated'])}</p></body></html>\n"
    )
