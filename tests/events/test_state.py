"""The event hub (motion timeout, health, reloads) and the time values of event messages."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from atomrelay.events.state import Event, EventHub
from atomrelay.events.topics import MOTION_ALARM, FilterError, parse_topic_expression
from atomrelay.xml import ns
from atomrelay.xml.xstypes import parse_datetime, parse_duration, parse_time, xs_datetime
from tests.events.support import NOW, load_config


def hub_with_log() -> tuple[Clock, EventHub, list[Event]]:
    clock = Clock()
    clock.advance(NOW)
    config = load_config()
    hub = EventHub(clock, config.cameras, 20.0)
    seen: list[Event] = []
    hub.listeners.append(seen.append)
    return clock, hub, seen


def test_repeated_alarms_extend_motion_without_new_transitions() -> None:
    """Alarms every 10 s keep motion on with one Changed true; it ends 20 s after the last one."""
    clock, hub, seen = hub_with_log()
    for _ in range(6):
        hub.motion_detected("cam1")
        clock.advance(10)
    assert [(e.topic.text, e.data) for e in seen] == [
        ("tns1:VideoSource/MotionAlarm", (("State", "true"),)),
        ("tns1:RuleEngine/CellMotionDetector/Motion", (("IsMotion", "true"),)),
    ]
    clock.advance(9.9)
    assert hub.motion("cam1")
    clock.advance(0.1)
    assert not hub.motion("cam1")
    assert [e.data for e in seen[2:]] == [(("State", "false"),), (("IsMotion", "false"),)]
    assert seen[2].time == NOW + 70  # 20 s after the alarm at +50


def test_health_changes_map_to_signal_loss() -> None:
    """Only crossing into or out of offline is a SignalLoss transition; unknown cameras and states are ignored."""
    _, hub, seen = hub_with_log()
    for state in ("degraded", "offline", "offline", "degraded", "online", "bogus"):
        hub.camera_health_changed("cam1", state, "because")
    hub.camera_health_changed("nope", "offline", "unknown camera")
    assert [(e.topic.text, e.operation, e.data) for e in seen] == [
        ("tns1:VideoSource/SignalLoss", "Changed", (("State", "true"),)),
        ("tns1:VideoSource/SignalLoss", "Changed", (("State", "false"),)),
    ]
    assert hub.health("cam1") == ("online", "because")


def test_a_broken_listener_does_not_starve_the_others() -> None:
    """A listener that raises is logged and the next listener still gets the event."""
    _, hub, seen = hub_with_log()

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    hub.listeners.insert(0, broken)
    hub.motion_detected("cam2")
    assert len(seen) == 2


def test_reload_keeps_state_and_cancels_timers_of_removed_cameras() -> None:
    """update_cameras keeps the motion of cameras that stay, drops removed ones (and their timers), adds new ones."""
    clock, hub, seen = hub_with_log()
    config = load_config()
    cam1, cam2, cam3 = config.cameras
    hub.motion_detected("cam1")
    hub.motion_detected("cam2")
    hub.update_cameras([cam1, cam3], motion_timeout=5.0)
    assert hub.camera("cam2") is None and hub.motion("cam1")
    assert len(clock.getDelayedCalls()) == 1
    hub.motion_detected("cam1")  # extends by the new timeout
    clock.advance(5)
    assert not hub.motion("cam1")
    hub.motion_detected("cam2")  # gone: ignored
    assert hub.camera_hosts() == frozenset({"192.0.2.11", "cam3.lan"})
    hub.motion_detected("cam3")
    hub.stopService()
    assert clock.getDelayedCalls() == [] and not hub.motion("cam3")


def test_each_object_class_is_a_state_that_ends_after_the_timeout() -> None:
    """A recognised class is a pulse plus its MyRuleDetector state on; repeats extend it; it ends 20 s after the last, per class."""
    clock, hub, seen = hub_with_log()
    hub.object_detected("cam1", "Human")
    clock.advance(15)
    hub.object_detected("cam1", "Human")
    hub.object_detected("cam1", "Vehicle")
    hub.object_detected("cam1", "Plant")  # no MyRuleDetector topic: only the pulse
    clock.advance(19.9)
    assert [(e.topic.text, e.operation, e.data, e.time - NOW) for e in seen] == [
        ("tns1:RuleEngine/ObjectDetector/Object", None, (("ClassTypes", "Human"),), 0),
        ("tns1:RuleEngine/MyRuleDetector/PeopleDetect", "Changed", (("State", "true"),), 0),
        ("tns1:RuleEngine/ObjectDetector/Object", None, (("ClassTypes", "Human"),), 15),
        ("tns1:RuleEngine/ObjectDetector/Object", None, (("ClassTypes", "Vehicle"),), 15),
        ("tns1:RuleEngine/MyRuleDetector/VehicleDetect", "Changed", (("State", "true"),), 15),
        ("tns1:RuleEngine/ObjectDetector/Object", None, (("ClassTypes", "Plant"),), 15),
    ]
    clock.advance(0.1)
    assert [(e.topic.text, e.data, e.camera_id, e.time - NOW) for e in seen[6:]] == [
        ("tns1:RuleEngine/MyRuleDetector/PeopleDetect", (("State", "false"),), "cam1", 35),
        ("tns1:RuleEngine/MyRuleDetector/VehicleDetect", (("State", "false"),), "cam1", 35),
    ]
    hub.object_detected("cam2", "Animal")
    hub.stopService()
    assert clock.getDelayedCalls() == []
    assert [e.data for e in hub.properties(["cam2"]) if e.topic.path[1] == "MyRuleDetector"] == [
        (("State", "false"),)
    ] * 3


def test_properties_report_every_camera_state() -> None:
    """properties() lists motion, the MyRuleDetector states and SignalLoss of the asked cameras (not the object pulses)."""
    _, hub, _ = hub_with_log()
    hub.motion_detected("cam2")
    hub.object_detected("cam2", "Human")
    events = hub.properties(["cam2", "unknown"], "Initialized")
    assert [(e.topic.text, e.data) for e in events] == [
        ("tns1:VideoSource/MotionAlarm", (("State", "true"),)),
        ("tns1:RuleEngine/CellMotionDetector/Motion", (("IsMotion", "true"),)),
        ("tns1:RuleEngine/MyRuleDetector/PeopleDetect", (("State", "true"),)),
        ("tns1:RuleEngine/MyRuleDetector/VehicleDetect", (("State", "false"),)),
        ("tns1:RuleEngine/MyRuleDetector/DogCatDetect", (("State", "false"),)),
        ("tns1:VideoSource/SignalLoss", (("State", "false"),)),
    ]
    assert {e.operation for e in events} == {"Initialized"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT60S", 60), ("PT1M", 60), ("P0DT0H1M0S", 60), ("PT0.5S", 0.5), ("P1D", 86400), ("PT600S", 600),
     (" PT10S ", 10), ("-PT5S", -5), ("P1Y", 365 * 86400)],
)
def test_durations(text: str, seconds: float) -> None:
    """xs:duration values as clients send them (zeep writes PT1M for 60 s)."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "60", "PT1H30", "1 minute", "P1DT"])
def test_bad_durations(text: str) -> None:
    """Anything that is not an xs:duration is a ValueError."""
    with pytest.raises(ValueError):
        parse_duration(text)


def test_datetimes() -> None:
    """xs:dateTime with Z, an offset, fractions or no zone (UTC); relative or absolute times; UTC output with Z."""
    assert parse_datetime("2023-11-14T22:13:20Z") == NOW
    assert parse_datetime("2023-11-15T07:13:20+09:00") == NOW
    assert parse_datetime("2023-11-14T22:13:20.250Z") == NOW + 0.25
    assert parse_datetime("2023-11-14T22:13:20") == NOW
    assert parse_time("PT30S", NOW) == NOW + 30
    assert parse_time("2023-11-14T22:13:50Z", NOW) == NOW + 30
    assert xs_datetime(NOW) == "2023-11-14T22:13:20Z"
    assert xs_datetime(NOW + 0.123, milliseconds=True) == "2023-11-14T22:13:20.123Z"
    for bad in ("2023-11-14", "2023-13-14T22:13:20Z", "yesterday"):
        with pytest.raises(ValueError):
            parse_datetime(bad)


def test_topic_expression_prefixes_resolve_through_the_request() -> None:
    """A topic prefix counts by its namespace, not its spelling; a foreign namespace is refused."""
    onvif = parse_topic_expression("x:VideoSource//.", "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet",
                                   {"x": ns.TNS1})
    assert [path for path, _ in onvif.alternatives] == [("VideoSource",)]
    with pytest.raises(FilterError):
        parse_topic_expression("tns1:VideoSource//.", "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet",
                               {"tns1": "urn:example:other"})
    with pytest.raises(FilterError):
        parse_topic_expression("tns1:VideoSource/Motion Alarm",
                               "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet", {})


def test_recent_events_keep_the_last_twenty_per_camera() -> None:
    """Each camera keeps its last 20 motion, object and signal-loss events (CellMotion repeats none), newest first."""
    clock, hub, _ = hub_with_log()
    camera_id = "cam1"
    hub.motion_detected(camera_id)
    for index in range(25):
        clock.advance(1)
        hub.object_detected(camera_id, f"Class{index}")
    recent = hub.recent(camera_id)
    assert len(recent) == 20
    assert [dict(event.data)["ClassTypes"] for event in recent[:2]] == ["Class24", "Class23"]
    motion = [dict(event.data)["State"] for event in recent if event.topic is MOTION_ALARM]
    assert motion == ["false"]  # the end (after motion_timeout) is among the last 20, the start no longer
    assert hub.recent("nope") == []
