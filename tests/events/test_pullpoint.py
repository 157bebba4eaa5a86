"""Pull points through the real SOAP server on a Clock: Home Assistant's sequence, long-polls,
limits, expiry, caps and filters."""

from __future__ import annotations

import time

import pytest
from lxml import etree

from atomrelay.events.service import MAX_FILTERS, PATH
from atomrelay.events.subscriptions import MAX_PER_USER
from atomrelay.events.topics import MAX_ALTERNATIVES, MAX_TOPIC_DEPTH
from atomrelay.onvif import tokens
from atomrelay.xml import ns
from atomrelay.xml.xstypes import parse_datetime
from tests.events.support import BASE, NOW, TEV, TOKEN1, WSA, WSNT, EventsRelay, messages
from tests.onvif import schema

MOTION = "tns1:VideoSource/MotionAlarm"
CELL = "tns1:RuleEngine/CellMotionDetector/Motion"
LOSS = "tns1:VideoSource/SignalLoss"
PEOPLE = "tns1:RuleEngine/MyRuleDetector/PeopleDetect"
VEHICLE = "tns1:RuleEngine/MyRuleDetector/VehicleDetect"
PET = "tns1:RuleEngine/MyRuleDetector/DogCatDetect"


def times(payload: object) -> tuple[float, float]:
    """(CurrentTime, TerminationTime) of a response, as epoch seconds."""
    current = payload.findtext(f".//{{{ns.WSNT}}}CurrentTime") or payload.findtext(f"{{{ns.TEV}}}CurrentTime")  # type: ignore[attr-defined]
    termination = payload.findtext(f".//{{{ns.WSNT}}}TerminationTime") or payload.findtext(f"{{{ns.TEV}}}TerminationTime")  # type: ignore[attr-defined]
    return parse_datetime(current), parse_datetime(termination)


def by_topic(found: list, topic: str, camera_token: str) -> list:
    return [m for m in found if m[0] == topic and camera_token in m[3].values()]


def test_home_assistant_sequence_on_a_clock() -> None:
    """HA's flow (PT600S, SetSynchronizationPoint, PullMessages PT60S/100, Renew) sees Initialized false, true on an alarm, false after the timeout."""
    relay = EventsRelay()
    path, created = relay.create_pull_point("PT600S")
    current, termination = times(created)
    assert current == NOW and termination - current == 600  # >= 300 s, so onvif-zeep-async keeps relative times

    sync = relay.soap(TEV.SetSynchronizationPoint(), path)
    assert sync.valid_payload().tag == ns.q(ns.TEV, "SetSynchronizationPointResponse")

    first = relay.pull(path, "PT60S")
    motion = by_topic(first, MOTION, tokens.video_source("cam1"))
    assert [(m[2], m[4]) for m in motion] == [("Initialized", {"State": "false"})] * 2  # on create and on sync
    cell = by_topic(first, CELL, tokens.video_source_configuration("cam1"))
    assert [(m[2], m[4]["IsMotion"]) for m in cell] == [("Initialized", "false")] * 2
    assert {m[3]["Source"] for m in first if m[0] == MOTION} == {"cam1.vs", "cam2.vs", "cam3.vs"}

    waiting = relay.pull_start(path)
    relay.advance(5)
    assert waiting == []  # long-poll: nothing to say yet, nothing said
    assert relay.alarm().status == 204
    relay.pump()  # no clock time passes: the waiting pull is answered as soon as the alarm arrives
    got = messages(relay.result(waiting).valid_payload())
    assert [(m[0], m[2], m[4]) for m in got] == [
        (MOTION, "Changed", {"State": "true"}),
        (CELL, "Changed", {"IsMotion": "true"}),
    ]
    assert got[0][1] == "2023-11-14T22:13:25.000Z"  # UtcTime from the relay's clock

    waiting = relay.pull_start(path)
    relay.advance(10)
    assert relay.alarm().status == 204  # a repeated alarm extends the motion, no new transition
    relay.advance(19.9)
    assert waiting == []
    renewed = relay.soap(WSNT.Renew(WSNT.TerminationTime("PT600S")), path).valid_payload()
    renew_current, renew_termination = times(renewed)
    assert renew_termination - renew_current == 600
    relay.advance(0.1)  # 20 s after the last alarm
    over = messages(relay.result(waiting).valid_payload())
    assert [(m[0], m[2], m[4]) for m in over] == [
        (MOTION, "Changed", {"State": "false"}),
        (CELL, "Changed", {"IsMotion": "false"}),
    ]

    bye = relay.soap(WSNT.Unsubscribe(), path)
    assert bye.valid_payload().tag == ns.q(ns.WSNT, "UnsubscribeResponse")
    assert len(relay.subscriptions) == 0


def test_pull_waits_for_its_timeout_then_answers_empty() -> None:
    """A PullMessages with nothing queued answers no messages exactly when its Timeout passes, not before."""
    relay = EventsRelay()
    path, _ = relay.create_pull_point()
    relay.pull(path)  # drain the Initialized messages
    waiting = relay.pull_start(path, "PT5S")
    relay.advance(4.9)
    assert waiting == []
    relay.advance(0.1)
    payload = relay.result(waiting).valid_payload()
    assert payload.findall(ns.q(ns.WSNT, "NotificationMessage")) == []
    current, termination = times(payload)
    assert current == NOW + 5 and termination >= current + 5


def test_message_limit_is_honoured_and_nothing_is_lost() -> None:
    """MessageLimit caps each answer; the rest wait for the next pull, in order."""
    relay = EventsRelay()
    path, _ = relay.create_pull_point()
    found = [relay.pull(path, limit=2) for _ in range(5)]
    found += [relay.pull(path, limit=2) for _ in range(5)]
    assert [len(f) for f in found] == [2] * 9 + [0]  # 18 Initialized: 6 properties x 3 cameras
    flat = [m for f in found for m in f]
    assert [m[0] for m in flat[:6]] == [MOTION, CELL, PEOPLE, VEHICLE, PET, LOSS]


def test_a_timeout_over_the_limit_is_refused_naming_both_limits_and_a_huge_limit_is_clamped() -> None:
    """A Timeout over ten minutes gets the PullMessagesFaultResponse with the device's MaxTimeout and MaxMessageLimit
    (Core PullMessages); ten minutes exactly waits ten minutes, and a MessageLimit over the queue bound is accepted."""
    relay = EventsRelay()
    path, _ = relay.create_pull_point()
    relay.pull(path)
    refused = relay.result(relay.pull_start(path, "P1D", 10))
    code, subcodes, reason = refused.fault()
    assert (code, subcodes, refused.status) == ("SOAP-ENV:Receiver", ["ter:InvalidArgVal"], 500)
    assert "over the longest this device waits, PT600S" in reason
    detail = refused.payload().find(f"{{{ns.SOAP12}}}Detail/{{{ns.TEV}}}PullMessagesFaultResponse")
    assert detail is not None
    assert [(child.tag.split("}")[1], child.text) for child in detail] == [
        ("MaxTimeout", "PT600S"), ("MaxMessageLimit", str(relay.subscriptions.queue_limit))]
    waiting = relay.pull_start(path, "PT10M", 1_000_000)
    relay.advance(599)
    assert waiting == []
    relay.advance(1)
    assert relay.result(waiting).status == 200


@pytest.mark.parametrize(
    ("timeout", "limit"), [("sixty", "1"), ("PT60S", "many"), ("-PT5S", "1"), ("PT60S", "0")]
)
def test_bad_pull_arguments_are_sender_faults(timeout: str, limit: str) -> None:
    """Malformed or impossible Timeout/MessageLimit values are env:Sender ter:InvalidArgVal, and the pull point still works."""
    relay = EventsRelay()
    path, _ = relay.create_pull_point()
    reply = relay.soap(TEV.PullMessages(TEV.Timeout(timeout), TEV.MessageLimit(limit)), path)
    assert reply.status == 400
    assert reply.fault()[:2] == ("SOAP-ENV:Sender", ["ter:InvalidArgVal"])
    assert len(relay.pull(path)) == 18


def test_pull_on_expired_subscription_faults_and_server_keeps_serving() -> None:
    """An abandoned pull point expires at its termination time; pulling it then is a ResourceUnknown fault."""
    relay = EventsRelay()
    path, created = relay.create_pull_point("PT10S")
    assert times(created)[1] == NOW + 10
    relay.advance(10)
    assert len(relay.subscriptions) == 0
    reply = relay.result(relay.pull_start(path))
    assert reply.status == 500
    code, subcodes, reason = reply.fault()
    assert (code, subcodes) == ("SOAP-ENV:Receiver", ["ter:InvalidArgVal", "ter:ResourceUnknown"])
    assert "subscription" in reason
    for operation in (TEV.SetSynchronizationPoint(), WSNT.Renew(WSNT.TerminationTime("PT60S")), WSNT.Unsubscribe()):
        assert relay.soap(operation, path).fault()[1][-1] == "ter:ResourceUnknown"
    assert relay.soap(TEV.PullMessages(TEV.Timeout("PT1S"), TEV.MessageLimit("1")), PATH).status == 500
    fresh, _ = relay.create_pull_point()
    assert len(relay.pull(fresh)) == 18


def test_pulling_keeps_a_pull_point_alive() -> None:
    """A pull point that is pulled regularly outlives its initial termination time (Core: keep alive by PullMessages)."""
    relay = EventsRelay()
    path, _ = relay.create_pull_point("PT10S")
    for _ in range(5):
        waiting = relay.pull_start(path, "PT8S")
        relay.advance(8)
        assert relay.result(waiting).status == 200
    assert len(relay.subscriptions) == 1
    relay.advance(8 + 10 + 0.1)  # the last pull's timeout and grace
    assert len(relay.subscriptions) == 0


def test_unsubscribe_answers_a_waiting_pull() -> None:
    """Unsubscribing a pull point with a PullMessages waiting answers that pull with no messages."""
    relay = EventsRelay()
    path, _ = relay.create_pull_point()
    relay.pull(path)
    waiting = relay.pull_start(path)
    assert relay.soap(WSNT.Unsubscribe(), path).status == 200
    relay.pump()
    payload = relay.result(waiting).valid_payload()
    assert payload.findall(ns.q(ns.WSNT, "NotificationMessage")) == []


def test_second_concurrent_pull_is_refused() -> None:
    """Only one PullMessages may wait per pull point (Core: UnableToGetMessages); the first still gets the event."""
    relay = EventsRelay()
    path, _ = relay.create_pull_point()
    relay.pull(path)
    first = relay.pull_start(path)
    second = relay.result(relay.pull_start(path))
    assert second.fault()[:2] == ("SOAP-ENV:Receiver", ["ter:Action", "ter:UnableToGetMessages"])
    relay.alarm()
    relay.pump()
    assert len(relay.result(first).valid_payload().findall(ns.q(ns.WSNT, "NotificationMessage"))) == 2


def test_a_thousand_subscriptions_hit_the_cap_and_the_server_keeps_serving() -> None:
    """1000 CreatePullPointSubscription calls (one user allowed them all): 64 pull points, the rest a MaxPullPoints
    fault; freeing one makes room."""
    relay = EventsRelay(max_per_user=64)
    started = time.perf_counter()
    paths, refused = [], []
    for _ in range(1000):
        reply = relay.soap(TEV.CreatePullPointSubscription(TEV.InitialTerminationTime("PT600S")))
        if reply.status == 200:
            paths.append(reply.payload().findtext(f".//{{{ns.WSA}}}Address"))
        else:
            refused.append(reply)
    elapsed = time.perf_counter() - started
    assert len(paths) == 64 and len(set(paths)) == 64
    assert len(refused) == 936
    assert refused[0].status == 500
    assert refused[0].fault()[:2] == ("SOAP-ENV:Receiver", ["ter:Action", "ter:MaxPullPoints"])
    push = relay.soap(WSNT.Subscribe(WSNT.ConsumerReference(WSA.Address("http://192.0.2.99/hook"))))
    assert push.fault()[1] == ["ter:Action", "ter:MaxNotificationProducers"]
    caps = relay.soap(TEV.GetServiceCapabilities(), user=None).valid_payload()
    assert caps[0].get("MaxPullPoints") == "64"
    first = paths[0][len("http://relay.test:8080"):]
    assert relay.soap(WSNT.Unsubscribe(), first).status == 200
    relay.create_pull_point()
    print(f"1000 CreatePullPointSubscription through the SOAP stack: {elapsed:.2f} s")


def test_queue_is_bounded_and_drops_the_oldest() -> None:
    """An unread pull point keeps the newest 256 messages and counts the dropped ones."""
    relay = EventsRelay()
    path, _ = relay.create_pull_point("PT1H")
    subscription = relay.subscriptions.get(path.rsplit("/", 1)[1])
    for _ in range(150):  # 150 motions: 4 messages each (on, off), after the 18 Initialized
        assert relay.alarm().status == 204
        relay.advance(21)
    assert len(subscription.queue) == 256
    assert subscription.dropped == 18 + 600 - 256
    found = []
    while batch := relay.pull(path, limit=100):
        found.extend(batch)
    assert len(found) == 256
    assert [m[4] for m in found[-2:]] == [{"State": "false"}, {"IsMotion": "false"}]
    assert all(m[2] == "Changed" for m in found)


def test_termination_times_absolute_relative_nil_and_bad() -> None:
    """InitialTerminationTime may be absolute or relative; past times fault, long ones are clamped to an hour, nil renews for an hour."""
    relay = EventsRelay()
    _, absolute = relay.create_pull_point("2023-11-14T22:43:20Z")
    assert times(absolute)[1] == NOW + 1800
    _, offset = relay.create_pull_point("2023-11-15T07:23:20+09:00")
    assert times(offset)[1] == NOW + 600
    _, long = relay.create_pull_point("PT5H")
    assert times(long)[1] == NOW + 3600
    _, default = relay.create_pull_point(None)
    assert times(default)[1] == NOW + 60
    for bad in ("2023-11-14T22:00:00Z", "tomorrow", "PT0S"):
        reply = relay.soap(TEV.CreatePullPointSubscription(TEV.InitialTerminationTime(bad)))
        assert reply.fault()[:2] == ("SOAP-ENV:Receiver", ["ter:InvalidArgVal", "ter:UnacceptableInitialTerminationTime"])
    path, _ = relay.create_pull_point()
    nil = WSNT.TerminationTime()
    nil.set(ns.q(ns.XSI, "nil"), "true")
    assert times(relay.soap(WSNT.Renew(nil), path).valid_payload())[1] == NOW + 3600
    assert relay.soap(WSNT.Renew(), path).fault()[1][-1] == "ter:UnacceptableTerminationTime"


def test_ws_base_notification_faults_carry_their_fault_element() -> None:
    """Core "SOAP Fault Messages": an unknown subscription's fault details wsrf-r:ResourceUnknownFault, a refused
    termination time wsnt:Unacceptable(Initial)TerminationTimeFault with the times that would do, a refused consumer
    wsnt:SubscribeCreationFailedFault; each with its wsrf-bf:Timestamp."""
    from atomrelay.xml.xstypes import xs_datetime

    def detail(reply: Any) -> list[tuple[str, str | None]]:
        reply.fault()  # schema-valid, SOAP 1.2
        (element,) = reply.payload().find(f"{{{ns.SOAP12}}}Detail")
        return [(element.tag, None), *((child.tag, child.text) for child in element)]

    relay = EventsRelay()
    stamp = (ns.q(ns.WSRF_BF, "Timestamp"), xs_datetime(NOW))
    gone = relay.soap(WSNT.Unsubscribe(), PATH + "/subscription/" + "0" * 32)
    assert detail(gone) == [(ns.q(ns.WSRF_R, "ResourceUnknownFault"), None), stamp]
    path, _ = relay.create_pull_point()
    past = relay.soap(WSNT.Renew(WSNT.TerminationTime("2020-01-01T00:00:00Z")), path)
    assert detail(past) == [(ns.q(ns.WSNT, "UnacceptableTerminationTimeFault"), None), stamp,
                            (ns.q(ns.WSNT, "MinimumTime"), xs_datetime(NOW)),
                            (ns.q(ns.WSNT, "MaximumTime"), xs_datetime(NOW + 3600))]
    initial = relay.soap(TEV.CreatePullPointSubscription(TEV.InitialTerminationTime("PT0S")))
    assert detail(initial)[0] == (ns.q(ns.WSNT, "UnacceptableInitialTerminationTimeFault"), None)
    refused = relay.soap(WSNT.Subscribe(WSNT.ConsumerReference()))
    assert detail(refused) == [(ns.q(ns.WSNT, "SubscribeCreationFailedFault"), None), stamp]


def test_one_user_cannot_take_every_subscription() -> None:
    """A user at its 16 subscriptions gets MaxPullPoints (pull) or MaxNotificationProducers (push, before its consumer
    is looked up); another user still subscribes, and the first gets room back when one of its own ends."""
    relay = EventsRelay()
    create = TEV.CreatePullPointSubscription(TEV.InitialTerminationTime("PT600S"))
    paths = []
    for _ in range(MAX_PER_USER):
        reply = relay.soap(create, user="viewer")
        assert reply.status == 200
        paths.append(reply.payload().findtext(f".//{{{ns.WSA}}}Address") or "")
    fault = relay.soap(create, user="viewer").fault()
    assert fault[:2] == ("SOAP-ENV:Receiver", ["ter:Action", "ter:MaxPullPoints"])
    assert "user 'viewer' has its maximum of 16 subscriptions" in fault[2]
    lookups = len(relay.resolver.asked)
    push = relay.soap(WSNT.Subscribe(WSNT.ConsumerReference(WSA.Address("http://consumer.test/hook"))), user="viewer")
    assert push.fault()[1] == ["ter:Action", "ter:MaxNotificationProducers"] and len(relay.resolver.asked) == lookups
    relay.create_pull_point()  # as admin
    assert relay.soap(WSNT.Unsubscribe(), paths[0][len(BASE):], user="viewer").status == 200
    assert relay.soap(create, user="viewer").status == 200


def test_topic_filters() -> None:
    """A ConcreteSet filter selects a subtree; bad expressions, dialects and unknown topics are InvalidFilter faults."""
    relay = EventsRelay()

    def expression(text: str, dialect: str = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet") -> object:
        return TEV.Filter(WSNT.TopicExpression(text, Dialect=dialect))

    path, _ = relay.create_pull_point("PT600S", expression("tns1:RuleEngine//."))
    relay.alarm()
    relay.pump()
    assert {m[0] for m in relay.pull(path)} == {CELL, PEOPLE, VEHICLE, PET}
    path, _ = relay.create_pull_point("PT600S", expression("tns1:RuleEngine/MyRuleDetector//."))
    assert {m[0] for m in relay.pull(path)} == {PEOPLE, VEHICLE, PET}
    path, _ = relay.create_pull_point(
        "PT600S", expression("tns1:VideoSource/MotionAlarm", "http://docs.oasis-open.org/wsn/t-1/TopicExpression/Concrete")
    )
    assert {m[0] for m in relay.pull(path)} == {MOTION}
    path, _ = relay.create_pull_point("PT600S", expression("tns1:VideoSource/SignalLoss|tns1:Device//."))
    assert {m[0] for m in relay.pull(path)} == {LOSS}
    for text, dialect in (
        ("tns1:VideoSource/MotionAlarm", "urn:example:xpath"),
        ("tns1:VideoSource//MotionAlarm", "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"),
        ("other:VideoSource", "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"),
        ("tns1:Device/Trigger/Relay", "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"),
    ):
        reply = relay.soap(TEV.CreatePullPointSubscription(expression(text, dialect)))
        assert reply.fault()[:2] == ("SOAP-ENV:Receiver", ["ter:InvalidArgVal", "ter:InvalidFilter"]), text


def test_oversized_topic_filters_are_refused() -> None:
    """Filters over the limits (alternatives, levels, TopicExpressions) are InvalidFilter faults that say which limit."""
    relay = EventsRelay()
    concrete_set = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
    alternatives = "|".join(["tns1:VideoSource/MotionAlarm"] * MAX_ALTERNATIVES + ["tns1:VideoSource//."])
    deep = "tns1:VideoSource" + "/Level" * MAX_TOPIC_DEPTH
    refused = {
        "at most 16 alternatives": TEV.Filter(WSNT.TopicExpression(alternatives, Dialect=concrete_set)),
        "more than 8 levels": TEV.Filter(WSNT.TopicExpression(f"{deep}|tns1:VideoSource//.", Dialect=concrete_set)),
        "at most 16 TopicExpressions": TEV.Filter(
            *(WSNT.TopicExpression("tns1:VideoSource//.", Dialect=concrete_set) for _ in range(MAX_FILTERS + 1))
        ),
    }
    for reason, filter_ in refused.items():
        fault = relay.soap(TEV.CreatePullPointSubscription(filter_)).fault()
        assert fault[:2] == ("SOAP-ENV:Receiver", ["ter:InvalidArgVal", "ter:InvalidFilter"]), reason
        assert reason in fault[2], fault


def test_event_properties_and_capabilities_are_valid() -> None:
    """GetEventProperties lists the seven topics with message descriptions; GetServiceCapabilities needs no credentials."""
    relay = EventsRelay()
    properties = relay.soap(TEV.GetEventProperties()).valid_payload()
    topic_set = properties.find(ns.q(ns.WSTOP, "TopicSet"))
    assert topic_set is not None
    topics = set()
    for element in topic_set.iter():
        if element.get(ns.q(ns.WSTOP, "topic")) == "true":
            names, parent = [etree.QName(element).localname], element.getparent()
            while parent is not topic_set:
                names.insert(0, etree.QName(parent).localname)
                parent = parent.getparent()
            topics.add("/".join(names))
    assert topics == {"VideoSource/MotionAlarm", "VideoSource/SignalLoss", "RuleEngine/CellMotionDetector/Motion",
                      "RuleEngine/ObjectDetector/Object", "RuleEngine/MyRuleDetector/PeopleDetect",
                      "RuleEngine/MyRuleDetector/VehicleDetect", "RuleEngine/MyRuleDetector/DogCatDetect"}
    for name in ("PeopleDetect", "VehicleDetect", "DogCatDetect"):
        detector = topic_set.find(f"{{{ns.TNS1}}}RuleEngine/MyRuleDetector/{name}/{{{ns.TT}}}MessageDescription")
        assert detector is not None and detector.get("IsProperty") == "true"
        described = [(d.getparent().tag, d.get("Name"), d.get("Type"))
                     for d in detector.iter(ns.q(ns.TT, "SimpleItemDescription"))]
        assert described == [(ns.q(ns.TT, "Source"), "Source", "tt:ReferenceToken"),
                             (ns.q(ns.TT, "Data"), "State", "xs:boolean")]
    motion = topic_set.find(f"{{{ns.TNS1}}}VideoSource/MotionAlarm/{{{ns.TT}}}MessageDescription")
    assert motion is not None and motion.get("IsProperty") == "true"
    assert [d.get("Name") for d in motion.iter(ns.q(ns.TT, "SimpleItemDescription"))] == ["Source", "State"]
    dialects = [d.text for d in properties.iter(ns.q(ns.WSNT, "TopicExpressionDialect"))]
    assert "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet" in dialects
    caps = relay.soap(TEV.GetServiceCapabilities(), user=None).valid_payload()
    assert caps[0].get("WSSubscriptionPolicySupport") == "false"
    assert caps[0].get("WSPullPointSupport") == "true"
    assert relay.soap(TEV.GetEventProperties(), user=None).status == 401
    viewer = relay.soap(TEV.CreatePullPointSubscription(), user="viewer")
    assert viewer.status == 200  # READ_MEDIA: every user level may subscribe
    schema.validate(viewer.payload())


def test_object_and_signal_loss_events() -> None:
    """recognitionNotify raises an ObjectDetector pulse and PeopleDetect for a person; the health monitor's offline raises SignalLoss."""
    relay = EventsRelay()
    path, _ = relay.create_pull_point()
    relay.pull(path)
    reply = relay.webhook("cam1", TOKEN1, {"type": "recognitionNotify", "device": "atomcam", "data": "alarmType:person"})
    assert reply.status == 204
    relay.hub.camera_health_changed("cam2", "offline", "no answer to 3 status requests")
    relay.hub.camera_health_changed("cam2", "offline", "still nothing")
    relay.hub.camera_health_changed("cam2", "degraded", "slow")
    relay.hub.camera_health_changed("cam3", "degraded", "slow")
    relay.hub.camera_health_changed("nope", "offline", "unknown camera")
    relay.pump()
    found = relay.pull(path)
    assert [(m[0], m[2], m[3], m[4]) for m in found] == [
        ("tns1:RuleEngine/ObjectDetector/Object", None,
         {"VideoSourceConfigurationToken": "cam1.vsc", "Rule": "ObjectDetectorRule"}, {"ClassTypes": "Human"}),
        (PEOPLE, "Changed", {"Source": "cam1.vs"}, {"State": "true"}),
        (LOSS, "Changed", {"Source": "cam2.vs"}, {"State": "true"}),
        (LOSS, "Changed", {"Source": "cam2.vs"}, {"State": "false"}),
    ]
    assert relay.hub.health("cam2") == ("degraded", "slow")


def test_device_sees_only_its_cameras_and_follows_a_reload() -> None:
    """A per-camera device's subscriptions get only its camera's events; a reload sends Deleted and Initialized and keeps them alive."""
    relay = EventsRelay(device_cameras=("cam1",))
    path, _ = relay.create_pull_point()
    assert {m[3].get("Source") for m in relay.pull(path) if m[0] == MOTION} == {"cam1.vs"}
    relay.webhook("cam2", "cam2-secret-token-9876543210", {"type": "alarmEvent"})
    relay.pump()
    assert relay.pull(path) == []
    cameras = {c.id: c for c in relay.config.cameras}
    relay.hub.update_cameras([cameras["cam1"], cameras["cam2"]])
    relay.subscriptions.update_cameras([cameras["cam2"]])
    found = relay.pull(path)
    assert [(m[0], m[2], m[3].get("Source") or m[3].get("VideoSourceConfigurationToken"), m[4]) for m in found] == [
        (MOTION, "Deleted", "cam1.vs", {}),
        (CELL, "Deleted", "cam1.vsc", {}),
        (PEOPLE, "Deleted", "cam1.vs", {}),
        (VEHICLE, "Deleted", "cam1.vs", {}),
        (PET, "Deleted", "cam1.vs", {}),
        (LOSS, "Deleted", "cam1.vs", {}),
        (MOTION, "Initialized", "cam2.vs", {"State": "true"}),  # cam2's motion survived the reload
        (CELL, "Initialized", "cam2.vsc", {"IsMotion": "true"}),
        (PEOPLE, "Initialized", "cam2.vs", {"State": "false"}),
        (VEHICLE, "Initialized", "cam2.vs", {"State": "false"}),
        (PET, "Initialized", "cam2.vs", {"State": "false"}),
        (LOSS, "Initialized", "cam2.vs", {"State": "false"}),
    ]
    assert relay.hub.camera("cam3") is None
    relay.advance(20)
    assert [m[4] for m in relay.pull(path)] == [{"State": "false"}, {"IsMotion": "false"}]


def test_a_client_that_goes_away_frees_the_pull_without_losing_messages() -> None:
    """Cancelling a waiting pull (the client hung up) frees the pull point; the next event waits for the next pull."""
    relay = EventsRelay()
    path, _ = relay.create_pull_point()
    relay.pull(path)
    subscription_id = path.rsplit("/", 1)[1]
    abandoned = relay.subscriptions.pull(subscription_id, 60, 100)
    abandoned.addErrback(lambda failure: None)
    abandoned.cancel()
    relay.alarm()
    relay.pump()
    assert [m[4] for m in relay.pull(path)] == [{"State": "true"}, {"IsMotion": "true"}]
    assert relay.clock.getDelayedCalls() != []  # only the motion timer and the expiry remain
    assert all("_answer" not in repr(call) for call in relay.clock.getDelayedCalls())


def test_subscriptions_listen_to_the_hub_only_once_started() -> None:
    """A device's subscriptions built by a reload that then fails (never started) leave no listener on the hub."""
    from typing import Any, cast

    from atomrelay.events.subscriptions import Subscriptions

    relay = EventsRelay()
    before = list(relay.hub.listeners)
    built = Subscriptions(relay.clock, relay.hub, [], cast(Any, None))
    assert relay.hub.listeners == before
    built.startService()
    assert built.publish in relay.hub.listeners
    built.stopService()
    assert relay.hub.listeners == before
