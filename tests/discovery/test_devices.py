"""The composition root's devices: aggregate vs per_camera, and per-camera devices opened by onvif-zeep-async.

These run on 127.0.0.1 with discovery disabled (no multicast outside a private network
namespace); ``test_netns.py`` finds the same devices over WS-Discovery.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, TypeVar

import onvif
import pytest
import pytest_twisted
import treq
from lxml import etree
from onvif import ONVIFCamera, ONVIFError
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from zeep.exceptions import Fault

from atomrelay.config import Config, parse_config
from atomrelay.discovery.service import DiscoveryService
from atomrelay.identity import load_identity
from atomrelay.relay import RelayService
from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx
from atomrelay.state import StateStore
from atomrelay.wiring import build_relay, plan_devices
from atomrelay.xml import ns
from tests.helpers import GET_DATE, free_port

pytestmark = pytest.mark.aio

T = TypeVar("T")
WSDL_DIR = os.path.join(os.path.dirname(onvif.__file__), "wsdl")
CAMERAS = (("porch", "Porch Cam"), ("garden", "Garden Cam"), ("garage", "Garage Cam"))


def relay_config(state_dir: Path, mode: str, api_port: int, http_port: int, camera_ports: list[int],
                 discovery: bool = False, bind: str = "127.0.0.1", onvif_bind: str | None = None,
                 advertise: str | None = None, models: dict[str, str] | None = None) -> Config:
    """A relay with three cameras in ``mode``; per-camera ports from ``camera_ports``; ``models`` by camera id
    (else ``auto``)."""
    lines = [
        "onvif:",
        f"  bind: {bind}",
        f"  port: {http_port}",
        f"  mode: {mode}",
        *([f"  advertise_host: {advertise}"] if advertise else []),
        "  device: {manufacturer: atomrelay, model: ATOM Cam relay, name: relay-under-test}",
        "  users: [{username: admin, password: secret, role: Administrator}]",
        f"discovery: {{enabled: {'true' if discovery else 'false'}}}",
        "mediamtx:",
        f"  api_url: http://127.0.0.1:{api_port}",
        "  wait_timeout: 5s",
        f"state_dir: {state_dir}",
        "cameras:",
    ]
    for (cam_id, name), port in zip(CAMERAS, camera_ports):
        lines += [
            f"  - id: {cam_id}",
            f"    name: {name}",
            "    host: 192.0.2.10",
            f"    onvif_port: {port}",
            *([f"    model: {models[cam_id]}"] if models and cam_id in models else []),
            *([f"    onvif_bind: {onvif_bind}"] if onvif_bind and cam_id == "garage" else []),
            "    streams: [{name: main, rtsp_path: video0_unicast}]",
        ]
    return parse_config("\n".join(lines) + "\n")


def aio(coroutine: Awaitable[T]) -> Deferred[T]:
    """Run an asyncio coroutine on the reactor's loop as a Deferred."""
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


def test_aggregate_mode_is_one_device_with_every_camera(tmp_path: Path) -> None:
    """aggregate: one device on onvif.port with the relay's own identity exposing all cameras."""
    config = relay_config(tmp_path, "aggregate", 1, 8080, [8101, 8102, 8103], advertise="nvr.example")
    identity = load_identity(StateStore(tmp_path))
    [plan] = plan_devices(config, identity)
    assert (plan.device_id, plan.port, plan.bind, plan.advertise_host) == ("", 8080, "127.0.0.1", "nvr.example")
    assert [c.id for c in plan.cameras] == ["porch", "garden", "garage"]
    assert plan.identity == identity


def test_per_camera_mode_is_one_device_per_camera(tmp_path: Path) -> None:
    """per_camera: a device per camera on its onvif_port, with its own identity; onvif_bind is its address."""
    config = relay_config(tmp_path, "per_camera", 1, 8080, [8101, 8102, 8103], bind="0.0.0.0",
                          onvif_bind="192.168.1.53", advertise="nvr.example")
    identity = load_identity(StateStore(tmp_path))
    plans = plan_devices(config, identity)
    assert [(p.device_id, p.port, p.bind) for p in plans] == [
        ("porch", 8101, "0.0.0.0"), ("garden", 8102, "0.0.0.0"), ("garage", 8103, "192.168.1.53")]
    assert [[c.id for c in p.cameras] for p in plans] == [["porch"], ["garden"], ["garage"]]
    assert [p.identity for p in plans] == [identity.for_camera(c) for c, _ in CAMERAS]
    assert len({p.identity.endpoint_reference for p in plans} | {identity.endpoint_reference}) == 4
    assert [p.advertise_host for p in plans] == ["nvr.example", "nvr.example", "192.168.1.53"]


def test_every_listener_shares_one_connection_cap(tmp_path: Path) -> None:
    """per_camera: the main listener and the three camera listeners count against one ConnectionLimits."""
    from atomrelay.web.limits import GuardedSite

    config = relay_config(tmp_path, "per_camera", 1, 8080, [8101, 8102, 8103])
    relay = build_relay(config, reactor)
    sites = [getattr(child, "factory", None) for child in relay]
    sites = [site for site in sites if isinstance(site, GuardedSite)]
    assert len(sites) == 4
    assert len({id(site.limits) for site in sites}) == 1


def test_discovery_is_wired_last_with_one_target_per_device(tmp_path: Path) -> None:
    """With discovery on, the DiscoveryService follows every listener (Hello after listen, Bye before close)."""
    config = relay_config(tmp_path, "per_camera", 1, 8080, [8101, 8102, 8103], discovery=True)
    relay = build_relay(config, reactor)
    children: list[Any] = list(relay)
    names = [child.name for child in children]
    assert names[-2:] == ["generation", "discovery"]
    assert names.index("http") < names.index("onvif-porch") < names.index("onvif-garage") < len(names) - 2
    discovery = relay.getServiceNamed("discovery")
    assert isinstance(discovery, DiscoveryService)
    assert [(t.endpoint_reference, t.port) for t in discovery.targets] == [
        (d.plan.identity.endpoint_reference, d.plan.port) for d in relay.devices]
    assert [t.device for t in discovery.targets] == [d.device for d in relay.devices]


def test_discovery_disabled_means_no_discovery_service(tmp_path: Path) -> None:
    """discovery.enabled: false builds no responder at all."""
    relay = build_relay(relay_config(tmp_path, "aggregate", 1, 8080, [8101, 8102, 8103]), reactor)
    assert "discovery" not in [child.name for child in relay]


@pytest_twisted.async_yield_fixture
async def per_camera_relay(tmp_path: Path) -> AsyncIterator[tuple[RelayService, int, list[int]]]:
    """A running per_camera relay on 127.0.0.1 with a mediamtx stand-in."""
    api = listen_mediamtx(reactor, FakeMediamtx(reactor))
    http_port = free_port()
    ports = [free_port() for _ in CAMERAS]
    relay = build_relay(relay_config(tmp_path, "per_camera", api.getHost().port, http_port, ports), reactor)
    relay.startService()
    try:
        yield relay, http_port, ports
    finally:
        await relay.stopService()
        await api.stopListening()


async def post(url: str, body: bytes) -> tuple[int, bytes]:
    """POST a SOAP body; the status and the body of the answer."""
    response = await treq.post(url, body, headers={"Content-Type": "application/soap+xml"}, timeout=5)
    return response.code, await response.content()


@pytest_twisted.ensureDeferred
async def test_onvif_port_serves_the_relay_endpoints_but_no_device(
    per_camera_relay: tuple[RelayService, int, list[int]],
) -> None:
    """In per_camera mode onvif.port has no /onvif device (a SOAP POST there gets a Receiver
    ter:ActionNotSupported/ter:NoSuchService Fault listing the devices' URLs); mediamtx auth still answers there."""
    _, http_port, ports = per_camera_relay
    for path in ("device_service", "media_service", "anything"):
        code, body = await post(f"http://127.0.0.1:{http_port}/onvif/{path}", GET_DATE)
        fault = etree.fromstring(body).find(f".//{{{ns.SOAP12}}}Fault")
        assert code == 500 and fault is not None, body
        subcodes = [v.text for v in fault.iterfind(f".//{{{ns.SOAP12}}}Subcode/{{{ns.SOAP12}}}Value")]
        assert subcodes == ["ter:ActionNotSupported", "ter:NoSuchService"]
        reason = "".join(fault.find(f"{{{ns.SOAP12}}}Reason").itertext())
        for (cam_id, _), port in zip(CAMERAS, ports):
            assert f"{cam_id} at http://127.0.0.1:{port}/onvif/device_service" in reason
    response = await treq.post(f"http://127.0.0.1:{http_port}/onvif/device_service", GET_DATE,
                               headers={"Content-Type": "text/xml"}, timeout=5)
    assert response.code == 500 and b"schemas.xmlsoap.org/soap/envelope" in await response.content()
    response = await treq.post(f"http://127.0.0.1:{http_port}/mediamtx/auth",
                               b'{"ip": "127.0.0.1", "user": "admin", "password": "secret", "action": "read", '
                               b'"path": "porch/main", "protocol": "rtsp"}', timeout=5)
    await response.content()
    assert response.code == 200
    for port in ports:
        code, body = await post(f"http://127.0.0.1:{port}/onvif/device_service", GET_DATE)
        assert code == 200 and b"UTCDateTime" in body
        code, _ = await post(f"http://127.0.0.1:{port}/mediamtx/auth", b"{}")
        assert code == 404


@pytest_twisted.ensureDeferred
async def test_onvif_zeep_async_pointed_at_onvif_port_is_told_the_device_urls(
    per_camera_relay: tuple[RelayService, int, list[int]],
) -> None:
    """Home Assistant's library set up with onvif.port gets a SOAP Fault naming each camera's device URL, not HTML."""
    _, http_port, ports = per_camera_relay
    camera = ONVIFCamera("127.0.0.1", http_port, "admin", "secret", WSDL_DIR, no_cache=True)
    try:
        with pytest.raises(Fault) as raised:
            await aio(camera.update_xaddrs())
    finally:
        await aio(camera.close())
    assert "per_camera" in raised.value.message and "<html" not in raised.value.message
    assert f"porch at http://127.0.0.1:{ports[0]}/onvif/device_service" in raised.value.message


@pytest_twisted.ensureDeferred
async def test_each_camera_device_opens_in_onvif_zeep_async_with_its_own_identity(
    per_camera_relay: tuple[RelayService, int, list[int]],
) -> None:
    """Home Assistant's library opens every device by host+port: own HwAddress, serial, EPR, name, profile and stream."""
    relay, _, ports = per_camera_relay
    seen = []
    for (cam_id, name), port, device in zip(CAMERAS, ports, relay.devices):
        camera = ONVIFCamera("127.0.0.1", port, "admin", "secret", WSDL_DIR, no_cache=True)
        try:
            await aio(camera.update_xaddrs())
            assert camera.xaddrs[ns.TDS] == f"http://127.0.0.1:{port}/onvif/device_service"
            management = await aio(camera.create_devicemgmt_service())
            info = await aio(management.GetDeviceInformation())
            interfaces = await aio(management.GetNetworkInterfaces())
            endpoint = (await aio(management.GetEndpointReference())).GUID
            scopes = [s.ScopeItem for s in await aio(management.GetScopes())]
            media = await aio(camera.create_media_service())
            profiles = await aio(media.GetProfiles())
            request = media.create_type("GetStreamUri")
            request.ProfileToken = profiles[0].token
            request.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
            stream = await aio(media.GetStreamUri(request))
            snapshot = await aio(media.GetSnapshotUri({"ProfileToken": profiles[0].token}))
        finally:
            await aio(camera.close())
        assert [p.token for p in profiles] == [f"{cam_id}.main"]
        assert stream.Uri == f"rtsp://127.0.0.1:8554/{cam_id}/main"
        assert snapshot.Uri == f"http://127.0.0.1:{port}/snapshot/{cam_id}.jpg"
        anonymous = await treq.get(snapshot.Uri, timeout=5)
        await anonymous.content()
        assert anonymous.code == 401  # served on this device's own port, behind the relay's auth
        identity = device.plan.identity
        assert device.plan.device_id == cam_id
        assert info.SerialNumber == identity.serial_number
        assert interfaces[0].Info.HwAddress == identity.hw_address
        assert endpoint == identity.endpoint_reference
        assert f"onvif://www.onvif.org/name/{name.replace(' ', '%20')}" in scopes
        assert f"onvif://www.onvif.org/mac/{identity.hw_address}" in scopes
        seen.append((info.SerialNumber, interfaces[0].Info.HwAddress, endpoint))
    for column in zip(*seen):
        assert len(set(column)) == len(CAMERAS)


@pytest_twisted.ensureDeferred
async def test_a_front_camera_device_has_no_ptz_service(tmp_path: Path) -> None:
    """per_camera: onvif-zeep-async finds no PTZ service (GetServices, GetCapabilities) on a Front camera's device,
    while the Swing's device has one; a device whose camera model is not known yet lists none either."""
    api = listen_mediamtx(reactor, FakeMediamtx(reactor))
    ports = [free_port() for _ in CAMERAS]
    config = relay_config(tmp_path, "per_camera", api.getHost().port, free_port(), ports,
                          models={"porch": "ATOM_CamV3C", "garden": "ATOM_CAKP1JZJP"})
    relay = build_relay(config, reactor)
    relay.startService()
    try:
        found = {}
        for (cam_id, _), port in zip(CAMERAS, ports):
            camera = ONVIFCamera("127.0.0.1", port, "admin", "secret", WSDL_DIR, no_cache=True)
            try:
                await aio(camera.update_xaddrs())
                management = await aio(camera.create_devicemgmt_service())
                services = await aio(management.GetServices({"IncludeCapability": False}))
                capabilities = await aio(management.GetCapabilities({"Category": "All"}))
                has_ptz = ns.TPTZ in camera.xaddrs
                if not has_ptz:
                    with pytest.raises(ONVIFError):
                        await aio(camera.create_ptz_service())
            finally:
                await aio(camera.close())
            listed = ns.TPTZ in [s.Namespace for s in services]
            assert listed == has_ptz == (capabilities.PTZ is not None), cam_id
            found[cam_id] = has_ptz
        assert found == {"porch": False, "garden": True, "garage": False}
    finally:
        await relay.stopService()
        await api.stopListening()
