"""The dashboard in a real browser: headless Debian chromium against a relay on simulated cameras."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from atomrelay.camera.health import HealthMonitor
from atomrelay.config import parse_config
from atomrelay.sim import camera as camera_module
from atomrelay.sim.camera import SimulatedCamera, listen_camera
from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx
from atomrelay.wiring import build_relay
from tests.helpers import free_port, poll
from tests.web.devtools import Browser

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CAMERAS = (
    ("cam2", 'Front door & "porch"', "ATOM_CamV3C", True),
    ("swing", "Living room", "ATOM_CAKP1JZJP", True),
    ("wyze", "Garage", "WYZE_CAKP2JFUS", False),
)

CARDS = """
Array.from(document.querySelectorAll("article.card")).map(card => {
  const img = card.querySelector("img.snapshot");
  return {
    id: card.dataset.camera,
    name: card.querySelector(".name").textContent,
    state: card.querySelector(".badge").dataset.state,
    loaded: img.complete && img.naturalWidth === 640,
    refreshed: img.getAttribute("src").includes("?t="),
    rtsp: Array.from(card.querySelectorAll(".stream input")).map(input => input.value),
  };
})
"""


class _RtspAnswer(Protocol):
    """Answers any request with an RTSP status line, as a camera's RTSP server does to OPTIONS."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n")  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


def config_text(port: int, api_port: int, cameras: list[tuple[str, str, str, int, int]], state: Path) -> str:
    lines = [
        "onvif:",
        "  bind: 127.0.0.1",
        f"  port: {port}",
        "  users: [{username: admin, password: admin-pw, role: Administrator}]",
        "discovery: {enabled: false}",
        "mediamtx:",
        f"  api_url: http://127.0.0.1:{api_port}",
        "  poll_interval: 500ms",
        "  webrtc_port: 8889",
        "health: {interval: 2s}",
        f"state_dir: {state}",
        "cameras:",
    ]
    for cam_id, name, model, http_port, rtsp_port in cameras:
        lines += [
            f"  - id: {cam_id}",
            f"    name: {json.dumps(name)}",
            "    host: 127.0.0.1",
            f"    http_port: {http_port}",
            f"    rtsp_port: {rtsp_port}",
            f"    model: {model}",
            f"    webhook_token: token-of-{cam_id}-0123456789",
            "    streams:",
            "      - {name: main, rtsp_path: video0_unicast, codec: h264, audio: transcode}",
            "      - {name: sub, rtsp_path: video1_unicast, codec: h265, audio: transcode, width: 640, height: 360}",
        ]
    return "\n".join(lines) + "\n"


def pattern_jpeg() -> bytes:
    """A 640x360 JPEG of ffmpeg's test pattern, standing in for a camera picture."""
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360", "-frames:v", "1", "-f", "mjpeg", "-"],
        capture_output=True, check=True, timeout=30,
    ).stdout


@pytest_twisted.ensureDeferred
async def test_dashboard_cards_thumbnails_and_layout_in_chromium(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every camera card shows its state, escaped name, RTSP URIs and a decoded, refreshed thumbnail, on a
    desktop and a phone viewport; the page's script raises no error; /metrics parses as Prometheus text."""
    monkeypatch.setattr(camera_module, "SNAPSHOT_JPEG", pattern_jpeg())
    ports: list[Any] = []
    # Everything that listens on port 0 does so before free_port() hands out a port nobody holds yet.
    fake = FakeMediamtx(reactor)
    api = listen_mediamtx(reactor, fake)
    ports.append(api)
    rtsp = reactor.listenTCP(0, Factory.forProtocol(_RtspAnswer), interface="127.0.0.1")  # type: ignore[attr-defined]
    ports.append(rtsp)
    sims = []
    camera_ports = []
    for index, (cam_id, _name, model, _answers_rtsp) in enumerate(CAMERAS):
        sim = SimulatedCamera(reactor, model, hostname=cam_id, hwaddr=f"02:00:00:00:00:{index + 1:02x}")
        sims.append(sim)
        camera_ports.append(listen_camera(reactor, sim))
    ports.extend(camera_ports)
    cameras = [
        (cam_id, name, model, port.getHost().port, rtsp.getHost().port if answers_rtsp else free_port())
        for (cam_id, name, model, answers_rtsp), port in zip(CAMERAS, camera_ports)
    ]
    relay_port = free_port()
    config = parse_config(config_text(relay_port, api.getHost().port, cameras, tmp_path / "state"))
    relay: Any = build_relay(config, reactor)
    relay.startService()
    browser: Browser | None = None
    try:
        await poll(lambda: len(fake.paths) == 6, timeout=20, what="the paths registered in mediamtx")
        fake.set_ready("cam2/main", readers=["rtspSession", "webRTCSession"])
        relay.parts.events.motion_detected("cam2")
        relay.parts.events.object_detected("swing", "Human")
        await poll(lambda: [state.state for state in health_states(relay).values()] == ["online", "online", "degraded"],
                   timeout=20, what="the health states")
        browser = Browser(tmp_path / "profile")
        url = f"http://127.0.0.1:{relay_port}/"
        desktop = await browser.open(url, "admin", "admin-pw", 1280, 900)

        async def cards_ready() -> bool:
            cards = await browser.evaluate(desktop, CARDS)  # type: ignore[union-attr]
            return bool(cards) and all(card["loaded"] and card["refreshed"] for card in cards)

        try:
            await poll(cards_ready, timeout=30, what="every thumbnail loaded and refreshed by the page's script")
        except AssertionError:
            where = await browser.evaluate(desktop, "location.href + ' ' + document.body.innerText.slice(0, 300)")
            raise AssertionError(f"cards: {await browser.evaluate(desktop, CARDS)}; problems: {browser.tools.problems}"
                                 f"; page: {where}")
        cards = await browser.evaluate(desktop, CARDS)
        assert [card["id"] for card in cards] == ["cam2", "swing", "wyze"]
        assert [card["name"] for card in cards] == [name for _, name, _, _ in CAMERAS]
        assert [card["state"] for card in cards] == ["online", "online", "degraded"]
        assert cards[0]["rtsp"] == ["rtsp://127.0.0.1:8554/cam2/main", "rtsp://127.0.0.1:8554/cam2/sub"]
        text = await browser.evaluate(desktop, "document.body.innerText")
        assert "2 readers" in text and "motion" in text and "object: Human" in text
        assert "token-of-cam2-0123456789" in await browser.evaluate(
            desktop, "Array.from(document.querySelectorAll('input')).map(i => i.value).join(' ')")
        assert await browser.evaluate(desktop, "document.querySelectorAll('script:not([src]), [onclick]').length") == 0
        shot = await browser.tools.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                                        desktop)
        (tmp_path / "dashboard.png").write_bytes(base64.b64decode(shot["data"]))
        exposition = await browser.evaluate(desktop, "fetch('/metrics').then(r => r.text())")
        found = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                 for family in text_string_to_metric_families(exposition) for sample in family.samples}
        assert found[("atomrelay_cameras", (("state", "online"),))] == 2
        assert found[("atomrelay_snapshot_requests_total", (("camera", "wyze"),))] >= 2
        assert found[("atomrelay_mediamtx_path_writes_total", (("kind", "add"),))] == 6
        assert found[("atomrelay_open_connections", (("listener", "http"),))] >= 1

        # The page follows a camera's state by itself (from /status), without being reloaded: the swing's HTTP API
        # stops answering (its RTSP port still does, so it is degraded).
        await browser.evaluate(desktop, "window.keptPage = true")
        sims[1].set_offline(True, "refuse")
        await poll(lambda: health_states(relay)["swing"].state == "degraded", timeout=30, what="swing degraded")

        async def swing_degraded_on_the_page() -> bool:
            cards = await browser.evaluate(desktop, CARDS)  # type: ignore[union-attr]
            return [card["state"] for card in cards] == ["online", "degraded", "degraded"]

        await poll(swing_degraded_on_the_page, timeout=20, what="the swing card showing degraded")
        assert await browser.evaluate(desktop, "window.keptPage === true && document.querySelector("
                                               "'article.card[data-camera=swing]').classList.contains('state-degraded')")
        reason = await browser.evaluate(desktop, "document.querySelector('article.card[data-camera=swing] .reason')"
                                                 ".textContent")
        assert "since" in reason and health_states(relay)["swing"].reason in reason
        sims[1].set_offline(False)

        async def swing_online_on_the_page() -> bool:
            cards = await browser.evaluate(desktop, CARDS)  # type: ignore[union-attr]
            return [card["state"] for card in cards] == ["online", "online", "degraded"]

        await poll(swing_online_on_the_page, timeout=30, what="the swing card online again")

        phone = await browser.open(url, "admin", "admin-pw", 390, 844)
        await poll(lambda: browser.evaluate(phone, "document.readyState === 'complete' && "  # type: ignore[union-attr]
                                                   "document.querySelectorAll('article.card').length === 3"),
                   timeout=15, what="the phone page")
        widths = await browser.evaluate(phone, "[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"the phone page scrolls sideways: {widths}"
        shot = await browser.tools.send("Page.captureScreenshot", {"format": "png"}, phone)
        (tmp_path / "dashboard-phone.png").write_bytes(base64.b64decode(shot["data"]))
        # The swing's thumbnail failed to load (503) while its HTTP API was down; nothing else went wrong.
        assert [problem for problem in browser.tools.problems if "/snapshot/swing.jpg?" not in problem] == []
    finally:
        if browser is not None:
            await browser.close()
        await relay.stopService()
        for port in ports:
            await port.stopListening()



def health_states(relay: Any) -> dict[str, Any]:
    """Every camera's state in the running relay's health monitor."""
    monitor = next(service for service in relay.generation.workers if isinstance(service, HealthMonitor))
    return monitor.states()
