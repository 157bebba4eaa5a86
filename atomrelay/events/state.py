"""Per-camera event state: motion (with its timeout), recognised objects, online/offline.

The ATOM Cam firmware only ever says "motion now" (``alarmEvent``) and never "motion
over", so the hub ends a camera's motion itself after ``motion_timeout`` seconds without
a further alarm; a repeated alarm pushes the end out and is not a new transition. A
recognised object class (``recognitionNotify``) is a pulse on ObjectDetector and a
state on its MyRuleDetector topic that ends the same way, each class on its own. Every
transition becomes an ``Event`` handed to the listeners (the per-device subscription
stores), which filter and deliver it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Collection, Sequence

from twisted.application.service import Service
from twisted.logger import Logger

from atomrelay.clock import Clock, DelayedCall
from atomrelay.config import CameraConfig
from atomrelay.events.topics import CELL_MOTION, CLASS_TOPICS, MOTION_ALARM, OBJECT, SIGNAL_LOSS, TOPICS, Topic
from atomrelay.metrics import Registry
from atomrelay.xml.xstypes import xs_bool

HEALTH_STATES = ("unknown", "online", "degraded", "offline")
RECENT_EVENTS = 20
"""Motion, object and signal-loss events kept per camera for the dashboard."""


@dataclass(frozen=True)
class Event:
    """One notification: a topic, the camera it is about, when, and its Data values."""

    topic: Topic
    camera_id: str
    time: float
    """Seconds since the epoch, from the relay's clock."""
    data: tuple[tuple[str, str], ...]
    operation: str | None = None
    """PropertyOperation: Initialized, Changed or Deleted for property topics, else None."""

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the property (or pulse source): topic text and camera."""
        return (self.topic.text, self.camera_id)


@dataclass
class _CameraState:
    camera: CameraConfig
    motion: bool = False
    motion_end: DelayedCall | None = None
    objects: dict[str, DelayedCall] = field(default_factory=dict)
    """The object classes recognised within ``motion_timeout``, each with the call that ends it."""
    health: str = "online"
    reason: str = ""
    recent: deque[Event] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))


class EventHub(Service):
    """The relay-wide event state of every configured camera.

    One hub serves every ONVIF device; the webhook receiver and the health monitor feed
    it, ``listeners`` (callables taking an ``Event``) get every transition. Keep it
    across config reloads and call ``update_cameras``. Stopping it cancels the motion
    timers.
    """

    log = Logger()

    def __init__(
        self, clock: Clock, cameras: Sequence[CameraConfig], motion_timeout: float, metrics: Registry | None = None
    ) -> None:
        self._clock = clock
        self.motion_timeout = motion_timeout
        self.listeners: list[Callable[[Event], None]] = []
        self._raised = (metrics or Registry()).counter(
            "atomrelay_events_raised_total", "Event messages raised, by camera and topic", ("camera", "topic")
        )
        self._cameras: dict[str, _CameraState] = {}
        self.update_cameras(cameras)

    # --- configuration ---------------------------------------------------------------------

    def update_cameras(self, cameras: Sequence[CameraConfig], motion_timeout: float | None = None) -> None:
        """Follow a new camera list: keep the state of cameras that stay, forget the others."""
        if motion_timeout is not None:
            self.motion_timeout = motion_timeout
        wanted = {camera.id: camera for camera in cameras}
        for camera_id in list(self._cameras):
            if camera_id not in wanted:
                self._cancel_timers(self._cameras.pop(camera_id))
        for camera_id, camera in wanted.items():
            state = self._cameras.get(camera_id)
            if state is None:
                self._cameras[camera_id] = _CameraState(camera)
            else:
                state.camera = camera

    def camera(self, camera_id: str) -> CameraConfig | None:
        """The configured camera with this id, or None."""
        state = self._cameras.get(camera_id)
        return state.camera if state is not None else None

    def camera_hosts(self) -> frozenset[str]:
        """The lower-case host of every configured camera (never a Notify destination)."""
        return frozenset(state.camera.host.lower() for state in self._cameras.values())

    # --- inputs ----------------------------------------------------------------------------

    def motion_detected(self, camera_id: str) -> None:
        """An ``alarmEvent``: motion starts now, or goes on for another ``motion_timeout``."""
        state = self._cameras.get(camera_id)
        if state is None:
            return
        if state.motion:
            if state.motion_end is not None and state.motion_end.active():
                state.motion_end.reset(self.motion_timeout)
            return
        state.motion = True
        state.motion_end = self._clock.callLater(self.motion_timeout, self._motion_over, camera_id)
        self.log.info("camera {camera_id}: motion", camera_id=camera_id)
        self._emit_motion(camera_id, True)

    def object_detected(self, camera_id: str, object_class: str) -> None:
        """A ``recognitionNotify`` naming an object class (``Human``, ``Vehicle``, ``Animal``): an
        ObjectDetector pulse, and the class's MyRuleDetector state on (or on for another ``motion_timeout``)."""
        state = self._cameras.get(camera_id)
        if state is None:
            return
        now = self._clock.seconds()
        self.log.info("camera {camera_id}: recognised {object_class}", camera_id=camera_id, object_class=object_class)
        self._emit(Event(OBJECT, camera_id, now, (("ClassTypes", object_class),)))
        topic = CLASS_TOPICS.get(object_class)
        if topic is None:
            return
        end = state.objects.get(object_class)
        if end is not None and end.active():
            end.reset(self.motion_timeout)
            return
        end = self._clock.callLater(self.motion_timeout, self._object_over, camera_id, object_class)
        state.objects[object_class] = end
        self._emit(Event(topic, camera_id, now, (("State", "true"),), "Changed"))

    def camera_health_changed(self, camera_id: str, state: str, reason: str) -> None:
        """The health monitor's verdict; ``offline`` raises SignalLoss, anything else clears it."""
        camera = self._cameras.get(camera_id)
        if camera is None or state not in HEALTH_STATES:
            return
        was_lost = camera.health == "offline"
        camera.health, camera.reason = state, reason
        lost = state == "offline"
        if lost != was_lost:
            self.log.info(
                "camera {camera_id} is {state} ({reason}): SignalLoss {lost}",
                camera_id=camera_id, state=state, reason=reason, lost=xs_bool(lost),
            )
            self._emit(Event(SIGNAL_LOSS, camera_id, self._clock.seconds(), (("State", xs_bool(lost)),), "Changed"))

    # --- queries ---------------------------------------------------------------------------

    def motion(self, camera_id: str) -> bool:
        """Whether the camera is in motion now."""
        state = self._cameras.get(camera_id)
        return state.motion if state is not None else False

    def health(self, camera_id: str) -> tuple[str, str]:
        """The camera's last health state and reason (``online`` until told otherwise)."""
        state = self._cameras.get(camera_id)
        return (state.health, state.reason) if state is not None else ("online", "")

    def recent(self, camera_id: str) -> list[Event]:
        """The camera's last motion, object and signal-loss events, newest first."""
        state = self._cameras.get(camera_id)
        return list(reversed(state.recent)) if state is not None else []

    def properties(self, camera_ids: Collection[str], operation: str = "Initialized") -> list[Event]:
        """The current value of every property of these cameras, as events with ``operation``."""
        now = self._clock.seconds()
        events = []
        for camera_id in camera_ids:
            state = self._cameras.get(camera_id)
            if state is None:
                continue
            for topic in TOPICS:
                value = self._value(state, topic)
                if value is not None:
                    events.append(Event(topic, camera_id, now, value, operation))
        return events

    @staticmethod
    def _value(state: _CameraState, topic: Topic) -> tuple[tuple[str, str], ...] | None:
        if topic is MOTION_ALARM:
            return (("State", xs_bool(state.motion)),)
        if topic is CELL_MOTION:
            return (("IsMotion", xs_bool(state.motion)),)
        if topic is SIGNAL_LOSS:
            return (("State", xs_bool(state.health == "offline")),)
        for object_class, class_topic in CLASS_TOPICS.items():
            if topic is class_topic:
                return (("State", xs_bool(object_class in state.objects)),)
        return None

    # --- service ---------------------------------------------------------------------------

    def stopService(self) -> None:
        """Cancel the motion and object timers; motion and objects in progress are forgotten."""
        for state in self._cameras.values():
            self._cancel_timers(state)
        super().stopService()  # type: ignore[no-untyped-call]

    # --- plumbing --------------------------------------------------------------------------

    def _motion_over(self, camera_id: str) -> None:
        state = self._cameras.get(camera_id)
        if state is None or not state.motion:
            return
        state.motion = False
        state.motion_end = None
        self.log.info("camera {camera_id}: motion over", camera_id=camera_id)
        self._emit_motion(camera_id, False)

    def _object_over(self, camera_id: str, object_class: str) -> None:
        state = self._cameras.get(camera_id)
        if state is None or state.objects.pop(object_class, None) is None:
            return
        self.log.info("camera {camera_id}: {object_class} gone", camera_id=camera_id, object_class=object_class)
        topic = CLASS_TOPICS[object_class]
        self._emit(Event(topic, camera_id, self._clock.seconds(), (("State", xs_bool(False)),), "Changed"))

    def _emit_motion(self, camera_id: str, motion: bool) -> None:
        now = self._clock.seconds()
        self._emit(Event(MOTION_ALARM, camera_id, now, (("State", xs_bool(motion)),), "Changed"))
        self._emit(Event(CELL_MOTION, camera_id, now, (("IsMotion", xs_bool(motion)),), "Changed"))

    def _cancel_timers(self, state: _CameraState) -> None:
        for call in (state.motion_end, *state.objects.values()):
            if call is not None and call.active():
                call.cancel()
        state.motion_end = None
        state.motion = False
        state.objects.clear()

    def _emit(self, event: Event) -> None:
        self._raised.inc(event.camera_id, event.topic.text)
        state = self._cameras.get(event.camera_id)
        if state is not None and event.topic in (MOTION_ALARM, OBJECT, SIGNAL_LOSS):
            state.recent.append(event)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - one broken listener must not starve the others
                self.log.failure("an event listener failed on {topic}", topic=event.topic.text)
