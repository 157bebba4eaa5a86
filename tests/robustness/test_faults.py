"""Faults around a real ``atomrelay run`` process: mediamtx and cameras misbehaving, then healing.

One relay process serves the whole module (the tests heal what they break); the start-up
fault gets a relay of its own. Each test checks the same three things: ONVIF keeps being
served during the fault, the relay says what is wrong in one log line (not one per
retry), and it recovers by itself once the fault ends.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import AsyncIterator

import pytest
import pytest_twisted
from lxml import etree

from atomrelay.sim.camera import MOVE_DISMISSED
from atomrelay.xml import ns
from tests.helpers import poll
from tests.robustness.support import (
    BlackHole,
    HttpReply,
    RelayProcess,
    Rig,
    authed,
    check_reply,
    fault_reason,
    log_errors,
    op,
    soap_post,
    start_relay_process,
    start_rig,
)

pytestmark = pytest.mark.integration


@pytest_twisted.async_yield_fixture(scope="module")
async def relay(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Rig, RelayProcess]]:
    """A relay process on a rig of a Swing and an ATOM Cam 2, with every path registered and both cameras online."""
    rig = start_rig()
    process = await start_relay_process(rig, tmp_path_factory.mktemp("faults"))
    try:
        await poll(rig.paths_registered, timeout=10, what="paths registered")
        await process.wait_for("camera swing is online", timeout=10)
        await process.wait_for("camera cam2 is online", timeout=10)
        yield rig, process
    finally:
        await process.stop()
        await rig.stop()
    assert not log_errors(process.lines), process.output


async def still_serves(process: RelayProcess, within: float = 2.0) -> None:
    """Media2 GetProfiles answers 200 with all four profiles within ``within`` seconds."""
    start = time.monotonic()
    reply = await soap_post(process.onvif_port, authed(op(ns.TR2, "GetProfiles")), path="/onvif/media2_service",
                            timeout=within + 1)
    assert time.monotonic() - start < within
    assert reply.status == 200, reply.body[:300]
    tokens = {p.get("token") for p in etree.fromstring(reply.body).iter(ns.q(ns.TR2, "Profiles"))}
    assert tokens == {"swing.main", "swing.sub", "cam2.main", "cam2.sub"}


async def swing_ptz(process: RelayProcess, operation: str, inner: str = "", timeout: float = 15.0) -> HttpReply:
    """A PTZ operation on the Swing's main profile."""
    body = op(ns.TPTZ, operation, "<ProfileToken>swing.main</ProfileToken>" + inner)
    return await soap_post(process.onvif_port, authed(body), path="/onvif/ptz_service", timeout=timeout)


async def imaging_settings(process: RelayProcess, camera_id: str, timeout: float = 15.0) -> HttpReply:
    """GetImagingSettings of a camera's video source."""
    body = op(ns.TIMG, "GetImagingSettings", f"<VideoSourceToken>{camera_id}.vs</VideoSourceToken>")
    return await soap_post(process.onvif_port, authed(body), path="/onvif/imaging_service", timeout=timeout)


def camera_state(process: RelayProcess, camera_id: str) -> str:
    """The camera's health as the relay last logged it."""
    lines = process.since(0, f'HealthMonitor msg="camera {camera_id} is (still )?(online|degraded|offline)')
    found = re.search(r"is (?:still )?(online|degraded|offline)", lines[-1]) if lines else None
    return found.group(1) if found else "unknown"


async def settled(rig: Rig, process: RelayProcess) -> None:
    """Wait until every path is registered and every camera is online again."""
    await poll(rig.paths_registered, timeout=10, what="paths registered")
    await poll(lambda: all(camera_state(process, c) == "online" for c in rig.cameras), timeout=10,
               what="every camera online")


def one_line(process: RelayProcess, mark: int, pattern: str) -> None:
    """Exactly one log line after ``mark`` matches ``pattern`` (one line per fault, not one per retry)."""
    lines = process.since(mark, pattern)
    assert len(lines) == 1, "\n".join(lines) or process.output


async def mediamtx_fault(rig: Rig, process: RelayProcess, mode: str, problem: str, retries: int = 3) -> None:
    """Put the mediamtx API in ``mode``: one problem line, ONVIF served; healed and restarted, every path is back."""
    await settled(rig, process)
    url = f"http://127.0.0.1:{rig.api.port}"
    mark = process.mark()
    rig.mediamtx.mode = mode
    try:
        line = await process.wait_for(f"mediamtx at {url} {problem}", mark, timeout=15)
        assert "level=error" in line
        await still_serves(process)
        # Keep the fault up for several retries: still one line.
        seen = rig.mediamtx.requests
        await poll(lambda: rig.mediamtx.requests >= seen + retries, timeout=15, what="retries")
        await still_serves(process)
    finally:
        rig.mediamtx.heal()
    rig.fake.restart()
    await process.wait_for(f"mediamtx at {url} answers again", mark, timeout=15)
    await poll(rig.paths_registered, timeout=5, what="paths registered again")
    one_line(process, mark, f"mediamtx at {url} (?!answers again)")
    assert not log_errors(process.since(mark)), process.output


@pytest_twisted.ensureDeferred
async def test_mediamtx_down_mid_run(relay: tuple[Rig, RelayProcess]) -> None:
    """mediamtx stops (connections refused, open ones cut): one 'unreachable' line; paths come back when it restarts."""
    rig, process = relay
    await settled(rig, process)
    url = f"http://127.0.0.1:{rig.api.port}"
    mark = process.mark()
    await rig.api.down()
    try:
        line = await process.wait_for(f"mediamtx at {url} is unreachable", mark)
        assert "level=error" in line
        await still_serves(process)
    finally:
        rig.fake.restart()
        rig.api.back()
    await process.wait_for(f"mediamtx at {url} answers again", mark)
    await poll(rig.paths_registered, timeout=5, what="paths registered again")
    one_line(process, mark, "is unreachable")
    assert not log_errors(process.since(mark)), process.output


@pytest_twisted.ensureDeferred
async def test_mediamtx_vanishes_from_the_network(relay: tuple[Rig, RelayProcess]) -> None:
    """mediamtx's port swallowing connection attempts reads as one 'no answer within 5s' line, and the paths come back."""
    rig, process = relay
    await settled(rig, process)
    url = f"http://127.0.0.1:{rig.api.port}"
    mark = process.mark()
    await rig.api.down()
    hole = BlackHole(rig.api.port)
    try:
        line = await process.wait_for(f"mediamtx at {url} is unreachable", mark, timeout=15)
        assert "no answer from mediamtx within 5s" in line, line
        await still_serves(process)
    finally:
        hole.close()
        rig.fake.restart()
        rig.api.back()
    await process.wait_for(f"mediamtx at {url} answers again", mark, timeout=15)
    await poll(rig.paths_registered, timeout=5, what="paths registered again")
    one_line(process, mark, "is unreachable")
    assert not log_errors(process.since(mark)), process.output


@pytest_twisted.ensureDeferred
async def test_mediamtx_answers_500(relay: tuple[Rig, RelayProcess]) -> None:
    """mediamtx answering HTTP 500 to everything is one 'answers HTTP 500' line, then recovery."""
    await mediamtx_fault(*relay, "http500", "answers HTTP 500")


@pytest_twisted.ensureDeferred
async def test_mediamtx_answers_garbage(relay: tuple[Rig, RelayProcess]) -> None:
    """mediamtx answering 200 with broken JSON is one 'malformed replies' line, then recovery."""
    await mediamtx_fault(*relay, "garbage", "answers with malformed replies")


@pytest_twisted.ensureDeferred
async def test_mediamtx_answers_slowly(relay: tuple[Rig, RelayProcess]) -> None:
    """mediamtx taking 10 s per reply is cut off after the client's 5 s: one line, ONVIF unaffected, recovery."""
    rig, _ = relay
    rig.mediamtx.slow_delay = 10.0
    await mediamtx_fault(*relay, "slow", "is unreachable: .*no answer from mediamtx within 5s", retries=1)


@pytest_twisted.ensureDeferred
async def test_camera_hangs_mid_reply(relay: tuple[Rig, RelayProcess]) -> None:
    """A camera that stalls half-way through its replies is degraded in one line, its calls end in time, others are fine."""
    rig, process = relay
    await settled(rig, process)
    swing = rig.cameras["swing"]
    mark = process.mark()
    swing.faulty.mode = "hang"
    try:
        line = await process.wait_for("camera swing is degraded: HTTP .* does not answer", mark, timeout=10)
        assert "level=warn" in line
        await still_serves(process)
        start = time.monotonic()
        reply = await swing_ptz(process, "GetStatus")
        assert time.monotonic() - start < 8
        check_reply(reply)
        assert reply.status == 200 and b"camera does not answer" in reply.body, reply.body[:500]
        imaging = await imaging_settings(process, "cam2", timeout=5)
        assert imaging.status == 200, imaging.body[:300]
    finally:
        swing.faulty.heal()
    await process.wait_for("camera swing is online", mark, timeout=10)
    one_line(process, mark, "HealthMonitor msg=\"camera swing is degraded")
    assert not process.since(mark, "camera cam2 is (degraded|offline)")
    assert not log_errors(process.since(mark)), process.output


@pytest_twisted.ensureDeferred
async def test_camera_answers_html(relay: tuple[Rig, RelayProcess]) -> None:
    """A camera address answering an HTML page is degraded in one line naming it, calls fault cleanly, then it recovers."""
    rig, process = relay
    await settled(rig, process)
    cam2 = rig.cameras["cam2"]
    mark = process.mark()
    cam2.faulty.mode = "html"
    try:
        line = await process.wait_for("camera cam2 is degraded: .*HTML", mark, timeout=10)
        assert "level=warn" in line
        await still_serves(process)
        reply = await imaging_settings(process, "cam2", timeout=10)
        check_reply(reply)
        assert reply.status == 500 and "camera cam2 failed" in fault_reason(reply.body), reply.body[:500]
        assert b"<input" not in reply.body
    finally:
        cam2.faulty.heal()
    await process.wait_for("camera cam2 is online", mark, timeout=10)
    one_line(process, mark, "HealthMonitor msg=\"camera cam2 is degraded")
    assert not log_errors(process.since(mark)), process.output


async def absolute_move(process: RelayProcess, x: float, y: float) -> None:
    """AbsoluteMove the Swing to a generic position (answers before the motor moves)."""
    reply = await swing_ptz(process, "AbsoluteMove", f'<Position><tt:PanTilt x="{x}" y="{y}"/></Position>')
    assert reply.status == 200, reply.body[:500]


@pytest_twisted.ensureDeferred
async def test_camera_dismisses_moves(relay: tuple[Rig, RelayProcess]) -> None:
    """'error : dismiss request.' is retried; when it persists the move fails in one line, and the next move works."""
    rig, process = relay
    await settled(rig, process)
    swing = rig.cameras["swing"].sim
    mark = process.mark()
    swing.fail_next(2, MOVE_DISMISSED)
    await absolute_move(process, -1, -1)
    await poll(lambda: swing.position() == (0.0, 0.0) and not swing.moving, timeout=15, what="the move to 0, 0")
    assert len(process.since(mark, "camera swing busy with another move .*dismiss request")) == 2
    mark = process.mark()
    swing.fail_next(4, MOVE_DISMISSED)
    await absolute_move(process, 1, 1)
    line = await process.wait_for("camera swing: move to 355.0 180.0 failed: .*dismiss request", mark, timeout=10)
    assert "level=warn" in line
    await still_serves(process)
    assert swing.position() == (0.0, 0.0)
    await absolute_move(process, 1, 1)
    await poll(lambda: swing.position() == (355.0, 180.0) and not swing.moving, timeout=15, what="the move to 355, 180")
    one_line(process, mark, "failed: .*dismiss request")
    assert not log_errors(process.since(mark)), process.output


@pytest_twisted.ensureDeferred
async def test_camera_reboots(relay: tuple[Rig, RelayProcess]) -> None:
    """A rebooting camera is offline in one line, keeps its profiles, faults PTZ at once, and is online when back."""
    rig, process = relay
    await settled(rig, process)
    swing = rig.cameras["swing"]
    mark = process.mark()
    await swing.power_off()
    try:
        line = await process.wait_for("camera swing is offline", mark, timeout=10)
        assert "level=warn" in line
        await still_serves(process)
        start = time.monotonic()
        reply = await swing_ptz(process, "Stop")
        assert time.monotonic() - start < 2
        check_reply(reply)
        assert reply.status == 500 and "camera swing is offline" in fault_reason(reply.body), reply.body[:500]
    finally:
        swing.power_on()
    await process.wait_for("camera swing is online", mark, timeout=10)
    one_line(process, mark, "HealthMonitor msg=\"camera swing is offline")
    reply = await swing_ptz(process, "GetStatus")
    assert reply.status == 200 and b"<tt:Error>" not in reply.body, reply.body[:500]
    assert not log_errors(process.since(mark)), process.output


@pytest_twisted.ensureDeferred
async def test_camera_vanishes_from_the_network(relay: tuple[Rig, RelayProcess]) -> None:
    """A camera whose ports swallow connection attempts is offline in one clear line (timeouts, no crash) and comes back."""
    rig, process = relay
    await settled(rig, process)
    swing = rig.cameras["swing"]
    mark = process.mark()
    await swing.power_off()
    holes = [BlackHole(swing.http.port), BlackHole(swing.rtsp.port)]
    try:
        line = await process.wait_for("camera swing is offline", mark, timeout=10)
        assert "did not answer within" in line and "no answer to the connection attempt" in line, line
        await still_serves(process)
        reply = await swing_ptz(process, "GetStatus", timeout=5)
        assert reply.status == 200 and b"camera offline" in reply.body, reply.body[:500]
    finally:
        for hole in holes:
            hole.close()
        swing.power_on()
    await process.wait_for("camera swing is online", mark, timeout=10)
    one_line(process, mark, "HealthMonitor msg=\"camera swing is offline")
    assert not log_errors(process.since(mark)), "\n".join(log_errors(process.since(mark)))


@pytest_twisted.ensureDeferred
async def test_mediamtx_down_at_start(tmp_path: Path) -> None:
    """With mediamtx down at start the relay serves ONVIF anyway, says so once, and registers every path when it comes."""
    rig = start_rig(api_up=False)
    process = await start_relay_process(rig, tmp_path, wait_timeout="1s")
    url = f"http://127.0.0.1:{rig.api.port}"
    try:
        line = await process.wait_for(f"mediamtx at {url} did not become ready within 1s", timeout=10)
        assert "level=warn" in line
        await still_serves(process)
        await poll(lambda: len(process.since(0, "camera cam2 is")) > 0, timeout=10, what="a health verdict")
        rig.api.back()
        await process.wait_for(f"mediamtx at {url} answers again", timeout=10)
        await poll(rig.paths_registered, timeout=5, what="paths registered")
        await process.wait_for("camera swing is online", timeout=10)
        await still_serves(process)
    finally:
        await process.stop()
        await rig.stop()
    assert len(process.since(0, f"mediamtx at {url} (did not become ready|is unreachable)")) == 1, process.output
    assert not log_errors(process.lines), process.output
