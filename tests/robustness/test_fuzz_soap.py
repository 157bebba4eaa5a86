"""Fuzzing the SOAP endpoints with Hypothesis: broken XML, hostile values in valid requests, odd HTTP headers.

The contract for every request (``support.check_reply``): a SOAP answer (200, or a Fault
with a 4xx/5xx status) or a plain 4xx; never a 5xx without a Fault, never a traceback
in the body, and nothing the relay logs as a crash. Most examples are rendered in
memory through the Site of a relay built by ``build_relay`` in this process (simulated
cameras and mediamtx on loopback behind it); a smaller budget goes to a real
``atomrelay run`` over sockets, which must stay up with bounded memory.

Budgets are fixed and runs are derandomized, so CI sees the same examples every time;
``ATOMRELAY_FUZZ_SCALE=10`` multiplies the budgets for a longer local run.
"""

from __future__ import annotations

import gc
import os
import random
import tracemalloc
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.server import Site

from atomrelay.xml import ns
from tests.helpers import poll
from tests.robustness.strategies import (
    CONTENT_TYPES,
    ENCODINGS,
    ENTITY_TRICKS,
    TEMPLATES,
    broken_documents,
    digest_headers,
    mutated_requests,
    sweep,
)
from tests.robustness.support import (
    GET_DATE,
    HttpReply,
    InProcessRelay,
    RelayProcess,
    Rig,
    all_services,
    answers_soap,
    authed,
    check_reply,
    envelope,
    log_errors,
    op,
    parse_http_response,
    raw_connect,
    security_header,
    start_inprocess_relay,
    start_relay_process,
    start_rig,
)

pytestmark = pytest.mark.integration

SCALE = float(os.environ.get("ATOMRELAY_FUZZ_SCALE", "1"))


def budget(examples: int) -> int:
    """``examples`` scaled by ATOMRELAY_FUZZ_SCALE."""
    return max(1, int(examples * SCALE))


def fuzz(examples: int) -> settings:
    """Repeatable Hypothesis settings: derandomized, no deadline, no example database, ``budget(examples)`` examples."""
    return settings(derandomize=True, deadline=None, database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck), max_examples=budget(examples))


SERVICE_PATHS = {"device": "/onvif/device_service", "media": "/onvif/media_service",
                 "media2": "/onvif/media2_service", "ptz": "/onvif/ptz_service",
                 "imaging": "/onvif/imaging_service", "events": "/onvif/events_service"}


@dataclass
class Target:
    """The in-process relay under fuzz and what it has logged."""

    relay: InProcessRelay
    rig: Rig = field(repr=False)
    subscription_path: str = ""
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def site(self) -> Site:
        """The relay's HTTP site."""
        return self.relay.site

    def crashes(self, since: int) -> list[str]:
        """Crash reports (logged failures) after event ``since``."""
        return [formatEvent(e) + "\n" + e["log_failure"].getTraceback() for e in self.events[since:] if "log_failure" in e]


@pytest_twisted.async_yield_fixture(scope="module")
async def target(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Target]:
    """A relay built by build_relay on this reactor, over a Swing and an ATOM Cam 2, with one pull point."""
    rig = start_rig()
    relay = await start_inprocess_relay(rig, tmp_path_factory.mktemp("fuzz"))
    fuzzed = Target(relay, rig, "")
    globalLogPublisher.addObserver(fuzzed.events.append)
    try:
        reply = await render(relay.site, http_request(authed(op(ns.TEV, "CreatePullPointSubscription")),
                                                      "/onvif/events_service"))
        assert reply is not None and reply.status == 200
        address = etree.fromstring(reply.body).findtext(f".//{{{ns.WSA}}}Address")
        assert address is not None
        fuzzed.subscription_path = "/" + address.split("/", 3)[3]
        yield fuzzed
    finally:
        globalLogPublisher.removeObserver(fuzzed.events.append)
        await relay.stop()
        await rig.stop()


def http_request(body: bytes, path: str = "/onvif/device_service", content_type: str = "application/soap+xml",
                 headers: dict[str, str] | None = None) -> bytes:
    """One HTTP/1.1 POST with a correct Content-Length."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1:8080", "Connection: close", f"Content-Length: {len(body)}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


class MemoryTransport(StringTransport):
    """A StringTransport that can also half-close (BoundedRequest's lingering refusal does)."""

    def loseWriteConnection(self) -> None:
        """Shut the write side: no more output."""
        self.disconnecting = True


async def render(site: Site, data: bytes, wait: float = 10.0) -> HttpReply | None:
    """Feed ``data`` to a new connection of ``site`` in memory; the response (None if none came within ``wait``)."""
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    transport = MemoryTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8080), peerAddress=peer)
    channel = site.buildProtocol(peer)
    channel.makeConnection(transport)

    def answered() -> bool:
        return transport.disconnecting or parse_http_response(transport.value()) is not None

    try:
        channel.dataReceived(data)
        if not answered():
            try:
                await poll(answered, timeout=wait, interval=0.002, what="an answer")
            except AssertionError:
                return None
        return parse_http_response(transport.value(), closed=True)
    finally:
        channel.connectionLost(Failure(ConnectionDone("the fuzzing client left")))


async def exercise(target: Target, data: bytes, may_wait: bool = False) -> None:
    """Send one request in memory and hold the answer and the log to the contract."""
    since = len(target.events)
    reply = await render(target.site, data, wait=1.5 if may_wait else 10.0)
    if reply is None and may_wait:
        return  # a PullMessages still waiting for events; the client leaving is part of the test
    check_reply(reply, data)
    crashes = target.crashes(since)
    assert not crashes, "\n".join(crashes)


@fuzz(400)
@given(body=broken_documents(), content_type=st.sampled_from(CONTENT_TYPES[:5]),
       path=st.sampled_from(sorted(SERVICE_PATHS.values())))
def test_broken_xml_gets_a_fault(target: Target, body: bytes, content_type: str, path: str) -> Deferred[None]:
    """Random bytes, truncations, wrong namespaces, deep nesting, huge attributes, entities and wrong encodings get a Fault or 4xx."""
    return Deferred.fromCoroutine(exercise(target, http_request(body, path, content_type)))


@fuzz(700)
@given(request=mutated_requests(), auth=st.sampled_from(("admin", "admin", "admin", "none", "stale")),
       version=st.sampled_from(("1.2", "1.2", "1.1")))
def test_hostile_values_in_valid_requests_get_a_fault(target: Target, request: tuple[str, bytes], auth: str,
                                                      version: str) -> Deferred[None]:
    """Every operation with hostile texts, attributes and shapes is answered or faulted, never crashes a handler."""
    where, operation = request
    header = {"admin": security_header(), "none": "",
              "stale": security_header(created="2001-01-01T00:00:00Z")}[auth]
    body = envelope(operation.decode(), header, version)
    path = target.subscription_path if where == "subscription" else SERVICE_PATHS[where]
    content_type = "application/soap+xml" if version == "1.2" else "text/xml"
    may_wait = b"PullMessages" in operation
    return Deferred.fromCoroutine(exercise(target, http_request(body, path, content_type), may_wait))


@fuzz(250)
@given(authorization=digest_headers(), content_type=st.sampled_from(CONTENT_TYPES),
       host=st.sampled_from(("127.0.0.1:8080", "", "[", "[::1]:99999", "a" * 300, "0.0.0.0", "x:y:z", "é.example")),
       secured=st.booleans())
def test_odd_http_headers_get_a_fault_or_4xx(target: Target, authorization: str, content_type: str, host: str,
                                             secured: bool) -> Deferred[None]:
    """Broken Digest/Basic credentials, content types and Host headers get a 401/4xx or a Fault, never a crash."""
    body = envelope(op(ns.TRT, "GetProfiles"), security_header() if secured else "")
    data = http_request(body, "/onvif/media_service", content_type, {"Authorization": authorization})
    data = data.replace(b"Host: 127.0.0.1:8080", b"Host: " + host.encode("utf-8"))
    return Deferred.fromCoroutine(exercise(target, data))


@pytest_twisted.ensureDeferred
async def test_every_field_of_every_operation_with_every_hostile_value(target: Target) -> None:
    """Each text and attribute of each template request, set to each hostile value in turn, gets an answer or a Fault."""
    failures: list[str] = []
    requests = sweep()
    for where, operation in requests:
        body = envelope(operation.decode(), security_header())
        path = target.subscription_path if where == "subscription" else SERVICE_PATHS[where]
        try:
            await exercise(target, http_request(body, path), may_wait=b"PullMessages" in operation)
        except AssertionError as failure:
            failures.append(f"{operation[:300]!r}:\n{failure}")
    assert len(requests) > 5000
    assert not failures, f"{len(failures)} of {len(requests)} failed; the first ones:\n" + "\n\n".join(failures[:3])


def replay_corpus(seed: int = 1234, size: int = 400) -> list[bytes]:
    """A fixed mix of broken documents, truncations and valid requests (unauthenticated) to replay for leaks."""
    generator = random.Random(seed)
    corpus: list[bytes] = [*ENTITY_TRICKS, *ENCODINGS, GET_DATE]
    valid = [envelope(body) for _, body in TEMPLATES]
    while len(corpus) < size:
        document = generator.choice(valid)
        corpus.append(document[: generator.randrange(len(document))])
        corpus.append(document)
        corpus.append(bytes(generator.getrandbits(8) for _ in range(generator.randrange(1, 600))))
    return [http_request(body, generator.choice(list(SERVICE_PATHS.values()))) for body in corpus[:size]]


async def settle() -> None:
    """Let the reactor turn (it drops cancelled timers lazily, when it runs) and collect garbage."""
    await deferLater(reactor, 0, lambda: None)
    gc.collect()


@pytest_twisted.ensureDeferred
async def test_memory_stays_bounded_under_malformed_traffic(target: Target) -> None:
    """After two warm-up passes over 400 malformed and valid requests, four more passes grow the traced heap by < 256 KiB."""
    corpus = replay_corpus()

    async def one_pass() -> None:
        for index, data in enumerate(corpus):
            await exercise(target, data)
            if index % 50 == 0:
                await settle()
        target.events.clear()
        await settle()

    tracemalloc.start()
    try:
        for _ in range(2):  # lazy imports, caches filling up, the reactor's timer heap at its size
            await one_pass()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(4):
            await one_pass()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert growth < 256 * 1024, f"{growth} bytes retained after 1600 more requests"


@pytest_twisted.ensureDeferred
async def test_in_process_relay_survives_fuzzing(target: Target) -> None:
    """After the fuzzing the relay still answers on its socket and its health loop still runs (no worker died)."""
    from atomrelay.camera.health import HealthMonitor

    assert await answers_soap(target.relay.port)
    monitors = [svc for svc in all_services(target.relay.service) if isinstance(svc, HealthMonitor)]
    assert monitors and all(monitor.running for monitor in monitors)
    rounds = monitors[0].rounds
    await poll(lambda: monitors[0].rounds > rounds, timeout=5, what="another health round")
    assert target.relay.service.reconciler.ready.called


# --- against a real process -------------------------------------------------------------------------


@pytest_twisted.async_yield_fixture(scope="module")
async def process(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RelayProcess]:
    """``atomrelay run`` on its own rig; its RSS once it answers is kept in ``START_RSS_KIB``."""
    rig = start_rig()
    relay = await start_relay_process(rig, tmp_path_factory.mktemp("fuzz-process"))
    START_RSS_KIB[relay.pid] = relay.rss_kib()
    try:
        yield relay
    finally:
        await relay.stop()
        await rig.stop()


START_RSS_KIB: dict[int, int] = {}


async def over_socket(port: int, data: bytes) -> HttpReply | None:
    """Send ``data`` on a real connection and read the answer (the server must answer and may close)."""
    connection = await raw_connect(port)
    try:
        connection.send(data)
        await poll(lambda: connection.reply() is not None or connection.closed, timeout=15, interval=0.005,
                   what="an answer")
        return connection.reply()
    finally:
        connection.abort()


@fuzz(150)
@given(body=st.one_of(broken_documents(), mutated_requests().map(lambda r: authed(r[1].decode()))),
       path=st.sampled_from(sorted(SERVICE_PATHS.values())))
def test_real_process_answers_every_fuzzed_request(process: RelayProcess, body: bytes, path: str) -> Deferred[None]:
    """Over real sockets, ``atomrelay run`` answers broken and hostile requests with a Fault or 4xx."""
    async def one() -> None:
        data = http_request(body, path)
        reply = await over_socket(process.onvif_port, data)
        check_reply(reply, data)

    return Deferred.fromCoroutine(one())


@pytest_twisted.ensureDeferred
async def test_real_process_survives_fuzzing(process: RelayProcess) -> None:
    """After the fuzzing the process still serves, logged no crash, and its RSS grew by less than 20 MiB."""
    for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, b"GET / HTTP/1.1\r\n" * 600,
                    b"POST /onvif/device_service HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                    b"POST /onvif/device_service HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n"):
        connection = await raw_connect(process.onvif_port)
        connection.send(garbage)
        try:
            await poll(lambda: connection.closed or connection.reply() is not None, timeout=1, what="a refusal")
        except AssertionError:
            pass  # waiting for the rest of a line: the request deadline's job, not this test's
        if connection.reply() is not None:
            assert 400 <= connection.reply().status < 500  # type: ignore[union-attr]
        connection.abort()
    reply = await over_socket(process.onvif_port, http_request(GET_DATE))
    assert reply is not None and reply.status == 200
    assert process.alive
    assert not log_errors(process.lines), "\n".join(log_errors(process.lines))
    before = START_RSS_KIB[process.pid]
    assert process.rss_kib() - before < 20 * 1024, (before, process.rss_kib())
