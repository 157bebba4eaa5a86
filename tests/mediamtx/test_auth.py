"""Decisions of the HTTP endpoint mediamtx asks before every action (mediamtx.auth: relay)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.logger import LogLevel

from atomrelay.config import MediamtxConfig, User
from atomrelay.web import mediamtx_auth as auth_module
from atomrelay.web.mediamtx_auth import MAX_BODY, MediamtxAuthResource

from .support import Events, capture, result_of

USERS = {"admin": User("admin", "s3cret!", "Administrator"), "viewer": User("viewer", "p@ss:w0rd", "User")}
RELAY = MediamtxConfig(username="relay", password="api-pw", relay_address="127.0.0.1")


def make(config: MediamtxConfig = RELAY) -> tuple[StubTreq, MediamtxAuthResource, Events]:
    """The resource behind StubTreq, with captured logs."""
    resource = MediamtxAuthResource(USERS.get, config)
    events = capture(resource)
    return StubTreq(resource), resource, events


def ask(stub: StubTreq, body: Any, raw: bytes | None = None) -> int:
    """POST one authentication request; the status code."""
    data = raw if raw is not None else json.dumps(body).encode()
    deferred = stub.post("http://relay/mediamtx/auth", data=data, headers={"Content-Type": ["application/json"]})
    stub.flush()
    return int(result_of(deferred).code)


def request(action: str, user: str = "", password: str = "", ip: str = "192.168.1.50", **extra: Any) -> dict[str, Any]:
    """A request body shaped like mediamtx's (internal/auth/manager.go)."""
    body = {"ip": ip, "user": user, "password": password, "token": "", "action": action, "path": "cam1/main",
            "protocol": "rtsp", "id": "5f0c6f9e-5c1e-4c55-9c5e-2b7bb1f2f3aa", "query": ""}
    body.update(extra)
    return body


@pytest.mark.parametrize("action", ["read", "playback"])
def test_onvif_users_may_read_and_play_back(action: str) -> None:
    """A configured ONVIF user with the right password is allowed; wrong or unknown ones are not."""
    stub, _, _ = make()
    assert ask(stub, request(action, "viewer", "p@ss:w0rd")) == 200
    assert ask(stub, request(action, "admin", "s3cret!", protocol="webrtc")) == 200
    assert ask(stub, request(action, "viewer", "p@ss:w0rd ")) == 401
    assert ask(stub, request(action, "nobody", "p@ss:w0rd")) == 401
    assert ask(stub, request(action)) == 401


def test_user_lookup_is_live() -> None:
    """Users are looked up per request, so a user added later (over ONVIF) is accepted at once."""
    users: dict[str, User] = {}
    resource = MediamtxAuthResource(users.get, RELAY)
    stub = StubTreq(resource)
    assert ask(stub, request("read", "new", "pw")) == 401
    users["new"] = User("new", "pw", "User")
    assert ask(stub, request("read", "new", "pw")) == 200


@pytest.mark.parametrize(("ip", "status"), [("127.0.0.1", 200), ("::1", 200), ("::ffff:127.0.0.1", 200),
                                             ("192.168.1.5", 401), ("127.0.0.2", 401), ("", 401), ("garbage", 401)])
def test_publish_only_from_localhost(ip: str, status: int) -> None:
    """Publishing is allowed from 127.0.0.1 and ::1 only, whatever the credentials."""
    stub, _, _ = make()
    assert ask(stub, request("publish", "admin", "s3cret!", ip=ip, protocol="srt")) == status


@pytest.mark.parametrize("action", ["api", "metrics", "pprof"])
def test_api_only_for_the_relays_own_user(action: str) -> None:
    """api/metrics/pprof need the relay's mediamtx user from the relay address; ONVIF admins are refused."""
    stub, _, _ = make()
    assert ask(stub, request(action, "relay", "api-pw", ip="127.0.0.1", protocol="")) == 200
    assert ask(stub, request(action, "relay", "api-pw", ip="192.168.1.9", protocol="")) == 401
    assert ask(stub, request(action, "relay", "wrong", ip="127.0.0.1", protocol="")) == 401
    assert ask(stub, request(action, "admin", "s3cret!", ip="127.0.0.1", protocol="")) == 401
    assert ask(stub, request(action, ip="127.0.0.1", protocol="")) == 401


def test_api_without_configured_credentials_is_anonymous_from_the_relay_only() -> None:
    """Without mediamtx credentials the API is allowed anonymously from the relay address and nowhere else."""
    stub, _, _ = make(MediamtxConfig(relay_address="10.0.0.2"))
    assert ask(stub, request("api", ip="10.0.0.2")) == 200
    assert ask(stub, request("api", ip="10.0.0.3")) == 401
    assert ask(stub, request("api", "admin", "s3cret!", ip="10.0.0.2")) == 401


def test_api_is_denied_to_everyone_when_the_relay_address_is_no_ip_address() -> None:
    """A relay_address that is a host name (config refuses it; built by hand here) matches no caller: the API is denied."""
    stub, _, _ = make(MediamtxConfig(relay_address="relay.lan"))
    assert ask(stub, request("api", ip="10.0.0.3")) == 401
    assert ask(stub, request("metrics", ip="127.0.0.1")) == 401


def test_unknown_action_is_denied() -> None:
    """An action the relay does not know is denied."""
    stub, _, _ = make()
    assert ask(stub, request("teleport", "admin", "s3cret!", ip="127.0.0.1")) == 401


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b'"read"', json.dumps(request("read", 5, "x")).encode(),
     json.dumps({"user": "admin", "password": "s3cret!"}).encode(), b"\xff\xfe"],
)
def test_malformed_requests_get_400(raw: bytes) -> None:
    """Non-JSON, non-object, wrongly typed or action-less bodies are answered 400 and logged."""
    stub, _, events = make()
    assert ask(stub, None, raw=raw) == 400
    assert events.count("malformed mediamtx authentication request") == 1


def test_null_fields_are_accepted() -> None:
    """mediamtx sends id null for some protocols; null fields are treated as empty."""
    stub, _, _ = make()
    assert ask(stub, request("read", "admin", "s3cret!", id=None, token=None)) == 200


def test_oversized_body_gets_413() -> None:
    """A body over 16 KiB is refused with 413 before parsing."""
    stub, _, _ = make()
    body = request("read", "admin", "s3cret!", query="x" * MAX_BODY)
    assert ask(stub, body) == 413
    assert ask(stub, request("read", "admin", "s3cret!", query="x" * (MAX_BODY - 400))) == 200


def test_denials_are_logged_with_ip_user_action_but_never_the_password() -> None:
    """A denial log names ip, user and action, and no event field or text contains the password."""
    stub, _, events = make()
    ask(stub, request("read", "viewer", "Wr0ng-Secret", ip="192.168.1.77"))
    ask(stub, request("publish", "admin", "s3cret!", ip="192.168.1.78"))
    texts = events.texts(LogLevel.info)
    assert len(texts) == 2
    assert "read" in texts[0] and "'viewer'" in texts[0] and "192.168.1.77" in texts[0] and "wrong password" in texts[0]
    assert "publish" in texts[1] and "192.168.1.78" in texts[1]
    dumped = repr(list(events))
    assert "Wr0ng-Secret" not in dumped and "s3cret!" not in dumped


def test_anonymous_first_attempts_are_not_noisy() -> None:
    """The credential-less first attempt every RTSP client makes is logged at debug level only."""
    stub, _, events = make()
    ask(stub, request("read"))
    assert events.texts(LogLevel.info) == [] and events.texts(LogLevel.warn) == []
    assert events.count("no credentials") == 1


def test_password_checks_are_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords are compared with hmac.compare_digest, also for unknown users (same work either way)."""
    calls: list[tuple[bytes, bytes]] = []
    real = auth_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    stub, _, _ = make()
    assert ask(stub, request("read", "admin", "s3cret!")) == 200
    assert ask(stub, request("read", "ghost", "s3cret!")) == 401
    assert len(calls) == 2


def test_oversized_body_without_content_length_gets_413() -> None:
    """A chunked body (no Content-Length) over 16 KiB is refused too, by counting what was read."""
    import io

    from twisted.web.test.requesthelper import DummyRequest

    resource = MediamtxAuthResource(USERS.get, RELAY)
    capture(resource)
    dummy = DummyRequest([b""])
    dummy.client = IPv4Address("TCP", "127.0.0.1", 40000)
    dummy.method = b"POST"
    dummy.content = io.BytesIO(json.dumps(request("read", "admin", "s3cret!", query="y" * MAX_BODY)).encode())
    resource.render_POST(dummy)
    assert dummy.responseCode == 413


def test_only_mediamtx_may_ask() -> None:
    """A caller that is not loopback or mediamtx's API host gets 403 even with a valid user: no password oracle."""
    import io

    from twisted.web.test.requesthelper import DummyRequest

    def ask_from(host: str, config: MediamtxConfig = RELAY) -> int:
        resource = MediamtxAuthResource(USERS.get, config)
        capture(resource)
        dummy = DummyRequest([b""])
        dummy.client = IPv4Address("TCP", host, 40000)
        dummy.method = b"POST"
        dummy.content = io.BytesIO(json.dumps(request("read", "admin", "s3cret!")).encode())
        resource.render_POST(dummy)
        return int(dummy.responseCode or 200)

    assert ask_from("127.0.0.1") == 200
    assert ask_from("192.0.2.50") == 403
    remote = MediamtxConfig(api_url="http://192.0.2.9:9997")
    assert ask_from("192.0.2.9", remote) == 200
    assert ask_from("192.0.2.50", remote) == 403
