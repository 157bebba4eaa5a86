"""MediamtxClient against the fake mediamtx (StubTreq, Clock) and against broken servers."""

from __future__ import annotations

from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from atomrelay.config import MediamtxConfig
from atomrelay.mediamtx.client import (
    MAX_REPLY_BYTES,
    MediamtxAuthFailed,
    MediamtxBadReply,
    MediamtxClient,
    MediamtxHTTPError,
    MediamtxUnavailable,
    PathExists,
    PathNotFound,
    RouteNotFound,
)
from atomrelay.sim.mediamtx import FakeMediamtx

from .support import result_of


class Recorder(Resource):
    """Records every request URI, then lets the fake (or a canned answer) reply."""

    isLeaf = True

    def __init__(self, fake: Resource | None = None, answer: tuple[int, bytes] | None = None) -> None:
        super().__init__()
        self.fake = fake
        self.answer = answer
        self.uris: list[str] = []
        self.hang = False

    def render(self, request: Any) -> Any:
        """Record, then answer."""
        self.uris.append(request.uri.decode())
        if self.hang:
            return NOT_DONE_YET
        if self.answer is not None:
            status, body = self.answer
            request.setResponseCode(status)
            return body
        assert self.fake is not None
        return self.fake.render(request)


def setup(
    answer: tuple[int, bytes] | None = None, config: MediamtxConfig | None = None, **fake_options: Any
) -> tuple[MediamtxClient, FakeMediamtx, Recorder, StubTreq, Clock]:
    """A client talking to the fake (or a canned answer) through a Recorder."""
    clock = Clock()
    fake = FakeMediamtx(clock, **fake_options)
    recorder = Recorder(fake, answer)
    stub = StubTreq(recorder)
    client = MediamtxClient(stub, config or MediamtxConfig(), clock=clock)
    return client, fake, recorder, stub, clock


def run(deferred: Deferred[Any], stub: StubTreq) -> Any:
    """Flush in-memory traffic and return the result (or raise the failure)."""
    stub.flush()
    return result_of(deferred)


def test_info_returns_version_and_start_time() -> None:
    """info() returns the fake's version and RFC 3339 start time."""
    client, fake, _, stub, _ = setup(version="v1.20.1")
    info = run(client.info(), stub)
    assert info == {"version": "v1.20.1", "started": "1970-01-01T00:00:00Z"}


def test_info_makes_the_version_printable() -> None:
    """A version with a control character (it is shown on the dashboard and in log lines) comes back printable."""
    client, _, _, stub, _ = setup(version="v1.20.1\x01\x1b")
    assert run(client.info(), stub)["version"] == "v1.20.1??"


def test_global_config_is_returned() -> None:
    """global_config() returns the global configuration object."""
    client, _, _, stub, _ = setup()
    conf = run(client.global_config(), stub)
    assert conf["api"] is True and conf["rtspAddress"] == ":8554"


def test_basic_auth_is_sent_and_refusal_is_typed() -> None:
    """Configured credentials are sent as Basic auth; wrong ones raise MediamtxAuthFailed with a hint."""
    good = MediamtxConfig(username="relay", password="s3cret")
    client, _, _, stub, _ = setup(config=good, username="relay", password="s3cret")
    assert run(client.info(), stub)["version"] == "v1.20.1"
    bad = MediamtxConfig(username="relay", password="wrong")
    client, _, _, stub, _ = setup(config=bad, username="relay", password="s3cret")
    with pytest.raises(MediamtxAuthFailed) as caught:
        run(client.info(), stub)
    assert caught.value.status == 401
    assert "check mediamtx.username/password" in str(caught.value)


def test_path_names_with_slashes_go_into_the_url_as_they_are() -> None:
    """add/replace/delete put 'cam1/main' into the route literally, as mediamtx's *name routes expect."""
    client, fake, recorder, stub, _ = setup()
    run(client.add_path("cam1/main", {"source": "publisher"}), stub)
    run(client.replace_path("cam1/main", {"source": "publisher"}), stub)
    assert run(client.list_path_confs(), stub)["cam1/main"]["name"] == "cam1/main"
    run(client.delete_path("cam1/main"), stub)
    assert [uri for uri in recorder.uris if "/list" not in uri] == [
        "/v3/config/paths/add/cam1/main",
        "/v3/config/paths/replace/cam1/main",
        "/v3/config/paths/delete/cam1/main",
    ]
    assert fake.paths == {}


def test_typed_path_errors() -> None:
    """Existing, missing and unsupported-route cases raise PathExists, PathNotFound and RouteNotFound."""
    client, _, _, stub, _ = setup(has_replace=False)
    run(client.add_path("a/b", {}), stub)
    with pytest.raises(PathExists) as exists:
        run(client.add_path("a/b", {}), stub)
    assert exists.value.status == 400 and exists.value.message == "path already exists"
    with pytest.raises(PathNotFound):
        run(client.delete_path("x/y"), stub)
    with pytest.raises(RouteNotFound) as route:
        run(client.replace_path("a/b", {}), stub)
    assert route.value.status == 404 and "404 page not found" in str(route.value)


def test_replace_on_missing_path_depends_on_the_server() -> None:
    """replace_path creates a missing path on v1.20.1 and raises PathNotFound where replace does not create."""
    client, fake, _, stub, _ = setup(replace_creates_missing=True)
    run(client.replace_path("n/m", {"source": "publisher"}), stub)
    assert "n/m" in fake.paths
    client, fake, _, stub, _ = setup(replace_creates_missing=False)
    with pytest.raises(PathNotFound):
        run(client.replace_path("n/m", {"source": "publisher"}), stub)
    assert fake.paths == {}


def test_server_validation_error_text_is_kept() -> None:
    """A 400 from mediamtx's validation carries its own error text."""
    client, _, _, stub, _ = setup()
    with pytest.raises(MediamtxHTTPError) as caught:
        run(client.add_path("a/b", {"source": "publisher", "sourceOnDemand": True}), stub)
    assert caught.value.status == 400
    assert caught.value.message == "'sourceOnDemand' is useless when source is 'publisher'"
    assert "POST /v3/config/paths/add/a/b" in str(caught.value)


def test_list_path_confs_follows_every_page() -> None:
    """list_path_confs requests pages until pageCount and returns all 250 paths by name."""
    client, fake, recorder, stub, _ = setup()
    for index in range(250):
        run(client.add_path(f"cam{index:03d}/main", {}), stub)
    recorder.uris.clear()
    confs = run(client.list_path_confs(), stub)
    assert len(confs) == 250 and confs["cam249/main"]["name"] == "cam249/main"
    assert recorder.uris == [f"/v3/config/paths/list?page={p}&itemsPerPage=100" for p in range(3)]


def test_list_paths_returns_runtime_state() -> None:
    """list_paths returns runtime paths with their ready flag."""
    client, fake, _, stub, _ = setup()
    run(client.add_path("cam1/main", {}), stub)
    fake.set_ready("cam1/main", readers=["rtspSession"])
    paths = run(client.list_paths(), stub)
    assert [(p["name"], p["ready"], len(p["readers"])) for p in paths] == [("cam1/main", True, 1)]


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        ((500, b'{"status":"error","error":"boom"}'), MediamtxHTTPError, "GET /v3/info: HTTP 500: boom"),
        ((502, b"<html>Bad Gateway</html>"), MediamtxHTTPError, "HTTP 502: <html>Bad Gateway</html>"),
        ((200, b"\x00\xffgarbage"), MediamtxBadReply, "reply is not JSON"),
        ((200, b"[1, 2]"), MediamtxBadReply, "expected a JSON object, got [1, 2]"),
        ((200, b'{"version": "v1"}'), MediamtxBadReply, "expected string 'version' and 'started'"),
        ((200, b""), MediamtxBadReply, "reply is not JSON: (empty)"),
    ],
)
def test_bad_info_replies_raise_specific_errors(answer: tuple[int, bytes], error: type, text: str) -> None:
    """Error statuses, garbage and wrong shapes each raise a specific error whose text says what was wrong."""
    client, _, _, stub, _ = setup(answer=answer)
    with pytest.raises(error) as caught:
        run(client.info(), stub)
    assert text in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [b'{"items": [], "pageCount": "1"}', b'{"items": [1], "pageCount": 1}', b'{"items": [{"x": 1}], "pageCount": 1}',
     b'{"pageCount": 1}'],
)
def test_malformed_path_lists_raise_bad_reply(body: bytes) -> None:
    """Path lists with wrong types, non-object items or nameless items raise MediamtxBadReply."""
    client, _, _, stub, _ = setup(answer=(200, body))
    with pytest.raises(MediamtxBadReply):
        run(client.list_path_confs(), stub)


def test_oversized_reply_is_refused() -> None:
    """A reply larger than the limit raises MediamtxBadReply instead of filling memory."""
    client, _, _, stub, _ = setup(answer=(200, b" " * (MAX_REPLY_BYTES + 10)))
    with pytest.raises(MediamtxBadReply, match="larger than"):
        run(client.info(), stub)


def test_connection_closed_without_answer_is_unavailable() -> None:
    """A server that drops the connection raises MediamtxUnavailable naming the URL."""
    client, fake, _, stub, _ = setup()
    fake.set_down(True)
    with pytest.raises(MediamtxUnavailable) as caught:
        run(client.info(), stub)
    assert "cannot reach mediamtx at http://127.0.0.1:9997" in str(caught.value)
    assert "connection closed without an answer" in str(caught.value)


def test_connection_refused_is_unavailable() -> None:
    """A refused connection raises MediamtxUnavailable that says so."""

    class Refusing:
        def request(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
            return fail(ConnectionRefusedError("127.0.0.1:9997"))

    client = MediamtxClient(Refusing(), MediamtxConfig(), clock=Clock())  # type: ignore[arg-type]
    with pytest.raises(MediamtxUnavailable, match="Connection was refused"):
        result_of(client.info())


def test_no_answer_times_out_after_the_timeout() -> None:
    """A request with no answer fails with MediamtxUnavailable exactly when the timeout passes."""
    client, _, recorder, stub, clock = setup()
    recorder.hang = True
    client = MediamtxClient(stub, MediamtxConfig(), timeout=5.0, clock=clock)
    deferred = client.info()
    stub.flush()
    clock.advance(4.9)
    assert not deferred.called
    clock.advance(0.1)
    with pytest.raises(MediamtxUnavailable, match="no answer from mediamtx within 5s"):
        result_of(deferred)
    assert clock.getDelayedCalls() == []


def test_cancellation_by_the_caller_stays_a_cancellation() -> None:
    """Cancelling a call yields CancelledError (not a misleading timeout) and clears the timer."""
    client, _, recorder, stub, clock = setup()
    recorder.hang = True
    deferred = client.info()
    stub.flush()
    deferred.cancel()
    with pytest.raises(CancelledError):
        result_of(deferred)
    assert clock.getDelayedCalls() == []


def test_without_a_clock_treq_times_the_request_out() -> None:
    """Without a clock the timeout goes to treq, and treq's cancellation is reported as no answer."""
    seen: dict[str, Any] = {}
    pending: Deferred[Any] = Deferred()

    class Recording:
        def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
            seen.update(kwargs, method=method, url=url)
            return pending

    client = MediamtxClient(Recording(), MediamtxConfig(), timeout=3.0)  # type: ignore[arg-type]
    deferred = client.info()
    assert seen["timeout"] == 3.0 and seen["url"] == "http://127.0.0.1:9997/v3/info"
    pending.cancel()
    with pytest.raises(MediamtxUnavailable, match="no answer from mediamtx within 3s"):
        result_of(deferred)
