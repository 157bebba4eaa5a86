"""The command line and twistd entry points, run as real processes on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from atomrelay import __version__, buildinfo, check, cli
from atomrelay.cli import build_parser
from atomrelay.config import parse_config
from atomrelay.sim.camera import SimulatedCamera, listen_camera
from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx
from tests.helpers import GET_DATE, ROOT, VENV_BIN, child_env, free_port, poll, unreadable
from tests.packaging.support import relay_settings, start_simulators, write_config

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


def checkout_commit(root: Path) -> str:
    """``root``'s HEAD as ``--version`` spells it (12 digits, ``-dirty`` with changed tracked files), by git itself."""
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                          timeout=30, check=True).stdout.strip()
    changed = subprocess.run(["git", "-C", str(root), "diff", "HEAD", "--quiet"], timeout=30).returncode != 0
    return head[:12] + ("-dirty" if changed else "")


def test_version() -> None:
    """`atomrelay --version` prints the package version, the checkout's commit, Python's and Twisted's versions."""
    import platform

    import twisted

    out = subprocess.run([str(VENV_BIN / "atomrelay"), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert out.stdout.strip() == (f"atomrelay {__version__} (commit {checkout_commit(ROOT)}, "
                                  f"Python {platform.python_version()}, Twisted {twisted.__version__})")


def test_source_commit(tmp_path: Path) -> None:
    """The commit is read only at the top of a git checkout, with -dirty once a tracked file changes."""
    from atomrelay.buildinfo import source_commit

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True, timeout=30)

    assert source_commit(tmp_path) is None
    git("init", "-q")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_text("one")
    git("add", "sub/f")
    git("commit", "-q", "-m", "one")
    assert source_commit(tmp_path) == checkout_commit(tmp_path)
    assert len(checkout_commit(tmp_path)) == 12
    assert source_commit(tmp_path / "sub") is None
    (tmp_path / "sub" / "f").write_text("two")
    assert source_commit(tmp_path) == checkout_commit(tmp_path)
    assert checkout_commit(tmp_path).endswith("-dirty")


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


def test_a_state_dir_the_relay_cannot_use_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    """`atomrelay run` whose state_dir cannot be written exits non-zero with one line naming state_dir and the
    fix, not a traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = relay_config(tmp_path, 9997, 80, 8080)
    cfg.write_text(cfg.read_text().replace(f"state_dir: {tmp_path / 'state'}", f"state_dir: {blocker / 'state'}"))
    assert f"state_dir: {blocker / 'state'}" in cfg.read_text()
    out = subprocess.run([str(VENV_BIN / "atomrelay"), "run", "-c", str(cfg)], capture_output=True, text=True,
                         timeout=60, env=child_env())
    assert out.returncode != 0
    assert "Traceback" not in out.stderr + out.stdout
    assert f"atomrelay: state_dir: cannot read {blocker / 'state' / 'identity.json'} (Not a directory)" in out.stderr
    assert f"the relay's user must be able to read and write {blocker / 'state'}" in out.stderr


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
    assert any(line.startswith("FAIL") and "camera living rtsp" in line
               and "turn RTSP on in the camera's atomcam_tools page, or fix cameras[0].rtsp_port" in line
               for line in text.splitlines())
    assert any(line.startswith("OK") and "state_dir" in line and "will be created" in line
               for line in text.splitlines())
    assert "s3cret!" not in text


@pytest_twisted.ensureDeferred
async def test_check_says_what_to_change_when_nothing_answers(tmp_path: Path) -> None:
    """No mediamtx and no camera: each FAIL row says what to start or which key to fix, in which file."""
    cfg = relay_config(tmp_path, free_port(), free_port(), free_port(), rtsp_port=free_port())
    out, err, code = await getProcessOutputAndValue(
        str(VENV_BIN / "atomrelay"), ["check", "-c", str(cfg)], env=child_env(), reactor=reactor)
    lines = out.decode().splitlines()
    assert code == 1, out.decode() + err.decode()
    mediamtx = [line for line in lines if line.startswith("FAIL") and " mediamtx " in line]
    assert len(mediamtx) == 1 and f"start mediamtx with its API on (api: yes in mediamtx.yml), or set " \
                                  f"mediamtx.api_url in {cfg}" in mediamtx[0]
    camera = [line for line in lines if line.startswith("FAIL") and "camera living " in line and "rtsp" not in line]
    assert len(camera) == 1 and f"Else fix cameras[0].host, cameras[0].http_port or cameras[0].username/password " \
                                f"in {cfg}" in camera[0]


def test_check_reads_the_state_dir_as_the_relay_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The state_dir rows: a good directory is OK; a damaged document is a WARN (it will be moved aside); one the
    user cannot read, or a state_dir that is a file, is a FAIL saying what to fix. Nothing is changed."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "users.json").write_text('{"users": []}')
    assert [row.status for row in check.state_rows(state)] == ["OK"]
    (state / "profiles.json").write_text("{oops")
    (state / "presets.json").write_text("{}")
    unreadable(monkeypatch, state / "presets.json")
    rows = check.state_rows(state)
    monkeypatch.undo()
    assert [(row.status, row.subject) for row in rows] == [("FAIL", "state_dir"), ("WARN", "state_dir")]
    assert f"cannot read {state / 'presets.json'} (Permission denied)" in rows[0].detail
    assert "chown it to the relay's user" in rows[0].detail
    assert f"{state / 'profiles.json'} is damaged" in rows[1].detail and "move it aside" in rows[1].detail
    assert sorted(path.name for path in state.iterdir()) == ["presets.json", "profiles.json", "users.json"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    (row,) = check.state_rows(blocker)
    assert row.status == "FAIL" and "make it a directory owned by the relay's user" in row.detail

    def no_entry(self: Path) -> bool:  # a parent the user may not enter: stat fails (root is never stopped)
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "exists", no_entry)
    (row,) = check.state_rows(state)
    monkeypatch.undo()
    assert row.status == "FAIL" and "cannot reach" in row.detail and "run check as the relay's user" in row.detail


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


# --- check: mediamtx version and settings, ffmpeg, models, audio ---------------------------------

ENCODERS = """Encoders:
 V..... = Video
 A..... = Audio
 ------
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 A..... aac                  AAC (Advanced Audio Coding)
 A....D pcm_mulaw            PCM mu-law / G.711 mu-law
"""
PROTOCOLS = """Supported file protocols:
Input:
  file
  srt
Output:
  file
  rtmp
  srtp
  tcp
  srt
"""


def parsed(streams: str = "[{name: main, rtsp_path: v0, codec: h264}, {name: sub, rtsp_path: v1, codec: h265}]",
           mediamtx: str = "", model: str = "auto") -> Any:
    """A validated config with one camera and the given streams / mediamtx keys."""
    return parse_config(
        "onvif:\n  port: 8080\n  users: [{username: admin, password: pw, role: Administrator}]\n"
        f"mediamtx: {{{mediamtx}}}\nstate_dir: /tmp/x\n"
        f"cameras:\n  - {{id: cam, host: 127.0.0.1, model: {model}, streams: {streams}}}\n")


def rows_by_subject(rows: list[check.CheckResult]) -> dict[str, check.CheckResult]:
    """Rows keyed by their CHECK column."""
    return {row.subject: row for row in rows}


def test_world_readable_config_warns(tmp_path: Path) -> None:
    """A config file others may read (it holds passwords) is flagged; a 0640 one is not."""
    path = tmp_path / "config.yaml"
    path.write_text("x")
    path.chmod(0o644)
    assert [r.status for r in check.config_file_rows(str(path))] == ["WARN"]
    path.chmod(0o640)
    assert check.config_file_rows(str(path)) == []


def test_version_verdicts() -> None:
    """Known-bad and pre-/v3/info releases fail, releases older than the tested one warn, others pass."""
    assert check.version_rows("v1.20.1", "u")[0].status == "OK"
    assert check.version_rows("v1.21.0", "u")[0].status == "OK"
    assert check.version_rows("v1.17.0", "u")[0].status == "WARN"
    assert check.version_rows("v1.9.3", "u")[0].status == "FAIL"
    assert check.version_rows("devel", "u")[0].status == "WARN"
    bad = check.version_rows("v1.20.1", "u", known_bad={"v1.20.1": "readers drop after 10 s (link)"})[0]
    assert bad.status == "FAIL" and "readers drop after 10 s" in bad.detail


def test_settings_that_match_the_fragment_pass() -> None:
    """mediamtx settings as `atomrelay mediamtx-config` prints them give one OK row and no problem."""
    rows = check.settings_rows(parsed(), relay_settings(8080))
    assert [row.status for row in rows] == ["OK"]


@pytest.mark.parametrize(("override", "subject", "status"), [
    ({"rtspTransports": ["udp", "tcp"]}, "mediamtx rtspTransports", "WARN"),
    ({"rtspTransports": ["udp"]}, "mediamtx rtspTransports", "FAIL"),
    ({"rtspAddress": ":554"}, "mediamtx rtspAddress", "FAIL"),
    ({"rtspAuthMethods": ["basic", "digest"]}, "mediamtx rtspAuthMethods", "FAIL"),
    ({"readTimeout": "10s"}, "mediamtx readTimeout", "WARN"),
    ({"writeQueueSize": 512}, "mediamtx writeQueueSize", "WARN"),
    ({"srt": False}, "mediamtx srt", "FAIL"),
    ({"srtAddress": ":9000"}, "mediamtx srtAddress", "FAIL"),
    ({"authMethod": "internal"}, "mediamtx authMethod", "FAIL"),
    ({"authHTTPAddress": "http://127.0.0.1:9999/mediamtx/auth"}, "mediamtx authHTTPAddress", "FAIL"),
    ({"authHTTPExclude": [{"action": "api", "path": ""}]}, "mediamtx authHTTPExclude", "WARN"),
    ({"rtsp": False}, "mediamtx rtsp", "FAIL"),
])
def test_each_wrong_setting_is_named(override: dict[str, Any], subject: str, status: str) -> None:
    """A wrong mediamtx setting gets its own row with the right severity and points at mediamtx-config."""
    rows = rows_by_subject(check.settings_rows(parsed(), {**relay_settings(8080), **override}))
    assert rows[subject].status == status
    assert "atomrelay mediamtx-config" in rows[subject].detail


def test_srt_only_fails_when_a_stream_needs_it() -> None:
    """SRT off fails with an H.265 transcode stream and only warns without one."""
    h264_only = parsed(streams="[{name: main, rtsp_path: v0, codec: h264}]")
    off = {**relay_settings(8080), "srt": False}
    assert rows_by_subject(check.settings_rows(h264_only, off))["mediamtx srt"].status == "WARN"
    assert rows_by_subject(check.settings_rows(parsed(), off))["mediamtx srt"].status == "FAIL"


def test_static_auth_wants_internal() -> None:
    """With mediamtx.auth: static, authMethod must be internal and the HTTP auth address is not checked."""
    config = parsed(mediamtx="auth: static")
    settings = {**relay_settings(8080), "authMethod": "internal", "authHTTPAddress": ""}
    assert [row.status for row in check.settings_rows(config, settings)] == ["OK"]
    settings["authMethod"] = "http"
    assert rows_by_subject(check.settings_rows(config, settings))["mediamtx authMethod"].status == "FAIL"


def test_settings_rows_never_show_passwords() -> None:
    """The API users' passwords mediamtx reports never reach the check output."""
    settings = {**relay_settings(8080), "authMethod": "internal",
                "authInternalUsers": [{"user": "relay", "pass": "api-pa55", "ips": [], "permissions": []}]}
    assert "api-pa55" not in repr(check.settings_rows(parsed(), settings))


def test_ffmpeg_listing_parsing() -> None:
    """Encoders and output protocols are read by name: srtp is not srt, input-only protocols do not count."""
    needs = check.ffmpeg_needs(parsed(streams="[{name: a, rtsp_path: v0, codec: h264}, {name: b, rtsp_path: v1, "
                                             "codec: h265}, {name: c, rtsp_path: v2, audio: none}]"))
    assert needs == {"encoder:pcm_mulaw": ["cam/a"], "encoder:aac": ["cam/b"], "protocol:srt": ["cam/b"]}
    assert [r.status for r in check.ffmpeg_capability_rows("/usr/bin/ffmpeg", needs, ENCODERS, PROTOCOLS)] == ["OK"]
    no_srt = PROTOCOLS.replace("  srt\n", "", 2).replace("Input:\n  file\n", "Input:\n  file\n  srt\n")
    rows = check.ffmpeg_capability_rows("/usr/bin/ffmpeg", needs, ENCODERS.replace(" aac ", " aac_at "), no_srt)
    assert [(r.status, "aac" in r.detail, "libsrt" in r.detail) for r in rows] == [
        ("FAIL", True, False), ("FAIL", False, True)]
    assert all("cam/b" in r.detail for r in rows)


def test_ffmpeg_not_checked_for_a_remote_mediamtx() -> None:
    """When mediamtx runs elsewhere the ffmpeg row is SKIP and nothing is run."""
    config = parsed(mediamtx="api_url: 'http://192.0.2.7:9997', ffmpeg: /nonexistent/ffmpeg")
    result: list[Any] = []
    Deferred.fromCoroutine(check.ffmpeg_rows(Clock(), config)).addCallback(result.append)
    assert [(r.status, "192.0.2.7" in r.detail) for r in result[0]] == [("SKIP", True)]
    assert check.is_loopback_url("http://localhost:9997") and check.is_loopback_url("http://[::1]:9997")
    assert not check.is_loopback_url("http://mediamtx.lan:9997")


def test_missing_ffmpeg_fails() -> None:
    """A configured ffmpeg that is not there fails, naming it."""
    config = parsed(mediamtx="ffmpeg: /nonexistent/ffmpeg")
    result: list[Any] = []
    Deferred.fromCoroutine(check.ffmpeg_rows(Clock(), config)).addCallback(result.append)
    assert result[0][0].status == "FAIL" and "/nonexistent/ffmpeg" in result[0][0].detail


def test_audio_that_needs_transcode_warns() -> None:
    """Passing L16 / Opus / an unknown codec through warns; AAC passthrough and transcode do not."""
    config = parsed(streams="[{name: a, rtsp_path: v0, audio: passthrough, audio_codec: l16}, "
                            "{name: b, rtsp_path: v1, audio: passthrough, audio_codec: opus}, "
                            "{name: c, rtsp_path: v2, audio: passthrough}, "
                            "{name: d, rtsp_path: v3, audio: passthrough, audio_codec: aac}, "
                            "{name: e, rtsp_path: v4}]")
    rows = rows_by_subject(check.stream_rows(config))
    assert set(rows) == {"stream cam/a audio", "stream cam/b audio", "stream cam/c audio"}
    assert all(row.status == "WARN" and "audio: transcode" in row.detail for row in rows.values())


def test_camera_model_verdicts() -> None:
    """A reported model that differs from the configured one, or is unknown, warns."""
    camera = parsed(model="ATOM_CamV3C").cameras[0]
    assert check.model_rows(camera, {"PRODUCT_MODEL": "ATOM_CamV3C"}) == []
    assert check.model_rows(camera, {"PRODUCT_MODEL": "ATOM_CAKP1JZJP"})[0].status == "WARN"
    assert "not a model atomrelay knows" in check.model_rows(camera, {"PRODUCT_MODEL": "ATOM_X9"})[0].detail
    auto = parsed().cameras[0]
    assert check.model_rows(auto, {"PRODUCT_MODEL": "AC1"}) == []
    assert check.model_rows(auto, {})[0].status == "WARN"


@pytest_twisted.ensureDeferred
async def test_check_passes_on_a_good_setup(tmp_path: Path) -> None:
    """`atomrelay check` exits 0 when mediamtx is set up as mediamtx-config says and everything answers."""
    onvif_port = free_port()
    sims = start_simulators(reactor, model="WYZE_CAKP2JFUS", settings=relay_settings(onvif_port))
    try:
        config = write_config(tmp_path / "config.yaml", sims, onvif_port, tmp_path / "state")
        out, err, code = await getProcessOutputAndValue(
            str(VENV_BIN / "atomrelay"), ["check", "-c", str(config)], env=child_env(), reactor=reactor)
    finally:
        await sims.stop()
    text = out.decode()
    assert code == 0, text + err.decode()
    assert "FAIL" not in text and text.rstrip().endswith("0 failed, 0 warnings")
    assert "s3cret!" not in text and "cam-pa55" not in text


@pytest_twisted.ensureDeferred
async def test_check_reports_settings_and_an_ffmpeg_without_libsrt(tmp_path: Path) -> None:
    """`atomrelay check` fails on UDP-only RTSP and on an ffmpeg lacking libsrt, exit 1, and names both."""
    onvif_port = free_port()
    fake_ffmpeg = tmp_path / "ffmpeg"
    fake_ffmpeg.write_text("#!/bin/sh\ncase \"$2\" in -encoders) cat <<'E'\n" + ENCODERS + "E\n;; "
                           "-protocols) printf 'Output:\\n  file\\n  srtp\\n';; esac\n")
    fake_ffmpeg.chmod(0o755)
    sims = start_simulators(reactor, settings={**relay_settings(onvif_port), "rtspTransports": ["udp"]})
    try:
        config = write_config(tmp_path / "config.yaml", sims, onvif_port, tmp_path / "state",
                              extra_mediamtx=f"  ffmpeg: {fake_ffmpeg}\n")
        out, err, code = await getProcessOutputAndValue(
            str(VENV_BIN / "atomrelay"), ["check", "-c", str(config)], env=child_env(), reactor=reactor)
    finally:
        await sims.stop()
    lines = out.decode().splitlines()
    assert code == 1, out.decode() + err.decode()
    assert any(line.startswith("FAIL") and "rtspTransports" in line for line in lines)
    assert any(line.startswith("FAIL") and "ffmpeg" in line and "libsrt" in line and "living/sub" in line
               for line in lines)
    assert not any(line.startswith("FAIL") and "pcm_mulaw" in line for line in lines)


@pytest_twisted.ensureDeferred
async def test_check_fails_without_v3_info(tmp_path: Path) -> None:
    """A mediamtx without GET /v3/info (older than v1.15.0) fails the version check and says why."""
    from twisted.web.pages import notFound
    from twisted.web.server import Site

    api = reactor.listenTCP(0, Site(notFound()), interface="127.0.0.1")
    sims = start_simulators(reactor)
    try:
        sims.api_port = api.getHost().port
        config = write_config(tmp_path / "config.yaml", sims, free_port(), tmp_path / "state")
        out, _, code = await getProcessOutputAndValue(
            str(VENV_BIN / "atomrelay"), ["check", "-c", str(config)], env=child_env(), reactor=reactor)
    finally:
        await api.stopListening()
        await sims.stop()
    assert code == 1
    assert any(line.startswith("FAIL") and "/v3/info" in line and "v1.15.0" in line
               for line in out.decode().splitlines())


# --- logging ---------------------------------------------------------------------------------------


def log_event(text: str, level: Any = LogLevel.info, namespace: str = "atomrelay.test", **extra: Any) -> dict[str, Any]:
    """A minimal twisted.logger event."""
    return {"log_format": text, "log_level": level, "log_namespace": namespace, "log_time": 1_700_000_000.0, **extra}


def test_log_line_is_one_key_value_line_without_secrets() -> None:
    """A multi-line message with a URL password becomes one escaped line, password replaced."""
    level, line = cli.format_log_line(log_event('source rtsp://viewer:cam-pa55@10.0.0.2:8554/v0 said "no"\nbye'))
    assert level == "info"
    assert "\n" not in line and "cam-pa55" not in line
    assert line.endswith('level=info logger=atomrelay.test msg="source rtsp://viewer:***@10.0.0.2:8554/v0 '
                         'said \\"no\\"\\nbye"')
    assert line.startswith("2023-11-")


def test_log_line_escapes_control_characters_from_peers() -> None:
    """A user name or a camera reply with terminal escapes (ESC, BEL, a C1 CSI) is logged as \\xNN, not as the
    characters: nobody reading the log gets a garbled or recoloured terminal."""
    _, line = cli.format_log_line(log_event("user {username} may not", username="\x1b[2J\x07ev\x9bil\t"))
    assert line.endswith('msg="user \\x1b[2J\\x07ev\\x9bil\\x09 may not"')
    assert not any(0 <= ord(char) < 32 or 127 <= ord(char) < 160 for char in line)


def test_log_line_on_the_journal_carries_the_priority() -> None:
    """On journald a warning line starts with <4> and has no timestamp of its own."""
    _, line = cli.format_log_line(log_event("careful", LogLevel.warn), journal=True)
    assert line == '<4>level=warn logger=atomrelay.test msg="careful"'


def test_log_failure_stays_on_one_line() -> None:
    """A logged failure appends its traceback as one escaped error= field."""
    try:
        raise ValueError("boom")
    except ValueError:
        failure = Failure()
    _, line = cli.format_log_line(log_event("it broke", LogLevel.critical, log_failure=failure))
    assert "\n" not in line and 'error="Traceback' in line and "ValueError: boom" in line


def test_log_observer_filters_debug_and_chatter_unless_verbose(tmp_path: Path) -> None:
    """Without -v debug events and Twisted's factory/access-log chatter are dropped; with -v they show."""
    events = [log_event("details", LogLevel.debug), log_event("Starting factory <x>"), log_event("served")]
    for verbose, expected in ((False, 1), (True, 3)):
        with (tmp_path / f"log-{verbose}").open("w+") as stream:
            observer = cli.log_observer(verbose, stream=stream, environ={})
            for event in events:
                observer(event)
            stream.seek(0)
            assert len(stream.read().splitlines()) == expected


def test_journal_is_detected_from_journal_stream(tmp_path: Path) -> None:
    """$JOURNAL_STREAM naming the stream's device:inode means journald; another inode does not."""
    with (tmp_path / "out").open("w") as stream:
        info = os.fstat(stream.fileno())
        assert cli.stream_is_journal(stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"})
        assert not cli.stream_is_journal(stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"})
        assert not cli.stream_is_journal(stream, {})


def test_child_environ_drops_the_bundle_library_path() -> None:
    """In a frozen build children get the original LD_LIBRARY_PATH back (or none)."""
    env = {"LD_LIBRARY_PATH": "/opt/atomrelay/_internal", "LD_LIBRARY_PATH_ORIG": "/usr/local/lib", "A": "b"}
    assert buildinfo.child_environ(env, frozen=True) == {"LD_LIBRARY_PATH": "/usr/local/lib", "A": "b"}
    assert buildinfo.child_environ({"LD_LIBRARY_PATH": "/x"}, frozen=True) == {}
    assert buildinfo.child_environ({"LD_LIBRARY_PATH": "/x"}, frozen=False) == {"LD_LIBRARY_PATH": "/x"}


@pytest_twisted.ensureDeferred
async def test_run_verbose_logs_debug_lines(tmp_path: Path) -> None:
    """`atomrelay run -v` logs debug events too, one key=value line each, without secrets."""
    sims = start_simulators(reactor)
    onvif_port = free_port()
    cfg = write_config(tmp_path / "config.yaml", sims, onvif_port, tmp_path / "state")
    proto, process = spawn([str(VENV_BIN / "atomrelay"), "run", "-v", "-c", str(cfg)], tmp_path)
    try:
        await poll(lambda: {"living/main", "living/sub"} <= set(sims.fake.paths), timeout=30, what="paths registered")
        assert await answers(onvif_port)
        process.signalProcess("TERM")
        code = await proto.ended
    finally:
        if process.pid is not None:
            process.signalProcess("KILL")
        await sims.stop()
    text = proto.output.decode()
    assert code == (0, None), text
    assert "level=debug" in text
    assert all(" level=" in line for line in text.splitlines() if line.strip())
    assert "s3cret!" not in text and "cam-pa55" not in text
