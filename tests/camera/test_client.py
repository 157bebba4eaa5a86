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
    CameraClient,
    CameraCommandError,
    CameraHTTPError,
    clean_reply,
)
from atomrelay.camera.digest import DigestError, authorization, parse_challenge, pick_challenge
from atomrelay.config import CameraConfig, StreamConfig
from atomrelay.sim.camera import SimulatedCamera

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
