"""Where the relay spends its time on the worst SOAP path, sampled with py-spy.

The worst path is an authenticated GetProfiles (the biggest answer, WS-Security on every
request). The relay runs as a real process with 1 or 16 cameras; wrk loads it at 16
connections while ``py-spy record`` samples it from outside (no instrumentation, so the
request rate stays close to the unprofiled one). Reported: the functions with the most
samples on their own (self) and with their callees (inclusive), as shares of the
samples taken while the relay was busy.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import common

from atomrelay.xml import ns

RATE_HZ = 1000


def profile(cameras: int, duration: float, workdir: Path) -> dict[str, Any]:
    """Profile one relay under GetProfiles load; the summary."""
    spy = shutil.which("py-spy", path=str(common.BIN)) or shutil.which("py-spy")
    if spy is None:
        return {"cameras": cameras, "skipped": "py-spy is not installed (make bench installs it into .venv)"}
    requests = common.SignedRequests(common.operation(ns.TRT, "GetProfiles"))
    raw = workdir / f"py-spy-{cameras}.txt"
    with common.Simulators(cameras) as sims:
        port = common.free_port()
        config = common.write_config(workdir / "relay.yaml", sims, cameras, port, workdir / f"state-{cameras}")
        with common.relay(config, port, workdir / "relay.log") as relay:
            relay.wait_answering()
            common.wait_for(lambda: sims.command("paths")["paths"] >= 2 * cameras, 10, "paths")
            lines = workdir / "requests.txt"
            common.write_request_lines(lines, (("/onvif/media_service", requests.make()) for _ in range(2_000)))
            common.run_wrk(port, lines, 16, 1)
            common.write_request_lines(
                lines, (("/onvif/media_service", requests.make()) for _ in range(int(duration * 12_000)))
            )
            sampler = subprocess.Popen(
                [spy, "record", "--rate", str(RATE_HZ), "--format", "raw", "--output", str(raw), "--pid",
                 str(relay.pid), "--duration", str(int(duration) + 1), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(0.3)
            result = common.run_wrk(port, lines, 16, duration)
            sampler.wait(30)
    if sampler.returncode != 0 or not raw.exists():
        return {"cameras": cameras, "skipped": f"py-spy failed (exit {sampler.returncode}); ptrace not allowed?"}
    summary = summarize(raw)
    summary.update(cameras=cameras, rate=result.rate, errors=result.errors)
    return summary


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from a py-spy ``raw`` (collapsed stacks) file."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def shares(counter: collections.Counter[str], keep: Any) -> list[tuple[str, float]]:
        return [(name, 100.0 * n / total) for name, n in counter.most_common() if keep(name)][:top]

    return {
        "samples": total,
        "self": shares(own, lambda name: True),
        "inclusive": shares(inclusive, lambda name: "atomrelay/" in name and "cli.py" not in name),
    }


def _short(frame: str) -> str:
    """``func (/path/to/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``: one entry per function."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.", str(common.ROOT) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name


def main() -> None:
    """Profile with 1 and 16 cameras; print (and save) the summaries."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    common.pin_clients()
    with tempfile.TemporaryDirectory(prefix="atomrelay-bench-") as tmp:
        result = {"profiles": [profile(cameras, args.duration, Path(tmp)) for cameras in (1, 16)]}
    common.save(result, args.json)


if __name__ == "__main__":
    main()
