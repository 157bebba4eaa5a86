"""A full disk while saving PTZ presets: the save fails cleanly, the old file stays, and saving works once there is room.

The real test runs ``atomrelay run`` in a private mount namespace whose state_dir is a
256 KiB tmpfs, and fills it from outside through ``/proc/<pid>/root``; it needs root and
``unshare``. A second test makes ``fsync`` report ENOSPC inside an in-process relay, so
the behaviour is covered where mounting is not allowed.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from lxml import etree

from atomrelay.xml import ns
from tests.helpers import poll
from tests.robustness.support import (
    authed,
    check_reply,
    fault_reason,
    log_errors,
    op,
    soap_post,
    start_inprocess_relay,
    start_relay_process,
    start_rig,
)

pytestmark = pytest.mark.integration


def can_mount_tmpfs() -> bool:
    """Whether this process may mount a tmpfs in a private mount namespace."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as directory:
        probe = subprocess.run(["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "-o", "size=4k",
                                "probe", directory], capture_output=True, timeout=10)
    return probe.returncode == 0


async def set_preset(port: int, name: str) -> Any:
    """SetPreset on the Swing's main profile."""
    body = op(ns.TPTZ, "SetPreset", f"<ProfileToken>swing.main</ProfileToken><PresetName>{name}</PresetName>")
    return await soap_post(port, authed(body), path="/onvif/ptz_service")


async def preset_names(port: int) -> list[str]:
    """The names GetPresets lists for the Swing."""
    reply = await soap_post(port, authed(op(ns.TPTZ, "GetPresets", "<ProfileToken>swing.main</ProfileToken>")),
                            path="/onvif/ptz_service")
    assert reply.status == 200, reply.body[:300]
    return [name.text or "" for name in etree.fromstring(reply.body).iter(ns.q(ns.TT, "Name"))]


def fill(directory: Path) -> Path:
    """Write zeros into ``directory`` until the file system is full; the filler file."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as handle:
        for _ in range(100_000):
            try:
                handle.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        else:
            raise AssertionError(f"{directory} never filled up")
    return filler


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs root and unshare to mount a private tmpfs")
@pytest_twisted.ensureDeferred
async def test_full_disk_keeps_the_old_presets_file(tmp_path: Path) -> None:
    """On a full state_dir SetPreset faults, logs one line, leaves ptz-swing.json as it was, and works after space is freed."""
    rig = start_rig()
    state = tmp_path / "state"
    state.mkdir()
    mount = 'mount -t tmpfs -o size=256k,mode=0700 atomrelay-state "$0" && exec "$@"'
    process = await start_relay_process(rig, tmp_path, prefix=["unshare", "-m", "--propagation", "private",
                                                                "sh", "-c", mount, str(state)])
    view = Path(f"/proc/{process.pid}/root") / str(state).lstrip("/")
    port = process.onvif_port
    try:
        assert (await set_preset(port, "Before")).status == 200
        saved = (view / "ptz-swing.json").read_bytes()
        assert b"Before" in saved
        assert not (state / "ptz-swing.json").exists()  # the tmpfs is private to the relay
        mark = process.mark()
        filler = fill(view)
        reply = await set_preset(port, "During")
        check_reply(reply)
        assert reply.status == 500 and "presets could not be saved" in fault_reason(reply.body), reply.body[:300]
        line = await process.wait_for("camera swing: cannot save presets: .*No space left on device", mark)
        assert "level=error" in line
        assert (view / "ptz-swing.json").read_bytes() == saved
        assert not [p.name for p in view.iterdir() if p.name.endswith(".tmp")]
        assert await preset_names(port) == ["Before"]
        filler.unlink()
        assert (await set_preset(port, "After")).status == 200
        assert await preset_names(port) == ["Before", "After"]
        assert b"After" in (view / "ptz-swing.json").read_bytes()
        assert len(process.since(mark, "cannot save presets")) == 1
    finally:
        await process.stop()
        await rig.stop()
    assert not log_errors(process.lines), process.output


@pytest_twisted.ensureDeferred
async def test_enospc_on_fsync_keeps_the_old_presets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When fsync reports ENOSPC, SetPreset faults, ptz-swing.json and GetPresets are unchanged, and the next save works."""
    from twisted.logger import globalLogPublisher

    rig = start_rig()
    relay = await start_inprocess_relay(rig, tmp_path)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    try:
        await poll(lambda: relay.service.reconciler.ready.called, timeout=10, what="the relay to be ready")
        assert (await set_preset(relay.port, "Before")).status == 200
        saved = (relay.state_dir / "ptz-swing.json").read_bytes()
        monkeypatch.setattr(os, "fsync", full)
        reply = await set_preset(relay.port, "During")
        monkeypatch.setattr(os, "fsync", real_fsync)
        check_reply(reply)
        assert reply.status == 500 and "presets could not be saved" in fault_reason(reply.body)
        assert (relay.state_dir / "ptz-swing.json").read_bytes() == saved
        assert not [p.name for p in relay.state_dir.iterdir() if p.name.endswith(".tmp")]
        assert await preset_names(relay.port) == ["Before"]
        assert (await set_preset(relay.port, "After")).status == 200
        assert await preset_names(relay.port) == ["Before", "After"]
    finally:
        globalLogPublisher.removeObserver(events.append)
        await relay.stop()
        await rig.stop()
    from twisted.logger import formatEvent

    lines = [formatEvent(event) for event in events]
    assert len([line for line in lines if "cannot save presets" in line and "No space left" in line]) == 1, lines
    assert not [event for event in events if "log_failure" in event]
