"""`atomrelay add-camera` and `check`'s firmware comparisons, end to end against simulated cameras and real ffprobe."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.pages import notFound
from twisted.web.server import Site

from atomrelay.addcamera import AddCameraError, append_camera, camera_id_from
from atomrelay.camera.firmware import FIRMWARE_KEYS, parse_firmware
from atomrelay.config import CameraConfig, load_config
from atomrelay.sim.camera import SECRET_VALUES, SimulatedCamera, listen_camera
from atomrelay.sim.rtsp import SimulatedRtspServer, listen_rtsp
from tests.helpers import VENV_BIN, child_env, free_port
from tests.packaging.support import Simulators, relay_settings, start_simulators, write_config

pytestmark = pytest.mark.integration

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="ffmpeg/ffprobe not installed (make system-deps)")

COMMENTED = """\
# my relay
onvif:
  bind: 127.0.0.1
  port: {onvif_port}   # keep this comment
  users: [{{username: admin, password: "s3cret!", role: Administrator}}]
discovery: {{enabled: false}}
mediamtx:
  api_url: {api_url}
  wait_timeout: 5s
state_dir: {state}
cameras:
  # the first camera
  - id: old
    host: 192.0.2.77
    streams:
      - {{name: main, rtsp_path: video0_unicast}}   # main stream

# trailing comment
"""


async def atomrelay(*args: str, environ: dict[str, str] | None = None) -> tuple[str, str, int]:
    out, err, code = await getProcessOutputAndValue(str(VENV_BIN / "atomrelay"), list(args),
                                                    env={**child_env(), **(environ or {})}, reactor=reactor)
    return out.decode(), err.decode(), code


class Camera:
    """A simulated camera with its HTTP and RTSP servers on loopback."""

    def __init__(self, **kwargs: Any) -> None:
        self.sim = SimulatedCamera(reactor, kwargs.pop("model", "ATOM_CamV3C"), **kwargs)
        self.http = listen_camera(reactor, self.sim)
        self.server = SimulatedRtspServer(reactor, self.sim.rtsp_stream, shutil.which("ffmpeg"))
        self.rtsp = listen_rtsp(reactor, self.server)
        self.http_port = self.http.getHost().port
        self.rtsp_port = self.rtsp.getHost().port

    def args(self) -> list[str]:
        return ["127.0.0.1", "--http-port", str(self.http_port), "--rtsp-port", str(self.rtsp_port)]

    async def stop(self) -> None:
        self.server.stop()
        for port in (self.http, self.rtsp):
            stopped = port.stopListening()
            if stopped is not None:
                await stopped


def relay_side() -> tuple[Simulators, int]:
    """A fake mediamtx set up for a relay on a free ONVIF port (and a simulated camera), and that port."""
    onvif_port = free_port()
    return start_simulators(reactor, settings=relay_settings(onvif_port)), onvif_port


def test_parse_firmware_keeps_only_the_listed_keys() -> None:
    """Only FIRMWARE_KEYS survive parsing; secret lines are dropped and `on` audio means S16_BE."""
    firmware = parse_firmware("WIFI_PASSWORD=hunter2\nRTSP_PASSWD=x\nRTSP_AUDIO0=on\nHOSTNAME=cam\nFRAMERATE=abc\n")
    assert set(firmware.values) <= set(FIRMWARE_KEYS)
    assert "hunter2" not in repr(firmware) and firmware.values == {"RTSP_AUDIO0": "on", "HOSTNAME": "cam",
                                                                   "FRAMERATE": "abc"}
    assert firmware.audio(0) == "S16_BE" and firmware.audio(1) == "off" and firmware.framerate == 20


def test_camera_id_from_hostname() -> None:
    """A HOSTNAME becomes a valid config id."""
    assert camera_id_from("Living Room.local") == "living-room-local"
    assert camera_id_from("!!!") == "camera"


@needs_ffmpeg
@pytest_twisted.ensureDeferred
async def test_entry_from_probes_then_write_then_check_passes(tmp_path: Path) -> None:
    """add-camera's entry has the probed streams, --write appends it keeping comments, and check then passes."""
    sims, onvif_port = relay_side()
    config = tmp_path / "config.yaml"
    config.write_text(COMMENTED.format(onvif_port=onvif_port, api_url=sims.api_url, state=tmp_path / "state"))
    config.chmod(0o640)
    before = config.read_text()
    camera = Camera(hostname="Garage", firmware={"RTSP_VIDEO2": "on", "RTSP_AUDIO2": "AAC", "RTSP_AUDIO1": "OPUS"})
    try:
        out, err, code = await atomrelay("add-camera", *camera.args(), "-c", str(config))
        assert code == 0, out + err
        assert "- id: garage" in out and "model: ATOM_CamV3C" in out
        assert re.search(r"name: main .*probed\n\s+rtsp_path: video0_unicast\n\s+codec: h264\n\s+audio: transcode", out)
        assert re.search(r"name: sub .*\n.*\n\s+codec: h265\n\s+audio: transcode.*OPUS", out)
        assert re.search(r"name: hevc .*\n.*\n\s+codec: h265\n\s+audio: passthrough.*\n\s+audio_codec: aac", out)
        assert "width: 640\n" in out and "height: 360\n" in out
        assert f"WEBHOOK_URL: http://127.0.0.1:{onvif_port}/webhook/garage/" in out
        assert not any(secret in out + err for secret in SECRET_VALUES)
        assert config.read_text() == before

        out, err, code = await atomrelay("add-camera", *camera.args(), "-c", str(config), "--write")
        assert code == 0, out + err
        text = config.read_text()
        assert text.startswith(before.split("\n# trailing comment")[0]) and text.endswith("\n# trailing comment\n")
        assert "# keep this comment" in text and "# main stream" in text
        assert (config.stat().st_mode & 0o777) == 0o640
        loaded = load_config(config)
        assert [c.id for c in loaded.cameras] == ["old", "garage"]
        garage = loaded.cameras[1]
        assert [(s.name, s.codec, s.audio, s.width) for s in garage.streams] == [
            ("main", "h264", "transcode", 1920), ("sub", "h265", "transcode", 640),
            ("hevc", "h265", "passthrough", 1920)]
        assert not any(secret in text for secret in SECRET_VALUES)
        url = re.search(r"WEBHOOK_URL: (\S+)", out)
        assert url is not None and garage.webhook_token is not None and garage.webhook_token in url.group(1)

        # Set the camera's web page as told, drop the unreachable example camera, and check.
        camera.sim.firmware.update({"WEBHOOK": "on", "WEBHOOK_URL": url.group(1), "WEBHOOK_ALARM_EVENT": "on"})
        checked = tmp_path / "checked.yaml"
        checked.write_text(re.sub(r"  # the first camera\n(?:  [ -].*\n)+", "", text))
        checked.chmod(0o600)
        out, err, code = await atomrelay("check", "-c", str(checked))
        assert code == 0, out + err
        assert "OK      camera garage stream hevc" in out
        assert garage.webhook_token not in out

        out, err, code = await atomrelay("add-camera", *camera.args(), "-c", str(config), "--write")
        assert code == 1 and "already has a camera with id 'garage'" in err
        out, err, code = await atomrelay("add-camera", *camera.args(), "-c", str(config), "--write", "--id", "other")
        assert code == 1 and "already has camera 'garage' on 127.0.0.1" in err
    finally:
        await camera.stop()
        await sims.stop()


@pytest_twisted.ensureDeferred
async def test_probe_failure_falls_back_to_firmware_defaults(tmp_path: Path) -> None:
    """When the RTSP server does not answer, the entry uses the firmware's defaults and says so."""
    camera = Camera(firmware={"RTSP_VIDEO1": "on", "FRAMERATE": "15"})
    await camera.rtsp.stopListening()
    try:
        out, err, code = await atomrelay("add-camera", *camera.args())
    finally:
        await camera.stop()
    assert code == 0, out + err
    assert re.search(r"name: main .*firmware defaults \(probe failed", out)
    assert re.search(r"name: sub .*firmware defaults.*\n.*\n\s+codec: h265\n.*\n\s+width: 640\n\s+height: 360\n"
                     r"\s+fps: 15", out)
    assert "(video0: firmware defaults" in out


@pytest_twisted.ensureDeferred
async def test_specific_errors(tmp_path: Path) -> None:
    """Not atomcam_tools, wrong Digest credentials, unreachable and RTSP off everywhere each get their own error."""
    other = reactor.listenTCP(0, Site(notFound()), interface="127.0.0.1")
    locked = Camera(username="admin", password="right")
    dark = Camera(firmware={"RTSP_VIDEO0": "off", "RTSP_VIDEO1": "off", "RTSP_VIDEO2": "off"})
    try:
        _, err, code = await atomrelay("add-camera", "127.0.0.1", "--http-port", str(other.getHost().port))
        assert code == 1 and "is not an atomcam_tools camera" in err and "hack_ini.cgi answered HTTP 404" in err
        _, err, code = await atomrelay("add-camera", *locked.args(), "--user", "admin", "--password", "wrong")
        assert code == 1 and "refused the Digest credentials of user 'admin'" in err
        _, err, code = await atomrelay("add-camera", *locked.args())
        assert code == 1 and "requires HTTP Digest credentials: pass --user and --password" in err
        out, err, code = await atomrelay("add-camera", *locked.args(), "--user", "admin", "--password", "right")
        assert code == 0 and 'username: "admin"' in out, out + err
        out, err, code = await atomrelay("add-camera", *locked.args(), "--user", "admin",
                                         environ={"ATOMRELAY_CAMERA_PASSWORD": "right"})
        assert code == 0 and 'username: "admin"' in out, out + err  # the password stays off the command line
        _, err, code = await atomrelay("add-camera", "127.0.0.1", "--http-port", str(free_port()))
        assert code == 1 and "camera unreachable" in err
        _, err, code = await atomrelay("add-camera", *dark.args())
        assert code == 1 and "RTSP is off on every stream" in err
    finally:
        await other.stopListening()
        await locked.stop()
        await dark.stop()


USERS = "onvif: {users: [{username: admin, password: pw, role: Administrator}]}\n"


def test_append_refuses_a_flow_style_cameras_list(tmp_path: Path) -> None:
    """A config whose cameras list is flow style is left untouched and the error says so."""
    config = tmp_path / "c.yaml"
    config.write_text(USERS + "cameras: [{id: a, host: 192.0.2.1, streams: [{name: m, rtsp_path: video0_unicast}]}]\n")
    before = config.read_text()
    entry = "  - id: b\n    host: 192.0.2.2\n    streams:\n      - {name: m, rtsp_path: video0_unicast}\n"
    with pytest.raises(AddCameraError, match="no block-style 'cameras:'"):
        append_camera(config, entry, CameraConfig("b", "b", "192.0.2.2", ()))
    assert config.read_text() == before


def test_append_follows_the_lists_indentation_and_keeps_later_keys(tmp_path: Path) -> None:
    """Items at column 0 get the entry at column 0, and a top-level key after cameras: stays after it."""
    config = tmp_path / "c.yaml"
    config.write_text(USERS + "cameras:\n- id: a\n  host: 192.0.2.1\n  streams: [{name: m, rtsp_path: video0_unicast}]\n"
                      "# health\nhealth: {interval: 10s}\n")
    entry = "  - id: b\n    host: 192.0.2.2\n    streams:\n      - {name: m, rtsp_path: video0_unicast}\n"
    result = append_camera(config, entry, CameraConfig("b", "b", "192.0.2.2", ()))
    assert [c.id for c in result.cameras] == ["a", "b"] and result.health.interval == 10
    assert config.read_text().endswith("- id: b\n  host: 192.0.2.2\n  streams:\n    - {name: m, rtsp_path: "
                                       "video0_unicast}\n# health\nhealth: {interval: 10s}\n")


MISMATCHED_STREAMS = (
    "      - {name: main, rtsp_path: video0_unicast, codec: h265, audio: passthrough, audio_codec: l16}\n"
    "      - {name: sub, rtsp_path: video1_unicast, codec: h265, audio: transcode, width: 640, height: 360}\n"
    "      - {name: hevc, rtsp_path: video2_unicast, codec: h265, audio: none}\n"
)


@needs_ffmpeg
@pytest_twisted.ensureDeferred
async def test_check_reports_each_firmware_mismatch(tmp_path: Path) -> None:
    """check fails each firmware mismatch with one line saying what to change where, the token unprinted."""
    sims, onvif_port = relay_side()
    config = write_config(tmp_path / "config.yaml", sims, onvif_port, tmp_path / "state", model="AC1",
                          streams=MISMATCHED_STREAMS)
    token = "abcdefghijklmnopqrstuvwx"
    sims.camera.firmware.update({"RTSP_AUDIO0": "S16_BE", "RTSP_AUDIO1": "off", "RTSP_VIDEO2": "off",
                                 "WEBHOOK": "off", "WEBHOOK_URL": f"http://127.0.0.1:{onvif_port}/webhook/living/"
                                                                  "wrong-token-0123456789",
                                 "WEBHOOK_ALARM_EVENT": "off"})
    try:
        out, err, code = await atomrelay("check", "-c", str(config))
        shown, _, _ = await atomrelay("check", "-c", str(config), "--show-webhooks")
    finally:
        await sims.stop()
    lines = out.splitlines()
    assert code == 1, out + err

    def failed(*words: str) -> bool:
        return any(line.startswith(("FAIL", "WARN")) and all(w in line for w in words) for line in lines)

    assert failed("camera living stream main", "cameras[0].streams[0].codec is h265 but video0 sends h264",
                  "set codec: h264 in")
    assert failed("camera living stream main", "passthrough but the camera sends S16_BE", "set audio: transcode")
    assert failed("camera living stream sub", "RTSP_AUDIO1 is off", "set audio: none")
    assert failed("camera living stream hevc", "RTSP_VIDEO2 is off", "turn on video2")
    assert failed("camera living webhook", "WEBHOOK is off")
    assert failed("camera living webhook", "WEBHOOK_URL", "not this relay's URL", "--show-webhooks")
    assert failed("camera living webhook", "WEBHOOK_ALARM_EVENT is off")
    assert failed("camera living model", "configured AC1 but the camera reports ATOM_CamV3C")
    assert token not in out and "wrong-token" not in out
    assert not any(secret in out + shown for secret in SECRET_VALUES)
    assert f"set it to http://127.0.0.1:{onvif_port}/webhook/living/{token}" in shown
