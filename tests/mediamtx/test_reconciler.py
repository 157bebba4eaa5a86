"""Reconciler behaviour against the fake mediamtx, on a Clock, through StubTreq."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.logger import LogLevel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from atomrelay.config import Config
from atomrelay.mediamtx.client import MediamtxClient
from atomrelay.mediamtx.paths import build_path_conf, path_conf_differences
from atomrelay.mediamtx.reconciler import STATE_NAME, Reconciler
from atomrelay.metrics import Registry
from atomrelay.state import StateStore
from tests.helpers import metric

from .support import ALL_PATHS, CAMERAS, Harness, capture, make_config


def wanted_confs(h: Harness) -> dict[str, dict[str, Any]]:
    """The PathConf the relay should have registered for every configured stream."""
    return {
        f"{cam.id}/{st.name}": build_path_conf(cam, st, h.config.mediamtx)
        for cam in h.config.cameras
        for st in cam.streams
    }


def assert_registered(h: Harness) -> None:
    """Every configured path exists in the fake with exactly the wanted managed fields."""
    paths = h.fake.paths
    for name, wanted in wanted_confs(h).items():
        assert name in paths, f"{name} missing"
        assert path_conf_differences(wanted, paths[name]) == [], name


def count_info_calls(h: Harness) -> list[float]:
    """Record the clock time of every /v3/info call the client makes."""
    times: list[float] = []
    original = h.client.info

    def info() -> Deferred[Any]:
        times.append(h.clock.seconds())
        return original()

    h.client.info = info  # type: ignore[method-assign]
    return times


class Interposer(Resource):
    """Sits in front of the fake; ``rule(method, path)`` may return (status, body) to answer instead."""

    isLeaf = True

    def __init__(self, fake: Resource) -> None:
        super().__init__()
        self.fake = fake
        self.rule: Any = None
        self.hanging: list[Any] = []

    def render(self, request: Any) -> Any:
        """Answer from the rule, hang, or delegate to the fake."""
        path = request.path.decode()
        answer = self.rule(request.method.decode(), path) if self.rule else None
        if answer == "hang":
            self.hanging.append(request)
            return NOT_DONE_YET
        if answer is not None:
            status, body = answer
            request.setResponseCode(status)
            return body
        return self.fake.render(request)


def interposed(tmp_path: Path, **kwargs: Any) -> tuple[Harness, Interposer]:
    """A harness whose StubTreq goes through an Interposer in front of the fake."""
    h = Harness(tmp_path, start=False, **kwargs)
    front = Interposer(h.fake)
    h.stub = StubTreq(front)
    h.client = MediamtxClient(h.stub, h.config.mediamtx, clock=h.clock)
    h.reconciler = Reconciler(h.clock, h.client, h.config, h.store)
    h.events = capture(h.reconciler)
    return h, front


# --- WaitReady ---------------------------------------------------------------------------


def test_wait_ready_polls_every_two_seconds_and_gives_up_at_wait_timeout(tmp_path: Path) -> None:
    """While mediamtx is down the wait polls /v3/info every 2 s, logs twice in total and fires ready at 30 s."""
    h = Harness(tmp_path, start=False)
    h.fake.set_down(True)
    calls = count_info_calls(h)
    start = h.clock.seconds()
    h.reconciler.startService()
    h.advance(29.75)
    assert not h.reconciler.ready.called
    h.advance(0.25)
    assert h.reconciler.ready.called
    assert [t - start for t in calls] == [float(s) for s in range(0, 31, 2)]
    texts = h.events.texts()
    assert h.events.count("waiting for mediamtx") == 1
    assert h.events.count("did not become ready within 30s") == 1
    assert len(texts) == 2, texts
    assert h.fake.writes == []


def test_paths_registered_as_soon_as_mediamtx_answers_after_giving_up(tmp_path: Path) -> None:
    """After the wait gave up, mediamtx coming up gets every path registered within one poll interval."""
    h = Harness(tmp_path, start=False)
    h.fake.set_down(True)
    h.reconciler.startService()
    h.advance(40)
    assert h.reconciler.ready.called and h.fake.paths == {}
    h.fake.set_down(False)
    h.advance(2)
    assert_registered(h)
    assert h.events.count("answers again") == 1
    assert h.events.count("is unreachable") == 0


def test_wait_ready_ends_when_mediamtx_answers(tmp_path: Path) -> None:
    """A mediamtx that starts answering at 6 s is noticed at the 6 s poll, and ready fires after registering."""
    h = Harness(tmp_path, start=False)
    h.fake.set_down(True)
    h.reconciler.startService()
    h.advance(5)
    assert not h.reconciler.ready.called
    h.fake.set_down(False)
    h.advance(1)
    assert h.reconciler.ready.called
    assert_registered(h)
    assert h.events.count("is ready after 6.0s") == 1
    assert h.events.count("waiting for mediamtx") == 1


# --- ConfigurePaths --------------------------------------------------------------------


def test_first_configuration_adds_every_path_and_records_them(tmp_path: Path) -> None:
    """Startup adds one path per camera stream with the built PathConf and records them in state_dir."""
    h = Harness(tmp_path)
    assert h.reconciler.ready.called
    assert sorted(h.writes()) == sorted(("POST", f"/v3/config/paths/add/{name}") for name in ALL_PATHS)
    for write in h.fake.writes:
        name = write.path.removeprefix("/v3/config/paths/add/")
        assert json.loads(write.body) == wanted_confs(h)[name]
    assert_registered(h)
    assert json.loads((tmp_path / f"{STATE_NAME}.json").read_text()) == {"paths": ALL_PATHS}


def test_add_conflict_falls_back_to_replace(tmp_path: Path) -> None:
    """When add answers 400 'path already exists' (stale list), the path is replaced instead."""
    h = Harness(tmp_path, start=False)
    result_of_add(h, "cam1/main", {"source": "rtsp://elsewhere/x", "sourceOnDemand": True})
    h.client.list_path_confs = lambda: succeed({})  # type: ignore[method-assign]
    h.reconciler.startService()
    cam1 = [w for w in h.writes() if w[1].endswith("cam1/main")]
    assert cam1[-2:] == [("POST", "/v3/config/paths/add/cam1/main"), ("POST", "/v3/config/paths/replace/cam1/main")]
    assert_registered(h)


def test_add_conflict_without_replace_route_deletes_then_adds(tmp_path: Path) -> None:
    """On a mediamtx without the replace route, add -> 400 leads to replace -> 404, then delete and add."""
    h = Harness(tmp_path, start=False, has_replace=False)
    result_of_add(h, "cam1/main", {"source": "rtsp://elsewhere/x", "sourceOnDemand": True})
    h.client.list_path_confs = lambda: succeed({})  # type: ignore[method-assign]
    h.reconciler.startService()
    cam1 = [w for w in h.writes() if w[1].endswith("cam1/main")]
    assert cam1[1:] == [
        ("POST", "/v3/config/paths/add/cam1/main"),
        ("POST", "/v3/config/paths/replace/cam1/main"),
        ("DELETE", "/v3/config/paths/delete/cam1/main"),
        ("POST", "/v3/config/paths/add/cam1/main"),
    ]
    assert_registered(h)
    assert h.events.count("no /v3/config/paths/replace") == 1


def test_foreign_path_with_configured_name_is_replaced_with_a_warning(tmp_path: Path) -> None:
    """A path named after a configured stream but not created by the relay is replaced and a warning logged."""
    h = Harness(tmp_path, start=False)
    result_of_add(h, "cam2/main", {"source": "rtsp://other-tool/stream", "sourceOnDemand": True, "record": True})
    h.fake.writes.clear()
    h.reconciler.startService()
    assert ("POST", "/v3/config/paths/replace/cam2/main") in h.writes()
    assert h.fake.paths["cam2/main"]["record"] is False
    assert_registered(h)
    warnings = h.events.texts(LogLevel.warn)
    assert len(warnings) == 1 and "cam2/main was not created by the relay" in warnings[0]


def test_changes_without_replace_route_use_delete_and_add(tmp_path: Path) -> None:
    """Without the replace route a changed path is deleted and re-added; each generation probes the route once."""
    h = Harness(tmp_path, has_replace=False)
    h.fake.writes.clear()
    for step, audio in enumerate(("none", "transcode", "none")):
        cameras = CAMERAS.replace("codec: h265}", f"codec: h265, audio: {audio}}}")
        h.reload(make_config(tmp_path, cameras))
        assert_registered_with(h, make_config(tmp_path, cameras))
    assert h.writes().count(("POST", "/v3/config/paths/replace/cam1/sub")) == 3
    assert h.writes().count(("DELETE", "/v3/config/paths/delete/cam1/sub")) == 3
    h.advance(10)
    assert h.writes().count(("POST", "/v3/config/paths/replace/cam1/sub")) == 3


@pytest.mark.parametrize("creates_missing", [True, False])
def test_replace_of_a_vanished_path_ends_registered(tmp_path: Path, creates_missing: bool) -> None:
    """Replace on a path that vanished either creates it or 404s (older mediamtx); both end registered."""
    h = Harness(tmp_path, start=False, replace_creates_missing=creates_missing)
    stale = {name: {"name": name, "source": "publisher"} for name in ALL_PATHS}
    h.client.list_path_confs = lambda: succeed(stale)  # type: ignore[method-assign]
    h.reconciler.startService()
    assert_registered(h)
    expected = [("POST", f"/v3/config/paths/replace/{name}") for name in ALL_PATHS]
    if not creates_missing:
        expected = [w for name in ALL_PATHS for w in (
            ("POST", f"/v3/config/paths/replace/{name}"), ("POST", f"/v3/config/paths/add/{name}"))]
    assert h.writes() == expected


# --- the reconcile loop -----------------------------------------------------------------


def test_steady_state_writes_nothing(tmp_path: Path) -> None:
    """Once registered, many reconcile passes make zero write requests."""
    h = Harness(tmp_path)
    calls = count_info_calls(h)
    before = len(h.fake.writes)
    h.advance(60)
    assert len(h.fake.writes) == before == 3
    assert len(calls) == 30


def test_restart_reregisters_every_path_within_one_poll_interval(tmp_path: Path) -> None:
    """After a mediamtx restart (new 'started', paths gone) every path is back within one poll interval."""
    h = Harness(tmp_path)
    h.advance(3)
    h.fake.restart()
    assert h.fake.paths == {}
    h.advance(h.config.mediamtx.poll_interval)
    assert_registered(h)
    assert h.events.count("mediamtx restarted") == 1


def test_restart_between_info_and_path_list_is_healed_then_noticed(tmp_path: Path) -> None:
    """A restart landing mid-pass is re-registered by that pass and logged once, by the next pass's /v3/info."""
    h, front = interposed(tmp_path)
    h.reconciler.startService()
    assert_registered(h)
    h.advance(3)
    restarts: list[float] = []

    def restart_once(method: str, path: str) -> None:
        if path == "/v3/config/paths/list" and not restarts:
            restarts.append(h.clock.seconds())
            h.fake.restart()

    front.rule = restart_once
    h.advance(h.config.mediamtx.poll_interval)
    assert restarts
    assert_registered(h)
    assert h.events.count("mediamtx restarted") == 0
    h.advance(h.config.mediamtx.poll_interval)
    assert h.events.count("mediamtx restarted") == 1
    h.advance(10)
    assert h.events.count("mediamtx restarted") == 1


def test_foreign_paths_are_never_touched(tmp_path: Path) -> None:
    """Paths with other names (from the file or the API) are never written, even when the relay config changes."""
    h = Harness(tmp_path, start=False, file_paths={"all_others": {}})
    result_of_add(h, "garage/main", {"source": "rtsp://10.0.0.9/live", "sourceOnDemand": True})
    foreign_before = {k: v for k, v in h.fake.paths.items() if k in ("all_others", "garage/main")}
    h.fake.writes.clear()
    h.reconciler.startService()
    h.advance(10)
    h.reload(make_config(tmp_path, CAMERAS.split("  - id: cam2")[0]))
    h.advance(10)
    assert all("garage" not in path and "all_others" not in path for _, path in h.writes())
    assert {k: v for k, v in h.fake.paths.items() if k in foreign_before} == foreign_before
    assert "cam2/main" not in h.fake.paths


def test_recorded_stale_paths_are_deleted_and_forgotten(tmp_path: Path) -> None:
    """A path recorded as the relay's whose camera left the config is deleted; unrecorded ones stay."""
    h = Harness(tmp_path, start=False)
    h.store.save(STATE_NAME, {"paths": ["old/main", "gone/sub", "cam1/main"]})
    renew(h)
    result_of_add(h, "old/main", {"source": "publisher"})
    result_of_add(h, "keep/main", {"source": "publisher"})
    h.fake.writes.clear()
    h.reconciler.startService()
    assert ("DELETE", "/v3/config/paths/delete/old/main") in h.writes()
    assert not any("keep" in path or "gone" in path for _, path in h.writes())
    assert "old/main" not in h.fake.paths and "keep/main" in h.fake.paths
    assert json.loads((tmp_path / f"{STATE_NAME}.json").read_text()) == {"paths": ALL_PATHS}
    assert h.events.count("deleted mediamtx path old/main") == 1


def test_a_reload_adds_changes_and_removes(tmp_path: Path) -> None:
    """The reconciler of a reloaded config registers new streams, replaces changed ones and deletes removed ones."""
    h = Harness(tmp_path)
    h.fake.writes.clear()
    cameras = CAMERAS.split("  - id: cam2")[0].replace("codec: h265}", "codec: h265, audio: none}") + (
        "  - id: cam3\n    host: cam3.local\n    streams:\n      - {name: main, rtsp_path: video0_unicast}\n"
    )
    new_config = make_config(tmp_path, cameras)
    h.reload(new_config)
    assert h.reconciler.ready.called
    assert sorted(h.writes()) == sorted([
        ("POST", "/v3/config/paths/replace/cam1/sub"),
        ("DELETE", "/v3/config/paths/delete/cam2/main"),
        ("POST", "/v3/config/paths/add/cam3/main"),
    ])
    assert sorted(h.fake.paths) == ["cam1/main", "cam1/sub", "cam3/main"]
    assert_registered_with(h, new_config)
    assert h.reconciler.owned_paths == {"cam1/main", "cam1/sub", "cam3/main"}


def test_path_changed_behind_the_relays_back_is_restored(tmp_path: Path) -> None:
    """A managed field changed by someone else is put back at the next pass; unmanaged fields are ignored."""
    h = Harness(tmp_path)
    h.fake._paths["cam1/main"]["runOnDemandCloseAfter"] = "2m0s"
    h.fake._paths["cam2/main"]["maxReaders"] = 3
    h.fake.writes.clear()
    h.advance(2)
    assert h.writes() == [("POST", "/v3/config/paths/replace/cam1/main")]
    assert_registered(h)


def test_existing_identical_paths_are_adopted_without_writes(tmp_path: Path) -> None:
    """A relay restarted with empty state finds its paths already right: no writes, and it records them."""
    h = Harness(tmp_path / "first")
    second = make_config(tmp_path / "second")
    store = StateStore(tmp_path / "second")
    reconciler = Reconciler(h.clock, h.client, second, store)
    h.fake.writes.clear()
    reconciler.startService()
    assert h.fake.writes == []
    assert reconciler.owned_paths == set(ALL_PATHS)


# --- bad days ---------------------------------------------------------------------------


def test_down_is_logged_once_and_retried_with_capped_backoff(tmp_path: Path) -> None:
    """While mediamtx is down, attempts back off but never wait longer than poll_interval; one log each way."""
    h = Harness(tmp_path)
    calls = count_info_calls(h)
    h.fake.set_down(True)
    h.advance(30)
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert gaps and max(gaps) <= h.config.mediamtx.poll_interval
    assert min(gaps) < h.config.mediamtx.poll_interval
    assert h.events.count("is unreachable") == 1
    h.fake.set_down(False)
    h.fake.restart()
    h.advance(2)
    assert_registered(h)
    assert h.events.count("answers again") == 1
    assert h.events.count("is unreachable") == 1


@pytest.mark.parametrize(
    ("status", "body", "problem", "detail"),
    [
        (500, b'{"status":"error","error":"database is locked"}', "answers HTTP 500", "HTTP 500: database is locked"),
        (200, b"<html>not json</html>", "answers with malformed replies", "reply is not JSON: <html>not json</html>"),
        (200, b'{"version": 3}', "answers with malformed replies", "expected string 'version' and 'started'"),
        (401, b'{"status":"error","error":"authentication error"}', "refuses the relay's credentials",
         "HTTP 401: authentication error (check mediamtx.username/password"),
    ],
)
def test_bad_replies_are_survived_and_logged_once(
    tmp_path: Path, status: int, body: bytes, problem: str, detail: str
) -> None:
    """500s, garbage JSON, wrong shapes and 401s from /v3/info are logged once, and the loop recovers."""
    h, front = interposed(tmp_path)
    h.reconciler.startService()
    assert_registered(h)
    front.rule = lambda method, path: (status, body) if path == "/v3/info" else None
    h.advance(30)
    errors = h.events.texts(LogLevel.error)
    assert len(errors) == 1, errors
    assert problem in errors[0] and detail in errors[0]
    front.rule = None
    h.fake.restart()
    h.advance(2)
    assert_registered(h)
    assert h.events.count("answers again") == 1


def test_bad_replies_during_the_wait_are_reported_when_it_gives_up(tmp_path: Path) -> None:
    """A mediamtx answering 500 during the whole wait is reported once, by the give-up message."""
    h, front = interposed(tmp_path)
    front.rule = lambda method, path: (500, b'{"status":"error","error":"database is locked"}')
    h.reconciler.startService()
    h.advance(60)
    assert h.reconciler.ready.called
    assert h.events.count("database is locked") == 1
    assert h.events.count("did not become ready within 30s") == 1
    front.rule = None
    h.advance(2)
    assert_registered(h)


def test_garbage_path_list_is_survived(tmp_path: Path) -> None:
    """A config path list that is not the promised shape is logged once and does not stop later passes."""
    h, front = interposed(tmp_path)
    front.rule = lambda method, path: (200, b'{"items": "nope"}') if path == "/v3/config/paths/list" else None
    h.reconciler.startService()
    h.advance(10)
    assert h.reconciler.ready.called
    assert h.events.count("expected 'items' list and integer 'pageCount'") == 1
    front.rule = None
    h.advance(2)
    assert_registered(h)


def test_one_rejected_path_does_not_block_the_others(tmp_path: Path) -> None:
    """A path mediamtx rejects is retried each pass and logged once; the other paths are registered."""
    h, front = interposed(tmp_path)
    rejected: list[str] = []

    def rule(method: str, path: str) -> Any:
        if method == "POST" and path.endswith("/cam1/sub"):
            rejected.append(path)
            return 400, b'{"status":"error","error":"invalid source"}'
        return None

    front.rule = rule
    h.reconciler.startService()
    h.advance(6)
    assert "cam1/main" in h.fake.paths and "cam2/main" in h.fake.paths
    assert len(rejected) == 4
    assert h.events.count("cannot register mediamtx path cam1/sub: POST /v3/config/paths/add/cam1/sub: HTTP 400: invalid source") == 1
    front.rule = None
    h.advance(2)
    assert_registered(h)
    assert h.events.count("cam1/sub is registered now") == 1


def test_unexpected_exception_does_not_end_the_loop(tmp_path: Path) -> None:
    """A bug-like exception inside a pass is logged as a failure and the next pass still runs."""
    h = Harness(tmp_path, start=False)
    original = h.client.list_path_confs
    boom = [True]

    def list_path_confs() -> Deferred[Any]:
        if boom:
            boom.pop()
            raise RuntimeError("boom")
        return original()

    h.client.list_path_confs = list_path_confs  # type: ignore[method-assign]
    h.reconciler.startService()
    assert h.fake.paths == {}
    assert any("RuntimeError" in text for text in h.events.texts(LogLevel.critical))
    h.advance(2)
    assert_registered(h)


def test_hanging_mediamtx_times_out_as_unreachable(tmp_path: Path) -> None:
    """A mediamtx that accepts but never answers counts as unreachable after the 5 s request timeout."""
    h, front = interposed(tmp_path)
    front.rule = lambda method, path: "hang"
    h.reconciler.startService()
    h.advance(40)
    assert h.reconciler.ready.called
    assert h.events.count("no answer from mediamtx within 5s") == 1
    front.rule = None
    h.advance(8)
    assert_registered(h)


def test_unrepresentable_camera_is_logged_once_and_its_recorded_path_kept(tmp_path: Path) -> None:
    """A camera whose URL cannot be expressed is logged once; its recorded path is not deleted as stale."""
    cameras = CAMERAS.replace("host: 192.168.1.21", "host: cam$HOME")
    config = make_config(tmp_path, cameras)
    h = Harness(tmp_path, config=config, start=False)
    h.store.save(STATE_NAME, {"paths": ["cam2/main"]})
    result_of_add(h, "cam2/main", {"source": "publisher"})
    renew(h)
    h.fake.writes.clear()
    h.reconciler.startService()
    h.advance(10)
    assert h.events.count("cam2/main: camera host 'cam$HOME' contains '$'") == 1
    assert "cam2/main" in h.fake.paths
    assert not any(path.endswith("cam2/main") for _, path in h.writes())


def test_malformed_state_is_ignored_with_a_warning(tmp_path: Path) -> None:
    """A saved ownership document of the wrong shape is ignored (nothing deleted) and overwritten."""
    (tmp_path / f"{STATE_NAME}.json").write_text('{"paths": "cam9/main"}')
    h = Harness(tmp_path, start=False)
    h.reconciler.startService()
    assert_registered(h)
    assert json.loads((tmp_path / f"{STATE_NAME}.json").read_text()) == {"paths": ALL_PATHS}


# --- stopping ----------------------------------------------------------------------------


def test_stop_service_cancels_in_flight_requests(tmp_path: Path) -> None:
    """stopService fires once the hanging in-flight request is cancelled, and nothing runs afterwards."""
    h, front = interposed(tmp_path)
    front.rule = lambda method, path: "hang"
    calls = count_info_calls(h)
    h.reconciler.startService()
    h.advance(1)
    assert len(front.hanging) == 1
    stopped = h.reconciler.stopService()
    h.stub.flush()
    assert stopped.called
    h.advance(60)
    assert len(calls) == 1
    assert h.events.count("is unreachable") == 0


def test_stop_service_while_sleeping(tmp_path: Path) -> None:
    """stopService between passes fires at once and no further pass runs."""
    h = Harness(tmp_path)
    calls = count_info_calls(h)
    h.advance(1)
    stopped = h.reconciler.stopService()
    assert stopped.called
    h.advance(20)
    assert calls == []
    assert not h.clock.getDelayedCalls()


# --- helpers -----------------------------------------------------------------------------


def result_of_add(h: Harness, name: str, conf: dict[str, Any]) -> None:
    """Add a path directly through the client (as another tool would)."""
    d = h.client.add_path(name, conf)
    h.stub.flush()
    assert d.called
    d.addErrback(lambda f: pytest.fail(str(f.value)))


def renew(h: Harness) -> None:
    """Replace the harness's (unstarted) reconciler so that it reads the state saved meanwhile."""
    h.reconciler = Reconciler(h.clock, h.client, h.config, h.store)
    h.events = capture(h.reconciler)


def assert_registered_with(h: Harness, config: Config) -> None:
    """Every stream of ``config`` is registered with its wanted managed fields."""
    paths = h.fake.paths
    for cam in config.cameras:
        for st in cam.streams:
            name = f"{cam.id}/{st.name}"
            assert path_conf_differences(build_path_conf(cam, st, config.mediamtx), paths[name]) == [], name



def test_passes_writes_restarts_and_the_last_result_are_kept(tmp_path: Path) -> None:
    """Passes count by outcome, path writes by kind, a restart once; the last pass and mediamtx's version are kept."""
    h = Harness(tmp_path, start=False)
    registry = Registry()
    h.client = MediamtxClient(h.stub, h.config.mediamtx, clock=h.clock, metrics=registry)
    h.reconciler = Reconciler(h.clock, h.client, h.config, h.store, metrics=registry)
    h.reconciler.startService()
    h.advance(3)
    h.fake.restart()
    h.advance(h.config.mediamtx.poll_interval)
    h.fake.set_down(True)
    h.advance(1)
    paths = len(wanted_confs(h))
    assert metric(registry, "atomrelay_mediamtx_path_writes_total", kind="add") == 2 * paths
    assert metric(registry, "atomrelay_mediamtx_restarts_total") == 1
    assert metric(registry, "atomrelay_mediamtx_reconcile_passes_total", outcome="error") == 1
    assert metric(registry, "atomrelay_mediamtx_reconcile_passes_total", outcome="ok") >= 2
    assert h.reconciler.version == h.fake.version and h.reconciler.problem == "is unreachable"
    assert h.reconciler.last_pass is not None and h.reconciler.last_pass[1].startswith("mediamtx is unreachable")
    h.reconciler.stopService()


def test_a_stop_from_inside_the_first_pass_ends_the_loop(tmp_path: Path) -> None:
    """A service stopped by a callback of ``ready`` (while the first pass is still running) stops for good."""
    h = Harness(tmp_path, start=False)
    stopped: list[Any] = []
    h.reconciler.ready.addCallback(lambda _: h.reconciler.stopService().addCallback(stopped.append))
    h.reconciler.startService()
    h.stub.flush()
    h.advance(1)
    assert stopped == [None]
    writes = len(h.fake.writes)
    h.fake.restart()
    h.advance(30)
    assert len(h.fake.writes) == writes
