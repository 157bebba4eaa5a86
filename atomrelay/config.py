"""YAML configuration -> frozen dataclasses.

Every error names the key path and the YAML line, e.g.
``cameras[1].streams[0].codec: 'h266' is not one of h264, h265 (line 31)``.
Unknown keys are errors so that typos never pass silently.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

T = TypeVar("T")

ROLES = ("Administrator", "Operator", "User")
MODES = ("aggregate", "per_camera")
CODECS = ("h264", "h265")
AUDIO_MODES = ("transcode", "none", "passthrough")
AUDIO_CODECS = ("aac", "opus", "l16")
MODELS = ("auto", "AC1", "ATOM_CamV3C", "ATOM_CAKP1JZJP", "WYZE_CAKP2JFUS")
MEDIAMTX_AUTH = ("relay", "static")
ID_RE = re.compile(r"^[a-z0-9_-]{1,30}$")
USERNAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(Exception):
    """A configuration problem; the message names the key path and YAML line."""


@dataclass(frozen=True)
class User:
    """An ONVIF user from the config file (config users cannot be deleted over ONVIF)."""

    username: str
    password: str
    role: str

    def __repr__(self) -> str:
        return f"User(username={self.username!r}, role={self.role!r})"


@dataclass(frozen=True)
class DeviceInfo:
    """What GetDeviceInformation and the discovery scopes say about the device."""

    manufacturer: str = "atomrelay"
    model: str = "ATOM Cam relay"
    name: str = "atomrelay"


@dataclass(frozen=True)
class OnvifConfig:
    """The SOAP server: where it listens, who may use it, how it names itself."""

    bind: str = "0.0.0.0"
    port: int = 8080
    advertise_host: str | None = None
    mode: str = "aggregate"
    device: DeviceInfo = field(default_factory=DeviceInfo)
    http_basic: bool = False
    allow_password_text: bool = True
    users: tuple[User, ...] = ()
    max_clock_skew: float = 300.0
    max_profiles: int = 32
    max_presets: int = 32


@dataclass(frozen=True)
class DiscoveryConfig:
    """WS-Discovery responder settings."""

    enabled: bool = True
    interface: str | None = None


@dataclass(frozen=True)
class MediamtxConfig:
    """How the relay reaches mediamtx and what mediamtx runs for it."""

    api_url: str = "http://127.0.0.1:9997"
    username: str | None = None
    password: str | None = None
    rtsp_port: int = 8554
    srt_port: int = 8890
    ffmpeg: str = "ffmpeg"
    poll_interval: float = 2.0
    wait_timeout: float = 30.0
    auth: str = "relay"
    relay_address: str = "127.0.0.1"
    """The relay's IP address as mediamtx sees it (an IP address: mediamtx's ``ips`` take no names)."""
    webrtc_port: int | None = None
    """mediamtx's WebRTC player port, for the dashboard's links (None: no links)."""
    hls_port: int | None = None
    """mediamtx's HLS player port, for the dashboard's links (None: no links)."""

    def __repr__(self) -> str:
        return (
            f"MediamtxConfig(api_url={self.api_url!r}, rtsp_port={self.rtsp_port}, "
            f"srt_port={self.srt_port}, poll_interval={self.poll_interval})"
        )


@dataclass(frozen=True)
class HttpConfig:
    """The relay's own HTTP pages (dashboard, status, metrics)."""

    metrics_public: bool = False
    """Serve ``/metrics`` without credentials."""


@dataclass(frozen=True)
class HealthConfig:
    """Camera health monitor settings."""

    interval: float = 30.0


@dataclass(frozen=True)
class EventsConfig:
    """Motion event settings."""

    motion_timeout: float = 20.0


@dataclass(frozen=True)
class StreamConfig:
    """One RTSP stream of a camera; becomes the mediamtx path ``<camera id>/<name>``."""

    name: str
    rtsp_path: str
    codec: str = "h264"
    audio: str = "transcode"
    audio_codec: str | None = None
    width: int = 1920
    height: int = 1080
    fps: int = 20
    bitrate: int = 2048


@dataclass(frozen=True)
class CameraConfig:
    """One ATOM Cam and its streams."""

    id: str
    name: str
    host: str
    streams: tuple[StreamConfig, ...]
    http_port: int = 80
    rtsp_port: int = 8554
    username: str | None = None
    password: str | None = None
    rtsp_username: str | None = None
    rtsp_password: str | None = None
    model: str = "auto"
    webhook_token: str | None = None
    onvif_port: int | None = None
    onvif_bind: str | None = None
    fov: tuple[float, float] | None = None

    def __repr__(self) -> str:
        return f"CameraConfig(id={self.id!r}, host={self.host!r}, model={self.model!r})"

    @property
    def rtsp_credentials(self) -> tuple[str | None, str | None]:
        """The RTSP user and password (falling back to the HTTP ones)."""
        if self.rtsp_username is not None:
            return self.rtsp_username, self.rtsp_password
        return self.username, self.password


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    onvif: OnvifConfig
    discovery: DiscoveryConfig
    mediamtx: MediamtxConfig
    health: HealthConfig
    events: EventsConfig
    state_dir: Path
    cameras: tuple[CameraConfig, ...]
    source: str = "<string>"
    http: HttpConfig = field(default_factory=HttpConfig)

    def camera(self, camera_id: str) -> CameraConfig | None:
        """The camera with this id, or None."""
        for cam in self.cameras:
            if cam.id == camera_id:
                return cam
        return None


class _Reader:
    """Walks a composed YAML node tree, converting and validating as it goes."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, path: str, node: Node, message: str) -> None:
        line = node.start_mark.line + 1
        self.errors.append(f"{path}: {message} (line {line})")

    def mapping(
        self, node: Node, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Node]:
        """The keys of a mapping node; unknown, duplicate or missing keys are errors."""
        if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            result: dict[str, Node] = {}
        elif not isinstance(node, MappingNode):
            self.fail(path or "<top>", node, "must be a mapping")
            return {}
        else:
            result = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, ScalarNode) else None
                sub = _join(path, str(key))
                if not isinstance(key, str):
                    self.fail(path or "<top>", key_node, "keys must be strings")
                elif key not in allowed:
                    self.fail(sub, key_node, f"unknown key (expected one of {', '.join(allowed)})")
                elif key in result:
                    self.fail(sub, key_node, "duplicate key")
                else:
                    result[key] = value_node
        for key in required:
            if key not in result:
                self.fail(_join(path, key), node, "is required")
        return result

    def value(self, node: Node | None, path: str, default: T, conv: Callable[[Node, str], T | None]) -> T:
        """Convert ``node`` with ``conv``, or return ``default`` when absent."""
        if node is None:
            return default
        converted = conv(node, path)
        return default if converted is None else converted

    def string(self, node: Node, path: str, nullable: bool = False) -> str | None:
        if not isinstance(node, ScalarNode):
            self.fail(path, node, "must be a string")
            return None
        if node.tag == "tag:yaml.org,2002:null":
            if not nullable:
                self.fail(path, node, "must not be null")
            return None
        return str(node.value)

    def integer(self, node: Node, path: str, low: int, high: int) -> int | None:
        if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:int":
            self.fail(path, node, f"{_show(node)} is not an integer")
            return None
        number = _construct(node)
        if not isinstance(number, int):
            self.fail(path, node, f"{_show(node)} is not an integer")
            return None
        if not low <= number <= high:
            self.fail(path, node, f"{number} is out of range {low}..{high}")
            return None
        return number

    def boolean(self, node: Node, path: str) -> bool | None:
        if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:bool":
            self.fail(path, node, f"{_show(node)} is not true or false")
            return None
        value = _construct(node)
        if not isinstance(value, bool):
            self.fail(path, node, f"{_show(node)} is not true or false")
            return None
        return value

    def duration(self, node: Node, path: str, low: float = 0.001, high: float = 86400.0) -> float | None:
        text = node.value if isinstance(node, ScalarNode) else None
        match = DURATION_RE.match(str(text)) if text is not None else None
        if match is None:
            self.fail(path, node, f"{_show(node)} is not a duration (like 30s, 15m, 500ms or plain seconds)")
            return None
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if not low <= seconds <= high:
            self.fail(path, node, f"{text} is out of range {low:g}s..{high:g}s")
            return None
        return seconds

    def choice(self, node: Node, path: str, options: tuple[str, ...]) -> str | None:
        value = self.string(node, path)
        if value is None:
            return None
        if value not in options:
            self.fail(path, node, f"{value!r} is not one of {', '.join(options)}")
            return None
        return value

    def ident(self, node: Node, path: str) -> str | None:
        value = self.string(node, path)
        if value is not None and not ID_RE.fullmatch(value):
            self.fail(path, node, f"{value!r} must match [a-z0-9_-]{{1,30}}")
            return None
        return value

    def sequence(self, node: Node, path: str) -> list[Node]:
        if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return []
        if not isinstance(node, SequenceNode):
            self.fail(path, node, "must be a list")
            return []
        return list(node.value)


_FAST_LOADER: type[yaml.SafeLoader | yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader if this PyYAML was built with it, else PyYAML's own."""


def _construct(node: ScalarNode) -> Any:
    """The value of a scalar, or None when its tag and text do not make one (``!!int abc``, ``0x_``, ``!custom 1``)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node)
    except Exception:  # noqa: BLE001 - PyYAML raises ValueError, KeyError, IndexError, YAMLError... for such scalars
        return None


def _show(node: Node) -> str:
    if isinstance(node, ScalarNode):
        return repr(node.value)
    return "a " + ("list" if isinstance(node, SequenceNode) else "mapping")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _host(reader: _Reader, node: Node, path: str) -> str | None:
    value = reader.string(node, path)
    if value is not None and (not value or any(c in value for c in " /@?#")):
        reader.fail(path, node, f"{value!r} is not a host name or address")
        return None
    return value


def _ip_address(reader: _Reader, node: Node, path: str) -> str | None:
    value = reader.string(node, path)
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        reader.fail(path, node, f"{value!r} is not an IP address: write the address mediamtx sees the relay's "
                    "requests come from (127.0.0.1 when both run on this machine)")
        return None


def _read_users(reader: _Reader, node: Node | None, path: str) -> tuple[User, ...]:
    if node is None:
        reader.errors.append(f"{path}: at least one user is required (line 1)")
        return ()
    users: list[User] = []
    seen: set[str] = set()
    items = reader.sequence(node, path)
    if not items and isinstance(node, (SequenceNode, ScalarNode)):
        reader.fail(path, node, "at least one user is required")
    for index, item in enumerate(items):
        sub = f"{path}[{index}]"
        keys = reader.mapping(item, sub, ("username", "password", "role"), ("username", "password"))
        username = reader.string(keys["username"], sub + ".username") if "username" in keys else None
        password = reader.string(keys["password"], sub + ".password") if "password" in keys else None
        role = reader.value(keys.get("role"), sub + ".role", "User", lambda n, p: reader.choice(n, p, ROLES))
        if username is not None and not USERNAME_RE.fullmatch(username):
            reader.fail(sub + ".username", keys["username"], f"{username!r} must be 1-64 of A-Z a-z 0-9 . _ @ -")
            continue
        if password is not None and not password:
            reader.fail(sub + ".password", keys["password"], "must not be empty")
            continue
        if username is None or password is None:
            continue
        if username in seen:
            reader.fail(sub + ".username", keys["username"], f"{username!r} is listed twice")
            continue
        seen.add(username)
        users.append(User(username, password, role))
    return tuple(users)


def _read_onvif(reader: _Reader, node: Node | None) -> OnvifConfig:
    default = OnvifConfig()
    if node is None:
        reader.errors.append("onvif.users: at least one user is required (line 1)")
        return default
    keys = reader.mapping(
        node,
        "onvif",
        (
            "bind", "port", "advertise_host", "mode", "device", "http_basic", "allow_password_text", "users",
            "max_clock_skew", "max_profiles", "max_presets",
        ),
    )
    device = DeviceInfo()
    if "device" in keys:
        dkeys = reader.mapping(keys["device"], "onvif.device", ("manufacturer", "model", "name"))
        device = DeviceInfo(
            **{
                key: reader.value(dkeys.get(key), f"onvif.device.{key}", getattr(device, key), reader.string)
                for key in ("manufacturer", "model", "name")
            }
        )
    advertise = None
    if "advertise_host" in keys:
        advertise = reader.string(keys["advertise_host"], "onvif.advertise_host", nullable=True)
        if advertise is not None and not _valid_advertise_host(advertise):
            reader.fail("onvif.advertise_host", keys["advertise_host"],
                        f"{advertise!r} is not a host, host:port or [IPv6]:port")
            advertise = None
    mode = reader.value(keys.get("mode"), "onvif.mode", default.mode, lambda n, p: reader.choice(n, p, MODES))
    if advertise is not None and mode == "per_camera" and _has_port(advertise):
        reader.fail("onvif.advertise_host", keys["advertise_host"],
                    "must not name a port when onvif.mode is per_camera (each camera has its own onvif_port)")
    return OnvifConfig(
        bind=reader.value(keys.get("bind"), "onvif.bind", default.bind, lambda n, p: _host(reader, n, p)),
        port=reader.value(keys.get("port"), "onvif.port", default.port, lambda n, p: reader.integer(n, p, 1, 65535)),
        advertise_host=advertise,
        mode=mode,
        device=device,
        http_basic=reader.value(keys.get("http_basic"), "onvif.http_basic", False, reader.boolean),
        allow_password_text=reader.value(
            keys.get("allow_password_text"), "onvif.allow_password_text", default.allow_password_text, reader.boolean
        ),
        users=_read_users(reader, keys.get("users"), "onvif.users"),
        max_clock_skew=reader.value(
            keys.get("max_clock_skew"), "onvif.max_clock_skew", default.max_clock_skew, reader.duration
        ),
        max_profiles=reader.value(
            keys.get("max_profiles"), "onvif.max_profiles", default.max_profiles,
            lambda n, p: reader.integer(n, p, 0, 1000),
        ),
        max_presets=reader.value(
            keys.get("max_presets"), "onvif.max_presets", default.max_presets,
            lambda n, p: reader.integer(n, p, 1, 1000),
        ),
    )


def _has_port(host: str) -> bool:
    if host.count(":") > 1 and not host.startswith("["):
        return False  # a bare IPv6 literal
    try:
        return urlsplit("//" + host).port is not None
    except ValueError:
        return True


def _valid_advertise_host(host: str) -> bool:
    if not host or any(c in host for c in " /@?#"):
        return False
    if host.count(":") > 1 and not host.startswith("["):
        return True  # a bare IPv6 literal
    try:
        parts = urlsplit("//" + host)
        return bool(parts.hostname) and (parts.port is None or 0 < parts.port < 65536)
    except ValueError:
        return False


def _read_mediamtx(reader: _Reader, node: Node | None) -> MediamtxConfig:
    default = MediamtxConfig()
    if node is None:
        return default
    keys = reader.mapping(
        node,
        "mediamtx",
        (
            "api_url", "username", "password", "rtsp_port", "srt_port", "ffmpeg",
            "poll_interval", "wait_timeout", "auth", "relay_address", "webrtc_port", "hls_port",
        ),
    )
    api_url = reader.value(keys.get("api_url"), "mediamtx.api_url", default.api_url, reader.string)
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        reader.fail("mediamtx.api_url", keys["api_url"], f"{api_url!r} is not an http:// or https:// URL")
    username = reader.string(keys["username"], "mediamtx.username", True) if "username" in keys else None
    password = reader.string(keys["password"], "mediamtx.password", True) if "password" in keys else None
    if (username is None) != (password is None):
        reader.fail("mediamtx.password" if username else "mediamtx.username", node, "username and password go together")

    def port(key: str, value: int) -> int:
        return reader.value(keys.get(key), f"mediamtx.{key}", value, lambda n, p: reader.integer(n, p, 1, 65535))

    return MediamtxConfig(
        api_url=api_url.rstrip("/"),
        username=username,
        password=password,
        rtsp_port=port("rtsp_port", default.rtsp_port),
        srt_port=port("srt_port", default.srt_port),
        ffmpeg=reader.value(keys.get("ffmpeg"), "mediamtx.ffmpeg", default.ffmpeg, reader.string),
        poll_interval=reader.value(
            keys.get("poll_interval"), "mediamtx.poll_interval", default.poll_interval,
            lambda n, p: reader.duration(n, p, 0.1, 3600),
        ),
        wait_timeout=reader.value(
            keys.get("wait_timeout"), "mediamtx.wait_timeout", default.wait_timeout,
            lambda n, p: reader.duration(n, p, 0.0, 86400),
        ),
        auth=reader.value(keys.get("auth"), "mediamtx.auth", default.auth, lambda n, p: reader.choice(n, p, MEDIAMTX_AUTH)),
        relay_address=reader.value(
            keys.get("relay_address"), "mediamtx.relay_address", default.relay_address,
            lambda n, p: _ip_address(reader, n, p),
        ),
        webrtc_port=port("webrtc_port", 0) or None,
        hls_port=port("hls_port", 0) or None,
    )


def _read_stream(reader: _Reader, node: Node, path: str) -> StreamConfig | None:
    keys = reader.mapping(
        node, path,
        ("name", "rtsp_path", "codec", "audio", "audio_codec", "width", "height", "fps", "bitrate"),
        ("name", "rtsp_path"),
    )
    name = reader.ident(keys["name"], path + ".name") if "name" in keys else None
    rtsp_path = reader.string(keys["rtsp_path"], path + ".rtsp_path") if "rtsp_path" in keys else None
    if rtsp_path is not None:
        rtsp_path = rtsp_path.lstrip("/")
        if not rtsp_path or any(c.isspace() for c in rtsp_path):
            reader.fail(path + ".rtsp_path", keys["rtsp_path"], f"{rtsp_path!r} is not an RTSP path")
            rtsp_path = None
    codec = reader.value(keys.get("codec"), path + ".codec", "h264", lambda n, p: reader.choice(n, p, CODECS))
    audio = reader.value(keys.get("audio"), path + ".audio", "transcode", lambda n, p: reader.choice(n, p, AUDIO_MODES))
    audio_codec: str | None = None
    if "audio_codec" in keys:
        audio_codec = reader.string(keys["audio_codec"], path + ".audio_codec", nullable=True)
        if audio_codec is not None and audio_codec not in AUDIO_CODECS:
            reader.fail(path + ".audio_codec", keys["audio_codec"], f"{audio_codec!r} is not one of {', '.join(AUDIO_CODECS)}")
            audio_codec = None
        elif audio_codec is not None and audio != "passthrough":
            reader.fail(path + ".audio_codec", keys["audio_codec"], "is only used with audio: passthrough")

    def number(key: str, default: int, low: int, high: int) -> int:
        return reader.value(keys.get(key), f"{path}.{key}", default, lambda n, p: reader.integer(n, p, low, high))

    width = number("width", 1920, 16, 8192)
    height = number("height", 1080, 16, 8192)
    fps = number("fps", 20, 1, 120)
    bitrate = number("bitrate", 2048, 16, 100000)
    if name is None or rtsp_path is None:
        return None
    return StreamConfig(name, rtsp_path, codec, audio, audio_codec, width, height, fps, bitrate)


def _read_camera(reader: _Reader, node: Node, path: str) -> CameraConfig | None:
    keys = reader.mapping(
        node, path,
        (
            "id", "name", "host", "http_port", "rtsp_port", "username", "password", "rtsp_username",
            "rtsp_password", "model", "webhook_token", "onvif_port", "onvif_bind", "fov", "streams",
        ),
        ("id", "host", "streams"),
    )
    cam_id = reader.ident(keys["id"], path + ".id") if "id" in keys else None
    host = _host(reader, keys["host"], path + ".host") if "host" in keys else None
    name = reader.value(keys.get("name"), path + ".name", cam_id or "", reader.string)

    def opt_str(key: str) -> str | None:
        return reader.string(keys[key], f"{path}.{key}", nullable=True) if key in keys else None

    def opt_port(key: str, default: int | None) -> int | None:
        if key not in keys or (isinstance(keys[key], ScalarNode) and keys[key].tag == "tag:yaml.org,2002:null"):
            return default
        return reader.integer(keys[key], f"{path}.{key}", 1, 65535)

    username, password = opt_str("username"), opt_str("password")
    if (username is None) != (password is None):
        reader.fail(path + (".password" if username else ".username"), node, "username and password go together")
    rtsp_username, rtsp_password = opt_str("rtsp_username"), opt_str("rtsp_password")
    if (rtsp_username is None) != (rtsp_password is None):
        reader.fail(path + (".rtsp_password" if rtsp_username else ".rtsp_username"), node,
                    "rtsp_username and rtsp_password go together")
    token = opt_str("webhook_token")
    if token is not None and (len(token) < 16 or not re.fullmatch(r"[A-Za-z0-9_-]+", token)):
        reader.fail(path + ".webhook_token", keys["webhook_token"], "must be at least 16 characters of A-Z a-z 0-9 _ -")
        token = None
    fov: tuple[float, float] | None = None
    if "fov" in keys and not (isinstance(keys["fov"], ScalarNode) and keys["fov"].tag.endswith(":null")):
        items = reader.sequence(keys["fov"], path + ".fov")
        values = [_construct(i) if isinstance(i, ScalarNode) else None for i in items]
        if len(values) != 2 or not all(isinstance(v, (int, float)) and 1 <= v <= 360 for v in values):
            reader.fail(path + ".fov", keys["fov"], "must be [horizontal, vertical] degrees, each 1..360")
        else:
            fov = (float(values[0] or 0), float(values[1] or 0))
    streams: list[StreamConfig] = []
    names: set[str] = set()
    stream_nodes = reader.sequence(keys["streams"], path + ".streams") if "streams" in keys else []
    if "streams" in keys and not stream_nodes:
        reader.fail(path + ".streams", keys["streams"], "at least one stream is required")
    for index, snode in enumerate(stream_nodes):
        stream = _read_stream(reader, snode, f"{path}.streams[{index}]")
        if stream is None:
            continue
        if stream.name in names:
            reader.fail(f"{path}.streams[{index}].name", snode, f"{stream.name!r} is used twice in this camera")
            continue
        names.add(stream.name)
        streams.append(stream)
    camera = CameraConfig(
        id=cam_id or "",
        name=name,
        host=host or "",
        streams=tuple(streams),
        http_port=opt_port("http_port", 80) or 80,
        rtsp_port=opt_port("rtsp_port", 8554) or 8554,
        username=username,
        password=password,
        rtsp_username=rtsp_username,
        rtsp_password=rtsp_password,
        model=reader.value(keys.get("model"), path + ".model", "auto", lambda n, p: reader.choice(n, p, MODELS)),
        webhook_token=token,
        onvif_port=opt_port("onvif_port", None),
        onvif_bind=reader.value(keys.get("onvif_bind"), path + ".onvif_bind", None,
                                lambda n, p: _host(reader, n, p) if not n.tag.endswith(":null") else None),
        fov=fov,
    )
    if cam_id is None or host is None:
        return None
    return camera


def _compose(text: str, source: str) -> Node | None:
    """The YAML node tree of ``text``; a ``ConfigError`` naming the problem and its line if it is not YAML.

    libyaml (PyYAML's C parser, when the wheel has it) composes a config about 15 times
    faster than PyYAML's own parser: 1.4 ms against 21 ms for 16 cameras, a twentieth of
    start-up. Its error messages are terser ("found character that cannot start any
    token" where PyYAML names the tab), so a document libyaml refuses is parsed again by
    PyYAML, whose answer (its tree or its error) is the one used.
    """
    if _FAST_LOADER is not yaml.SafeLoader:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            pass
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: not valid YAML: {problem}{where}") from None


def parse_config(text: str, source: str = "<string>", environ: dict[str, str] | None = None) -> Config:
    """Parse and validate YAML text; raise ConfigError listing every problem."""
    env = os.environ if environ is None else environ
    root = _compose(text, source)
    if root is None:
        raise ConfigError(f"{source}: the file is empty")
    reader = _Reader()
    top = reader.mapping(
        root, "", ("onvif", "discovery", "mediamtx", "health", "events", "http", "state_dir", "cameras"), ("cameras",)
    )
    onvif = _read_onvif(reader, top.get("onvif"))
    discovery = DiscoveryConfig()
    if "discovery" in top:
        dkeys = reader.mapping(top["discovery"], "discovery", ("enabled", "interface"))
        discovery = DiscoveryConfig(
            enabled=reader.value(dkeys.get("enabled"), "discovery.enabled", True, reader.boolean),
            interface=reader.string(dkeys["interface"], "discovery.interface", True) if "interface" in dkeys else None,
        )
    mediamtx = _read_mediamtx(reader, top.get("mediamtx"))
    health = HealthConfig()
    if "health" in top:
        hkeys = reader.mapping(top["health"], "health", ("interval",))
        health = HealthConfig(
            interval=reader.value(hkeys.get("interval"), "health.interval", 30.0, lambda n, p: reader.duration(n, p, 1, 3600))
        )
    events = EventsConfig()
    if "events" in top:
        ekeys = reader.mapping(top["events"], "events", ("motion_timeout",))
        events = EventsConfig(
            motion_timeout=reader.value(
                ekeys.get("motion_timeout"), "events.motion_timeout", 20.0, lambda n, p: reader.duration(n, p, 1, 3600)
            )
        )
    http = HttpConfig()
    if "http" in top:
        http_keys = reader.mapping(top["http"], "http", ("metrics_public",))
        http = HttpConfig(
            metrics_public=reader.value(http_keys.get("metrics_public"), "http.metrics_public", False, reader.boolean)
        )
    default_state = env.get("STATE_DIRECTORY", "").split(":")[0] or "./state"
    state_dir = reader.value(top.get("state_dir"), "state_dir", default_state, reader.string)
    cameras: list[CameraConfig] = []
    ids: set[str] = set()
    ports: dict[int, str] = {}
    for index, cnode in enumerate(reader.sequence(top["cameras"], "cameras") if "cameras" in top else []):
        path = f"cameras[{index}]"
        camera = _read_camera(reader, cnode, path)
        if camera is None:
            continue
        if camera.id in ids:
            reader.fail(path + ".id", cnode, f"{camera.id!r} is used by another camera")
            continue
        ids.add(camera.id)
        if onvif.mode == "per_camera":
            if camera.onvif_port is None:
                reader.fail(path + ".onvif_port", cnode, "is required when onvif.mode is per_camera")
            elif camera.onvif_port == onvif.port or camera.onvif_port in ports:
                other = ports.get(camera.onvif_port, "onvif.port")
                reader.fail(path + ".onvif_port", cnode, f"{camera.onvif_port} is already used by {other}")
            else:
                ports[camera.onvif_port] = path
        cameras.append(camera)
    if "cameras" in top and not cameras and not reader.errors:
        reader.fail("cameras", top["cameras"], "at least one camera is required")
    if reader.errors:
        raise ConfigError("\n".join(f"{source}: {error}" for error in reader.errors))
    base = Path(source).parent if source != "<string>" else Path.cwd()
    state_path = Path(state_dir)
    if not state_path.is_absolute():
        state_path = (base / state_path).resolve()
    return Config(onvif, discovery, mediamtx, health, events, state_path, tuple(cameras), source, http)


def load_config(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config file is not UTF-8 text") from None
    return parse_config(text, str(path), environ)
