"""A StatusReport over the mediamtx test double, with /, /status and /assets mounted, on a Clock."""

from __future__ import annotations

from typing import Any, cast

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from atomrelay.auth.security import Authenticator
from atomrelay.camera.digest import authorization, pick_challenge
from atomrelay.camera.health import HealthState
from atomrelay.camera.model import MODELS
from atomrelay.config import parse_config
from atomrelay.events.state import EventHub
from atomrelay.events.subscriptions import Subscriptions
from atomrelay.mediamtx.client import MediamtxClient
from atomrelay.sim.mediamtx import FakeMediamtx
from atomrelay.web.dashboard import DashboardResource, assets
from atomrelay.web.report import Device, StatusReport
from atomrelay.web.status import StatusResource

NOW = 1_700_000_000.0
BASE = "http://relay.test:8080"
PASSWORDS = {"admin": "admin-pw", "viewer": "viewer-pw"}
CONFIG = """
onvif:
  port: 8080
  users:
    - {username: admin, password: admin-pw, role: Administrator}
    - {username: viewer, password: viewer-pw, role: User}
mediamtx: {webrtc_port: 8889, hls_port: 8888}
cameras:
  - id: swing
    name: swing cam
    host: 192.0.2.10
    password: camera-secret
    username: admin
    webhook_token: swing-token-0123456789
    streams: [{name: main, rtsp_path: video0_unicast}]
  - id: odd
    name: "<b>Garage</b> & co"
    host: 192.0.2.11
    streams: [{name: main, rtsp_path: video0_unicast}, {name: sub, rtsp_path: video1_unicast, width: 640, height: 360}]
"""



class AcceptingNotify:
    """A NotifyClient that accepts every consumer and never delivers (the page only lists subscriptions)."""

    def check(self, url: str) -> Deferred[str]:
        """Accept ``url`` as it is."""
        return succeed(url)

    def post(self, url: str, body: bytes) -> Deferred[Any]:
        """Never answered: deliveries stay pending."""
        return Deferred()

class Reconciled:
    """What the report reads of the reconciler, set by the test."""

    def __init__(self) -> None:
        self.version: str | None = "v1.20.1"
        self.last_pass: tuple[float, str] | None = (NOW - 2, "3 paths registered")
        self.problem: str | None = None


class Models:
    """Model facts: the swing is detected, the other camera is not yet."""

    def facts(self, camera_id: str) -> Any:
        return MODELS["ATOM_CAKP1JZJP"] if camera_id == "swing" else None


class CountingLister:
    """The MediamtxClient's path list, counting the calls."""

    def __init__(self, client: MediamtxClient) -> None:
        self.client = client
        self.calls = 0

    def list_paths(self) -> Any:
        self.calls += 1
        return self.client.list_paths()


class Site:
    """The relay's status pages over simulated state, driven through StubTreq."""

    def __init__(self, http_basic: bool = False, config_text: str = CONFIG, devices: list[Device] | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.config = parse_config(config_text)
        self.fake = FakeMediamtx(self.clock, file_paths={"swing/main": {}, "odd/main": {}})
        self.fake.set_ready("swing/main", readers=["rtspSession", "hlsSession", "webRTCSession"])
        self.mediamtx_stub = StubTreq(self.fake)
        self.lister = CountingLister(MediamtxClient(self.mediamtx_stub, self.config.mediamtx, clock=self.clock))
        self.hub = EventHub(self.clock, self.config.cameras, 20.0)
        self.subscriptions = Subscriptions(self.clock, self.hub, self.config.cameras, notify=cast(Any, AcceptingNotify()))
        self.reconciled = Reconciled()
        states = {"swing": HealthState("online", "HTTP and RTSP answer", NOW - 60),
                  "odd": HealthState("offline", "HTTP <timeout>", NOW - 1000)}
        users = {user.username: user for user in self.config.onvif.users}
        self.authenticator = Authenticator(self.clock, users.get, 300.0, http_basic)
        self.report = StatusReport(
            self.clock, self.config, states.__getitem__, Models(), self.hub, self.lister, self.reconciled,
            {"": self.subscriptions}, devices or [Device("", 8080, None)], NOW - 3725, "1.2.3",
        )
        root = Resource()
        root.putChild(b"", DashboardResource(self.authenticator, self.report))
        root.putChild(b"status", StatusResource(self.authenticator, self.report.document))
        root.putChild(b"assets", assets())
        self.stub = StubTreq(root)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        """One GET, answered with every pending mediamtx call delivered."""
        results: list[Any] = []
        done = self.stub.get(BASE + path, headers={k: [v] for k, v in (headers or {}).items()}, allow_redirects=False)
        done.addCallback(lambda r: self.stub.content(r).addCallback(lambda body: (r.code, r.headers, body)))
        done.addBoth(results.append)
        for _ in range(5):
            self.mediamtx_stub.flush()
            self.stub.flush()
        assert results, "no answer"
        if hasattr(results[0], "raiseException"):
            results[0].raiseException()
        return results[0]

    def digest_get(self, path: str, user: str = "viewer", headers: dict[str, str] | None = None
                   ) -> tuple[int, Any, bytes]:
        """A GET answering the Digest challenge the way a browser does."""
        status, reply_headers, _ = self.get(path)
        assert status == 401
        challenge = pick_challenge([v.decode() for v in reply_headers.getRawHeaders(b"www-authenticate")])
        answer = authorization(challenge, "GET", path, user, PASSWORDS[user], 1)
        return self.get(path, {"Authorization": answer, **(headers or {})})
