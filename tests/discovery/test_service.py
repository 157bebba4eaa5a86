"""The WS-Discovery service lifecycle on a Clock: bind, joins with backoff, Hello, Bye, MetadataVersion."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from atomrelay.config import DiscoveryConfig
from atomrelay.discovery.interfaces import Interface
from atomrelay.discovery.messages import WSD
from atomrelay.discovery.service import GROUP, MAX_DATAGRAM, PORT, DiscoveryService
from atomrelay.state import StateStore
from tests.discovery.support import FakeDevice, FakeReactor, FixedRandom, interface, parse, probe_bytes, target

ETH0 = interface("eth0", "10.1.0.5/24")
WLAN0 = interface("wlan0", "10.2.0.5/24")
DOWN = interface("eth1", "10.3.0.5/24", up=False)
LOOPBACK = interface("lo", "127.0.0.1/8", multicast=False, loopback=True)
NO_MULTICAST = interface("tun0", "10.4.0.5/24", multicast=False)


class Harness:
    """A DiscoveryService on a FakeReactor with settable interfaces and fake devices."""

    def __init__(self, tmp_path: Path, devices: list[FakeDevice] | None = None, wanted: str | None = None,
                 interfaces: list[Interface] | None = None) -> None:
        self.reactor = FakeReactor()
        self.reactor.advance(1_700_000_000)
        self.devices = devices if devices is not None else [FakeDevice("porch", "02:00:00:00:00:01")]
        self.interfaces = interfaces if interfaces is not None else [LOOPBACK, ETH0, WLAN0, DOWN, NO_MULTICAST]
        self.store = StateStore(tmp_path)
        self.targets = [target(device, number + 1, 8101 + number) for number, device in enumerate(self.devices)]
        self.service = DiscoveryService(
            self.reactor, DiscoveryConfig(True, wanted), self.targets, self.store,
            interfaces=self.list_interfaces, rng=FixedRandom(0.1), rescan_interval=60.0,
        )
        self.listing_error: OSError | None = None

    def list_interfaces(self) -> list[Interface]:
        if self.listing_error is not None:
            raise self.listing_error
        return list(self.interfaces)

    def multicasts(self) -> list[tuple[str, str, Any]]:
        """(action, outgoing interface, parsed message) of every datagram sent to the group."""
        found = []
        for data, destination, outgoing in self.reactor.writes():
            if destination == (GROUP, PORT):
                env = parse(data)
                found.append((env.getAction().rsplit("/", 1)[1], outgoing, env))
        return found

    def joins(self) -> list[str]:
        return [entry[2] for entry in self.reactor.log if entry[0] == "join"]

    def stop(self) -> None:
        stopped: list[Any] = []
        self.service.stopService().addBoth(stopped.append)
        assert stopped == [None]


def test_start_binds_with_reuse_a_64k_buffer_ttl_1_and_own_interfaces_only(tmp_path: Path) -> None:
    """UDP 3702 is bound with address reuse and a 64 KiB read size; TTL is 1 and IP_MULTICAST_ALL is off."""
    harness = Harness(tmp_path)
    harness.service.startService()
    assert harness.reactor.listen_calls == [
        {"port": PORT, "interface": "", "maxPacketSize": MAX_DATAGRAM, "listenMultiple": True}]
    assert MAX_DATAGRAM >= 65536
    port = harness.reactor.ports[0]
    assert (port.ttl, port.loopback) == (1, 1)
    assert (socket.IPPROTO_IP, 49, 0) in port.handle.options
    assert port.protocol is harness.service.responder
    harness.stop()


def test_joins_every_up_multicast_interface_and_says_hello_on_each(tmp_path: Path) -> None:
    """eth0 and wlan0 are joined (not lo, a down or a non-multicast interface); Hello goes out of each with its own address."""
    harness = Harness(tmp_path)
    harness.service.startService()
    assert harness.joins() == ["10.1.0.5", "10.2.0.5"]
    hellos = harness.multicasts()
    assert [(action, outgoing) for action, outgoing, _ in hellos] == [("Hello", "10.1.0.5"), ("Hello", "10.2.0.5")]
    assert [env.getXAddrs() for _, _, env in hellos] == [
        ["http://10.1.0.5:8101/onvif/device_service"], ["http://10.2.0.5:8101/onvif/device_service"]]
    assert hellos[0][2].getEPR() == harness.targets[0].endpoint_reference
    assert harness.service.joined == {"eth0": [ETH0.address], "wlan0": [WLAN0.address]}
    harness.stop()


def test_interface_by_name_or_address(tmp_path: Path) -> None:
    """discovery.interface joins only that interface; given as an address, XAddrs carry exactly that address."""
    by_name = Harness(tmp_path / "a", wanted="wlan0")
    by_name.service.startService()
    assert by_name.joins() == ["10.2.0.5"]
    by_name.stop()
    alias = interface("eth0", "192.168.7.9/24", label="eth0:cam")
    by_address = Harness(tmp_path / "b", wanted="192.168.7.9", interfaces=[ETH0, alias, WLAN0])
    by_address.service.startService()
    assert by_address.joins() == ["192.168.7.9"]
    [(_, _, hello)] = by_address.multicasts()
    assert hello.getXAddrs() == ["http://192.168.7.9:8101/onvif/device_service"]
    by_address.stop()


def test_probe_gets_xaddr_of_the_joined_interface_facing_the_sender(tmp_path: Path) -> None:
    """The responder uses the joined interfaces' addresses for XAddrs."""
    harness = Harness(tmp_path)
    harness.service.startService()
    harness.service.responder.datagramReceived(probe_bytes()[0], ("10.2.0.77", 5000))
    harness.reactor.advance(0.5)
    [reply] = [data for data, destination, _ in harness.reactor.writes() if destination == ("10.2.0.77", 5000)]
    assert parse(reply).getProbeResolveMatches()[0].getXAddrs() == ["http://10.2.0.5:8101/onvif/device_service"]
    harness.stop()


def test_join_failures_are_retried_with_backoff(tmp_path: Path) -> None:
    """A failing join is logged and retried after 1 s, then 2 s, ...; once it works Hello goes out there."""
    harness = Harness(tmp_path)
    harness.reactor.failing_joins.add("10.2.0.5")
    harness.service.startService()
    assert harness.joins() == ["10.1.0.5"]
    harness.reactor.advance(1.0)
    harness.reactor.advance(2.0)
    failed = [entry[2] for entry in harness.reactor.log if entry[0] == "join-failed"]
    assert failed == ["10.2.0.5"] * 3
    harness.reactor.failing_joins.clear()
    harness.reactor.advance(3.9)
    assert harness.joins() == ["10.1.0.5"]
    harness.reactor.advance(0.1)
    assert harness.joins() == ["10.1.0.5", "10.2.0.5"]
    assert [(action, outgoing) for action, outgoing, _ in harness.multicasts()] == [
        ("Hello", "10.1.0.5"), ("Hello", "10.2.0.5")]
    harness.stop()


def test_missing_interface_is_awaited(tmp_path: Path) -> None:
    """A configured interface that is not there yet is retried until it appears, then joined."""
    harness = Harness(tmp_path, wanted="wlan0", interfaces=[ETH0])
    harness.service.startService()
    assert harness.joins() == []
    harness.interfaces.append(WLAN0)
    harness.reactor.advance(1.0)
    assert harness.joins() == ["10.2.0.5"]
    harness.stop()


def test_new_interfaces_are_picked_up_by_the_rescan(tmp_path: Path) -> None:
    """wlan0 coming up after start is joined at the next rescan and gets a Hello."""
    harness = Harness(tmp_path, interfaces=[ETH0])
    harness.service.startService()
    harness.interfaces.append(WLAN0)
    harness.reactor.advance(59.0)
    assert harness.joins() == ["10.1.0.5"]
    harness.reactor.advance(1.0)
    assert harness.joins() == ["10.1.0.5", "10.2.0.5"]
    assert harness.multicasts()[-1][:2] == ("Hello", "10.2.0.5")
    harness.interfaces.remove(WLAN0)
    harness.reactor.advance(60.0)
    assert list(harness.service.joined) == ["eth0"]
    harness.stop()


def test_bind_failure_and_listing_failure_are_retried(tmp_path: Path) -> None:
    """UDP 3702 in use or an interface listing error never crash: both are retried with backoff."""
    harness = Harness(tmp_path)
    harness.reactor.listen_failures = 2
    harness.service.startService()
    assert harness.reactor.ports == []
    harness.reactor.advance(1.0)
    assert harness.reactor.ports == []
    harness.listing_error = OSError(19, "No such device")
    harness.reactor.advance(2.0)
    assert len(harness.reactor.ports) == 1 and harness.joins() == []
    harness.listing_error = None
    harness.reactor.advance(4.0)
    assert harness.joins() == ["10.1.0.5", "10.2.0.5"]
    harness.stop()


def test_stop_sends_bye_on_every_interface_before_closing(tmp_path: Path) -> None:
    """stopService writes Bye for each discoverable device out of each interface, then closes; it fires after the close."""
    devices = [FakeDevice("porch", "02:00:00:00:00:01"), FakeDevice("garden", "02:00:00:00:00:02"),
               FakeDevice("hidden", "02:00:00:00:00:03", discoverable_flag=False)]
    harness = Harness(tmp_path, devices=devices)
    harness.service.startService()
    port = harness.reactor.ports[0]
    port.stop_deferred = Deferred()
    before = len(harness.reactor.log)
    stopped: list[Any] = []
    harness.service.stopService().addBoth(stopped.append)
    after = harness.reactor.log[before:]
    byes = [parse(entry[1]) for entry in after if entry[0] == "write"]
    assert [b.getAction() for b in byes] == [WSD + "/Bye"] * 4
    assert [b.getEPR() for b in byes] == [harness.targets[0].endpoint_reference, harness.targets[1].endpoint_reference] * 2
    assert [entry[3] for entry in after if entry[0] == "write"] == ["10.1.0.5", "10.1.0.5", "10.2.0.5", "10.2.0.5"]
    assert after[-1] == ("stop",)
    assert stopped == []
    port.stop_deferred.callback(None)
    assert stopped == [None]


def test_stop_cancels_waiting_replies_and_timers(tmp_path: Path) -> None:
    """After stopService nothing is left on the clock: no reply, no retry, no rescan."""
    harness = Harness(tmp_path)
    harness.service.startService()
    harness.service.responder.datagramReceived(probe_bytes()[0], ("10.1.0.77", 5000))
    harness.stop()
    assert harness.reactor.getDelayedCalls() == []


def test_non_discoverable_devices_get_no_hello(tmp_path: Path) -> None:
    """Only Discoverable devices are announced."""
    harness = Harness(tmp_path, devices=[FakeDevice("porch"), FakeDevice("hidden", discoverable_flag=False)])
    harness.service.startService()
    assert {env.getEPR() for _, _, env in harness.multicasts()} == {harness.targets[0].endpoint_reference}
    harness.stop()


def test_discovery_mode_changes_send_bye_then_hello(tmp_path: Path) -> None:
    """SetDiscoveryMode NonDiscoverable says Bye on every interface; Discoverable says Hello again."""
    harness = Harness(tmp_path)
    harness.service.startService()
    device = harness.devices[0]
    start = len(harness.multicasts())
    device.set_discoverable(False)
    assert [(a, o) for a, o, _ in harness.multicasts()[start:]] == [("Bye", "10.1.0.5"), ("Bye", "10.2.0.5")]
    device.set_discoverable(True)
    assert [(a, o) for a, o, _ in harness.multicasts()[start + 2:]] == [("Hello", "10.1.0.5"), ("Hello", "10.2.0.5")]
    harness.stop()


def test_scope_change_increments_metadata_version_and_says_hello(tmp_path: Path) -> None:
    """A scope change bumps MetadataVersion, announces it with Hello, and the version survives a restart."""
    harness = Harness(tmp_path)
    harness.service.startService()
    assert [env.getMetadataVersion() for _, _, env in harness.multicasts()] == ["1", "1"]
    harness.devices[0].change_scopes(["onvif://www.onvif.org/location/garden"])
    hellos = harness.multicasts()[2:]
    assert [env.getMetadataVersion() for _, _, env in hellos] == ["2", "2"]
    assert "onvif://www.onvif.org/location/garden" in [s.getValue() for s in hellos[0][2].getScopes()]
    harness.stop()

    again = Harness(tmp_path, devices=harness.devices)
    again.service.startService()
    assert [env.getMetadataVersion() for _, _, env in again.multicasts()] == ["2", "2"]
    again.stop()


def test_scopes_changed_while_stopped_increment_the_version(tmp_path: Path) -> None:
    """Scopes that differ from the saved ones at start (a renamed camera) mean a new MetadataVersion."""
    first = Harness(tmp_path, devices=[FakeDevice("porch")])
    first.service.startService()
    first.stop()
    renamed = Harness(tmp_path, devices=[FakeDevice("front-door")])
    renamed.service.startService()
    assert {env.getMetadataVersion() for _, _, env in renamed.multicasts()} == {"2"}
    renamed.stop()


def test_instance_id_grows_across_restarts(tmp_path: Path) -> None:
    """Every start uses a larger AppSequence InstanceId, even within the same second."""
    harness = Harness(tmp_path)
    harness.service.startService()
    first = harness.multicasts()[0][2].getInstanceId()
    harness.stop()
    harness.service.startService()
    second = [env for action, _, env in harness.multicasts() if action == "Hello"][-1].getInstanceId()
    harness.stop()
    assert int(second) > int(first) >= 1_700_000_000


@pytest.mark.parametrize("failing", ["setOutgoingInterface", "write"])
def test_send_failures_do_not_stop_the_service(tmp_path: Path, failing: str) -> None:
    """An interface that vanished under a send only costs that message."""
    harness = Harness(tmp_path)
    harness.service.startService()
    port = harness.reactor.ports[0]

    def broken(*args: Any) -> Any:
        raise OSError(99, "Cannot assign requested address")

    setattr(port, failing, broken)
    harness.stop()
    assert port.stopped


def test_no_multicast_interface_at_all_is_retried(tmp_path: Path) -> None:
    """A host whose only interface is a plain loopback waits (with backoff) for a multicast one."""
    harness = Harness(tmp_path, interfaces=[LOOPBACK])
    harness.service.startService()
    assert harness.joins() == []
    harness.interfaces.append(ETH0)
    harness.reactor.advance(1.0)
    assert harness.joins() == ["10.1.0.5"]
    harness.stop()


def _settled(deferred: Deferred[None]) -> None:
    done: list[Any] = []
    deferred.addBoth(done.append)
    assert done == [None], done


def test_reload_update_announces_only_what_changed(tmp_path: Path) -> None:
    """A new generation's devices: unchanged ones say nothing, a gone one says Bye, a new one and a moved one
    (other port) say Hello, the moved one with MetadataVersion + 1; Probe answers list the new set."""
    devices = [FakeDevice("porch", "02:00:00:00:00:01"), FakeDevice("garden", "02:00:00:00:00:02"),
               FakeDevice("garage", "02:00:00:00:00:03")]
    harness = Harness(tmp_path, devices=devices)
    harness.service.startService()
    start = len(harness.multicasts())
    # The reload rebuilds every device object: same identities, porch unchanged, garden on a new port,
    # garage gone, shed new.
    rebuilt = [FakeDevice("porch", "02:00:00:00:00:01"), FakeDevice("garden", "02:00:00:00:00:02"),
               FakeDevice("shed", "02:00:00:00:00:04")]
    new_targets = [target(rebuilt[0], 1, 8101), target(rebuilt[1], 2, 8202), target(rebuilt[2], 4, 8104)]

    _settled(Deferred.fromCoroutine(harness.service.update(new_targets)))

    sent = [(action, outgoing, env.getEPR(), env.getMetadataVersion() if action == "Hello" else None)
            for action, outgoing, env in harness.multicasts()[start:]]
    garage, garden, shed = (harness.targets[2].endpoint_reference, new_targets[1].endpoint_reference,
                            new_targets[2].endpoint_reference)
    assert sent == [
        ("Bye", "10.1.0.5", garage, None), ("Bye", "10.2.0.5", garage, None),
        ("Hello", "10.1.0.5", garden, "2"), ("Hello", "10.2.0.5", garden, "2"),
        ("Hello", "10.1.0.5", shed, "1"), ("Hello", "10.2.0.5", shed, "1"),
    ]
    assert [t.endpoint_reference for t in harness.service.responder.targets] == [
        t.endpoint_reference for t in new_targets]

    # The new device objects are the ones watched now: a scope change of the rebuilt porch is announced.
    before = len(harness.multicasts())
    rebuilt[0].change_scopes(["onvif://www.onvif.org/location/porch-2"])
    assert [(a, env.getEPR(), env.getMetadataVersion()) for a, _, env in harness.multicasts()[before:]] == [
        ("Hello", new_targets[0].endpoint_reference, "2")] * 2
    harness.stop()


def test_reload_update_keeps_versions_across_a_restart(tmp_path: Path) -> None:
    """The bumped MetadataVersion of a moved device is saved: after a restart with the same devices it stays."""
    harness = Harness(tmp_path)
    harness.service.startService()
    moved = [target(FakeDevice("porch", "02:00:00:00:00:01"), 1, 9101)]
    _settled(Deferred.fromCoroutine(harness.service.update(moved)))
    harness.stop()
    saved = harness.store.load("discovery", {})
    assert saved["devices"][moved[0].endpoint_reference]["metadata_version"] == 2


def sent(harness: Harness) -> list[tuple[str, str, str, str]]:
    """(action, EPR's device name, outgoing interface, bound address of the sending socket) of every write."""
    names = {target.endpoint_reference: device.name for target, device in zip(harness.targets, harness.devices)}
    found = []
    for data, _, outgoing, bound in harness.reactor.sources():
        env = parse(data)
        eprs = [env.getEPR()] if env.getEPR() else [m.getEPR() for m in env.getProbeResolveMatches()]
        found += [(env.getAction().rsplit("/", 1)[1], names[epr], outgoing, bound) for epr in eprs]
    return found


def test_a_device_with_its_own_address_speaks_from_a_socket_bound_to_it(tmp_path: Path) -> None:
    """A device bound to 10.1.0.7 (an alias on eth0) gets an ephemeral socket on that address: its Hello leaves from
    it on eth0 only, its ProbeMatch and Bye from it too; the device on every address keeps the shared socket."""
    alias = interface("eth0", "10.1.0.7/24", label="eth0:cam")
    devices = [FakeDevice("porch", "02:00:00:00:00:01"), FakeDevice("garden", "02:00:00:00:00:02")]
    harness = Harness(tmp_path, devices=devices, interfaces=[ETH0, alias, WLAN0])
    harness.targets[1].bind = "10.1.0.7"
    harness.service.startService()
    assert harness.reactor.listen_calls[1] == {"port": 0, "interface": "10.1.0.7", "maxPacketSize": 8192,
                                                "listenMultiple": False}
    assert sent(harness) == [("Hello", "porch", "10.1.0.5", ""), ("Hello", "garden", "10.1.0.5", "10.1.0.7"),
                             ("Hello", "porch", "10.2.0.5", "")]
    harness.reactor.log.clear()
    harness.service.responder.datagramReceived(probe_bytes()[0], ("10.2.0.77", 5000))
    harness.reactor.advance(0.5)
    assert sorted(sent(harness)) == [("ProbeMatches", "garden", "10.1.0.5", "10.1.0.7"),
                                     ("ProbeMatches", "porch", "10.2.0.5", "")]
    harness.reactor.log.clear()
    harness.stop()
    assert [entry for entry in sent(harness) if entry[1] == "garden"] == [("Bye", "garden", "10.1.0.5", "10.1.0.7")]
    assert all(port.stopped for port in harness.reactor.ports)


def test_a_device_whose_address_is_not_up_yet_speaks_from_the_shared_socket_until_it_is(tmp_path: Path) -> None:
    """While its own address cannot be bound, a device answers from the shared socket; the bind is retried."""
    harness = Harness(tmp_path, interfaces=[ETH0, interface("eth0", "10.1.0.7/24", label="eth0:cam")])
    harness.targets[0].bind = "10.1.0.7"
    harness.reactor.failing_binds.add("10.1.0.7")
    harness.service.startService()
    harness.service.responder.datagramReceived(probe_bytes()[0], ("10.1.0.77", 5000))
    harness.reactor.advance(0.5)
    assert ("ProbeMatches", "porch", "10.1.0.5", "") in sent(harness)
    harness.reactor.failing_binds.clear()
    harness.reactor.advance(1.0)
    harness.reactor.log.clear()
    harness.service.responder.datagramReceived(probe_bytes()[0], ("10.1.0.77", 5000))
    harness.reactor.advance(0.5)
    assert sent(harness) == [("ProbeMatches", "porch", "0.0.0.0", "10.1.0.7")]
    harness.stop()
