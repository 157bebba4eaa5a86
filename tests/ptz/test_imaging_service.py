"""The ONVIF Imaging service over SOAP: IrCutFilter ↔ night mode on the simulated camera."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from atomrelay.xml import ns
from tests.ptz.support import TIMG, TT, Relay

IMAGING = "/onvif/imaging_service"


@pytest.fixture
def relay(tmp_path: Path) -> Relay:
    """The relay with a Swing and an ATOM Cam 2."""
    return Relay(tmp_path)


def source(camera_id: str = "cam2") -> etree._Element:
    return TIMG("VideoSourceToken", f"{camera_id}.vs")


def settings(*children: etree._Element, camera_id: str = "cam2") -> etree._Element:
    return TIMG("SetImagingSettings", source(camera_id), TIMG("ImagingSettings", *children))


def ir_cut(relay: Relay, camera_id: str = "cam2") -> str:
    reply = relay.call(TIMG("GetImagingSettings", source(camera_id)), path=IMAGING)
    return reply.find("timg:ImagingSettings/tt:IrCutFilter").text or ""


@pytest.mark.parametrize("mode, night", [("ON", "off"), ("OFF", "on"), ("AUTO", "auto")])
def test_ir_cut_filter_round_trip(relay: Relay, mode: str, night: str) -> None:
    """SetImagingSettings sends `night <mode>` (ON = filter in = day = night off) and GetImagingSettings reads it back."""
    sim = relay.bench.sims["cam2"]
    reply = relay.call(settings(TT("IrCutFilter", mode), ), path=IMAGING)
    assert reply.status == 200 and sim.commands[-1] == f"night {night}"
    assert sim.properties["nightVision"] == night
    assert ir_cut(relay) == mode


def test_value_is_read_from_the_camera_not_remembered(relay: Relay) -> None:
    """A mode changed on the camera itself (firmware UI, schedule) is what GetImagingSettings reports."""
    relay.call(settings(TT("IrCutFilter", "ON")), path=IMAGING)
    relay.bench.sims["cam2"].properties["nightVision"] = "on"
    assert ir_cut(relay) == "OFF"
    assert relay.bench.sims["cam2"].commands[-1] == "property nightVision"


def test_options_offer_only_the_ir_cut_filter(relay: Relay) -> None:
    """GetOptions lists ON, OFF, AUTO and nothing the firmware cannot do."""
    options = relay.call(TIMG("GetOptions", source()), path=IMAGING).find("timg:ImagingOptions")
    assert [etree.QName(child).localname for child in options] == ["IrCutFilterModes"] * 3
    assert [child.text for child in options] == ["ON", "OFF", "AUTO"]


def test_move_options_status_and_capabilities(relay: Relay) -> None:
    """No focus: empty MoveOptions and Status; capabilities say no stabilisation and no presets."""
    assert len(relay.call(TIMG("GetMoveOptions", source()), path=IMAGING).find("timg:MoveOptions")) == 0
    assert len(relay.call(TIMG("GetStatus", source()), path=IMAGING).find("timg:Status")) == 0
    capabilities = relay.call(TIMG("GetServiceCapabilities"), path=IMAGING).find("timg:Capabilities")
    assert capabilities.get("ImageStabilization") == "false" and capabilities.get("Presets") == "false"


@pytest.mark.parametrize(
    "children",
    [
        (TT("Brightness", "50"),),
        (TT("IrCutFilter", "ON"), TT("Sharpness", "1")),
        (TT("IrCutFilter", "SOMETIMES"),),
    ],
)
def test_unsupported_settings_are_refused(relay: Relay, children: tuple[etree._Element, ...]) -> None:
    """Anything but a valid IrCutFilter is ter:SettingsInvalid and changes nothing on the camera."""
    commands = list(relay.bench.sims["cam2"].commands)
    reply = relay.call(settings(*children), path=IMAGING)
    assert (reply.status, reply.subcodes) == (400, ["InvalidArgVal", "SettingsInvalid"])
    assert relay.bench.sims["cam2"].commands == commands


def test_unknown_source(relay: Relay) -> None:
    """A video source token of no camera is ter:NoSource."""
    reply = relay.call(TIMG("GetImagingSettings", TIMG("VideoSourceToken", "cam9.vs")), path=IMAGING)
    assert reply.subcodes == ["InvalidArgVal", "NoSource"]


def test_offline_camera(relay: Relay) -> None:
    """An offline camera's settings calls fault ter:Action with the reason; options still answer."""
    relay.offline("cam2", reason="HTTP and RTSP do not answer")
    for request in (TIMG("GetImagingSettings", source()), settings(TT("IrCutFilter", "AUTO"))):
        reply = relay.call(request, path=IMAGING)
        assert (reply.status, reply.code, reply.subcodes) == (500, "Receiver", ["Action"])
        assert reply.reason == "camera cam2 is offline: HTTP and RTSP do not answer"
    assert not relay.call(TIMG("GetOptions", source()), path=IMAGING).fault


def test_camera_error_is_an_action_fault(relay: Relay) -> None:
    """A camera that breaks off mid-call gives ter:Action naming the failure, and the server keeps serving."""
    relay.bench.sims["cam2"].set_offline(True, mode="refuse")
    reply = relay.call(TIMG("GetImagingSettings", source()), path=IMAGING)
    assert reply.subcodes == ["Action"] and "camera cam2 failed" in reply.reason
    relay.bench.sims["cam2"].set_offline(False)
    assert ir_cut(relay) == "AUTO"


def test_imaging_settings_are_namespaced_like_the_wsdl(relay: Relay) -> None:
    """The ImagingSettings element is in the timg namespace and its IrCutFilter in tt."""
    reply = relay.call(TIMG("GetImagingSettings", source("swing")), path=IMAGING)
    holder = reply.find("timg:ImagingSettings")
    assert holder[0].tag == ns.q(ns.TT, "IrCutFilter")
