"""The WS-Discovery responder protocol on a Clock with a fake transport."""

from __future__ import annotations

import ipaddress
from typing import Any, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent

from atomrelay.discovery.messages import DN, WSD
from atomrelay.discovery.responder import APP_MAX_DELAY, DiscoveryResponder, Limits, Target
from atomrelay.xml import ns
from tests.discovery.support import (
    NVT,
    STREAMING,
    TDS_DEVICE,
    FakeDevice,
    FakeTransport,
    FixedRandom,
    parse,
    probe_bytes,
    raw_probe,
    resolve_bytes,
    target,
)

LOCAL = [ipaddress.IPv4Interface("10.1.0.5/24"), ipaddress.IPv4Interface("10.2.0.5/24")]
CLIENT = ("10.1.0.77", 40000)


class Harness:
    """A responder for some targets, its Clock and the datagrams it wrote."""

    def __init__(self, targets: Sequence[Target] | None = None, delay: float = 0.25,
                 local: Sequence[ipaddress.IPv4Interface] = LOCAL, limits: Limits = Limits()) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.targets = list(targets) if targets is not None else [target()]
        self.responder = DiscoveryResponder(self.clock, self.targets, lambda: local, FixedRandom(delay), limits)
        self.transport = FakeTransport()
        self.responder.makeConnection(self.transport)  # type: ignore[arg-type]

    def receive(self, data: bytes, source: tuple[str, int] = CLIENT) -> None:
        self.responder.datagramReceived(data, source)

    def replies(self, wait: float = APP_MAX_DELAY) -> list[tuple[bytes, tuple[str, int]]]:
        self.clock.advance(wait)
        sent, self.transport.sent = self.transport.sent, []
        return sent


def test_untyped_probe_like_home_assistant_is_answered_after_the_delay() -> None:
    """An untyped Profile/Streaming probe gets one ProbeMatches, unicast to the sender, only after the random delay."""
    harness = Harness(delay=0.3)
    data, message_id = probe_bytes(scopes=[STREAMING])
    harness.receive(data)
    assert harness.replies(0.29) == []
    [(reply, destination)] = harness.replies(0.01)
    assert destination == CLIENT
    env = parse(reply)
    assert env.getRelatesTo() == message_id
    [match] = env.getProbeResolveMatches()
    assert match.getEPR() == harness.targets[0].endpoint_reference
    assert match.getXAddrs() == ["http://10.1.0.5:8080/onvif/device_service"]
    assert match.getMetadataVersion() == "1"
    assert "onvif://www.onvif.org/mac/02:00:00:00:00:01" in [s.getValue() for s in match.getScopes()]


def test_probe_types_nvt_device_and_prefix_quirks_are_answered() -> None:
    """dn:NetworkVideoTransmitter, tds:Device, an empty Types element and a dp0 prefix all get a ProbeMatch."""
    harness = Harness()
    harness.receive(probe_bytes([NVT])[0])
    harness.receive(probe_bytes([TDS_DEVICE])[0])
    harness.receive(raw_probe("", message_id="urn:uuid:1"))
    harness.receive(raw_probe("dp0:NetworkVideoTransmitter", message_id="urn:uuid:2", extra_ns=f'xmlns:dp0="{DN}"'))
    assert len(harness.replies()) == 4


def test_non_matching_probes_are_not_answered() -> None:
    """A printer type, a foreign scope or a prefix bound elsewhere gets no reply at all."""
    harness = Harness()
    harness.receive(raw_probe("wsdp:Device", extra_ns='xmlns:wsdp="http://schemas.xmlsoap.org/ws/2006/02/devprof"'))
    harness.receive(probe_bytes(scopes=["onvif://www.onvif.org/name/garage"])[0])
    harness.receive(raw_probe("dn:NetworkVideoTransmitter", message_id="urn:uuid:3", extra_ns='xmlns:dn="urn:x"'))
    assert harness.replies() == []


def test_one_probe_match_per_message_per_device() -> None:
    """Two devices answer one probe with two messages, each holding exactly one ProbeMatch."""
    harness = Harness([target(FakeDevice("porch"), 1, 8101), target(FakeDevice("garden"), 2, 8102)])
    harness.receive(probe_bytes([NVT])[0])
    replies = harness.replies()
    assert len(replies) == 2
    matches = [parse(data).getProbeResolveMatches() for data, _ in replies]
    assert [len(m) for m in matches] == [1, 1]
    assert {m[0].getEPR() for m in matches} == {t.endpoint_reference for t in harness.targets}
    assert sorted(m[0].getXAddrs()[0] for m in matches) == [
        "http://10.1.0.5:8101/onvif/device_service", "http://10.1.0.5:8102/onvif/device_service"]


def test_scope_probe_finds_only_the_named_device() -> None:
    """A name scope selects one of several devices."""
    harness = Harness([target(FakeDevice("porch"), 1), target(FakeDevice("garden"), 2)])
    harness.receive(probe_bytes(scopes=["onvif://www.onvif.org/name/garden"])[0])
    [(reply, _)] = harness.replies()
    assert parse(reply).getProbeResolveMatches()[0].getEPR() == harness.targets[1].endpoint_reference


def test_non_discoverable_devices_stay_silent() -> None:
    """A NonDiscoverable device answers neither Probe nor Resolve."""
    device = FakeDevice(discoverable_flag=False)
    harness = Harness([target(device)])
    harness.receive(probe_bytes()[0])
    harness.receive(resolve_bytes(harness.targets[0].endpoint_reference)[0])
    assert harness.replies() == []


def test_device_turned_non_discoverable_during_the_delay_stays_silent() -> None:
    """A reply still waiting is not sent once the device became NonDiscoverable."""
    device = FakeDevice()
    harness = Harness([target(device)])
    harness.receive(probe_bytes()[0])
    device.discoverable_flag = False
    assert harness.replies() == []


def test_resolve_is_answered_for_the_right_endpoint_only() -> None:
    """Resolve of a device's EPR gets ResolveMatches with its XAddrs; an unknown EPR gets nothing."""
    harness = Harness()
    epr = harness.targets[0].endpoint_reference
    data, message_id = resolve_bytes(epr)
    harness.receive(data, ("10.2.0.9", 50000))
    harness.receive(resolve_bytes("urn:uuid:99999999-9999-4999-8999-999999999999")[0])
    [(reply, destination)] = harness.replies()
    assert destination == ("10.2.0.9", 50000)
    env = parse(reply)
    assert env.getAction() == WSD + "/ResolveMatches"
    assert env.getRelatesTo() == message_id
    [match] = env.getProbeResolveMatches()
    assert (match.getEPR(), match.getXAddrs()) == (epr, ["http://10.2.0.5:8080/onvif/device_service"])


def test_xaddrs_use_the_interface_facing_the_sender_else_the_first() -> None:
    """A sender on 10.2.0.0/24 gets the 10.2.0.5 XAddr; a routed sender gets the first joined address."""
    harness = Harness()
    harness.receive(probe_bytes()[0], ("10.2.0.200", 3702))
    harness.receive(probe_bytes()[0], ("172.16.9.9", 3702))
    xaddrs = {dest[0]: parse(data).getProbeResolveMatches()[0].getXAddrs() for data, dest in harness.replies()}
    assert xaddrs == {"10.2.0.200": ["http://10.2.0.5:8080/onvif/device_service"],
                      "172.16.9.9": ["http://10.1.0.5:8080/onvif/device_service"]}


def test_xaddrs_prefer_advertise_host_then_a_bound_address() -> None:
    """advertise_host (with or without port) wins, then the device's own bind address."""
    assert target(advertise_host="nvr.example:9000").xaddrs(LOCAL[0].ip) == [
        "http://nvr.example:9000/onvif/device_service"]
    assert target(advertise_host="nvr.example", port=8101).xaddrs(LOCAL[0].ip) == [
        "http://nvr.example:8101/onvif/device_service"]
    assert target(advertise_host="fd00::5").xaddrs(None) == ["http://[fd00::5]:8080/onvif/device_service"]
    assert target(bind="192.168.1.51", port=8101).xaddrs(LOCAL[0].ip) == [
        "http://192.168.1.51:8101/onvif/device_service"]
    assert target(bind="0.0.0.0").xaddrs(None) == []


def test_no_local_address_means_no_reply() -> None:
    """Without a joined interface (and no fixed host) there is no XAddr to give, so no reply."""
    harness = Harness(local=[])
    harness.receive(probe_bytes()[0])
    assert harness.replies() == []


def test_unanswerable_sources_are_ignored() -> None:
    """Source port 0, multicast, broadcast, unspecified and a subnet's broadcast address are never answered."""
    harness = Harness()
    data = probe_bytes()[0]
    for source in [("10.1.0.77", 0), ("239.255.255.250", 3702), ("255.255.255.255", 3702), ("0.0.0.0", 3702),
                   ("10.1.0.255", 3702), ("10.2.0.255", 3702), ("not-an-ip", 3702)]:
        harness.receive(data, source)
    assert harness.replies() == []
    harness.receive(data, ("10.1.0.254", 3702))
    assert len(harness.replies()) == 1


def test_malformed_huge_and_xxe_datagrams_are_dropped_and_the_responder_keeps_answering() -> None:
    """Garbage, truncated, 60 KB and entity-laden datagrams produce nothing; the next Probe is answered."""
    harness = Harness()
    valid, message_id = probe_bytes([NVT])
    xxe = (b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           + raw_probe(scopes="&x;").split(b"?>", 1)[1])
    huge = raw_probe().replace(b"<d:Probe>", b"<d:Probe>" + b"<x/>" * 15000)
    assert len(huge) > 60000
    for bad in (b"\x00" * 100, valid[: len(valid) // 2], xxe, huge, b"<" * 65000, valid.replace(b"MessageID", b"Nope")):
        harness.receive(bad)
    assert harness.replies() == []
    harness.receive(valid)
    [(reply, _)] = harness.replies()
    assert parse(reply).getRelatesTo() == message_id


def test_large_valid_probe_is_answered() -> None:
    """A Probe of more than 8 KiB (Twisted's default read size) is still a Probe."""
    harness = Harness()
    padded = raw_probe(scopes=" ".join([STREAMING] * 40) + " " * 9000)
    assert len(padded) > 8192
    harness.receive(padded)
    assert len(harness.replies()) == 1


def test_repeated_message_ids_are_answered_once() -> None:
    """SOAP-over-UDP repeats of one Probe (same MessageID, same sender) get one reply; another sender gets its own."""
    harness = Harness()
    data = probe_bytes()[0]
    for _ in range(4):
        harness.receive(data)
    harness.receive(data, ("10.1.0.78", 40000))
    assert sorted(dest for _, dest in harness.replies()) == [CLIENT, ("10.1.0.78", 40000)]
    harness.clock.advance(60)
    harness.receive(data)
    assert len(harness.replies()) == 1


def test_replies_are_rate_limited_per_source() -> None:
    """One source gets ``burst`` answers, then ``rate`` per second; another source is unaffected."""
    harness = Harness(limits=Limits(burst=4, rate=1.0))
    for number in range(10):
        harness.receive(probe_bytes()[0])
    assert len(harness.replies()) == 4
    harness.receive(probe_bytes()[0], ("10.1.0.99", 1234))
    assert len(harness.replies()) == 1
    harness.clock.advance(2.0)  # 3 s since the burst, counting the two reply waits: 3 tokens back
    for number in range(10):
        harness.receive(probe_bytes()[0])
    assert len(harness.replies()) == 3


def test_total_rate_limit_bounds_spoofed_sources() -> None:
    """Many different senders together get no more than the shared budget."""
    harness = Harness(limits=Limits(total_burst=10, total_rate=1.0))
    for number in range(50):
        harness.receive(probe_bytes()[0], (f"10.1.0.{number + 10}", 1000))
    assert len(harness.replies()) == 10


def test_pending_replies_are_cancelled() -> None:
    """cancel_pending drops every reply still waiting for its delay."""
    harness = Harness()
    harness.receive(probe_bytes()[0])
    harness.responder.cancel_pending()
    assert harness.replies() == []
    assert harness.clock.getDelayedCalls() == []


def test_send_errors_are_logged_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing write (network unreachable) is logged as a warning and does not escape the reply timer."""
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(DiscoveryResponder, "log", Logger(observer=events.append))
    harness = Harness()

    class Broken(FakeTransport):
        def write(self, data: bytes, addr: tuple[str, int]) -> None:
            raise OSError(101, "Network is unreachable")

    harness.responder.transport = Broken()  # type: ignore[assignment]
    harness.receive(probe_bytes()[0])
    harness.clock.advance(APP_MAX_DELAY)
    warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert warnings == ["cannot send a WS-Discovery message to 10.1.0.77: [Errno 101] Network is unreachable"]


def test_message_numbers_grow_and_message_ids_are_unique() -> None:
    """Each message gets a fresh MessageID and the next AppSequence MessageNumber of the instance."""
    harness = Harness()
    harness.responder.instance_id = 77
    for _ in range(3):
        harness.receive(probe_bytes()[0])
    envs = [parse(data) for data, _ in harness.replies()]
    assert [e.getMessageNumber() for e in envs] == ["1", "2", "3"]
    assert {e.getInstanceId() for e in envs} == {"77"}
    assert len({e.getMessageId() for e in envs}) == 3


def test_hello_and_bye_carry_the_device() -> None:
    """hello() names the device with XAddrs on the given interface address; bye() names its EPR."""
    harness = Harness()
    device_target = harness.targets[0]
    device_target.metadata_version = 5
    hello = harness.responder.hello(device_target, LOCAL[1].ip)
    assert hello is not None
    env = parse(hello)
    assert (env.getEPR(), env.getXAddrs(), env.getMetadataVersion()) == (
        device_target.endpoint_reference, ["http://10.2.0.5:8080/onvif/device_service"], "5")
    root = etree.fromstring(harness.responder.bye(device_target))
    assert root.findtext(f".//{{{WSD}}}Bye/*/*") == device_target.endpoint_reference
    assert root.tag == f"{{{ns.SOAP12}}}Envelope"


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048), cut=st.integers(min_value=0, max_value=2000), flip=st.integers(0, 255))
def test_arbitrary_and_mangled_datagrams_never_break_the_responder(data: bytes, cut: int, flip: int) -> None:
    """Random bytes and truncated or bit-flipped probes never raise, and the responder still answers afterwards."""
    harness = Harness()
    valid, _ = probe_bytes([NVT])
    mangled = bytearray(valid[:cut] or valid)
    mangled[len(mangled) // 2] ^= flip
    harness.receive(data)
    harness.receive(bytes(mangled))
    harness.replies()
    harness.receive(valid, ("10.1.0.99", 4000))
    assert [dest for _, dest in harness.replies()] == [("10.1.0.99", 4000)]
