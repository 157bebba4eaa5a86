"""/metrics: the text exposition format (read back with prometheus_client's parser) and what is counted."""

from __future__ import annotations

import base64
from typing import Any, cast

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from atomrelay import metrics as metrics_module
from atomrelay.auth.security import Authenticator
from atomrelay.config import User
from atomrelay.events.state import EventHub
from atomrelay.events.subscriptions import Subscriptions
from atomrelay.events.topics import OBJECT
from atomrelay.metrics import Registry
from atomrelay.onvif.server import OnvifResource
from atomrelay.web.metrics import MetricsResource, RelayGauges
from tests.camera.support import camera_config
from tests.helpers import metric
from tests.onvif.conftest import SoapRelay, soap_envelope, soap_iso, soap_op, soap_security, soap_services

USERS = {"viewer": User("viewer", "viewer-pw", "User")}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels (prometheus_client's parser)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_exposition_round_trips_through_the_prometheus_parser() -> None:
    """Counters, gauges and summaries with awkward label values parse back to the values counted."""
    registry = Registry()
    counter = registry.counter("demo_requests_total", "Requests\nby \\ kind", ("kind",))
    counter.inc('quote " back\\slash\nnewline')
    counter.inc("plain", amount=2.5)
    registry.gauge("demo_temperature", "A gauge").set(-3.25)
    summary = registry.summary("demo_seconds", "Durations", ("step",))
    summary.observe(0.5, "a")
    summary.observe(1.5, "a")
    parsed = samples(registry.exposition())
    assert parsed[("demo_requests_total", (("kind", 'quote " back\\slash\nnewline'),))] == 1
    assert parsed[("demo_requests_total", (("kind", "plain"),))] == 2.5
    assert parsed[("demo_temperature", ())] == -3.25
    assert parsed[("demo_seconds_count", (("step", "a"),))] == 2
    assert parsed[("demo_seconds_sum", (("step", "a"),))] == 2.0


def test_series_per_metric_are_bounded(monkeypatch: Any) -> None:
    """Past MAX_SERIES label combinations, new ones are not counted; known ones still are."""
    monkeypatch.setattr(metrics_module, "MAX_SERIES", 3)
    registry = Registry()
    counter = registry.counter("bounded_total", "Bounded", ("value",))
    for value in ("a", "b", "c", "d", "e"):
        counter.inc(value)
    counter.inc("a")
    assert [metric(registry, "bounded_total", value=v) for v in ("a", "b", "c", "d", "e")] == [2, 1, 1, 0, 0]


def get(root: Resource, path: str, credentials: str | None = None) -> tuple[int, bytes]:
    stub = StubTreq(root)
    headers = {"Authorization": ["Basic " + base64.b64encode(credentials.encode()).decode()]} if credentials else {}
    results: list[Any] = []
    done = stub.get("http://relay.test:8080" + path, headers=headers)
    done.addCallback(lambda r: stub.content(r).addCallback(lambda body: (r.code, body))).addBoth(results.append)
    stub.flush()
    return results[0]


def metrics_root(public: bool) -> tuple[Resource, Registry]:
    clock = Clock()
    registry = Registry()
    authenticator = Authenticator(clock, USERS.get, 300.0, http_basic=True)
    gauges = RelayGauges(clock, registry, dict, {}, dict, 0.0, "1.2.3", lambda: 7)
    root = Resource()
    root.putChild(b"metrics", MetricsResource(authenticator, registry, gauges, public=public))
    return root, registry


def test_metrics_need_a_relay_user_unless_public() -> None:
    """/metrics answers 401 without credentials, 200 with a relay user's, and 200 to anyone when public."""
    root, _ = metrics_root(public=False)
    assert get(root, "/metrics")[0] == 401
    status, body = get(root, "/metrics", "viewer:viewer-pw")
    assert status == 200 and samples(body.decode())[("atomrelay_info", (("version", "1.2.3"),))] == 1
    assert samples(body.decode())[("atomrelay_replay_memory_entries", ())] == 7
    public, _ = metrics_root(public=True)
    assert get(public, "/metrics")[0] == 200


def soap_counts(registry: Registry) -> dict[tuple[str, ...], float]:
    counted = samples(registry.exposition())
    return {tuple(v for _, v in labels): value for (name, labels), value in counted.items()
            if name == "atomrelay_soap_requests_total"}


def test_soap_requests_are_counted_by_service_operation_and_outcome() -> None:
    """Answers, faults, challenges and unknown operations are counted; an unknown name never becomes a label."""
    relay = SoapRelay()
    registry = Registry()
    root = Resource()
    root.putChild(b"onvif", OnvifResource(soap_services(relay), relay.authenticator, None, metrics=registry))
    relay.stub = StubTreq(root)
    relay.post(soap_envelope(soap_op("GetSystemDateAndTime")))
    relay.post(soap_envelope(soap_op("GetSystemDateAndTime")), path="/onvif/media_service")
    relay.post(soap_envelope(soap_op("GetHostname")))
    relay.post(soap_envelope(soap_op("Refuse")))
    relay.post(soap_envelope(soap_op("Explode")))
    relay.post(soap_envelope(soap_op("MadeUpOperationName")))
    relay.post(b"<not xml")
    token = soap_security("viewer", "wrong", soap_iso(relay.clock.seconds()))
    relay.post(soap_envelope(soap_op("GetHostname"), [token]))
    pending = relay.pending_post(soap_envelope(soap_op("LateFault")))
    relay.clock.advance(1.0)
    relay.stub.flush()
    assert pending
    assert soap_counts(registry) == {  # (operation, outcome, service)
        ("GetHostname", "auth_failure", "device_service"): 2,
        ("GetSystemDateAndTime", "ok", "device_service"): 1,
        ("GetSystemDateAndTime", "ok", "media_service"): 1,
        ("Refuse", "InvalidArgVal", "device_service"): 1,
        ("Explode", "Action", "device_service"): 1,
        ("LateFault", "InvalidArgVal", "device_service"): 1,
        ("unknown", "ActionNotSupported", "device_service"): 1,
        ("unknown", "WellFormed", "device_service"): 1,
    }


def test_events_raised_delivered_and_live_subscriptions() -> None:
    """Raised events count per camera and topic, pulled ones as delivered, and live pull points as a gauge."""
    clock = Clock()
    registry = Registry()
    cameras = [camera_config("swing")]
    hub = EventHub(clock, cameras, 20.0, registry)
    subscriptions = Subscriptions(clock, hub, cameras, notify=cast(Any, None), metrics=registry)
    sub = subscriptions.create_pull_point("http://relay.test/sub/", (), 60.0, "viewer@192.0.2.5")
    hub.object_detected("swing", "Human")
    pulled: list[Any] = []
    subscriptions.pull(sub.id, 0, 100).addCallback(pulled.append)
    RelayGauges(clock, registry, dict, {"": subscriptions}, dict, 0.0, "1")()
    counted = samples(registry.exposition())
    assert counted[("atomrelay_events_raised_total", (("camera", "swing"), ("topic", OBJECT.text)))] == 1
    assert len(pulled[0]) >= 2  # the Initialized properties and the object
    assert counted[("atomrelay_events_delivered_total", (("kind", "pull"),))] == len(pulled[0])
    assert counted[("atomrelay_event_subscriptions", (("kind", "pull"),))] == 1
