"""`atomrelay demo`: healthy simulated cameras, the banner, a real mediamtx (a recording stand-in) and cleanup."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tests.helpers import VENV_BIN, child_env, free_port, poll
from tests.test_cli import Collect, answers

pytestmark = pytest.mark.integration

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="ffmpeg/ffprobe not installed (make system-deps)")

CAMERAS = ("cam2", "swing", "wyze")

# The stand-in records its command line and configuration, answers the Control API with the
# package's test double on the configured apiAddress, and notes that it was asked to stop.
STAND_IN = """#!{python}
import json, os, sys
from pathlib import Path
from typing import Any
import yaml
from twisted.internet import reactor
from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx
record = Path(os.environ["STAND_IN_RECORD"])
config = yaml.safe_load(Path(sys.argv[1]).read_text())
record.write_text(json.dumps({{"argv": sys.argv, "config": config}}))
host, port = config["apiAddress"].rsplit(":", 1)
listen_mediamtx(reactor, FakeMediamtx(reactor), int(port), host)
reactor.addSystemEventTrigger("before", "shutdown", lambda: Path(str(record) + ".stopped").write_text("yes"))
reactor.run()
"""


def demo_env(tmp_path: Path, path_dirs: list[Path]) -> dict[str, str]:
    env = child_env()
    env["PATH"] = os.pathsep.join([*map(str, path_dirs), str(VENV_BIN), "/usr/bin", "/bin"])
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    return env


def spawn_demo(port: int, env: dict[str, str], cwd: Path) -> tuple[Collect, Any]:
    proto = Collect()
    args = [str(VENV_BIN / "atomrelay"), "demo", "--port", str(port)]
    process = reactor.spawnProcess(proto, args[0], args, env=env, path=str(cwd))
    return proto, process


async def snapshot_width(port: int, camera: str, tmp_path: Path) -> bool:
    """Whether the relay's snapshot of ``camera`` (admin/admin, Digest) is a 640 pixels wide picture."""
    picture = tmp_path / f"{camera}.jpg"
    _, _, code = await getProcessOutputAndValue(
        "/usr/bin/env", ["curl", "-s", "-f", "--digest", "-u", "admin:admin", "-o", str(picture),
                         f"http://127.0.0.1:{port}/snapshot/{camera}.jpg"], env=child_env())
    if code != 0:
        return False
    out, _, code = await getProcessOutputAndValue(
        "/usr/bin/env", ["ffprobe", "-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0",
                         str(picture)], env=child_env())
    return code == 0 and out.strip() == b"640,360"


async def all_online(proto: Collect) -> None:
    await poll(lambda: all(f"camera {c} is online".encode() in proto.output for c in CAMERAS),
               timeout=40, what="every demo camera online")


async def stop(proto: Collect, process: Any) -> None:
    """SIGTERM the demo; it must exit 0 without a traceback (SIGKILL if it does not exit)."""
    try:
        process.signalProcess("TERM")
        code = await proto.ended
    finally:
        if process.pid is not None:
            process.signalProcess("KILL")
    assert code == (0, None) and b"Traceback" not in proto.output, proto.output.decode()


@pytest_twisted.ensureDeferred
async def test_demo_without_mediamtx_has_online_cameras_and_says_what_video_needs(tmp_path: Path) -> None:
    """Without mediamtx every camera goes online (with ffmpeg, its snapshot is a 640x360 test pattern), the banner lists snapshot and stream URLs and how to get video, and the state directory is removed."""
    port = free_port()
    proto, process = spawn_demo(port, demo_env(tmp_path, []), tmp_path)
    try:
        await all_online(proto)
        if shutil.which("ffmpeg") and shutil.which("ffprobe") and shutil.which("curl"):
            await poll(lambda: snapshot_width(port, "swing", tmp_path), timeout=20,
                       what="the swing's snapshot to be a 640x360 test pattern")
    finally:
        await stop(proto, process)
    output = proto.output.decode()
    assert f"http://127.0.0.1:{port}/snapshot/cam2.jpg" in output
    assert f"dashboard (open it in a browser): http://127.0.0.1:{port}/ " in output
    assert "rtsp://127.0.0.1:8554/cam2/main" in output and "rtsp://127.0.0.1:8554/swing/sub" in output
    assert "mediamtx is not on PATH" in output and "github.com/bluenviron/mediamtx/releases" in output
    assert "is degraded" not in output.split("is online")[-1]
    assert list((tmp_path / "tmp").iterdir()) == []


@needs_ffmpeg
@pytest_twisted.ensureDeferred
async def test_demo_runs_mediamtx_on_path(tmp_path: Path) -> None:
    """With mediamtx on PATH the demo runs it on loopback with the relay's settings, registers the three path shapes pulling streams ffprobe reads, and stops it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "mediamtx"
    stand_in.write_text(STAND_IN.format(python=sys.executable))
    stand_in.chmod(0o755)
    record = tmp_path / "mediamtx.json"
    env = {**demo_env(tmp_path, [bin_dir]), "STAND_IN_RECORD": str(record)}
    port = free_port()
    proto, process = spawn_demo(port, env, tmp_path)
    try:
        await poll(lambda: answers(port), timeout=30, what="the demo to answer SOAP")
        await all_online(proto)
        await poll(lambda: b"registered mediamtx path wyze/sub" in proto.output, timeout=30,
                   what="the paths registered with the stand-in")
        recorded = json.loads(record.read_text())
        config = recorded["config"]
        api = f"http://{config['apiAddress']}"
        response = await treq.get(f"{api}/v3/config/paths/list")
        paths = {item["name"]: item for item in (await response.json())["items"]}
        upstreams = {name: re.search(r"rtsp://127\.0\.0\.1:\d+/video\d_unicast", item["runOnDemand"] or item["source"])
                     for name, item in paths.items()}
        probed = {}
        for name in ("cam2/main", "swing/sub", "wyze/main"):
            match = upstreams[name]
            assert match is not None, paths[name]
            out, err, _ = await getProcessOutputAndValue(
                "ffprobe", ["-v", "error", "-rtsp_transport", "tcp", "-show_entries", "stream=codec_name",
                            "-of", "csv=p=0", match.group(0)], env=env, reactor=reactor)
            probed[name] = out.decode().split()
    finally:
        await stop(proto, process)
    output = proto.output.decode()
    rtsp_port = int(config["rtspAddress"].rsplit(":", 1)[1])
    assert all(config[key].startswith("127.0.0.1:") for key in ("apiAddress", "rtspAddress", "srtAddress"))
    assert config["authMethod"] == "http" and config["authHTTPAddress"] == f"http://127.0.0.1:{port}/mediamtx/auth"
    assert config["rtspTransports"] == ["tcp"] and config["hls"] is False
    assert set(paths) == {f"{c}/{s}" for c in CAMERAS for s in ("main", "sub")}
    assert "pcm_mulaw" in paths["cam2/main"]["runOnDemand"]  # H.264 + transcoded audio over RTSP
    assert "srt://" in paths["swing/sub"]["runOnDemand"]  # H.265 + transcoded audio over SRT
    assert paths["cam2/sub"]["source"].startswith("rtsp://127.0.0.1:")  # pulled as is
    assert paths["wyze/main"]["source"].endswith("/video0_unicast")
    for name in paths:
        assert f"rtsp://127.0.0.1:{rtsp_port}/{name}" in output
    assert "mediamtx is not on PATH" not in output
    assert Path(str(record) + ".stopped").exists()
    assert not Path(recorded["argv"][1]).parent.exists()
    assert probed == {"cam2/main": ["h264", "pcm_s16be"], "swing/sub": ["hevc", "opus"], "wyze/main": ["h264", "aac"]}
