"""Tests for the PathConf builders and for the mediamtx command-splitting emulation."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from atomrelay.config import CameraConfig, MediamtxConfig, StreamConfig
from atomrelay.mediamtx.paths import (
    MANAGED_FIELDS,
    PathConfError,
    build_path_conf,
    camera_rtsp_url,
    go_duration_seconds,
    path_conf_differences,
    path_name,
    quote_argument,
)

from .mtx_split import SplitError, go_os_expand, shellquote_split, split_like_mediamtx

OPENAPI = Path(__file__).resolve().parents[1] / "reference" / "mediamtx-openapi.yaml"
NASTY = "p@ss:w/rd%$RTSP_PORT'\"\\ "
ENV = {"RTSP_PORT": "8554", "MTX_PATH": "cam1/main", "MTX_QUERY": "", "G1": "x"}


def camera(**kwargs: Any) -> CameraConfig:
    """A camera config with test defaults."""
    values: dict[str, Any] = {"id": "cam1", "name": "Cam 1", "host": "192.168.1.20", "streams": ()}
    values.update(kwargs)
    return CameraConfig(**values)


def stream(**kwargs: Any) -> StreamConfig:
    """A stream config with test defaults."""
    values: dict[str, Any] = {"name": "main", "rtsp_path": "video0_unicast"}
    values.update(kwargs)
    return StreamConfig(**values)


def pathconf_schema_fields() -> set[str]:
    """The property names of PathConf in the OpenAPI spec."""
    spec = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    return set(spec["components"]["schemas"]["PathConf"]["properties"])


def argv_of(conf: dict[str, Any], mode: str) -> list[str]:
    """The argv mediamtx would run for the runOnDemand of ``conf``."""
    return split_like_mediamtx(conf["runOnDemand"], ENV, process_env={"HOME": "/root"}, mode=mode)


def test_path_name_joins_camera_and_stream() -> None:
    """The mediamtx path of a stream is '<camera id>/<stream name>'."""
    assert path_name(camera(id="garage"), stream(name="sub")) == "garage/sub"


def test_h264_transcode_runs_ffmpeg_publishing_rtsp() -> None:
    """H.264 with audio transcode publishes G.711 mu-law back over RTSP via runOnDemand."""
    cam = camera(rtsp_username="admin", rtsp_password="secret")
    conf = build_path_conf(cam, stream(), MediamtxConfig(ffmpeg="/usr/bin/ffmpeg"))
    for mode in ("current", "legacy"):
        assert argv_of(conf, mode) == [
            "/usr/bin/ffmpeg", "-fflags", "+genpts", "-rtsp_transport", "tcp",
            "-i", "rtsp://admin:secret@192.168.1.20:8554/video0_unicast",
            "-map", "0:v:0", "-map", "0:a:0?", "-c:v", "copy",
            "-c:a", "pcm_mulaw", "-ar", "8000", "-ac", "1", "-async", "1", "-af", "volume=8",
            "-rtsp_transport", "tcp", "-f", "rtsp", "rtsp://localhost:8554/cam1/main",
        ]
    assert conf["source"] == "publisher"
    assert conf["runOnDemandRestart"] is True
    assert conf["sourceOnDemand"] is False


def test_h265_transcode_publishes_aac_over_srt() -> None:
    """H.265 with audio transcode publishes AAC in MPEG-TS over SRT to the configured SRT port."""
    conf = build_path_conf(camera(), stream(codec="h265", rtsp_path="video2_unicast"), MediamtxConfig(srt_port=9000))
    argv = argv_of(conf, "current")
    assert argv[argv.index("-c:a") + 1] == "aac"
    assert argv[argv.index("-ar") + 1] == "48000"
    assert argv[argv.index("-f") + 1] == "mpegts"
    assert argv[-1] == "srt://localhost:9000?streamid=publish:cam1/main&pkt_size=1316"
    assert "pcm_mulaw" not in argv
    assert argv[argv.index("-i") + 1] == "rtsp://192.168.1.20:8554/video2_unicast"
    assert argv_of(conf, "legacy") == argv
    assert conf["runOnDemandRestart"] is True


@pytest.mark.parametrize("audio", ["none", "passthrough"])
def test_no_transcode_pulls_camera_directly(audio: str) -> None:
    """Without audio transcoding mediamtx pulls the camera on demand over TCP and runs nothing."""
    conf = build_path_conf(camera(username="u", password="p"), stream(audio=audio), MediamtxConfig())
    assert conf["source"] == "rtsp://u:p@192.168.1.20:8554/video0_unicast"
    assert conf["sourceOnDemand"] is True
    assert conf["rtspTransport"] == "tcp"
    assert conf["runOnDemand"] == ""
    assert conf["runOnDemandRestart"] is False


@pytest.mark.parametrize(
    "cam_stream",
    [
        (camera(), stream()),
        (camera(), stream(codec="h265")),
        (camera(), stream(audio="none")),
    ],
)
def test_every_shape_sets_the_same_fields_all_in_the_schema(cam_stream: tuple[CameraConfig, StreamConfig]) -> None:
    """Every shape sets exactly the managed fields, and each one exists in the OpenAPI PathConf schema."""
    conf = build_path_conf(*cam_stream, MediamtxConfig())
    assert tuple(conf) == MANAGED_FIELDS
    assert set(conf) <= pathconf_schema_fields()
    assert go_duration_seconds(conf["runOnDemandStartTimeout"]) == 20.0


@pytest.mark.parametrize("mode", ["current", "legacy"])
def test_nasty_password_round_trips(mode: str) -> None:
    """A password with @ : / % $VAR quotes backslash and space reaches ffmpeg intact and unexpanded."""
    cam = camera(rtsp_username="ad min$G1", rtsp_password=NASTY)
    conf = build_path_conf(cam, stream(), MediamtxConfig())
    argv = argv_of(conf, mode)
    url = argv[argv.index("-i") + 1]
    assert "$" not in url
    assert "%24RTSP_PORT" in url
    parts = urlsplit(url)
    assert unquote(parts.username or "") == "ad min$G1"
    assert unquote(parts.password or "") == NASTY
    assert parts.hostname == "192.168.1.20"
    assert parts.port == 8554
    assert argv[-1] == "rtsp://localhost:8554/cam1/main"


def test_nasty_password_in_pulled_source_is_encoded() -> None:
    """The pulled source URL percent-encodes '$' so mediamtx's $MTX_QUERY/$G1 expansion cannot alter it."""
    conf = build_path_conf(camera(password=NASTY, username="u"), stream(audio="none"), MediamtxConfig())
    assert "$" not in conf["source"]
    assert unquote(urlsplit(conf["source"]).password or "") == NASTY


@pytest.mark.parametrize(
    ("host", "rtsp_path", "expected_netloc_host", "expected_path"),
    [
        ("cam-1.local", "video0_unicast", "cam-1.local", "/video0_unicast"),
        ("fe80::1%wlan0", "live/ch 1?x=1", "[fe80::1%25wlan0]", "/live/ch%201?x=1"),
        ("2001:db8::7", "/a'b\"c\\d", "[2001:db8::7]", "/a'b%22c%5Cd"),
        ("odd'host\"x", "p$MTX_PATH%", "odd'host\"x", "/p%24MTX_PATH%25"),
    ],
)
@pytest.mark.parametrize("mode", ["current", "legacy"])
def test_odd_hosts_and_paths_round_trip(
    host: str, rtsp_path: str, expected_netloc_host: str, expected_path: str, mode: str
) -> None:
    """Odd camera hosts (IPv6 with zone, quotes) and paths (spaces, quotes, $VAR) reach ffmpeg as one intact URL."""
    cam = camera(host=host, rtsp_port=554)
    conf = build_path_conf(cam, stream(rtsp_path=rtsp_path), MediamtxConfig(ffmpeg="/opt/my ffmpeg/ffmpeg"))
    argv = argv_of(conf, mode)
    assert argv[0] == "/opt/my ffmpeg/ffmpeg"
    url = argv[argv.index("-i") + 1]
    assert url == camera_rtsp_url(cam, stream(rtsp_path=rtsp_path))
    assert url == f"rtsp://{expected_netloc_host}:554{expected_path}"
    assert len(argv) == 28


def test_dollar_in_host_or_ffmpeg_is_refused() -> None:
    """A '$' that cannot be percent-encoded (host, ffmpeg executable) is refused instead of silently expanded."""
    with pytest.raises(PathConfError, match="host"):
        build_path_conf(camera(host="cam$HOME"), stream(), MediamtxConfig())
    with pytest.raises(PathConfError, match="mediamtx.ffmpeg"):
        build_path_conf(camera(), stream(), MediamtxConfig(ffmpeg="/opt/$X/ffmpeg"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_quote_argument_round_trips_any_text(text: str) -> None:
    """quote_argument output splits back into exactly the original argument (no '$' involved)."""
    assert shellquote_split(quote_argument(text)) == [text]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30))
def test_any_password_round_trips(password: str) -> None:
    """Any password survives URL encoding, quoting, splitting and variable expansion in both mediamtx modes."""
    conf = build_path_conf(camera(rtsp_username="u", rtsp_password=password), stream(), MediamtxConfig())
    for mode in ("current", "legacy"):
        argv = argv_of(conf, mode)
        url = argv[argv.index("-i") + 1]
        assert unquote(urlsplit(url).password or "") == password


def test_splitter_matches_go_shellquote_test_vectors() -> None:
    """The emulated Split reproduces go-shellquote's own test vectors."""
    vectors = [
        ("hello   goodbye", ["hello", "goodbye"]),
        ("don\\'t you know the dewey decimal system\\?",
         ["don't", "you", "know", "the", "dewey", "decimal", "system?"]),
        ("'don'\\''t you know the dewey decimal system?'", ["don't you know the dewey decimal system?"]),
        ("one '' two", ["one", "", "two"]),
        ("text with\\\na backslash-escaped newline", ["text", "witha", "backslash-escaped", "newline"]),
        ("text \"with\na\" quoted newline", ["text", "with\na", "quoted", "newline"]),
        ("\"quoted\\d\\\\\\\" text with\\\na backslash-escaped newline\"",
         ["quoted\\d\\\" text witha backslash-escaped newline"]),
        ("foo\"bar\"baz", ["foobarbaz"]),
    ]
    for text, expected in vectors:
        assert shellquote_split(text) == expected
    for bad in ("don't worry", "'test'\\''ing", "\"foo'bar", "foo\\"):
        with pytest.raises(SplitError):
            shellquote_split(bad)


def test_splitter_understands_shlex_quoting() -> None:
    """Python's shlex.quote output (the relay's quoting style) is understood by the emulated Split."""
    words = ["a b", "it's", "\"q\"", "back\\slash", "", "tab\there"]
    assert shellquote_split(" ".join(shlex.quote(w) for w in words)) == words


def test_os_expand_emulation() -> None:
    """The emulated os.Expand replaces $NAME and ${NAME}, eats bad syntax and keeps a trailing '$'."""
    env = {"A": "1", "AB": "2", "$": "pid"}
    assert go_os_expand("x$AB/$A-${A}y$", env) == "x2/1-1y$"
    assert go_os_expand("$UNKNOWN|${}|$$", env) == "||pid"
    assert go_os_expand("%24A", env) == "%24A"


def test_durations_compare_by_value() -> None:
    """mediamtx's '1m0s' equals the relay's '60s' (days and empty zero parse too), and a real change is reported."""
    wanted = {"runOnDemandCloseAfter": "60s", "source": "publisher"}
    assert path_conf_differences(wanted, {"runOnDemandCloseAfter": "1m0s", "source": "publisher"}) == []
    assert path_conf_differences(wanted, {"runOnDemandCloseAfter": "10s", "source": "publisher"}) == [
        "runOnDemandCloseAfter"
    ]
    assert path_conf_differences(wanted, {"source": "publisher"}) == ["runOnDemandCloseAfter"]
    assert go_duration_seconds("1h2m3.5s") == 3723.5
    assert go_duration_seconds("500ms") == 0.5
    assert go_duration_seconds("bogus") is None
    assert go_duration_seconds("1d2h0m0s") == 93600.0
    assert go_duration_seconds("") == 0.0
