"""Where an authenticated GetProfiles spends its time, measured in this process without sockets.

Each server's Site gets the same HTTP/1.1 requests (a fresh WS-Security nonce each) on
one kept-alive channel over a ``StringTransport``: no syscalls and no event loop, so the
figures are the Python cost per request of

* ``bare``: the minimal ceiling of ``bench_soap.py`` (twisted.web, fixed answer);
* ``relay_http``: the relay's own Site (GuardedSite, BoundedRequest, its resource tree)
  with the SOAP layer replaced by the fixed answer: twisted.web plus the relay's guards
  and routing;
* ``relay``: the relay as built by ``build_relay`` (never started: no camera or mediamtx
  traffic), answering for real;
* ``relay_token_free``: ``relay`` with ``Authenticator.verify_security_header`` answering the
  caller it found for the first request (so the token check's cost in place is ``relay``
  minus this);
* ``relay_parse_free``: that, and ``parse_untrusted`` answering the tree it parsed for the
  first request (so the parse costs ``relay_token_free`` minus this in place, and the rest
  of the SOAP layer this minus ``relay_http``).

``stages`` are the relay's SOAP steps timed alone over the same requests: the parse
(``xmlsafe.parse_untrusted``), splitting the envelope (``soap.read_envelope``) and the
token check over the tree (``Authenticator.verify_security_header``, replay check
included). Each figure is the fastest of ``ROUNDS`` rounds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import bare_server
import common

from atomrelay.xml import ns

ROUNDS = 5
PER_ROUND = 10_000


def _http(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: {common.SOAP_TYPE}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("ascii") + body


class _NoSimulators:
    """Camera and mediamtx addresses for a relay that is built but never started."""

    api_port = 9
    cameras = [common.CameraPorts(9, 9)] * 16


def _connect(site: Any) -> tuple[Any, Any]:
    """A channel of ``site`` on a ``StringTransport``, connected."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def _per_request(site: Any, requests: list[bytes]) -> float:
    """Microseconds per request through one channel of ``site``; every answer must be a 200."""
    channel, transport = _connect(site)
    ok = 0
    started = time.perf_counter()
    for data in requests:
        channel.dataReceived(data)
        ok += transport.value().startswith(b"HTTP/1.1 200 OK")
        transport.clear()
    elapsed = time.perf_counter() - started
    if ok != len(requests):
        raise RuntimeError(f"{len(requests) - ok} of {len(requests)} answers were not a 200")
    return elapsed / len(requests) * 1e6


def _stage(step: Callable[[Any], object], inputs: list[Any]) -> float:
    started = time.perf_counter()
    for item in inputs:
        step(item)
    return (time.perf_counter() - started) / len(inputs) * 1e6


def measure(cameras: int, workdir: Path) -> dict[str, Any]:
    """The figures for a relay with ``cameras`` cameras x 2 streams."""
    from twisted.internet import reactor
    from twisted.web.server import Site

    from atomrelay.auth.security import Authenticator
    from atomrelay.config import load_config
    from atomrelay.onvif import server
    from atomrelay.web.limits import BoundedRequest, GuardedSite
    from atomrelay.wiring import build_relay
    from atomrelay.xml.parsing import parse_untrusted
    from atomrelay.xml.soap import read_envelope

    config = load_config(str(common.write_config(workdir / f"relay-{cameras}.yaml", _NoSimulators(), cameras, 8080,
                                                 workdir / f"state-{cameras}")))
    relay = build_relay(config, reactor)
    root = next(iter(relay.listeners.values()))[1]
    signed = common.SignedRequests(common.operation(ns.TRT, "GetProfiles"))

    def batch() -> list[bytes]:
        return [_http("/onvif/media_service", signed.make()) for _ in range(PER_ROUND)]

    def site_for_relay() -> Any:
        site: Any = GuardedSite(root, requestFactory=BoundedRequest)
        site.displayTracebacks = False
        return site

    channel, transport = _connect(site_for_relay())
    channel.dataReceived(_http("/onvif/media_service", signed.make()))
    answer = transport.value().split(b"\r\n\r\n", 1)[1]

    bare: Any = Site(bare_server.FixedBody(answer))  # type: ignore[no-untyped-call]
    bare.requestFactory = bare_server.BareRequest
    bare.log = lambda request: None

    def fixed_answer(self: Any, request: Any) -> bytes:
        request.setHeader(b"content-type", bare_server.CONTENT_TYPE)
        return answer

    first: dict[str, Any] = {}

    def first_caller(self: Any, *token: Any) -> Any:
        if "caller" not in first:
            first["caller"] = real_token(self, *token)
        return first["caller"]

    def first_tree(data: bytes) -> Any:
        if "tree" not in first:
            first["tree"] = real_parse(data)
        return first["tree"]

    real_soap, real_token, real_parse = (server.OnvifResource.render_soap, Authenticator.verify_security_header,
                                         server.parse_untrusted)
    variants: dict[str, list[tuple[Any, str, Any]]] = {
        "relay_http": [(server.OnvifResource, "render_soap", fixed_answer)],
        "relay_token_free": [(Authenticator, "verify_security_header", first_caller)],
        "relay_parse_free": [(Authenticator, "verify_security_header", first_caller),
                             (server, "parse_untrusted", first_tree)],
    }
    figures: dict[str, float] = {"bare": 1e9, "relay": 1e9, **{name: 1e9 for name in variants}}
    for _ in range(ROUNDS):
        figures["bare"] = min(figures["bare"], _per_request(bare, batch()))
        for name, patches in variants.items():
            try:
                for owner, attribute, stand_in in patches:
                    setattr(owner, attribute, stand_in)
                figures[name] = min(figures[name], _per_request(site_for_relay(), batch()))
            finally:
                server.OnvifResource.render_soap = real_soap  # type: ignore[method-assign]
                Authenticator.verify_security_header = real_token  # type: ignore[method-assign]
                server.parse_untrusted = real_parse
        figures["relay"] = min(figures["relay"], _per_request(site_for_relay(), batch()))

    stage_inputs = [signed.make() for _ in range(PER_ROUND)]
    roots = [parse_untrusted(b) for b in stage_inputs]
    fresh = common.SignedRequests(common.operation(ns.TRT, "GetProfiles"))
    headers = [read_envelope(parse_untrusted(fresh.make())).header_block(ns.WSSE, "Security") for _ in roots]
    authenticator = relay.parts.authenticator
    stages = {
        "parse": min(_stage(parse_untrusted, stage_inputs) for _ in range(ROUNDS)),
        "envelope": min(_stage(read_envelope, roots) for _ in range(ROUNDS)),
        "ws_security": _stage(lambda h: authenticator.verify_security_header(h, "127.0.0.1"), headers),
    }
    return {"cameras": cameras, "us_per_request": figures, "stages_us": stages, "answer_bytes": len(answer)}


def main() -> None:
    """Measure with 1 and 16 cameras; print (and save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="atomrelay-bench-") as tmp:
        result = {"rounds": ROUNDS, "per_round": PER_ROUND,
                  "breakdowns": [measure(cameras, Path(tmp)) for cameras in (1, 16)]}
    common.save(result, args.json)


if __name__ == "__main__":
    main()
