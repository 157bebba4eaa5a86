"""Start-up: process start to SOAP answering and every mediamtx path registered, 16 cameras.

Each start begins with a fresh fake mediamtx (no paths). The clock starts just before
the process is spawned and stops at three moments, polled every few milliseconds:

* ``soap``: the first 200 answer to GetSystemDateAndTime;
* ``paths``: the fake mediamtx lists all 32 paths;
* ``ready``: systemd's ``READY=1`` arrives on a ``$NOTIFY_SOCKET`` (the relay sends it
  once its ports listen and its paths are registered); "never" if it has not come
  ``READY_WAIT`` seconds after serving.

Start-to-serving is the later of ``soap`` and ``paths``. The relay's modules are
byte-compiled first, as ``pip install`` does for an installed package (an editable
install compiles them on its first run, unless ``PYTHONDONTWRITEBYTECODE`` is set, as it
is on some build machines: then every start compiles the relay's 73 modules it imports
again, about 0.15 s). One unmeasured start creates the state directory and warms the page cache;
then ``STARTS`` measured starts.
The pip form is ``.venv/bin/atomrelay run``; the frozen onedir bundle
(``dist/atomrelay/atomrelay``) is measured too when it has been built.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import common

STARTS = 7
READY_WAIT = 3.0
"""Seconds READY=1 may come after serving before it counts as never sent."""
CAMERAS = 16
ONEDIR = common.ROOT / "dist" / "atomrelay" / "atomrelay"


def one_start(sims: common.Simulators, argv: list[str] | None, config: Path, port: int, workdir: Path) -> dict[str, float]:
    """Start once; seconds from spawn to each milestone."""
    sims.command("restart 0")
    notify_path = workdir / "notify.sock"
    notify_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)
    env = common.child_env()
    env["NOTIFY_SOCKET"] = str(notify_path)
    marks: dict[str, float] = {}
    try:
        with common.relay(config, port, workdir / "relay.log", argv=argv, env=env) as relay:
            start = relay.started
            deadline = start + 20.0
            while len(marks) < 3:
                now = time.perf_counter()
                if "soap" in marks and "paths" in marks and now > start + max(marks.values()) + READY_WAIT:
                    break
                if now > deadline:
                    raise RuntimeError(f"start-up not complete after 20 s: {marks}; see {relay.log}")
                if relay.process.poll() is not None:
                    raise RuntimeError(f"the relay exited; see {relay.log}")
                if "ready" not in marks:
                    try:
                        if b"READY=1" in notify.recv(4096):
                            marks["ready"] = time.perf_counter() - start
                    except BlockingIOError:
                        pass
                if "soap" not in marks:
                    try:
                        status, _ = common.post_once(port, "/onvif/device_service",
                                                     common.get_system_date_and_time(), timeout=1.0)
                        if status == 200:
                            marks["soap"] = time.perf_counter() - start
                    except OSError:
                        pass
                if "paths" not in marks and sims.command("paths")["paths"] >= 2 * CAMERAS:
                    marks["paths"] = time.perf_counter() - start
                time.sleep(0.002)
            marks["rss_kib"] = relay.rss_kib()
    finally:
        notify.close()
    marks["serving"] = max(marks["soap"], marks["paths"])
    return marks


def measure(sims: common.Simulators, argv: list[str] | None, label: str, workdir: Path, starts: int) -> dict[str, Any]:
    """One unmeasured start, then ``starts`` measured ones."""
    port = common.free_port()
    config = common.write_config(workdir / f"{label}.yaml", sims, CAMERAS, port, workdir / f"state-{label}")
    one_start(sims, argv, config, port, workdir)
    runs = [one_start(sims, argv, config, port, workdir) for _ in range(starts)]
    summary: dict[str, Any] = {"form": label, "starts": starts}
    for key in ("soap", "paths", "ready", "serving"):
        values = [run[key] for run in runs if key in run]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                        "missing": len(runs) - len(values)} if values else None
    summary["rss_kib"] = statistics.median(run["rss_kib"] for run in runs)
    ready = f"{summary['ready']['median']:.3f} s" if summary["ready"] else "never"
    common.stderr(f"startup: {label}: serving after {summary['serving']['median']:.3f} s (median of {starts}), "
                  f"READY=1 after {ready}")
    return summary


def main() -> None:
    """Measure the pip form and, if built, the onedir bundle; print (and save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=STARTS)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    common.pin_clients()
    results: dict[str, Any] = {"cameras": CAMERAS, "forms": []}
    subprocess.run([str(common.BIN / "python"), "-m", "compileall", "-q", "atomrelay", "twisted/plugins"],
                   cwd=common.ROOT, check=True)
    with tempfile.TemporaryDirectory(prefix="atomrelay-bench-") as tmp, common.Simulators(CAMERAS) as sims:
        workdir = Path(tmp)
        results["forms"].append(measure(sims, None, "pip", workdir, args.starts))
        if ONEDIR.exists():
            newest_source = max(p.stat().st_mtime for p in (common.ROOT / "atomrelay").rglob("*.py"))
            onedir = measure(sims, [str(ONEDIR)], "onedir", workdir, args.starts)
            onedir["stale"] = ONEDIR.stat().st_mtime < newest_source
            results["forms"].append(onedir)
        else:
            results["onedir_missing"] = str(ONEDIR.relative_to(common.ROOT))
    common.save(results, args.json)


if __name__ == "__main__":
    main()
