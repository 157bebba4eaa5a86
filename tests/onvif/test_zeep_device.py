"""Home Assistant's ONVIF library (onvif-zeep-async) against the real Device service on loopback.

The relay's SOAP server runs on the asyncio reactor (``--reactor=asyncio`` in setup.cfg),
so the library's aiohttp coroutines and twisted.web share one event loop; ``aio()``
turns an asyncio coroutine into a Deferred the test can await.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, TypeVar

import onvif
import pytest
import pytest_twisted
from lxml.builder import ElementMaker
from onvif import ONVIFCamera
from twisted.internet import reactor
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Site
from zeep.exceptions import Fault

from atomrelay.auth.security import Authenticator
from atomrelay.auth.users import UserStore
from atomrelay.config import Config, parse_config
from atomrelay.identity import Identity
from atomrelay.onvif.base import Service
from atomrelay.onvif.device import DeviceService, TimeZone
from atomrelay.onvif.server import OnvifResource
from atomrelay.state import StateStore
from atomrelay.xml import ns

pytestmark = [pytest.mark.integration, pytest.mark.aio]

T = TypeVar("T")
WSDL_DIR = os.path.join(os.path.dirname(onvif.__file__), "wsdl")
IDENTITY = Identity(uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"))
TRT = ElementMaker(namespace=ns.TRT, nsmap={"trt": ns.TRT})


def aio(coroutine: Awaitable[T]) -> Deferred[T]:
    """Run an asyncio coroutine on the reactor's event loop and await it as a Deferred."""
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


def relay_config(state_dir: Path) -> Config:
    return parse_config(
        f"""\
onvif:
  device: {{manufacturer: atomrelay, model: ATOM Cam relay, name: zeep-test}}
  users:
    - {{username: admin, password: secret, role: Administrator}}
state_dir: {state_dir}
cameras:
  - id: cam
    host: 192.0.2.10
    streams: [{{name: main, rtsp_path: video0_unicast}}]
"""
    )


def media_stand_in() -> Service:
    """A Media service entry (no operations) so that GetServices lists a second namespace."""
    return Service(
        namespace=ns.TRT,
        path="/onvif/media_service",
        version=(21, 6),
        capabilities=lambda ctx: TRT.Capabilities(
            TRT.ProfileCapabilities(MaximumNumberOfProfiles="2"),
            TRT.StreamingCapabilities(RTP_RTSP_TCP="true"),
            SnapshotUri="true",
        ),
    )


@pytest_twisted.async_yield_fixture
async def relay_port(tmp_path: Path) -> AsyncIterator[int]:
    """A twisted.web Site with the real SOAP server, Authenticator and Device service on 127.0.0.1."""
    assert isinstance(reactor, AsyncioSelectorReactor), "run pytest with --reactor=asyncio (setup.cfg addopts)"
    config = relay_config(tmp_path)
    store = StateStore(tmp_path)
    users = UserStore(config.onvif.users, store)
    services: list[Service] = []
    device = DeviceService(
        clock=reactor,
        config=config,
        identity=IDENTITY,
        users=users,
        store=store,
        services=lambda: services,
        reboot=lambda: None,
        version="9.8.7",
        zone=TimeZone("JST-9", lambda seconds: time.gmtime(seconds + 9 * 3600)),
    )
    services += [device.service(), media_stand_in()]
    authenticator = Authenticator(reactor, users.lookup, config.onvif.max_clock_skew, False)
    root = Resource()
    root.putChild(b"onvif", OnvifResource(services, authenticator, None))
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    try:
        yield port.getHost().port
    finally:
        await port.stopListening()


async def open_camera(port: int, password: str) -> ONVIFCamera:
    """What Home Assistant does first: build the camera (no WSDL cache) and discover its XAddrs."""
    camera = ONVIFCamera("127.0.0.1", port, "admin", password, WSDL_DIR, no_cache=True)
    await aio(camera.update_xaddrs())
    return camera


def is_auth_error(error: Exception) -> bool:
    """Home Assistant's ``onvif.util.is_auth_error``: a NotAuthorized subcode or "auth" in the text."""
    if not isinstance(error, Fault):
        return False
    subcodes = [code.text if hasattr(code, "text") else str(code) for code in (error.subcodes or [])]
    text = f"{error.message} (code:{error.code}) (subcodes:{','.join(subcodes)})"
    return any("NotAuthorized" in code for code in subcodes) or "auth" in text.lower()


@pytest_twisted.ensureDeferred
async def test_home_assistant_bootstrap(relay_port: int) -> None:
    """update_xaddrs, GetDeviceInformation, GetCapabilities, GetNetworkInterfaces and GetSystemDateAndTime parse."""
    camera = await open_camera(relay_port, "secret")
    try:
        base = f"http://127.0.0.1:{relay_port}"
        assert camera.xaddrs[ns.TDS] == f"{base}/onvif/device_service"
        assert camera.xaddrs[ns.TRT] == f"{base}/onvif/media_service"
        devicemgmt = await aio(camera.create_devicemgmt_service())

        info = await aio(devicemgmt.GetDeviceInformation())
        assert (info.Manufacturer, info.Model, info.FirmwareVersion) == ("atomrelay", "ATOM Cam relay", "9.8.7")
        assert (info.SerialNumber, info.HardwareId) == (IDENTITY.serial_number, IDENTITY.hardware_id)

        capabilities = await aio(devicemgmt.GetCapabilities({"Category": "All"}))
        assert capabilities.Device.XAddr == f"{base}/onvif/device_service"
        assert capabilities.Media.XAddr == f"{base}/onvif/media_service"
        assert capabilities.Media.StreamingCapabilities.RTP_RTSP_TCP is True
        assert capabilities.PTZ is None

        interfaces = await aio(devicemgmt.GetNetworkInterfaces())
        enabled = [i for i in interfaces if i.Enabled]
        assert [i.Info.HwAddress for i in enabled] == [IDENTITY.hw_address]
        assert enabled[0].IPv4.Config.Manual[0].Address == "127.0.0.1"

        clock = await aio(devicemgmt.GetSystemDateAndTime())
        assert clock.DateTimeType == "NTP"
        utc = clock.UTCDateTime
        reported = time.mktime((utc.Date.Year, utc.Date.Month, utc.Date.Day,
                                utc.Time.Hour, utc.Time.Minute, utc.Time.Second, 0, 0, 0)) - time.timezone
        assert abs(reported - time.time()) < 5
        assert clock.TimeZone.TZ == "JST-9"
    finally:
        await aio(camera.close())


@pytest_twisted.ensureDeferred
async def test_get_services_with_and_without_capabilities(relay_port: int) -> None:
    """GetServices(False) gives exact namespaces and versions; GetServices(True) carries parseable capabilities."""
    camera = await open_camera(relay_port, "secret")
    try:
        devicemgmt = await aio(camera.create_devicemgmt_service())
        plain: list[Any] = await aio(devicemgmt.GetServices({"IncludeCapability": False}))
        assert [s.Namespace for s in plain] == [ns.TDS, ns.TRT]
        assert [(s.Version.Major, s.Version.Minor) for s in plain] == [(26, 6), (21, 6)]
        assert all(s.Capabilities is None for s in plain)

        full: list[Any] = await aio(devicemgmt.GetServices({"IncludeCapability": True}))
        device_capabilities = full[0].Capabilities._value_1
        assert device_capabilities.Security.UsernameToken is True
        assert device_capabilities.Security.MaxUsers == 32
        assert device_capabilities.System.DiscoveryResolve is True
        media_capabilities = full[1].Capabilities._value_1
        assert media_capabilities.tag == ns.q(ns.TRT, "Capabilities")
        assert media_capabilities.get("SnapshotUri") == "true"
    finally:
        await aio(camera.close())


@pytest_twisted.ensureDeferred
async def test_wrong_password_is_an_auth_error_for_home_assistant(relay_port: int) -> None:
    """With a wrong password the PRE_AUTH bootstrap works but GetDeviceInformation raises an auth Fault."""
    camera = await open_camera(relay_port, "wrong")
    try:
        devicemgmt = await aio(camera.create_devicemgmt_service())
        with pytest.raises(Fault) as info:
            await aio(devicemgmt.GetDeviceInformation())
        assert is_auth_error(info.value)
    finally:
        await aio(camera.close())
