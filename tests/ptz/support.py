"""A relay with the PTZ and Imaging services over simulated cameras, driven through StubTreq on one Clock."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree
from lxml.etree import _Element
from treq.testing import StubTreq
from twisted.web.resource import Resource

from atomrelay.auth.security import Authenticator
from atomrelay.camera.health import OFFLINE, ONLINE, HealthState
from atomrelay.camera.model import ModelRegistry
from atomrelay.camera.ptz import PtzController
from atomrelay.config import CameraConfig, User
from atomrelay.onvif.imaging import ImagingService
from atomrelay.onvif.ptz import PtzService
from atomrelay.onvif.server import OnvifResource
from atomrelay.state import StateStore
from atomrelay.xml import ns
from atomrelay.xml.soap import Maker
from tests.camera.support import CAM2, SWING, Bench, camera_config
from tests.onvif import schema

USERS = {
    "admin": User("admin", "admin-secret", "Administrator"),
    "viewer": User("viewer", "viewer-secret", "User"),
}
TPTZ = Maker(ns.TPTZ, {"tptz": ns.TPTZ, "tt": ns.TT})
TIMG = Maker(ns.TIMG, {"timg": ns.TIMG, "tt": ns.TT})
TT = Maker(ns.TT, {"tt": ns.TT})
SOAP = Maker(ns.SOAP12, {"s": ns.SOAP12})
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


@dataclass
class Reply:
    """One SOAP answer: HTTP status and the Body's first element (a response or a Fault)."""

    status: int
    payload: _Element

    @property
    def fault(self) -> bool:
        """Whether this is a SOAP Fault."""
        return self.payload.tag == ns.q(ns.SOAP12, "Fault")

    @property
    def subcodes(self) -> list[str]:
        """The fault's ter: subcodes, outermost first."""
        values = self.payload.iterfind(f".//{{{ns.SOAP12}}}Subcode/{{{ns.SOAP12}}}Value")
        return [(v.text or "").split(":", 1)[1] for v in values]

    @property
    def code(self) -> str:
        """Sender or Receiver."""
        value = self.payload.find(f"{{{ns.SOAP12}}}Code/{{{ns.SOAP12}}}Value")
        return (value.text or "").split(":", 1)[1] if value is not None else ""

    @property
    def reason(self) -> str:
        """The fault's reason text."""
        text = self.payload.find(f"{{{ns.SOAP12}}}Reason/{{{ns.SOAP12}}}Text")
        return text.text or "" if text is not None else ""

    def find(self, path: str) -> _Element:
        """The first descendant at ``path`` (``tt:``/``tptz:``/``timg:`` prefixes)."""
        found = self.payload.find(path, {"tt": ns.TT, "tptz": ns.TPTZ, "timg": ns.TIMG})
        assert found is not None, etree.tostring(self.payload)
        return found


class Relay:
    """PTZ + Imaging for a Swing (``swing``) and an ATOM Cam 2 (``cam2``), health set by the test."""

    def __init__(self, state_dir: Path, bench: Bench | None = None, max_presets: int = 4) -> None:
        self.bench = bench or Bench()
        if not self.bench.cameras:
            self.bench.add(camera_config("swing", model=SWING, fov=(100.0, 60.0)), SWING)
            self.bench.add(camera_config("cam2", model=CAM2), CAM2)
        self.cameras: list[CameraConfig] = list(self.bench.cameras.values())
        self.store = StateStore(state_dir)
        self.models = ModelRegistry(self.bench.clock, self.cameras, self.bench.clients, self.store)
        self.controllers = {
            camera.id: PtzController(self.bench.clock, camera, self.bench.clients[camera.id], self.models, self.store,
                                     max_presets=max_presets)
            for camera in self.cameras
        }
        self.health: dict[str, HealthState] = {c.id: HealthState(ONLINE, "HTTP and RTSP answer", 0.0) for c in self.cameras}
        self.ptz = PtzService(self.bench.clock, self.cameras, self.controllers, self.health.__getitem__)
        self.imaging = ImagingService(self.cameras, self.bench.clients, self.health.__getitem__)
        authenticator = Authenticator(self.bench.clock, USERS.get, 300.0, http_basic=True)
        root = Resource()
        root.putChild(b"onvif", OnvifResource([self.ptz.service(), self.imaging.service()], authenticator, None))
        self.stub = StubTreq(root)
        self.bench.stubs.append(self.stub)

    @property
    def sim(self) -> Any:
        """The Swing's simulator."""
        return self.bench.sims["swing"]

    def offline(self, camera_id: str = "swing", reason: str = "HTTP 127.0.0.1:80 does not answer") -> None:
        """Make the health lookup say the camera is offline."""
        self.health[camera_id] = HealthState(OFFLINE, reason, 1.0)

    def call(self, operation: _Element, user: str = "admin", path: str = "/onvif/ptz_service") -> Reply:
        """POST one operation; pump the Clock until the answer is in. Successful payloads are XSD-validated."""
        envelope = etree.tostring(SOAP("Envelope", SOAP("Body", operation)))
        credentials = base64.b64encode(f"{user}:{USERS[user].password}".encode()).decode()
        deferred = self.stub.request(
            "POST", "http://relay.test" + path, data=envelope,
            headers={"Content-Type": ["application/soap+xml"], "Authorization": [f"Basic {credentials}"]},
        )
        deferred.addCallback(lambda r: self.stub.content(r).addCallback(lambda body: (r.code, body)))
        status, body = self.bench.wait(deferred, limit=30)
        root = etree.fromstring(body, _PARSER)
        payload = root.find(f"{{{ns.SOAP12}}}Body")[0]
        reply = Reply(status, payload)
        if not reply.fault:
            schema.validate(payload)
        return reply


def profile(camera_id: str = "swing", stream: str = "main") -> _Element:
    """A tptz:ProfileToken element."""
    return TPTZ("ProfileToken", f"{camera_id}.{stream}")


def vector(tag: str, x: float, y: float, space: str | None = None, maker: Maker = TPTZ, zoom: bool = False) -> _Element:
    """A PTZVector/PTZSpeed argument with a PanTilt (and optionally a Zoom)."""
    attributes = {"x": repr(x), "y": repr(y)}
    if space is not None:
        attributes["space"] = space
    parts = [TT("PanTilt", attributes)]
    if zoom:
        parts.append(TT("Zoom", {"x": "0"}))
    return maker(tag, *parts)
