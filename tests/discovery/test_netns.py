"""WS-Discovery over real multicast sockets, inside a private network namespace.

``test_discovery_in_a_private_network_namespace`` re-runs this file under
``unshare -n`` with ``ATOMRELAY_NETNS=1``. Inside, the ``namespace`` fixture refuses
to run unless the namespace is fresh (only ``lo``), then builds a Pi-like host: ``lo``
with multicast and the 224.0.0.0/4 route, and two veth links named ``eth0``
(10.11.0.1/24) and ``wlan0`` (10.12.0.1/24) whose peers stay in the namespace.
Nothing can leave it. Outside the namespace the tests below skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Iterator, TypeVar

import onvif
import pytest
import pytest_twisted
import treq
from onvif import ONVIFCamera
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from wsdiscovery.discovery import ThreadedWSDiscovery
from wsdiscovery.scope import Scope

from atomrelay.config import load_config
from atomrelay.relay import RelayService
from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx
from atomrelay.wiring import build_relay
from tests.discovery.support import NVT, STREAMING, TDS_DEVICE, parse, probe_bytes, raw_probe, resolve_bytes
from tests.helpers import GET_DATE, ROOT, free_port, poll

T = TypeVar("T")
NETNS_ENV = "ATOMRELAY_NETNS"
GROUP = ("239.255.255.250", 3702)
ETH0, WLAN0 = "10.11.0.1", "10.12.0.1"
ETH0_ALIAS = "10.11.0.2"
"""A second address on eth0, added by the test that gives each per-camera device its own address."""
WSDL_DIR = os.path.join(os.path.dirname(onvif.__file__), "wsdl")
INSIDE = os.environ.get(NETNS_ENV) == "1"
CAMERAS = (("porch", "Porch Cam"), ("garden", "Garden Cam"), ("garage", "Garage Cam"))

pytestmark = [pytest.mark.netns, pytest.mark.aio]


# --- the runner (outside) ----------------------------------------------------------------------


def _unshare() -> tuple[list[str], str]:
    """The ``unshare`` command that gives a private network namespace here, or ([], why there is none)."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None or shutil.which("ip") is None:
        return [], "needs Linux with unshare (util-linux) and ip (iproute2)"
    errors = []
    for command in (["unshare", "-n"], ["unshare", "-r", "-n"]):  # as root; else in a user namespace
        probe = subprocess.run([*command, "true"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return command, ""
        errors.append(f"{' '.join(command)}: {probe.stderr.strip() or probe.returncode}")
    return [], f"no private network namespace allowed here ({'; '.join(errors)}); CI runs these as root"


@pytest.mark.timeout(900)
def test_discovery_in_a_private_network_namespace() -> None:
    """Every test in this file passes when run inside a fresh private network namespace."""
    if INSIDE:
        pytest.skip("this is the runner; the tests below are running inside the namespace")
    unshare, refusal = _unshare()
    if not unshare:
        pytest.skip(refusal)
    env = dict(os.environ, **{NETNS_ENV: "1", "PYTHONUNBUFFERED": "1"})
    command = [*unshare, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "--reactor=asyncio",
               "--timeout", "300", str(Path(__file__).relative_to(ROOT))]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=850)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "1 skipped" in summary, output  # only the runner itself skips inside


# --- inside the namespace ----------------------------------------------------------------------


def _ip(*args: str) -> None:
    """Run ``ip ARGS`` (inside the namespace only)."""
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="session")
def namespace() -> Iterator[None]:
    """The private namespace's links (see the module docstring); skips outside it."""
    if not INSIDE:
        pytest.skip(f"runs inside a private network namespace ({NETNS_ENV}=1 under unshare -n), "
                    "started by test_discovery_in_a_private_network_namespace")
    names = {name for _, name in socket.if_nameindex()}
    if names != {"lo"}:
        pytest.fail(f"refusing to touch interfaces {sorted(names)}: this is not a fresh private network namespace")
    _ip("link", "set", "lo", "up", "multicast", "on")
    _ip("route", "add", "224.0.0.0/4", "dev", "lo")
    for name, address in (("eth0", ETH0), ("wlan0", WLAN0)):
        _ip("link", "add", name, "type", "veth", "peer", "name", f"{name}-peer")
        _ip("addr", "add", f"{address}/24", "dev", name)
        _ip("link", "set", name, "up")
        _ip("link", "set", f"{name}-peer", "up")
    yield


def aio(coroutine: Awaitable[T]) -> Deferred[T]:
    """Run an asyncio coroutine on the reactor's loop as a Deferred."""
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


def config_text(state_dir: Path, api_port: int, http_port: int, mode: str = "aggregate",
                camera_ports: list[int] | None = None, interface: str | None = None,
                cameras: tuple[tuple[str, str], ...] = CAMERAS, binds: list[str] | None = None) -> str:
    """A relay config listening on every address, with discovery on (optionally on one interface; per_camera
    devices on their ``binds`` addresses)."""
    lines = [
        "onvif:",
        f"  port: {http_port}",
        f"  mode: {mode}",
        "  device: {manufacturer: atomrelay, model: ATOM Cam relay, name: netns-relay}",
        "  users: [{username: admin, password: secret, role: Administrator}]",
        "discovery:",
        "  enabled: true",
        *([f"  interface: {interface}"] if interface else []),
        "mediamtx:",
        f"  api_url: http://127.0.0.1:{api_port}",
        "  wait_timeout: 5s",
        f"state_dir: {state_dir}",
        "cameras:",
    ]
    ports = camera_ports or [None] * len(cameras)
    for index, ((cam_id, name), port) in enumerate(zip(cameras, ports)):
        lines += [f"  - id: {cam_id}", f"    name: {name}", "    host: 192.0.2.10",
                  *([f"    onvif_port: {port}"] if port else []),
                  *([f"    onvif_bind: {binds[index]}"] if binds else []),
                  "    streams: [{name: main, rtsp_path: video0_unicast}]"]
    return "\n".join(lines) + "\n"


class RunningRelay:
    """Starts and stops a relay built by the composition root."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        # The fake mediamtx takes its port before any free_port() (this one and the tests' camera ports):
        # listening on port 0 afterwards could take a port just handed out, and that camera could not listen.
        self.api: Any = listen_mediamtx(reactor, FakeMediamtx(reactor))
        self.relay: RelayService | None = None
        self.http_port = free_port()

    def start(self, **kw: Any) -> RelayService:
        path = self.write_config(**kw)
        self.relay = build_relay(load_config(str(path)), reactor, config_path=str(path))
        self.relay.startService()
        return self.relay

    def write_config(self, **kw: Any) -> Path:
        """Write the config file the relay reads (and reloads)."""
        path = self.tmp_path / "config.yaml"
        path.write_text(config_text(self.tmp_path, self.api.getHost().port, self.http_port, **kw), encoding="utf-8")
        path.chmod(0o600)
        return path

    async def stop(self) -> None:
        relay, self.relay = self.relay, None
        if relay is not None:
            await relay.stopService()
        if self.api is not None:
            await self.api.stopListening()
            self.api = None


@pytest_twisted.async_yield_fixture
async def running(namespace: None, tmp_path: Path) -> AsyncIterator[RunningRelay]:
    """A relay starter whose relay is stopped after the test."""
    relay = RunningRelay(tmp_path)
    try:
        yield relay
    finally:
        await relay.stop()


@pytest.fixture
def client(namespace: None) -> Iterator[ThreadedWSDiscovery]:
    """Home Assistant's discovery client (python WSDiscovery), started."""
    wsd = ThreadedWSDiscovery()
    wsd.start()
    try:
        yield wsd
    finally:
        wsd.stop()


class SourceRecorder(ThreadedWSDiscovery):
    """The wsdiscovery client, also noting the source address of every message it receives."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, tuple[str, ...], str]] = []
        """(action, EPR, XAddrs, source address) of every Hello, Bye and ProbeMatch received."""

    def envReceived(self, env: Any, addr: tuple[str, int]) -> None:
        """Note the message's devices and where it came from, then handle it as the client does."""
        action = env.getAction().rsplit("/", 1)[-1]
        if action in ("Hello", "Bye"):
            entries = [(env.getEPR(), tuple(env.getXAddrs()))]
        else:
            entries = [(m.getEPR(), tuple(m.getXAddrs())) for m in env.getProbeResolveMatches()]
        with self.lock:
            self.seen += [(action, epr, xaddrs, addr[0]) for epr, xaddrs in entries]
        super().envReceived(env, addr)

    def sources(self, action: str) -> set[tuple[str, str]]:
        """(EPR, source address) of every ``action`` message received so far."""
        with self.lock:
            return {(epr, source) for seen_action, epr, _, source in self.seen if seen_action == action}

    def xaddr_hosts(self, action: str) -> set[tuple[str, str]]:
        """(XAddrs host, source address) of every ``action`` message received so far."""
        with self.lock:
            return {(xaddr.split("/")[2].rsplit(":", 1)[0], source)
                    for seen_action, _, xaddrs, source in self.seen if seen_action == action for xaddr in xaddrs}


def search(wsd: ThreadedWSDiscovery, **kw: Any) -> Deferred[list[Any]]:
    """searchServices in a thread (it sleeps for its timeout)."""
    return deferToThread(wsd.searchServices, timeout=2, **kw)


def exchange(datagrams: list[bytes], source: str, timeout: float = 1.5) -> Deferred[list[bytes]]:
    """Send ``datagrams`` to the group from ``source`` (out of its interface) and collect unicast replies."""

    def run() -> list[bytes]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((source, 0))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
            for data in datagrams:
                sock.sendto(data, GROUP)
            sock.settimeout(timeout)
            replies = []
            try:
                while True:
                    replies.append(sock.recvfrom(65536)[0])
            except socket.timeout:
                return replies

    return deferToThread(run)


async def joined(running: RunningRelay, names: set[str]) -> None:
    """Wait until the relay's discovery has joined the group on exactly ``names``."""
    assert running.relay is not None
    discovery: Any = running.relay.getServiceNamed("discovery")
    await poll(lambda: set(discovery.joined) == names, timeout=10, what=f"the group joined on {sorted(names)}")


def xaddr_hosts(services: list[Any]) -> set[str]:
    """``host:port`` of every XAddr of the discovered services."""
    return {xaddr.split("/")[2] for service in services for xaddr in service.getXAddrs()}


async def answers_soap(xaddr: str) -> bool:
    """Whether GetSystemDateAndTime at ``xaddr`` is answered."""
    response = await treq.post(xaddr, GET_DATE, headers={"Content-Type": "application/soap+xml"}, timeout=5)
    return response.code == 200 and b"UTCDateTime" in await response.content()


@pytest_twisted.ensureDeferred
async def test_client_sees_hello_finds_by_type_and_scope_resolves_and_sees_bye(
    running: RunningRelay, client: ThreadedWSDiscovery,
) -> None:
    """The wsdiscovery client gets Hello at start, finds the relay by type and scope, Resolve works, Bye at stop."""
    hellos: list[Any] = []
    byes: list[str] = []
    client.setRemoteServiceHelloCallback(hellos.append)
    client.setRemoteServiceByeCallback(byes.append)
    relay = running.start()
    device = relay.devices[0]
    epr = device.plan.identity.endpoint_reference
    port = running.http_port
    expected = {f"{ETH0}:{port}", f"{WLAN0}:{port}"}

    # lo has multicast on in this namespace, so it is joined (and announced on) too.
    await poll(lambda: {h.getEPR() for h in hellos} == {epr} and expected <= xaddr_hosts(hellos),
               timeout=10, what="Hello on eth0 and wlan0")
    assert xaddr_hosts(hellos) <= expected | {f"127.0.0.1:{port}"}

    for query in ({"types": [NVT]}, {"types": [TDS_DEVICE]}, {"scopes": [Scope(STREAMING)]},
                  {"scopes": [Scope("onvif://www.onvif.org/name/netns-relay")]}):
        client.clearRemoteServices()
        found = await search(client, **query)
        assert [s.getEPR() for s in found] == [epr], query
        assert xaddr_hosts(found) <= expected
        scopes = [s.getValue() for s in found[0].getScopes()]
        assert f"onvif://www.onvif.org/mac/{device.plan.identity.hw_address}" in scopes
    client.clearRemoteServices()
    assert await search(client, scopes=[Scope("onvif://www.onvif.org/name/nobody")]) == []

    assert await answers_soap(found[0].getXAddrs()[0])

    [reply] = await exchange([resolve_bytes(epr)[0]], WLAN0)
    [match] = parse(reply).getProbeResolveMatches()
    assert (match.getEPR(), match.getXAddrs()) == (epr, [f"http://{WLAN0}:{port}/onvif/device_service"])

    await running.stop()
    await poll(lambda: epr in byes, timeout=10, what="Bye")


@pytest_twisted.ensureDeferred
async def test_found_on_both_interfaces_with_each_interfaces_address(running: RunningRelay) -> None:
    """A probe arriving on eth0 is answered with the eth0 address, one on wlan0 with the wlan0 address."""
    running.start()
    await joined(running, {"lo", "eth0", "wlan0"})
    for source in (ETH0, WLAN0):
        [reply] = await exchange([probe_bytes([NVT])[0]], source)
        [match] = parse(reply).getProbeResolveMatches()
        assert match.getXAddrs() == [f"http://{source}:{running.http_port}/onvif/device_service"]


@pytest_twisted.ensureDeferred
async def test_per_camera_devices_are_found_and_opened_by_onvif_zeep_async(
    running: RunningRelay, client: ThreadedWSDiscovery,
) -> None:
    """per_camera: one discovered device per camera, opened by host+port: own HwAddress, serial, EPR and stream URI."""
    ports = [free_port() for _ in CAMERAS]
    relay = running.start(mode="per_camera", camera_ports=ports)
    expected_eprs = {d.plan.identity.endpoint_reference for d in relay.devices}
    found: list[Any] = []

    async def all_found() -> bool:
        found[:] = await search(client, types=[NVT])
        return {s.getEPR() for s in found} == expected_eprs

    await poll(all_found, timeout=20, what="three devices")
    identities = []
    cameras_seen: list[str] = []
    for service in found:
        xaddr = service.getXAddrs()[0]
        host, port = xaddr.split("/")[2].split(":")
        assert host in (ETH0, WLAN0) and int(port) in ports
        camera = ONVIFCamera(host, int(port), "admin", "secret", WSDL_DIR, no_cache=True)
        try:
            await aio(camera.update_xaddrs())
            management = await aio(camera.create_devicemgmt_service())
            info = await aio(management.GetDeviceInformation())
            interfaces = await aio(management.GetNetworkInterfaces())
            endpoint = (await aio(management.GetEndpointReference())).GUID
            media = await aio(camera.create_media_service())
            [profile] = await aio(media.GetProfiles())
            request = media.create_type("GetStreamUri")
            request.ProfileToken = profile.token
            request.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
            stream = await aio(media.GetStreamUri(request))
        finally:
            await aio(camera.close())
        assert endpoint == service.getEPR()
        camera_id = profile.token.split(".")[0]
        assert stream.Uri == f"rtsp://{host}:8554/{camera_id}/main"
        cameras_seen.append(camera_id)
        mac = interfaces[0].Info.HwAddress
        assert f"onvif://www.onvif.org/mac/{mac}" in [s.getValue() for s in service.getScopes()]
        identities.append((info.SerialNumber, mac, endpoint))
    assert sorted(cameras_seen) == sorted(cam_id for cam_id, _ in CAMERAS)
    for column in zip(*identities):
        assert len(set(column)) == 3


@pytest_twisted.ensureDeferred
async def test_bad_datagrams_are_dropped_and_the_responder_keeps_answering(running: RunningRelay) -> None:
    """Garbage, XXE, a 60 KB datagram and a truncated probe get nothing; a 20 KB valid probe is still answered."""
    running.start()
    await joined(running, {"lo", "eth0", "wlan0"})
    valid, message_id = probe_bytes([NVT])
    xxe = (b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           + raw_probe(scopes="&x;").split(b"?>", 1)[1])
    huge = raw_probe().replace(b"<d:Probe>", b"<d:Probe>" + b"<x/>" * 15000)
    bad = [b"\x00\xff" * 50, valid[:200], xxe, huge, b"<" * 60000]
    assert await exchange(bad, ETH0) == []
    large = raw_probe(scopes=" ".join([STREAMING] * 40) + " " * 20000, message_id="urn:uuid:large-probe")
    assert len(large) > 20000
    replies = await exchange([large, valid], ETH0)
    assert sorted(parse(reply).getRelatesTo() for reply in replies) == sorted(["urn:uuid:large-probe", message_id])


@pytest_twisted.ensureDeferred
async def test_replies_are_rate_limited_per_source(running: RunningRelay) -> None:
    """Twenty distinct probes from one source get only the burst's worth (8) of replies, plus what refilled meanwhile."""
    running.start()
    await joined(running, {"lo", "eth0", "wlan0"})
    replies = await exchange([probe_bytes([NVT])[0] for _ in range(20)], ETH0)
    assert 8 <= len(replies) <= 10


@pytest_twisted.ensureDeferred
async def test_discovery_interface_limits_where_the_relay_answers(running: RunningRelay) -> None:
    """With discovery.interface eth0, a probe arriving on wlan0 is not answered even if wlan0 has group members."""
    running.start(interface="eth0")
    await joined(running, {"eth0"})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bystander:  # like a desktop's wsdd on wlan0
        bystander.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                             socket.inet_aton(GROUP[0]) + socket.inet_aton(WLAN0))
        assert await exchange([probe_bytes([NVT])[0]], WLAN0) == []
    [reply] = await exchange([probe_bytes([NVT])[0]], ETH0)
    assert parse(reply).getProbeResolveMatches()[0].getXAddrs() == [
        f"http://{ETH0}:{running.http_port}/onvif/device_service"]


@pytest_twisted.ensureDeferred
async def test_reload_says_bye_only_for_a_removed_device(
    running: RunningRelay, client: ThreadedWSDiscovery,
) -> None:
    """per_camera, garage removed from the config and reloaded: Bye for garage only; porch and garden, unchanged,
    neither leave nor come back, and a search finds just those two."""
    ports = [free_port() for _ in CAMERAS]
    relay = running.start(mode="per_camera", camera_ports=ports)
    eprs = {d.plan.device_id: d.plan.identity.endpoint_reference for d in relay.devices}
    hellos: list[Any] = []
    byes: list[str] = []
    client.setRemoteServiceHelloCallback(hellos.append)
    client.setRemoteServiceByeCallback(byes.append)
    await joined(running, {"lo", "eth0", "wlan0"})

    def every_first_hello_in() -> bool:
        """Each device's Hello has come out of every joined interface (each carries that interface's address)."""
        return all(
            {f"{host}:{port}" for host in ("127.0.0.1", ETH0, WLAN0)}
            <= xaddr_hosts([h for h in hellos if h.getEPR() == eprs[camera_id]])
            for (camera_id, _), port in zip(CAMERAS, ports)
        )

    await poll(every_first_hello_in, timeout=10, what="the first Hellos on lo, eth0 and wlan0")
    hellos.clear()

    running.write_config(mode="per_camera", camera_ports=ports[:2], cameras=CAMERAS[:2])
    await relay.reload()

    garage = eprs["garage"]
    await poll(lambda: garage in byes, timeout=10, what="Bye for garage")
    client.clearRemoteServices()
    found = await search(client, types=[NVT])
    assert {s.getEPR() for s in found} == {eprs["porch"], eprs["garden"]}
    assert set(byes) == {garage}
    assert [h.getEPR() for h in hellos] == []


@pytest_twisted.ensureDeferred
async def test_per_camera_devices_with_their_own_addresses_speak_from_them(running: RunningRelay) -> None:
    """per_camera with onvif_bind on two addresses of eth0: the wsdiscovery client finds both devices, and each
    device's Hello, ProbeMatch and Bye come from its own address, the host of its XAddrs."""
    _ip("addr", "add", f"{ETH0_ALIAS}/24", "dev", "eth0")
    recorder = SourceRecorder()
    recorder.start()
    try:
        ports = [free_port() for _ in range(2)]
        relay = running.start(mode="per_camera", camera_ports=ports, cameras=CAMERAS[:2], binds=[ETH0, ETH0_ALIAS])
        own = {device.plan.identity.endpoint_reference: address
               for device, address in zip(relay.devices, (ETH0, ETH0_ALIAS))}
        await poll(lambda: recorder.sources("Hello") == set(own.items()), timeout=10,
                   what="one Hello per device, from its own address")

        async def both_found() -> bool:
            recorder.clearRemoteServices()
            found = await search(recorder, types=[NVT])
            return {service.getEPR() for service in found} == set(own)

        await poll(both_found, timeout=20, what="both devices found")
        assert recorder.sources("ProbeMatches") == set(own.items())
        for action in ("Hello", "ProbeMatches"):
            assert {host for host, source in recorder.xaddr_hosts(action)} == {ETH0, ETH0_ALIAS}
            assert all(host == source for host, source in recorder.xaddr_hosts(action)), recorder.seen

        await running.stop()
        await poll(lambda: recorder.sources("Bye") == set(own.items()), timeout=10,
                   what="one Bye per device, from its own address")
    finally:
        recorder.stop()
        await running.stop()
        _ip("addr", "del", f"{ETH0_ALIAS}/24", "dev", "eth0")
