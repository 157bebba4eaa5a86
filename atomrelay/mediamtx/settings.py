"""The mediamtx.yml settings the relay depends on, as a commented YAML fragment.

``atomrelay mediamtx-config`` prints it; an operator sets these keys in the
mediamtx.yml of the natively installed mediamtx. Every key is a top-level key of
mediamtx's own default configuration (a test checks this against
``mediamtx.default.yml``).

Authentication comes in two flavours (``mediamtx.auth``):

* ``relay`` (default): mediamtx asks the relay for every action (``authMethod: http``)
  so ONVIF users changed over ONVIF apply to RTSP at once.
* ``static``: the users are written into mediamtx.yml (``authMethod: internal``),
  passwords as ``sha256:`` hashes; mediamtx must be restarted after user changes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from urllib.parse import urlsplit

from atomrelay import __version__
from atomrelay.config import Config, MediamtxConfig

AUTH_PATH = "/mediamtx/auth"
"""Where the relay's ONVIF HTTP server answers mediamtx's authentication requests."""

LOCALHOST_IPS = ("127.0.0.1", "::1")

# Credentials mediamtx accepts in plain text in authInternalUsers; anything else is
# written as a sha256 hash (which mediamtx also accepts for user names).
_PLAIN_CREDENTIAL = re.compile(r"[a-zA-Z0-9!$()*+.;<=>\[\]^_\-{}@#&]+")


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return json.dumps(value)


def _flow(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def sha256_credential(secret: str) -> str:
    """mediamtx's hashed credential form: ``sha256:`` + base64 of the SHA-256 digest."""
    digest = hashlib.sha256(secret.encode("utf-8")).digest()
    return "sha256:" + base64.b64encode(digest).decode("ascii")


def _user_credential(username: str) -> str:
    # "any" means anonymous to mediamtx: a real user called "any" must be hashed.
    if username != "any" and _PLAIN_CREDENTIAL.fullmatch(username):
        return username
    return sha256_credential(username)


def _host_port(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if https else 80)
    return host, port, https


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _api_lines(mediamtx: MediamtxConfig) -> list[str]:
    host, port, https = _host_port(mediamtx.api_url)
    lines = [
        "# Control API: the relay registers one path per camera stream here",
        f"# (mediamtx.api_url = {mediamtx.api_url}).",
        "api: yes",
        f"apiAddress: {_q(_join_host_port(host, port))}",
    ]
    if https:
        lines += [
            "# api_url is https: set apiServerKey and apiServerCert as well.",
            "apiEncryption: yes",
        ]
    return lines


def _static_auth_lines(config: Config) -> list[str]:
    mediamtx = config.mediamtx
    lines = [
        "# Users are written here (mediamtx.auth: static); passwords are sha256 hashes.",
        "# Restart mediamtx after changing users in the relay config. Users created or",
        "# changed over ONVIF do not reach mediamtx in this mode; use mediamtx.auth: relay.",
        "authMethod: internal",
        "authInternalUsers:",
    ]
    if mediamtx.username is not None and mediamtx.password is not None:
        lines += [
            "  # The relay's own Control API user, accepted only from the relay's address.",
            f"  - user: {_q(_user_credential(mediamtx.username))}",
            f"    pass: {_q(sha256_credential(mediamtx.password))}",
        ]
    else:
        lines += [
            "  # The relay's Control API access (mediamtx.username is not set): no",
            "  # credentials, accepted only from the relay's address.",
            "  - user: any",
            "    pass:",
        ]
    lines += [
        f"    ips: {_flow([mediamtx.relay_address])}",
        "    permissions:",
        "      - action: api",
        "  # The relay's ffmpeg pipelines publish from this host without credentials.",
        "  - user: any",
        "    pass:",
        f"    ips: {_flow(LOCALHOST_IPS)}",
        "    permissions:",
        "      - action: publish",
    ]
    if config.onvif.users:
        lines.append("  # ONVIF users from the relay config may watch and play back, from anywhere.")
    for user in config.onvif.users:
        lines += [
            f"  - user: {_q(_user_credential(user.username))}",
            f"    pass: {_q(sha256_credential(user.password))}",
            "    ips: []",
            "    permissions:",
            "      - action: read",
            "      - action: playback",
        ]
    return lines


def _relay_auth_lines(config: Config) -> list[str]:
    address = _join_host_port(config.mediamtx.relay_address, config.onvif.port)
    return [
        "# mediamtx asks the relay about every action (mediamtx.auth: relay): ONVIF users",
        "# may read and play back, ffmpeg pipelines on this host may publish, and only the",
        "# relay's own API user may use the Control API. relay_address must reach the",
        "# relay's ONVIF HTTP port from mediamtx.",
        "authMethod: http",
        f"authHTTPAddress: {_q(f'http://{address}{AUTH_PATH}')}",
        "# Nothing is excluded: mediamtx's built-in default would let anyone use the",
        "# Control API, metrics and pprof without asking the relay.",
        "authHTTPExclude: []",
    ]


def mediamtx_config_fragment(config: Config) -> str:
    """The mediamtx.yml settings the relay needs, as commented YAML text."""
    mediamtx = config.mediamtx
    lines = [
        f"# mediamtx settings required by atomrelay {__version__} (generated from {config.source}).",
        "# Set these keys in mediamtx.yml, replacing the existing ones: a YAML key may",
        "# appear only once.",
        "",
        *_api_lines(mediamtx),
        "",
        "# Wi-Fi cameras lose UDP packets: RTSP over TCP only, for cameras and readers.",
        "rtspTransports: [tcp]",
        f"rtspAddress: {_q(f':{mediamtx.rtsp_port}')}",
        "# HTTP-based authentication only sees passwords sent with basic, and digest",
        "# cannot check hashed passwords.",
        "rtspAuthMethods: [basic]",
        "",
        "# H.265 streams with transcoded audio are published over SRT (MPEG-TS), since",
        "# mediamtx rejects HEVC published over RTSP by ffmpeg.",
        "srt: yes",
        f"srtAddress: {_q(f':{mediamtx.srt_port}')}",
        "",
        "# Settings proven by the earlier relay: readers that pause (NVRs) and cameras with",
        "# gaps in their streams are not dropped, and readers that fall briefly behind",
        "# do not lose packets.",
        "readTimeout: 15m",
        "writeQueueSize: 4096",
        "",
    ]
    if mediamtx.auth == "static":
        lines += _static_auth_lines(config)
    else:
        lines += _relay_auth_lines(config)
    return "\n".join(lines) + "\n"
