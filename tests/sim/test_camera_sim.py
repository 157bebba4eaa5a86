"""The simulated ATOM Cam, driven through StubTreq with a Clock."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from atomrelay.sim.camera import (
    MOVE_CANCELED,
    MOVE_REJECTED,
    SECRET_VALUES,
    SNAPSHOT_JPEG,
    SimulatedCamera,
    listen_camera,
)

BASE = "http://camera.invalid"
SWING = "ATOM_CAKP1JZJP"


def fired(d: Deferred[Any]) -> Any:
    """The result of a Deferred that must already have fired (re-raising a failure)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def pending(d: Deferred[Any]) -> list[Any]:
    """Collect the eventual result of ``d`` into a list that stays empty until it fires."""
    results: list[Any] = []
    d.addBoth(results.append)
    return results


def body(stub: StubTreq, response: Any) -> bytes:
    """The full body of a StubTreq response."""
    d = stub.content(response)
    stub.flush()
    return bytes(fired(d))


def get(stub: StubTreq, path: str, **kwargs: Any) -> tuple[int, bytes, Any]:
    """GET ``path`` and return (status, body, response)."""
    response = fired(stub.get(BASE + path, **kwargs))
    return response.code, body(stub, response), response


def command_request(stub: StubTreq, command: str, query: str = "port=socket") -> Deferred[Any]:
    """Start a socket command POST; the Deferred fires with the response."""
    return stub.post(f"{BASE}/cgi-bin/cmd.cgi?{query}", data=json.dumps({"exec": command}).encode())


def command(stub: StubTreq, text: str) -> bytes:
    """Run a socket command that answers at once and return the raw reply."""
    response = fired(command_request(stub, text))
    assert response.code == 200
    return body(stub, response)


def swing(clock: Clock | None = None, **kwargs: Any) -> tuple[SimulatedCamera, StubTreq, Clock]:
    """A simulated Swing with its StubTreq and Clock."""
    clock = clock or Clock()
    camera = SimulatedCamera(clock, SWING, **kwargs)
    return camera, StubTreq(camera), clock


def test_snapshot_is_a_real_jpeg() -> None:
    """get_jpeg.cgi answers image/jpeg with a complete baseline JPEG and counts the request."""
    camera, stub, _ = swing()
    status, data, response = get(stub, "/cgi-bin/get_jpeg.cgi")
    assert status == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"image/jpeg"]
    assert data == SNAPSHOT_JPEG
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    assert b"\xff\xc0" in data  # SOF0: baseline DCT
    assert camera.snapshot_requests == 1


def test_snapshot_queue_full_answers_503() -> None:
    """With slow snapshots, requests beyond queue_limit in flight get 503 and the rest arrive after the delay."""
    clock = Clock()
    camera = SimulatedCamera(clock, "AC1", queue_limit=2)
    camera.snapshot_delay = 1.5
    stub = StubTreq(camera)
    first = pending(stub.get(BASE + "/cgi-bin/get_jpeg.cgi"))
    second = pending(stub.get(BASE + "/cgi-bin/get_jpeg.cgi"))
    stub.flush()
    assert first == [] and second == []
    assert camera.snapshots_in_flight == 2
    third = fired(stub.get(BASE + "/cgi-bin/get_jpeg.cgi"))
    assert third.code == 503
    clock.advance(1.4)
    stub.flush()
    assert first == []
    clock.advance(0.1)
    stub.flush()
    assert first[0].code == 200 and second[0].code == 200
    assert body(stub, first[0]) == SNAPSHOT_JPEG
    assert camera.snapshots_in_flight == 0
    assert camera.snapshot_requests == 3


def test_busy_forces_503() -> None:
    """The busy knob makes every snapshot answer 503 until cleared."""
    camera, stub, _ = swing()
    camera.busy = True
    assert get(stub, "/cgi-bin/get_jpeg.cgi")[0] == 503
    camera.busy = False
    assert get(stub, "/cgi-bin/get_jpeg.cgi")[0] == 200
    assert camera.snapshot_requests == 2


def test_hack_ini_lists_identity_and_secrets() -> None:
    """hack_ini.cgi has the identity keys the relay reads and the secrets it must ignore."""
    camera = SimulatedCamera(Clock(), "WYZE_CAKP2JFUS", hostname="porch", hwaddr="02:11:22:33:44:55")
    status, data, _ = get(StubTreq(camera), "/cgi-bin/hack_ini.cgi")
    assert status == 200
    values = dict(line.split("=", 1) for line in data.decode().splitlines())
    assert values["PRODUCT_MODEL"] == "WYZE_CAKP2JFUS"
    assert values["HOSTNAME"] == "porch"
    assert values["HWADDR"] == "02:11:22:33:44:55"
    assert values["ATOMHACKVER"] and values["appver"] and values["KERNELVER"].startswith("Linux")
    assert values["WIFI_PASSWORD"] in SECRET_VALUES
    assert values["PASSWORD"] in SECRET_VALUES
    assert all(secret in data.decode() for secret in SECRET_VALUES)


def test_status_reports_motor_position() -> None:
    """cmd.cgi?name=status gives TIMESTAMP from the clock and MOTORPOS with two decimals and idle=1."""
    clock = Clock()
    clock.advance(86400 + 3661)
    camera, stub, _ = swing(clock)
    status, data, _ = get(stub, "/cgi-bin/cmd.cgi?name=status")
    assert status == 200
    assert data.decode().splitlines() == ["TIMELAPSE=", "TIMESTAMP=1970/01/02 01:01:01", "MOTORPOS=180.00 90.00 0 0 1"]


def test_fixed_camera_has_no_motor() -> None:
    """Models without motors omit MOTORPOS and answer `error` to move."""
    camera = SimulatedCamera(Clock(), "ATOM_CamV3C")
    stub = StubTreq(camera)
    assert "MOTORPOS" not in get(stub, "/cgi-bin/cmd.cgi?name=status")[1].decode()
    assert command(stub, "move") == b"error\n\x00"
    assert command(stub, "move 10 10") == b"error\n\x00"


def test_socket_query_must_be_exact() -> None:
    """A POST to cmd.cgi with any query other than port=socket is rejected."""
    camera, stub, _ = swing()
    response = fired(command_request(stub, "night on", query="port=socket&x=1"))
    assert response.code == 400
    assert camera.commands == []


def test_replies_end_with_nul_by_default() -> None:
    """Socket replies end with newline and NUL unless reply_suffix says otherwise."""
    camera, stub, _ = swing()
    assert command(stub, "night on") == b"ok\n\x00"
    camera.reply_suffix = b"\x00"
    assert command(stub, "night off") == b"ok\x00"
    camera.reply_suffix = b""
    assert command(stub, "night auto") == b"ok"


def test_night_and_properties() -> None:
    """night sets nightVision, property reads and writes values, and an unknown property is an error."""
    camera, stub, _ = swing()
    assert command(stub, "night on") == b"ok\n\x00"
    assert command(stub, "property nightVision") == b"on\n\x00"
    assert command(stub, "property motionDet off") == b"ok\n\x00"
    assert camera.properties["motionDet"] == "off"
    assert command(stub, "property noSuchThing") == b"error\n\x00"
    assert command(stub, "night sometimes") == b"error\n\x00"


def test_fifo_and_unknown_commands() -> None:
    """FIFO commands answer `<cmd> OK`, video flip answers ok, anything else answers error."""
    camera, stub, _ = swing()
    assert command(stub, "reboot") == b"reboot OK\n\x00"
    assert command(stub, "rtspserver restart") == b"rtspserver restart OK\n\x00"
    assert command(stub, "video flip 1") == b"ok\n\x00"
    assert command(stub, "self-destruct") == b"error\n\x00"
    assert camera.commands == ["reboot", "rtspserver restart", "video flip 1", "self-destruct"]


def test_bad_socket_body_is_error() -> None:
    """A body without an exec string answers error."""
    _, stub, _ = swing()
    response = fired(stub.post(BASE + "/cgi-bin/cmd.cgi?port=socket", data=b"not json"))
    assert body(stub, response) == b"error\n\x00"


def test_move_replies_only_when_finished() -> None:
    """An absolute move answers after distance / speed seconds, and MOTORPOS shows it moving meanwhile."""
    camera, stub, clock = swing()
    reply = pending(command_request(stub, "move 0 90"))
    stub.flush()
    clock.advance(1.5)
    stub.flush()
    assert reply == []
    assert get(stub, "/cgi-bin/cmd.cgi?name=status")[1].decode().splitlines()[-1] == "MOTORPOS=90.00 90.00 0 0 0"
    clock.advance(1.5)
    stub.flush()
    assert body(stub, reply[0]) == b"0.00 90.00 0 0\n\x00"
    assert (camera.pan, camera.tilt) == (0.0, 90.0) and not camera.moving
    assert command(stub, "move") == b"0.00 90.00 0 0 1\n\x00"


def test_move_speed_and_clamping() -> None:
    """Speed 3 moves at a third of full speed, and targets clamp to pan 0-355 / tilt 0-180."""
    camera, stub, clock = swing()
    reply = pending(command_request(stub, "move 400 -20 3"))
    stub.flush()
    clock.advance(8.74)  # 175 degrees of pan at 20 degrees/s
    stub.flush()
    assert reply == []
    clock.advance(0.01)
    stub.flush()
    assert body(stub, reply[0]) == b"355.00 0.00 0 0\n\x00"


def test_concurrent_move_of_equal_priority_is_rejected() -> None:
    """A second move that does not beat the running move's priority is refused at once and the first completes."""
    camera, stub, clock = swing()
    first = pending(command_request(stub, "move 120 90 9 1"))
    stub.flush()
    assert command(stub, "move 10 10 9 1") == MOVE_REJECTED.encode() + b"\n\x00"
    assert command(stub, "move 10 10 9 3") == MOVE_REJECTED.encode() + b"\n\x00"
    clock.advance(1.0)
    stub.flush()
    assert body(stub, first[0]) == b"120.00 90.00 0 0\n\x00"


def test_better_priority_interrupts_running_move() -> None:
    """A move with a lower priority number cancels the running one, which answers `error : canceled`."""
    camera, stub, clock = swing()
    first = pending(command_request(stub, "move 0 90 9 2"))
    stub.flush()
    clock.advance(1.0)
    second = pending(command_request(stub, "move 150 90 9 0"))
    stub.flush()
    assert body(stub, first[0]) == MOVE_CANCELED.encode() + b"\n\x00"
    assert second == []
    assert camera.position() == (120.0, 90.0)
    clock.advance(0.5)
    stub.flush()
    assert body(stub, second[0]) == b"150.00 90.00 0 0\n\x00"


def test_fail_next_answers_the_given_reply() -> None:
    """fail_next makes the next n commands answer the canned reply, then behaviour returns to normal."""
    camera, stub, _ = swing()
    camera.fail_next(2)
    assert command(stub, "move 10 10") == b"error : dismiss request.\n\x00"
    assert command(stub, "night on") == b"error : dismiss request.\n\x00"
    assert command(stub, "night on") == b"ok\n\x00"
    assert not camera.moving


@pytest.mark.parametrize("args", ["move 10", "move a b", "move 10 10 10", "move 10 10 9 4", "move nan 10"])
def test_invalid_move_is_error(args: str) -> None:
    """Malformed moves (arity, numbers, speed 1-9, priority 0-3) answer error without moving."""
    camera, stub, _ = swing()
    assert command(stub, args) == b"error\n\x00"
    assert not camera.moving


def test_posrec_and_moveinit_use_home() -> None:
    """posrec stores the current position as home and moveinit returns there."""
    camera, stub, clock = swing()
    camera.pan, camera.tilt = 10.0, 20.0
    assert command(stub, "posrec") == b"posrec OK\n\x00"
    camera.pan, camera.tilt = 300.0, 100.0
    assert command(stub, "moveinit") == b"moveinit OK\n\x00"
    assert camera.position() == (10.0, 20.0)


def test_unknown_path_is_404() -> None:
    """Paths outside the three CGIs answer 404."""
    _, stub, _ = swing()
    assert get(stub, "/cgi-bin/nothing.cgi")[0] == 404


def _digest(
    username: str, password: str, method: str, uri: str, nonce: str, nc: str = "00000001", cnonce: str = "abc"
) -> str:
    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{username}:atomcam:{password}")
    response = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{md5(f'{method}:{uri}')}")
    return (
        f'Digest username="{username}", realm="atomcam", nonce="{nonce}", uri="{uri}", '
        f'qop=auth, nc={nc}, cnonce="{cnonce}", response="{response}", algorithm=MD5'
    )


def _challenge_nonce(response: Any) -> str:
    header = response.headers.getRawHeaders(b"www-authenticate")[0].decode()
    assert header.startswith('Digest realm="atomcam", qop="auth", nonce="')
    assert "algorithm=MD5" in header
    match = re.search(r'nonce="([^"]+)"', header)
    assert match is not None
    return match.group(1)


def test_digest_challenge_and_success() -> None:
    """Without credentials the camera challenges; a correct Digest response is let through."""
    camera, stub, _ = swing(username="admin", password="s3cret")
    status, _, response = get(stub, "/cgi-bin/hack_ini.cgi")
    assert status == 401
    nonce = _challenge_nonce(response)
    uri = "/cgi-bin/cmd.cgi?name=status"
    header = _digest("admin", "s3cret", "GET", uri, nonce)
    status, data, _ = get(stub, uri, headers={"Authorization": header})
    assert status == 200 and b"MOTORPOS" in data
    post_uri = "/cgi-bin/cmd.cgi?port=socket"
    header = _digest("admin", "s3cret", "POST", post_uri, nonce, nc="00000002")
    response = fired(stub.post(BASE + post_uri, data=b'{"exec":"night on"}', headers={"Authorization": header}))
    assert body(stub, response) == b"ok\n\x00"


def test_digest_rejects_wrong_password_uri_replay_and_foreign_nonce() -> None:
    """Wrong passwords, mismatched uris, replayed nonce counts and nonces we never issued all get 401."""
    camera, stub, _ = swing(username="admin", password="s3cret")
    nonce = _challenge_nonce(get(stub, "/cgi-bin/hack_ini.cgi")[2])
    uri = "/cgi-bin/hack_ini.cgi"
    assert get(stub, uri, headers={"Authorization": _digest("admin", "wrong", "GET", uri, nonce)})[0] == 401
    other = _digest("admin", "s3cret", "GET", "/cgi-bin/get_jpeg.cgi", nonce)
    assert get(stub, uri, headers={"Authorization": other})[0] == 401
    good = _digest("admin", "s3cret", "GET", uri, nonce)
    assert get(stub, uri, headers={"Authorization": good})[0] == 200
    assert get(stub, uri, headers={"Authorization": good})[0] == 401
    status, _, response = get(stub, uri, headers={"Authorization": _digest("admin", "s3cret", "GET", uri, "f" * 32)})
    assert status == 401
    assert "stale=true" in response.headers.getRawHeaders(b"www-authenticate")[0].decode()
    assert camera.snapshot_requests == 0


def test_offline_hang_holds_requests_open() -> None:
    """In hang mode requests never answer; going back online drops them and serves new ones."""
    camera, stub, _ = swing()
    camera.set_offline(True)
    held = pending(stub.get(BASE + "/cgi-bin/cmd.cgi?name=status"))
    stub.flush()
    assert held == [] and camera.held_requests == 1
    camera.set_offline(False)
    stub.flush()
    assert isinstance(held[0], Failure)
    assert camera.held_requests == 0
    assert get(stub, "/cgi-bin/cmd.cgi?name=status")[0] == 200


def test_offline_refuse_drops_the_connection() -> None:
    """In refuse mode the connection closes without any response."""
    camera, stub, _ = swing()
    camera.set_offline(True, mode="refuse")
    result = pending(stub.get(BASE + "/cgi-bin/get_jpeg.cgi"))
    stub.flush()
    assert isinstance(result[0], Failure)
    assert camera.snapshot_requests == 0


def test_constructor_rejects_unknown_model() -> None:
    """Only the four firmware models are accepted."""
    with pytest.raises(ValueError, match="unknown model"):
        SimulatedCamera(Clock(), "ATOM_Cam3")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_listen_camera_serves_on_loopback() -> None:
    """listen_camera serves the simulator on a real loopback port."""
    from twisted.internet import reactor

    camera = SimulatedCamera(reactor, SWING)
    port = listen_camera(reactor, camera)
    try:
        response = await treq.get(f"http://127.0.0.1:{port.getHost().port}/cgi-bin/get_jpeg.cgi")
        assert response.code == 200
        assert await response.content() == SNAPSHOT_JPEG
    finally:
        await port.stopListening()
