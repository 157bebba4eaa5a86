"""The mediamtx path configurations (PathConf JSON) the relay registers per camera stream.

Each configured camera stream becomes the mediamtx path ``<camera id>/<stream name>``
in one of three shapes:

* H.264 with audio transcoding: ``runOnDemand`` runs ffmpeg, which pulls the camera,
  copies the video, turns the audio into G.711 mu-law and publishes back over RTSP.
* H.265 with audio transcoding: the same, but AAC and published over SRT/MPEG-TS,
  because mediamtx refuses HEVC RTSP publishing from ffmpeg and MPEG-TS cannot carry
  G.711.
* No audio or passthrough audio: mediamtx pulls the camera itself (``source``).

The run command is not passed through a shell: mediamtx splits it with
go-shellquote's ``Split`` and expands ``$NAME`` variables (from its own environment,
then the process environment) either in the whole string before splitting (older
releases) or in every argument after splitting (newer releases). Every argument is
therefore quoted for go-shellquote, and the only ``$`` in a command are the
``$RTSP_PORT`` and ``$MTX_PATH`` the relay means; a ``$`` in credentials or camera
paths is percent-encoded, so both orders give the same argument vector.

Every shape sets the same fields (:data:`MANAGED_FIELDS`), so a path that changes
shape converges whichever of add, patch or replace the server supports, and the
reconciler compares exactly these fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from atomrelay.config import CameraConfig, MediamtxConfig, StreamConfig
from atomrelay.net import url_host

# Readers wait this long for the camera (Wi-Fi, RTSP handshake, ffmpeg probing of a
# main stream whose SDP lacks SPS/PPS) before mediamtx gives up on them; mediamtx's
# 10 s default is too short for a sleepy camera.
START_TIMEOUT = "20s"
# The upstream stays open this long after the last reader leaves, so that NVRs that
# probe and then reconnect (Home Assistant, Synology) reuse the open camera session
# instead of a new handshake each time, while an unwatched camera is released soon.
# The camera's 65 s RTSP session timeout does not constrain it: mediamtx and ffmpeg
# both send keep-alives within the timeout the camera announces.
CLOSE_AFTER = "30s"

MANAGED_FIELDS: tuple[str, ...] = (
    "source",
    "sourceOnDemand",
    "sourceOnDemandStartTimeout",
    "sourceOnDemandCloseAfter",
    "rtspTransport",
    "runOnDemand",
    "runOnDemandRestart",
    "runOnDemandStartTimeout",
    "runOnDemandCloseAfter",
)
"""The PathConf fields the relay sets on its paths (and compares when reconciling)."""

_DURATION_FIELDS = frozenset(
    {"sourceOnDemandStartTimeout", "sourceOnDemandCloseAfter", "runOnDemandStartTimeout", "runOnDemandCloseAfter"}
)
_SAFE_ARGUMENT = re.compile(r"[A-Za-z0-9@%+=:,./_-]+")
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DAYS_PREFIX = re.compile(r"^(\d+)d")
_GO_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}
# Characters kept as they are in the camera's RTSP path (and query); everything else,
# notably "$" (mediamtx variable expansion), "%" and "#", is percent-encoded.
_PATH_SAFE = "/:@!&'()*+,;=?~"


class PathConfError(ValueError):
    """A camera or mediamtx setting cannot be expressed in a mediamtx path configuration."""


def path_name(camera: CameraConfig, stream: StreamConfig) -> str:
    """The mediamtx path name of a camera stream: ``<camera id>/<stream name>``."""
    return f"{camera.id}/{stream.name}"


def _url_host(host: str) -> str:
    if "$" in host:
        raise PathConfError(f"camera host {host!r} contains '$', which mediamtx would expand as a variable")
    return url_host(host)


def camera_rtsp_url(camera: CameraConfig, stream: StreamConfig) -> str:
    """The camera's RTSP URL for ``stream``, credentials percent-encoded (``$`` too)."""
    username, password = camera.rtsp_credentials
    userinfo = ""
    if username is not None:
        userinfo = quote(username, safe="")
        if password is not None:
            userinfo += ":" + quote(password, safe="")
        userinfo += "@"
    path = quote(stream.rtsp_path.lstrip("/"), safe=_PATH_SAFE)
    return f"rtsp://{userinfo}{_url_host(camera.host)}:{camera.rtsp_port}/{path}"


def quote_argument(argument: str) -> str:
    """``argument`` quoted so that go-shellquote's ``Split`` yields it unchanged."""
    if _SAFE_ARGUMENT.fullmatch(argument):
        return argument
    return "'" + argument.replace("'", "'\"'\"'") + "'"


def _command(argv: list[str]) -> str:
    return " ".join(quote_argument(argument) for argument in argv)


def _ffmpeg_command(
    camera: CameraConfig, stream: StreamConfig, mediamtx: MediamtxConfig, output: list[str]
) -> str:
    if "$" in mediamtx.ffmpeg:
        raise PathConfError(
            f"mediamtx.ffmpeg {mediamtx.ffmpeg!r} contains '$', which mediamtx would expand as a variable"
        )
    argv = [
        mediamtx.ffmpeg,
        "-fflags", "+genpts",
        "-rtsp_transport", "tcp",
        "-i", camera_rtsp_url(camera, stream),
        "-map", "0:v:0",
        "-map", "0:a:0?",
        "-c:v", "copy",
        *output,
    ]
    return _command(argv)


def build_path_conf(camera: CameraConfig, stream: StreamConfig, mediamtx: MediamtxConfig) -> dict[str, Any]:
    """The PathConf JSON the relay sends for the path ``path_name(camera, stream)``.

    Raises :class:`PathConfError` when a setting cannot be represented safely.
    """
    conf: dict[str, Any] = {
        "source": "publisher",
        "sourceOnDemand": False,
        "sourceOnDemandStartTimeout": START_TIMEOUT,
        "sourceOnDemandCloseAfter": CLOSE_AFTER,
        "rtspTransport": "tcp",
        "runOnDemand": "",
        "runOnDemandRestart": False,
        "runOnDemandStartTimeout": START_TIMEOUT,
        "runOnDemandCloseAfter": CLOSE_AFTER,
    }
    if stream.audio != "transcode":
        conf["source"] = camera_rtsp_url(camera, stream)
        conf["sourceOnDemand"] = True
        return conf
    if stream.codec == "h264":
        output = [
            "-c:a", "pcm_mulaw", "-ar", "8000", "-ac", "1", "-async", "1", "-af", "volume=8",
            "-rtsp_transport", "tcp", "-f", "rtsp", "rtsp://localhost:$RTSP_PORT/$MTX_PATH",
        ]
    else:
        output = [
            "-c:a", "aac", "-ar", "48000", "-ac", "1", "-async", "1", "-af", "volume=8",
            "-f", "mpegts", f"srt://localhost:{mediamtx.srt_port}?streamid=publish:$MTX_PATH&pkt_size=1316",
        ]
    conf["runOnDemand"] = _ffmpeg_command(camera, stream, mediamtx, output)
    conf["runOnDemandRestart"] = True
    return conf


def go_duration_seconds(text: str) -> float | None:
    """Seconds in a duration as mediamtx writes it (Go syntax with an optional leading ``<n>d``).

    ``"1m0s"`` and ``"60s"`` are both 60.0, ``"1d"`` is 86400.0 and ``""`` (how mediamtx
    marshals zero) is 0.0; None if ``text`` is not a duration.
    """
    value = text.strip()
    negative = value.startswith("-")
    value = value.lstrip("+-")
    total = 0.0
    days = _DAYS_PREFIX.match(value)
    if days is not None:
        total = int(days.group(1)) * 86400.0
        value = value[days.end():]
    if value in ("", "0"):
        return -total if negative else total
    position = 0
    while position < len(value):
        match = _GO_DURATION_PART.match(value, position)
        if match is None:
            return None
        total += float(match.group(1)) * _GO_DURATION_UNITS[match.group(2)]
        position = match.end()
    return -total if negative else total


def _normalise(field: str, value: Any) -> Any:
    if field in _DURATION_FIELDS and isinstance(value, str):
        seconds = go_duration_seconds(value)
        return value if seconds is None else round(seconds, 6)
    if field == "runOnDemand" and value is None:
        return ""
    return value


def path_conf_differences(wanted: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """The managed fields whose value in ``actual`` (as mediamtx returns it) differs from ``wanted``.

    Durations are compared by value, since mediamtx answers ``30s`` as ``30s`` but
    ``60s`` as ``1m0s``; fields the relay does not set are ignored.
    """
    return [
        field
        for field in MANAGED_FIELDS
        if field in wanted and _normalise(field, wanted[field]) != _normalise(field, actual.get(field))
    ]
