"""SOAP throughput and latency: the relay against a bare twisted.web server, same requests, same run.

Scenarios, each at 1, 16 and 64 keep-alive connections (wrk, one thread):

* ``GetProfiles`` with a WS-Security UsernameToken (PasswordDigest), 1 camera x 2 streams
  and 16 cameras x 2 streams (2 and 32 Media profiles);
* ``GetSystemDateAndTime`` without credentials.

Every authenticated request carries its own nonce: before each relay run this script
writes ``1.2 x`` (the bare server's request count at that concurrency) + 2,000 requests,
each with a fresh random nonce and a Created of "now" (the relay's default 5-minute
clock skew covers the run), and ``requests.lua`` sends each at most once. A run that
needed more requests than were written is reported (``wrapped``) and its replays show up
as errors. The bare server (``bare_server.py``) answers the same requests with the bytes
the relay answered to the first GetProfiles (or GetSystemDateAndTime): the ceiling for
any twisted.web server here. The ratio relay/bare is the figure that matters.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from atomrelay.onvif import ns

CONNECTIONS = (1, 16, 64)
MEDIA = "/onvif/media_service"
DEVICE = "/onvif/device_service"


def run(duration: float, warmup: float, workdir: Path) -> dict[str, Any]:
    """Every scenario; a dict of figures."""
    common.pin_clients()
    results: dict[str, Any] = {"duration_s": duration, "scenarios": []}
    get_profiles = common.SignedRequests(common.operation(ns.TRT, "GetProfiles"))
    with common.Simulators(16) as sims:
        for cameras in (1, 16):
            port = common.free_port()
            config = common.write_config(workdir / f"relay-{cameras}.yaml", sims, cameras, port,
                                         workdir / f"state-{cameras}")
            with common.relay(config, port, workdir / f"relay-{cameras}.log") as relay:
                relay.wait_answering()
                common.wait_for(lambda: sims.command("paths")["paths"] >= 2 * cameras, 10, "paths")
                status, answer = common.post_once(port, MEDIA, get_profiles.make())
                if status != 200:
                    raise RuntimeError(f"GetProfiles answered {status}: {answer[:300]!r}")
                results["scenarios"].append(
                    _scenario(f"GetProfiles, {cameras} camera{'s' if cameras > 1 else ''} x 2 streams",
                              port, answer, workdir, duration, warmup,
                              lambda count: (
                                  (MEDIA, get_profiles.make()) for _ in range(count)
                              ), signed=True, cameras=cameras)
                )
                if cameras == 1:
                    gsdt = common.get_system_date_and_time()
                    status, answer = common.post_once(port, DEVICE, gsdt)
                    results["scenarios"].append(
                        _scenario("GetSystemDateAndTime, no credentials", port, answer, workdir, duration, warmup,
                                  lambda count: [(DEVICE, gsdt)], signed=False, cameras=cameras)
                    )
                results.setdefault("relay_rss_kib", {})[str(cameras)] = relay.rss_kib()
    return results


def _scenario(name: str, relay_port: int, answer: bytes, workdir: Path, duration: float, warmup: float,
              requests: Any, signed: bool, cameras: int) -> dict[str, Any]:
    """Bare server runs, then relay runs, at every connection count."""
    common.stderr(f"soap: {name} ({len(answer)} byte answer)")
    body_file = workdir / "answer.xml"
    body_file.write_bytes(answer)
    lines = workdir / "requests.txt"
    runs: dict[int, dict[str, Any]] = {}
    bare_port = common.free_port()
    with common.bare_server(body_file, bare_port, workdir / "bare.log") as bare:
        bare.wait_answering()
        common.write_request_lines(lines, requests(20_000))
        common.run_wrk(bare_port, lines, 16, warmup)
        for connections in CONNECTIONS:
            result = common.run_wrk(bare_port, lines, connections, duration)
            runs[connections] = {"bare": _figures(result)}
            common.stderr(f"  bare  c={connections:<3} {result.rate:8.0f} req/s  p99 {result.latency_ms['p99']:.2f} ms")
    common.write_request_lines(lines, requests(int(warmup * 10_000) + 1_000))
    common.run_wrk(relay_port, lines, 16, warmup)
    for connections in CONNECTIONS:
        needed = int(runs[connections]["bare"]["requests"] * 1.2) + 2_000
        common.write_request_lines(lines, requests(needed))
        result = common.run_wrk(relay_port, lines, connections, duration)
        figures = _figures(result)
        if not signed:
            figures["wrapped"] = 0
        runs[connections]["relay"] = figures
        runs[connections]["ratio"] = result.rate / runs[connections]["bare"]["rate"]
        common.stderr(f"  relay c={connections:<3} {result.rate:8.0f} req/s  p99 {result.latency_ms['p99']:.2f} ms"
                      f"  ratio {runs[connections]['ratio']:.2f}  errors {result.errors}")
    return {"name": name, "cameras": cameras, "signed": signed, "answer_bytes": len(answer),
            "runs": {str(c): r for c, r in runs.items()}}


def _figures(result: common.WrkResult) -> dict[str, Any]:
    return {
        "requests": result.requests,
        "rate": result.rate,
        "errors": result.errors,
        "wrapped": result.wrapped,
        "latency_ms": result.latency_ms,
    }


def main() -> None:
    """Run and print (and save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per server")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="atomrelay-bench-") as tmp:
        started = time.time()
        result = run(args.duration, args.warmup, Path(tmp))
        result["wall_s"] = time.time() - started
    common.save(result, args.json)


if __name__ == "__main__":
    main()
