"""SIGHUP reload and SIGTERM stop of a real `atomrelay run` process on loopback."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from lxml import etree
from twisted.internet.defer import Deferred
from twisted.internet import reactor
from twisted.internet.task import Clock

from atomrelay.sim.camera import SimulatedCamera, listen_camera
from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx
from atomrelay.xml import ns
from tests.helpers import VENV_BIN, child_env, free_port, hold_writes, poll
from tests.onvif.conftest import soap_envelope, soap_iso, soap_security
from tests.test_cli import answers, spawn

pytestmark = pytest.mark.integration


def write_config(path: Path, api_port: int, onvif_port: int, cameras: list[tuple[str, int]], extra: str = "",
                 onvif_extra: tuple[str, ...] = (), camera_onvif_ports: tuple[int, ...] = (),
                 model: str = "ATOM_CamV3C") -> None:
    """A config on loopback: ``cameras`` are (id, HTTP port); ``camera_onvif_ports`` (per_camera) their ONVIF ports."""
    lines = [
        "onvif:",
        "  bind: 127.0.0.1",
        f"  port: {onvif_port}",
        "  users: [{username: admin, password: 'pw-123', role: Administrator}]",
        *(f"  {line}" for line in onvif_extra),
        "discovery: {enabled: false}",
        "mediamtx:",
        f"  api_url: http://127.0.0.1:{api_port}",
        "  poll_interval: 200ms",
        "  wait_timeout: 5s",
        f"state_dir: {path.parent / 'state'}",
        "cameras:",
    ]
    for index, (cam_id, port) in enumerate(cameras):
        lines += [
            f"  - id: {cam_id}",
            "    host: 127.0.0.1",
            f"    http_port: {port}",
            *([f"    onvif_port: {camera_onvif_ports[index]}"] if camera_onvif_ports else []),
            f"    model: {model}",
            "    streams: [{name: main, rtsp_path: video0_unicast, codec: h264, audio: transcode}]",
        ]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")


async def call(url: str, operation: etree._Element) -> tuple[int, etree._Element]:
    """POST an authenticated SOAP 1.2 request and parse the answer."""
    body = soap_envelope(operation, [soap_security("admin", "pw-123", soap_iso(time.time()))])
    response = await treq.post(url, body, headers={"Content-Type": "application/soap+xml"}, timeout=10)
    return response.code, etree.fromstring(await response.content())


async def profile_tokens(url: str) -> list[str]:
    """The tokens of the Media profiles GetProfiles lists."""
    code, answer = await call(url, op(ns.TRT, "GetProfiles"))
    assert code == 200, etree.tostring(answer)
    return [profile.get("token") or "" for profile in answer.iter(ns.q(ns.TRT, "Profiles"))]


def op(namespace: str, name: str, *children: etree._Element) -> etree._Element:
    element = etree.Element(ns.q(namespace, name), nsmap={"op": namespace})
    element.extend(children)
    return element


def child(namespace: str, name: str, text: str) -> etree._Element:
    element = etree.Element(ns.q(namespace, name))
    element.text = text
    return element


async def subscribe(port: int) -> str:
    """A pull point on the relay at ``port``: its address."""
    code, answer = await call(f"http://127.0.0.1:{port}/onvif/events_service", op(
        ns.TEV, "CreatePullPointSubscription", child(ns.TEV, "InitialTerminationTime", "PT600S")))
    assert code == 200, etree.tostring(answer)
    address = answer.findtext(f".//{{{ns.TEV}}}SubscriptionReference/{{{ns.WSA}}}Address")
    assert address
    return address


def saved_subscriptions(path: Path) -> list[str]:
    """The addresses of the subscriptions saved in ``path``'s state directory."""
    saved = json.loads((path.parent / "state" / "event_subscriptions.json").read_text())
    return [entry["address"] for entry in saved["subscriptions"]]


@pytest_twisted.ensureDeferred
async def test_sighup_applies_good_config_keeps_subscriptions_and_refuses_bad(tmp_path: Path) -> None:
    """A good SIGHUP adds the new camera's path and profile without dropping the port or a pull-point
    subscription; a bad one keeps the old config, logs the key and line, and SIGTERM then exits 0 within 5 s."""
    fake = FakeMediamtx(Clock())
    api = listen_mediamtx(reactor, fake)
    cam1 = listen_camera(reactor, SimulatedCamera(reactor, "ATOM_CamV3C"))
    cam2 = listen_camera(reactor, SimulatedCamera(reactor, "ATOM_CamV3C"))
    onvif_port = free_port()
    cfg = tmp_path / "config.yaml"
    write_config(cfg, api.getHost().port, onvif_port, [("living", cam1.getHost().port)])
    proto, process = spawn([str(VENV_BIN / "atomrelay"), "run", "-c", str(cfg)], tmp_path)
    base = f"http://127.0.0.1:{onvif_port}/onvif"
    try:
        await poll(lambda: "living/main" in fake.paths, timeout=30, what="first path registered")
        address = await subscribe(onvif_port)

        write_config(cfg, api.getHost().port, onvif_port,
                     [("living", cam1.getHost().port), ("porch", cam2.getHost().port)])
        process.signalProcess("HUP")
        await poll(lambda: "porch/main" in fake.paths, timeout=15, what="the new camera's path after SIGHUP")
        await poll(lambda: b"config reloaded" in proto.output, timeout=10, what="the reload log line")
        code, profiles = await call(f"{base}/media_service", op(ns.TRT, "GetProfiles"))
        assert code == 200
        assert {p.get("token") for p in profiles.iter(f"{{{ns.TRT}}}Profiles")} >= {"living.main", "porch.main"}
        code, pulled = await call(address, op(ns.TEV, "PullMessages", child(ns.TEV, "Timeout", "PT1S"),
                                              child(ns.TEV, "MessageLimit", "10")))
        assert code == 200, etree.tostring(pulled)
        assert pulled.find(f".//{{{ns.TEV}}}PullMessagesResponse") is not None

        cfg.write_text(cfg.read_text().replace("codec: h264", "codec: h266", 1), encoding="utf-8")
        process.signalProcess("HUP")
        await poll(lambda: b"config reload refused" in proto.output, timeout=10, what="the refusal log line")
        assert b"cameras[0].streams[0].codec: 'h266' is not one of h264, h265 (line" in proto.output
        assert await answers(onvif_port)
        assert {"living/main", "porch/main"} <= set(fake.paths)

        started = time.monotonic()
        process.signalProcess("TERM")
        code_signal: Any = await proto.ended
        assert time.monotonic() - started < 5.0
    finally:
        if process.pid is not None:
            process.signalProcess("KILL")
        for port in (api, cam1, cam2):
            await port.stopListening()
    assert code_signal == (0, None), proto.output.decode()
    assert b"Traceback" not in proto.output


@pytest_twisted.ensureDeferred
async def test_sighup_removes_a_camera_and_its_path(tmp_path: Path) -> None:
    """Removing a camera and sending SIGHUP deletes its mediamtx path and leaves the other alone."""
    fake = FakeMediamtx(Clock())
    api = listen_mediamtx(reactor, fake)
    cam = listen_camera(reactor, SimulatedCamera(reactor, "AC1"))
    onvif_port = free_port()
    cfg = tmp_path / "config.yaml"
    write_config(cfg, api.getHost().port, onvif_port, [("a", cam.getHost().port), ("b", cam.getHost().port)])
    proto, process = spawn([str(VENV_BIN / "atomrelay"), "run", "-c", str(cfg)], tmp_path)
    try:
        await poll(lambda: {"a/main", "b/main"} <= set(fake.paths), timeout=30, what="both paths")
        media = f"http://127.0.0.1:{onvif_port}/onvif/media_service"
        assert await profile_tokens(media) == ["a.main", "b.main"]
        writes_before = len(fake.writes)
        write_config(cfg, api.getHost().port, onvif_port, [("a", cam.getHost().port)])
        process.signalProcess("HUP")
        await poll(lambda: "b/main" not in fake.paths, timeout=15, what="the removed camera's path deleted")
        assert "a/main" in fake.paths
        assert [w.path for w in fake.writes[writes_before:]] == ["/v3/config/paths/delete/b/main"]
        assert await answers(onvif_port)
        # The listener's routes to the SOAP endpoints follow the new generation's resources.
        assert await profile_tokens(media) == ["a.main"]
        process.signalProcess("TERM")
        await proto.ended
    finally:
        if process.pid is not None:
            process.signalProcess("KILL")
        await api.stopListening()
        await cam.stopListening()


@pytest_twisted.ensureDeferred
async def test_reload_applies_clock_skew_and_http_basic(tmp_path: Path) -> None:
    """onvif.max_clock_skew, http_basic and allow_password_text take effect on a reload, as every key but state_dir does."""
    from atomrelay.config import load_config
    from atomrelay.wiring import build_relay

    path = tmp_path / "config.yaml"
    ports = (free_port(), free_port(), [("cam1", free_port())])
    write_config(path, *ports)
    relay = build_relay(load_config(str(path)), reactor, config_path=str(path))
    authenticator = relay.parts.authenticator
    assert (authenticator.max_clock_skew, authenticator.http_basic, authenticator.allow_password_text) == (
        300.0, False, True)
    assert not any(value.startswith(b"Basic") for value in authenticator.challenge_headers())

    write_config(path, *ports, onvif_extra=("max_clock_skew: 30s", "http_basic: true", "allow_password_text: false"))
    await relay.reload()

    assert relay.parts.authenticator is authenticator  # its replay memory is kept
    assert (authenticator.max_clock_skew, authenticator.http_basic, authenticator.allow_password_text) == (
        30.0, True, False)
    assert any(value.startswith(b"Basic") for value in authenticator.challenge_headers())


def reloading_relay(tmp_path: Path, model: str = "ATOM_CamV3C") -> tuple[Path, tuple[int, int, list[tuple[str, int]]], Any]:
    """A relay (built, not started) on a loopback config file it reloads on request: (path, its ports, relay)."""
    from atomrelay.config import load_config
    from atomrelay.wiring import build_relay

    path = tmp_path / "config.yaml"
    ports = (free_port(), free_port(), [("cam1", free_port())])
    write_config(path, *ports, model=model)
    return path, ports, build_relay(load_config(str(path)), reactor, config_path=str(path))


def per_camera_config(path: Path, api_port: int, cameras: list[tuple[str, int, int]]) -> None:
    """A per_camera config: (camera id, camera HTTP port, ONVIF port) per camera."""
    write_config(path, api_port, free_port(), [(cam_id, http) for cam_id, http, _ in cameras],
                 onvif_extra=("mode: per_camera",), camera_onvif_ports=tuple(port for _, _, port in cameras))


@pytest_twisted.ensureDeferred
async def test_reload_onto_a_taken_port_keeps_serving_the_old_config(tmp_path: Path) -> None:
    """A reload whose new per-camera port is taken by someone else changes nothing: the old ports answer
    with the old config, one line says why, and systemd hears READY=1 with a STATUS saying it failed."""
    import socket
    import uuid

    from tests.packaging.support import NotifyListener
    from tests.test_cli import Collect

    fake = FakeMediamtx(Clock())
    api = listen_mediamtx(reactor, fake)
    cam = listen_camera(reactor, SimulatedCamera(reactor, "ATOM_CamV3C"))
    living_port = free_port()
    cfg = tmp_path / "config.yaml"
    per_camera_config(cfg, api.getHost().port, [("living", cam.getHost().port, living_port)])
    listener = NotifyListener("\0atomrelay-reload-" + uuid.uuid4().hex)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    proto = Collect()
    args = [str(VENV_BIN / "atomrelay"), "run", "-c", str(cfg)]
    env = {**child_env(), "NOTIFY_SOCKET": listener.env_value}
    process: Any = reactor.spawnProcess(proto, args[0], args, env=env, path=str(tmp_path))
    media = f"http://127.0.0.1:{living_port}/onvif/media_service"
    try:
        await poll(lambda: listener.seen("READY"), timeout=30, what="READY=1 at start")
        assert await profile_tokens(media) == ["living.main"]
        listener.drain().clear()
        per_camera_config(cfg, api.getHost().port, [("living", cam.getHost().port, living_port),
                                                     ("porch", cam.getHost().port, taken.getsockname()[1])])
        process.signalProcess("HUP")
        await poll(lambda: b"config reload failed" in proto.output, timeout=15, what="the failure log line")
        await poll(lambda: listener.seen("READY"), timeout=5, what="READY=1 after the failed reload")
        messages = list(listener.drain())
        assert messages[0].get("RELOADING") == "1"
        ready = next(m for m in messages if "READY" in m)
        assert "config reload failed" in ready["STATUS"] and "previous config" in ready["STATUS"]
        assert f"127.0.0.1:{taken.getsockname()[1]}".encode() in proto.output
        assert await profile_tokens(media) == ["living.main"]
        assert "porch/main" not in fake.paths and "living/main" in fake.paths
        process.signalProcess("TERM")
        await proto.ended
    finally:
        if process.pid is not None:
            process.signalProcess("KILL")
        taken.close()
        listener.close()
        await api.stopListening()
        await cam.stopListening()
    assert b"Traceback" not in proto.output


@pytest_twisted.ensureDeferred
async def test_reload_with_a_part_that_fails_to_build_keeps_the_old_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception while building the new generation leaves the running one (listeners, users, devices)
    untouched, is logged once, and no Deferred is left with an unhandled error."""
    import gc

    from twisted.logger import globalLogPublisher

    from atomrelay.onvif import imaging

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    path, ports, relay = reloading_relay(tmp_path)
    relay.startService()
    try:
        await poll(lambda: _answers_sync(ports[1]), what="the relay listening")
        running, users = relay.generation, relay.parts.users
        outcomes: list[str] = []
        relay.on_reloaded.append(outcomes.append)

        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("a bug in building the imaging service")

        monkeypatch.setattr(imaging.ImagingService, "__init__", broken)
        write_config(path, *ports, onvif_extra=("max_clock_skew: 30s",))
        await relay.reload()
        assert outcomes == ["config reload failed: a bug in building the imaging service"]
        assert relay.generation is running and relay.parts.users is users
        assert relay.parts.authenticator.max_clock_skew == 300.0
        assert await profile_tokens(f"http://127.0.0.1:{ports[1]}/onvif/media_service") == ["cam1.main"]
        errors = [e for e in events if e.get("log_level") is not None and e["log_level"].name in ("error", "critical")]
        assert len(errors) == 1 and "config reload failed" in errors[0]["log_format"]
    finally:
        await relay.stopService()
        gc.collect()
        globalLogPublisher.removeObserver(events.append)
    assert not [e for e in events if "Unhandled error in Deferred" in str(e.get("log_format", ""))]


def _answers_sync(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest_twisted.ensureDeferred
async def test_a_failure_while_switching_is_reported_and_systemd_still_hears_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug past the point of no return (starting the new workers) is logged, the outcome says the reload
    failed, and the reload hooks (systemd's READY) still run."""
    from atomrelay.relay import RelayService

    path, ports, relay = reloading_relay(tmp_path)
    relay.startService()
    try:
        outcomes: list[str] = []
        relay.on_reloaded.append(outcomes.append)

        def broken(self: Any, generation: Any) -> None:
            raise RuntimeError("a bug in starting the workers")

        monkeypatch.setattr(RelayService, "start_workers", broken)
        await relay.reload()
        assert outcomes == ["config reload failed while switching: RuntimeError: a bug in starting the workers"]
        monkeypatch.undo()
        from atomrelay.relay import relay_status

        assert relay_status(relay.config, relay).endswith("RuntimeError: a bug in starting the workers (restart the relay)")
    finally:
        monkeypatch.undo()
        await relay.stopService()


@pytest_twisted.ensureDeferred
async def test_a_bug_while_reading_the_config_is_reported_and_systemd_still_hears_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception other than a config error while reloading still ends the reload: the outcome says it failed,
    the reload hooks (systemd's READY after RELOADING) run, the old generation serves, and a later reload works."""
    import atomrelay.relay

    path, ports, relay = reloading_relay(tmp_path)
    relay.startService()
    try:
        running = relay.generation
        outcomes: list[str] = []
        relay.on_reloaded.append(outcomes.append)

        def broken(path: str) -> Any:
            raise RuntimeError("a bug in reading the config")

        monkeypatch.setattr(atomrelay.relay, "load_config", broken)
        await relay.reload()
        assert outcomes == ["config reload failed: RuntimeError: a bug in reading the config"]
        assert relay.generation is running
        monkeypatch.undo()
        await relay.reload()
        assert outcomes[1:] == ["config reloaded"]
        assert await profile_tokens(f"http://127.0.0.1:{ports[1]}/onvif/media_service") == ["cam1.main"]
    finally:
        monkeypatch.undo()
        await relay.stopService()


@pytest_twisted.ensureDeferred
async def test_a_change_saved_during_a_reload_is_in_the_new_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CreateUsers whose write is still on the disk when SIGHUP's reload starts is served by the new generation
    (the reload waits for pending writes before it reads the state)."""

    from atomrelay.config import User

    release = hold_writes(monkeypatch, "users")
    path, ports, relay = reloading_relay(tmp_path)
    relay.startService()
    try:
        creating = Deferred.fromCoroutine(relay.parts.users.create([User("viewer", "pw-viewer", "User")]))
        reloading = relay.reload()
        assert not reloading.called
        release.set()
        await creating
        await reloading
        assert relay.reload_outcome == "config reloaded"
        assert relay.parts.users.lookup("viewer") == User("viewer", "pw-viewer", "User")
    finally:
        release.set()
        await relay.stopService()


@pytest_twisted.ensureDeferred
async def test_a_preset_saved_while_a_reload_starts_is_in_the_new_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SetPreset still waiting for the camera's position when SIGHUP's reload starts: the reload waits for it, and
    the new generation serves the preset. One asked of the old generation after the reload began waits, then is
    refused (sent again, it reaches the new generation) instead of saving what the new generation would not see."""
    from atomrelay.camera.client import CameraClient, MotorPosition
    from atomrelay.camera.ptz import PtzController
    from atomrelay.state import ChangeRetired

    controllers: list[PtzController] = []
    real_init = PtzController.__init__

    def recording_init(self: PtzController, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        controllers.append(self)

    readings: list[Deferred[MotorPosition]] = []

    def held_position(self: CameraClient, timeout: float | None = None) -> Deferred[MotorPosition]:
        readings.append(Deferred())
        return readings[-1]

    monkeypatch.setattr(PtzController, "__init__", recording_init)
    monkeypatch.setattr(CameraClient, "position", held_position)
    path, ports, relay = reloading_relay(tmp_path, model="ATOM_CAKP1JZJP")
    relay.startService()
    try:
        old = controllers[-1]
        saving = Deferred.fromCoroutine(old.set_preset(name="Door"))
        assert len(readings) == 1
        reloading = relay.reload()
        assert not reloading.called  # waiting for the preset being saved
        late = Deferred.fromCoroutine(old.set_preset(name="Window"))
        assert len(readings) == 1  # held at the door: it has not asked the camera
        readings[0].callback(MotorPosition(pan=120.0, tilt=40.0, idle=True))
        token = await saving
        await reloading
        assert relay.reload_outcome == "config reloaded"
        new = controllers[-1]
        assert new is not old and [(p.token, p.name) for p in new.presets()] == [(token, "Door")]
        with pytest.raises(ChangeRetired, match="send it again"):
            await late
        assert len(readings) == 1  # refused before it asked the camera anything
        later = Deferred.fromCoroutine(new.set_preset(name="Window"))
        await poll(lambda: len(readings) == 2, timeout=5, what="the SetPreset sent again asking the camera")
        readings[1].callback(MotorPosition(pan=10.0, tilt=10.0, idle=True))
        await later
        assert [p.name for p in new.presets()] == ["Door", "Window"]
    finally:
        for reading in readings:
            if not reading.called:
                reading.callback(MotorPosition(pan=0.0, tilt=0.0, idle=True))
        await relay.stopService()


@pytest_twisted.ensureDeferred
async def test_a_reload_and_a_stop_end_the_ptz_moves_of_the_generation_they_retire(tmp_path: Path) -> None:
    """The PTZ controllers are a worker of their generation: a reload stops the old generation's (its continuous
    moves end, as the NVR's Stop now reaches the new controllers) and starts the new one's; stopping the relay
    stops those."""
    from atomrelay.camera.ptz import PtzControllers

    def controllers() -> PtzControllers:
        assert relay.generation is not None
        (found,) = [svc for svc in relay.generation.workers if isinstance(svc, PtzControllers)]
        return found

    path, ports, relay = reloading_relay(tmp_path, model="ATOM_CAKP1JZJP")
    relay.startService()
    try:
        old = controllers()
        assert old.running and set(old.controllers) == {"cam1"}
        await relay.reload()
        assert relay.reload_outcome == "config reloaded"
        new = controllers()
        assert new is not old and new.running and not old.running
    finally:
        await relay.stopService()
    assert not new.running


class ClockTimers:
    """The reactor, with its timers on a ``Clock`` (sockets and threads stay real)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def callLater(self, delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
        return self.clock.callLater(delay, f, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


@pytest_twisted.ensureDeferred
async def test_system_reboot_restarts_the_workers_once_and_never_after_a_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SystemReboot restarts the workers a second after its answer; one asked while a restart is under way joins it;
    stopping the relay within the second cancels the pending restart (the workers of a stopped relay stay stopped)."""
    from atomrelay.config import load_config
    from atomrelay.net import ClosePools
    from atomrelay.wiring import build_relay

    def restart_pending() -> bool:
        return any("restart_workers_soon" in getattr(call.func, "__qualname__", "") for call in clock.getDelayedCalls())

    clock = Clock()
    path, onvif_port = tmp_path / "config.yaml", free_port()
    write_config(path, free_port(), onvif_port, [("cam1", free_port())])
    relay = build_relay(load_config(str(path)), ClockTimers(clock))
    relay.startService()
    try:
        assert relay.generation is not None
        workers = relay.generation.workers
        starts: list[float] = []
        real_start, real_stop = workers.startService, workers.stopService
        held: Deferred[None] = Deferred()
        stops: list[float] = []

        def slow_stop() -> Any:  # the first stop takes until ``held`` fires
            real_stop()
            stops.append(clock.seconds())
            return held if len(stops) == 1 else None

        (pools,) = [svc for svc in relay if isinstance(svc, ClosePools)]
        pool_stops: list[float] = []
        real_pools_stop = pools.stopService
        monkeypatch.setattr(pools, "stopService", lambda: (pool_stops.append(clock.seconds()), real_pools_stop())[1])
        monkeypatch.setattr(workers, "startService", lambda: (starts.append(clock.seconds()), real_start())[1])
        monkeypatch.setattr(workers, "stopService", slow_stop)
        url = f"http://127.0.0.1:{onvif_port}/onvif/device_service"
        code, _ = await call(url, op(ns.TDS, "SystemReboot"))
        assert code == 200 and restart_pending() and starts == [] and workers.running
        clock.advance(1.0)
        assert stops == [1.0] and not workers.running  # under way, waiting for the stop
        code, _ = await call(url, op(ns.TDS, "SystemReboot"))
        assert code == 200 and not restart_pending()
        held.callback(None)
        await poll(lambda: starts == [1.0] and bool(workers.running), timeout=10, what="the workers to restart")
        clock.advance(5.0)
        assert starts == [1.0] and stops == [1.0]
        assert pool_stops == []  # the pools outlive a restart: closing them has nothing to do with it
        code, _ = await call(url, op(ns.TDS, "SystemReboot"))
        assert code == 200 and restart_pending()
    finally:
        await relay.stopService()
    assert not restart_pending()
    clock.advance(5.0)
    assert starts == [1.0] and not workers.running and not relay.running


@pytest_twisted.ensureDeferred
async def test_a_reload_during_a_system_reboot_restart_keeps_the_new_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload that switches generations while a SystemReboot restart is still stopping services: the restart
    then starts the children of that moment, so the new generation serves and runs, the retired one stays
    stopped, and nothing is logged as an error."""
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    path, ports, relay = reloading_relay(tmp_path)
    relay.startService()
    try:
        assert relay.generation is not None
        old = relay.generation.workers
        real_stop = old.stopService
        held: Deferred[None] = Deferred()
        stops: list[int] = []

        def slow_stop() -> Any:  # the restart's stop of the old workers takes until ``held`` fires
            real_stop()
            stops.append(1)
            return held if len(stops) == 1 else None

        monkeypatch.setattr(old, "stopService", slow_stop)
        restarting = relay.restart_workers()
        assert stops == [1] and not old.running and not restarting.called
        await relay.reload()
        assert relay.reload_outcome == "config reloaded"
        new = relay.generation.workers
        assert new is not old and new.running and old not in list(relay)
        held.callback(None)
        await restarting
        assert new.running and not old.running and all(svc.running for svc in relay)
        assert relay.generation.workers is new and relay.parts.events.running
        assert await profile_tokens(f"http://127.0.0.1:{ports[1]}/onvif/media_service") == ["cam1.main"]
    finally:
        await relay.stopService()
        globalLogPublisher.removeObserver(events.append)
    assert not old.running and not new.running
    errors = [e for e in events if e.get("log_level") is not None and e["log_level"].name in ("error", "critical")]
    assert errors == []


@pytest_twisted.ensureDeferred
async def test_stopping_the_relay_closes_its_idle_connections_to_mediamtx_and_the_cameras(tmp_path: Path) -> None:
    """The HTTP clients keep connections open between requests; a stopped relay closes them, so neither mediamtx
    nor a camera is left holding one until its own idle timeout."""
    from twisted.protocols.policies import WrappingFactory
    from twisted.web.server import Site

    from atomrelay.config import load_config
    from atomrelay.wiring import build_relay

    api = WrappingFactory(Site(FakeMediamtx(Clock())))
    camera = WrappingFactory(Site(SimulatedCamera(reactor, "ATOM_CamV3C")))
    ports = [reactor.listenTCP(0, factory, interface="127.0.0.1") for factory in (api, camera)]
    try:
        path = tmp_path / "config.yaml"
        write_config(path, ports[0].getHost().port, free_port(), [("cam1", ports[1].getHost().port)])
        relay = build_relay(load_config(str(path)), reactor)
        relay.startService()
        try:
            await poll(lambda: bool(api.protocols) and bool(camera.protocols), timeout=10,
                       what="the relay to talk to mediamtx and the camera")
        finally:
            await relay.stopService()
        await poll(lambda: not api.protocols and not camera.protocols, timeout=5,
                   what="the relay's connections to close")
    finally:
        for port in ports:
            await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_stop_and_a_system_reboot_wait_for_the_saves_answered_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull point is answered before its save is on the disk (a slow SD card). A SystemReboot restart reads the
    saved subscriptions back only once that save is written, so the pull point still answers; a stop fires only
    once it is written, so it is restored after a restart of the process."""
    path, ports, relay = reloading_relay(tmp_path)
    relay.startService()
    stopped = None
    try:
        release = hold_writes(monkeypatch, "event_subscriptions")
        early = await subscribe(ports[1])
        restarted = relay.restart_workers()
        workers = relay.generation.workers
        await poll(lambda: restarted.called or not workers.running, timeout=5, what="the restart to stop the workers")
        assert not restarted.called  # waiting for the disk
        release.set()
        await restarted
        code, pulled = await call(early, op(ns.TEV, "PullMessages", child(ns.TEV, "Timeout", "PT1S"),
                                            child(ns.TEV, "MessageLimit", "10")))
        assert code == 200, etree.tostring(pulled)
        release.clear()
        late = await subscribe(ports[1])
        stopped = relay.stopService()
        await poll(lambda: stopped.called or not workers.running, timeout=5, what="the services to stop")
        assert not stopped.called  # waiting for the disk
        release.set()
        await stopped
        assert set(saved_subscriptions(path)) == {early, late}
    finally:
        release.set()
        if stopped is None:
            await relay.stopService()


@pytest_twisted.ensureDeferred
async def test_push_consumers_may_not_reach_mediamtx(tmp_path: Path) -> None:
    """The relay's Notify client refuses mediamtx's API host (mediamtx trusts the relay's address), as configured now."""
    from atomrelay.config import load_config
    from atomrelay.events.consumers import ConsumerRefused
    from atomrelay.wiring import build_relay

    path = tmp_path / "config.yaml"
    write_config(path, free_port(), free_port(), [("cam1", free_port())])
    path.write_text(path.read_text().replace("api_url: http://127.0.0.1:", "api_url: http://192.0.2.9:"))
    relay: Any = build_relay(load_config(str(path)), reactor)
    with pytest.raises(ConsumerRefused, match="192.0.2.9 .a camera of this relay or its mediamtx"):
        await relay.parts.notify_client.check("http://192.0.2.9:9997/v3/config/paths/delete/cam1/main")
    assert await relay.parts.notify_client.check("http://192.0.2.10:8123/hook") == "http://192.0.2.10:8123/hook"
