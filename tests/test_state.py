"""Saved state: writes leave the reactor, one at a time per document, latest winning; bad files are kept aside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.python.failure import Failure

from atomrelay.config import parse_config
from atomrelay.sim.camera import SimulatedCamera, listen_camera
from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx
from atomrelay.state import ChangeRetired, StateError, StateStore
from atomrelay.wiring import build_relay
from atomrelay.xml import ns
from tests.helpers import free_port, hold_writes, poll, unreadable
from tests.test_reload import call, child, op


class ManualRunner:
    """A ``Runner`` whose writes run only when the test says so, to see what waits for what."""

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[], None], Deferred[None]]] = []

    def __call__(self, function: Callable[[], None]) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        self.pending.append((function, done))
        return done

    def finish_one(self) -> None:
        function, done = self.pending.pop(0)
        try:
            function()
        except Exception:  # noqa: BLE001 - handed to the waiting Deferred
            done.errback(Failure())
        else:
            done.callback(None)


def test_saves_of_one_document_are_written_one_at_a_time_latest_winning(tmp_path: Path) -> None:
    """While a save is on the disk, later saves wait; of those only the latest is written, and all are told."""
    runner = ManualRunner()
    store = StateStore(tmp_path, run=runner)
    outcomes: list[Any] = []
    for number in range(3):
        store.save("doc", {"n": number}).addBoth(outcomes.append)
    store.save("other", {"x": 1}).addBoth(outcomes.append)
    assert len(runner.pending) == 2  # "doc" 0 and "other": one write per document at a time
    runner.finish_one()
    assert json.loads((tmp_path / "doc.json").read_text()) == {"n": 0}
    assert len(runner.pending) == 2  # "other", then "doc" 2 (1 was superseded)
    runner.finish_one()
    runner.finish_one()
    assert json.loads((tmp_path / "doc.json").read_text()) == {"n": 2}
    assert outcomes == [None, None, None, None]
    assert not runner.pending


def test_flushed_waits_for_the_saves_made_so_far_and_no_later_ones(tmp_path: Path) -> None:
    """``flushed`` (a stop, a SystemReboot restart, a reload) fires once what was saved before it is on the disk,
    however many saves follow: a client that keeps subscribing cannot hold it up, nor a paused reload."""
    runner = ManualRunner()
    store = StateStore(tmp_path, run=runner)
    store.save("doc", {"n": 0})
    store.save("doc", {"n": 1})
    store.save("other", {"x": 1})
    flushed = store.flushed()
    paused = store.pause_changes()
    runner.finish_one()  # doc 0 written; doc 1 is next
    store.save("doc", {"n": 2})
    runner.finish_one()  # other
    assert not flushed.called and not paused.called
    runner.finish_one()  # doc 1 written; doc 2 (saved after) is still on its way
    assert flushed.called and paused.called and not store.flushed().called
    assert json.loads((tmp_path / "doc.json").read_text()) == {"n": 1}
    store.resume_changes(retire=False)
    assert store.flushed().called is False  # doc 2 is on its way
    runner.finish_one()
    assert store.flushed().called


def test_flushed_still_waits_for_the_other_saves_when_one_write_fails(tmp_path: Path) -> None:
    """One document that cannot be written (its path is a directory) fails its own save only: ``flushed`` and a
    paused reload still wait for the other documents' saves."""
    (tmp_path / "bad.json").mkdir()
    runner = ManualRunner()
    store = StateStore(tmp_path, run=runner)
    failures: list[Failure] = []
    store.save("bad", {"x": 1}).addErrback(failures.append)
    store.save("good", {"y": 1})
    flushed, paused = store.flushed(), store.pause_changes()
    runner.finish_one()  # bad fails
    assert len(failures) == 1 and not flushed.called and not paused.called
    runner.finish_one()
    assert flushed.called and paused.called and json.loads((tmp_path / "good.json").read_text()) == {"y": 1}


def test_a_failed_write_fails_every_caller_waiting_for_it(tmp_path: Path) -> None:
    """A write that cannot happen (the directory is a file) fails its callers with StateError."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = StateStore(blocker / "state")
    failures: list[Failure] = []
    store.save("doc", {}).addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(StateError)


@pytest.mark.parametrize("content", ["{not json", "[1, 2, 3]", "\"a string\"", "[" * 100_000])
def test_an_unreadable_file_is_moved_aside_not_overwritten(tmp_path: Path, content: str) -> None:
    """Bad JSON or another JSON type than expected: defaults are used and the file is kept as .corrupt-<time>."""
    (tmp_path / "presets.json").write_text(content)
    store = StateStore(tmp_path)
    assert store.load("presets", {}) == {}
    kept = list(tmp_path.glob("presets.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == content
    assert not (tmp_path / "presets.json").exists()
    store.save("presets", {"fine": True})
    assert kept[0].read_text() == content


def test_a_file_that_cannot_be_read_is_never_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A saved document that exists but cannot be read (a root-owned file after one ``sudo atomrelay run``): the
    defaults serve, and every save of it fails saying what to fix, so the entries it holds are not replaced."""
    saved = tmp_path / "users.json"
    saved.write_text('{"nvr": {}, "ha": {}}')
    unreadable(monkeypatch, saved)
    store = StateStore(tmp_path)
    assert store.load("users", {}) == {}
    assert store.unreadable("users") == "Permission denied"
    failures: list[Failure] = []
    store.save("users", {"cam-viewer": {}}).addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(StateError)
    assert "could not be read at start (Permission denied)" in str(failures[0].value)
    assert "make it readable by the relay's user, then restart" in str(failures[0].value)
    store.save("other", {"x": 1})
    monkeypatch.undo()
    assert saved.read_text() == '{"nvr": {}, "ha": {}}'
    assert json.loads((tmp_path / "other.json").read_text()) == {"x": 1}


def test_an_identity_without_a_valid_uuid_is_moved_aside_and_an_unreadable_one_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-edited identity that lost a digit is kept as .corrupt-<time> before a new one is made; one that
    cannot be read is an error (a new identity would make every NVR see new cameras), and it is left as it is."""
    from atomrelay.identity import load_identity

    saved = tmp_path / "identity.json"
    saved.write_text('{"uuid": "0b3c5e8e-1f7a-4c4e-9d61-8a2b7e3f4c5"}')
    identity = load_identity(StateStore(tmp_path))
    (kept,) = tmp_path.glob("identity.json.corrupt-*")
    assert kept.read_text() == '{"uuid": "0b3c5e8e-1f7a-4c4e-9d61-8a2b7e3f4c5"}'
    assert json.loads(saved.read_text()) == {"uuid": str(identity.uuid)}
    unreadable(monkeypatch, saved)
    with pytest.raises(StateError, match="identity.json .Permission denied.: make it readable"):
        load_identity(StateStore(tmp_path))
    monkeypatch.undo()
    assert json.loads(saved.read_text()) == {"uuid": str(identity.uuid)}


def test_the_relay_removes_temporary_files_of_interrupted_writes(tmp_path: Path) -> None:
    """A write killed between its temporary file and the rename leaves ``.<name>.<random>.tmp``; the relay removes
    those older than a minute when it is built, and keeps every other file (a newer one may be a running relay's)."""
    import os
    import time

    state = tmp_path / "state"
    state.mkdir()
    old = time.time() - 120
    for name in (".users.k2j4h1ab.tmp", ".ptz-swing.x_9Kq2Zz.tmp", ".users.new12345.tmp", ".cache.tmp"):
        (state / name).write_text('{"nvr": {"password": "secret"}}')
        if name != ".users.new12345.tmp":  # one written a moment ago, by a relay still running here
            os.utime(state / name, (old, old))
    (state / ".profiles.gone1234.tmp").symlink_to(state / "nowhere")  # renamed away between listing and stat
    (state / "users.json").write_text("{}")
    build_relay(relay_config(tmp_path, free_port(), free_port(), free_port()), reactor)
    assert sorted(path.name for path in state.iterdir()) == [
        ".cache.tmp", ".profiles.gone1234.tmp", ".users.new12345.tmp", "identity.json", "users.json"]


def relay_config(tmp_path: Path, port: int, api_port: int, camera_port: int) -> Any:
    text = "\n".join([
        "onvif:",
        "  bind: 127.0.0.1",
        f"  port: {port}",
        "  users: [{username: admin, password: 'pw-123', role: Administrator}]",
        "discovery: {enabled: false}",
        "mediamtx:",
        f"  api_url: http://127.0.0.1:{api_port}",
        f"state_dir: {tmp_path / 'state'}",
        "cameras:",
        "  - id: cam1",
        "    host: 127.0.0.1",
        f"    http_port: {camera_port}",
        "    model: ATOM_CamV3C",
        "    streams: [{name: main, rtsp_path: video0_unicast, codec: h264, audio: none}]",
    ]) + "\n"
    return parse_config(text, "<test>")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_slow_disk_does_not_stall_other_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While CreateUsers waits for a write held on the disk, GetSystemDateAndTime is answered; CreateUsers
    answers only after its write succeeded."""
    release = hold_writes(monkeypatch, "users")
    camera_port: Any = listen_camera(reactor, SimulatedCamera(reactor, "ATOM_CamV3C"))
    mediamtx_port: Any = listen_mediamtx(reactor, FakeMediamtx(reactor))
    port = free_port()
    relay: Any = build_relay(
        relay_config(tmp_path, port, mediamtx_port.getHost().port, camera_port.getHost().port), reactor
    )
    relay.startService()
    url = f"http://127.0.0.1:{port}/onvif/device_service"
    try:
        await poll(lambda: _listening(port), what="the relay listening")
        answered: list[int] = []
        user = op(ns.TDS, "User", child(ns.TT, "Username", "viewer"), child(ns.TT, "Password", "pw-viewer"),
                  child(ns.TT, "UserLevel", "User"))
        creating = Deferred.fromCoroutine(call(url, op(ns.TDS, "CreateUsers", user)))
        creating.addCallback(lambda result: answered.append(result[0]))
        for _ in range(3):
            code, _answer = await call(url, op(ns.TDS, "GetSystemDateAndTime"))
            assert code == 200
        assert answered == [] and not (tmp_path / "state" / "users.json").exists()
        release.set()
        await poll(lambda: answered == [200], what="CreateUsers answered after its write")
        saved = json.loads((tmp_path / "state" / "users.json").read_text())
        assert [u["username"] for u in saved["users"]] == ["viewer"]
    finally:
        release.set()
        await relay.stopService()
        await camera_port.stopListening()
        await mediamtx_port.stopListening()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_identity_is_written_before_the_reactor_runs(tmp_path: Path) -> None:
    """The relay's identity is on disk as soon as it is made (it names the device before anything is served)."""
    from atomrelay.identity import load_identity

    identity = load_identity(StateStore(tmp_path, run=lambda function: succeed(None)))
    assert json.loads((tmp_path / "identity.json").read_text()) == {"uuid": str(identity.uuid)}


def test_a_change_whose_caller_hung_up_is_still_applied_once_written(tmp_path: Path) -> None:
    """CreateUsers cancelled while its write is on the disk (the client left) still serves the user once written:
    memory and disk agree."""
    from atomrelay.auth.users import UserStore
    from atomrelay.config import User

    runner = ManualRunner()
    users = UserStore([User("admin", "pw", "Administrator")], StateStore(tmp_path, run=runner))
    creating = Deferred.fromCoroutine(users.create([User("viewer", "pw-viewer", "User")]))
    creating.addErrback(lambda _: None)
    creating.cancel()
    assert users.lookup("viewer") is None
    runner.finish_one()
    assert users.lookup("viewer") == User("viewer", "pw-viewer", "User")
    assert [u["username"] for u in json.loads((tmp_path / "users.json").read_text())["users"]] == ["viewer"]


def test_a_failed_commit_applies_nothing(tmp_path: Path) -> None:
    """commit() applies its change only after a successful write."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    applied: list[bool] = []
    failures: list[Failure] = []
    StateStore(blocker / "state").commit("doc", {}, lambda: applied.append(True)).addErrback(failures.append)
    assert applied == [] and failures and failures[0].check(StateError)


def test_pause_changes_waits_for_changes_under_way_and_holds_new_ones_at_the_door(tmp_path: Path) -> None:
    """Changes holding or waiting for a lock end before ``pause_changes`` fires; one asked for later waits at the
    door and, once its lock's generation is retired, is refused; a lock made while paused works."""
    runner = ManualRunner()
    store = StateStore(tmp_path, run=runner)
    lock = store.change_lock()
    reading: Deferred[int] = Deferred()

    async def change(on: Any, number: int, read: Deferred[int] | None = None) -> None:
        async with on:
            if read is not None:
                number = await read
            await store.commit("doc", {"n": number}, lambda: None)

    first = Deferred.fromCoroutine(change(lock, 0, reading))
    second = Deferred.fromCoroutine(change(lock, 2))
    paused = store.pause_changes()
    late = Deferred.fromCoroutine(change(lock, 3))
    gone = Deferred.fromCoroutine(change(lock, 4))
    gone.cancel()  # a client that hung up while its change waited at the door
    failures: list[Failure] = []
    gone.addErrback(failures.append)
    assert not paused.called and not runner.pending  # the first change is still reading
    reading.callback(1)
    runner.finish_one()  # the first change's write; the second one's commit follows at once
    assert first.called and not second.called and not paused.called
    runner.finish_one()
    assert second.called and paused.called and not late.called
    fresh = store.change_lock()  # the next generation's, built while paused
    store.resume_changes(retire=True)
    late.addErrback(failures.append)
    assert [failure.type for failure in failures] == [CancelledError, ChangeRetired]
    assert "send it again" in str(failures[1].value)
    done = Deferred.fromCoroutine(change(fresh, 5))
    runner.finish_one()
    assert done.called and json.loads((tmp_path / "doc.json").read_text()) == {"n": 5}
    assert store.flushed().called


def test_a_reload_that_failed_leaves_the_running_generations_locks_working(tmp_path: Path) -> None:
    """After ``resume_changes(retire=False)`` a change held at the door commits; an error inside a change frees
    its lock for the next one."""
    store = StateStore(tmp_path)
    lock = store.change_lock()

    async def change(number: int) -> None:
        async with lock:
            if number < 0:
                raise ValueError("the change failed")
            await store.commit("doc", {"n": number}, lambda: None)

    paused = store.pause_changes()
    assert paused.called
    waiting = Deferred.fromCoroutine(change(1))
    assert not waiting.called
    store.resume_changes(retire=False)
    assert waiting.called and json.loads((tmp_path / "doc.json").read_text()) == {"n": 1}
    failed = Deferred.fromCoroutine(change(-1))
    failed.addErrback(lambda failure: failure.trap(ValueError))
    assert Deferred.fromCoroutine(change(2)).called and json.loads((tmp_path / "doc.json").read_text()) == {"n": 2}


def test_a_change_sent_to_a_retired_generation_is_refused_before_it_begins(tmp_path: Path) -> None:
    """CreateUsers held at the door of a reload, and one asked of the retired store after it, are refused with
    ChangeRetired before they look at anything; nothing is saved. A failed reload's pause retires nothing."""
    from atomrelay.auth.users import UserStore
    from atomrelay.config import User

    store = StateStore(tmp_path)
    users = UserStore([User("admin", "pw", "Administrator")], store)
    store.pause_changes()
    store.resume_changes(retire=False)
    store.pause_changes()
    creating = Deferred.fromCoroutine(users.create([User("admin", "pw-2", "User")]))  # would clash: not checked
    store.resume_changes(retire=True)
    after = Deferred.fromCoroutine(users.create([User("viewer", "pw-viewer", "User")]))
    failures: list[Failure] = []
    creating.addErrback(failures.append)
    after.addErrback(failures.append)
    assert [failure.type for failure in failures] == [ChangeRetired, ChangeRetired]
    assert users.lookup("viewer") is None and not (tmp_path / "users.json").exists()
