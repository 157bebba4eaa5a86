"""GET /status: authentication, the JSON document and the HTML table."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from atomrelay.camera.digest import authorization, pick_challenge
from atomrelay.camera.health import HealthState
from atomrelay.camera.model import MODELS
from atomrelay.camera.status import StatusResource
from atomrelay.config import User
from atomrelay.onvif.security import Authenticator
from tests.camera.support import SWING, camera_config

USERS = {"viewer": User("viewer", "viewer-secret", "User")}
URL = "http://relay.test:8080/status"


class Models:
    def facts(self, camera_id: str) -> Any:
        return MODELS[SWING] if camera_id == "swing" else None


def relay(http_basic: bool = False) -> StubTreq:
    clock = Clock()
    clock.advance(1_700_000_000)
    cameras = [camera_config("swing", password="camera-secret", username="admin"),
               camera_config("odd", name="<b>Garage</b> & co")]
    states = {"swing": HealthState("online", "HTTP and RTSP answer", 1_700_000_000 - 60),
              "odd": HealthState("offline", "HTTP <timeout>", 1_699_999_000)}
    authenticator = Authenticator(clock, USERS.get, 300.0, http_basic)
    root = Resource()
    root.putChild(b"status", StatusResource(clock, authenticator, cameras, states.__getitem__, Models()))
    return StubTreq(root)


def get(stub: StubTreq, url: str = URL, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    results: list[Any] = []
    deferred = stub.get(url, headers={k: [v] for k, v in (headers or {}).items()})
    deferred.addCallback(lambda r: stub.content(r).addCallback(lambda body: (r.code, r.headers, body)))
    deferred.addBoth(results.append)
    stub.flush()
    return results[0]


def digest_get(stub: StubTreq, url: str = URL, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """GET answering the Digest challenge the way a browser would."""
    status, reply_headers, _ = get(stub, url)
    assert status == 401
    challenge = pick_challenge([v.decode() for v in reply_headers.getRawHeaders(b"www-authenticate")])
    path = url.split("relay.test:8080", 1)[1]
    answer = authorization(challenge, "GET", path, "viewer", "viewer-secret", 1)
    return get(stub, url, {"Authorization": answer, **(headers or {})})


def test_credentials_are_required() -> None:
    """Without credentials, or with wrong ones, /status is a 401 with Digest challenges and no camera data."""
    stub = relay()
    status, headers, body = get(stub)
    assert status == 401 and b"swing" not in body
    assert any(v.startswith(b"Digest ") for v in headers.getRawHeaders(b"www-authenticate"))
    wrong = "Basic " + base64.b64encode(b"viewer:nope").decode()
    assert get(relay(http_basic=True), headers={"Authorization": wrong})[0] == 401


def test_json_report() -> None:
    """With Digest credentials, /status is JSON with every camera's state, reason, model and since time."""
    status, headers, body = digest_get(relay())
    assert status == 200 and headers.getRawHeaders(b"content-type") == [b"application/json"]
    report = json.loads(body)
    assert report["generated"] == "2023-11-14T22:13:20Z"
    swing, odd = report["cameras"]
    assert swing == {
        "id": "swing", "name": "swing cam", "host": "127.0.0.1", "model": SWING, "product": "ATOM Cam Swing",
        "ptz": True, "state": "online", "reason": "HTTP and RTSP answer", "since": "2023-11-14T22:12:20Z",
    }
    assert odd["state"] == "offline" and odd["model"] is None
    assert b"camera-secret" not in body


@pytest.mark.parametrize("how", [{"url": URL + "?format=html"}, {"headers": {"Accept": "text/html,*/*"}}])
def test_html_table_escapes_names(how: dict[str, Any]) -> None:
    """Browsers (or ?format=html) get an HTML table in which camera names and reasons are escaped."""
    status, headers, body = digest_get(relay(), **how)
    assert status == 200 and headers.getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]
    page = body.decode()
    assert "<table>" in page and "&lt;b&gt;Garage&lt;/b&gt; &amp; co" in page and "HTTP &lt;timeout&gt;" in page
    assert "<b>Garage</b>" not in page


def test_basic_when_enabled() -> None:
    """With onvif.http_basic on, Basic credentials work too."""
    good = "Basic " + base64.b64encode(b"viewer:viewer-secret").decode()
    status, _, body = get(relay(http_basic=True), headers={"Authorization": good})
    assert status == 200 and json.loads(body)["cameras"][0]["id"] == "swing"
