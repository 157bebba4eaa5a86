"""The camera HTTP client against the simulated ATOM Cam (StubTreq, Clock)."""

from __future__ import annotations

from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from atomrelay.camera.client import (
    CameraAuthError,
    CameraBusy,
    CameraCanceled,
    CameraClient,
    CameraCommandError,
    CameraDismissed,
    CameraHTTPError,
    CameraMultipleRequest,
    CameraReplyError,
    CameraTimeout,
    CameraUnavailable,
    MotorPosition,
    clean_reply,
    parse_motor_position,
)
from atomrelay.camera.digest import DigestError, authorization, parse_challenge, pick_challenge
from atomrelay.config import CameraConfig, StreamConfig
from atomrelay.sim.camera import MOVE_CANCELED, MOVE_DISMISSED, MOVE_REJECTED, SECRET_VALUES, SimulatedCamera
from tests.camera.support import SWING, Bench
from tests.camera.support import camera_config as bench_camera

STREAM = (StreamConfig("main", "video0_unicast"),)


def camera_config(username: str | None = None, password: str | None = None) -> CameraConfig:
    return CameraConfig(id="cam", name="Cam", host="127.0.0.1", streams=STREAM, username=username, password=password)


def result_of(coro: Any, stub: StubTreq | None = None) -> Any:
    d = Deferred.fromCoroutine(coro)
    if stub is not None:
        stub.flush()
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "request did not complete"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def test_status_parses_key_values() -> None:
    """status() returns MOTORPOS and friends from cmd.cgi?name=status."""
    sim = SimulatedCamera(Clock(), "ATOM_CAKP1JZJP")
    client = CameraClient(StubTreq(sim), camera_config())
    status = result_of(client.status())
    assert status["MOTORPOS"].split()[:2] == ["180.00", "90.00"]


def test_hardware_reads_only_harmless_keys() -> None:
    """hardware() returns PRODUCT_MODEL and HWADDR and never the secrets in hack_ini.cgi."""
    sim = SimulatedCamera(Clock(), "WYZE_CAKP2JFUS", hwaddr="02:11:22:33:44:55")
    hardware = result_of(CameraClient(StubTreq(sim), camera_config()).hardware())
    assert hardware["PRODUCT_MODEL"] == "WYZE_CAKP2JFUS"
    assert hardware["HWADDR"] == "02:11:22:33:44:55"
    assert not any("PASS" in key.upper() or "WIFI" in key.upper() for key in hardware)


def test_hardware_values_with_control_characters_are_made_printable() -> None:
    """A camera answering hack_ini.cgi with control characters in a value (ESC, SOH) gives a printable value: it
    reaches log lines, the saved hardware and the dashboard."""
    from dataclasses import replace

    sim = SimulatedCamera(Clock(), "ATOM_CamV3C")
    sim.model = replace(sim.model, product_model="ATOM_Cam\x01\x1b[31mEvil")
    hardware = result_of(CameraClient(StubTreq(sim), camera_config()).hardware())
    assert hardware["PRODUCT_MODEL"] == "ATOM_Cam??[31mEvil"


def test_digest_auth_round_trip() -> None:
    """With Digest enabled on the camera, configured credentials get through."""
    sim = SimulatedCamera(Clock(), "ATOM_CamV3C", username="admin", password="p@ss:w/rd%$")
    client = CameraClient(StubTreq(sim), camera_config("admin", "p@ss:w/rd%$"))
    assert "TIMESTAMP" in result_of(client.status())
    assert result_of(client.command("night on")) == "ok"


def test_digest_wrong_password() -> None:
    """A wrong password is a CameraAuthError, not a generic failure."""
    sim = SimulatedCamera(Clock(), "ATOM_CamV3C", username="admin", password="right")
    with pytest.raises(CameraAuthError, match="refused the credentials"):
        result_of(CameraClient(StubTreq(sim), camera_config("admin", "wrong")).status())


def test_digest_missing_credentials() -> None:
    """A camera that needs credentials we do not have says so."""
    sim = SimulatedCamera(Clock(), "ATOM_CamV3C", username="admin", password="right")
    with pytest.raises(CameraAuthError, match="requires a username and password"):
        result_of(CameraClient(StubTreq(sim), camera_config()).status())


def test_command_errors_are_typed() -> None:
    """`error` replies become CameraCommandError; move rejections become CameraBusy."""
    sim = SimulatedCamera(Clock(), "AC1")
    client = CameraClient(StubTreq(sim), camera_config())
    with pytest.raises(CameraCommandError):
        result_of(client.command("no-such-command"))
    sim.fail_next(1, "error : dismiss request.")
    with pytest.raises(CameraBusy):
        result_of(client.command("move"))


def test_snapshot_busy_is_http_error() -> None:
    """A 503 from get_jpeg.cgi surfaces as CameraHTTPError(503)."""
    sim = SimulatedCamera(Clock(), "AC1")
    sim.busy = True
    with pytest.raises(CameraHTTPError) as info:
        result_of(CameraClient(StubTreq(sim), camera_config()).snapshot())
    assert info.value.status == 503


def test_snapshot_is_jpeg() -> None:
    """snapshot() returns the JPEG bytes."""
    jpeg = result_of(CameraClient(StubTreq(SimulatedCamera(Clock(), "AC1")), camera_config()).snapshot())
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"


def test_clean_reply_strips_nul_and_newlines() -> None:
    """Firmware replies ending in NUL and/or newline are cleaned."""
    assert clean_reply(b"ok\n\x00") == "ok"
    assert clean_reply(b"180.00 90.00 0 0\x00") == "180.00 90.00 0 0"


def test_digest_known_answer() -> None:
    """The RFC 7616 section 3.9.1 MD5 example produces the published response."""
    challenge = parse_challenge(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    header = authorization(challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life", 1,
                           "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    assert 'response="8ca523f5e9506fed4657c9700eebdbec"' in header


def test_pick_prefers_sha256_and_rejects_garbage() -> None:
    """SHA-256 is preferred over MD5; no usable challenge is an error."""
    chosen = pick_challenge(['Digest realm="a", nonce="1", algorithm=MD5, qop="auth"',
                             'Digest realm="a", nonce="2", algorithm=SHA-256, qop="auth"'])
    assert chosen.algorithm == "SHA-256"
    with pytest.raises(DigestError):
        pick_challenge(['Basic realm="a"'])


# --- timeouts, typed move errors, motor position, night mode --------------------------------


def test_timeout_on_the_injected_clock() -> None:
    """A camera that holds the request open fails with CameraTimeout after exactly the request's timeout."""
    bench = Bench()
    sim = bench.add(bench_camera())
    sim.set_offline(True)
    client = bench.clients["swing"]
    result: list[Any] = []
    Deferred.fromCoroutine(client.status(timeout=2.0)).addBoth(result.append)
    bench.pump(1.9)
    assert result == []
    bench.pump(0.2)
    assert isinstance(result[0].value, CameraTimeout)
    assert "within 2s" in str(result[0].value)


def test_refused_is_unavailable_not_timeout() -> None:
    """A camera that drops the connection is CameraUnavailable but not a CameraTimeout."""
    bench = Bench()
    bench.add(bench_camera()).set_offline(True, mode="refuse")
    with pytest.raises(CameraUnavailable) as info:
        bench.wait(bench.clients["swing"].status())
    assert not isinstance(info.value, CameraTimeout)


@pytest.mark.parametrize(
    "reply, error",
    [(MOVE_REJECTED, CameraMultipleRequest), (MOVE_DISMISSED, CameraDismissed), (MOVE_CANCELED, CameraCanceled)],
)
def test_move_rejections_are_typed(reply: str, error: type[Exception]) -> None:
    """Each firmware move rejection has its own exception type."""
    bench = Bench()
    bench.add(bench_camera()).fail_next(1, reply)
    with pytest.raises(error):
        bench.wait(bench.clients["swing"].move(10, 20))


def test_move_waits_for_the_motor_and_reports_where_it_stopped() -> None:
    """move() answers when the simulated motor stops, with the position it reports."""
    bench = Bench()
    sim = bench.add(bench_camera())
    client = bench.clients["swing"]
    started = bench.clock.seconds()
    position = bench.wait(client.move(300.0, 30.0, speed=9))
    assert position == MotorPosition(300.0, 30.0, False, False, None)
    assert bench.clock.seconds() - started >= 2.0  # 120° at 60°/s
    assert sim.commands[-1] == "move 300.00 30.00 9 2"


def test_position_reads_motorpos_with_idle_flag() -> None:
    """position() parses MOTORPOS including the idle flag, which is 0 during a move."""
    bench = Bench()
    bench.add(bench_camera())
    client = bench.clients["swing"]
    assert bench.wait(client.position()) == MotorPosition(180.0, 90.0, False, False, True)
    Deferred.fromCoroutine(client.move(0.0, 90.0))
    bench.pump(0.5)
    moving = bench.wait(client.position())
    assert moving.idle is False and 140 < moving.pan < 160


def test_position_of_a_fixed_camera_is_a_reply_error() -> None:
    """A camera without MOTORPOS in its status is reported as such."""
    bench = Bench()
    bench.add(bench_camera("cam2"), "ATOM_CamV3C")
    with pytest.raises(CameraReplyError, match="no MOTORPOS"):
        bench.wait(bench.clients["cam2"].position())


def test_parse_motor_position_rejects_garbage() -> None:
    """Only four or five numeric fields make a motor position."""
    assert parse_motor_position("1.5 2.5 1 0") == MotorPosition(1.5, 2.5, True, False, None)
    for text in ("", "ok", "1 2 3", "nan 1 0 0", "1 2 x 0"):
        with pytest.raises(CameraReplyError):
            parse_motor_position(text)


def test_night_mode_round_trip() -> None:
    """set_night_mode() sends `night <mode>` and night_mode() reads the camera's property back."""
    bench = Bench()
    sim = bench.add(bench_camera())
    client = bench.clients["swing"]
    bench.wait(client.set_night_mode("on"))
    assert sim.commands[-1] == "night on"
    assert bench.wait(client.night_mode()) == "on"
    sim.properties["nightVision"] = "off"
    assert bench.wait(client.night_mode()) == "off"
    with pytest.raises(ValueError):
        bench.wait(client.set_night_mode("sometimes"))


def test_hardware_keeps_exactly_model_and_hwaddr() -> None:
    """hardware() returns only PRODUCT_MODEL and HWADDR; no secret value is in the result."""
    bench = Bench()
    bench.add(bench_camera(), SWING, hwaddr="02:aa:bb:cc:dd:ee")
    hardware = bench.wait(bench.clients["swing"].hardware())
    assert hardware == {"PRODUCT_MODEL": SWING, "HWADDR": "02:aa:bb:cc:dd:ee"}
    assert not any(secret in repr(hardware) for secret in SECRET_VALUES)
