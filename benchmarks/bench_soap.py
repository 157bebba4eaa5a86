"""SOAP throughput and latency: the relay against bare twisted.web servers, same requests, same run.

Scenarios, each at 1, 16 and 64 keep-alive connections (wrk, one thread):

* ``GetProfiles`` with a WS-Security UsernameToken (PasswordDigest), 1 camera x 2 streams
  and 16 cameras x 2 streams (2 and 32 Media profiles);
* ``GetSystemDateAndTime`` without credentials.

Servers, each loaded with the same request file:

* ``minimal``: ``bare_server.py``, twisted.web answering the relay's own answer bytes with
  no access log and no form parsing: the ceiling for any twisted.web server here;
* ``stock``: the same with twisted.web's defaults (form parsing, an access log line);
* ``relay``: ``atomrelay run`` as shipped;
* ``relay_access_log``: the same relay run with ``-v``, which turns on the access log (a
  line per request, written to its log file), to show what that costs.

Each figure is the fastest of ``REPEATS`` runs. ``cpu_us`` is the server process's CPU time
(user + system, from /proc) per request, the least of the runs: a single-threaded server
with a core of its own answers 1 / ``cpu_us`` requests a second, and unlike req/s it
does not count the time other processes on the machine took the core. Every authenticated request carries its
own nonce: before each relay run this script writes ``1.2 x`` (the minimal server's
request count at that concurrency) + 2,000
requests, each with a fresh random nonce and a Created of "now" (the relay's default
5-minute clock skew covers the run), and ``requests.lua`` sends each at most once. A run
that needed more requests than were written says so (``wrapped``), and the relay's
replay cache then turns the repeats into errors, which are reported too.

Issue 15's figure (relay against ``stock``, authenticated GetProfiles at 16 connections)
is also measured in ``PAIRS`` interleaved pairs of runs of ``PAIR_SECONDS`` each, with the
relay and a stock server both up: stock then relay, relay then stock, and so on. Other
work on the machine comes and goes over tens of seconds and can slow every run of one
server in the tables above, so a ratio of two figures taken a minute apart can be off by
a third; the two runs of a pair are seconds apart, and the median of the pairs' CPU time
ratios is the figure recorded against the target (over the pairs whose runs had no errors:
a socket error or a non-2xx answer in either run, or a relay run that ran out of fresh
requests, leaves its pair out).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import common

from atomrelay.xml import ns

CONNECTIONS = (1, 16, 64)
REPEATS = 3
"""Runs per server and connection count; the fastest is kept (other work on the machine only slows runs)."""
PAIRS = 7
"""Interleaved stock/relay pairs of runs for issue 15's figure."""
PAIR_SECONDS = 2.0
PAIR_CONNECTIONS = 16
MEDIA = "/onvif/media_service"
DEVICE = "/onvif/device_service"
Requests = Callable[[int], Iterable[tuple[str, bytes]]]


class Scenario:
    """One request type against every server."""

    def __init__(self, name: str, cameras: int, path: str, requests: Requests, signed: bool) -> None:
        self.name = name
        self.cameras = cameras
        self.path = path
        self.requests = requests
        self.signed = signed
        self.answer = b""
        self.runs: dict[int, dict[str, Any]] = {c: {} for c in CONNECTIONS}
        self.pairs: list[dict[str, float]] = []
        """Issue 15's interleaved pairs: CPU µs per request of each server, their ratio, the pair's errors."""

    def figures(self) -> dict[str, Any]:
        """The scenario's results."""
        return {"name": self.name, "cameras": self.cameras, "signed": self.signed, "answer_bytes": len(self.answer),
                "runs": {str(c): r for c, r in self.runs.items()},
                **({"paired": {"connections": PAIR_CONNECTIONS, "seconds": PAIR_SECONDS, "pairs": self.pairs}}
                   if self.pairs else {})}


def run(duration: float, warmup: float, workdir: Path) -> dict[str, Any]:
    """Every scenario; a dict of figures."""
    common.pin_clients()
    get_profiles = common.SignedRequests(common.operation(ns.TRT, "GetProfiles"))
    gsdt = common.get_system_date_and_time()
    scenarios: list[Scenario] = []
    with common.Simulators(16) as sims:
        for cameras in (1, 16):
            plural = "s" if cameras > 1 else ""
            batch = [Scenario(f"GetProfiles, {cameras} camera{plural} x 2 streams", cameras, MEDIA,
                              lambda count: ((MEDIA, get_profiles.make()) for _ in range(count)), signed=True)]
            if cameras == 1:
                batch.append(Scenario("GetSystemDateAndTime, no credentials", cameras, DEVICE,
                                      lambda count: [(DEVICE, gsdt)], signed=False))
            port = common.free_port()
            config = common.write_config(workdir / f"relay-{cameras}.yaml", sims, cameras, port,
                                         workdir / f"state-{cameras}")
            for label, options in (("relay", ()), ("relay_access_log", ("-v",))):
                with common.relay(config, port, workdir / f"{label}-{cameras}.log", options=options) as relay:
                    relay.wait_answering()
                    common.wait_for(lambda: sims.command("paths")["paths"] >= 2 * cameras, 10, "paths")
                    for scenario in batch:
                        if label == "relay":
                            first = next(iter(scenario.requests(1)))[1]
                            status, scenario.answer = common.post_once(port, scenario.path, first)
                            if status != 200:
                                raise RuntimeError(f"{scenario.name}: {status} {scenario.answer[:300]!r}")
                            common.stderr(f"soap: {scenario.name} ({len(scenario.answer)} byte answer)")
                            for stock in (True, False):
                                _bare_runs(scenario, stock, workdir, duration, warmup)
                        _relay_runs(scenario, label, relay.pid, port, workdir, duration, warmup)
                        if label == "relay" and scenario.signed:
                            _paired_runs(scenario, relay.pid, port, workdir, warmup)
            scenarios += batch
    return {"duration_s": duration, "repeats": REPEATS, "scenarios": [s.figures() for s in scenarios]}


@contextmanager
def _warm_bare_server(scenario: Scenario, stock: bool, workdir: Path, warmup: float,
                      name: str) -> Iterator[tuple[int, int, Path]]:
    """A bare server answering ``scenario``'s answer, warmed up: its pid, its port and a file of requests for it."""
    body_file = workdir / "answer.xml"
    body_file.write_bytes(scenario.answer)
    lines = workdir / f"{name}-requests.txt"
    port = common.free_port()
    with common.bare_server(body_file, port, workdir / f"{name}.log", stock=stock) as bare:
        bare.wait_answering()
        common.write_request_lines(lines, scenario.requests(20_000))
        common.run_wrk(port, lines, 16, warmup)
        yield bare.pid, port, lines


def _bare_runs(scenario: Scenario, stock: bool, workdir: Path, duration: float, warmup: float) -> None:
    label = "stock" if stock else "minimal"
    with _warm_bare_server(scenario, stock, workdir, warmup, f"bare-{label}") as (pid, port, lines):
        for connections in CONNECTIONS:
            results = [_timed_wrk(pid, port, lines, connections, duration) for _ in range(REPEATS)]
            scenario.runs[connections][label] = _best(label, connections, results, scenario.signed)


def _relay_runs(scenario: Scenario, label: str, pid: int, port: int, workdir: Path, duration: float,
                warmup: float) -> None:
    lines = workdir / "requests.txt"
    common.write_request_lines(lines, scenario.requests(int(warmup * 15_000) + 1_000))
    common.run_wrk(port, lines, 16, warmup)
    for connections in CONNECTIONS:
        needed = int(max(r["requests"] for r in scenario.runs[connections]["minimal"]["all"]) * 1.2) + 2_000
        results = []
        for _ in range(REPEATS):
            common.write_request_lines(lines, scenario.requests(needed))
            results.append(_timed_wrk(pid, port, lines, connections, duration))
        scenario.runs[connections][label] = _best(label, connections, results, scenario.signed)


def _paired_runs(scenario: Scenario, relay_pid: int, relay_port: int, workdir: Path, warmup: float) -> None:
    """Issue 15's figure: ``PAIRS`` pairs of runs, stock and relay taking turns to go first."""
    relay_lines = workdir / "relay-paired-requests.txt"
    needed = int(scenario.runs[PAIR_CONNECTIONS]["minimal"]["rate"] * PAIR_SECONDS * 1.2) + 2_000
    with _warm_bare_server(scenario, True, workdir, warmup, "bare-stock-paired") as stock:
        servers = {"stock": stock, "relay": (relay_pid, relay_port, relay_lines)}
        for index in range(PAIRS):
            common.write_request_lines(relay_lines, scenario.requests(needed))
            cpu: dict[str, float] = {}
            errors = 0
            for which in ("stock", "relay") if index % 2 == 0 else ("relay", "stock"):
                result, cpu[which] = _timed_wrk(*servers[which], PAIR_CONNECTIONS, PAIR_SECONDS)
                # Only the relay checks nonces: a stock run that starts its requests over is no error.
                errors += result.errors + (result.wrapped if which == "relay" else 0)
            ratio = cpu["stock"] / cpu["relay"]
            scenario.pairs.append({"stock_cpu_us": cpu["stock"], "relay_cpu_us": cpu["relay"], "ratio": ratio,
                                   "errors": errors})
            common.stderr(f"  paired {index + 1}/{PAIRS}: stock {cpu['stock']:6.1f}, relay {cpu['relay']:6.1f} "
                          f"CPU µs/req: {ratio:.2f}×  errors {errors}")


def _timed_wrk(pid: int, port: int, lines: Path, connections: int, duration: float) -> tuple[common.WrkResult, float]:
    """One wrk run, and the CPU microseconds server ``pid`` spent per request in it."""
    before = common.cpu_seconds(pid)
    result = common.run_wrk(port, lines, connections, duration)
    return result, (common.cpu_seconds(pid) - before) / max(result.requests, 1) * 1e6


def _best(label: str, connections: int, timed: list[tuple[common.WrkResult, float]], signed: bool) -> dict[str, Any]:
    """The figures of the fastest of the repeated runs (noise only ever slows a run down), errors of all."""
    results = [result for result, _ in timed]
    best = max(results, key=lambda r: r.rate)
    figures = {
        "cpu_us": min(cpu for _, cpu in timed),
        "requests": best.requests,
        "rate": best.rate,
        "errors": sum(r.errors for r in results),
        "wrapped": sum(r.wrapped for r in results) if signed else 0,
        "latency_ms": best.latency_ms,
        "all": [{"requests": r.requests, "rate": r.rate, "p99_ms": r.latency_ms["p99"]} for r in results],
    }
    common.stderr(f"  {label:20} c={connections:<3} {best.rate:8.0f} req/s  p99 {best.latency_ms['p99']:6.2f} ms"
                  f"  {figures['cpu_us']:6.1f} CPU µs/req  (runs: {', '.join(f'{r.rate:.0f}' for r in results)})"
                  f"  errors {figures['errors']}")
    return figures


def main() -> None:
    """Run and print (and save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measured run")
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
