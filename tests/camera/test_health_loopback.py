"""The RTSP OPTIONS probe and the health monitor on real loopback sockets."""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.web.client import Agent, HTTPConnectionPool

from atomrelay.camera.client import CameraClient
from atomrelay.camera.health import OFFLINE, ONLINE, HealthMonitor, ProbeFailed, RtspOptionsProbe
from atomrelay.sim.camera import SimulatedCamera, listen_camera
from tests.camera.support import SWING, camera_config
from tests.helpers import free_port, poll

pytestmark = pytest.mark.integration


class RtspResponder(Protocol):
    """Answers every OPTIONS like an RTSP server; records the requests."""

    requests: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.requests.append(data)
        if data.startswith(b"OPTIONS "):
            self.transport.write(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY\r\n\r\n")


class Silent(Protocol):
    """Accepts the connection and never says anything."""


class NotRtsp(Protocol):
    """Answers like a web server."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")


@pytest_twisted.async_yield_fixture
async def listeners() -> AsyncIterator[dict[str, Any]]:
    """Loopback servers: an RTSP responder, a silent port and a web server."""
    RtspResponder.requests = []
    ports = {
        name: reactor.listenTCP(0, Factory.forProtocol(protocol), interface="127.0.0.1")
        for name, protocol in (("rtsp", RtspResponder), ("silent", Silent), ("http", NotRtsp))
    }
    try:
        yield ports
    finally:
        for port in ports.values():
            await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_probe_accepts_an_rtsp_answer(listeners: dict[str, Any]) -> None:
    """An RTSP server's answer to OPTIONS passes, and the request names the camera's RTSP URL."""
    port = listeners["rtsp"].getHost().port
    await RtspOptionsProbe(reactor)(camera_config(rtsp_port=port), 2.0)
    assert RtspResponder.requests[0].startswith(f"OPTIONS rtsp://127.0.0.1:{port}/ RTSP/1.0\r\nCSeq: 1\r\n".encode())


@pytest_twisted.ensureDeferred
async def test_probe_failures_are_named(listeners: dict[str, Any]) -> None:
    """A refused port, a silent port and a non-RTSP answer each fail with their own reason."""
    probe = RtspOptionsProbe(reactor)
    cases = [
        (free_port(), "cannot connect"),
        (listeners["silent"].getHost().port, "no RTSP answer within 0.3s"),
        (listeners["http"].getHost().port, "answer is not RTSP"),
    ]
    for port, reason in cases:
        with pytest.raises(ProbeFailed, match=reason):
            await probe(camera_config(rtsp_port=port), 0.3)


@pytest_twisted.ensureDeferred
async def test_monitor_sees_a_camera_go_away_and_come_back() -> None:
    """With real sockets, a camera whose HTTP and RTSP ports close goes offline, and online once they reopen."""
    sim = SimulatedCamera(reactor, SWING)
    http_port = listen_camera(reactor, sim)
    rtsp_port = reactor.listenTCP(0, Factory.forProtocol(RtspResponder), interface="127.0.0.1")
    http_number, rtsp_number = http_port.getHost().port, rtsp_port.getHost().port
    camera = camera_config(http_port=http_number, rtsp_port=rtsp_number)
    # No keep-alive: a closed listening port must mean no answer, as with a camera that went away.
    http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
    client = CameraClient(http, camera, timeout=1.0, clock=reactor)
    monitor = HealthMonitor(reactor, [camera], {camera.id: client}, None, RtspOptionsProbe(reactor), interval=1.0)
    monitor.startService()
    try:
        await poll(lambda: monitor.state("swing").state == ONLINE, timeout=10, what="online")
        await http_port.stopListening()
        await rtsp_port.stopListening()
        await poll(lambda: monitor.state("swing").state == OFFLINE, timeout=10, what="offline")
        assert "cannot connect" in monitor.state("swing").reason
        http_port = listen_camera(reactor, sim, port=http_number)
        rtsp_port = reactor.listenTCP(rtsp_number, Factory.forProtocol(RtspResponder), interface="127.0.0.1")
        await poll(lambda: monitor.state("swing").state == ONLINE, timeout=10, what="online again")
    finally:
        await monitor.stopService()
        if http_port.connected:
            await http_port.stopListening()
        if rtsp_port.connected:
            await rtsp_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_first_start_on_an_empty_mediamtx_is_not_degraded(tmp_path: Any) -> None:
    """The whole relay on loopback, first start, mediamtx without paths: the camera is online after the first round
    and the log never says degraded, although the first round starts before the paths are registered."""
    from twisted.logger import formatEvent, globalLogPublisher

    from atomrelay.config import parse_config
    from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx
    from atomrelay.wiring import build_relay

    fake = FakeMediamtx(reactor)
    api = listen_mediamtx(reactor, fake)
    http_port = listen_camera(reactor, SimulatedCamera(reactor, SWING))
    rtsp_port = reactor.listenTCP(0, Factory.forProtocol(RtspResponder), interface="127.0.0.1")
    config = parse_config(
        f"""\
onvif: {{bind: 127.0.0.1, port: {free_port()}, users: [{{username: admin, password: pw-123, role: Administrator}}]}}
discovery: {{enabled: false}}
mediamtx: {{api_url: "http://127.0.0.1:{api.getHost().port}", wait_timeout: 5s}}
state_dir: {tmp_path}
cameras:
  - {{id: swing, host: 127.0.0.1, http_port: {http_port.getHost().port}, rtsp_port: {rtsp_port.getHost().port},
     model: {SWING}, streams: [{{name: main, rtsp_path: video0_unicast}}]}}
"""
    )
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    relay = build_relay(config, reactor)
    assert relay.generation is not None
    monitor = next(svc for svc in relay.generation.workers if isinstance(svc, HealthMonitor))
    relay.startService()
    try:
        await relay.reconciler.ready
        await poll(lambda: monitor.rounds >= 1, timeout=10, what="the first health round")
        assert "swing/main" in fake.paths
        assert monitor.state("swing").state == ONLINE, monitor.state("swing")
        assert not [line for line in lines if "degraded" in line]
    finally:
        globalLogPublisher.removeObserver(observe)
        await relay.stopService()
        for port in (api, http_port, rtsp_port):
            await port.stopListening()
