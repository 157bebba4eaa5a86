"""Shared pieces of the Media/Media2 tests: a config with every stream shape, and a harness
that calls handlers directly (Clock-free: the media services never read the time)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import pytest
from lxml import etree
from lxml.builder import ElementMaker
from lxml.etree import _Element

from atomrelay.auth.policy import Caller
from atomrelay.config import CameraConfig, Config, parse_config
from atomrelay.onvif.base import RequestContext
from atomrelay.onvif.media import MediaService
from atomrelay.onvif.media2 import Media2Service
from atomrelay.onvif.media_model import MediaModel
from atomrelay.state import StateStore
from atomrelay.xml import ns
from atomrelay.xml.soap import SoapFault
from tests.helpers import settled
from tests.onvif import schema

HOST = "192.0.2.7:8080"
ADMIN = Caller("admin", "Administrator")
OPERATOR = Caller("operator", "Operator")
VIEWER = Caller("viewer", "User")
NSMAP = {"trt": ns.TRT, "tr2": ns.TR2, "tt": ns.TT}
DOCBOOK = "{http://docbook.org/ns/docbook}"

TRT = ElementMaker(namespace=ns.TRT, nsmap={"trt": ns.TRT, "tt": ns.TT})
TR2 = ElementMaker(namespace=ns.TR2, nsmap={"tr2": ns.TR2, "tt": ns.TT})
TT = ElementMaker(namespace=ns.TT, nsmap={"tt": ns.TT})

CAMERAS = """\
  - id: cam2
    name: ATOM Cam 2
    host: 192.0.2.10
    streams:
      - {name: main, rtsp_path: video0_unicast, codec: h264, audio: transcode, fps: 20, bitrate: 2048}
      - {name: sub, rtsp_path: video1_unicast, codec: h265, audio: transcode,
         width: 640, height: 360, fps: 15, bitrate: 512}
  - id: swing
    name: ATOM Cam Swing
    host: 192.0.2.11
    model: ATOM_CAKP1JZJP
    streams:
      - {name: main, rtsp_path: video0_unicast, audio: none, fps: 25, bitrate: 3000}
      - {name: sub, rtsp_path: video1_unicast, codec: h265, audio: passthrough, audio_codec: opus, width: 640, height: 360}
  - id: wyze
    name: Wyze Cam v3
    host: 192.0.2.12
    streams:
      - {name: hd, rtsp_path: video2_unicast, codec: h265, audio: passthrough}
  - id: aac
    name: Passthrough AAC
    host: 192.0.2.13
    streams:
      - {name: main, rtsp_path: video0_unicast, audio: passthrough, audio_codec: aac, width: 1280, height: 720}
"""
"""Every stream shape: H.264 + G.711, H.265 + AAC, no audio, Opus and AAC passthrough, unknown passthrough."""


def make_config(state_dir: Path, cameras: str = CAMERAS, max_profiles: int = 12) -> Config:
    """A relay config with the given camera list (YAML block under ``cameras:``)."""
    return parse_config(
        "onvif:\n"
        f"  max_profiles: {max_profiles}\n"
        "  users:\n"
        "    - {username: admin, password: secret, role: Administrator}\n"
        f"state_dir: {state_dir}\n"
        "cameras:\n" + cameras
    )


def ptz_element(camera: CameraConfig) -> _Element:
    """A minimal valid ``tt:PTZConfiguration`` such as the PTZ service will hand over."""
    return TT.PTZConfiguration(
        {"token": f"{camera.id}.ptzc"},
        TT.Name(f"{camera.name} PTZ"),
        TT.UseCount("1"),
        TT.NodeToken(f"{camera.id}.ptz"),
        TT.DefaultContinuousPanTiltVelocitySpace(
            "http://www.onvif.org/ver10/tptz/PanTiltSpaces/VelocityGenericSpace"
        ),
    )


def swing_only_ptz(camera: CameraConfig) -> _Element | None:
    """The PTZ hook: the Swing (the one model with motors) has a PTZ configuration."""
    return ptz_element(camera) if camera.model == "ATOM_CAKP1JZJP" else None


class MediaHarness:
    """MediaModel + MediaService + Media2Service over a state_dir; handlers called directly."""

    def __init__(
        self,
        state_dir: Path,
        cameras: str = CAMERAS,
        max_profiles: int = 12,
        ptz: Callable[[CameraConfig], _Element | None] | None = None,
        device_id: str = "",
    ) -> None:
        self.state_dir = state_dir
        self.config = make_config(state_dir, cameras, max_profiles)
        self.store = StateStore(state_dir)
        self.model = MediaModel(
            self.config.cameras,
            self.store,
            self.config.mediamtx.rtsp_port,
            self.config.onvif.max_profiles,
            device_id=device_id,
            ptz_configuration=ptz,
        )
        self.media = MediaService(self.model).service()
        self.media2 = Media2Service(self.model).service()

    def call(self, name: str, *children: Any, caller: Caller = ADMIN, host: str = HOST, v2: bool = False) -> _Element:
        """Run the Media (or Media2) handler ``name``; check the reply's name and schema validity."""
        service = self.media2 if v2 else self.media
        maker = TR2 if v2 else TRT
        context = RequestContext(body=maker(name, *children), caller=caller, host=host, service_path=service.path)
        result = service.operations[name].handler(context)
        if inspect.isawaitable(result):
            result = settled(result)
        assert isinstance(result, etree._Element)
        assert result.tag == ns.q(service.namespace, name + "Response")
        schema.validate(result)
        return result

    def call2(self, name: str, *children: Any, caller: Caller = ADMIN, host: str = HOST) -> _Element:
        """Run the Media2 handler ``name`` (see ``call``)."""
        return self.call(name, *children, caller=caller, host=host, v2=True)

    def fault(self, name: str, *children: Any, caller: Caller = ADMIN, v2: bool = False) -> SoapFault:
        """The SoapFault the handler raises for this request."""
        with pytest.raises(SoapFault) as info:
            self.call(name, *children, caller=caller, v2=v2)
        return info.value


def tokens_of(element: _Element, path: str) -> list[str]:
    """The ``token`` attributes of the elements at ``path`` (prefixes trt/tr2/tt)."""
    return [e.get("token") or "" for e in element.findall(path, NSMAP)]


def resolutions(element: _Element) -> list[tuple[str, str]]:
    """(Width, Height) of every ``tt:ResolutionsAvailable`` child."""
    return [
        (text(r, "tt:Width"), text(r, "tt:Height")) for r in element.findall("tt:ResolutionsAvailable", NSMAP)
    ]


def text(element: _Element, path: str) -> str:
    """The text at ``path`` below ``element`` (must exist)."""
    found = element.find(path, NSMAP)
    assert found is not None, path
    return found.text or ""


def stream_setup(stream: str = "RTP-Unicast", protocol: str = "RTSP") -> _Element:
    """A Media1 ``trt:StreamSetup``."""
    return TRT.StreamSetup(TT.Stream(stream), TT.Transport(TT.Protocol(protocol)))


def faults(fault: SoapFault) -> tuple[str, ...]:
    """A fault as (code, *subcodes) for compact asserts."""
    return (fault.code, *fault.subcodes)


def spec_access_classes(path: Path) -> dict[str, str]:
    """Operation title -> the role="access" paragraph of its section in a spec DocBook file."""
    classes: dict[str, str] = {}
    for section in etree.parse(str(path)).iter(DOCBOOK + "section"):
        title = section.find(DOCBOOK + "title")
        access = next((p for p in section.iter(DOCBOOK + "para") if p.get("role") == "access"), None)
        if title is not None and access is not None:
            classes.setdefault("".join("".join(title.itertext()).split()), (access.text or "").strip())
    return classes
