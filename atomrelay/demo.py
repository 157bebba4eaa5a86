"""``atomrelay demo``: simulated cameras and a mediamtx stand-in on loopback, and the relay on them.

The only module that imports ``atomrelay.sim``.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutput
from twisted.logger import Logger
from twisted.python.failure import Failure

from atomrelay.buildinfo import child_environ
from atomrelay.camera.firmware import Firmware
from atomrelay.config import Config
from atomrelay.relay import RelayService, finished
from atomrelay.wiring import build_relay

DEMO_CAMERAS: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    # main: H.264 + S16_BE (ffmpeg makes G.711); sub: H.265 without audio (mediamtx pulls it as is)
    ("cam2", "ATOM Cam 2", "ATOM_CamV3C", {}),
    # sub: H.265 + OPUS (ffmpeg makes AAC and publishes over SRT)
    ("swing", "ATOM Cam Swing", "ATOM_CAKP1JZJP", {"RTSP_AUDIO1": "OPUS"}),
    # main: H.264 + AAC, passed through
    ("wyze", "Wyze Cam v3", "WYZE_CAKP2JFUS", {"RTSP_AUDIO0": "AAC"}),
)
"""id, name, model and hack.ini settings of each simulated camera: together the three mediamtx path shapes."""

PATTERNS = ("testsrc2", "smptehdbars", "rgbtestsrc")
"""ffmpeg test sources for the simulated cameras' snapshots, one per camera."""

MEDIAMTX_STOP_TIMEOUT = 5.0
"""Seconds mediamtx gets to exit after SIGTERM before it is killed."""

MEDIAMTX_INSTALL = ("download the mediamtx release for this machine from "
                    "https://github.com/bluenviron/mediamtx/releases and put the mediamtx executable on PATH")


@dataclass(frozen=True)
class DemoCamera:
    """One simulated camera as the demo runs it."""

    id: str
    name: str
    model: str
    firmware: Firmware
    http_port: int
    rtsp_port: int
    webhook_token: str


@dataclass(frozen=True)
class DemoMediamtx:
    """Where the demo's mediamtx listens; ``real`` is False for the API stand-in (no video)."""

    api_port: int
    rtsp_port: int
    srt_port: int
    real: bool


class _MediamtxOutput(ProcessProtocol):
    """Logs mediamtx's lines (errors as warnings) and tells when it has exited."""

    log = Logger(namespace="mediamtx")

    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        """One log event per line."""
        for line in data.decode("utf-8", "replace").splitlines():
            if " ERR " in line or " WAR " in line:
                self.log.warn("{line}", line=line)
            else:
                self.log.debug("{line}", line=line)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        """mediamtx has exited."""
        self.ended.callback(None)


class DemoService(MultiService):
    """Simulated cameras (HTTP and RTSP) + a real mediamtx or its API stand-in + the relay, all on 127.0.0.1.

    A state directory it made itself is removed when it stops.
    """

    log = Logger()

    def __init__(self, reactor: Any, port: int = 8080, state_dir: Path | None = None) -> None:
        cast(Any, MultiService).__init__(self)
        self.reactor = reactor
        self.port = port
        self._own_state = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="atomrelay-demo-"))
        self.relay: RelayService | None = None
        self._ports: list[Any] = []
        self._rtsp_servers: list[Any] = []
        self._mediamtx: _MediamtxOutput | None = None
        self._mediamtx_process: Any = None

    def startService(self) -> None:
        """Start the simulators and mediamtx, then build and start the relay pointing at them."""
        from atomrelay.sim.camera import SimulatedCamera, listen_camera
        from atomrelay.sim.rtsp import SimulatedRtspServer, listen_rtsp

        cast(Any, MultiService).startService(self)
        ffmpeg = shutil.which("ffmpeg")
        cameras = []
        for index, (cam_id, name, model, settings) in enumerate(DEMO_CAMERAS):
            token = secrets.token_urlsafe(18)
            camera = SimulatedCamera(self.reactor, model, hostname=cam_id, hwaddr=f"02:00:00:00:00:{index + 1:02x}",
                                     firmware={**settings, "WEBHOOK": "on", "WEBHOOK_ALARM_EVENT": "on",
                                               "WEBHOOK_ALARM_INFO": "on",
                                               "WEBHOOK_URL": f"http://127.0.0.1:{self.port}/webhook/{cam_id}/{token}"})
            http: Any = listen_camera(self.reactor, camera)
            server = SimulatedRtspServer(self.reactor, camera.rtsp_stream, ffmpeg, env=child_environ())
            rtsp: Any = listen_rtsp(self.reactor, server)
            self._ports += [http, rtsp]
            self._rtsp_servers.append(server)
            if ffmpeg is not None:
                self._paint(camera, ffmpeg, PATTERNS[index % len(PATTERNS)])
            cameras.append(DemoCamera(cam_id, name, model, Firmware(camera.firmware), int(http.getHost().port),
                                      int(rtsp.getHost().port), token))
        binary = shutil.which("mediamtx")
        mediamtx = self._start_fake_mediamtx() if binary is None else DemoMediamtx(*_free_ports(), real=True)
        config = demo_config(self.port, mediamtx, cameras, self.state_dir)
        if binary is not None:
            self._spawn_mediamtx(binary, config, mediamtx)
        self.relay = build_relay(config, self.reactor)
        cast(Any, self.relay).setServiceParent(self)
        print(demo_banner(config, cameras, mediamtx, ffmpeg is not None), flush=True)

    def _paint(self, camera: Any, ffmpeg: str, pattern: str) -> None:
        """Give ``camera``'s snapshots an ffmpeg test pattern instead of the simulator's 8x8 grey (in the background)."""
        args = ["-v", "error", "-f", "lavfi", "-i", f"{pattern}=size=640x360", "-frames:v", "1", "-f", "mjpeg", "-"]

        def painted(jpeg: bytes) -> None:
            if jpeg.startswith(b"\xff\xd8"):
                camera.snapshot_jpeg = jpeg

        def failed(failure: Failure) -> None:
            self.log.info("demo: no test-pattern snapshot ({error}); the simulator's grey one it is",
                          error=str(failure.value))

        done: Deferred[bytes] = cast(Any, getProcessOutput)(ffmpeg, args, env=child_environ(), reactor=self.reactor)
        done.addCallbacks(painted, failed)

    def _start_fake_mediamtx(self) -> DemoMediamtx:
        from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx

        port: Any = listen_mediamtx(self.reactor, FakeMediamtx(self.reactor))
        self._ports.append(port)
        api_port = int(port.getHost().port)
        self.log.info("demo: mediamtx API stand-in (a test double, no video) on 127.0.0.1:{port}", port=api_port)
        return DemoMediamtx(api_port, 8554, 8890, real=False)

    def _spawn_mediamtx(self, binary: str, config: Config, mediamtx: DemoMediamtx) -> None:
        conf = self.state_dir / "mediamtx.yml"
        conf.write_text(demo_mediamtx_yaml(config, mediamtx), encoding="utf-8")
        self._mediamtx = _MediamtxOutput()
        self._mediamtx_process = self.reactor.spawnProcess(self._mediamtx, binary, [binary, str(conf)],
                                                           env=child_environ())
        self.log.info("demo: started mediamtx ({binary}) with {conf}", binary=binary, conf=conf)

    def stopService(self) -> Deferred[None]:
        """Stop the relay, then the simulators and mediamtx; remove a state directory of our own."""

        async def stop() -> None:
            await finished(cast(Any, MultiService).stopService(self))
            for server in self._rtsp_servers:
                server.stop()
            for port in self._ports:
                await finished(port.stopListening())
            if self._mediamtx is not None and not self._mediamtx.ended.called:
                self._signal_mediamtx("TERM")
                kill = self.reactor.callLater(MEDIAMTX_STOP_TIMEOUT, self._signal_mediamtx, "KILL")
                await self._mediamtx.ended
                if kill.active():
                    kill.cancel()
            if self._own_state:
                shutil.rmtree(self.state_dir, ignore_errors=True)

        return Deferred.fromCoroutine(stop())

    def _signal_mediamtx(self, signal: str) -> None:
        try:
            self._mediamtx_process.signalProcess(signal)
        except ProcessExitedAlready:
            pass


def _free_ports() -> tuple[int, int, int]:
    """Three loopback ports free a moment ago: mediamtx's API and RTSP (TCP) and SRT (UDP)."""
    kinds = (socket.SOCK_STREAM, socket.SOCK_STREAM, socket.SOCK_DGRAM)
    sockets = [socket.socket(socket.AF_INET, kind) for kind in kinds]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        api, rtsp, srt = (int(sock.getsockname()[1]) for sock in sockets)
        return api, rtsp, srt
    finally:
        for sock in sockets:
            sock.close()


def demo_config(port: int, mediamtx: DemoMediamtx, cameras: list[DemoCamera], state_dir: Path) -> Config:
    """The demo's configuration: admin/admin, loopback only, each camera's entry as ``add-camera`` writes it."""
    from atomrelay.addcamera import camera_entry, plan_streams
    from atomrelay.config import CameraConfig, parse_config

    lines = [
        "onvif:",
        "  bind: 127.0.0.1",
        f"  port: {port}",
        "  device: {manufacturer: atomrelay, model: ATOM Cam relay (demo), name: atomrelay-demo}",
        "  users:",
        "    - {username: admin, password: admin, role: Administrator}",
        "discovery: {enabled: false}",
        "mediamtx:",
        f"  api_url: http://127.0.0.1:{mediamtx.api_port}",
        f"  rtsp_port: {mediamtx.rtsp_port}",
        f"  srt_port: {mediamtx.srt_port}",
        "  wait_timeout: 10s",
        "health: {interval: 5s}",
        f"state_dir: {state_dir}",
        "cameras:",
    ]
    text = "\n".join(lines) + "\n"
    for camera in cameras:
        entry = CameraConfig(camera.id, camera.name, "127.0.0.1", (), http_port=camera.http_port,
                             rtsp_port=camera.rtsp_port, webhook_token=camera.webhook_token)
        text += camera_entry(entry, camera.firmware, plan_streams(camera.firmware, {}))
    return parse_config(text, "<demo>")


def demo_mediamtx_yaml(config: Config, mediamtx: DemoMediamtx) -> str:
    """mediamtx.yml for the demo: ``atomrelay mediamtx-config``'s settings, listening on loopback only."""
    from atomrelay.mediamtx.settings import mediamtx_config_fragment

    loopback = {"rtspAddress": f"127.0.0.1:{mediamtx.rtsp_port}", "srtAddress": f"127.0.0.1:{mediamtx.srt_port}"}
    lines = []
    for line in mediamtx_config_fragment(config).splitlines():
        key = line.split(":", 1)[0]
        lines.append(f"{key}: {loopback[key]}" if key in loopback else line)
    lines += ["", "# The demo serves RTSP only.", "logLevel: info", "rtmp: no", "hls: no", "webrtc: no", "paths: {}"]
    return "\n".join(lines) + "\n"


def demo_banner(config: Config, cameras: list[DemoCamera], mediamtx: DemoMediamtx, ffmpeg: bool) -> str:
    """What to point an ONVIF client, a browser and a video player at, and what is missing for video."""
    from atomrelay.mediamtx.paths import path_name

    port = config.onvif.port
    text = [
        "",
        "atomrelay demo is running (everything on 127.0.0.1; Ctrl-C stops it)",
        f"  ONVIF device service: http://127.0.0.1:{port}/onvif/device_service",
        "  user: admin   password: admin",
        f"  dashboard (open it in a browser): http://127.0.0.1:{port}/   (JSON: /status, metrics: /metrics)",
        f"  mediamtx API: {config.mediamtx.api_url}" + ("" if mediamtx.real else " (a stand-in: no video)"),
        "  simulated cameras:",
    ]
    for camera in cameras:
        text.append(f"    {camera.id:6} {camera.name:16} {camera.model:16} http://127.0.0.1:{camera.http_port}/  "
                    f"rtsp://127.0.0.1:{camera.rtsp_port}/video0_unicast")
    text.append("  snapshots and streams (user admin, password admin):")
    for configured in config.cameras:
        text.append(f"    {configured.id}: http://127.0.0.1:{port}/snapshot/{configured.id}.jpg")
        for stream in configured.streams:
            text.append(f"      rtsp://127.0.0.1:{config.mediamtx.rtsp_port}/"
                        f"{path_name(configured, stream)}  ({stream.codec}, audio {stream.audio})")
    if not mediamtx.real:
        text.append("  video: the stream URIs do not play: mediamtx is not on PATH (" + MEDIAMTX_INSTALL + ")")
    if not ffmpeg:
        text.append("  video: ffmpeg is not on PATH, so the simulated cameras send no picture and mediamtx cannot "
                    "transcode audio (Debian/Ubuntu: sudo apt-get install ffmpeg)")
    text += [
        "  try: onvif-cli / ONVIF Device Manager, or",
        f"    curl -s -H 'Content-Type: application/soap+xml' --data "
        f"'<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body>"
        f"<GetSystemDateAndTime xmlns=\"http://www.onvif.org/ver10/device/wsdl\"/></s:Body></s:Envelope>' "
        f"http://127.0.0.1:{port}/onvif/device_service",
        "",
    ]
    return "\n".join(text)


def make_demo_service(reactor: Any, port: int = 8080) -> DemoService:
    """The demo service (``atomrelay demo``)."""
    return DemoService(reactor, port)
