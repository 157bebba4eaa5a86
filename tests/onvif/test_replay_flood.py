"""A real load generator (wrk) floods the relay with fresh signed tokens: a sniffed Administrator token stays refused."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.web.server import Site

from atomrelay.auth.policy import Caller
from atomrelay.auth.security import Authenticator
from atomrelay.onvif.server import OnvifResource
from atomrelay.web.limits import BoundedRequest
from tests.helpers import poll
from tests.onvif.conftest import (
    SOAP12_TYPE,
    SOAP_SKEW,
    SOAP_USERS,
    SoapRelay,
    soap_envelope,
    soap_op,
    soap_security,
    soap_services,
)
from tests.onvif.test_security import iso_microseconds

CAP = 500
"""The relay's replay memory in this test (the default is 50,000; smaller keeps the flood short)."""
FLOOD = 2 * CAP
"""Pre-made fresh User tokens, each sent once until wrk is stopped."""
ENOUGH = 3 * CAP // 2
"""Accepted User tokens that end the flood: well past the cap, and before wrk has sent every body."""
SCRIPT = Path(__file__).with_name("replay_flood.lua")
PATH = "/onvif/device_service"


def _signed(user: str, operation: str) -> bytes:
    """A request for ``operation`` with a PasswordDigest token for ``user`` created now."""
    created = iso_microseconds(reactor.seconds())  # type: ignore[attr-defined]
    return soap_envelope(soap_op(operation), [soap_security(user, SOAP_USERS[user].password, created)])


async def _post(port: int, body: bytes) -> int:
    response = await treq.post(f"http://127.0.0.1:{port}{PATH}", body, headers={"Content-Type": [SOAP12_TYPE]})
    await treq.content(response)
    return int(response.code)


@pytest.fixture
def wrk() -> str:
    """The wrk executable (apt package wrk; `make test` installs it)."""
    path = shutil.which("wrk")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("wrk not on PATH (apt package wrk; required under CI)", pytrace=False)
        pytest.skip("wrk not on PATH (apt package wrk)")
    return path


@pytest.fixture
def flood_relay() -> Any:
    """The test relay with a replay memory of CAP tokens, listening on a loopback port."""
    relay = SoapRelay(clock=reactor)
    relay.authenticator = Authenticator(reactor, SOAP_USERS.get, SOAP_SKEW, False, replay_cap=CAP)
    relay.resource = OnvifResource(soap_services(relay), relay.authenticator, None, device_id="dev1")
    relay.root.putChild(b"onvif", relay.resource)
    port = reactor.listenTCP(0, Site(relay.root, requestFactory=BoundedRequest), interface="127.0.0.1")  # type: ignore[attr-defined]
    yield relay, port.getHost().port
    port.stopListening()


class _Wrk(ProcessProtocol):
    """wrk as a child process: its output, and a Deferred that fires with its exit status."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[Any] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_flood_of_fresh_user_tokens_does_not_reopen_an_administrator_replay(
    flood_relay: Any, wrk: str, tmp_path: Path
) -> None:
    """After wrk sends more fresh User tokens than the replay memory holds, the sniffed Administrator one is refused."""
    relay, port = flood_relay
    sniffed = _signed("admin", "SetHostname")
    assert await _post(port, sniffed) == 200
    bodies = tmp_path / "bodies.txt"
    bodies.write_bytes(b"\n".join(_signed("viewer", "GetHostname") for _ in range(FLOOD)) + b"\n")
    process = _Wrk()
    args = [wrk, "-t1", "-c8", "-d40s", "--timeout", "20s", "-s", str(SCRIPT), f"http://127.0.0.1:{port}{PATH}",
            "--", str(bodies)]
    transport = reactor.spawnProcess(process, wrk, args, env=dict(os.environ))  # type: ignore[attr-defined]

    def accepted() -> int:
        return [call.caller for call in relay.calls].count(Caller("viewer", "User"))

    try:
        await poll(lambda: accepted() >= ENOUGH or process.ended.called, timeout=40.0, what="the flood")
    finally:
        if not process.ended.called:
            transport.signalProcess("INT")  # wrk stops, and prints what it did
        await process.ended
    assert accepted() >= ENOUGH, process.output
    assert int(re.findall(rb"accepted (\d+)", process.output)[0]) >= ENOUGH, process.output
    assert relay.authenticator.replay_memory_size == CAP
    assert await _post(port, sniffed) == 400
    assert [call.caller for call in relay.calls].count(Caller("admin", "Administrator")) == 1
    assert await _post(port, _signed("admin", "SetHostname")) == 200
