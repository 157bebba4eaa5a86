"""``atomrelay demo``: simulated cameras and a mediamtx stand-in on loopback, and the relay on them.

The only module that imports ``atomrelay.sim``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from atomrelay.config import Config
from atomrelay.tap import RelayService, _maybe_deferred, build_relay


DEMO_CAMERAS = (
    ("cam2", "ATOM Cam 2", "ATOM_CamV3C"),
    ("swing", "ATOM Cam Swing", "ATOM_CAKP1JZJP"),
    ("wyze", "Wyze Cam v3", "WYZE_CAKP2JFUS"),
)


class DemoService(MultiService):
    """Simulated cameras + mediamtx stand-in (or a real mediamtx) + the relay, all on 127.0.0.1."""

    log = Logger()

    def __init__(self, reactor: Any, port: int = 8080, state_dir: Path | None = None) -> None:
        cast(Any, MultiService).__init__(self)
        self.reactor = reactor
        self.port = port
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="atomrelay-demo-"))
        self.relay: RelayService | None = None
        self._ports: list[Any] = []
        self._mediamtx_process: Any = None

    def startService(self) -> None:
        """Start the simulators, then build and start the relay pointing at them."""
        from atomrelay.sim.camera import SimulatedCamera, listen_camera
        from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx

        cast(Any, MultiService).startService(self)
        cameras = []
        for index, (cam_id, name, model) in enumerate(DEMO_CAMERAS):
            camera = SimulatedCamera(self.reactor, model, hostname=cam_id, hwaddr=f"02:00:00:00:00:{index + 1:02x}")
            port: Any = listen_camera(self.reactor, camera)
            self._ports.append(port)
            cameras.append((cam_id, name, model, int(port.getHost().port)))
        api_port = self._start_mediamtx(FakeMediamtx, listen_mediamtx)
        config = demo_config(self.port, api_port, cameras, self.state_dir)
        self.relay = build_relay(config, self.reactor)
        cast(Any, self.relay).setServiceParent(self)
        print_demo_banner(config, cameras)

    def _start_mediamtx(self, fake_cls: Any, listen: Any) -> int:
        binary = shutil.which("mediamtx")
        if binary is None:
            fake = fake_cls(self.reactor)
            port = listen(self.reactor, fake)
            self._ports.append(port)
            self.log.info("demo: mediamtx API stand-in (a test double) on 127.0.0.1:{port}", port=port.getHost().port)
            return int(port.getHost().port)
        return self._spawn_mediamtx(binary)

    def _spawn_mediamtx(self, binary: str) -> int:
        from twisted.internet.protocol import ProcessProtocol

        api_port = 9997
        conf = self.state_dir / "mediamtx.yml"
        conf.write_text(
            "logLevel: info\napi: yes\napiAddress: 127.0.0.1:9997\nrtspAddress: 127.0.0.1:8554\n"
            "rtspTransports: [tcp]\nsrt: yes\nsrtAddress: 127.0.0.1:8890\nrtmp: no\nhls: no\nwebrtc: no\n"
            "readTimeout: 15m\nwriteQueueSize: 4096\npaths: {}\n",
            encoding="utf-8",
        )
        self._mediamtx_process = self.reactor.spawnProcess(
            ProcessProtocol(), binary, [binary, str(conf)], env=dict(os.environ)
        )
        self.log.info("demo: started the real mediamtx at {binary}", binary=binary)
        return api_port

    def stopService(self) -> Deferred[None]:
        """Stop the relay, then the simulators."""

        async def stop() -> None:
            await _maybe_deferred(cast(Any, MultiService).stopService(self))
            for port in self._ports:
                await _maybe_deferred(port.stopListening())
            if self._mediamtx_process is not None:
                try:
                    self._mediamtx_process.signalProcess("TERM")
                except Exception:  # noqa: BLE001 - already gone
                    pass

        return Deferred.fromCoroutine(stop())


def demo_config(port: int, api_port: int, cameras: list[tuple[str, str, str, int]], state_dir: Path) -> Config:
    """The demo's configuration: admin/admin, loopback only, one or two streams per camera."""
    lines = [
        "onvif:",
        "  bind: 127.0.0.1",
        f"  port: {port}",
        "  device: {manufacturer: atomrelay, model: ATOM Cam relay (demo), name: atomrelay-demo}",
        "  users:",
        "    - {username: admin, password: admin, role: Administrator}",
        "discovery: {enabled: false}",
        "mediamtx:",
        f"  api_url: http://127.0.0.1:{api_port}",
        "  wait_timeout: 10s",
        f"state_dir: {state_dir}",
        "cameras:",
    ]
    for cam_id, name, model, http_port in cameras:
        lines += [
            f"  - id: {cam_id}",
            f"    name: {name}",
            "    host: 127.0.0.1",
            f"    http_port: {http_port}",
            f"    model: {model}",
            "    streams:",
            "      - {name: main, rtsp_path: video0_unicast, codec: h264, audio: transcode}",
            "      - {name: sub, rtsp_path: video1_unicast, codec: h265, audio: transcode, width: 640, height: 360}",
        ]
    from atomrelay.config import parse_config

    return parse_config("\n".join(lines) + "\n", "<demo>")


def print_demo_banner(config: Config, cameras: list[tuple[str, str, str, int]]) -> None:
    """Tell the user what to point an ONVIF client at."""
    port = config.onvif.port
    text = [
        "",
        "atomrelay demo is running (everything on 127.0.0.1; Ctrl-C stops it)",
        f"  ONVIF device service: http://127.0.0.1:{port}/onvif/device_service",
        "  user: admin   password: admin",
        f"  mediamtx API: {config.mediamtx.api_url}",
        "  simulated cameras:",
    ]
    for cam_id, name, model, http_port in cameras:
        text.append(f"    {cam_id:6} {name:16} {model:16} http://127.0.0.1:{http_port}/cgi-bin/cmd.cgi?name=status")
    text += [
        "  try: onvif-cli / ONVIF Device Manager, or",
        f"    curl -s -H 'Content-Type: application/soap+xml' --data "
        f"'<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body>"
        f"<GetSystemDateAndTime xmlns=\"http://www.onvif.org/ver10/device/wsdl\"/></s:Body></s:Envelope>' "
        f"http://127.0.0.1:{port}/onvif/device_service",
        "",
    ]
    print("\n".join(text), flush=True)


def make_demo_service(reactor: Any, port: int = 8080) -> DemoService:
    """The demo service (``atomrelay demo``)."""
    return DemoService(reactor, port)

