"""Config loading: every error names the key path and the YAML line."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomrelay.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
onvif:
  users:
    - {username: admin, password: secret, role: Administrator}
cameras:
  - id: living
    host: 192.0.2.10
    streams:
      - name: main
        rtsp_path: video0_unicast
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.yaml")
    return str(info.value)


def test_example_config_loads() -> None:
    """The shipped config.example.yaml is valid and documents every stream option."""
    config = load_config(ROOT / "config.example.yaml")
    assert config.cameras[0].id == "living"
    assert [s.codec for s in config.cameras[0].streams] == ["h264", "h265"]
    assert config.mediamtx.poll_interval == 2.0
    assert config.onvif.max_clock_skew == 300.0


def test_minimal_config_defaults() -> None:
    """A minimal file gets the documented defaults."""
    config = parse_config(BASE)
    assert config.onvif.port == 8080
    assert config.onvif.mode == "aggregate"
    assert config.mediamtx.api_url == "http://127.0.0.1:9997"
    assert config.mediamtx.wait_timeout == 30.0
    assert config.health.interval == 30.0
    assert config.events.motion_timeout == 20.0
    stream = config.cameras[0].streams[0]
    assert (stream.codec, stream.audio, stream.width, stream.height, stream.fps) == ("h264", "transcode", 1920, 1080, 20)


def test_bad_codec_names_key_and_line() -> None:
    """The issue's example message, exactly."""
    text = BASE + "  - id: kitchen\n    host: 192.0.2.11\n    streams:\n      - name: main\n        rtsp_path: v\n        codec: h266\n"
    assert "test.yaml: cameras[1].streams[0].codec: 'h266' is not one of h264, h265 (line 15)" in error_of(text)


def test_unknown_key_is_an_error() -> None:
    """A typo in a key is reported with its path and line, not ignored."""
    message = error_of(BASE.replace("    host: 192.0.2.10\n", "    host: 192.0.2.10\n    hots: x\n"))
    assert "cameras[0].hots: unknown key" in message
    assert "(line 7)" in message


def test_durations() -> None:
    """Durations accept 30s, 15m, 500ms and plain seconds; garbage is named."""
    config = parse_config(BASE + "health: {interval: 15m}\nevents: {motion_timeout: 45}\nmediamtx: {poll_interval: 500ms}\n")
    assert config.health.interval == 900.0
    assert config.events.motion_timeout == 45.0
    assert config.mediamtx.poll_interval == 0.5
    assert "health.interval: 'soon' is not a duration" in error_of(BASE + "health: {interval: soon}\n")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("onvif:\n  port: 70000\n  users: [{username: a, password: b}]\n", "onvif.port: 70000 is out of range 1..65535 (line 2)"),
        ("onvif:\n  port: eighty\n  users: [{username: a, password: b}]\n", "onvif.port: 'eighty' is not an integer (line 2)"),
        ("onvif:\n  mode: mesh\n  users: [{username: a, password: b}]\n", "onvif.mode: 'mesh' is not one of aggregate, per_camera"),
        ("onvif:\n  users: []\n", "onvif.users: at least one user is required (line 2)"),
        ("onvif:\n  users: [{username: a, password: b, role: Root}]\n", "onvif.users[0].role: 'Root' is not one of Administrator, Operator, User"),
        ("onvif:\n  users: [{username: a}]\n", "onvif.users[0].password: is required (line 2)"),
        ("onvif:\n  users: [{username: a, password: b}, {username: a, password: c}]\n", "onvif.users[1].username: 'a' is listed twice"),
        ("onvif:\n  http_basic: maybe\n  users: [{username: a, password: b}]\n", "onvif.http_basic: 'maybe' is not true or false"),
        ("onvif:\n  users: [{username: a, password: b}]\n  allow_password_text: 0\n",
         "onvif.allow_password_text: '0' is not true or false (line 3)"),
        # A tag or a literal that PyYAML cannot build into its type is a mistake like any other.
        ("onvif:\n  port: !!int abc\n  users: [{username: a, password: b}]\n", "onvif.port: 'abc' is not an integer (line 2)"),
        ("onvif:\n  port: 0x_\n  users: [{username: a, password: b}]\n", "onvif.port: '0x_' is not an integer (line 2)"),
        ("onvif:\n  http_basic: !!bool maybe\n  users: [{username: a, password: b}]\n",
         "onvif.http_basic: 'maybe' is not true or false (line 2)"),
        ("onvif:\n  port: !!int _\n  users: [{username: a, password: b}]\n", "onvif.port: '_' is not an integer (line 2)"),
        ("onvif:\n  port: !!int ''\n  users: [{username: a, password: b}]\n", "onvif.port: '' is not an integer (line 2)"),
    ],
)
def test_onvif_errors(extra: str, expected: str) -> None:
    """Each onvif section mistake gets its own message."""
    text = extra + "cameras:" + BASE.split("cameras:", 1)[1]
    assert expected in error_of(text)


def test_mediamtx_relay_address_must_be_an_ip_address() -> None:
    """A host name for mediamtx.relay_address (mediamtx's ips take none) is an error naming key and line; IPs are normalised."""
    error = error_of(BASE + "mediamtx:\n  relay_address: raspberrypi.local\n")
    assert "mediamtx.relay_address: 'raspberrypi.local' is not an IP address" in error
    assert error.endswith("(line 11)")
    assert parse_config(BASE + "mediamtx:\n  relay_address: 192.168.1.5\n").mediamtx.relay_address == "192.168.1.5"
    assert parse_config(BASE + "mediamtx:\n  relay_address: '0:0::1'\n").mediamtx.relay_address == "::1"


def test_missing_users_section() -> None:
    """A config without users is refused: the relay must never run wide open."""
    assert "onvif.users: at least one user is required" in error_of("cameras:" + BASE.split("cameras:", 1)[1])


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("  - id: living\n", "  - id: Living Room\n", "cameras[0].id: 'Living Room' must match [a-z0-9_-]{1,30} (line 5)"),
        ("      - name: main\n", "      - name: MAIN\n", "cameras[0].streams[0].name: 'MAIN' must match"),
        ("    host: 192.0.2.10\n", "    host: http://x/\n", "cameras[0].host: 'http://x/' is not a host name or address"),
        ("    host: 192.0.2.10\n", "", "cameras[0].host: is required (line 5)"),
        ("    host: 192.0.2.10\n", "    host: 192.0.2.10\n    model: AC9\n", "cameras[0].model: 'AC9' is not one of auto, AC1"),
        ("    host: 192.0.2.10\n", "    host: 192.0.2.10\n    webhook_token: short\n", "cameras[0].webhook_token: must be at least 16 characters"),
        ("    host: 192.0.2.10\n", "    host: 192.0.2.10\n    username: u\n", "cameras[0].password: username and password go together"),
        ("    host: 192.0.2.10\n", "    host: 192.0.2.10\n    fov: [100]\n", "cameras[0].fov: must be [horizontal, vertical] degrees"),
        ("    host: 192.0.2.10\n", "    host: 192.0.2.10\n    fov: [!custom 60, 40]\n",
         "cameras[0].fov: must be [horizontal, vertical] degrees, each 1..360 (line 7)"),
        ("    host: 192.0.2.10\n", "    host: 192.0.2.10\n    fov: [!!float x, 40]\n",
         "cameras[0].fov: must be [horizontal, vertical] degrees"),
        ("    host: 192.0.2.10\n", "    host: 192.0.2.10\n    fov: [!!float '', 40]\n",
         "cameras[0].fov: must be [horizontal, vertical] degrees"),
        ("    host: 192.0.2.10\n", "    host: 192.0.2.10\n    http_port: 0\n", "cameras[0].http_port: 0 is out of range 1..65535"),
        ("        rtsp_path: video0_unicast\n", "        rtsp_path: video0_unicast\n        audio: loud\n",
         "cameras[0].streams[0].audio: 'loud' is not one of transcode, none, passthrough"),
        ("        rtsp_path: video0_unicast\n", "        rtsp_path: video0_unicast\n        audio_codec: aac\n",
         "cameras[0].streams[0].audio_codec: is only used with audio: passthrough"),
        ("        rtsp_path: video0_unicast\n", "        rtsp_path: video0_unicast\n        fps: 0\n",
         "cameras[0].streams[0].fps: 0 is out of range 1..120"),
        ("        rtsp_path: video0_unicast\n", "        rtsp_path: video0_unicast\n      - name: main\n        rtsp_path: x\n",
         "cameras[0].streams[1].name: 'main' is used twice in this camera"),
        ("    streams:\n      - name: main\n        rtsp_path: video0_unicast\n", "    streams: []\n",
         "cameras[0].streams: at least one stream is required"),
    ],
)
def test_camera_errors(old: str, new: str, expected: str) -> None:
    """Each camera or stream mistake names its key path and line."""
    assert old in BASE
    assert expected in error_of(BASE.replace(old, new))


def test_duplicate_camera_id() -> None:
    """Two cameras with one id are refused (mediamtx paths would collide)."""
    text = BASE + "  - id: living\n    host: 192.0.2.11\n    streams: [{name: main, rtsp_path: v}]\n"
    assert "cameras[1].id: 'living' is used by another camera (line 10)" in error_of(text)


def test_duplicate_yaml_key() -> None:
    """A key given twice is an error rather than last-one-wins."""
    assert "cameras[0].host: duplicate key (line 7)" in error_of(BASE.replace("    host: 192.0.2.10\n", "    host: a\n    host: b\n"))


def test_per_camera_mode_needs_ports() -> None:
    """per_camera mode requires a distinct onvif_port per camera."""
    text = BASE.replace("onvif:\n", "onvif:\n  mode: per_camera\n")
    assert "cameras[0].onvif_port: is required when onvif.mode is per_camera" in error_of(text)
    clash = text.replace("    host: 192.0.2.10\n", "    host: 192.0.2.10\n    onvif_port: 8080\n")
    assert "cameras[0].onvif_port: 8080 is already used by onvif.port" in error_of(clash)


def test_invalid_yaml_reports_line() -> None:
    """A YAML syntax error names the line."""
    message = error_of("onvif:\n  port: [1,\n")
    assert message.startswith("test.yaml: not valid YAML")
    assert "(line" in message


def test_yaml_errors_keep_pyyaml_detail() -> None:
    """A document libyaml refuses is reported with PyYAML's own, more specific message."""
    message = error_of("onvif:\n\tport: 8080\n")
    assert "found character '\\t' that cannot start any token (line 2)" in message
    assert "found undefined alias 'nvr' (line 2)" in error_of("onvif:\n  users: *nvr\n")


def test_libyaml_and_pyyaml_read_the_same_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """libyaml (the fast path) and PyYAML's own parser give the same config, and errors on the same lines."""
    import yaml

    from atomrelay import config as config_module

    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("this PyYAML was built without libyaml: the config is read by PyYAML's own parser only")
    assert config_module._FAST_LOADER is yaml.CSafeLoader
    example = (ROOT / "config.example.yaml").read_text(encoding="utf-8")
    wrong = BASE.replace("host: 192.0.2.10", "host: 192.0.2.10\n    onvif_port: [1]")
    fast = parse_config(example, "config.example.yaml"), error_of(wrong)
    assert "cameras[0].onvif_port" in fast[1] and "(line 7)" in fast[1]
    monkeypatch.setattr(config_module, "_FAST_LOADER", yaml.SafeLoader)
    assert (parse_config(example, "config.example.yaml"), error_of(wrong)) == fast


def test_every_error_is_reported_at_once() -> None:
    """Several mistakes are all listed, so a user fixes them in one go."""
    text = BASE.replace("      - name: main\n", "      - name: main\n        codec: vp8\n        fps: -1\n")
    message = error_of(text)
    assert "codec: 'vp8'" in message and "fps: -1 is out of range" in message


def test_secrets_not_in_repr() -> None:
    """Passwords never show in the repr of config objects (they end up in logs)."""
    config = parse_config(BASE.replace("host: 192.0.2.10", "host: 192.0.2.10\n    username: u\n    password: hunter22"))
    assert "secret" not in repr(config.onvif.users)
    assert "hunter22" not in repr(config.cameras[0])
    assert "hunter22" not in repr(config)


def test_state_dir_from_systemd(tmp_path: Path) -> None:
    """Without state_dir, $STATE_DIRECTORY (systemd) is used; relative dirs resolve beside the file."""
    config = parse_config(BASE, "x.yaml", {"STATE_DIRECTORY": str(tmp_path)})
    assert config.state_dir == tmp_path
    cfg_file = tmp_path / "conf" / "atomrelay.yaml"
    cfg_file.parent.mkdir()
    cfg_file.write_text(BASE + "state_dir: saved\n")
    assert load_config(cfg_file, {}).state_dir == tmp_path / "conf" / "saved"


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing file is a clear ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "nope.yaml")


def test_advertise_host_forms() -> None:
    """advertise_host accepts host, host:port and [IPv6]:port and refuses garbage or a port in per_camera mode."""
    for good in ("nvr.example", "192.0.2.1:8080", "[2001:db8::1]:8080", "2001:db8::1"):
        assert parse_config(BASE.replace("onvif:\n", f"onvif:\n  advertise_host: '{good}'\n")).onvif.advertise_host == good
    assert "onvif.advertise_host: 'http://x' is not a host" in error_of(BASE.replace("onvif:\n", "onvif:\n  advertise_host: http://x\n"))
    text = BASE.replace("onvif:\n", "onvif:\n  mode: per_camera\n  advertise_host: 'relay:8080'\n").replace(
        "    host: 192.0.2.10\n", "    host: 192.0.2.10\n    onvif_port: 8101\n")
    assert "onvif.advertise_host: must not name a port when onvif.mode is per_camera" in error_of(text)


def test_max_presets() -> None:
    """onvif.max_presets defaults to 32 and is range-checked."""
    assert parse_config(BASE).onvif.max_presets == 32
    assert "onvif.max_presets: 0 is out of range 1..1000" in error_of(BASE.replace("onvif:\n", "onvif:\n  max_presets: 0\n"))


def test_dashboard_and_metrics_keys() -> None:
    """mediamtx.webrtc_port/hls_port are off unless set, http.metrics_public is false unless set; errors name key and line."""
    config = parse_config(BASE)
    assert (config.mediamtx.webrtc_port, config.mediamtx.hls_port, config.http.metrics_public) == (None, None, False)
    config = parse_config(BASE + "mediamtx: {webrtc_port: 8889, hls_port: 8888}\nhttp: {metrics_public: true}\n")
    assert (config.mediamtx.webrtc_port, config.mediamtx.hls_port, config.http.metrics_public) == (8889, 8888, True)
    assert error_of(BASE + "mediamtx:\n  hls_port: 70000\n") == "test.yaml: mediamtx.hls_port: 70000 is out of range 1..65535 (line 11)"
    assert error_of(BASE + "http:\n  metrics_public: sometimes\n") == (
        "test.yaml: http.metrics_public: 'sometimes' is not true or false (line 11)"
    )
    assert "http.public: unknown key" in error_of(BASE + "http:\n  public: true\n")
