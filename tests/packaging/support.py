"""Shared pieces of the packaging and ``check`` tests: simulators, configs, datagram sockets."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from atomrelay.sim.camera import SimulatedCamera, listen_camera
from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx
from atomrelay.sim.rtsp import SimulatedRtspServer, listen_rtsp

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "packaging"

GOOD_SETTINGS: dict[str, Any] = {
    "rtspTransports": ["tcp"],
    "rtspAuthMethods": ["basic"],
    "readTimeout": "15m0s",
    "writeQueueSize": 4096,
    "srt": True,
    "authHTTPExclude": [],
}
"""Global settings (besides addresses and auth) that make ``check`` happy, as mediamtx reports them."""


def relay_settings(onvif_port: int, rtsp_port: int = 8554, srt_port: int = 8890) -> dict[str, Any]:
    """GOOD_SETTINGS plus the addresses and the HTTP auth that a default ``mediamtx.auth: relay`` config wants."""
    return {
        **GOOD_SETTINGS,
        "rtspAddress": f":{rtsp_port}",
        "srtAddress": f":{srt_port}",
        "authMethod": "http",
        "authHTTPAddress": f"http://127.0.0.1:{onvif_port}/mediamtx/auth",
    }


class TunedMediamtx(Resource):
    """The fake mediamtx, with ``overrides`` merged into its ``/v3/config/global/get`` answer."""

    isLeaf = True

    def __init__(self, fake: FakeMediamtx, overrides: dict[str, Any]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.fake = fake
        self.overrides = overrides

    def render(self, request: Request) -> bytes | int:
        """Delegate to the fake; rewrite the global configuration reply."""
        body = self.fake.render(request)
        if request.path == b"/v3/config/global/get" and isinstance(body, bytes) and request.code == 200:
            merged = {**json.loads(body), **self.overrides}
            return json.dumps(merged).encode("utf-8")
        return body


@dataclass
class Simulators:
    """A fake mediamtx and one simulated camera with its RTSP server (streaming when ffmpeg is installed)."""

    fake: FakeMediamtx
    api_port: int
    camera_port: int
    rtsp_port: int
    camera: SimulatedCamera
    rtsp: SimulatedRtspServer
    ports: list[Any] = field(default_factory=list)
    api_scheme: str = "http"

    @property
    def api_url(self) -> str:
        """Where the fake mediamtx's API answers."""
        return f"{self.api_scheme}://127.0.0.1:{self.api_port}"

    async def stop(self) -> None:
        """Close every listening port and RTSP session."""
        self.rtsp.stop()
        for port in self.ports:
            await port.stopListening()


def start_simulators(reactor: Any, model: str = "ATOM_CamV3C", settings: dict[str, Any] | None = None,
                     version: str = "v1.20.1", tls: Any = None) -> Simulators:
    """Listen on 127.0.0.1 with a fake mediamtx (``settings`` overriding its global config) and a camera.

    ``tls`` (a ``twisted.internet.ssl.PrivateCertificate``) serves the mediamtx API over https.
    """
    from twisted.web.server import Site

    fake = FakeMediamtx(reactor, version=version)
    if settings is None and tls is None:
        api = listen_mediamtx(reactor, fake)
    else:
        resource = TunedMediamtx(fake, settings or {})
        site = Site(resource)  # type: ignore[no-untyped-call]
        if tls is not None:
            api = reactor.listenSSL(0, site, tls.options(), interface="127.0.0.1")
        else:
            api = reactor.listenTCP(0, site, interface="127.0.0.1")
    camera = SimulatedCamera(reactor, model, firmware={"RTSP_AUDIO1": "AAC"})
    http = listen_camera(reactor, camera)
    server = SimulatedRtspServer(reactor, camera.rtsp_stream, shutil.which("ffmpeg"))
    rtsp = listen_rtsp(reactor, server)
    return Simulators(fake, api.getHost().port, http.getHost().port, rtsp.getHost().port, camera, server,
                      [api, http, rtsp], "https" if tls is not None else "http")


def write_config(path: Path, sims: Simulators, onvif_port: int, state_dir: Path, *, model: str = "auto",
                 streams: str | None = None, extra_mediamtx: str = "", http_basic: bool = False) -> Path:
    """A relay config for ``sims`` with user admin / s3cret! and a webhook token, which the camera is set to send to."""
    streams = streams or (
        "      - {name: main, rtsp_path: video0_unicast, codec: h264, audio: transcode}\n"
        "      - {name: sub, rtsp_path: video1_unicast, codec: h265, audio: transcode, width: 640, height: 360}\n"
    )
    path.write_text(
        "onvif:\n"
        "  bind: 127.0.0.1\n"
        f"  port: {onvif_port}\n"
        f"  http_basic: {'true' if http_basic else 'false'}\n"
        '  users: [{username: admin, password: "s3cret!", role: Administrator}]\n'
        "discovery: {enabled: false}\n"
        "mediamtx:\n"
        f"  api_url: {sims.api_url}\n"
        "  poll_interval: 200ms\n"
        "  wait_timeout: 5s\n"
        f"{extra_mediamtx}"
        f"state_dir: {state_dir}\n"
        "cameras:\n"
        "  - id: living\n"
        "    host: 127.0.0.1\n"
        f"    http_port: {sims.camera_port}\n"
        f"    rtsp_port: {sims.rtsp_port}\n"
        "    rtsp_username: viewer\n"
        '    rtsp_password: "cam-pa55"\n'
        f"    model: {model}\n"
        "    webhook_token: abcdefghijklmnopqrstuvwx\n"
        "    streams:\n"
        f"{streams}",
        encoding="utf-8",
    )
    path.chmod(0o600)
    sims.camera.firmware.update({
        "WEBHOOK": "on",
        "WEBHOOK_URL": f"http://127.0.0.1:{onvif_port}/webhook/living/abcdefghijklmnopqrstuvwx",
        "WEBHOOK_ALARM_EVENT": "on",
    })
    return path


def unit_directives(name: str) -> dict[str, list[str]]:
    """``Key -> [values]`` of every directive in ``packaging/<name>`` (comments skipped)."""
    directives: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        directives.setdefault(key.strip(), []).append(value.strip())
    return directives


def exec_start(name: str) -> list[str]:
    """The ExecStart command line of ``packaging/<name>``, split like systemd does."""
    (command,) = unit_directives(name)["ExecStart"]
    return shlex.split(command)


class NotifyListener:
    """A bound AF_UNIX datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.address = address
        self.messages: list[dict[str, str]] = []

    @property
    def env_value(self) -> str:
        """The address as ``$NOTIFY_SOCKET`` writes it (``@`` for abstract sockets)."""
        return "@" + self.address[1:] if self.address.startswith("\0") else self.address

    def drain(self) -> list[dict[str, str]]:
        """Read every datagram waiting; return all received so far as field dicts."""
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode("utf-8").split("\n") if line)
            self.messages.append(fields)

    def seen(self, key: str) -> bool:
        """Whether any datagram so far carried ``key``."""
        return any(key in message for message in self.drain())

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
