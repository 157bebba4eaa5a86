"""Transport failures of the HTTP clients: cancellations and timeouts are told apart, the rest said briefly."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, TimeoutError
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.web.client import ResponseNeverReceived

from atomrelay.net import describe, is_cancellation, url_host


def test_cancellations_and_timeouts_are_cancellations_even_wrapped() -> None:
    """CancelledError and addTimeout's TimeoutError count, also inside treq's ResponseNeverReceived."""
    assert is_cancellation(CancelledError())
    assert is_cancellation(TimeoutError())
    assert is_cancellation(ResponseNeverReceived([Failure(CancelledError())]))
    assert not is_cancellation(ConnectionRefusedError())
    assert not is_cancellation(ResponseNeverReceived([Failure(ConnectionRefusedError())]))


def test_describe_names_what_happened() -> None:
    """A lost answer says so with its reason; other errors keep their type name."""
    assert describe(ResponseNeverReceived([Failure(ConnectionRefusedError("nope"))])).startswith(
        "connection closed without an answer (ConnectionRefusedError")
    assert describe(ValueError("bad")) == "ValueError: bad"


def test_url_host_brackets_ipv6_and_encodes_the_zone() -> None:
    """IPv6 goes in brackets with its zone as %25zone (RFC 6874); names and IPv4 stay as they are."""
    assert url_host("fd00::10") == "[fd00::10]"
    assert url_host("fe80::1%eth0") == "[fe80::1%25eth0]"
    assert url_host("[::1]") == "[::1]"
    assert url_host("192.0.2.1") == "192.0.2.1" and url_host("cam.local") == "cam.local"


def test_ip_of_reads_addresses_not_names() -> None:
    """IP literals come back as addresses (IPv4-mapped IPv6 as IPv4, zone dropped); names are None."""
    from ipaddress import ip_address

    from atomrelay.net import ip_of

    assert ip_of("::ffff:192.0.2.7") == ip_address("192.0.2.7")
    assert ip_of("fe80::1%eth0") == ip_address("fe80::1")
    assert ip_of("192.0.2.7") == ip_address("192.0.2.7")
    assert ip_of("cam.local") is None and ip_of("3232255242") is None


def test_closing_the_pools_waits_at_most_its_timeout() -> None:
    """A pool whose connections never finish closing (a TLS peer ignoring close_notify, a host gone away) holds a
    stop up for the timeout only; pools that close fire the stop at once."""
    from twisted.internet.defer import Deferred, succeed
    from twisted.internet.task import Clock

    from atomrelay.net import ClosePools

    class Pool:
        def __init__(self, closed: Deferred[None]) -> None:
            self.closed = closed

        def closeCachedConnections(self) -> Deferred[None]:
            return self.closed

    clock = Clock()
    prompt = ClosePools(clock, [Pool(succeed(None))])  # type: ignore[list-item]
    prompt.startService()
    assert prompt.stopService().called
    closing: Deferred[None] = Deferred()
    stuck = ClosePools(clock, [Pool(succeed(None)), Pool(closing)], timeout=2.0)  # type: ignore[list-item]
    stuck.startService()
    stopped = stuck.stopService()
    clock.advance(1.9)
    assert not stopped.called
    clock.advance(0.1)
    assert stopped.called and stopped.result is None and not stuck.running
    assert not closing.called  # not cancelled: Twisted's own Deferreds behind it would log unhandled errors
    closing.callback(None)
    assert not clock.getDelayedCalls()
