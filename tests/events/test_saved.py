"""Event subscriptions saved in state_dir: what is saved when, what a restart restores, and bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from atomrelay.events.service import MAX_FILTERS
from atomrelay.events.subscriptions import Subscriptions
from atomrelay.events.topics import MAX_ALTERNATIVES
from atomrelay.state import StateStore
from atomrelay.xml import ns
from tests.events.support import BASE, CONSUMER, NOW, TEV, WSA, WSNT, EventsRelay, messages

MOTION = "tns1:VideoSource/MotionAlarm"
SAVED = "event_subscriptions.json"


def restart(relay: EventsRelay, after: float = 5.0) -> EventsRelay:
    """Stop ``relay``'s subscriptions (the process ends); start a new relay on its state_dir ``after`` s later."""
    relay.subscriptions.stopService()
    clock = Clock()
    clock.advance(relay.clock.seconds() + after)
    again = EventsRelay(state_dir=relay.state_dir, clock=clock)
    again.subscriptions.startService()
    again.pump()
    return again


def saved(relay: EventsRelay) -> list[dict[str, Any]]:
    assert relay.state_dir is not None
    entries: list[dict[str, Any]] = json.loads((relay.state_dir / SAVED).read_text())["subscriptions"]
    return entries


def capture_log(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(Subscriptions, "log", Logger(observer=events.append))
    monkeypatch.setattr(StateStore, "log", Logger(observer=events.append))
    return events


def errors(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(e) for e in events if e["log_level"].name in ("error", "critical")]


def test_a_pull_point_and_a_push_subscription_survive_a_restart(tmp_path: Path) -> None:
    """After a restart the same pull-point address answers PullMessages with Initialized values, keeps its filter,
    owner and renewed termination, and gets the next motion; the push subscription Notifies its consumer again."""
    relay = EventsRelay(state_dir=tmp_path)
    topic = TEV.Filter(WSNT.TopicExpression("tns1:VideoSource/MotionAlarm",
                                            Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"))
    path, _ = relay.create_pull_point("PT600S", topic)
    relay.soap(WSNT.Renew(WSNT.TerminationTime("PT1200S")), path).valid_payload()
    push = relay.soap(WSNT.Subscribe(WSNT.ConsumerReference(WSA.Address(CONSUMER)),
                                     WSNT.InitialTerminationTime("PT600S"))).valid_payload()
    push_path = (push.findtext(f"{{{ns.WSNT}}}SubscriptionReference/{{{ns.WSA}}}Address") or "").removeprefix(BASE)
    relay.pump()
    relay.alarm()
    relay.pump()
    before = relay.subscriptions.get(path.rsplit("/", 1)[1])

    again = restart(relay)
    restored = again.subscriptions.get(path.rsplit("/", 1)[1])
    assert (restored.address, restored.owner, restored.filters, restored.termination) == (
        before.address, before.owner, before.filters, NOW + 1200)
    found = again.pull(path)
    assert [(m[0], m[2], m[3]["Source"], m[4]) for m in found] == [
        (MOTION, "Initialized", f"{camera}.vs", {"State": "false"}) for camera in ("cam1", "cam2", "cam3")
    ]  # the motion before the restart is forgotten: the client hears its current value
    waiting = again.pull_start(path)
    again.advance(1)
    assert again.alarm().status == 204
    again.pump()
    assert [(m[0], m[2], m[4]) for m in messages(again.result(waiting).valid_payload())] == [
        (MOTION, "Changed", {"State": "true"})
    ]
    assert again.consumer.notifications()[0][0][2] == "Initialized"
    assert again.soap(WSNT.Renew(WSNT.TerminationTime("PT600S")), push_path).status == 200
    assert len(again.subscriptions) == 2


def test_saved_state_follows_renew_pull_unsubscribe_and_expiry(tmp_path: Path) -> None:
    """The file changes on create, Renew, pulls that keep the pull point alive (once per 10 s of it), Unsubscribe
    and expiry, and not on a stop."""
    relay = EventsRelay(state_dir=tmp_path)
    first, _ = relay.create_pull_point("PT60S")
    second, _ = relay.create_pull_point("PT600S")
    assert [(e["kind"], e["termination"]) for e in saved(relay)] == [("pull", NOW + 60), ("pull", NOW + 600)]
    relay.soap(WSNT.Renew(WSNT.TerminationTime("PT300S")), second).valid_payload()
    assert [e["termination"] for e in saved(relay)] == [NOW + 60, NOW + 300]
    relay.pull(first, "PT0S")
    relay.advance(55)
    files = []
    for _ in range(100):  # pulls every 0.1 s keep it alive until 10 s past each: written once per 10 s
        relay.pull(first, "PT0S")
        files.append(saved(relay)[0]["termination"] - NOW)
        relay.advance(0.1)
    written = [f for i, f in enumerate(files) if i == 0 or f != files[i - 1]]
    assert written == [60, pytest.approx(70, abs=0.11)]
    assert relay.subscriptions.get(first.rsplit("/", 1)[1]).termination == pytest.approx(NOW + 64.9 + 10)
    relay.soap(WSNT.Unsubscribe(), first).valid_payload()
    assert [e["address"].rsplit("/", 1)[1] for e in saved(relay)] == [second.rsplit("/", 1)[1]]
    relay.subscriptions.stopService()
    assert len(saved(relay)) == 1
    relay.subscriptions.startService()
    relay.advance(300)
    assert saved(relay) == [] and len(relay.subscriptions) == 0


def test_expired_subscriptions_are_not_restored(tmp_path: Path) -> None:
    """A subscription whose termination time passed while the relay was down is gone: ResourceUnknown."""
    relay = EventsRelay(state_dir=tmp_path)
    path, _ = relay.create_pull_point("PT60S")
    again = restart(relay, after=60)
    assert len(again.subscriptions) == 0
    assert again.result(again.pull_start(path)).fault()[1][-1] == "ter:ResourceUnknown"


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("{\"version\": 1, \"subscriptions\": [", "cannot read saved state"),
        ("[1, 2]", "a JSON list, not a dict"),
        (json.dumps({"version": 1, "subscriptions": [{"id": "x"}]}), "subscriptions[0].kind is not a string"),
        (json.dumps({"version": 1, "subscriptions": [{"id": "0" * 32, "kind": "pull", "owner": "a", "termination": 1e12,
                                                      "address": "http://h/s/" + "0" * 32, "filters": [[["A"]]]}]}),
         "subscriptions[0].filters has an alternative that is not [path, subtree]"),
    ],
)
def test_a_bad_file_is_one_error_line_and_the_relay_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, complaint: str
) -> None:
    """An unreadable or malformed saved file gives one error line naming the file and the fault, and is kept aside
    as it was (the next save does not overwrite it); subscribing works."""
    events = capture_log(monkeypatch)
    (tmp_path / SAVED).write_text(content)
    relay = EventsRelay(state_dir=tmp_path)
    relay.subscriptions.startService()
    assert len(errors(events)) == 1
    assert str(tmp_path / SAVED) in errors(events)[0] and complaint in errors(events)[0]
    path, _ = relay.create_pull_point()
    assert relay.pull(path)
    assert len(saved(relay)) == 1
    (aside,) = tmp_path.glob(SAVED + ".corrupt-*")
    assert aside.read_text() == content


def test_a_file_of_another_version_is_kept_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file written by a newer relay (a downgrade) is restored from nothing and kept aside, not overwritten."""
    events = capture_log(monkeypatch)
    content = json.dumps({"version": 2, "subscriptions": [{"id": "a"}]})
    (tmp_path / SAVED).write_text(content)
    relay = EventsRelay(state_dir=tmp_path)
    relay.subscriptions.startService()
    assert len(errors(events)) == 1 and "not a version 1 subscriptions document" in errors(events)[0]
    relay.create_pull_point()
    (aside,) = tmp_path.glob(SAVED + ".corrupt-*")
    assert aside.read_text() == content and len(saved(relay)) == 1


def test_one_bad_entry_leaves_the_others_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry damaged by hand is left out (kept in the file moved aside); the other subscriptions come back, and
    the saved file holds them again at once."""
    relay = EventsRelay(state_dir=tmp_path)
    first, _ = relay.create_pull_point("PT600S")
    second, _ = relay.create_pull_point("PT600S")
    relay.pump()
    document = json.loads((tmp_path / SAVED).read_text())
    document["subscriptions"][0]["termination"] = "soon"
    content = json.dumps(document)
    (tmp_path / SAVED).write_text(content)
    events = capture_log(monkeypatch)
    again = restart(relay)
    assert len(errors(events)) == 1
    assert "cannot restore 1 event subscription(s): subscriptions[0].termination is not a number" in errors(events)[0]
    assert len(again.subscriptions) == 1
    (aside,) = tmp_path.glob(SAVED + ".corrupt-*")
    assert aside.read_text() == content
    assert [entry["address"] for entry in saved(again)] == [document["subscriptions"][1]["address"]]
    survivor = next(path for path in (first, second) if path.endswith(document["subscriptions"][1]["id"]))
    assert again.pull(survivor)


def test_a_failed_save_is_logged_and_the_subscription_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When state_dir cannot be written, subscribing still works and the error says a restart loses it."""
    events = capture_log(monkeypatch)
    blocked = tmp_path / "file"
    blocked.write_text("")
    relay = EventsRelay(state_dir=blocked)
    path, _ = relay.create_pull_point()
    assert relay.pull(path)
    assert len(errors(events)) == 1 and "a restart will lose them" in errors(events)[0]


def test_a_subscription_with_filters_at_the_limits_survives_a_restart(tmp_path: Path) -> None:
    """The largest filter Subscribe accepts (16 TopicExpressions of 16 alternatives) is saved and restored, repeated
    alternatives kept once."""
    relay = EventsRelay(state_dir=tmp_path)
    concrete_set = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
    text = "|".join(["tns1:VideoSource/MotionAlarm"] * (MAX_ALTERNATIVES - 1) + ["tns1:VideoSource//."])
    relay.subscriptions.startService()
    path, _ = relay.create_pull_point(
        "PT600S", TEV.Filter(*(WSNT.TopicExpression(text, Dialect=concrete_set) for _ in range(MAX_FILTERS)))
    )
    (entry,) = saved(relay)
    assert len(entry["filters"]) == MAX_FILTERS
    assert entry["filters"][0] == [[["VideoSource", "MotionAlarm"], False], [["VideoSource"], True]]
    again = restart(relay)
    again.hub.motion_detected("cam1")
    again.pump()
    assert MOTION in {m[0] for m in again.pull(path)}
