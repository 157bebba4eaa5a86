"""The mediamtx Control API test double, driven through StubTreq with a Clock."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from atomrelay.sim.mediamtx import FakeMediamtx, RecordedWrite, listen_mediamtx

BASE = "http://mediamtx.invalid:9997"
CAMERA_SOURCE = {"source": "rtsp://192.0.2.10:8554/video0_unicast", "sourceOnDemand": True, "rtspTransport": "tcp"}


def fired(d: Deferred[Any]) -> Any:
    """The result of a Deferred that must already have fired (re-raising a failure)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def call(stub: StubTreq, method: str, path: str, payload: Any = None, raw: bytes | None = None,
         **kwargs: Any) -> tuple[int, Any, Any]:
    """Send one request and return (status, decoded JSON or text body, response)."""
    data = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else None)
    response = fired(stub.request(method, BASE + path, data=data, **kwargs))
    content = stub.content(response)
    stub.flush()
    text = fired(content)
    kind = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
    return response.code, json.loads(text) if kind.startswith(b"application/json") else text, response


def api(**kwargs: Any) -> tuple[FakeMediamtx, StubTreq, Clock]:
    """A fake mediamtx with its StubTreq and Clock."""
    clock = Clock()
    fake = FakeMediamtx(clock, **kwargs)
    return fake, StubTreq(fake), clock


def error(message: str) -> dict[str, str]:
    """mediamtx's error body."""
    return {"status": "error", "error": message}


OK = {"status": "ok"}
UNMARSHAL = "json: cannot unmarshal"


def test_info_reports_version_and_start_time() -> None:
    """GET /v3/info returns the version and the clock time the fake started, as RFC 3339 UTC."""
    clock = Clock()
    clock.advance(1764079200.25)
    stub = StubTreq(FakeMediamtx(clock, version="v1.19.0"))
    assert call(stub, "GET", "/v3/info")[:2] == (200, {"version": "v1.19.0", "started": "2025-11-25T14:00:00.25Z"})


def test_global_config_has_the_fields_that_matter() -> None:
    """GET /v3/config/global/get returns a mediamtx.default.yml-shaped GlobalConf with the API on."""
    _, stub, _ = api()
    status, conf, _ = call(stub, "GET", "/v3/config/global/get")
    assert status == 200
    assert conf["api"] is True and conf["rtsp"] is True and conf["srt"] is True
    assert conf["rtspTransports"] == ["udp", "multicast", "tcp"]
    assert conf["readTimeout"] == "10s" and conf["writeQueueSize"] == 512
    assert conf["rtspAddress"] == ":8554" and conf["srtAddress"] == ":8890"
    assert conf["authMethod"] == "internal"
    assert conf["hlsMuxerCloseAfter"] == "1m0s"


def test_add_stores_full_path_conf_with_defaults() -> None:
    """An added path reads back as the full PathConf: its name, the fields set, and defaults for the rest."""
    fake, stub, _ = api()
    assert call(stub, "POST", "/v3/config/paths/add/living/main", CAMERA_SOURCE)[:2] == (200, OK)
    status, conf, _ = call(stub, "GET", "/v3/config/paths/get/living/main")
    assert status == 200
    assert conf["name"] == "living/main"
    assert conf["source"] == CAMERA_SOURCE["source"] and conf["sourceOnDemand"] is True
    assert conf["rtspTransport"] == "tcp"
    assert conf["sourceOnDemandStartTimeout"] == "10s" and conf["runOnDemand"] == ""
    assert conf["recordSegmentDuration"] == "1h0m0s" and conf["recordDeleteAfter"] == "1d"
    assert conf["overridePublisher"] is True and conf["rtspUDPSourcePortRange"] == [32768, 60999]
    assert "sourceProtocol" not in conf
    assert fake.paths["living/main"] == conf


def test_default_source_is_publisher() -> None:
    """An empty body adds a path whose source is the default `publisher`."""
    _, stub, _ = api()
    assert call(stub, "POST", "/v3/config/paths/add/pub", {})[0] == 200
    assert call(stub, "GET", "/v3/config/paths/get/pub")[1]["source"] == "publisher"


def test_add_existing_path_is_400() -> None:
    """Adding a name that exists answers 400 `path already exists` and keeps the first configuration."""
    fake, stub, _ = api()
    call(stub, "POST", "/v3/config/paths/add/cam", CAMERA_SOURCE)
    again = call(stub, "POST", "/v3/config/paths/add/cam", {"source": "publisher"})
    assert again[:2] == (400, error("path already exists"))
    assert fake.paths["cam"]["source"] == CAMERA_SOURCE["source"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"source":"publisher","xyz":1}', 'json: unknown field "xyz"'),
        (b"", "unexpected end of JSON input"),
        (b"{bad", "invalid character 'b' looking for beginning of object key string"),
        (b'{"source":}', "invalid character '}' looking for beginning of value"),
        (b"{} x", "invalid character 'x' after top-level value"),
        (b'{"sourceOnDemand":"yes"}', f"{UNMARSHAL} string into Go struct field .sourceOnDemand of type bool"),
        (b'{"source":5}', f"{UNMARSHAL} number into Go struct field .source of type string"),
        (b'{"maxReaders":1.5}', f"{UNMARSHAL} number 1.5 into Go struct field .maxReaders of type int"),
        (b'{"runOnDemandRestart":"true"}', f"{UNMARSHAL} string into Go struct field .runOnDemandRestart of type bool"),
        (
            b'{"runOnDemandStartTimeout":10}',
            f"{UNMARSHAL} number into Go struct field .runOnDemandStartTimeout of type string",
        ),
        (b'{"sourceOnDemandCloseAfter":"soon"}', 'time: invalid duration "soon"'),
        (b'{"runOnDemandCloseAfter":"10"}', 'time: missing unit in duration "10"'),
        (b'{"rtspTransport":"carrier-pigeon"}', "invalid protocol 'carrier-pigeon'"),
        (b'{"recordFormat":"avi"}', "invalid record format 'avi'"),
        (b"[]", f"{UNMARSHAL} array into Go value of type conf.OptionalPath"),
    ],
)
def test_add_rejects_bad_bodies_like_mediamtx(raw: bytes, message: str) -> None:
    """Malformed or mistyped bodies answer 400 with the text mediamtx's Go decoder produces, storing nothing."""
    fake, stub, _ = api()
    assert call(stub, "POST", "/v3/config/paths/add/cam", raw=raw)[:2] == (400, error(message))
    assert fake.paths == {}


@pytest.mark.parametrize(
    ("path", "payload", "message"),
    [
        ("cam", {"sourceOnDemand": True}, "'sourceOnDemand' is useless when source is 'publisher'"),
        ("cam", {"source": "bogus"}, "invalid source: 'bogus'"),
        ("cam", {"source": "redirect"}, "source redirect must be filled"),
        (
            "bad%20name",
            {},
            "invalid path name 'bad name': "
            "can contain only alphanumeric characters, underscore, dot, tilde, minus or slash",
        ),
        ("cam/", {}, "invalid path name 'cam/': can't end with a slash"),
        (
            "~^cam.*$",
            {"source": "rtsp://192.0.2.1/x"},
            "a path with a regular expression (or path 'all') and a static source "
            "must have 'sourceOnDemand' set to true",
        ),
    ],
)
def test_add_validates_the_resulting_conf(path: str, payload: dict[str, Any], message: str) -> None:
    """Well-typed but invalid configurations answer 400 with mediamtx's validation text."""
    fake, stub, _ = api()
    assert call(stub, "POST", f"/v3/config/paths/add/{path}", payload)[:2] == (400, error(message))
    assert fake.paths == {}


def test_field_names_match_case_insensitively_and_null_means_unset() -> None:
    """Like Go's decoder, keys match fields case-insensitively and null leaves a field at its default."""
    _, stub, _ = api()
    payload = {
        "SOURCE": "rtsp://192.0.2.1/x",
        "sourceondemand": True,
        "runOnDemand": None,
        "recordSegmentDuration": "90m",
    }
    assert call(stub, "POST", "/v3/config/paths/add/cam", payload)[0] == 200
    conf = call(stub, "GET", "/v3/config/paths/get/cam")[1]
    assert conf["source"] == "rtsp://192.0.2.1/x" and conf["sourceOnDemand"] is True
    assert conf["runOnDemand"] == "" and conf["recordSegmentDuration"] == "1h30m0s"


def test_deprecated_fields_are_shown_only_when_set() -> None:
    """A deprecated field set by a client reads back, and its modern counterpart follows it."""
    _, stub, _ = api()
    call(stub, "POST", "/v3/config/paths/add/cam", {"source": "rtsp://192.0.2.1/x", "sourceProtocol": "tcp"})
    conf = call(stub, "GET", "/v3/config/paths/get/cam")[1]
    assert conf["sourceProtocol"] == "tcp" and conf["rtspTransport"] == "tcp"
    assert "readUser" not in conf


def test_get_missing_and_empty_name() -> None:
    """A missing path answers 404 `path configuration not found`; an empty name answers 400 `invalid name`."""
    _, stub, _ = api()
    assert call(stub, "GET", "/v3/config/paths/get/nope")[:2] == (404, error("path configuration not found"))
    assert call(stub, "GET", "/v3/config/paths/get/")[:2] == (400, error("invalid name"))


def test_percent_encoded_slash_in_name() -> None:
    """Names are percent-decoded, so living%2Fmain and living/main are the same path."""
    _, stub, _ = api()
    call(stub, "POST", "/v3/config/paths/add/living%2Fmain", CAMERA_SOURCE)
    assert call(stub, "GET", "/v3/config/paths/get/living/main")[1]["name"] == "living/main"


def test_patch_merges_fields() -> None:
    """PATCH changes only the fields given and keeps the others."""
    fake, stub, _ = api()
    call(stub, "POST", "/v3/config/paths/add/cam", CAMERA_SOURCE)
    assert call(stub, "PATCH", "/v3/config/paths/patch/cam", {"sourceOnDemandStartTimeout": "20s"})[:2] == (200, OK)
    conf = fake.paths["cam"]
    assert conf["sourceOnDemandStartTimeout"] == "20s" and conf["rtspTransport"] == "tcp"


def test_patch_missing_is_404_and_invalid_patch_changes_nothing() -> None:
    """PATCH on a missing path is 404 `path not found`; a patch that fails validation leaves the path as it was."""
    fake, stub, _ = api()
    assert call(stub, "PATCH", "/v3/config/paths/patch/nope", {})[:2] == (404, error("path not found"))
    call(stub, "POST", "/v3/config/paths/add/cam", CAMERA_SOURCE)
    status, body, _ = call(stub, "PATCH", "/v3/config/paths/patch/cam", {"source": "publisher"})
    assert (status, body) == (400, error("'sourceOnDemand' is useless when source is 'publisher'"))
    assert fake.paths["cam"]["source"] == CAMERA_SOURCE["source"]


def test_replace_resets_unset_fields() -> None:
    """Replace swaps the whole configuration: fields not given go back to their defaults."""
    fake, stub, _ = api()
    call(stub, "POST", "/v3/config/paths/add/cam", CAMERA_SOURCE)
    replacement = {"source": "rtsp://192.0.2.1/y", "sourceOnDemand": True}
    assert call(stub, "POST", "/v3/config/paths/replace/cam", replacement)[0] == 200
    conf = fake.paths["cam"]
    assert conf["source"] == "rtsp://192.0.2.1/y" and conf["rtspTransport"] == "automatic"


def test_replace_on_missing_path_depends_on_version() -> None:
    """Replace on a missing path creates it by default and answers 404 with replace_creates_missing=False."""
    fake, stub, _ = api()
    assert call(stub, "POST", "/v3/config/paths/replace/new", CAMERA_SOURCE)[:2] == (200, OK)
    assert "new" in fake.paths
    old, old_stub, _ = api(replace_creates_missing=False)
    assert call(old_stub, "POST", "/v3/config/paths/replace/new", CAMERA_SOURCE)[:2] == (404, error("path not found"))
    assert old.paths == {}


def test_replace_absent_in_old_versions() -> None:
    """Without has_replace the replace route is an unknown route: 404 `404 page not found`."""
    fake, stub, _ = api(has_replace=False)
    call(stub, "POST", "/v3/config/paths/add/cam", CAMERA_SOURCE)
    replaced = call(stub, "POST", "/v3/config/paths/replace/cam", {"source": "publisher"})
    assert replaced[:2] == (404, b"404 page not found")
    assert fake.paths["cam"]["source"] == CAMERA_SOURCE["source"]


def test_delete() -> None:
    """DELETE removes a path from config and runtime lists; deleting a missing path is 404."""
    fake, stub, _ = api()
    call(stub, "POST", "/v3/config/paths/add/cam", CAMERA_SOURCE)
    assert call(stub, "DELETE", "/v3/config/paths/delete/cam")[:2] == (200, OK)
    assert fake.paths == {}
    assert call(stub, "GET", "/v3/paths/list")[1]["items"] == []
    assert call(stub, "DELETE", "/v3/config/paths/delete/cam")[:2] == (404, error("path not found"))


def test_config_list_paging() -> None:
    """config/paths/list sorts by name and pages with itemsPerPage and page as mediamtx does."""
    _, stub, _ = api()
    for name in ("e", "a", "d", "c", "b"):
        call(stub, "POST", f"/v3/config/paths/add/{name}", {})
    status, page, _ = call(stub, "GET", "/v3/config/paths/list?itemsPerPage=2&page=1")
    assert status == 200
    assert (page["itemCount"], page["pageCount"]) == (5, 3)
    assert [item["name"] for item in page["items"]] == ["c", "d"]
    assert call(stub, "GET", "/v3/config/paths/list?itemsPerPage=2&page=7")[1]["items"] == []
    everything = call(stub, "GET", "/v3/config/paths/list")[1]["items"]
    assert [item["name"] for item in everything] == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("itemsPerPage=0", "invalid items per page"),
        ("itemsPerPage=abc", 'strconv.ParseUint: parsing "abc": invalid syntax'),
        ("page=-1", 'strconv.ParseUint: parsing "-1": invalid syntax'),
        ("page=9999999999", 'strconv.ParseUint: parsing "9999999999": value out of range'),
    ],
)
def test_bad_paging_is_400(query: str, message: str) -> None:
    """Bad paging parameters answer 400 with mediamtx's texts."""
    _, stub, _ = api()
    assert call(stub, "GET", f"/v3/config/paths/list?{query}")[:2] == (400, error(message))


def test_empty_list_has_zero_pages() -> None:
    """With no paths the lists report zero items and zero pages."""
    _, stub, _ = api()
    assert call(stub, "GET", "/v3/config/paths/list")[1] == {"itemCount": 0, "pageCount": 0, "items": []}
    assert call(stub, "GET", "/v3/paths/list")[1] == {"itemCount": 0, "pageCount": 0, "items": []}


def test_runtime_paths_follow_configuration_and_set_ready() -> None:
    """Every configured non-regexp path is listed not ready until set_ready marks it ready with readers."""
    fake, stub, clock = api()
    call(stub, "POST", "/v3/config/paths/add/living/main", CAMERA_SOURCE)
    call(stub, "POST", "/v3/config/paths/add/~^any.*$", {})
    item = call(stub, "GET", "/v3/paths/list")[1]["items"][0]
    assert call(stub, "GET", "/v3/paths/list")[1]["itemCount"] == 1
    assert item["name"] == "living/main" and item["confName"] == "living/main"
    assert item["ready"] is False and item["readyTime"] is None and item["source"] is None
    assert item["readers"] == [] and item["tracks"] == []
    clock.advance(30)
    fake.set_ready("living/main", readers=["rtspSession", "webRTCSession"])
    status, item, _ = call(stub, "GET", "/v3/paths/get/living/main")
    assert status == 200
    assert item["ready"] is True and item["available"] is True and item["readyTime"] == "1970-01-01T00:00:30Z"
    assert item["source"] == {"type": "rtspSource", "id": ""}
    assert [reader["type"] for reader in item["readers"]] == ["rtspSession", "webRTCSession"]
    assert item["tracks"] == ["H264"]
    with pytest.raises(KeyError):
        fake.set_ready("nope")
    with pytest.raises(ValueError, match="PathReaderType"):
        fake.set_ready("living/main", readers=["hlsMuxer"])
    assert call(stub, "GET", "/v3/paths/get/nope")[:2] == (404, error("path not found"))


def test_changing_a_path_resets_its_runtime_state() -> None:
    """A patch that changes a ready path makes it not ready, as mediamtx recreates the path."""
    fake, stub, _ = api()
    call(stub, "POST", "/v3/config/paths/add/cam", CAMERA_SOURCE)
    fake.set_ready("cam")
    call(stub, "PATCH", "/v3/config/paths/patch/cam", {"rtspTransport": "udp"})
    assert call(stub, "GET", "/v3/paths/get/cam")[1]["ready"] is False


def test_restart_forgets_api_paths_and_bumps_started() -> None:
    """restart() drops API-added paths and edits, keeps paths from the config file, and moves `started`."""
    clock = Clock()
    fake = FakeMediamtx(clock, file_paths={"all_others": {}, "fixed": {"source": "publisher"}})
    stub = StubTreq(fake)
    call(stub, "POST", "/v3/config/paths/add/cam", CAMERA_SOURCE)
    call(stub, "PATCH", "/v3/config/paths/patch/fixed", {"maxReaders": 3})
    clock.advance(90)
    fake.restart()
    assert sorted(fake.paths) == ["all_others", "fixed"]
    assert fake.paths["fixed"]["maxReaders"] == 0
    assert call(stub, "GET", "/v3/info")[1]["started"] == "1970-01-01T00:01:30Z"
    assert [item["name"] for item in call(stub, "GET", "/v3/paths/list")[1]["items"]] == ["fixed"]


def test_set_down_closes_connections_without_answer() -> None:
    """While down every request fails at the connection level and nothing is recorded; set_down(False) restores it."""
    fake, stub, _ = api()
    fake.set_down(True)
    results: list[Any] = []
    stub.post(BASE + "/v3/config/paths/add/cam", data=b"{}").addBoth(results.append)
    stub.flush()
    assert isinstance(results[0], Failure)
    assert fake.writes == [] and fake.paths == {}
    fake.set_down(False)
    assert call(stub, "GET", "/v3/info")[0] == 200


def test_writes_are_recorded_and_reads_are_not() -> None:
    """Every non-GET request lands in `writes` with its method, raw path and body; GETs do not."""
    fake, stub, _ = api()
    call(stub, "GET", "/v3/config/paths/list")
    call(stub, "GET", "/v3/paths/list")
    assert fake.writes == []
    call(stub, "POST", "/v3/config/paths/add/living%2Fmain", raw=b'{"source":"publisher"}')
    call(stub, "PATCH", "/v3/config/paths/patch/nope", raw=b"{}")
    call(stub, "DELETE", "/v3/config/paths/delete/living/main")
    assert fake.writes == [
        RecordedWrite("POST", "/v3/config/paths/add/living%2Fmain", b'{"source":"publisher"}'),
        RecordedWrite("PATCH", "/v3/config/paths/patch/nope", b"{}"),
        RecordedWrite("DELETE", "/v3/config/paths/delete/living/main", b""),
    ]


def basic(user: str, password: str) -> dict[str, str]:
    """An Authorization header for HTTP Basic."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_required_when_configured() -> None:
    """With credentials set, no credentials get 401 plus a challenge, wrong ones a bare 401, right ones through."""
    fake, stub, _ = api(username="relay", password="hunter2")
    status, body, response = call(stub, "GET", "/v3/info")
    assert (status, body) == (401, error("authentication error"))
    assert response.headers.getRawHeaders(b"www-authenticate") == [b'Basic realm="mediamtx"']
    status, body, response = call(stub, "GET", "/v3/info", headers=basic("relay", "wrong"))
    assert (status, body) == (401, error("authentication error"))
    assert response.headers.getRawHeaders(b"www-authenticate") is None
    assert call(stub, "GET", "/v3/info", headers=basic("relay", "hunter2"))[0] == 200
    assert call(stub, "POST", "/v3/config/paths/add/cam", {}, headers=basic("relay", "nope"))[0] == 401
    assert fake.paths == {}


def test_auth_failure_pause_delays_the_answer() -> None:
    """With auth_failure_pause set, a wrong password is answered only after that many clock seconds."""
    fake, stub, clock = api(username="relay", password="hunter2")
    fake.auth_failure_pause = 2.0
    results: list[Any] = []
    stub.get(BASE + "/v3/info", headers=basic("relay", "wrong")).addBoth(results.append)
    stub.flush()
    assert results == []
    clock.advance(2.0)
    stub.flush()
    assert results[0].code == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v3/config/paths/add/cam"),
        ("POST", "/v3/config/paths/get/cam"),
        ("PUT", "/v3/config/paths/patch/cam"),
        ("GET", "/v3/nothing"),
        ("GET", "/v2/paths/list"),
    ],
)
def test_wrong_method_or_route_is_gin_404(method: str, path: str) -> None:
    """Unknown routes and wrong methods both answer gin's plain-text 404, never 405."""
    _, stub, _ = api()
    assert call(stub, method, path)[:2] == (404, b"404 page not found")


def test_json_is_html_escaped_like_go() -> None:
    """Responses escape <, > and & the way Go's encoding/json does."""
    _, stub, _ = api()
    call(stub, "POST", "/v3/config/paths/add/cam", {"runOnInit": "a && b > c"})
    response = fired(stub.get(BASE + "/v3/config/paths/get/cam"))
    content = stub.content(response)
    stub.flush()
    assert b'"runOnInit":"a \\u0026\\u0026 b \\u003e c"' in fired(content)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_listen_mediamtx_serves_on_loopback() -> None:
    """listen_mediamtx serves the fake on a real loopback port."""
    from twisted.internet import reactor

    fake = FakeMediamtx(reactor)
    port = listen_mediamtx(reactor, fake)
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/v3/config/paths/add/cam"
        response = await treq.post(url, data=b"{}")
        assert response.code == 200
        assert await response.json() == OK
        assert "cam" in fake.paths
    finally:
        await port.stopListening()
