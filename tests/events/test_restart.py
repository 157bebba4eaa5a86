"""A real `atomrelay run` process restarted under Home Assistant's ONVIF library: its pull point carries on."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import Clock

from atomrelay.sim.camera import SimulatedCamera, listen_camera
from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx
from tests.events.test_loopback import INTERVAL, aio, home_assistant_states, open_camera
from tests.helpers import VENV_BIN, free_port, poll
from tests.test_cli import answers, spawn

pytestmark = [pytest.mark.integration, pytest.mark.aio]

TOKEN = "restart-token-0123456789"
MOTION = "tns1:VideoSource/MotionAlarm"
CELL = "tns1:RuleEngine/CellMotionDetector/Motion"


def write_config(path: Path, api_port: int, onvif_port: int, camera_port: int) -> None:
    path.write_text(
        f"""\
onvif:
  bind: 127.0.0.1
  port: {onvif_port}
  users: [{{username: admin, password: secret, role: Administrator}}]
discovery: {{enabled: false}}
events: {{motion_timeout: 20s}}
mediamtx: {{api_url: "http://127.0.0.1:{api_port}", wait_timeout: 5s}}
state_dir: {path.parent / 'state'}
cameras:
  - {{id: cam, host: 127.0.0.1, http_port: {camera_port}, model: ATOM_CamV3C, webhook_token: {TOKEN},
     streams: [{{name: main, rtsp_path: video0_unicast}}]}}
""",
        encoding="utf-8",
    )


async def alarm(onvif_port: int) -> int:
    """The firmware's alarmEvent webhook; the status."""
    response = await treq.post(
        f"http://127.0.0.1:{onvif_port}/webhook/cam/{TOKEN}",
        data=json.dumps({"type": "alarmEvent", "device": "atomcam"}).encode(),
        headers={b"Content-Type": [b"application/json"]},
        persistent=False,
    )
    await treq.content(response)
    return int(response.code)


@pytest_twisted.ensureDeferred
async def test_pull_point_survives_a_relay_restart(tmp_path: Path) -> None:
    """onvif-zeep-async creates a pull point, the relay process is stopped (SIGTERM) and started again, and the next
    PullMessages on the same address answers with the current values, then the next motion."""
    api = listen_mediamtx(reactor, FakeMediamtx(Clock()))
    camera_port = listen_camera(reactor, SimulatedCamera(reactor, "ATOM_CamV3C"))
    onvif_port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, api.getHost().port, onvif_port, camera_port.getHost().port)
    command = [str(VENV_BIN / "atomrelay"), "run", "-c", str(config)]
    proto, process = spawn(command, tmp_path)
    client: Any = None
    try:
        await poll(lambda: answers(onvif_port), timeout=30, what="the relay to answer")
        client = await open_camera(onvif_port)
        manager = await aio(client.create_pullpoint_manager(INTERVAL, lambda: None))
        service = manager.get_service()
        pull = {"Timeout": dt.timedelta(seconds=5), "MessageLimit": 100}
        assert home_assistant_states((await aio(service.PullMessages(pull))).NotificationMessage) == [
            (MOTION, "cam.vs", False), (CELL, "cam.vsc", False)
        ]

        process.signalProcess("TERM")
        assert await proto.ended == (0, None), proto.output.decode()
        proto, process = spawn(command, tmp_path)
        await poll(lambda: answers(onvif_port), timeout=30, what="the restarted relay to answer")

        again = await aio(service.PullMessages(pull))
        assert home_assistant_states(again.NotificationMessage) == [(MOTION, "cam.vs", False), (CELL, "cam.vsc", False)]
        assert {m.Message._value_1.PropertyOperation for m in again.NotificationMessage} == {"Initialized"}
        assert await alarm(onvif_port) == 204
        motion = await aio(service.PullMessages(pull))
        assert home_assistant_states(motion.NotificationMessage) == [(MOTION, "cam.vs", True), (CELL, "cam.vsc", True)]
        assert b"pull subscription" in proto.output and b"restored for admin@127.0.0.1" in proto.output
        await aio(manager.shutdown())
    finally:
        if client is not None:
            await aio(client.close())
        if process.pid is not None:
            process.signalProcess("TERM")
            await proto.ended
        for port in (api, camera_port):
            await port.stopListening()
