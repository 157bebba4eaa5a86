"""Fixtures for the end-to-end media tests: real ffmpeg/ffprobe and a gst-rtsp-server camera.

The camera stand-in (``rtsp_source.py``) needs PyGObject and gst-rtsp-server, which
only the system python has, so it runs as a ``/usr/bin/python3`` subprocess. Every
subprocess is bounded in time and killed at teardown; readiness is polled with a
deadline. Missing tools skip the tests with the reason, except under CI (``CI`` set),
where they fail: there the tests must run.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SOURCE_SCRIPT = Path(__file__).with_name("rtsp_source.py")
GST_ELEMENTS = (
    "videotestsrc", "audiotestsrc", "videoconvert", "audioconvert", "audioresample",
    "x264enc", "x265enc", "h264parse", "h265parse", "avenc_aac", "aacparse", "opusenc",
    "rtph264pay", "rtph265pay", "rtpmp4gpay", "rtpL16pay", "rtpopuspay",
)
_GST_CHECK = (
    "import sys, gi\n"
    "gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0')\n"
    "from gi.repository import Gst, GstRtspServer\n"
    "Gst.init(None)\n"
    "missing = [e for e in sys.argv[1:] if Gst.ElementFactory.find(e) is None]\n"
    "print(' '.join(missing))\n"
)
READY_TIMEOUT = 15.0
SOURCE_STOP_TIMEOUT = 5.0


def _unavailable(reason: str) -> None:
    """Skip the test for a missing tool, or fail it under CI where the tools are installed."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required under CI)", pytrace=False)
    pytest.skip(reason)


def _gst_problem() -> str | None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (needed for gst-rtsp-server via PyGObject)"
    try:
        result = subprocess.run(
            [SYSTEM_PYTHON, "-c", _GST_CHECK, *GST_ELEMENTS],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return "probing GStreamer with the system python timed out"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{SYSTEM_PYTHON} cannot use gi/GstRtspServer (python3-gi, gir1.2-gst-rtsp-server-1.0): {last}"
    if result.stdout.strip():
        return f"GStreamer elements missing (gstreamer1.0-plugins-*/libav): {result.stdout.strip()}"
    return None


@pytest.fixture(scope="session")
def media_tools() -> dict[str, str]:
    """Paths of ffmpeg and ffprobe, after checking the system python can serve RTSP."""
    tools = {name: shutil.which(name) for name in ("ffmpeg", "ffprobe")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        _unavailable(f"{' and '.join(missing)} not on PATH (apt package ffmpeg)")
    problem = _gst_problem()
    if problem is not None:
        _unavailable(problem)
    return {name: path for name, path in tools.items() if path is not None}


@pytest.fixture(scope="session")
def ffmpeg_protocols(media_tools: dict[str, str]) -> frozenset[str]:
    """The protocol names ffmpeg supports (input or output)."""
    result = subprocess.run(
        [media_tools["ffmpeg"], "-hide_banner", "-protocols"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=True,
    )
    return frozenset(line.strip() for line in result.stdout.splitlines() if line.startswith("  "))


def require_protocol(protocols: frozenset[str], name: str) -> None:
    """Skip (or fail under CI) when ffmpeg lacks ``name``, e.g. srt without libsrt."""
    if name not in protocols:
        _unavailable(f"this ffmpeg has no {name!r} protocol")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that is free right now for ``kind`` (TCP or UDP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def poll_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Call ``condition`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}", pytrace=False)
        time.sleep(interval)


def _proc_net_has(table: str, port: int, state: str | None) -> bool:
    """Whether /proc/net/<table> has a 127.0.0.1:<port> socket (in ``state``, if given)."""
    local = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net", table).read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[1] == local and (state is None or fields[3] == state):
            return True
    return False


def tcp_listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:<port>/tcp (checked without connecting)."""
    return _proc_net_has("tcp", port, "0A")


def udp_bound(port: int) -> bool:
    """Whether a UDP socket is bound to 127.0.0.1:<port>."""
    return _proc_net_has("udp", port, None)


class Processes:
    """Subprocesses of one test, each logging to a file, all stopped at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` (no shell), its stderr and (unless redirected) stdout going to ``<name>.log``."""
        log = open(self.directory / f"{name}.log", "wb")
        try:
            kwargs.setdefault("stdout", log)
            process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stderr=log, **kwargs)
        finally:
            log.close()
        self._started.append((name, process))
        return process

    def log(self, name: str, tail: int = 4000) -> str:
        """The end of the log of process ``name``."""
        path = self.directory / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text[-tail:]

    def logs(self) -> str:
        """The end of every log, for failure messages."""
        return "\n".join(f"--- {name} ---\n{self.log(name)}" for name, _ in self._started)

    def wait(self, name: str, process: subprocess.Popen[bytes], timeout: float) -> int:
        """Wait at most ``timeout`` seconds for ``process`` to exit; fail with the logs otherwise."""
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still running after {timeout:g}s\n{self.logs()}", pytrace=False)

    def stop_all(self) -> None:
        """SIGTERM every process still running, SIGKILL those that ignore it."""
        for _, process in reversed(self._started):
            if process.poll() is None:
                process.terminate()
        for _, process in reversed(self._started):
            try:
                process.wait(timeout=SOURCE_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=SOURCE_STOP_TIMEOUT)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """A :class:`Processes` for this test; everything it started is stopped afterwards."""
    group = Processes(tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


@dataclass(frozen=True)
class CameraSource:
    """A running stand-in camera."""

    port: int
    username: str | None
    password: str | None
    process: subprocess.Popen[bytes]

    def url(self, path: str) -> str:
        """The camera URL of ``path`` without credentials."""
        return f"rtsp://127.0.0.1:{self.port}/{path}"


def _read_ready_line(process: subprocess.Popen[bytes], timeout: float) -> str | None:
    """The READY line of the source, read with a deadline; None if it exits or times out."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                return None
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                return None
            buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode("utf-8", "replace")
    return line if line.startswith("READY ") else None


@pytest.fixture
def camera_source(media_tools: dict[str, str], processes: Processes) -> Callable[..., CameraSource]:
    """Start a stand-in ATOM Cam: ``camera_source(audio="aac", username=..., password=..., auth="digest")``."""
    counter = iter(range(1000))

    def start(
        audio: str = "aac", username: str | None = None, password: str | None = None, auth: str = "digest"
    ) -> CameraSource:
        argv = [SYSTEM_PYTHON, str(SOURCE_SCRIPT), "--port", "0", "--audio", audio, "--auth", auth]
        if username is not None and password is not None:
            argv += ["--username", username, "--password", password]
        name = f"source{next(counter)}"
        process = processes.start(name, argv, stdout=subprocess.PIPE)
        line = _read_ready_line(process, READY_TIMEOUT)
        if line is None:
            pytest.fail(f"the RTSP source did not print READY within {READY_TIMEOUT:g}s\n{processes.log(name)}")
        port = int(line.rsplit(":", 1)[1])
        poll_until(lambda: tcp_listening(port), READY_TIMEOUT, f"the RTSP source to listen on {port}")
        return CameraSource(port, username, password, process)

    return start


def ffprobe(media_tools: dict[str, str], target: str, *options: str, timeout: float = 20.0) -> dict[str, Any]:
    """``ffprobe -show_streams -show_format -of json`` of ``target``; fails with ffprobe's error."""
    argv = [
        media_tools["ffprobe"], "-v", "error", *options,
        "-show_streams", "-show_format", "-of", "json", target,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise FfprobeError(result.returncode, result.stderr.strip())
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


class FfprobeError(Exception):
    """ffprobe exited with an error; ``stderr`` says why."""

    def __init__(self, returncode: int, stderr: str) -> None:
        super().__init__(f"ffprobe exited {returncode}: {stderr}")
        self.returncode = returncode
        self.stderr = stderr


def streams_by_type(probe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The first stream of each codec_type ("video", "audio") in an ffprobe result."""
    found: dict[str, dict[str, Any]] = {}
    for stream in probe.get("streams", []):
        found.setdefault(stream.get("codec_type", "?"), stream)
    return found
