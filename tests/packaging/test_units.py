"""The systemd units: the directives the issue asks for, `systemd-analyze verify`, the twistd ExecStart."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.helpers import VENV_BIN, child_env, free_port, poll
from tests.test_cli import Collect, answers

from .support import UNITS, exec_start, start_simulators, unit_directives, write_config

UNIT_NAMES = ("atomrelay.service", "atomrelay-twistd.service")

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    "StateDirectory": "atomrelay",
    "Type": "notify",
    "Restart": "on-failure",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "CapabilityBoundingSet": "",
}


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit_has_the_required_directives(name: str) -> None:
    """Type=notify, ordering after network, clock and mediamtx, watchdog, a non-root user and the hardening set."""
    units = unit_directives(name)
    for key, value in HARDENING.items():
        assert units.get(key) == [value], key
    after = units["After"][0].split()
    assert {"network-online.target", "time-sync.target", "mediamtx.service"} <= set(after)
    assert "network-online.target" in units["Wants"][0].split()
    assert int(units["WatchdogSec"][0]) >= 10
    assert units["User"] != ["root"] and units.get("User") and units.get("Group")
    assert "AmbientCapabilities" not in units  # only added by the operator for ports below 1024


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit_allows_the_connection_cap_plus_the_default_descriptors(name: str) -> None:
    """LimitNOFILE leaves room for every client connection the caps allow on top of the default 1024 descriptors."""
    from atomrelay.web.limits import MAX_CONNECTIONS

    (limit,) = unit_directives(name)["LimitNOFILE"]
    assert int(limit) >= MAX_CONNECTIONS + 1024


def test_exec_start_lines_are_the_documented_ones() -> None:
    """The onedir unit runs /opt/atomrelay/atomrelay run, the pip unit twistd -n --pidfile= atomrelay."""
    assert exec_start("atomrelay.service") == ["/opt/atomrelay/atomrelay", "run", "-c", "/etc/atomrelay/config.yaml"]
    twistd = exec_start("atomrelay-twistd.service")
    assert twistd[0] == "/opt/atomrelay/bin/twistd"
    assert {"--nodaemon", "--pidfile="} <= set(twistd)
    assert twistd[-3:] == ["atomrelay", "-c", "/etc/atomrelay/config.yaml"]


def test_onefile_note_mentions_notify_access_all() -> None:
    """The onedir unit documents NotifyAccess=all for the onefile build (its main PID is the bootloader)."""
    assert "NotifyAccess=all" in (UNITS / "atomrelay.service").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_systemd_analyze_verify_passes(name: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit without a single warning (executables stubbed under tmp)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd; `make system-deps` does)")
    # verify insists that ExecStart exists: point /opt/atomrelay at stub executables.
    opt = tmp_path / "opt"
    for stub in (opt / "atomrelay", opt / "bin" / "twistd"):
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    unit = tmp_path / name
    unit.write_text((UNITS / name).read_text(encoding="utf-8").replace("/opt/atomrelay", str(opt)), encoding="utf-8")
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    diagnostics = [line for line in (out.stdout + out.stderr).splitlines() if name in line or "Unknown" in line]
    assert out.returncode == 0, out.stdout + out.stderr
    assert diagnostics == []


@pytest_twisted.ensureDeferred
async def test_twistd_unit_command_serves_with_one_line_logs(tmp_path: Path) -> None:
    """The pip unit's ExecStart (twistd with atomrelay's log observer) serves and logs one key=value line per event."""
    sims = start_simulators(reactor)
    onvif_port = free_port()
    config = write_config(tmp_path / "config.yaml", sims, onvif_port, tmp_path / "state")
    args = [a.replace("/opt/atomrelay/bin", str(VENV_BIN)).replace("/etc/atomrelay/config.yaml", str(config))
            for a in exec_start("atomrelay-twistd.service")]
    proto = Collect()
    process: Any = reactor.spawnProcess(proto, args[0], args, env=child_env(), path=str(tmp_path))
    try:
        await poll(lambda: answers(onvif_port), timeout=30, what="twistd to answer SOAP")
        await poll(lambda: {"living/main", "living/sub"} <= set(sims.fake.paths), timeout=10, what="paths registered")
        process.signalProcess(signal.SIGTERM)
        code = await proto.ended
    finally:
        if process.pid is not None:
            process.signalProcess("KILL")
        await sims.stop()
    assert code in ((0, None), (None, signal.SIGTERM))
    lines = proto.output.decode().splitlines()
    assert lines and all(" level=" in line and " logger=" in line and ' msg="' in line for line in lines), lines
    assert any("registered mediamtx path living/main" in line for line in lines)
    assert not any("level=debug" in line for line in lines)
