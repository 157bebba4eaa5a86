"""Push subscriptions on a Clock: Notify delivery, batching, retries, dropping, consumer address policy."""

from __future__ import annotations

import dataclasses

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock

from atomrelay.events.consumers import ConsumerGuard, ConsumerPolicy, ConsumerRefused
from atomrelay.xml import ns
from tests.events.support import CONSUMER, NOW, TEV, WSA, WSNT, EventsRelay, NameTable

MOTION = "tns1:VideoSource/MotionAlarm"
CELL = "tns1:RuleEngine/CellMotionDetector/Motion"


def subscribe(relay: EventsRelay, consumer: str = CONSUMER, termination: str = "PT600S") -> str:
    """Subscribe as Home Assistant does; the subscription's path."""
    reply = relay.soap(
        WSNT.Subscribe(WSNT.ConsumerReference(WSA.Address(consumer)), WSNT.InitialTerminationTime(termination))
    )
    payload = reply.valid_payload()
    address = payload.findtext(f"{{{ns.WSNT}}}SubscriptionReference/{{{ns.WSA}}}Address") or ""
    assert payload.findtext(ns.q(ns.WSNT, "CurrentTime")) == "2023-11-14T22:13:20Z"
    assert payload.findtext(ns.q(ns.WSNT, "TerminationTime")) == "2023-11-14T22:23:20Z"
    return address.split("relay.test:8080", 1)[1]


def motion_states(notifications: list) -> list[tuple[str | None, str]]:
    """(PropertyOperation, State) of every cam1 MotionAlarm message, in arrival order."""
    return [
        (m[2], m[4]["State"])
        for batch in notifications
        for m in batch
        if m[0] == MOTION and m[3]["Source"] == "cam1.vs"
    ]


def test_push_subscriber_receives_the_motion_sequence() -> None:
    """Subscribe + SetSynchronizationPoint, then an alarm and its timeout: Notify carries Initialized false, Changed true, Changed false."""
    relay = EventsRelay()
    path = subscribe(relay)
    relay.pump()
    assert relay.soap(TEV.SetSynchronizationPoint(), path).status == 200
    relay.pump()
    relay.alarm()
    relay.pump()
    renewed = relay.soap(WSNT.Renew(WSNT.TerminationTime("PT600S")), path).valid_payload()
    assert renewed.findtext(ns.q(ns.WSNT, "TerminationTime")) == "2023-11-14T22:23:20Z"
    relay.advance(20)
    notifications = relay.consumer.notifications()
    assert motion_states(notifications) == [
        ("Initialized", "false"),
        ("Initialized", "false"),
        ("Changed", "true"),
        ("Changed", "false"),
    ]
    assert len(notifications) == 4  # one Notify per burst: the two messages of a transition travel together
    assert [m[0] for m in notifications[2]] == [MOTION, CELL]
    assert all(t.startswith("application/soap+xml") for t in relay.consumer.content_types)
    assert relay.consumer.times == [NOW, NOW, NOW, NOW + 20]
    assert b"http://docs.oasis-open.org/wsn/bw-2/NotificationConsumer/Notify" in relay.consumer.bodies[0]
    assert path.encode() in relay.consumer.bodies[0]  # SubscriptionReference names the subscription


def test_failed_notify_is_retried_then_the_subscription_is_dropped() -> None:
    """A consumer answering 500 gets retries after 1, 2 and 4 s; after that the subscription is gone and Renew faults."""
    relay = EventsRelay()
    relay.consumer.status = 500
    path = subscribe(relay)
    relay.pump()
    for step in (1, 2, 4):
        relay.advance(step)
    assert relay.consumer.times == [NOW, NOW + 1, NOW + 3, NOW + 7]
    assert len(relay.subscriptions) == 0
    reply = relay.soap(WSNT.Renew(WSNT.TerminationTime("PT60S")), path)
    assert reply.fault()[1] == ["ter:InvalidArgVal", "ter:ResourceUnknown"]
    relay.advance(60)
    assert len(relay.consumer.times) == 4


def test_retry_keeps_messages_in_order_and_recovery_resets() -> None:
    """Messages queued during retries are delivered after the failed batch, in order, once the consumer recovers."""
    relay = EventsRelay()
    relay.consumer.status = 503
    subscribe(relay)
    relay.pump()
    relay.alarm()
    relay.pump()
    relay.consumer.status = 204
    relay.advance(1)
    relay.advance(20)
    notifications = relay.consumer.notifications()
    assert motion_states(notifications[1:]) == [("Initialized", "false"), ("Changed", "true"), ("Changed", "false")]
    assert len(relay.subscriptions) == 1


def test_hanging_consumer_times_out_and_counts_as_a_failure() -> None:
    """A consumer that never answers is cut off after 10 s and retried; the relay keeps answering meanwhile."""
    relay = EventsRelay()
    relay.consumer.hang = True
    subscribe(relay)
    relay.pump()
    relay.advance(9.9)
    assert len(relay.consumer.times) == 1
    assert relay.soap(TEV.GetServiceCapabilities()).status == 200
    relay.advance(0.1)
    relay.advance(1)
    assert relay.consumer.times == [NOW, NOW + 11]


def test_unsubscribe_stops_delivery() -> None:
    """After Unsubscribe no Notify is sent, and a Notify in flight is abandoned without retry."""
    relay = EventsRelay()
    relay.consumer.hang = True
    path = subscribe(relay)
    relay.pump()
    assert relay.soap(WSNT.Unsubscribe(), path).status == 200
    relay.alarm()
    relay.advance(30)
    assert relay.consumer.times == [NOW]


@pytest.mark.parametrize(
    "consumer",
    [
        "ftp://192.0.2.50/hook",
        "http://user:password@192.0.2.50/hook",
        "http://127.0.0.1:8123/api/webhook/x",
        "http://[::1]/hook",
        "http://localhost:8123/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
        "http://0.1.2.3/hook",
        "http://224.0.0.251/hook",
        "http://255.255.255.255/hook",
        "http://240.0.0.1/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://192.0.2.11/cgi-bin/cmd.cgi?port=socket",
        "http://CAM3.lan/hook",
        "http://192.0.2.50:0/hook",
        "http://192.0.2.50:99999/hook",
        "http:///hook",
        "http://192.0.2.50/ho ok",
        "http://192.0.2.50/" + "a" * 2100,
    ],
)
def test_refused_consumer_addresses(consumer: str) -> None:
    """Non-http(s), credentials, loopback, link-local, multicast, reserved and camera addresses are refused with a fault; serving goes on."""
    relay = EventsRelay()
    reply = relay.soap(WSNT.Subscribe(WSNT.ConsumerReference(WSA.Address(consumer))))
    assert reply.status == 500
    assert reply.fault()[:2] == ("SOAP-ENV:Receiver", ["ter:InvalidArgVal", "ter:SubscribeCreationFailed"])
    assert len(relay.subscriptions) == 0
    assert subscribe(relay, "http://192.0.2.50:8123/api/webhook/onvif0123")


@pytest.mark.parametrize(
    "consumer",
    [
        "http://3221225995:8103/cgi-bin/cmd.cgi?port=socket",
        "http://0xc000020b:8103/cgi-bin/cmd.cgi",
        "http://0300.0.2.11/cgi-bin/cmd.cgi",
        "http://0xc0.0.0x2.013/cgi-bin/cmd.cgi",
        "http://192.0.523/cgi-bin/cmd.cgi",
        "http://192.0.2.12./cgi-bin/cmd.cgi",
        "http://[::ffff:192.0.2.11]/cgi-bin/cmd.cgi",
        "http://[::ffff:c000:20c]:80/cgi-bin/cmd.cgi",
        "http://cam3.lan./hook",
        "http://camera-alias.test/hook",
        "http://2130706433:8123/hook",
        "http://127.1/hook",
        "http://0x7f.1/hook",
        "http://[::ffff:7f00:1]/hook",
        "http://loopback.test/hook",
        "http://nowhere.test/hook",
    ],
)
def test_camera_and_loopback_addresses_are_refused_in_every_form(consumer: str) -> None:
    """A User's Subscribe to a decimal, hex, octal, short, trailing-dot, IPv4-mapped or DNS-name form of a camera or loopback address is refused after resolution."""
    names = NameTable()
    names.names.update({"camera-alias.test": ["192.0.2.13"], "loopback.test": ["::1", "127.0.0.5"]})
    relay = EventsRelay(resolver=names)
    reply = relay.soap(WSNT.Subscribe(WSNT.ConsumerReference(WSA.Address(consumer))), user="viewer")
    code, subcodes, reason = reply.fault()
    assert (code, subcodes) == ("SOAP-ENV:Receiver", ["ter:InvalidArgVal", "ter:SubscribeCreationFailed"])
    assert "does not send notifications to" in reason or "does not resolve" in reason
    assert len(relay.subscriptions) == 0
    relay.advance(10)
    assert relay.consumer.bodies == []


def test_a_name_with_one_allowed_address_is_accepted() -> None:
    """A consumer name resolving to a LAN address and a link-local one (mDNS answers both) is accepted."""
    relay = EventsRelay()
    assert subscribe(relay, "http://homeassistant.local:8123/hook")


def test_subscribe_waits_for_name_resolution_without_blocking() -> None:
    """Subscribe is answered only once the (slow) resolver has answered; the relay serves meanwhile."""
    clock = Clock()
    relay = EventsRelay(clock=clock, resolver=NameTable(clock=clock, delay=2.0))
    pending = relay.soap_start(WSNT.Subscribe(WSNT.ConsumerReference(WSA.Address(CONSUMER))))
    relay.pump()
    assert pending == [] and len(relay.subscriptions) == 0
    assert relay.soap(TEV.GetServiceCapabilities()).status == 200
    relay.advance(2)
    assert relay.result(pending).status == 200 and len(relay.subscriptions) == 1
    assert "consumer.test" in relay.resolver.asked and "cam3.lan" in relay.resolver.asked


def test_subscribe_is_refused_while_too_many_name_lookups_are_in_flight() -> None:
    """Subscribe checks that would put more lookups in flight than the bound are refused at once (no queue), also
    while an abandoned check's lookups still run; Notify connection checks are never refused; when the lookups
    end, Subscribe works again."""
    clock = Clock()
    names = NameTable({"consumer.test": ["192.0.2.50"], "cam.test": ["192.0.2.10"]}, clock=clock, delay=5.0)
    guard = ConsumerGuard(names, lambda: ["cam.test", "192.0.2.11"], max_lookups=6)
    first = Deferred.fromCoroutine(guard.check("http://consumer.test/hook"))
    second = Deferred.fromCoroutine(guard.check("http://consumer.test/hook"))
    assert guard.lookups == 6 and not first.called and not second.called
    first.cancel()  # the client went away: its lookups go on in the resolver
    first.addErrback(lambda failure: failure.trap(CancelledError))
    assert guard.lookups == 6
    refused = Deferred.fromCoroutine(guard.check("http://consumer.test/hook"))
    assert isinstance(refused.result.value, ConsumerRefused) and "busy" in str(refused.result.value)
    refused.addErrback(lambda failure: None)
    connecting = Deferred.fromCoroutine(guard.allowed("consumer.test", 80))
    assert guard.lookups == 9
    clock.advance(5.0)
    assert guard.lookups == 0 and second.result == "http://consumer.test/hook"
    assert [str(getattr(address, "host", "")) for address in connecting.result] == ["192.0.2.50"]
    again = Deferred.fromCoroutine(guard.check("http://consumer.test/hook"))
    clock.advance(5.0)
    assert again.result == "http://consumer.test/hook"


def test_cameras_added_by_a_reload_are_refused() -> None:
    """The camera addresses come from the hub of the moment: a camera added later cannot be a consumer."""
    relay = EventsRelay()
    assert subscribe(relay, "http://192.0.2.77/hook")
    added = dataclasses.replace(relay.config.cameras[0], id="cam9", host="192.0.2.77")
    relay.hub.update_cameras([*relay.config.cameras, added])
    reply = relay.soap(WSNT.Subscribe(WSNT.ConsumerReference(WSA.Address("http://3221226061/hook"))))
    assert "192.0.2.77 (a camera of this relay or its mediamtx)" in reply.fault()[2]


@pytest.mark.parametrize(
    "consumer",
    ["http://192.168.1.20:8123/api/webhook/onvifabc", "https://ha.example/api/webhook/x", "http://[2001:db8::5]/x",
     "http://100.64.1.2/tailscale", "http://homeassistant.local:8123/api/webhook/x"],
)
def test_accepted_consumer_addresses(consumer: str) -> None:
    """LAN, public, CGNAT and named consumers are accepted (names are checked again when resolved)."""
    assert ConsumerPolicy().check_url(consumer) == consumer
    assert subscribe(EventsRelay(), consumer)


def test_loopback_only_when_the_policy_allows_it() -> None:
    """Loopback consumers are refused by default and accepted by a policy that allows them (tests, same-host setups)."""
    with pytest.raises(ConsumerRefused):
        ConsumerPolicy().check_url("http://127.0.0.1:9/hook")
    assert ConsumerPolicy(allow_loopback=True).check_url("http://127.0.0.1:9/hook")
    assert not ConsumerPolicy().address_allowed("::1")
    assert ConsumerPolicy(allow_loopback=True).address_allowed("127.0.0.2")
    assert not ConsumerPolicy(allow_loopback=True).address_allowed("not an address")


def test_missing_consumer_reference_is_a_fault() -> None:
    """Subscribe without ConsumerReference/Address faults and creates nothing."""
    relay = EventsRelay()
    reply = relay.soap(WSNT.Subscribe(WSNT.InitialTerminationTime("PT60S")))
    assert reply.fault()[1] == ["ter:InvalidArgVal", "ter:SubscribeCreationFailed"]
    assert len(relay.subscriptions) == 0


def test_stopping_the_store_ends_everything() -> None:
    """Stopping the store (relay stop, SystemReboot) ends every subscription and cancels its I/O; starting it serves again."""
    relay = EventsRelay()
    relay.consumer.hang = True
    subscribe(relay)
    pull_path, _ = relay.create_pull_point()
    relay.pull(pull_path)
    waiting = relay.pull_start(pull_path)
    relay.pump()
    relay.subscriptions.startService()
    relay.subscriptions.stopService()
    relay.hub.stopService()
    relay.pump()
    assert len(relay.subscriptions) == 0
    assert relay.result(waiting).status == 200
    relay.advance(100)
    assert relay.consumer.times == [NOW]
    assert relay.clock.getDelayedCalls() == []
    relay.subscriptions.startService()  # a SystemReboot restarts the workers: new subscriptions work again
    relay.hub.startService()
    pull_path, _ = relay.create_pull_point()
    relay.pull(pull_path)
    relay.alarm()
    relay.pump()
    assert len(relay.pull(pull_path)) == 2
