"""End to end: the media commands the relay gives mediamtx, run with real ffmpeg.

For the two transcode shapes, the ``runOnDemand`` string from ``build_path_conf`` is
split exactly as mediamtx splits it, run as-is against a stand-in ATOM Cam
(gst-rtsp-server), and published to an ffmpeg listener standing in for mediamtx's
RTSP or SRT server; ffprobe then checks the recording. For the proxied shape, ffprobe
opens the ``source`` URL. Credentials containing ``@ : / % $`` prove the URL encoding
against ffmpeg's own URL parser.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from atomrelay.config import CameraConfig, MediamtxConfig, StreamConfig
from atomrelay.mediamtx.paths import build_path_conf
from tests.mediamtx.mtx_split import split_like_mediamtx

from .conftest import (
    CameraSource,
    FfprobeError,
    Processes,
    ffprobe,
    free_port,
    poll_until,
    require_protocol,
    streams_by_type,
    tcp_listening,
    udp_bound,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MTX_PATH = "cam1/main"
RECORD_SECONDS = 3
LISTEN_TIMEOUT = 20
RECORDING_DEADLINE = 30.0
LISTENER_GRACE = 10.0
# Every character that needs care in a URL or a mediamtx command: '@' ends the
# userinfo, ':' splits user and password, '/' starts the path, '%' starts an escape
# ("%41" must stay three characters) and "$RTSP_PORT" is a variable mediamtx expands.
NASTY_USERNAME = "admin"
NASTY_PASSWORD = "p@ss:/%41$RTSP_PORT"
# The stand-in camera's picture (Main profile, 320x180): "-c:v copy" must pass it
# through unchanged, where a re-encode would change at least the profile.
WIDTH, HEIGHT = 320, 180


def camera_for(source: CameraSource, stream: StreamConfig) -> CameraConfig:
    """The relay's config for the stand-in camera ``source`` with one stream."""
    return CameraConfig(
        id="cam1",
        name="Cam 1",
        host="127.0.0.1",
        rtsp_port=source.port,
        streams=(stream,),
        rtsp_username=source.username,
        rtsp_password=source.password,
    )


def mediamtx_argv(conf: dict[str, Any], rtsp_port: int) -> list[str]:
    """The argv mediamtx would execute for the path's ``runOnDemand``."""
    command = conf["runOnDemand"]
    assert command, f"the path has no runOnDemand: {conf}"
    return split_like_mediamtx(
        command, {"RTSP_PORT": str(rtsp_port), "MTX_PATH": MTX_PATH}, process_env=dict(os.environ)
    )


def record(
    processes: Processes,
    listener_argv: list[str],
    ready: Callable[[], bool],
    publisher_argv: list[str],
) -> None:
    """Start the listener, wait until it is bound, run the publisher, wait for the recording."""
    listener = processes.start("listener", listener_argv)
    poll_until(lambda: ready() or listener.poll() is not None, 10.0, "the ffmpeg listener to bind")
    assert listener.poll() is None, f"the listener exited early\n{processes.logs()}"
    publisher = processes.start("publisher", publisher_argv)
    poll_until(
        lambda: listener.poll() is not None or publisher.poll() is not None,
        RECORDING_DEADLINE,
        f"a {RECORD_SECONDS}s recording",
    )
    if listener.poll() is None:
        # The publisher may exit first for the right reason: the listener has its RECORD_SECONDS, hangs up, and
        # the publisher's next write fails before the listener has finished writing its file. Give the listener
        # time to finish; the caller's duration check tells a short recording from a complete one.
        try:
            listener.wait(timeout=LISTENER_GRACE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the publisher exited {publisher.returncode} and the recording never ended\n{processes.logs()}")
    assert listener.returncode == 0, f"the listener failed\n{processes.logs()}"


def publish_h264(
    media_tools: dict[str, str], processes: Processes, source: CameraSource, tmp_path: Path
) -> dict[str, Any]:
    """Run the H.264 transcode path against ``source`` into an RTSP listener; ffprobe the recording."""
    stream = StreamConfig("main", "video0_unicast", codec="h264", audio="transcode")
    port = free_port(socket.SOCK_STREAM)
    conf = build_path_conf(camera_for(source, stream), stream, MediamtxConfig(rtsp_port=port))
    output = tmp_path / "recorded.mkv"
    listener = [
        media_tools["ffmpeg"], "-nostdin", "-hide_banner", "-y",
        "-listen_timeout", str(LISTEN_TIMEOUT), "-rtsp_flags", "listen",
        "-i", f"rtsp://127.0.0.1:{port}/{MTX_PATH}",
        "-t", str(RECORD_SECONDS), "-c", "copy", "-f", "matroska", str(output),
    ]
    record(processes, listener, lambda: tcp_listening(port), mediamtx_argv(conf, port))
    return ffprobe(media_tools, str(output), "-count_packets")


def assert_video(probe: dict[str, Any], codec: str) -> None:
    """The recording has the camera's ``codec`` video, copied, with frames for the whole take."""
    video = streams_by_type(probe).get("video")
    assert video is not None, probe
    assert (video["codec_name"], video["profile"]) == (codec, "Main")
    assert (video["width"], video["height"]) == (WIDTH, HEIGHT)
    assert int(video["nb_read_packets"]) >= 20
    assert float(probe["format"]["duration"]) >= RECORD_SECONDS - 0.5


def assert_audio(probe: dict[str, Any], codec: str, sample_rate: int, channels: int) -> None:
    """The recording has audio of ``codec`` at ``sample_rate`` Hz with ``channels``, and packets."""
    audio = streams_by_type(probe).get("audio")
    assert audio is not None, probe
    assert (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]) == (codec, sample_rate, channels)
    assert int(audio["nb_read_packets"]) >= 10


@pytest.mark.parametrize("camera_audio", ["aac", "l16", "opus"])
def test_h264_transcode_republishes_mulaw_over_rtsp(
    media_tools: dict[str, str],
    processes: Processes,
    camera_source: Callable[..., CameraSource],
    tmp_path: Path,
    camera_audio: str,
) -> None:
    """The H.264 runOnDemand command copies the camera's video and publishes G.711 mu-law 8 kHz mono over RTSP."""
    probe = publish_h264(media_tools, processes, camera_source(audio=camera_audio), tmp_path)

    assert_video(probe, "h264")
    assert_audio(probe, "pcm_mulaw", 8000, 1)


def test_h264_transcode_without_camera_audio_publishes_video(
    media_tools: dict[str, str],
    processes: Processes,
    camera_source: Callable[..., CameraSource],
    tmp_path: Path,
) -> None:
    """The H.264 runOnDemand command still publishes the video when the camera's audio is switched off."""
    probe = publish_h264(media_tools, processes, camera_source(audio="none"), tmp_path)

    assert_video(probe, "h264")
    assert "audio" not in streams_by_type(probe)


@pytest.mark.parametrize("method", ["digest", "basic"])
def test_h264_transcode_authenticates_with_special_characters(
    media_tools: dict[str, str],
    processes: Processes,
    camera_source: Callable[..., CameraSource],
    tmp_path: Path,
    method: str,
) -> None:
    """ffmpeg logs in to the camera with a password containing @ : / % $ as percent-encoded in the command."""
    source = camera_source(audio="aac", username=NASTY_USERNAME, password=NASTY_PASSWORD, auth=method)
    with pytest.raises(FfprobeError) as refused:
        ffprobe(media_tools, source.url("video0_unicast"), "-rtsp_transport", "tcp")
    assert "401" in refused.value.stderr

    probe = publish_h264(media_tools, processes, source, tmp_path)

    assert_video(probe, "h264")
    assert_audio(probe, "pcm_mulaw", 8000, 1)


@pytest.mark.parametrize("camera_audio", ["aac", "l16"])
def test_h265_transcode_publishes_aac_over_srt(
    media_tools: dict[str, str],
    ffmpeg_protocols: frozenset[str],
    processes: Processes,
    camera_source: Callable[..., CameraSource],
    tmp_path: Path,
    camera_audio: str,
) -> None:
    """The H.265 runOnDemand command copies the camera's video and publishes AAC 48 kHz mono as MPEG-TS over SRT."""
    require_protocol(ffmpeg_protocols, "srt")
    source = camera_source(audio=camera_audio, username=NASTY_USERNAME, password=NASTY_PASSWORD, auth="digest")
    stream = StreamConfig("main", "video2_unicast", codec="h265", audio="transcode")
    srt_port = free_port(socket.SOCK_DGRAM)
    rtsp_port = free_port(socket.SOCK_STREAM)
    conf = build_path_conf(
        camera_for(source, stream), stream, MediamtxConfig(rtsp_port=rtsp_port, srt_port=srt_port)
    )
    output = tmp_path / "recorded.ts"
    listener = [
        media_tools["ffmpeg"], "-nostdin", "-hide_banner", "-y",
        "-i", f"srt://127.0.0.1:{srt_port}?mode=listener&listen_timeout={LISTEN_TIMEOUT * 1_000_000}",
        "-t", str(RECORD_SECONDS), "-c", "copy", "-f", "mpegts", str(output),
    ]

    record(processes, listener, lambda: udp_bound(srt_port), mediamtx_argv(conf, rtsp_port))

    probe = ffprobe(media_tools, str(output), "-count_packets")
    assert_video(probe, "hevc")
    assert_audio(probe, "aac", 48000, 1)


@pytest.mark.parametrize(
    ("rtsp_path", "codec", "audio", "video_codec"),
    [("video0_unicast", "h264", "none", "h264"), ("video2_unicast", "h265", "passthrough", "hevc")],
)
def test_proxied_source_url_opens_the_camera(
    media_tools: dict[str, str],
    camera_source: Callable[..., CameraSource],
    rtsp_path: str,
    codec: str,
    audio: str,
    video_codec: str,
) -> None:
    """The source URL mediamtx proxies (no ffmpeg) opens the camera, credentials with @ : / % $ included."""
    source = camera_source(audio="aac", username=NASTY_USERNAME, password=NASTY_PASSWORD, auth="digest")
    stream = StreamConfig("main", rtsp_path, codec=codec, audio=audio)
    conf = build_path_conf(camera_for(source, stream), stream, MediamtxConfig())
    assert conf["runOnDemand"] == ""

    probe = ffprobe(media_tools, conf["source"], "-rtsp_transport", conf["rtspTransport"])

    found = streams_by_type(probe)
    assert found["video"]["codec_name"] == video_codec
    assert (found["audio"]["codec_name"], int(found["audio"]["sample_rate"]), found["audio"]["channels"]) == (
        "aac", 8000, 1,
    )


def test_rtsp_source_stops_cleanly_on_sigterm(
    media_tools: dict[str, str], camera_source: Callable[..., CameraSource]
) -> None:
    """The stand-in camera exits with status 0 on SIGTERM after serving a client, so teardown leaves nothing behind."""
    source = camera_source(audio="aac")
    assert streams_by_type(ffprobe(media_tools, source.url("video2_unicast"), "-rtsp_transport", "tcp"))

    source.process.terminate()

    assert source.process.wait(timeout=10) == 0
    poll_until(lambda: not tcp_listening(source.port), 5.0, "the RTSP source to close its socket")
