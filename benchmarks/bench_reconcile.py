"""Reconcile: how long after a mediamtx restart all 32 paths are back (16 cameras x 2 streams).

The fake mediamtx stands in for mediamtx: ``restart`` forgets every path added through
the API and changes its ``started`` time, as a real restart does. The simulator process
times the restart itself and polls its own path table every 2 ms until the relay has put
all 32 paths back. The relay polls mediamtx every ``mediamtx.poll_interval`` (2 s, the
default), so the expected time is up to one interval plus the time to re-register.
Restarts are spaced by ``GAP`` seconds so that they land at different points of the
poll cycle.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common

CAMERAS = 16
RESTARTS = 8
GAP = 0.37
POLL_INTERVAL = 2.0


def main() -> None:
    """Restart the fake mediamtx ``--restarts`` times; print (and save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--restarts", type=int, default=RESTARTS)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    common.pin_clients()
    times: list[float | None] = []
    with tempfile.TemporaryDirectory(prefix="atomrelay-bench-") as tmp, common.Simulators(CAMERAS) as sims:
        workdir = Path(tmp)
        port = common.free_port()
        config = common.write_config(workdir / "relay.yaml", sims, CAMERAS, port, workdir / "state",
                                     poll_interval=f"{POLL_INTERVAL:g}s")
        with common.relay(config, port, workdir / "relay.log") as relay:
            relay.wait_answering()
            common.wait_for(lambda: sims.command("paths")["paths"] >= 2 * CAMERAS, 20, "paths")
            for index in range(args.restarts):
                time.sleep(GAP * (index + 1) % POLL_INTERVAL)
                seconds = sims.command(f"restart {2 * CAMERAS}")["seconds"]
                times.append(seconds)
                common.stderr(f"reconcile: restart {index + 1}: all paths back after "
                              f"{'never (10 s)' if seconds is None else f'{seconds:.3f} s'}")
    back = [t for t in times if t is not None]
    result: dict[str, Any] = {"paths": 2 * CAMERAS, "poll_interval_s": POLL_INTERVAL, "restarts": len(times),
                              "failed": len(times) - len(back), "seconds": times}
    if back:
        result.update(median=statistics.median(back), max=max(back), min=min(back))
    common.save(result, args.json)


if __name__ == "__main__":
    main()
