"""The ONVIF PTZ service over SOAP: every answer XSD-valid, every refusal the PTZ spec's fault."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lxml import etree

from atomrelay.onvif.ptz import (
    POSITION_GENERIC,
    SPEED_GENERIC,
    TRANSLATION_FOV,
    TRANSLATION_GENERIC,
    VELOCITY_GENERIC,
)
from atomrelay.xml import ns
from atomrelay.xml.soap import Maker
from atomrelay.xml.xstypes import format_duration, parse_duration
from tests.onvif import schema
from tests.ptz.support import TPTZ, TT, Relay, profile, vector

TRT = Maker(ns.TRT, {"trt": ns.TRT, "tt": ns.TT})


@pytest.fixture
def relay(tmp_path: Path) -> Relay:
    """The relay with a Swing and an ATOM Cam 2."""
    return Relay(tmp_path)


def test_capabilities(relay: Relay) -> None:
    """GetServiceCapabilities says MoveStatus and StatusPosition; it is also the GetServices capability."""
    reply = relay.call(TPTZ("GetServiceCapabilities"))
    capabilities = reply.find("tptz:Capabilities")
    assert capabilities.get("MoveStatus") == capabilities.get("StatusPosition") == "true"
    assert relay.ptz.service().capabilities is not None


def test_nodes(relay: Relay) -> None:
    """Only the Swing has a node, with the generic, FOV, velocity and speed spaces, presets and home."""
    nodes = relay.call(TPTZ("GetNodes")).payload.findall(ns.q(ns.TPTZ, "PTZNode"))
    assert [n.get("token") for n in nodes] == ["swing.ptz"]
    spaces = nodes[0].find(ns.q(ns.TT, "SupportedPTZSpaces"))
    uris = [(etree.QName(space).localname, space.findtext(ns.q(ns.TT, "URI"))) for space in spaces]
    assert uris == [
        ("AbsolutePanTiltPositionSpace", POSITION_GENERIC),
        ("RelativePanTiltTranslationSpace", TRANSLATION_GENERIC),
        ("RelativePanTiltTranslationSpace", TRANSLATION_FOV),
        ("ContinuousPanTiltVelocitySpace", VELOCITY_GENERIC),
        ("PanTiltSpeedSpace", SPEED_GENERIC),
    ]
    assert nodes[0].findtext(ns.q(ns.TT, "MaximumNumberOfPresets")) == "4"
    assert nodes[0].findtext(ns.q(ns.TT, "HomeSupported")) == "true"
    single = relay.call(TPTZ("GetNode", TPTZ("NodeToken", "swing.ptz")))
    assert single.find("tptz:PTZNode").get("token") == "swing.ptz"
    missing = relay.call(TPTZ("GetNode", TPTZ("NodeToken", "cam2.ptz")))
    assert (missing.status, missing.code, missing.subcodes) == (400, "Sender", ["InvalidArgVal", "NoEntity"])


def test_configurations_carry_what_home_assistant_and_frigate_need(relay: Relay) -> None:
    """The PTZConfiguration has the three default spaces (schema spelling), speed, timeout and limits."""
    configurations = relay.call(TPTZ("GetConfigurations")).payload.findall(ns.q(ns.TPTZ, "PTZConfiguration"))
    assert [c.get("token") for c in configurations] == ["swing.ptzc"]
    configuration = configurations[0]
    assert configuration.findtext(ns.q(ns.TT, "NodeToken")) == "swing.ptz"
    assert configuration.findtext(ns.q(ns.TT, "DefaultAbsolutePantTiltPositionSpace")) == POSITION_GENERIC
    assert configuration.findtext(ns.q(ns.TT, "DefaultRelativePanTiltTranslationSpace")) == TRANSLATION_GENERIC
    assert configuration.findtext(ns.q(ns.TT, "DefaultContinuousPanTiltVelocitySpace")) == VELOCITY_GENERIC
    assert configuration.findtext(ns.q(ns.TT, "DefaultPTZTimeout")) == "PT10S"
    assert configuration.findtext(ns.q(ns.TT, "UseCount")) == "2"
    one = relay.call(TPTZ("GetConfiguration", TPTZ("PTZConfigurationToken", "swing.ptzc")))
    assert etree.tostring(one.find("tptz:PTZConfiguration")) == etree.tostring(configuration)
    for request in (TPTZ("GetConfiguration", TPTZ("PTZConfigurationToken", "cam2.ptzc")),
                    TPTZ("GetConfigurationOptions", TPTZ("ConfigurationToken", "nope"))):
        assert relay.call(request).subcodes == ["InvalidArgVal", "NoConfig"]


def test_set_configuration_takes_the_configuration_as_it_is_and_refuses_changes(relay: Relay) -> None:
    """SetConfiguration (which a PTZ device shall implement) answers a configuration that changes nothing, however
    its numbers are written; a change (timeout, name) is Sender/InvalidArgVal/ConfigModify naming it; an unknown
    token is NoConfig."""
    import copy

    current = relay.call(TPTZ("GetConfiguration", TPTZ("PTZConfigurationToken", "swing.ptzc"))).find(
        "tptz:PTZConfiguration")

    def set_configuration(change: str | None = None, value: str = "") -> object:
        sent = copy.deepcopy(current)
        sent.find(ns.q(ns.TT, "DefaultPTZTimeout")).text = "PT10.0S"
        sent.find(f"{{{ns.TT}}}DefaultPTZSpeed/{{{ns.TT}}}PanTilt").set("x", "1.0")
        if change == "token":
            sent.set("token", value)
        elif change is not None:
            sent.find(ns.q(ns.TT, change)).text = value
        return relay.call(TPTZ("SetConfiguration", sent, TPTZ("ForcePersistence", "true")))

    answer = set_configuration()
    assert answer.payload.tag == ns.q(ns.TPTZ, "SetConfigurationResponse")
    schema.validate(answer.payload)
    refused = set_configuration("DefaultPTZTimeout", "PT30S")
    assert refused.subcodes == ["InvalidArgVal", "ConfigModify"]
    assert "DefaultPTZTimeout differs" in refused.reason
    assert set_configuration("Name", "renamed").subcodes == ["InvalidArgVal", "ConfigModify"]
    assert set_configuration("token", "cam2.ptzc").subcodes == ["InvalidArgVal", "NoConfig"]


def test_the_ptz_service_takes_use_count_from_the_media_profiles(relay: Relay) -> None:
    """GetConfiguration(s) answer the UseCount the media model counts (user profiles too), when given one."""
    from atomrelay.auth.policy import ANONYMOUS
    from atomrelay.onvif.base import RequestContext
    from atomrelay.onvif.ptz import PtzService

    counted: list[str] = []

    def use_count(token: str) -> int:
        counted.append(token)
        return 5

    service = PtzService(relay.bench.clock, relay.cameras, relay.controllers, use_count=use_count)
    body = TPTZ("GetConfiguration", TPTZ("PTZConfigurationToken", "swing.ptzc"))
    answer = service.get_configuration(RequestContext(body, ANONYMOUS, "relay.test", "/onvif/ptz_service"))
    assert answer.findtext(f"{{{ns.TPTZ}}}PTZConfiguration/{{{ns.TT}}}UseCount") == "5"
    answer = service.get_configurations(RequestContext(TPTZ("GetConfigurations"), ANONYMOUS, "relay.test", "/"))
    assert [c.findtext(ns.q(ns.TT, "UseCount")) for c in answer] == ["5"] and counted == ["swing.ptzc"] * 2


def test_configuration_options(relay: Relay) -> None:
    """GetConfigurationOptions lists the FOV translation space (Frigate's FOV test) and the timeout range."""
    reply = relay.call(TPTZ("GetConfigurationOptions", TPTZ("ConfigurationToken", "swing.ptzc")))
    spaces = reply.find("tptz:PTZConfigurationOptions/tt:Spaces")
    relative = spaces.findall(ns.q(ns.TT, "RelativePanTiltTranslationSpace"))
    assert any("TranslationSpaceFov" in (s.findtext(ns.q(ns.TT, "URI")) or "") for s in relative)
    fov = relative[1]
    assert [fov.findtext(f"{{{ns.TT}}}XRange/{{{ns.TT}}}{m}") for m in ("Min", "Max")] == ["-1", "1"]
    timeout = reply.find("tptz:PTZConfigurationOptions/tt:PTZTimeout")
    assert [timeout.findtext(ns.q(ns.TT, m)) for m in ("Min", "Max")] == ["PT0.1S", "PT120S"]


def test_configuration_hook_for_media_profiles(relay: Relay) -> None:
    """ptz_configuration_element gives a tt:PTZConfiguration for the Swing (valid inside a Profile), None for cam2."""
    swing, cam2 = relay.cameras
    assert relay.ptz.ptz_configuration_element(cam2) is None
    element = relay.ptz.ptz_configuration_element(swing)
    assert element is not None and element.tag == ns.q(ns.TT, "PTZConfiguration")
    assert element is not relay.ptz.ptz_configuration_element(swing)  # a fresh copy every time
    profile_element = TRT(
        "GetProfilesResponse",
        TRT("Profiles", {"token": "swing.main", "fixed": "true"}, TT("Name", "swing main"), element),
    )
    schema.validate(profile_element)


def test_profile_faults(relay: Relay) -> None:
    """An unknown profile is ter:NoProfile, a fixed camera's profile ter:NoPTZProfile."""
    for token, subcode in (("nope.main", "NoProfile"), ("swing.nope", "NoProfile"), ("cam2.main", "NoPTZProfile")):
        reply = relay.call(TPTZ("GetStatus", TPTZ("ProfileToken", token)))
        assert (reply.status, reply.subcodes) == (400, ["InvalidArgVal", subcode])
        reply = relay.call(TPTZ("AbsoluteMove", TPTZ("ProfileToken", token), vector("Position", 0, 0)))
        assert reply.subcodes == ["InvalidArgVal", subcode]


def test_absolute_move_and_status(relay: Relay) -> None:
    """AbsoluteMove answers at once (MOVING), the simulator ends at the mapped degrees, then IDLE at that position."""
    reply = relay.call(TPTZ("AbsoluteMove", profile("swing", "sub"), vector("Position", -0.5, 0.5, POSITION_GENERIC),
                            vector("Speed", 1.0, 1.0, SPEED_GENERIC), ))
    assert reply.status == 200 and relay.sim.moving
    status = relay.call(TPTZ("GetStatus", profile()))
    assert status.find("tptz:PTZStatus/tt:MoveStatus/tt:PanTilt").text == "MOVING"
    relay.bench.until(lambda: not relay.controllers["swing"].moving)
    assert relay.sim.position() == (88.75, 135.0)
    status = relay.call(TPTZ("GetStatus", profile()))
    pan_tilt = status.find("tptz:PTZStatus/tt:Position/tt:PanTilt")
    assert (float(pan_tilt.get("x")), float(pan_tilt.get("y")), pan_tilt.get("space")) == (-0.5, 0.5, POSITION_GENERIC)
    assert status.find("tptz:PTZStatus/tt:MoveStatus/tt:PanTilt").text == "IDLE"
    assert status.payload.find(f".//{{{ns.TT}}}Error") is None
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(relay.bench.clock.seconds()))
    assert status.find("tptz:PTZStatus/tt:UtcTime").text == now


def test_home_assistant_zoom_part_is_ignored(relay: Relay) -> None:
    """Home Assistant's AbsoluteMove with a Zoom part works: the zoom is ignored, the pan/tilt is done."""
    relay.call(TPTZ("AbsoluteMove", profile(), vector("Position", 1.0, 1.0, zoom=True)))
    relay.bench.until(lambda: not relay.controllers["swing"].moving)
    assert relay.sim.position() == (355.0, 180.0)


@pytest.mark.parametrize(
    "request_element, subcode",
    [
        (TPTZ("AbsoluteMove", profile(), vector("Position", 1.5, 0)), "InvalidPosition"),
        (TPTZ("AbsoluteMove", profile(), vector("Position", 0, 0, TRANSLATION_FOV)), "SpaceNotSupported"),
        (TPTZ("AbsoluteMove", profile(), vector("Position", 0, 0), vector("Speed", 2.0, 0)), "InvalidSpeed"),
        (TPTZ("RelativeMove", profile(), vector("Translation", 0, -3, TRANSLATION_FOV)), "InvalidTranslation"),
        (TPTZ("RelativeMove", profile(), vector("Translation", 0.1, 0, POSITION_GENERIC)), "SpaceNotSupported"),
        (TPTZ("ContinuousMove", profile(), vector("Velocity", 1.1, 0)), "InvalidVelocity"),
        (TPTZ("ContinuousMove", profile(), vector("Velocity", 1, 0), TPTZ("Timeout", "PT5M")), "TimeoutNotSupported"),
        (TPTZ("ContinuousMove", profile(), vector("Velocity", 1, 0), TPTZ("Timeout", "soon")), "TimeoutNotSupported"),
        (TPTZ("GotoPreset", profile(), TPTZ("PresetToken", "swing.preset7")), "NoToken"),
        (TPTZ("RemovePreset", profile(), TPTZ("PresetToken", "swing.preset7")), "NoToken"),
        (TPTZ("GotoHomePosition", profile()), "NoHomePosition"),
    ],
)
def test_bad_arguments(relay: Relay, request_element: etree._Element, subcode: str) -> None:
    """Out-of-range values, foreign spaces and unknown tokens get the spec's Sender subcode and move nothing."""
    reply = relay.call(request_element)
    assert (reply.status, reply.code, reply.subcodes) == (400, "Sender", ["InvalidArgVal", subcode])
    relay.bench.pump(1)
    assert [c for c in relay.sim.commands if c.startswith("move ")] == []


def test_relative_fov_and_continuous_and_stop(relay: Relay) -> None:
    """RelativeMove in TranslationSpaceFov uses the camera's FOV; ContinuousMove runs until Stop."""
    relay.call(TPTZ("RelativeMove", profile(), vector("Translation", 0.5, -0.5, TRANSLATION_FOV)))
    relay.bench.until(lambda: not relay.controllers["swing"].moving)
    assert relay.sim.position() == (205.0, 75.0)  # ±half of 0.5 × (100°, 60°)
    relay.call(TPTZ("ContinuousMove", profile(), vector("Velocity", -1.0, 0.0), TPTZ("Timeout", "PT30S")))
    relay.bench.pump(1.0)
    assert relay.call(TPTZ("GetStatus", profile())).find("tptz:PTZStatus/tt:MoveStatus/tt:PanTilt").text == "MOVING"
    relay.call(TPTZ("Stop", profile(), TPTZ("PanTilt", "true"), TPTZ("Zoom", "true")))
    relay.bench.until(lambda: not relay.controllers["swing"].moving)
    stopped = relay.sim.position()
    relay.bench.pump(2.0)
    assert relay.sim.position() == stopped and 130.0 < stopped[0] < 160.0


def test_relative_zero_translation_stops(relay: Relay) -> None:
    """RelativeMove by (0, 0) is a stop."""
    relay.call(TPTZ("ContinuousMove", profile(), vector("Velocity", 1.0, 0.0)))
    relay.bench.pump(1.0)
    relay.call(TPTZ("RelativeMove", profile(), vector("Translation", 0.0, 0.0)))
    relay.bench.until(lambda: not relay.controllers["swing"].moving)
    assert relay.sim.position()[0] < 260.0


def test_presets_over_soap(relay: Relay) -> None:
    """SetPreset, GetPresets, GotoPreset and RemovePreset; names unique; limits and movement refused."""
    relay.call(TPTZ("AbsoluteMove", profile(), vector("Position", 0.5, 0.0)))
    relay.bench.until(lambda: not relay.controllers["swing"].moving)
    created = relay.call(TPTZ("SetPreset", profile(), TPTZ("PresetName", "Door")))
    token = created.find("tptz:PresetToken").text
    assert token == "swing.preset1"
    presets = relay.call(TPTZ("GetPresets", profile())).payload.findall(ns.q(ns.TPTZ, "Preset"))
    assert [(p.get("token"), p.findtext(ns.q(ns.TT, "Name"))) for p in presets] == [(token, "Door")]
    position = presets[0].find(f"{{{ns.TT}}}PTZPosition/{{{ns.TT}}}PanTilt")
    assert (position.get("x"), position.get("y")) == ("0.5", "0")
    again = relay.call(TPTZ("SetPreset", profile(), TPTZ("PresetName", "Door")))
    assert again.subcodes == ["InvalidArgVal", "PresetExist"]
    assert relay.call(TPTZ("SetPreset", profile(), TPTZ("PresetName", "n" * 70))).subcodes == [
        "InvalidArgVal", "InvalidPresetName"]
    relay.call(TPTZ("AbsoluteMove", profile(), vector("Position", -1.0, -1.0)))
    moving = relay.call(TPTZ("SetPreset", profile(), TPTZ("PresetName", "Gate")))
    assert (moving.status, moving.code, moving.subcodes) == (500, "Receiver", ["Action", "MovingPTZ"])
    relay.bench.until(lambda: not relay.controllers["swing"].moving)
    relay.call(TPTZ("GotoPreset", profile(), TPTZ("PresetToken", token), vector("Speed", 0.5, 0.5)))
    relay.bench.until(lambda: not relay.controllers["swing"].moving)
    assert relay.sim.position() == (266.25, 90.0)
    for name in ("B", "C", "D"):
        relay.call(TPTZ("SetPreset", profile(), TPTZ("PresetName", name)))
    full = relay.call(TPTZ("SetPreset", profile(), TPTZ("PresetName", "E")))
    assert (full.code, full.subcodes) == ("Receiver", ["Action", "TooManyPresets"])
    relay.call(TPTZ("RemovePreset", profile(), TPTZ("PresetToken", token)))
    assert len(relay.call(TPTZ("GetPresets", profile())).payload) == 3


def test_home_over_soap(relay: Relay) -> None:
    """SetHomePosition stores the current position (and sends posrec); GotoHomePosition returns there."""
    relay.call(TPTZ("AbsoluteMove", profile(), vector("Position", -1.0, 1.0)))
    relay.bench.until(lambda: not relay.controllers["swing"].moving)
    relay.call(TPTZ("SetHomePosition", profile()))
    assert "posrec" in relay.sim.commands
    relay.call(TPTZ("AbsoluteMove", profile(), vector("Position", 1.0, -1.0)))
    relay.bench.until(lambda: not relay.controllers["swing"].moving)
    relay.call(TPTZ("GotoHomePosition", profile()))
    relay.bench.until(lambda: not relay.controllers["swing"].moving)
    assert relay.sim.position() == (0.0, 180.0)


def test_viewer_may_read_but_not_move(relay: Relay) -> None:
    """A User-level account may GetStatus and GetPresets but not move (ACTUATE)."""
    assert not relay.call(TPTZ("GetPresets", profile()), user="viewer").fault
    refused = relay.call(TPTZ("AbsoluteMove", profile(), vector("Position", 0, 0)), user="viewer")
    assert refused.subcodes == ["NotAuthorized"]


def test_offline_camera(relay: Relay) -> None:
    """For an offline camera moves fault ter:Action with the reason, GetStatus says UNKNOWN with an Error, reads work."""
    relay.call(TPTZ("GetStatus", profile()))
    relay.offline(reason="HTTP 127.0.0.1:80 does not answer (timed out)")
    for request in (
        TPTZ("AbsoluteMove", profile(), vector("Position", 0, 0)),
        TPTZ("RelativeMove", profile(), vector("Translation", 0.1, 0)),
        TPTZ("ContinuousMove", profile(), vector("Velocity", 0.1, 0)),
        TPTZ("Stop", profile()),
        TPTZ("SetPreset", profile()),
        TPTZ("SetHomePosition", profile()),
    ):
        reply = relay.call(request)
        assert (reply.status, reply.code, reply.subcodes) == (500, "Receiver", ["Action"])
        assert reply.reason == "camera swing is offline: HTTP 127.0.0.1:80 does not answer (timed out)"
    status = relay.call(TPTZ("GetStatus", profile()))
    assert status.find("tptz:PTZStatus/tt:MoveStatus/tt:PanTilt").text == "UNKNOWN"
    assert status.find("tptz:PTZStatus/tt:Error").text.startswith("camera offline: HTTP 127.0.0.1:80")
    assert status.find("tptz:PTZStatus/tt:Position/tt:PanTilt").get("x") == "0.0141"  # last known position
    assert not relay.call(TPTZ("GetConfigurations")).fault
    assert not relay.call(TPTZ("GetPresets", profile())).fault


def test_status_reports_an_unreachable_camera_and_failed_moves(relay: Relay) -> None:
    """A camera that stops answering gives UNKNOWN + Error; a failed move shows in Error once it answers again."""
    relay.sim.set_offline(True, mode="refuse")
    status = relay.call(TPTZ("GetStatus", profile()))
    assert status.find("tptz:PTZStatus/tt:MoveStatus/tt:PanTilt").text == "UNKNOWN"
    assert "does not answer" in status.find("tptz:PTZStatus/tt:Error").text
    relay.call(TPTZ("AbsoluteMove", profile(), vector("Position", 0, 0)))
    relay.bench.until(lambda: not relay.controllers["swing"].moving)
    relay.sim.set_offline(False)
    status = relay.call(TPTZ("GetStatus", profile()))
    assert status.find("tptz:PTZStatus/tt:MoveStatus/tt:PanTilt").text == "IDLE"
    assert status.find("tptz:PTZStatus/tt:Error").text.startswith("the last move failed")


def test_durations() -> None:
    """xs:duration parsing and formatting for timeouts."""
    assert parse_duration("PT0.5S") == 0.5 and parse_duration("PT2M") == 120 and parse_duration("P1DT1H") == 90000
    assert format_duration(10.0) == "PT10S" and format_duration(0.1) == "PT0.1S"
    for bad in ("", "P", "PT", "10", "PT-1S", "P1.5D"):
        with pytest.raises(ValueError):
            parse_duration(bad)
