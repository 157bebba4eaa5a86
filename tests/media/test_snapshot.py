"""The snapshot proxy against the simulated camera, on a Clock (StubTreq on both sides)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from atomrelay.auth.security import Authenticator
from atomrelay.camera.client import CameraClient
from atomrelay.camera.digest import authorization, pick_challenge
from atomrelay.config import CameraConfig, StreamConfig, User
from atomrelay.metrics import Registry
from atomrelay.sim.camera import SNAPSHOT_JPEG, SimulatedCamera
from atomrelay.web.snapshot import SnapshotResource
from tests.helpers import metric

NOW = 1_700_000_000.0
USERS = {u.username: u for u in (User("admin", "secret", "Administrator"), User("viewer", "view", "User"))}
BASE = "http://relay.test:8080"


class ClockedTreq:
    """StubTreq for the camera side whose request timeouts run on the test Clock."""

    def __init__(self, resource: Resource, clock: Clock) -> None:
        self.stub = StubTreq(resource)
        self.clock = clock

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.stub.request(method, url, reactor=self.clock, **kwargs)


class Reply:
    """One answer of the proxy."""

    def __init__(self, code: int, headers: Any, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name: str) -> list[str]:
        return [v.decode("latin-1") for v in self.headers.getRawHeaders(name.encode("ascii"), [])]


class Proxy:
    """A SnapshotResource for camera ``cam`` (a SimulatedCamera) with an Authenticator, all on one Clock."""

    def __init__(
        self,
        http_basic: bool = True,
        max_age: float = 1.0,
        camera_timeout: float = 30.0,
        camera: Resource | None = None,
        camera_credentials: tuple[str, str] | None = None,
        metrics: Registry | None = None,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        # With camera_credentials the simulated camera requires Digest as cam/campass.
        secured = camera_credentials is not None
        self.camera = SimulatedCamera(
            self.clock, "ATOM_CamV3C", username="cam" if secured else None, password="campass" if secured else None
        )
        self.upstream = ClockedTreq(camera if camera is not None else self.camera, self.clock)
        username, password = camera_credentials or (None, None)
        config = CameraConfig(
            id="cam", name="Cam", host="192.0.2.10", streams=(StreamConfig("main", "video0_unicast"),),
            username=username, password=password,
        )
        client = CameraClient(self.upstream, config, timeout=camera_timeout)
        authenticator = Authenticator(self.clock, USERS.get, 300.0, http_basic)
        self.resource = SnapshotResource(self.clock, {"cam": client}, authenticator, max_age=max_age, metrics=metrics)
        root = Resource()
        root.putChild(b"snapshot", self.resource)
        self.viewer = StubTreq(root)

    def pump(self) -> None:
        """Deliver everything pending on both sides."""
        for _ in range(10):
            self.upstream.stub.flush()
            self.viewer.flush()

    def get(self, path: str = "/snapshot/cam.jpg", authorization: str | None = "basic") -> list[Reply]:
        """Start a GET; the returned list holds the Reply once it is answered."""
        headers: dict[str, list[str]] = {}
        if authorization == "basic":
            headers["Authorization"] = ["Basic " + base64.b64encode(b"viewer:view").decode()]
        elif authorization is not None:
            headers["Authorization"] = [authorization]
        replies: list[Reply] = []
        done = self.viewer.request("GET", BASE + path, headers=headers)
        done.addCallback(
            lambda r: self.viewer.content(r).addCallback(lambda body: replies.append(Reply(r.code, r.headers, body)))
        )
        self.pump()
        return replies

    def answer(self, pending: list[Reply]) -> Reply:
        self.pump()
        assert pending, "no answer yet"
        return pending[0]


def test_credentials_are_required() -> None:
    """Without (valid) credentials the proxy answers 401 with Digest and Basic challenges and never asks the camera."""
    proxy = Proxy()
    for credentials in (None, "Basic " + base64.b64encode(b"viewer:wrong").decode()):
        reply = proxy.answer(proxy.get(authorization=credentials))
        assert reply.code == 401
        schemes = [value.split()[0] for value in reply.header("www-authenticate")]
        assert schemes == ["Digest", "Digest", "Basic"]
    assert proxy.camera.snapshot_requests == 0


def test_basic_is_refused_unless_enabled() -> None:
    """With onvif.http_basic off, correct Basic credentials still get a Digest-only 401."""
    proxy = Proxy(http_basic=False)
    reply = proxy.answer(proxy.get())
    assert reply.code == 401
    assert [value.split()[0] for value in reply.header("www-authenticate")] == ["Digest", "Digest"]


def test_digest_credentials_get_the_camera_jpeg() -> None:
    """An HTTP Digest handshake as ONVIF user gets the camera's JPEG as image/jpeg."""
    proxy = Proxy(http_basic=False)
    challenge = proxy.answer(proxy.get(authorization=None))
    offer = pick_challenge(challenge.header("www-authenticate"))
    header = authorization(offer, "GET", "/snapshot/cam.jpg", "viewer", "view")
    reply = proxy.answer(proxy.get(authorization=header))
    assert (reply.code, reply.header("content-type"), reply.body) == (200, ["image/jpeg"], SNAPSHOT_JPEG)


def test_concurrent_requests_share_one_fetch() -> None:
    """Five requests while the camera is still encoding cause one get_jpeg.cgi call and five JPEGs."""
    proxy = Proxy()
    proxy.camera.snapshot_delay = 1.0
    pending = [proxy.get() for _ in range(5)]
    assert not any(pending)
    assert proxy.camera.snapshot_requests == 1
    proxy.clock.advance(1.0)
    proxy.pump()
    assert [(p[0].code, p[0].body) for p in pending] == [(200, SNAPSHOT_JPEG)] * 5
    assert proxy.camera.snapshot_requests == 1


def test_recent_image_is_served_from_memory() -> None:
    """An image up to max_age old is reused; an older one is fetched again."""
    proxy = Proxy(max_age=1.0)
    assert proxy.answer(proxy.get()).code == 200
    proxy.clock.advance(0.9)
    assert proxy.answer(proxy.get()).body == SNAPSHOT_JPEG
    assert proxy.camera.snapshot_requests == 1
    proxy.clock.advance(0.2)
    assert proxy.answer(proxy.get()).code == 200
    assert proxy.camera.snapshot_requests == 2


def test_zero_max_age_fetches_every_time() -> None:
    """max_age 0 turns the memory cache off (sequential requests each reach the camera)."""
    proxy = Proxy(max_age=0.0)
    for _ in range(3):
        assert proxy.answer(proxy.get()).code == 200
        proxy.clock.advance(0.01)
    assert proxy.camera.snapshot_requests == 3


def test_busy_camera_is_retried_once_after_a_delay() -> None:
    """A 503 from the camera is retried once, only after the retry delay, and the retry's JPEG is served."""
    proxy = Proxy()
    proxy.camera.busy = True
    pending = proxy.get()
    assert (pending, proxy.camera.snapshot_requests) == ([], 1)
    proxy.camera.busy = False
    proxy.clock.advance(0.4)
    proxy.pump()
    assert (pending, proxy.camera.snapshot_requests) == ([], 1)
    proxy.clock.advance(0.1)
    reply = proxy.answer(pending)
    assert (reply.code, reply.body, proxy.camera.snapshot_requests) == (200, SNAPSHOT_JPEG, 2)


def test_camera_still_busy_after_the_retry_is_503() -> None:
    """Two 503s in a row give the client a 503 text with Retry-After, and the camera saw exactly two requests."""
    proxy = Proxy()
    proxy.camera.busy = True
    pending = proxy.get()
    proxy.clock.advance(0.5)
    reply = proxy.answer(pending)
    assert (reply.code, reply.header("content-type"), reply.header("retry-after")) == (
        503, ["text/plain; charset=utf-8"], ["1"],
    )
    assert b"busy" in reply.body
    assert proxy.camera.snapshot_requests == 2


def test_dead_camera_times_out_with_503(monkeypatch: pytest.MonkeyPatch) -> None:
    """A silent camera: every waiting client gets a 503 after 5 s (not before), logged once; the next try starts afresh."""
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(SnapshotResource, "log", Logger(observer=events.append))
    proxy = Proxy()
    proxy.camera.set_offline(True, "hang")
    pending = [proxy.get() for _ in range(3)]
    proxy.clock.advance(4.9)
    proxy.pump()
    assert not any(pending)
    proxy.clock.advance(0.1)
    proxy.pump()
    assert [p[0].code for p in pending] == [503] * 3
    assert b"did not send a snapshot within 5 s" in pending[0][0].body
    assert [formatEvent(e) for e in events] == ["snapshot of camera cam failed (3 waiting): no snapshot within 5 s"]
    assert proxy.camera.held_requests <= 1
    proxy.camera.set_offline(False)
    assert proxy.answer(proxy.get()).code == 200


def test_refusing_camera_is_503() -> None:
    """A camera that drops the connection is reported as not answering (503)."""
    proxy = Proxy()
    proxy.camera.set_offline(True, "refuse")
    reply = proxy.answer(proxy.get())
    assert (reply.code, b"not answering" in reply.body) == (503, True)


def test_camera_digest_credentials_are_used() -> None:
    """The camera's Digest credentials are answered; wrong ones become a 502."""
    good = Proxy(camera_credentials=("cam", "campass"))
    assert good.answer(good.get()).body == SNAPSHOT_JPEG
    bad = Proxy(camera_credentials=("cam", "nope"))
    reply = bad.answer(bad.get())
    assert (reply.code, b"refused the relay's credentials" in reply.body) == (502, True)


class HtmlCamera(Resource):
    """A misconfigured host that answers get_jpeg.cgi with an HTML page."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"<html>login</html>"


def test_non_jpeg_answer_is_502() -> None:
    """A 200 answer that is not a JPEG is not passed on as image/jpeg."""
    proxy = Proxy(camera=HtmlCamera())
    reply = proxy.answer(proxy.get())
    assert (reply.code, b"not a JPEG" in reply.body) == (502, True)


@pytest.mark.parametrize("path", ["/snapshot/other.jpg", "/snapshot/cam.png", "/snapshot/cam/x.jpg", "/snapshot/"])
def test_unknown_paths_are_404_after_authentication(path: str) -> None:
    """Unknown cameras and malformed paths are 404 for a user, and 401 (no hint) without credentials."""
    proxy = Proxy()
    assert proxy.answer(proxy.get(path)).code == 404
    assert proxy.answer(proxy.get(path, authorization=None)).code == 401


def test_timeout_is_at_most_five_seconds() -> None:
    """The proxy refuses to be built with a timeout over 5 s (clients must never hang)."""
    with pytest.raises(ValueError):
        SnapshotResource(Clock(), {}, Authenticator(Clock(), USERS.get, 300.0, False), timeout=6.0)


def test_a_client_that_leaves_does_not_disturb_the_others() -> None:
    """A waiting client that disconnects gets nothing written; the others still get the shared image."""
    proxy = Proxy()
    proxy.camera.snapshot_delay = 1.0
    leaving, staying = DummyRequest([b"cam.jpg"]), DummyRequest([b"cam.jpg"])
    for request in (leaving, staying):
        request.requestHeaders.setRawHeaders(b"authorization", [b"Basic " + base64.b64encode(b"viewer:view")])
        request.render(proxy.resource)
    proxy.pump()
    leaving.processingFailed(Failure(ConnectionDone()))
    proxy.clock.advance(1.0)
    proxy.pump()
    assert (staying.written, staying.finished, staying.responseCode) == ([SNAPSHOT_JPEG], 1, 200)
    assert (leaving.written, leaving.finished) == ([], 0)
    assert proxy.camera.snapshot_requests == 1


def test_requests_fetches_and_failures_are_counted() -> None:
    """Requests count per camera, camera calls per get_jpeg.cgi (the retry too), failed fetches by reason."""
    registry = Registry()
    proxy = Proxy(metrics=registry)
    proxy.camera.snapshot_delay = 1.0
    pending = [proxy.get() for _ in range(3)]
    proxy.clock.advance(1.0)
    proxy.pump()
    assert [p[0].code for p in pending] == [200] * 3
    proxy.camera.snapshot_delay = 0.0
    proxy.camera.busy = True
    proxy.clock.advance(2.0)
    busy = proxy.get()
    proxy.clock.advance(proxy.resource.retry_delay)
    assert proxy.answer(busy).code == 503
    assert metric(registry, "atomrelay_snapshot_requests_total", camera="cam") == 4
    assert metric(registry, "atomrelay_snapshot_fetches_total", camera="cam") == 3
    assert metric(registry, "atomrelay_snapshot_failures_total", camera="cam", reason="http") == 1


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_per_camera_ports_share_one_snapshot_fetch(tmp_path: Path) -> None:
    """per_camera: the camera's device port (the NVR) and the relay's port (the dashboard) serve snapshots from one
    cache and one fetch in flight, so the camera is asked once however many ports are polled."""
    import treq
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, gatherResults

    from atomrelay.config import load_config
    from atomrelay.sim.camera import listen_camera
    from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx
    from atomrelay.wiring import build_relay
    from tests.helpers import free_port
    from tests.test_reload import write_config

    camera = SimulatedCamera(reactor, "ATOM_CamV3C")
    listening = [listen_camera(reactor, camera), listen_mediamtx(reactor, FakeMediamtx(reactor))]
    http_port, device_port = free_port(), free_port()
    path = tmp_path / "config.yaml"
    write_config(path, listening[1].getHost().port, http_port, [("cam1", listening[0].getHost().port)],
                 onvif_extra=("mode: per_camera", "http_basic: true"), camera_onvif_ports=(device_port,))
    relay = build_relay(load_config(str(path)), reactor)
    relay.startService()
    try:
        async def fetch(port: int) -> int:
            response = await treq.get(f"http://127.0.0.1:{port}/snapshot/cam1.jpg", auth=("admin", "pw-123"),
                                      timeout=10)
            await response.content()
            return int(response.code)

        codes = await gatherResults([Deferred.fromCoroutine(fetch(port)) for port in (http_port, device_port) * 4])
        assert codes == [200] * 8
        assert camera.snapshot_requests == 1
    finally:
        await relay.stopService()
        for port in listening:
            await port.stopListening()
