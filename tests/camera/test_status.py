"""GET /status: authentication and the JSON document's stable keys."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.helpers import settled
from tests.web.support import Site

CAMERA_KEYS = {"id", "name", "host", "model", "product", "ptz", "state", "reason", "since", "snapshot", "onvif",
               "streams", "events"}
STREAM_KEYS = {"name", "codec", "width", "height", "fps", "audio", "path", "ready", "readers", "rtsp", "webrtc", "hls"}
RELAY_KEYS = {"version", "started", "uptime", "mode", "onvif", "mediamtx", "subscriptions"}


def test_credentials_are_required() -> None:
    """Without credentials, or with wrong ones, /status is a 401 with Digest challenges and no camera data."""
    status, headers, body = Site().get("/status")
    assert status == 401 and b"swing" not in body
    assert any(v.startswith(b"Digest ") for v in headers.getRawHeaders(b"www-authenticate"))
    wrong = "Basic " + base64.b64encode(b"viewer:nope").decode()
    assert Site(http_basic=True).get("/status", {"Authorization": wrong})[0] == 401


def test_json_document_keys() -> None:
    """With Digest credentials, /status is JSON with the documented keys, mediamtx's path state and no secrets."""
    status, headers, body = Site().digest_get("/status")
    assert status == 200 and headers.getRawHeaders(b"content-type") == [b"application/json"]
    document = json.loads(body)
    assert set(document) == {"generated", "cameras", "relay"} and document["generated"] == "2023-11-14T22:13:20Z"
    swing, odd = document["cameras"]
    assert set(swing) == CAMERA_KEYS and set(swing["streams"][0]) == STREAM_KEYS
    assert {key: swing[key] for key in ("id", "model", "product", "ptz", "state", "reason", "since")} == {
        "id": "swing", "model": "ATOM_CAKP1JZJP", "product": "ATOM Cam Swing", "ptz": True, "state": "online",
        "reason": "HTTP and RTSP answer", "since": "2023-11-14T22:12:20Z",
    }
    assert swing["streams"][0] | {"ready": True, "readers": 3} == swing["streams"][0]
    assert swing["streams"][0]["rtsp"] == "rtsp://relay.test:8554/swing/main"
    assert swing["streams"][0]["webrtc"] == "http://relay.test:8889/swing/main/"
    assert swing["onvif"] == "http://relay.test:8080/onvif/device_service"
    assert odd["state"] == "offline" and odd["model"] is None and odd["streams"][1]["ready"] is None
    relay = document["relay"]
    assert set(relay) == RELAY_KEYS and relay["uptime"] == 3725 and relay["version"] == "1.2.3"
    assert relay["mediamtx"] == {"reachable": True, "version": "v1.20.1", "problem": None,
                                 "last_reconcile": {"time": "2023-11-14T22:13:18Z", "result": "3 paths registered"}}
    assert b"camera-secret" not in body and b"swing-token" not in body


def test_webhook_urls_only_for_administrators() -> None:
    """An Administrator's document has each camera's webhook URL; a User's has no webhook key at all."""
    document = json.loads(Site().digest_get("/status", user="admin")[2])
    assert [camera["webhook"] for camera in document["cameras"]] == [
        "http://relay.test:8080/webhook/swing/swing-token-0123456789", None,
    ]
    assert all("webhook" not in camera for camera in json.loads(Site().digest_get("/status")[2])["cameras"])


@pytest.mark.parametrize("how", [{"path": "/status?format=html"}, {"path": "/status", "headers": {"Accept": "text/html"}}])
def test_browsers_are_sent_to_the_dashboard(how: dict[str, Any]) -> None:
    """A browser (or ?format=html) asking /status is redirected to the dashboard at /."""
    status, headers, _ = Site().digest_get(**how)
    assert status == 303 and headers.getRawHeaders(b"location") == [b"/"]


def test_events_and_push_consumers() -> None:
    """Recent events are listed newest first; a push consumer shows only its scheme, host and port."""
    site = Site()
    site.hub.motion_detected("swing")
    site.clock.advance(5)
    site.hub.object_detected("swing", "Vehicle")
    settled(site.subscriptions.subscribe("http://192.0.2.50:8123/api/webhook/secret-id", "http://relay.test/sub/",
                                         (), site.clock.seconds() + 60, "admin@192.0.2.50"))
    document = json.loads(site.digest_get("/status")[2])
    assert [event["kind"] for event in document["cameras"][0]["events"]] == ["object: Vehicle", "motion"]
    assert document["relay"]["subscriptions"] == [{"kind": "push", "device": "", "user": "admin",
                                                   "from": "192.0.2.50", "consumer": "http://192.0.2.50:8123",
                                                   "expires_in": 60}]


def test_mediamtx_is_asked_once_for_many_pages() -> None:
    """Pages within PATHS_MAX_AGE share one /v3/paths/list call; an unreachable mediamtx makes the state unknown."""
    site = Site()
    for _ in range(3):
        assert site.digest_get("/status")[0] == 200
    assert site.lister.calls == 1
    site.fake.set_down(True)
    site.clock.advance(3)
    document = json.loads(site.digest_get("/status")[2])
    assert site.lister.calls == 2 and document["cameras"][0]["streams"][0]["ready"] is None
    assert document["relay"]["mediamtx"]["reachable"] is False
