"""Memory: the relay's resident set size after start, and its growth under 100,000 mixed requests.

* After start: the relay with 1, 16 and 64 cameras (2 streams each), once it answers
  SOAP, has registered every mediamtx path and has had ``SETTLE`` seconds for its first
  health checks and model detections.
* Growth: with 16 cameras, a warm-up of ``WARMUP`` mixed requests, then 100,000 more
  (wrk, 16 connections). The warm-up is long enough to fill the WS-Security replay
  memory, which by design holds up to 50,000 nonces until their Created leaves the window (here
  up to 10 min): once full it stays full, so growth after the warm-up is a leak, not that
  bounded cache filling up. RSS is read 1 s after each phase.

The mix (one in ``len(MIX)`` requests each, nonces never reused): GetSystemDateAndTime
without credentials, GetDeviceInformation, GetCapabilities, GetServices, Media
GetProfiles, GetStreamUri, GetSnapshotUri, Media2 GetProfiles, and a malformed body
(answered with a 400 fault, counted as an expected error).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import common
from lxml.builder import ElementMaker  # type: ignore[import-not-found, unused-ignore]

from atomrelay.xml import ns

SETTLE = 3.0
WARMUP = 150_000
MEASURED = 100_000
DEVICE, MEDIA, MEDIA2 = "/onvif/device_service", "/onvif/media_service", "/onvif/media2_service"
MALFORMED = b"<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'><s:Body><broken"


def _mix() -> list[tuple[str, Callable[[], bytes]]]:
    tds = ElementMaker(namespace=ns.TDS, nsmap={None: ns.TDS})
    trt = ElementMaker(namespace=ns.TRT, nsmap={None: ns.TRT, "tt": ns.TT})
    tr2 = ElementMaker(namespace=ns.TR2, nsmap={None: ns.TR2})
    tt = ElementMaker(namespace=ns.TT, nsmap={"tt": ns.TT})
    stream_uri = trt.GetStreamUri(
        trt.StreamSetup(tt.Stream("RTP-Unicast"), tt.Transport(tt.Protocol("RTSP"))), trt.ProfileToken("cam03.main")
    )
    signed = [
        (DEVICE, tds.GetDeviceInformation()),
        (DEVICE, tds.GetCapabilities(tds.Category("All"))),
        (DEVICE, tds.GetServices(tds.IncludeCapability("true"))),
        (MEDIA, trt.GetProfiles()),
        (MEDIA, stream_uri),
        (MEDIA, trt.GetSnapshotUri(trt.ProfileToken("cam05.sub"))),
        (MEDIA2, tr2.GetProfiles(tr2.Type("All"))),
    ]
    gsdt = common.get_system_date_and_time()
    mix: list[tuple[str, Callable[[], bytes]]] = [(DEVICE, lambda: gsdt)]
    mix += [(path, common.SignedRequests(body).make) for path, body in signed]
    mix.append((DEVICE, lambda: MALFORMED))
    return mix


def mixed(count: int) -> Iterator[tuple[str, bytes]]:
    """``count`` requests cycling through the mix."""
    mix = _mix()
    for index in range(count):
        path, make = mix[index % len(mix)]
        yield path, make()


_IMPORTS = """
import json, sys
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
steps = {"python": rss()}
if sys.argv[1] == "on_demand":
    from atomrelay import tls
    tls.import_twisted_without_tls()
from twisted.internet import reactor
steps["+ reactor"] = rss()
import lxml.etree, treq, twisted.web.server
steps["+ twisted.web, lxml, treq"] = rss()
import atomrelay.cli, atomrelay.tap
steps["+ atomrelay"] = rss()
print(json.dumps(steps))
"""


def import_rss() -> dict[str, dict[str, int]]:
    """RSS (KiB) after each group of imports: as the relay imports them (TLS on demand) and in the plain order.

    Twisted's TCP transport imports pyOpenSSL and cryptography whenever they are installed
    (treq requires them); the relay's entry points import Twisted's networking with them
    hidden (``atomrelay.tls``). ``plain`` shows what that saves before the relay does anything.
    """
    result = {}
    for tls in ("on_demand", "plain"):
        done = subprocess.run([common.PYTHON, "-c", _IMPORTS, tls], capture_output=True, text=True, check=True,
                              env=common.child_env(), cwd="/")
        result[tls] = json.loads(done.stdout)
    return result


def start_rss(sims: common.Simulators, cameras: int, workdir: Path) -> dict[str, Any]:
    """RSS of a freshly started relay with ``cameras`` cameras."""
    sims.command("restart 0")
    port = common.free_port()
    config = common.write_config(workdir / f"relay-{cameras}.yaml", sims, cameras, port, workdir / f"state-{cameras}")
    with common.relay(config, port, workdir / f"relay-{cameras}.log") as relay:
        relay.wait_answering()
        common.wait_for(lambda: sims.command("paths")["paths"] >= 2 * cameras, 20, "paths")
        time.sleep(SETTLE)
        rss = relay.rss_kib()
    common.stderr(f"memory: {cameras} cameras: {rss / 1024:.1f} MiB after start")
    return {"cameras": cameras, "rss_kib": rss}


def growth(sims: common.Simulators, workdir: Path, warmup: int, measured: int) -> dict[str, Any]:
    """RSS before and after ``measured`` mixed requests, after a ``warmup``, with 16 cameras."""
    sims.command("restart 0")
    port = common.free_port()
    config = common.write_config(workdir / "relay-growth.yaml", sims, 16, port, workdir / "state-growth")
    with common.relay(config, port, workdir / "relay-growth.log") as relay:
        relay.wait_answering()
        common.wait_for(lambda: sims.command("paths")["paths"] >= 32, 20, "paths")
        time.sleep(SETTLE)
        started = relay.rss_kib()
        phases: list[dict[str, Any]] = []
        for name, count in (("warm-up", warmup), ("measured", measured)):
            result = common.run_wrk_count(port, mixed, count, 16, workdir)
            time.sleep(1.0)
            phases.append({"phase": name, "requests": result.requests, "seconds": result.seconds,
                           "errors": result.errors, "expected_errors": result.requests // len(_mix()),
                           "wrapped": result.wrapped, "rss_kib": relay.rss_kib()})
            common.stderr(f"memory: after {name} ({result.requests} requests, {result.rate:.0f}/s): "
                          f"{phases[-1]['rss_kib'] / 1024:.1f} MiB")
    after_warmup, after = phases[0]["rss_kib"], phases[1]["rss_kib"]
    return {"rss_after_start_kib": started, "phases": phases, "growth_percent": 100.0 * (after - after_warmup) / after_warmup}


def main() -> None:
    """Measure and print (and save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--requests", type=int, default=MEASURED)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    common.pin_clients()
    with tempfile.TemporaryDirectory(prefix="atomrelay-bench-") as tmp, common.Simulators(64) as sims:
        workdir = Path(tmp)
        result = {
            "imports": import_rss(),
            "start": [start_rss(sims, cameras, workdir) for cameras in (1, 16, 64)],
            "growth": growth(sims, workdir, args.warmup, args.requests),
        }
    common.save(result, args.json)


if __name__ == "__main__":
    main()
