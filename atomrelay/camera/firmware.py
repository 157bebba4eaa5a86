"""What the atomcam_tools firmware says about a camera: its hack.ini settings and its RTSP streams.

``hack_ini.cgi`` also holds the Wi-Fi, web, RTSP and NAS passwords: :func:`parse_firmware`
keeps only :data:`FIRMWARE_KEYS` and drops every other line unread. :func:`probe_stream`
asks the camera's RTSP server what a stream really carries with ``ffprobe`` over
RTSP/TCP, killed after a timeout.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping, cast

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from atomrelay.camera.client import CameraClient, clean_reply
from atomrelay.clock import Clock

FIRMWARE_KEYS = (
    "PRODUCT_MODEL", "HOSTNAME", "HWADDR", "ATOMHACKVER", "FRAMERATE",
    "RTSP_VIDEO0", "RTSP_AUDIO0", "RTSP_VIDEO1", "RTSP_AUDIO1", "RTSP_VIDEO2", "RTSP_AUDIO2",
    "RTSP_AUTH", "RTSP_OVER_HTTP",
    "WEBHOOK", "WEBHOOK_URL", "WEBHOOK_ALARM_EVENT", "WEBHOOK_ALARM_INFO",
)
"""The only hack.ini keys ever read; the rest of the file is secrets."""

FIRMWARE_AUDIO = ("off", "S16_BE", "AAC", "OPUS")
"""The audio settings of an RTSP stream (older firmware writes ``on`` for ``S16_BE``)."""

DEFAULT_FRAMERATE = 20


@dataclass(frozen=True)
class StreamDefaults:
    """What one of the firmware's three RTSP streams sends, per atomcam_tools."""

    index: int
    rtsp_path: str
    codec: str
    width: int
    height: int


STREAM_DEFAULTS = (
    StreamDefaults(0, "video0_unicast", "h264", 1920, 1080),
    StreamDefaults(1, "video1_unicast", "h265", 640, 360),
    StreamDefaults(2, "video2_unicast", "h265", 1920, 1080),
)
"""The main (H.264 1080p), sub (H.265 360p) and HEVC main (H.265 1080p) streams."""

_STREAM_PATH = re.compile(r"^/?video([0-2])_unicast$")


@dataclass(frozen=True)
class Firmware:
    """The :data:`FIRMWARE_KEYS` a camera reported (absent keys are missing from ``values``)."""

    values: Mapping[str, str]

    def on(self, key: str) -> bool:
        """Whether an ``on``/``off`` setting is on."""
        return self.values.get(key, "off").strip().lower() == "on"

    @property
    def framerate(self) -> int:
        """``FRAMERATE`` (the firmware's default when absent or not a number in 1..120)."""
        try:
            value = int(self.values.get("FRAMERATE", ""))
        except ValueError:
            return DEFAULT_FRAMERATE
        return value if 1 <= value <= 120 else DEFAULT_FRAMERATE

    def video_on(self, index: int) -> bool:
        """Whether ``RTSP_VIDEO<index>`` is on."""
        return self.on(f"RTSP_VIDEO{index}")

    def audio(self, index: int) -> str:
        """``RTSP_AUDIO<index>`` as one of :data:`FIRMWARE_AUDIO`; an unknown value counts as ``off``."""
        value = self.values.get(f"RTSP_AUDIO{index}", "off").strip()
        if value.lower() == "on":
            return "S16_BE"
        for known in FIRMWARE_AUDIO:
            if value.upper() == known.upper():
                return known
        return "off"


def parse_firmware(text: str) -> Firmware:
    """The :data:`FIRMWARE_KEYS` of a ``hack_ini.cgi`` answer; every other line is dropped."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in FIRMWARE_KEYS:
            values[key.strip()] = value.strip()
    return Firmware(values)


async def read_firmware(client: CameraClient, timeout: float | None = None) -> Firmware:
    """GET ``hack_ini.cgi`` and keep only :data:`FIRMWARE_KEYS` (CameraError subclasses on failure)."""
    body = await client.request("GET", "/cgi-bin/hack_ini.cgi", timeout=timeout)
    return parse_firmware(clean_reply(body))


def stream_index(rtsp_path: str) -> int | None:
    """0, 1 or 2 for the firmware's ``videoN_unicast`` paths; None for any other path."""
    match = _STREAM_PATH.match(rtsp_path)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class StreamProbe:
    """What ffprobe read from one RTSP stream; ``audio_codec`` is aac, opus, l16 or None."""

    codec: str
    width: int
    height: int
    fps: int | None
    audio_codec: str | None


class ProbeError(Exception):
    """ffprobe could not read the stream (the message says why, without credentials)."""


_VIDEO_CODECS = {"h264": "h264", "hevc": "h265"}
_AUDIO_CODECS = {"aac": "aac", "opus": "opus", "pcm_s16be": "l16"}


def parse_probe(output: bytes) -> StreamProbe:
    """ffprobe's ``-of json`` stream list as a StreamProbe; ProbeError without a known video stream."""
    try:
        streams = json.loads(output.decode("utf-8", "replace")).get("streams", [])
    except (ValueError, AttributeError):
        raise ProbeError("ffprobe printed no JSON") from None
    video = next((s for s in streams if isinstance(s, dict) and s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if isinstance(s, dict) and s.get("codec_type") == "audio"), None)
    if video is None:
        raise ProbeError("the stream has no video track")
    codec = _VIDEO_CODECS.get(str(video.get("codec_name")))
    if codec is None:
        raise ProbeError(f"video codec {video.get('codec_name')!r} is neither H.264 nor H.265")
    width, height = video.get("width"), video.get("height")
    if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
        raise ProbeError("ffprobe could not read the picture size")
    audio_codec = None
    if audio is not None:
        audio_codec = _AUDIO_CODECS.get(str(audio.get("codec_name")), str(audio.get("codec_name")))
    return StreamProbe(codec, width, height, _rate(video.get("r_frame_rate")), audio_codec)


def _rate(text: object) -> int | None:
    if not isinstance(text, str) or "/" not in text:
        return None
    num, _, den = text.partition("/")
    try:
        value = int(num) / int(den)
    except (ValueError, ZeroDivisionError):
        return None
    return round(value) if 1 <= value <= 120 else None


class _Collect(ProcessProtocol):
    """Collects a child's stdout and the last of its stderr; ``done`` fires with the exit code."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.done: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        """Keep at most 1 MiB of output."""
        self.out = (self.out + data)[: 1 << 20]

    def errReceived(self, data: bytes) -> None:
        """Keep the last 4 KiB of diagnostics."""
        self.err = (self.err + data)[-4096:]

    def processEnded(self, reason: Failure) -> None:
        """Report the exit code (-1 for a signal)."""
        code = 0 if isinstance(reason.value, ProcessDone) else getattr(reason.value, "exitCode", None)
        self.done.callback(code if isinstance(code, int) else -1)


async def probe_stream(reactor: Any, ffprobe: str, url: str, timeout: float,
                       env: Mapping[str, str] | None = None) -> StreamProbe:
    """Run ``ffprobe`` on ``url`` over RTSP/TCP; kill it after ``timeout`` seconds (ProbeError)."""
    protocol = _Collect()
    args = [ffprobe, "-v", "error", "-rtsp_transport", "tcp", "-show_entries",
            "stream=codec_type,codec_name,width,height,r_frame_rate", "-of", "json", url]
    process = reactor.spawnProcess(protocol, ffprobe, args, env=dict(env) if env is not None else None)
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        try:
            process.signalProcess("KILL")
        except Exception:  # noqa: BLE001 - it ended meanwhile
            pass

    timer = cast(Clock, reactor).callLater(timeout, expire)
    try:
        code = await protocol.done
    finally:
        if timer.active():
            timer.cancel()
    if expired:
        raise ProbeError(f"no answer within {timeout:g}s")
    if code != 0:
        lines = protocol.err.decode("utf-8", "replace").strip().splitlines()
        raise ProbeError(_without_url(lines[-1] if lines else f"ffprobe exited {code}", url))
    return parse_probe(protocol.out)


def _without_url(text: str, url: str) -> str:
    """ffprobe names the URL in its errors; it may carry the RTSP password."""
    return text.replace(url, "the stream").strip()
