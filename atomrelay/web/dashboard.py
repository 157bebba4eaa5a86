"""The dashboard at ``/``: one card per camera, the relay's state, and how to add it to an NVR.

Plain server-rendered HTML (built as elements, so every value is escaped) with a
stylesheet and a little script shipped in the package (``web/static``, served at
``/assets/``): no framework, no CDN, works offline and from the frozen binary. The
script refreshes each card's snapshot thumbnail every few seconds while the page is
visible (the snapshot proxy shares one camera fetch between all open pages), shows times
in the browser's time zone and copies stream URIs. Any relay user may look (HTTP Digest
like the snapshots); only an Administrator sees the webhook URLs.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any, Callable, cast
from urllib.parse import urlsplit

from lxml import html
from lxml.builder import ElementMaker  # type: ignore[import-not-found, unused-ignore]
from lxml.etree import _Element
from twisted.web.resource import Resource

from atomrelay.auth.policy import Caller
from atomrelay.auth.security import Authenticator
from atomrelay.onvif.tokens import profile as profile_token
from atomrelay.web.report import StatusReport
from atomrelay.web.status import DocumentRequest, DocumentResource


class _Html:
    """``E.div(*children, **attributes)``: an HTML element (a typed front for lxml's ElementMaker).

    A dict among the children sets attributes; text children are escaped on output.
    """

    _maker = ElementMaker()

    def __getattr__(self, tag: str) -> Callable[..., _Element]:
        def build(*children: Any, **attributes: str) -> _Element:
            element: _Element = self._maker(tag, *map(_markup_safe, children),
                                            **{name: _NOT_XML.sub("?", value) for name, value in attributes.items()})
            return element

        return build


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
"""Characters no XML document holds (lxml refuses to build an element with one)."""


def _markup_safe(child: Any) -> Any:
    """A text or attribute child with the characters no HTML or XML can hold shown as ``?`` (a camera's model, a
    mediamtx error: text the relay did not write must never stop the page being built); elements as they are."""
    if isinstance(child, str):
        return _NOT_XML.sub("?", child)
    if isinstance(child, dict):
        return {name: _NOT_XML.sub("?", value) if isinstance(value, str) else value for name, value in child.items()}
    return child


E = _Html()
_ASSETS = {
    "dashboard.css": b"text/css; charset=utf-8",
    "dashboard.js": b"text/javascript; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}
_SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
                                b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-store",
}


class _Asset(Resource):
    """One file of ``web/static``, kept in memory."""

    isLeaf = True

    def __init__(self, data: bytes, content_type: bytes) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._data = data
        self._content_type = content_type

    def render_GET(self, request: DocumentRequest) -> bytes:
        """The file (browsers may keep it for an hour)."""
        request.setHeader(b"content-type", self._content_type)
        request.setHeader(b"cache-control", b"max-age=3600")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return self._data


def assets() -> Resource:
    """``/assets/``: the dashboard's stylesheet, script and icon, read from the package."""
    folder = Resource()  # type: ignore[no-untyped-call]
    for name, content_type in _ASSETS.items():
        data = resources.files("atomrelay.web").joinpath("static", name).read_bytes()
        cast(Any, folder).putChild(name.encode("ascii"), _Asset(data, content_type))
    return folder


class DashboardResource(DocumentResource):
    """``/``: the dashboard page for the current generation's ``StatusReport``."""

    def __init__(self, authenticator: Authenticator, report: StatusReport) -> None:
        super().__init__(authenticator, report.document)
        self._mode = report.config.onvif.mode

    def prepare(self, request: DocumentRequest) -> bytes | None:
        """A strict Content-Security-Policy and no caching."""
        for name, value in _SECURITY_HEADERS.items():
            request.setHeader(name, value)
        return None

    def render_document(self, request: DocumentRequest, caller: Caller, document: dict[str, Any]) -> bytes:
        """The page."""
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return page(document, caller, self._mode)


# --- the page ----------------------------------------------------------------------------------


def page(document: dict[str, Any], caller: Caller, mode: str) -> bytes:
    """The dashboard HTML for a status document."""
    relay = document["relay"]
    mediamtx = relay["mediamtx"]
    if mediamtx["reachable"]:
        mtx_text = f"mediamtx {mediamtx['version']} reachable"
    else:
        mtx_text = "mediamtx " + (mediamtx["problem"] or "not answering yet")
    root = E.html(
        {"lang": "en"},
        E.head(
            E.meta(charset="utf-8"),
            E.meta(name="viewport", content="width=device-width, initial-scale=1"),
            E.title("atomrelay"),
            E.link(rel="icon", href="/assets/favicon.svg", type="image/svg+xml"),
            E.link(rel="stylesheet", href="/assets/dashboard.css"),
            E.script(src="/assets/dashboard.js", defer="defer"),
        ),
        E.body(
            E.header(
                E.h1("atomrelay"),
                E.p(
                    {"class": "meta"},
                    f"version {relay['version']} · up ", _duration(relay["uptime"]), f" · {relay['mode']} mode · ",
                    E.span({"class": "ok" if mediamtx["reachable"] else "bad"}, mtx_text),
                ),
            ),
            E.main(
                E.section({"class": "cameras", "aria-label": "cameras"}, *[_card(c) for c in document["cameras"]]),
                _relay_section(relay),
                _setup_section(document, caller, mode),
            ),
            E.footer(
                "generated ", _time(document["generated"]), " · ",
                E.a("JSON", href="/status?format=json"), " · ", E.a("metrics", href="/metrics"),
            ),
        ),
    )
    text: bytes = html.tostring(root, doctype="<!DOCTYPE html>", encoding="utf-8")
    return text + b"\n"


def _time(iso: str) -> _Element:
    return E.time(iso.replace("T", " ").replace("Z", " UTC"), datetime=iso)


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{seconds}s"


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "no"


def _card(camera: dict[str, Any]) -> _Element:
    state = camera["state"]
    facts = [
        ("model", camera["product"] or camera["model"] or "unknown"),
        ("camera", camera["host"]),
        ("PTZ", _yes_no(camera["ptz"])),
    ]
    details = E.dl(*[part for key, value in facts for part in (E.dt(key), E.dd(value))])
    if camera["onvif"]:
        details.append(E.dt("ONVIF"))
        details.append(E.dd(_copyable(camera["onvif"], f"ONVIF address of {camera['name']}")))
    if "webhook" in camera:
        details.append(E.dt("webhook"))
        details.append(E.dd(_copyable(camera["webhook"], f"webhook URL of {camera['name']}")
                            if camera["webhook"] else "no webhook_token set"))
    events = camera["events"]
    return E.article(
        {"class": f"card state-{state}", "data-camera": camera["id"]},
        E.div(
            {"class": "thumb"},
            E.img({"class": "snapshot", "src": camera["snapshot"], "alt": f"snapshot of {camera['name']}",
                   "width": "640", "height": "360"}),
        ),
        E.div(
            {"class": "body"},
            E.h2(E.span({"class": "name"}, camera["name"]), " ",
                 E.span({"class": f"badge {state}", "data-state": state}, state)),
            E.p({"class": "reason"}, camera["reason"], " · since ", _time(camera["since"])),
            details,
            E.h3("Streams"),
            *[_stream(stream) for stream in camera["streams"]],
            E.h3("Recent events"),
            E.ul({"class": "events"}, *[E.li(_time(event["time"]), " ", event["kind"]) for event in events])
            if events else E.p({"class": "muted"}, "none since the relay started"),
        ),
    )


def _stream(stream: dict[str, Any]) -> _Element:
    if stream["ready"] is None:
        status = E.span({"class": "muted"}, "mediamtx state unknown")
    else:
        readers = stream["readers"] or 0
        status = E.span(
            {"class": "ok" if stream["ready"] else "muted"},
            ("ready" if stream["ready"] else "idle (starts on demand)") + f" · {readers} reader{'s' * (readers != 1)}",
        )
    links = [E.a(name, href=stream[key], target="_blank", rel="noopener")
             for key, name in (("webrtc", "WebRTC"), ("hls", "HLS")) if stream[key]]
    return E.div(
        {"class": "stream"},
        E.p(
            E.b(stream["name"]),
            f" {stream['codec'].upper()} {stream['width']}×{stream['height']} {stream['fps']} fps · audio "
            f"{stream['audio']} · ",
            E.code(stream["path"]), " ", status,
        ),
        _copyable(stream["rtsp"], f"RTSP address of {stream['path']}"),
        E.p({"class": "links"}, *[part for link in links for part in (link, " ")]) if links else "",
    )


def _copyable(text: str, label: str) -> _Element:
    return E.div(
        {"class": "copyable"},
        E.input({"type": "text", "readonly": "readonly", "value": text, "aria-label": label}),
        E.button({"type": "button", "class": "copy"}, "Copy"),
    )


def _relay_section(relay: dict[str, Any]) -> _Element:
    mediamtx = relay["mediamtx"]
    last = mediamtx["last_reconcile"]
    rows = [
        ("version", relay["version"]),
        ("running since", _time(relay["started"])),
        ("mode", relay["mode"]),
        ("mediamtx", f"{mediamtx['version'] or 'version unknown'}; "
                     + ("reachable" if mediamtx["reachable"] else mediamtx["problem"] or "not answering yet")),
        ("last reconcile", E.span(_time(last["time"]), " · ", last["result"]) if last else "none yet"),
    ]
    details = E.dl(*[part for key, value in rows for part in (E.dt(key), E.dd(value))])
    details.append(E.dt("ONVIF device service" + ("s" if len(relay["onvif"]) > 1 else "")))
    details.append(E.dd(*[_copyable(url, "ONVIF device service address") for url in relay["onvif"]]))
    subscriptions = relay["subscriptions"]
    table: _Element
    if subscriptions:
        table = E.table(
            E.thead(E.tr(*[E.th(title) for title in ("kind", "user", "from", "consumer", "ends in")])),
            E.tbody(*[
                E.tr(E.td(sub["kind"]), E.td(sub["user"]), E.td(sub["from"]), E.td(sub["consumer"] or "—"),
                     E.td(f"{sub['expires_in']} s"))
                for sub in subscriptions
            ]),
        )
    else:
        table = E.p({"class": "muted"}, "no live event subscriptions")
    return E.section({"class": "relay"}, E.h2("Relay"), details, E.h3("Event subscriptions"), table)


def _setup_section(document: dict[str, Any], caller: Caller, mode: str) -> _Element:
    user = caller.username or "<relay user>"
    devices = []
    for camera in document["cameras"]:
        if camera["onvif"]:
            address = urlsplit(camera["onvif"])
            devices.append((camera, address.hostname or "", address.port or 80))
    if not devices:
        return E.section({"class": "setup"}, E.h2("How to add this to…"), E.p("No ONVIF device is configured."))
    _, host, port = devices[0]
    per_camera = mode == "per_camera"
    where = (f"one ONVIF device per camera on {host}, ports " + ", ".join(str(p) for _, _, p in devices)
             if per_camera else f"one ONVIF device at {host} port {port} with every camera as a profile")
    frigate = ["cameras:"]
    for camera, cam_host, cam_port in devices:
        rtsp = camera["streams"][0]["rtsp"] if camera["streams"] else ""
        frigate += [
            f"  {camera['id']}:",
            "    ffmpeg:",
            "      inputs:",
            f"        - path: {rtsp}",
            "          roles: [detect, record]",
            "    onvif:",
            f"      host: {cam_host}",
            f"      port: {cam_port}",
            f"      user: {user}",
            "      password: <password>",
        ]
        if not per_camera and camera["streams"]:
            frigate.append(f"      profile: {profile_token(camera['id'], camera['streams'][0]['name'])}")

    def field_list(*pairs: tuple[str, str]) -> _Element:
        return E.dl(*[part for key, value in pairs for part in (E.dt(key), E.dd(E.code(value)))])

    ports = ", ".join(str(p) for _, _, p in devices) if per_camera else str(port)
    guides = [
        ("Home Assistant", E.div(
            E.p("Settings → Devices & services → Add integration → ONVIF, set up by hand"
                + (", once per camera:" if per_camera else ":")),
            field_list(("Host", host), ("Port", ports), ("Username", user), ("Password", "<password>")),
            E.p({"class": "muted"}, "Home Assistant treats an ONVIF device as one camera: onvif.mode: per_camera "
                                    "suits it best.") if not per_camera else "",
        )),
        ("Frigate", E.div(E.p("In Frigate's config.yml (ONVIF is for PTZ; the video comes from the RTSP path):"),
                          E.pre(E.code("\n".join(frigate))))),
        ("Blue Iris", E.div(
            E.p("Add camera → Network IP → Make: Generic/ONVIF; then Find/inspect" +
                (" (once per camera):" if per_camera else " and pick each camera's profile:")),
            field_list(("Address", host), ("ONVIF port", ports), ("User", user)),
        )),
        ("Synology Surveillance Station", E.div(
            E.p("IP Camera → Add → Add camera → Brand: [ONVIF]" + (", once per camera:" if per_camera else ":")),
            field_list(("IP address", host), ("Port", ports), ("Username", user)),
        )),
        ("UniFi Protect", E.div(
            E.p("Settings → Advanced → Discover third-party cameras, then adopt with the relay user. Protect takes "
                "one camera per IP address: use onvif.mode: per_camera with cameras[].onvif_bind set to an address "
                "of its own for each camera."),
            field_list(("Address", host), ("Port", ports), ("Username", user)),
        )),
    ]
    return E.section(
        {"class": "setup"},
        E.h2("How to add this to…"),
        E.p(f"This relay is {where}. Any relay user works; Operator or Administrator for PTZ."),
        *[E.details(E.summary(name), body) for name, body in guides],
    )

