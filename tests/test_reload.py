"""SIGHUP reload and SIGTERM stop of a real `atomrelay run` process on loopback."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from lxml import etree
from twisted.internet import reactor
from twisted.internet.task import Clock

from atomrelay.onvif import ns
from atomrelay.sim.camera import SimulatedCamera, listen_camera
from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx
from tests.helpers import VENV_BIN, free_port, poll
from tests.onvif.conftest import soap_envelope, soap_iso, soap_security
from tests.test_cli import answers, spawn

pytestmark = pytest.mark.integration


def write_config(path: Path, api_port: int, onvif_port: int, cameras: list[tuple[str, int]], extra: str = "",
                 onvif_extra: tuple[str, ...] = ()) -> None:
    lines = [
        "onvif:",
        "  bind: 127.0.0.1",
        f"  port: {onvif_port}",
        "  users: [{username: admin, password: 'pw-123', role: Administrator}]",
        *(f"  {line}" for line in onvif_extra),
        "discovery: {enabled: false}",
        "mediamtx:",
        f"  api_url: http://127.0.0.1:{api_port}",
        "  poll_interval: 200ms",
        "  wait_timeout: 5s",
        f"state_dir: {path.parent / 'state'}",
        "cameras:",
    ]
    for cam_id, port in cameras:
        lines += [
            f"  - id: {cam_id}",
            "    host: 127.0.0.1",
            f"    http_port: {port}",
            "    model: ATOM_CamV3C",
            "    streams: [{name: main, rtsp_path: video0_unicast, codec: h264, audio: transcode}]",
        ]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")


async def call(url: str, operation: etree._Element) -> tuple[int, etree._Element]:
    """POST an authenticated SOAP 1.2 request and parse the answer."""
    body = soap_envelope(operation, [soap_security("admin", "pw-123", soap_iso(time.time()))])
    response = await treq.post(url, body, headers={"Content-Type": "application/soap+xml"}, timeout=10)
    return response.code, etree.fromstring(await response.content())


async def profile_tokens(url: str) -> list[str]:
    """The tokens of the Media profiles GetProfiles lists."""
    code, answer = await call(url, op(ns.TRT, "GetProfiles"))
    assert code == 200, etree.tostring(answer)
    return [profile.get("token") or "" for profile in answer.iter(ns.q(ns.TRT, "Profiles"))]


def op(namespace: str, name: str, *children: etree._Element) -> etree._Element:
    element = etree.Element(ns.q(namespace, name), nsmap={"op": namespace})
    element.extend(children)
    return element


def child(namespace: str, name: str, text: str) -> etree._Element:
    element = etree.Element(ns.q(namespace, name))
    element.text = text
    return element


@pytest_twisted.ensureDeferred
async def test_sighup_applies_good_config_keeps_subscriptions_and_refuses_bad(tmp_path: Path) -> None:
    """A good SIGHUP adds the new camera's path and profile without dropping the port or a pull-point
    subscription; a bad one keeps the old config, logs the key and line, and SIGTERM then exits 0 within 5 s."""
    fake = FakeMediamtx(Clock())
    api = listen_mediamtx(reactor, fake)
    cam1 = listen_camera(reactor, SimulatedCamera(reactor, "ATOM_CamV3C"))
    cam2 = listen_camera(reactor, SimulatedCamera(reactor, "ATOM_CamV3C"))
    onvif_port = free_port()
    cfg = tmp_path / "config.yaml"
    write_config(cfg, api.getHost().port, onvif_port, [("living", cam1.getHost().port)])
    proto, process = spawn([str(VENV_BIN / "atomrelay"), "run", "-c", str(cfg)], tmp_path)
    base = f"http://127.0.0.1:{onvif_port}/onvif"
    try:
        await poll(lambda: "living/main" in fake.paths, timeout=30, what="first path registered")
        code, answer = await call(f"{base}/events_service", op(ns.TEV, "CreatePullPointSubscription",
                                                                child(ns.TEV, "InitialTerminationTime", "PT600S")))
        assert code == 200, etree.tostring(answer)
        address = answer.findtext(f".//{{{ns.TEV}}}SubscriptionReference/{{{ns.WSA}}}Address")
        assert address

        write_config(cfg, api.getHost().port, onvif_port,
                     [("living", cam1.getHost().port), ("porch", cam2.getHost().port)])
        process.signalProcess("HUP")
        await poll(lambda: "porch/main" in fake.paths, timeout=15, what="the new camera's path after SIGHUP")
        await poll(lambda: b"config reloaded" in proto.output, timeout=10, what="the reload log line")
        code, profiles = await call(f"{base}/media_service", op(ns.TRT, "GetProfiles"))
        assert code == 200
        assert {p.get("token") for p in profiles.iter(f"{{{ns.TRT}}}Profiles")} >= {"living.main", "porch.main"}
        code, pulled = await call(address, op(ns.TEV, "PullMessages", child(ns.TEV, "Timeout", "PT1S"),
                                              child(ns.TEV, "MessageLimit", "10")))
        assert code == 200, etree.tostring(pulled)
        assert pulled.find(f".//{{{ns.TEV}}}PullMessagesResponse") is not None

        cfg.write_text(cfg.read_text().replace("codec: h264", "codec: h266", 1), encoding="utf-8")
        process.signalProcess("HUP")
        await poll(lambda: b"config reload refused" in proto.output, timeout=10, what="the refusal log line")
        assert b"cameras[0].streams[0].codec: 'h266' is not one of h264, h265 (line" in proto.output
        assert await answers(onvif_port)
        assert {"living/main", "porch/main"} <= set(fake.paths)

        started = time.monotonic()
        process.signalProcess("TERM")
        code_signal: Any = await proto.ended
        assert time.monotonic() - started < 5.0
    finally:
        if process.pid is not None:
            process.signalProcess("KILL")
        for port in (api, cam1, cam2):
            await port.stopListening()
    assert code_signal == (0, None), proto.output.decode()
    assert b"Traceback" not in proto.output


@pytest_twisted.ensureDeferred
async def test_sighup_removes_a_camera_and_its_path(tmp_path: Path) -> None:
    """Removing a camera and sending SIGHUP deletes its mediamtx path and leaves the other alone."""
    fake = FakeMediamtx(Clock())
    api = listen_mediamtx(reactor, fake)
    cam = listen_camera(reactor, SimulatedCamera(reactor, "AC1"))
    onvif_port = free_port()
    cfg = tmp_path / "config.yaml"
    write_config(cfg, api.getHost().port, onvif_port, [("a", cam.getHost().port), ("b", cam.getHost().port)])
    proto, process = spawn([str(VENV_BIN / "atomrelay"), "run", "-c", str(cfg)], tmp_path)
    try:
        await poll(lambda: {"a/main", "b/main"} <= set(fake.paths), timeout=30, what="both paths")
        media = f"http://127.0.0.1:{onvif_port}/onvif/media_service"
        assert await profile_tokens(media) == ["a.main", "b.main"]
        writes_before = len(fake.writes)
        write_config(cfg, api.getHost().port, onvif_port, [("a", cam.getHost().port)])
        process.signalProcess("HUP")
        await poll(lambda: "b/main" not in fake.paths, timeout=15, what="the removed camera's path deleted")
        assert "a/main" in fake.paths
        assert [w.path for w in fake.writes[writes_before:]] == ["/v3/config/paths/delete/b/main"]
        assert await answers(onvif_port)
        # The listener's routes to the SOAP endpoints follow the new generation's resources.
        assert await profile_tokens(media) == ["a.main"]
        process.signalProcess("TERM")
        await proto.ended
    finally:
        if process.pid is not None:
            process.signalProcess("KILL")
        await api.stopListening()
        await cam.stopListening()


@pytest_twisted.ensureDeferred
async def test_reload_applies_clock_skew_and_http_basic(tmp_path: Path) -> None:
    """onvif.max_clock_skew, http_basic and allow_password_text take effect on a reload, as every key but state_dir does."""
    from atomrelay.config import load_config
    from atomrelay.tap import build_relay

    path = tmp_path / "config.yaml"
    ports = (free_port(), free_port(), [("cam1", free_port())])
    write_config(path, *ports)
    relay = build_relay(load_config(str(path)), reactor, config_path=str(path))
    authenticator = relay.parts.authenticator
    assert (authenticator.max_clock_skew, authenticator.http_basic, authenticator.allow_password_text) == (
        300.0, False, True)
    assert not any(value.startswith(b"Basic") for value in authenticator.challenge_headers())

    write_config(path, *ports, onvif_extra=("max_clock_skew: 30s", "http_basic: true", "allow_password_text: false"))
    await relay.reload()

    assert relay.parts.authenticator is authenticator  # its replay memory is kept
    assert (authenticator.max_clock_skew, authenticator.http_basic, authenticator.allow_password_text) == (
        30.0, True, False)
    assert any(value.startswith(b"Basic") for value in authenticator.challenge_headers())
