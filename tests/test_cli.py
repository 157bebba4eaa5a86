"""The command line and twistd entry points, run as real processes on loopback."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue

from atomrelay import __version__
from atomrelay.cli import build_parser
from atomrelay.sim.camera import SimulatedCamera, listen_camera
from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx
from tests.helpers import GET_DATE, ROOT, VENV_BIN, child_env, free_port, poll

pytestmark = pytest.mark.integration


def relay_config(tmp_path: Path, api_port: int, camera_port: int, onvif_port: int, rtsp_port: int = 1) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""\
onvif:
  bind: 127.0.0.1
  port: {onvif_port}
  users: [{{username: admin, password: "s3cret!", role: Administrator}}]
discovery: {{enabled: false}}
mediamtx:
  api_url: http://127.0.0.1:{api_port}
  poll_interval: 200ms
  wait_timeout: 5s
state_dir: {tmp_path / 'state'}
cameras:
  - id: living
    host: 127.0.0.1
    http_port: {camera_port}
    rtsp_port: {rtsp_port}
    model: auto
    streams:
      - {{name: main, rtsp_path: video0_unicast, codec: h264, audio: transcode}}
      - {{name: sub, rtsp_path: video1_unicast, codec: h265, audio: none}}
""",
        encoding="utf-8",
    )
    return path


class Collect(ProcessProtocol):
    """Collects a child's output and tells when it exits."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[tuple[int | None, int | None]] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback((reason.value.exitCode, reason.value.signal))


def spawn(args: list[str], cwd: Path) -> tuple[Collect, Any]:
    proto = Collect()
    process = reactor.spawnProcess(proto, args[0], args, env=child_env(), path=str(cwd))
    return proto, process


async def answers(port: int) -> bool:
    try:
        response = await treq.post(f"http://127.0.0.1:{port}/onvif/device_service", GET_DATE,
                                   headers={"Content-Type": "application/soap+xml"}, timeout=2)
        body = await response.content()
    except Exception:  # noqa: BLE001 - not up yet
        return False
    return response.code == 200 and b"UTCDateTime" in body


def test_version() -> None:
    """`atomrelay --version` prints the package version."""
    out = subprocess.run([str(VENV_BIN / "atomrelay"), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert out.stdout.strip() == f"atomrelay {__version__}"


def test_parser_has_every_command() -> None:
    """run, check, demo and mediamtx-config are all wired."""
    parser = build_parser()
    for argv in (["run", "-c", "x"], ["check", "-c", "x"], ["demo"], ["mediamtx-config", "-c", "x"]):
        assert callable(parser.parse_args(argv).func)


def test_bad_config_refuses_to_start(tmp_path: Path) -> None:
    """`atomrelay run` with an invalid config exits non-zero naming the key and line."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("onvif:\n  users: [{username: a, password: b}]\ncameras:\n  - id: x\n    host: h\n"
                   "    streams: [{name: main, rtsp_path: v, codec: h266}]\n")
    out = subprocess.run([str(VENV_BIN / "atomrelay"), "run", "-c", str(bad)], capture_output=True, text=True,
                         timeout=60, env=child_env())
    assert out.returncode != 0
    assert "cameras[0].streams[0].codec: 'h266' is not one of h264, h265 (line 6)" in out.stderr + out.stdout


def test_mediamtx_config_prints_fragment(tmp_path: Path) -> None:
    """`atomrelay mediamtx-config` prints the settings the relay depends on, without wide-open ips."""
    cfg = relay_config(tmp_path, 9997, 80, 8080)
    out = subprocess.run([str(VENV_BIN / "atomrelay"), "mediamtx-config", "-c", str(cfg)], capture_output=True,
                         text=True, timeout=60, env=child_env())
    assert out.returncode == 0, out.stderr
    import yaml

    fragment = yaml.safe_load(out.stdout)
    assert fragment["rtspTransports"] == ["tcp"]
    assert fragment["readTimeout"] == "15m"
    assert fragment["writeQueueSize"] == 4096
    assert fragment["api"] is True
    for user in fragment.get("authInternalUsers", []):
        assert user.get("ips") != []
    assert "s3cret!" not in out.stdout or fragment.get("authMethod") == "internal"


@pytest_twisted.ensureDeferred
async def test_check_reports_ok_and_fail(tmp_path: Path) -> None:
    """`atomrelay check` prints OK for what answers and FAIL with a reason for what does not, exit 1."""
    fake = FakeMediamtx(Clock())
    api = listen_mediamtx(reactor, fake)
    cam = listen_camera(reactor, SimulatedCamera(reactor, "ATOM_CAKP1JZJP"))
    try:
        cfg = relay_config(tmp_path, api.getHost().port, cam.getHost().port, free_port(), rtsp_port=free_port())
        out, err, code = await getProcessOutputAndValue(
            str(VENV_BIN / "atomrelay"), ["check", "-c", str(cfg)], env=child_env(), reactor=reactor)
    finally:
        await api.stopListening()
        await cam.stopListening()
    text = out.decode()
    assert code == 1, text + err.decode()
    assert any(line.startswith("OK") and "mediamtx" in line and "v1.20.1" in line for line in text.splitlines())
    assert any(line.startswith("OK") and "camera living " in line and "ATOM_CAKP1JZJP" in line
               for line in text.splitlines())
    assert any(line.startswith("FAIL") and "camera living rtsp" in line for line in text.splitlines())
    assert "s3cret!" not in text


@pytest_twisted.ensureDeferred
async def test_twistd_plugin_starts_registers_and_stops(tmp_path: Path) -> None:
    """`twistd -n --pidfile= atomrelay -c FILE` serves ONVIF, registers paths, and exits 0 on SIGTERM."""
    fake = FakeMediamtx(Clock())
    api = listen_mediamtx(reactor, fake)
    cam = listen_camera(reactor, SimulatedCamera(reactor, "ATOM_CamV3C"))
    onvif_port = free_port()
    cfg = relay_config(tmp_path, api.getHost().port, cam.getHost().port, onvif_port)
    proto, process = spawn([str(VENV_BIN / "twistd"), "-n", "--pidfile=", "atomrelay", "-c", str(cfg)], ROOT)
    try:
        await poll(lambda: answers(onvif_port), timeout=30, what="the relay to answer SOAP")
        await poll(lambda: {"living/main", "living/sub"} <= set(fake.paths), timeout=10, what="paths registered")
        process.signalProcess("TERM")
        code = await proto.ended
    finally:
        if process.pid is not None:
            process.signalProcess("KILL")
        await api.stopListening()
        await cam.stopListening()
    # twistd re-raises the signal it stopped on (systemd counts that as a clean stop).
    assert code in ((0, None), (None, signal.SIGTERM)), proto.output.decode()
    assert b"Traceback" not in proto.output
    assert b"Main loop terminated" in proto.output


@pytest_twisted.ensureDeferred
async def test_run_command_survives_mediamtx_restart(tmp_path: Path) -> None:
    """`atomrelay run` puts every path back after the mediamtx stand-in restarts."""
    fake = FakeMediamtx(reactor)
    api = listen_mediamtx(reactor, fake)
    cam = listen_camera(reactor, SimulatedCamera(reactor, "AC1"))
    onvif_port = free_port()
    cfg = relay_config(tmp_path, api.getHost().port, cam.getHost().port, onvif_port)
    proto, process = spawn([str(VENV_BIN / "atomrelay"), "run", "-c", str(cfg)], tmp_path)
    try:
        await poll(lambda: {"living/main", "living/sub"} <= set(fake.paths), timeout=30, what="paths registered")
        fake.restart()
        assert not fake.paths
        await poll(lambda: {"living/main", "living/sub"} <= set(fake.paths), timeout=10, what="paths re-registered")
        process.signalProcess("TERM")
        code = await proto.ended
    finally:
        if process.pid is not None:
            process.signalProcess("KILL")
        await api.stopListening()
        await cam.stopListening()
    assert code == (0, None), proto.output.decode()
    assert b"Traceback" not in proto.output


@pytest_twisted.ensureDeferred
async def test_demo_serves(tmp_path: Path) -> None:
    """`atomrelay demo` answers ONVIF on 127.0.0.1 and prints what to point a client at."""
    port = free_port()
    proto, process = spawn([str(VENV_BIN / "atomrelay"), "demo", "--port", str(port)], tmp_path)
    try:
        await poll(lambda: answers(port), timeout=30, what="the demo to answer SOAP")
        process.signalProcess("TERM")
        code = await proto.ended
    finally:
        if process.pid is not None:
            process.signalProcess("KILL")
    assert code == (0, None), proto.output.decode()
    assert f"http://127.0.0.1:{port}/onvif/device_service" in proto.output.decode()
    assert "admin" in proto.output.decode()
