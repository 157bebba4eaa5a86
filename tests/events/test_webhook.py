"""The camera webhook receiver: tokens, body checks, rate limit, dispatch, log hygiene."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.web.test.requesthelper import DummyRequest

from atomrelay.config import parse_config
from atomrelay.web.webhook import WebhookResource, access_log_formatter, recognised_classes
from atomrelay.wiring import build_relay
from tests.events.support import CONFIG, TOKEN1, TOKEN2, EventsRelay
from tests.robustness.support import relay_sites

ALARM = {"type": "alarmEvent", "device": "atomcam"}


@pytest.fixture
def log_events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every event logged by the webhook receiver."""
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(WebhookResource, "log", Logger(observer=events.append))
    return events


def test_alarm_sets_motion_and_the_timeout_clears_it() -> None:
    """alarmEvent answers 204 and turns motion on; 20 s without another alarm turns it off; repeats extend it."""
    relay = EventsRelay()
    reply = relay.alarm()
    assert (reply.status, reply.body) == (204, b"")
    assert relay.hub.motion("cam1") and not relay.hub.motion("cam2")
    relay.advance(15)
    relay.alarm()
    relay.advance(19.9)
    assert relay.hub.motion("cam1")
    relay.advance(0.1)
    assert not relay.hub.motion("cam1")


@pytest.mark.parametrize(
    "path",
    [
        f"/webhook/cam1/{TOKEN2}",
        f"/webhook/cam1/{TOKEN1}x",
        "/webhook/cam1/",
        "/webhook/cam1",
        f"/webhook/cam9/{TOKEN1}",
        "/webhook/cam3/anything-at-all-0123456789",
        f"/webhook/cam1/{TOKEN1}/more",
        "/webhook/",
    ],
)
def test_wrong_camera_or_token_is_404_without_detail(path: str, log_events: list[dict[str, Any]]) -> None:
    """Unknown cameras, cameras without a token and wrong tokens all get the same bare 404 and change nothing."""
    relay = EventsRelay()
    reply = relay.request("POST", path, json.dumps(ALARM).encode(), {"Content-Type": "application/json"})
    assert (reply.status, reply.body) == (404, b"Not found.\n")
    assert not any(relay.hub.motion(c) for c in ("cam1", "cam2", "cam3"))
    text = " ".join(formatEvent(e) for e in log_events)
    assert TOKEN1 not in text and TOKEN2 not in text
    assert relay.alarm().status == 204  # and the receiver goes on serving


def test_trailing_slash_is_accepted() -> None:
    """A WEBHOOK_URL pasted with a trailing slash still works."""
    relay = EventsRelay()
    reply = relay.request("POST", f"/webhook/cam1/{TOKEN1}/", json.dumps(ALARM).encode())
    assert reply.status == 204


def test_not_post_is_405() -> None:
    """Only POST is served."""
    relay = EventsRelay()
    assert relay.request("GET", f"/webhook/cam1/{TOKEN1}").status == 405


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{not json",
        b"\xff\xfe\x00",
        b"[1, 2, 3]",
        b'"alarmEvent"',
        b'{"device": "atomcam"}',
        b'{"type": 7}',
        b"[" * 50_000 + b"]" * 50_000,
    ],
)
def test_malformed_bodies_are_400(body: bytes, log_events: list[dict[str, Any]]) -> None:
    """Bodies that are not a JSON object with a string type are 400 (even 50k-deep nesting), and the next alarm works."""
    relay = EventsRelay()
    reply = relay.webhook("cam1", TOKEN1, None, raw=body)
    assert reply.status == 400
    assert reply.body.startswith(b"Bad request")
    assert not relay.hub.motion("cam1")
    assert relay.alarm().status == 204


def test_body_over_64_kib_is_400() -> None:
    """A body over 64 KiB (the firmware can be set to POST videos) is 400; exactly 64 KiB is read."""
    relay = EventsRelay()
    padding = 64 * 1024 - len(json.dumps({"type": "alarmEvent", "pad": ""}))
    exact = json.dumps({"type": "alarmEvent", "pad": "x" * padding}).encode()
    assert len(exact) == 64 * 1024
    assert relay.webhook("cam1", TOKEN1, None, raw=exact + b" ").status == 400
    assert not relay.hub.motion("cam1")
    assert relay.webhook("cam1", TOKEN1, None, raw=exact).status == 204
    assert relay.hub.motion("cam1")


def test_flood_is_rate_limited_per_camera(log_events: list[dict[str, Any]]) -> None:
    """100 webhooks at once: 10 accepted, 90 refused with 429 and Retry-After; other cameras unaffected; the bucket refills."""
    relay = EventsRelay()
    started = time.perf_counter()
    replies = [relay.alarm() for _ in range(100)]
    elapsed = time.perf_counter() - started
    assert [r.status for r in replies].count(204) == 10
    limited = [r for r in replies if r.status == 429]
    assert len(limited) == 90
    assert limited[0].header("retry-after") == ["1"]
    assert relay.alarm("cam2", TOKEN2).status == 204
    relay.advance(1)
    assert [relay.alarm().status for _ in range(3)] == [204, 204, 429]
    floods = [e for e in log_events if "flood" in e.get("log_format", "")]
    assert len(floods) == 1  # one warning per flood, not one per request
    print(f"100 webhooks through twisted.web: {elapsed * 1000 / 100:.3f} ms each")


def test_other_event_types_are_accepted_and_ignored() -> None:
    """Timelapse, upload and record events and unknown types answer 204 and raise nothing."""
    relay = EventsRelay()
    path, _ = relay.create_pull_point()
    relay.pull(path)
    for kind in ("timelapseEvent", "timelapseFinish", "uploadVideoFinish", "uploadPictureFinish", "recordEvent", "new"):
        assert relay.webhook("cam1", TOKEN1, {"type": kind, "device": "atomcam", "data": "/media/mmc/x.mp4"}).status == 204
    relay.pump()
    assert relay.pull(path) == []


def test_recognition_raises_one_event_per_class() -> None:
    """A recognitionNotify naming a person and a dog raises Human and Animal pulses and states; one without a known class raises nothing."""
    relay = EventsRelay()
    path, _ = relay.create_pull_point()
    relay.pull(path)
    relay.webhook("cam1", TOKEN1, {"type": "recognitionNotify", "data": {"ai_tags": ["person", "dog"], "score": 0.9}})
    relay.webhook("cam1", TOKEN1, {"type": "recognitionNotify", "data": "1700000000,,0.93"})
    relay.pump()
    assert [(m[0], m[4]) for m in relay.pull(path)] == [
        ("tns1:RuleEngine/ObjectDetector/Object", {"ClassTypes": "Human"}),
        ("tns1:RuleEngine/MyRuleDetector/PeopleDetect", {"State": "true"}),
        ("tns1:RuleEngine/ObjectDetector/Object", {"ClassTypes": "Animal"}),
        ("tns1:RuleEngine/MyRuleDetector/DogCatDetect", {"State": "true"}),
    ]


@pytest.mark.parametrize(
    ("data", "classes"),
    [
        ("alarmType:person", ["Human"]),
        ("Person detected, then a CAR", ["Human", "Vehicle"]),
        ({"person": 0, "vehicle": 1, "pet": "false"}, ["Vehicle"]),
        ({"result": [{"label": "cat"}, {"label": "human"}]}, ["Animal", "Human"]),
        ("1700000000,,0.93 0.12", []),
        ("carpet", []),
        (None, []),
        (12, []),
        ({"a": {"b": {"c": "people"}}}, ["Human"]),
    ],
)
def test_recognition_word_mapping(data: Any, classes: list[str]) -> None:
    """The documented words map to Human, Vehicle and Animal; keys count only with truthy values; word boundaries matter."""
    assert recognised_classes(data) == classes


ENCODED_TOKEN1 = "".join(f"%{byte:02X}" for byte in TOKEN1.encode())


def fully_decoded(text: str) -> str:
    """``text`` with percent-escapes decoded until none is left."""
    while unquote(text) != text:
        text = unquote(text)
    return text


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (f"/webhook/cam1/{TOKEN1}", "/webhook/cam1/<token>"),
        (f"/webhook/cam1/{TOKEN1}/?x=1", "/webhook/cam1/<token>"),
        (f"/webhook//cam1/{TOKEN1}", "/webhook/cam1/<token>"),
        (f"//webhook/cam1/{TOKEN1}", "/webhook/cam1/<token>"),
        (f"/webhook/x/../cam1/{TOKEN1}", "/webhook/?/<token>"),
        (f"/webhook/cam1%2F{TOKEN1}", "/webhook/cam1/<token>"),
        (f"/webhook/cam1%252F{TOKEN1}", "/webhook/cam1/<token>"),
        (f"/webhook/cam1/{ENCODED_TOKEN1}", "/webhook/cam1/<token>"),
        (f"/%77ebhook/cam1/{TOKEN1}", "/webhook/cam1/<token>"),
        (f"/WEBHOOK/cam1/{TOKEN1}", "/webhook/cam1/<token>"),
        (f"/webhook?camera=cam1&token={TOKEN1}", "/webhook/?/<token>"),
        (f"/webhook/{TOKEN1}/cam1", "/webhook/?/<token>"),
        (f"/webhooks{TOKEN1}", "/webhook/?/<token>"),
        (f"/x/webhook/cam1/{TOKEN1}#top", "/webhook/cam1/<token>"),
    ],
)
def test_access_log_never_shows_the_token(uri: str, shown: str) -> None:
    """The relay's access log shows a webhook URL, however odd, as /webhook/<known camera or ?>/<token>."""
    relay = EventsRelay()
    request = DummyRequest([b"webhook"])
    request.uri = uri.encode()
    request.method = b"POST"
    request.clientproto = b"HTTP/1.1"
    request.code = 404
    request.sentLength = 0
    line = access_log_formatter(relay.hub)("[25/Nov/2026:00:00:00 +0000]", request)
    assert TOKEN1 not in fully_decoded(line)
    assert f'"POST {shown} HTTP/1.1" 404' in line
    request.uri = b"/onvif/device_service?x=%41"
    assert '"POST /onvif/device_service?x=%41 HTTP/1.1"' in access_log_formatter(relay.hub)("[t]", request)


def test_relay_access_log_never_shows_the_token(tmp_path: Path) -> None:
    """With the access log on, the relay's own Site logs odd webhook URLs (here /webhook/x/../cam1/TOKEN) without the token."""
    relay: Any = build_relay(parse_config(CONFIG + f"state_dir: {tmp_path}\n"), MemoryReactorClock(), access_log=True)
    site = relay_sites(relay)[0]
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    site.startFactory()
    try:
        for uri in (f"/webhook/x/../cam1/{TOKEN1}", f"/webhook/cam1%2F{TOKEN1}", f"/webhook/cam1/{TOKEN1}?a=b"):
            channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
            transport = StringTransport()
            channel.makeConnection(transport)
            channel.dataReceived(f"POST {uri} HTTP/1.1\r\nHost: relay\r\nContent-Length: 2\r\n\r\n{{}}".encode())
            channel.connectionLost(None)
            assert b" 404 " in transport.value() or b" 400 " in transport.value()
    finally:
        site.stopFactory()
        globalLogPublisher.removeObserver(observe)
    access = [line for line in lines if '"POST ' in line]
    assert len(access) == 3, lines
    assert not [line for line in lines if TOKEN1 in fully_decoded(line)]
