"""Events: camera webhook POST -> the waiting PullMessages answered, 16 cameras.

One pull-point subscription (CreatePullPointSubscription, WS-Security) on its own
keep-alive connection. Each sample sends PullMessages (Timeout 5 s), lets it wait
``SETTLE`` seconds at the relay, then POSTs a ``recognitionNotify`` webhook (a person,
which raises one ObjectDetector event every time) on a second connection and times from
just before that POST to the PullMessages answer being read in full. Cameras take turns,
so every camera stays within the webhook rate limit (10 at once, 2 per second).
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import common
from lxml import etree
from lxml.builder import ElementMaker  # type: ignore[import-not-found, unused-ignore]

from atomrelay.xml import ns

CAMERAS = 16
SAMPLES = 200
SETTLE = 0.015
TEV = ElementMaker(namespace=ns.TEV, nsmap={"tev": ns.TEV})


def pull(timeout: str) -> bytes:
    """A signed PullMessages request."""
    return common.SignedRequests(TEV.PullMessages(TEV.Timeout(timeout), TEV.MessageLimit("100"))).make()


def main() -> None:
    """Measure and print (and save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    common.pin_clients()
    latencies: list[float] = []
    failures = 0
    with tempfile.TemporaryDirectory(prefix="atomrelay-bench-") as tmp, common.Simulators(CAMERAS) as sims:
        workdir = Path(tmp)
        port = common.free_port()
        config = common.write_config(workdir / "relay.yaml", sims, CAMERAS, port, workdir / "state")
        with common.relay(config, port, workdir / "relay.log"):
            common.wait_for(lambda: sims.command("paths")["paths"] >= 2 * CAMERAS, 20, "paths")
            subscribe = common.SignedRequests(TEV.CreatePullPointSubscription()).make()
            status, answer = common.post_once(port, "/onvif/events_service", subscribe)
            if status != 200:
                raise RuntimeError(f"CreatePullPointSubscription answered {status}: {answer[:300]!r}")
            address = etree.fromstring(answer).findtext(f".//{{{ns.WSA}}}Address")
            path = urlsplit(address or "").path
            puller = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            poster = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            headers = {"Content-Type": common.SOAP_TYPE}
            while True:
                puller.request("POST", path, pull("PT0S"), headers)
                if b"NotificationMessage" not in puller.getresponse().read():
                    break
            for index in range(args.samples):
                camera = common.camera_id(index % CAMERAS)
                webhook = json.dumps({"type": "recognitionNotify", "device": camera, "data": "person"}).encode()
                puller.request("POST", path, pull("PT5S"), headers)
                time.sleep(SETTLE)
                start = time.perf_counter()
                poster.request("POST", f"/webhook/{camera}/{common.WEBHOOK_TOKEN}", webhook,
                               {"Content-Type": "application/json"})
                reply = puller.getresponse().read()
                elapsed = time.perf_counter() - start
                hook = poster.getresponse()
                hook.read()
                if hook.status == 204 and b"ObjectDetector" in reply:
                    latencies.append(elapsed)
                else:
                    failures += 1
            puller.close()
            poster.close()
    result: dict[str, Any] = {"samples": len(latencies), "failures": failures}
    if latencies:
        result["latency_ms"] = common.summary_ms(latencies)
        common.stderr(f"events: webhook -> PullMessages answered: p50 {result['latency_ms']['p50']:.2f} ms, "
                      f"p99 {result['latency_ms']['p99']:.2f} ms ({len(latencies)} samples, {failures} failed)")
    common.save(result, args.json)


if __name__ == "__main__":
    main()
