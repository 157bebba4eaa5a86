"""Frigate's and Home Assistant's PTZ/Imaging calls through onvif-zeep-async, on a real loopback relay.

The relay is assembled as the composition root does it: Device, Media (the real
MediaService over a MediaModel whose profiles carry the PTZ service's configuration
hook), PTZ and Imaging services, one PtzController per camera, the SOAP server and the
Authenticator. The cameras are SimulatedCameras on their own loopback ports. Every
element a handler returns is XSD-validated on its way out.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import onvif
import pytest
import pytest_twisted
from onvif import ONVIFCamera
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site
from zeep.exceptions import Fault

from atomrelay.auth.security import Authenticator
from atomrelay.auth.users import UserStore
from atomrelay.camera.client import CameraClient
from atomrelay.camera.model import ModelRegistry
from atomrelay.camera.ptz import PtzController
from atomrelay.config import Config, parse_config
from atomrelay.identity import Identity
from atomrelay.onvif.base import Service
from atomrelay.onvif.device import DeviceService, TimeZone
from atomrelay.onvif.imaging import ImagingService
from atomrelay.onvif.media import MediaService
from atomrelay.onvif.media_model import MediaModel
from atomrelay.onvif.ptz import TRANSLATION_FOV, PtzService, media_profile_lookup
from atomrelay.onvif.server import OnvifResource
from atomrelay.sim.camera import SimulatedCamera, listen_camera
from atomrelay.state import StateStore
from atomrelay.xml import ns
from tests.helpers import poll
from tests.onvif import schema
from tests.onvif.test_zeep_device import aio

pytestmark = [pytest.mark.integration, pytest.mark.aio]

WSDL_DIR = os.path.join(os.path.dirname(onvif.__file__), "wsdl")
IDENTITY = Identity(uuid.UUID("0d0e0a0d-0000-4000-8000-0000000f0001"))


def relay_config(state_dir: Path, swing_port: int, cam2_port: int) -> Config:
    return parse_config(
        f"""\
onvif:
  users:
    - {{username: admin, password: secret, role: Administrator}}
state_dir: {state_dir}
cameras:
  - id: swing
    name: Swing
    host: 127.0.0.1
    http_port: {swing_port}
    fov: [100, 60]
    streams:
      - {{name: main, rtsp_path: video0_unicast, codec: h264}}
      - {{name: sub, rtsp_path: video1_unicast, codec: h265, width: 640, height: 360}}
  - id: cam2
    name: ATOM Cam 2
    host: 127.0.0.1
    http_port: {cam2_port}
    streams:
      - {{name: main, rtsp_path: video0_unicast, codec: h264}}
"""
    )


class Relay:
    """The relay on 127.0.0.1 with a Swing (model read from hack_ini.cgi) and an ATOM Cam 2."""

    def __init__(self, tmp_path: Path) -> None:
        self.swing = SimulatedCamera(reactor, "ATOM_CAKP1JZJP", move_speed_deg_per_s=400.0)
        self.cam2 = SimulatedCamera(reactor, "ATOM_CamV3C")
        self.camera_ports = [listen_camera(reactor, self.swing), listen_camera(reactor, self.cam2)]
        config = relay_config(tmp_path, *(int(p.getHost().port) for p in self.camera_ports))
        store = StateStore(tmp_path)
        users = UserStore(config.onvif.users, store)
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        http = HTTPClient(Agent(reactor, pool=self.pool))
        self.clients = {c.id: CameraClient(http, c, clock=reactor) for c in config.cameras}
        self.models = ModelRegistry(reactor, config.cameras, self.clients, store)
        self.controllers = {
            c.id: PtzController(reactor, c, self.clients[c.id], self.models, store) for c in config.cameras
        }
        self.ptz = PtzService(reactor, config.cameras, self.controllers,
                              profile_camera=lambda token: media_profile_lookup(self.model)(token))
        self.model = MediaModel(config.cameras, store, config.mediamtx.rtsp_port, config.onvif.max_profiles,
                                ptz_configuration=self.ptz.ptz_configuration_element)
        self.models.on_change.append(lambda camera_id, facts: self.model.invalidate())
        services: list[Service] = []
        device = DeviceService(
            clock=reactor, config=config, identity=IDENTITY, users=users, store=store,
            services=lambda: services, reboot=lambda: None, version="0.0.1", zone=TimeZone("UTC0", time.gmtime),
        )
        services += [
            schema.validating(device.service()),
            schema.validating(MediaService(self.model).service()),
            schema.validating(self.ptz.service()),
            schema.validating(ImagingService(config.cameras, self.clients).service()),
        ]
        authenticator = Authenticator(reactor, users.lookup, config.onvif.max_clock_skew, config.onvif.http_basic)
        root = Resource()
        root.putChild(b"onvif", OnvifResource(services, authenticator, None))
        self.port: Any = reactor.listenTCP(0, Site(root), interface="127.0.0.1")

    @property
    def number(self) -> int:
        return int(self.port.getHost().port)

    def idle(self) -> bool:
        return not self.controllers["swing"].moving and not self.swing.moving

    async def stop(self) -> None:
        for controller in self.controllers.values():
            controller.close()
        await self.models.stopService()
        await self.port.stopListening()
        for port in self.camera_ports:
            await port.stopListening()
        await self.pool.closeCachedConnections()


@pytest_twisted.async_yield_fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    running = Relay(tmp_path)
    running.models.startService()
    await poll(lambda: running.models.ptz("swing"), timeout=10, what="the Swing's model")
    try:
        yield running
    finally:
        await running.stop()


def find_by_key(value: Any, key: str) -> Any:
    """Frigate's ``find_by_key``: the first value stored under ``key`` anywhere in a zeep object or dict."""
    mapping = value if isinstance(value, dict) else getattr(value, "__values__", None)
    if not isinstance(mapping, dict):
        return None
    if key in mapping:
        return mapping[key]
    for item in mapping.values():
        found = find_by_key(item, key)
        if found is not None:
            return found
    return None


async def connect(relay: Relay) -> ONVIFCamera:
    camera = ONVIFCamera("127.0.0.1", relay.number, "admin", "secret", WSDL_DIR, no_cache=True)
    await aio(camera.update_xaddrs())
    return camera


@pytest_twisted.ensureDeferred
async def test_frigate_ptz_flow(relay: Relay) -> None:
    """Frigate's init and commands work, and the simulated motor ends where the documented mapping says."""
    camera = await connect(relay)
    try:
        assert camera.xaddrs[ns.TPTZ] == f"http://127.0.0.1:{relay.number}/onvif/ptz_service"
        media = await aio(camera.create_media_service())
        ptz = await aio(camera.create_ptz_service())
        imaging = await aio(camera.create_imaging_service())

        # Frigate's _init_onvif: a profile with an encoder and a continuous velocity space.
        profiles = await aio(media.GetProfiles())
        usable = [p for p in profiles if p.VideoEncoderConfiguration and p.PTZConfiguration
                  and p.PTZConfiguration.DefaultContinuousPanTiltVelocitySpace]
        assert [p.token for p in usable] == ["swing.main"]
        assert all(p.PTZConfiguration for p in profiles if p.token.startswith("swing."))
        profile = usable[0]
        assert profile.PTZConfiguration.DefaultAbsolutePantTiltPositionSpace
        assert profile.PTZConfiguration.DefaultRelativePanTiltTranslationSpace
        assert next(p for p in profiles if p.token == "cam2.main").PTZConfiguration is None
        sources = await aio(media.GetVideoSources())
        assert sources[0].token == "swing.vs"

        request = ptz.create_type("GetConfigurationOptions")
        request.ConfigurationToken = profile.PTZConfiguration.token
        options = await aio(ptz.GetConfigurationOptions(request))
        fov = [s for s in options.Spaces.RelativePanTiltTranslationSpace if "TranslationSpaceFov" in s.URI]
        assert fov and (fov[0].XRange.Min, fov[0].XRange.Max) == (-1, 1)
        configurations = await aio(ptz.GetConfigurations())
        assert [c.token for c in configurations] == ["swing.ptzc"]
        nodes = await aio(ptz.GetNodes())
        assert nodes[0].HomeSupported is True

        # Frigate's autotracking gate searches the parsed capabilities for MoveStatus wherever zeep put it
        # (the library's older ptz.wsdl has no such attribute, so it lands in _attr_1 as a string).
        capabilities = await aio(ptz.GetServiceCapabilities())
        assert find_by_key(capabilities, "MoveStatus") in (True, "true")
        assert find_by_key(capabilities, "StatusPosition") in (True, "true")
        status = await aio(ptz.GetStatus({"ProfileToken": profile.token}))
        assert status.MoveStatus.PanTilt == "IDLE"
        assert (status.Position.PanTilt.x, status.Position.PanTilt.y) == pytest.approx((0.0141, 0.0), abs=1e-3)
        assert await aio(ptz.GetPresets({"ProfileToken": profile.token})) == []
        settings = await aio(imaging.GetImagingSettings({"VideoSourceToken": sources[0].token}))
        assert settings.Focus is None and settings.IrCutFilter == "AUTO"

        # ContinuousMove + Stop, as Frigate's UI buttons do.
        move = ptz.create_type("ContinuousMove")
        move.ProfileToken = profile.token
        move.Velocity = {"PanTilt": {"x": 0.5, "y": 0}}
        await aio(ptz.ContinuousMove(move))
        await poll(lambda: relay.swing.position()[0] > 200.0, timeout=10, what="panning right")
        await aio(ptz.Stop({"ProfileToken": profile.token, "PanTilt": True, "Zoom": True}))
        await poll(relay.idle, timeout=10, what="stopped")
        stopped = relay.swing.position()
        assert stopped[0] > 200.0 and stopped[1] == 90.0

        # RelativeMove in TranslationSpaceFov (Frigate's autotracking), then wait for IDLE like Frigate.
        move = ptz.create_type("RelativeMove")
        move.ProfileToken = profile.token
        move.Translation = {"PanTilt": {"x": -0.2, "y": 0.4, "space": TRANSLATION_FOV}}
        move.Speed = {"PanTilt": {"x": 1, "y": 1}}
        await aio(ptz.RelativeMove(move))
        await poll(relay.idle, timeout=10, what="relative move done")
        assert relay.swing.position() == pytest.approx((stopped[0] - 10.0, 102.0), abs=0.01)
        status = await aio(ptz.GetStatus({"ProfileToken": profile.token}))
        assert status.MoveStatus.PanTilt == "IDLE"

        # AbsoluteMove, SetPreset, GotoPreset.
        move = ptz.create_type("AbsoluteMove")
        move.ProfileToken = profile.token
        move.Position = {"PanTilt": {"x": 0.25, "y": -0.25}}
        await aio(ptz.AbsoluteMove(move))
        await poll(relay.idle, timeout=10, what="absolute move done")
        assert relay.swing.position() == pytest.approx((221.875, 67.5), abs=0.01)
        token = await aio(ptz.SetPreset({"ProfileToken": profile.token, "PresetName": "Driveway"}))
        presets = await aio(ptz.GetPresets({"ProfileToken": profile.token}))
        assert [(p.token, p.Name.lower()) for p in presets] == [(token, "driveway")]
        move.Position = {"PanTilt": {"x": -1, "y": 1}}
        await aio(ptz.AbsoluteMove(move))
        await poll(relay.idle, timeout=10, what="moved away")
        assert relay.swing.position() == (0.0, 180.0)
        await aio(ptz.GotoPreset({"ProfileToken": profile.token, "PresetToken": token}))
        await poll(relay.idle, timeout=10, what="at the preset")
        assert relay.swing.position() == pytest.approx((221.88, 67.5), abs=0.01)

        with pytest.raises(Fault, match="no PTZ configuration"):
            await aio(ptz.GetStatus({"ProfileToken": "cam2.main"}))
        assert relay.controllers["swing"].queue.busy_answers == 0
    finally:
        await aio(camera.close())


@pytest_twisted.ensureDeferred
async def test_home_assistant_moves_and_imaging(relay: Relay) -> None:
    """Home Assistant's PTZ service calls (with Zoom parts) and its IrCutFilter setting work."""
    camera = await connect(relay)
    try:
        ptz = await aio(camera.create_ptz_service())
        imaging = await aio(camera.create_imaging_service())
        request = ptz.create_type("RelativeMove")
        request.ProfileToken = "swing.main"
        request.Translation = {"PanTilt": {"x": 0.1, "y": 0}, "Zoom": {"x": 0}}
        request.Speed = {"PanTilt": {"x": 0.5, "y": 0.5}, "Zoom": {"x": 0}}
        await aio(ptz.RelativeMove(request))
        await poll(relay.idle, timeout=10, what="relative move done")
        assert relay.swing.position() == (197.75, 90.0)
        assert relay.swing.commands[-1] == "move 197.75 90.00 5 2"

        request = imaging.create_type("SetImagingSettings")
        request.VideoSourceToken = "cam2.vs"
        request.ImagingSettings = {"IrCutFilter": "OFF"}
        await aio(imaging.SetImagingSettings(request))
        assert relay.cam2.properties["nightVision"] == "on"
        settings = await aio(imaging.GetImagingSettings({"VideoSourceToken": "cam2.vs"}))
        assert settings.IrCutFilter == "OFF"
        options = await aio(imaging.GetOptions({"VideoSourceToken": "cam2.vs"}))
        assert options.IrCutFilterModes == ["ON", "OFF", "AUTO"] and options.Brightness is None
    finally:
        await aio(camera.close())


@pytest_twisted.ensureDeferred
async def test_two_clients_moving_at_once_never_see_a_busy_camera(relay: Relay) -> None:
    """Two clients firing moves concurrently all get success, the camera never answers `multiple request`."""
    first, second = await connect(relay), await connect(relay)
    try:
        services = [await aio(c.create_ptz_service()) for c in (first, second)]
        targets = [(-1 + i / 10, 1 - i / 10) for i in range(20)]

        async def fire(ptz: Any, x: float, y: float) -> Any:
            return await ptz.AbsoluteMove({"ProfileToken": "swing.main", "Position": {"PanTilt": {"x": x, "y": y}}})

        await aio(asyncio.gather(*(fire(services[i % 2], x, y) for i, (x, y) in enumerate(targets))))
        await aio(asyncio.gather(*(s.ContinuousMove({"ProfileToken": "swing.sub", "Velocity": {"PanTilt": {"x": 1, "y": 0}},
                                                     "Timeout": "PT1S"}) for s in services)))
        await aio(asyncio.gather(*(s.RelativeMove({"ProfileToken": "swing.main",
                                                   "Translation": {"PanTilt": {"x": -0.1, "y": 0}}}) for s in services)))
        await poll(relay.idle, timeout=20, what="all moves done")
        queue = relay.controllers["swing"].queue
        assert queue.busy_answers == 0 and queue.last_error is None
        assert queue.sent < len(targets) + 10  # superseded moves were never sent
    finally:
        await aio(first.close())
        await aio(second.close())


@pytest_twisted.ensureDeferred
async def test_user_made_profile_with_ptz(relay: Relay) -> None:
    """A profile made with CreateProfile + AddPTZConfiguration moves the Swing; without PTZ it is NoPTZProfile."""
    camera = await connect(relay)
    try:
        media = await aio(camera.create_media_service())
        ptz = await aio(camera.create_ptz_service())
        made = await aio(media.CreateProfile({"Name": "tracker"}))
        with pytest.raises(Fault, match="no PTZ configuration"):
            await aio(ptz.GetStatus({"ProfileToken": made.token}))
        await aio(media.AddVideoSourceConfiguration({"ProfileToken": made.token, "ConfigurationToken": "swing.vsc"}))
        await aio(media.AddPTZConfiguration({"ProfileToken": made.token, "ConfigurationToken": "swing.ptzc"}))
        await aio(ptz.AbsoluteMove({"ProfileToken": made.token, "Position": {"PanTilt": {"x": 1, "y": -1}}}))
        await poll(relay.idle, timeout=10, what="moved")
        assert relay.swing.position() == (355.0, 0.0)
        with pytest.raises(Fault, match="no profile"):
            await aio(ptz.GetStatus({"ProfileToken": "made-up"}))
    finally:
        await aio(camera.close())


@pytest_twisted.ensureDeferred
async def test_stop_then_set_preset_in_a_row(relay: Relay) -> None:
    """ContinuousMove, Stop and SetPreset sent back to back save the preset: Stop answers once the camera stopped."""
    camera = await connect(relay)
    try:
        ptz = await aio(camera.create_ptz_service())
        for name in ("Gate", "Porch", "Shed"):
            move = ptz.create_type("ContinuousMove")
            move.ProfileToken = "swing.main"
            move.Velocity = {"PanTilt": {"x": -0.5, "y": 0.2}}
            await aio(ptz.ContinuousMove(move))
            await poll(lambda: relay.swing.moving, timeout=10, what="moving")
            await aio(ptz.Stop({"ProfileToken": "swing.main", "PanTilt": True}))
            assert not relay.swing.moving
            token = await aio(ptz.SetPreset({"ProfileToken": "swing.main", "PresetName": name}))
            [preset] = [p for p in await aio(ptz.GetPresets({"ProfileToken": "swing.main"})) if p.token == token]
            assert preset.Name == name
    finally:
        await aio(camera.close())
