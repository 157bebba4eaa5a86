"""Snapshot proxy: its overhead over fetching the simulated camera directly, and what coalescing saves.

Overhead (sequential keep-alive GETs, the camera answering at once):

* ``direct``: ``GET /cgi-bin/get_jpeg.cgi`` on the simulated camera;
* ``relay_fetch``: ``GET /snapshot/<camera>.jpg`` on the relay with HTTP Digest, each to a
  camera whose last image is over a second old, so the relay fetches upstream;
* ``relay_cached``: the same camera again within the second (served from memory).

Coalescing: the camera takes ``CAMERA_DELAY`` seconds per image (an ATOM Cam takes a few
hundred ms). ``burst``: 32 clients ask for one camera at the same instant (its cached
image expired); ``sustained``: 32 clients each fetch it in a loop for ``SUSTAIN`` seconds.
Upstream requests are counted by the simulated camera.
"""

from __future__ import annotations

import argparse
import http.client
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import common

CAMERAS = 16
SAMPLES = 200
FETCH_SAMPLES = 48
CLIENTS = 32
CAMERA_DELAY = 0.2
SUSTAIN = 5.0
MAX_AGE = 1.0


def direct(port: int, samples: int) -> list[float]:
    """Latencies of sequential fetches straight from the simulated camera."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for _ in range(samples + 1):
        start = time.perf_counter()
        connection.request("GET", "/cgi-bin/get_jpeg.cgi")
        response = connection.getresponse()
        response.read()
        times.append(time.perf_counter() - start)
        if response.status != 200:
            raise RuntimeError(f"camera answered {response.status}")
    connection.close()
    return times[1:]


def through_relay(port: int, samples: int, cached_samples: int, cameras: int) -> tuple[list[float], list[float]]:
    """(upstream fetches, cached answers): latencies of sequential relay snapshots."""
    client = common.DigestClient(port)
    client.get(f"/snapshot/{common.camera_id(0)}.jpg")
    last: dict[int, float] = {}
    fetched, cached = [], []
    for index in range(samples):
        camera = index % cameras
        wait = last.get(camera, 0.0) + MAX_AGE + 0.05 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        fetched.append(_timed(client, camera))
        last[camera] = time.monotonic()
    for _ in range(cached_samples):
        cached.append(_timed(client, 0))
    client.close()
    return fetched, cached


def _timed(client: common.DigestClient, camera: int) -> float:
    start = time.perf_counter()
    status, body = client.get(f"/snapshot/{common.camera_id(camera)}.jpg")
    elapsed = time.perf_counter() - start
    if status != 200 or not body.startswith(b"\xff\xd8"):
        raise RuntimeError(f"snapshot answered {status}")
    return elapsed


def coalescing(sims: common.Simulators, port: int) -> dict[str, Any]:
    """Upstream requests for 32 simultaneous clients (burst) and 32 looping clients (sustained)."""
    path = f"/snapshot/{common.camera_id(1)}.jpg"
    clients = [common.DigestClient(port) for _ in range(CLIENTS)]
    for client in clients:
        client.get(path)
    sims.command(f"snapshot_delay {CAMERA_DELAY}")
    try:
        time.sleep(MAX_AGE + 0.1)
        before = sims.command("snapshots")["snapshots"]
        barrier = threading.Barrier(CLIENTS)
        statuses: list[int] = []

        def once(client: common.DigestClient) -> None:
            barrier.wait()
            statuses.append(client.get(path)[0])

        _run_threads([threading.Thread(target=once, args=(c,)) for c in clients])
        burst = {"clients": CLIENTS, "ok": statuses.count(200),
                 "upstream": sims.command("snapshots")["snapshots"] - before}
        before = sims.command("snapshots")["snapshots"]
        latencies: list[float] = []
        failed: list[int] = []
        stop_at = time.monotonic() + SUSTAIN

        def loop(client: common.DigestClient) -> None:
            while time.monotonic() < stop_at:
                start = time.perf_counter()
                status, _ = client.get(path)
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    failed.append(status)

        _run_threads([threading.Thread(target=loop, args=(c,)) for c in clients])
        upstream = sims.command("snapshots")["snapshots"] - before
        sustained = {"clients": CLIENTS, "seconds": SUSTAIN, "ok": len(latencies), "failed": len(failed),
                     "upstream": upstream, "latency_ms": common.summary_ms(latencies)}
    finally:
        sims.command("snapshot_delay 0")
        for client in clients:
            client.close()
    return {"camera_delay_s": CAMERA_DELAY, "burst": burst, "sustained": sustained}


def _run_threads(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SUSTAIN + 30)


def main() -> None:
    """Measure and print (and save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    common.pin_clients()
    with tempfile.TemporaryDirectory(prefix="atomrelay-bench-") as tmp, common.Simulators(CAMERAS) as sims:
        workdir = Path(tmp)
        port = common.free_port()
        config = common.write_config(workdir / "relay.yaml", sims, CAMERAS, port, workdir / "state")
        with common.relay(config, port, workdir / "relay.log") as relay:
            relay.wait_answering()
            common.wait_for(lambda: sims.command("paths")["paths"] >= 2 * CAMERAS, 20, "paths")
            direct_times = direct(sims.cameras[0].http, SAMPLES)
            fetched, cached = through_relay(port, FETCH_SAMPLES, SAMPLES, CAMERAS)
            merged = coalescing(sims, port)
    result = {
        "direct_ms": common.summary_ms(direct_times),
        "relay_fetch_ms": common.summary_ms(fetched),
        "relay_cached_ms": common.summary_ms(cached),
        "coalescing": merged,
    }
    result["overhead_ms"] = result["relay_fetch_ms"]["p50"] - result["direct_ms"]["p50"]
    common.stderr(f"snapshot: direct p50 {result['direct_ms']['p50']:.2f} ms, relay fetch p50 "
                  f"{result['relay_fetch_ms']['p50']:.2f} ms, cached p50 {result['relay_cached_ms']['p50']:.2f} ms; "
                  f"burst {merged['burst']['clients']} -> {merged['burst']['upstream']} upstream, sustained "
                  f"{merged['sustained']['ok']} -> {merged['sustained']['upstream']} upstream")
    common.save(result, args.json)


if __name__ == "__main__":
    main()
