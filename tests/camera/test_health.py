"""The camera health monitor: states, timing on the Clock, callbacks, logging, and robustness."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.logger import Logger, formatEvent

from atomrelay.camera.health import (
    DEGRADED,
    OFFLINE,
    ONLINE,
    UNKNOWN,
    HealthMonitor,
    HealthState,
    ProbeFailed,
)
from atomrelay.config import CameraConfig, MediamtxConfig
from atomrelay.mediamtx.client import MediamtxClient
from atomrelay.metrics import Registry
from atomrelay.sim.mediamtx import FakeMediamtx
from tests.camera.support import CAM2, Bench, camera_config

PATH_CONF = {"source": "rtsp://127.0.0.1:8554/video0_unicast", "sourceOnDemand": True}


class FakeProbe:
    """An RTSP probe whose answer the test decides: ok, ProbeFailed, another exception, or never."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.crash: set[str] = set()
        self.hang: set[str] = set()
        self.calls = 0

    def __call__(self, camera: CameraConfig, timeout: float) -> Deferred[None]:
        self.calls += 1
        if camera.id in self.hang:
            return Deferred()
        result: Deferred[None] = Deferred()
        if camera.id in self.crash:
            result.errback(RuntimeError("probe bug"))
        elif camera.id in self.down:
            result.errback(ProbeFailed("connection refused"))
        else:
            result.callback(None)
        return result


class Rig:
    """A monitor over simulated cameras, a fake RTSP probe and the mediamtx test double, on one Clock."""

    def __init__(self, *cameras: tuple[str, str], interval: float = 30.0, missing: str = "",
                 registered: list[bool] | None = None) -> None:
        self.bench = Bench()
        for camera_id, model in cameras:
            self.bench.add(camera_config(camera_id), model)
        names = [f"{cid}/{stream}" for cid, _ in cameras for stream in ("main", "sub")]
        self.mediamtx = FakeMediamtx(
            self.bench.clock, file_paths={name: PATH_CONF for name in names if name != missing}
        )
        stub = StubTreq(self.mediamtx)
        self.bench.stubs.append(stub)
        self.api = MediamtxClient(stub, MediamtxConfig(), clock=self.bench.clock)
        self.probe = FakeProbe()
        self.monitor = HealthMonitor(
            self.bench.clock, list(self.bench.cameras.values()), self.bench.clients, self.api, self.probe, interval,
            **({} if registered is None else {"paths_registered": lambda: registered[0]}),
        )
        self.changes: list[tuple[str, HealthState, HealthState]] = []
        self.monitor.on_change.append(lambda cid, old, new: self.changes.append((cid, old, new)))
        self.events: list[dict[str, Any]] = []

    def capture_log(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(HealthMonitor, "log", Logger(observer=self.events.append))

    def messages(self) -> list[str]:
        return [formatEvent(event) for event in self.events]

    def state(self, camera_id: str = "swing") -> str:
        return self.monitor.state(camera_id).state

    def start(self) -> None:
        self.monitor.startService()
        self.bench.pump()


def test_starts_unknown_then_online() -> None:
    """Before the first round a camera is unknown; a camera whose HTTP and RTSP answer is online."""
    rig = Rig(("swing", "ATOM_CAKP1JZJP"))
    assert rig.state() == UNKNOWN
    rig.start()
    assert rig.monitor.state("swing") == HealthState(ONLINE, "HTTP and RTSP answer", rig.bench.clock.seconds())
    assert rig.monitor.state("nope").state == UNKNOWN


def test_offline_within_one_interval_and_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A camera that stops answering is offline by the end of the next round, online again the round after it answers."""
    rig = Rig(("swing", "ATOM_CAKP1JZJP"), interval=30.0)
    rig.capture_log(monkeypatch)
    rig.start()
    rig.bench.pump(1)
    rig.bench.sims["swing"].set_offline(True)
    rig.probe.hang.add("swing")
    took = rig.bench.until(lambda: rig.state() == OFFLINE)
    assert took <= rig.monitor.interval + rig.monitor.timeout * 1.25
    reason = rig.monitor.state("swing").reason
    assert "HTTP 127.0.0.1:80 does not answer" in reason and "RTSP 127.0.0.1:8554 does not answer" in reason
    rig.bench.pump(3 * rig.monitor.interval)
    assert sum("is offline" in m for m in rig.messages()) == 1
    rig.bench.sims["swing"].set_offline(False)
    rig.probe.hang.clear()
    took = rig.bench.until(lambda: rig.state() == ONLINE)
    assert took <= rig.monitor.interval
    assert [(old.state, new.state) for _, old, new in rig.changes] == [
        (UNKNOWN, ONLINE), (ONLINE, OFFLINE), (OFFLINE, ONLINE)
    ]
    assert all(new.since == rig.changes[i][2].since for i, (_, _, new) in enumerate(rig.changes))
    assert rig.changes[1][2].since > rig.changes[0][2].since


def test_degraded_when_only_one_of_http_and_rtsp_answers() -> None:
    """HTTP without RTSP, or RTSP without HTTP, is degraded with the failing side named."""
    rig = Rig(("swing", "ATOM_CAKP1JZJP"))
    rig.probe.down.add("swing")
    rig.start()
    assert rig.state() == DEGRADED
    assert rig.monitor.state("swing").reason.startswith("RTSP 127.0.0.1:8554 does not answer (connection refused)")
    rig.probe.down.clear()
    rig.bench.sims["swing"].set_offline(True, mode="refuse")
    rig.bench.pump(rig.monitor.interval)
    assert rig.state() == DEGRADED
    assert rig.monitor.state("swing").reason.startswith("HTTP 127.0.0.1:80 does not answer")
    assert [new.state for _, _, new in rig.changes] == [DEGRADED]


def test_mediamtx_path_states() -> None:
    """An idle on-demand path is fine; readers on a path without a stream, or a missing path, degrade the camera."""
    rig = Rig(("swing", "ATOM_CAKP1JZJP"), ("cam2", CAM2), missing="cam2/main")
    rig.start()
    assert rig.state("swing") == ONLINE
    assert rig.monitor.state("cam2") == HealthState(DEGRADED, "mediamtx has no path cam2/main", rig.bench.clock.seconds())
    rig.mediamtx.set_ready("swing/main", True, readers=["rtspSession"])
    rig.bench.pump(rig.monitor.interval)
    assert rig.state("swing") == ONLINE
    # The test double has no knob for "readers waiting, no stream yet": set its runtime entry directly.
    rig.mediamtx._runtime["swing/sub"].readers = [{"type": "rtspSession", "id": "r1"}]
    rig.bench.pump(rig.monitor.interval)
    assert rig.monitor.state("swing").state == DEGRADED
    assert rig.monitor.state("swing").reason == "mediamtx path swing/sub has 1 reader(s) but no stream"


def test_no_path_check_before_the_paths_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until the relay has registered its paths, mediamtx lacking them is no fault: online, no "degraded" line;
    the first round after that checks them."""
    registered = [False]
    rig = Rig(("swing", "ATOM_CAKP1JZJP"), missing="swing/main", registered=registered)
    rig.capture_log(monkeypatch)
    rig.start()
    assert rig.state() == ONLINE
    registered[0] = True
    rig.bench.pump(rig.monitor.interval)
    assert rig.monitor.state("swing").reason == "mediamtx has no path swing/main"
    assert [m for m in rig.messages() if "degraded" in m] == ["camera swing is degraded: mediamtx has no path swing/main"]
    assert [(old.state, new.state) for _, old, new in rig.changes] == [(UNKNOWN, ONLINE), (ONLINE, DEGRADED)]


def test_mediamtx_down_is_not_the_cameras_fault() -> None:
    """When mediamtx does not answer, cameras are judged on their own HTTP and RTSP answers."""
    rig = Rig(("swing", "ATOM_CAKP1JZJP"))
    rig.mediamtx.set_down(True)
    rig.start()
    assert rig.state() == ONLINE


def test_survives_every_dependency_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exceptions and hangs from the client, the probe, mediamtx and listeners never stop the loop."""
    rig = Rig(("swing", "ATOM_CAKP1JZJP"), ("cam2", CAM2), interval=10.0)
    rig.capture_log(monkeypatch)

    class Broken:
        def status(self, timeout: float | None = None) -> Any:
            raise RuntimeError("client bug")

    class Hanging:
        def list_paths(self) -> Deferred[list[dict[str, Any]]]:
            return Deferred()

    rig.monitor._clients = {"swing": Broken(), "cam2": rig.bench.clients["cam2"]}
    rig.monitor.on_change.insert(0, lambda *args: 1 / 0)
    rig.probe.crash.add("swing")
    rig.probe.hang.add("cam2")
    rig.monitor._mediamtx = Hanging()
    rig.start()
    rig.bench.pump(35)
    assert rig.monitor.rounds == 4
    assert rig.state("swing") == OFFLINE and "client bug" in rig.monitor.state("swing").reason
    assert rig.state("cam2") == DEGRADED and "no answer within" in rig.monitor.state("cam2").reason
    assert len(rig.changes) == 2  # the broken listener did not keep the good one from hearing
    assert any("a health listener failed" in m for m in rig.messages())
    rig.probe.crash.clear()
    rig.probe.hang.clear()
    rig.monitor._clients = rig.bench.clients
    rig.monitor._mediamtx = rig.api
    rig.bench.pump(10)
    assert rig.state("swing") == rig.state("cam2") == ONLINE


def test_stop_abandons_a_round_in_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """stopService fires at once even while checks hang, logs no failure, and no state changes afterwards."""
    rig = Rig(("swing", "ATOM_CAKP1JZJP"))
    rig.capture_log(monkeypatch)
    rig.start()
    rig.bench.sims["swing"].set_offline(True)
    rig.bench.pump(rig.monitor.interval)
    done: list[Any] = []
    rig.monitor.stopService().addBoth(done.append)
    assert done == [None]
    rig.bench.pump(3 * rig.monitor.interval)
    assert rig.state() == ONLINE and len(rig.changes) == 1
    assert not any(event.get("log_failure") for event in rig.events)


def test_timeout_defaults_to_a_third_of_the_interval() -> None:
    """Checks get at most 5 s, and at most a third of a short interval."""
    rig = Rig(("swing", "ATOM_CAKP1JZJP"), interval=3.0)
    assert rig.monitor.timeout == 1.0
    assert Rig(("swing", "ATOM_CAKP1JZJP")).monitor.timeout == 5.0


def test_checks_are_counted_with_their_duration() -> None:
    """Each round counts one HTTP and one RTSP check per camera by outcome, with the time each took."""
    rig = Rig(("swing", "ATOM_CAKP1JZJP"))
    registry = Registry()
    rig.monitor = HealthMonitor(
        rig.bench.clock, list(rig.bench.cameras.values()), rig.bench.clients, rig.api, rig.probe, 30.0,
        metrics=registry,
    )
    rig.probe.hang.add("swing")
    rig.start()
    rig.bench.until(lambda: rig.monitor.rounds == 1)
    checks = {
        (sample.name, sample.labels["check"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(registry.exposition()) for sample in family.samples
        if sample.labels.get("camera") == "swing"
    }
    assert checks == {
        ("atomrelay_camera_check_seconds_count", "http", "ok"): 1,
        ("atomrelay_camera_check_seconds_sum", "http", "ok"): 0,
        ("atomrelay_camera_check_seconds_count", "rtsp", "failed"): 1,
        ("atomrelay_camera_check_seconds_sum", "rtsp", "failed"): pytest.approx(rig.monitor.timeout * 1.25, abs=0.06),
    }
