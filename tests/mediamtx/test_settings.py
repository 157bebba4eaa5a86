"""The mediamtx.yml fragment: valid YAML, only real mediamtx keys, the settings the relay needs."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from atomrelay.config import Config
from atomrelay.mediamtx.settings import AUTH_PATH, mediamtx_config_fragment

from .support import make_config

DEFAULT_YML = Path(__file__).resolve().parents[1] / "reference" / "mediamtx.default.yml"


def defaults() -> dict[str, Any]:
    """mediamtx's default configuration."""
    loaded = yaml.safe_load(DEFAULT_YML.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def fragment(config: Config) -> tuple[str, dict[str, Any]]:
    """The fragment text and its parsed YAML."""
    text = mediamtx_config_fragment(config)
    parsed = yaml.safe_load(text)
    assert isinstance(parsed, dict)
    return text, parsed


def config_with(tmp_path: Path, mediamtx: str = "", users: str | None = None) -> Config:
    """A config with extra mediamtx keys and, optionally, other ONVIF users."""
    config = make_config(tmp_path, mediamtx=mediamtx)
    if users is None:
        return config
    from dataclasses import replace

    from atomrelay.config import User

    parsed = [User(*line.split(":", 1), role="User") for line in users.split()]
    return replace(config, onvif=replace(config.onvif, users=tuple(parsed)))


STATIC = "  auth: static\n  username: relay\n  password: \"r3lay pw\"\n  relay_address: 127.0.0.1\n"


@pytest.mark.parametrize("mediamtx", ["", STATIC, "  auth: static\n"])
def test_every_key_exists_in_mediamtx_defaults_with_the_same_type(tmp_path: Path, mediamtx: str) -> None:
    """Each top-level key is a mediamtx.default.yml key and has the default's YAML type."""
    text, parsed = fragment(config_with(tmp_path, mediamtx))
    reference = defaults()
    assert text.count("#") > 10
    for key, value in parsed.items():
        assert key in reference, key
        if reference[key] is not None:
            assert type(value) is type(reference[key]), key


@pytest.mark.parametrize("mediamtx", [STATIC, "  auth: static\n"])
def test_static_users_use_only_keys_mediamtx_knows(tmp_path: Path, mediamtx: str) -> None:
    """authInternalUsers entries and their permissions use the keys of mediamtx's default users."""
    _, parsed = fragment(config_with(tmp_path, mediamtx))
    reference_user = defaults()["authInternalUsers"][0]
    for user in parsed["authInternalUsers"]:
        assert set(user) <= set(reference_user)
        for permission in user["permissions"]:
            assert set(permission) <= set(reference_user["permissions"][0])
            assert permission["action"] in ("publish", "read", "playback", "api", "metrics", "pprof")


def test_required_settings(tmp_path: Path) -> None:
    """API, TCP-only RTSP, SRT, timeouts and queue size carry the values the relay needs."""
    config = make_config(tmp_path, mediamtx="  rtsp_port: 8555\n  srt_port: 8891\n  api_url: http://127.0.0.1:9990\n")
    _, parsed = fragment(config)
    assert parsed["api"] is True
    assert parsed["apiAddress"] == "127.0.0.1:9990"
    assert parsed["rtspTransports"] == ["tcp"]
    assert parsed["rtspAddress"] == ":8555"
    assert parsed["srt"] is True
    assert parsed["srtAddress"] == ":8891"
    assert parsed["readTimeout"] == "15m"
    assert parsed["writeQueueSize"] == 4096
    assert parsed["rtspAuthMethods"] == ["basic"]


def test_relay_auth_points_mediamtx_at_the_relay(tmp_path: Path) -> None:
    """mediamtx.auth relay uses HTTP auth at the relay's ONVIF port and excludes nothing."""
    config = make_config(tmp_path, mediamtx="  relay_address: 10.1.2.3\n")
    _, parsed = fragment(config)
    assert parsed["authMethod"] == "http"
    assert parsed["authHTTPAddress"] == f"http://10.1.2.3:{config.onvif.port}{AUTH_PATH}"
    assert parsed["authHTTPExclude"] == []
    assert "authInternalUsers" not in parsed


def test_relay_auth_brackets_ipv6_addresses(tmp_path: Path) -> None:
    """An IPv6 relay address and API host are bracketed in URLs and listener addresses."""
    config = make_config(tmp_path, mediamtx="  relay_address: \"::1\"\n  api_url: http://[::1]:9997\n")
    _, parsed = fragment(config)
    assert parsed["authHTTPAddress"] == f"http://[::1]:{config.onvif.port}{AUTH_PATH}"
    assert parsed["apiAddress"] == "[::1]:9997"


def test_https_api_url_turns_on_api_encryption(tmp_path: Path) -> None:
    """An https api_url asks for apiEncryption on the default port 443."""
    _, parsed = fragment(make_config(tmp_path, mediamtx="  api_url: https://127.0.0.1\n"))
    assert parsed["apiEncryption"] is True
    assert parsed["apiAddress"] == "127.0.0.1:443"


def sha(secret: str) -> str:
    """mediamtx's sha256 credential of ``secret``."""
    return "sha256:" + base64.b64encode(hashlib.sha256(secret.encode()).digest()).decode()


def test_static_auth_users_and_permissions(tmp_path: Path) -> None:
    """Static auth: API user from the relay address only, localhost publishers, ONVIF users read+playback."""
    config = config_with(tmp_path, STATIC, users="admin:secret viewer:p@ss:w0rd")
    text, parsed = fragment(config)
    assert parsed["authMethod"] == "internal"
    users = parsed["authInternalUsers"]
    api_users = [u for u in users if any(p["action"] == "api" for p in u["permissions"])]
    assert api_users == [
        {"user": "relay", "pass": sha("r3lay pw"), "ips": ["127.0.0.1"], "permissions": [{"action": "api"}]}
    ]
    publishers = [u for u in users if any(p["action"] == "publish" for p in u["permissions"])]
    assert publishers == [
        {"user": "any", "pass": None, "ips": ["127.0.0.1", "::1"], "permissions": [{"action": "publish"}]}
    ]
    viewers = {u["user"]: u for u in users if u not in api_users + publishers}
    assert set(viewers) == {"admin", "viewer"}
    assert viewers["viewer"]["pass"] == sha("p@ss:w0rd")
    assert viewers["admin"]["ips"] == []
    assert [p["action"] for p in viewers["admin"]["permissions"]] == ["read", "playback"]
    for secret in ("secret", "p@ss:w0rd", "r3lay pw"):
        assert secret not in text


def test_static_auth_never_opens_the_api_to_everyone(tmp_path: Path) -> None:
    """Without mediamtx credentials the anonymous API grant is limited to the relay address, never ips: []."""
    _, parsed = fragment(config_with(tmp_path, "  auth: static\n  relay_address: 192.168.7.7\n"))
    for user in parsed["authInternalUsers"]:
        actions = {p["action"] for p in user["permissions"]}
        if actions & {"api", "metrics", "pprof"}:
            assert user["ips"] == ["192.168.7.7"]


def test_user_named_any_is_not_anonymous(tmp_path: Path) -> None:
    """An ONVIF user literally named 'any' is written hashed, so mediamtx does not treat it as anonymous."""
    _, parsed = fragment(config_with(tmp_path, "  auth: static\n", users="any:pw1"))
    readers = [u for u in parsed["authInternalUsers"] if {"action": "read"} in u["permissions"]]
    assert [u["user"] for u in readers] == [sha("any")]


def test_usernames_mediamtx_cannot_store_plainly_are_hashed(tmp_path: Path) -> None:
    """A mediamtx API user name with characters mediamtx refuses in plain text is written as a sha256 hash."""
    config = config_with(tmp_path, "  auth: static\n  username: \"relay user\\n\"\n  password: pw\n")
    _, parsed = fragment(config)
    api_user = parsed["authInternalUsers"][0]
    assert api_user["user"] == sha("relay user\n")
    assert api_user["permissions"] == [{"action": "api"}]
