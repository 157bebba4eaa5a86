"""Media and Media2 on a real loopback relay, driven by Home Assistant's library and by zeep.

The relay here is assembled the way the composition root will: Device, Media and Media2
services over one MediaModel, the SOAP server, the Authenticator and UserStore, and the
snapshot proxy in front of a SimulatedCamera listening on its own loopback port. Every
response element a handler produces during these conversations is XSD-validated on its
way out (the services are wrapped, not changed).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import onvif
import pytest
import pytest_twisted
import treq
import zeep
from onvif import ONVIFCamera
from twisted.internet import reactor
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport
from zeep.wsse.username import UsernameToken

from atomrelay.auth.security import Authenticator
from atomrelay.auth.users import UserStore
from atomrelay.camera.client import CameraClient
from atomrelay.config import Config, parse_config
from atomrelay.identity import Identity
from atomrelay.onvif.base import Service
from atomrelay.onvif.device import DeviceService, TimeZone
from atomrelay.onvif.media import MediaService
from atomrelay.onvif.media2 import Media2Service
from atomrelay.onvif.media_model import MediaModel
from atomrelay.onvif.server import OnvifResource
from atomrelay.sim.camera import SNAPSHOT_JPEG, SimulatedCamera, listen_camera
from atomrelay.state import StateStore
from atomrelay.web.snapshot import SnapshotResource
from atomrelay.xml import ns
from tests.helpers import count_answers_built
from tests.onvif import schema
from tests.onvif.test_zeep_device import aio

pytestmark = [pytest.mark.integration, pytest.mark.aio]

HA_WSDL_DIR = os.path.join(os.path.dirname(onvif.__file__), "wsdl")
MEDIA2_WSDL = schema.WSDL_DIR / "ver20" / "media" / "wsdl" / "media.wsdl"
MEDIA2_BINDING = f"{{{ns.TR2}}}Media2Binding"
IDENTITY = Identity(uuid.UUID("5a1e0000-0000-4000-8000-00000000cafe"))


def relay_config(state_dir: Path, camera_port: int) -> Config:
    return parse_config(
        f"""\
onvif:
  users:
    - {{username: admin, password: secret, role: Administrator}}
mediamtx: {{rtsp_port: 8554}}
state_dir: {state_dir}
cameras:
  - id: cam2
    name: ATOM Cam 2
    host: 127.0.0.1
    http_port: {camera_port}
    streams:
      - {{name: main, rtsp_path: video0_unicast, codec: h264, width: 1920, height: 1080}}
      - {{name: sub, rtsp_path: video1_unicast, codec: h265, width: 640, height: 360}}
  - id: wyze
    name: Wyze Cam v3
    host: 127.0.0.1
    http_port: {camera_port}
    streams:
      - {{name: hd, rtsp_path: video2_unicast, codec: h265, audio: none}}
"""
    )


class Relay:
    """The assembled relay on 127.0.0.1 and the simulated camera behind it."""

    def __init__(self, tmp_path: Path) -> None:
        self.camera = SimulatedCamera(reactor, "ATOM_CamV3C")
        self.camera_port: Any = listen_camera(reactor, self.camera)
        config = relay_config(tmp_path, self.camera_port.getHost().port)
        store = StateStore(tmp_path)
        users = UserStore(config.onvif.users, store)
        services: list[Service] = []
        device = DeviceService(
            clock=reactor, config=config, identity=IDENTITY, users=users, store=store,
            services=lambda: services, reboot=lambda: None, version="0.0.1",
            zone=TimeZone("UTC0", time.gmtime),
        )
        self.model = MediaModel(config.cameras, store, config.mediamtx.rtsp_port, config.onvif.max_profiles)
        services += [
            schema.validating(device.service()),
            schema.validating(MediaService(self.model).service()),
            schema.validating(Media2Service(self.model).service()),
        ]
        authenticator = Authenticator(reactor, users.lookup, config.onvif.max_clock_skew, config.onvif.http_basic)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        http = treq.client.HTTPClient(Agent(reactor, pool=self.pool))
        clients = {camera.id: CameraClient(http, camera) for camera in config.cameras}
        root = Resource()
        root.putChild(b"onvif", OnvifResource(services, authenticator, None))
        root.putChild(b"snapshot", SnapshotResource(reactor, clients, authenticator))
        self.port: Any = reactor.listenTCP(0, Site(root), interface="127.0.0.1")

    @property
    def number(self) -> int:
        return int(self.port.getHost().port)

    async def stop(self) -> None:
        await self.port.stopListening()
        await self.camera_port.stopListening()
        await self.pool.closeCachedConnections()


@pytest_twisted.async_yield_fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    running = Relay(tmp_path)
    try:
        yield running
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_home_assistant_media_flow(relay: Relay) -> None:
    """update_xaddrs, GetProfiles, GetStreamUri per H.264 profile and the snapshot, exactly as Home Assistant does it."""
    camera = ONVIFCamera("127.0.0.1", relay.number, "admin", "secret", HA_WSDL_DIR, no_cache=True)
    try:
        await aio(camera.update_xaddrs())
        base = f"http://127.0.0.1:{relay.number}"
        assert camera.xaddrs[ns.TRT] == f"{base}/onvif/media_service"
        assert camera.xaddrs[ns.TR2] == f"{base}/onvif/media2_service"
        media = await aio(camera.create_media_service())

        capabilities = await aio(media.GetServiceCapabilities())
        assert capabilities.SnapshotUri is True

        profiles = await aio(media.GetProfiles())
        h264 = [p for p in profiles if p.VideoEncoderConfiguration and p.VideoEncoderConfiguration.Encoding == "H264"]
        assert [p.token for p in h264] == ["cam2.main"]
        resolution = h264[0].VideoEncoderConfiguration.Resolution
        assert (resolution.Width, resolution.Height) == (1920, 1080)
        assert h264[0].VideoSourceConfiguration.SourceToken == "cam2.vs"

        for profile in h264:
            request = media.create_type("GetStreamUri")
            request.ProfileToken = profile.token
            request.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
            uri = await aio(media.GetStreamUri(request))
            assert uri.Uri == "rtsp://127.0.0.1:8554/cam2/main"
            assert (uri.InvalidAfterConnect, uri.InvalidAfterReboot) == (False, False)

        snapshot_uri = await aio(camera.get_snapshot_uri(h264[0].token))
        assert snapshot_uri == f"{base}/snapshot/cam2.jpg"
        image = await aio(camera.get_snapshot(h264[0].token))
        assert image == SNAPSHOT_JPEG
        assert relay.camera.snapshot_requests == 1
    finally:
        await aio(camera.close())


@pytest_twisted.ensureDeferred
async def test_home_assistant_repeats_are_answered_from_the_reply_cache(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onvif-zeep-async signs every GetProfiles afresh; the relay checks each and serializes the answer at most once."""
    built = count_answers_built(monkeypatch)
    camera = ONVIFCamera("127.0.0.1", relay.number, "admin", "secret", HA_WSDL_DIR, no_cache=True)
    try:
        await aio(camera.update_xaddrs())
        media = await aio(camera.create_media_service())
        tokens = [p.token for p in await aio(media.GetProfiles())]
        for _ in range(3):
            assert [p.token for p in await aio(media.GetProfiles())] == tokens
    finally:
        await aio(camera.close())
    assert sum(tag.endswith("}GetProfilesResponse") for tag in built) <= 1


@pytest_twisted.ensureDeferred
async def test_home_assistant_snapshot_needs_the_right_password(relay: Relay) -> None:
    """With a wrong password the snapshot GET is a 401, which the library raises as an auth error."""
    camera = ONVIFCamera("127.0.0.1", relay.number, "admin", "wrong", HA_WSDL_DIR, no_cache=True)
    try:
        await aio(camera.update_xaddrs())
        # GetSnapshotUri itself needs the password, so seed the library's URI cache to test the GET alone.
        camera._snapshot_uris["cam2.main"] = f"http://127.0.0.1:{relay.number}/snapshot/cam2.jpg"
        with pytest.raises(onvif.exceptions.ONVIFAuthError):
            await aio(camera.get_snapshot("cam2.main"))
        assert relay.camera.snapshot_requests == 0
    finally:
        await aio(camera.close())


class LocalTransport(AsyncTransport):
    """zeep's async transport, loading the ONVIF WSDL/XSD and the external standards from disk only."""

    def load(self, url: str) -> bytes:
        if url.startswith(("http:", "https:")):
            stand_in = schema.EXTERNAL_LOCATIONS.get(url, url.rsplit("/", 1)[-1])
            path = schema.EXTERNAL_DIR / stand_in
            assert path.is_file(), f"no local stand-in for {url}"
            return path.read_bytes()
        return Path(url.removeprefix("file://")).read_bytes()


@pytest_twisted.ensureDeferred
async def test_media2_lists_h265_profiles_and_uris(relay: Relay) -> None:
    """zeep with the ver20 media WSDL gets the H.265 profiles (Type All) and their RTSP URIs."""
    transport = LocalTransport()
    client = zeep.AsyncClient(str(MEDIA2_WSDL), transport=transport, wsse=UsernameToken("admin", "secret", use_digest=True))
    try:
        # AsyncClient.create_service hands out a synchronous proxy; build the async one directly.
        address = f"http://127.0.0.1:{relay.number}/onvif/media2_service"
        media2 = AsyncServiceProxy(client, client.wsdl.bindings[MEDIA2_BINDING], address=address)
        profiles = await aio(media2.GetProfiles(Type=["All"]))
        assert [p.token for p in profiles] == ["cam2.main", "cam2.sub", "wyze.hd"]
        h265 = [p for p in profiles if p.Configurations.VideoEncoder.Encoding == "H265"]
        assert [p.token for p in h265] == ["cam2.sub", "wyze.hd"]
        assert (h265[0].Configurations.VideoEncoder.Resolution.Width, h265[0].Configurations.AudioEncoder.Encoding) == (
            640, "MP4A-LATM",
        )
        uris = [await aio(media2.GetStreamUri(Protocol="RTSP", ProfileToken=p.token)) for p in h265]
        assert uris == ["rtsp://127.0.0.1:8554/cam2/sub", "rtsp://127.0.0.1:8554/wyze/hd"]
        capabilities = await aio(media2.GetServiceCapabilities())
        assert capabilities.SnapshotUri is True
        token = await aio(media2.CreateProfile(Name="zeep", Configuration=[
            {"Type": "VideoSource", "Token": "wyze.vsc"}, {"Type": "VideoEncoder", "Token": "wyze.hd.ve"},
        ]))
        assert token == "profile1"
        assert await aio(media2.GetStreamUri(Protocol="RtspUnicast", ProfileToken=token)) == "rtsp://127.0.0.1:8554/wyze/hd"
        await aio(media2.DeleteProfile(Token=token))
    finally:
        await aio(transport.aclose())
