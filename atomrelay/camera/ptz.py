"""PTZ emulation for pan/tilt cameras (the ATOM Cam Swing), on top of one camera command.

The firmware knows one move: ``move <pan> <tilt> <speed 1-9> <priority 0-3>`` to an
absolute position in degrees, answered when the motor has stopped. Everything ONVIF
asks for is built from it here.

Coordinates (ONVIF generic spaces, normalised to [-1, 1])::

    pan  = pan_min  + (x + 1) / 2 * (pan_max  - pan_min)     x = -1 → 0°,  x = 0 → 177.5°, x = +1 → 355°
    tilt = tilt_min + (y + 1) / 2 * (tilt_max - tilt_min)    y = -1 → 0°,  y = 0 → 90°,    y = +1 → 180°

Direction: a larger pan angle turns the view to the right and a larger tilt angle
turns it up - the atomcam_tools web UI draws its pan slider 0→355 left to right under
the picture and its tilt slider 0→180 bottom to top beside it - so positive x and y
are right and up, as the ONVIF generic spaces require. The firmware mirrors both
angles when the picture is flipped (``FLIP``), so this holds for a ceiling mount too.
Degrees sent to the camera are always clamped to the motor range (the firmware
answers ``error`` to anything outside it).

* AbsoluteMove: the mapping above.
* RelativeMove: generic space - a translation of 2 is the whole range (``dx = 1`` is
  177.5° of pan); FOV space (``TranslationSpaceFov``) - ``(1, 1)`` brings the
  picture's upper right corner to its centre, i.e. ``dx * hfov / 2`` degrees of pan
  and ``dy * vfov / 2`` of tilt. Moves past the range stop at its border.
* ContinuousMove: absolute steps of ``step_period`` seconds each in the velocity's
  direction, at the camera speed its magnitude gives, one after the other until Stop,
  the timeout, or the border.
* Stop: ends stepping and interrupts the move in flight with a move to where the
  motor is (at the firmware's best priority); it is done when the camera answers that
  halt (the motor has stopped), so a SetPreset right after it finds the camera still.

Moves go through one serialising queue per camera (the camera refuses a second move
while one runs): at most one move of the relay runs, a newer move supersedes a queued
one, and a new ONVIF move interrupts a running one by sending itself at a better
priority (which makes the camera cancel the old one) - never two moves of the same
priority, so no client ever sees ``multiple request``. A busy answer caused by
something outside the relay is retried a few times.

Presets and the home position are saved per camera in ``state_dir``
(``ptz-<camera>.json``, written atomically, so a crash mid-write keeps the old file).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Protocol, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from atomrelay.camera.client import (
    CameraError,
    MotorPosition,
)
from atomrelay.camera.model import ModelFacts
from atomrelay.camera.moves import (
    GENERIC_SPACE,
    MOTOR_RATE,
    MoveOutcome,
    MoveQueue,
    MoveSink,
    clamp,
    generic_to_degrees,
    speed_index,
    translation_to_degrees,
)
from atomrelay.clock import Clock
from atomrelay.config import CameraConfig
from atomrelay.state import StateError, StateStore

DEFAULT_MAX_PRESETS = 32
MAX_PRESET_NAME = 64
"""``tt:Name`` is at most 64 characters."""



@dataclass(frozen=True)
class Preset:
    """A saved position: its token, its name and where it points (motor degrees)."""

    token: str
    name: str
    pan: float
    tilt: float


class PtzError(Exception):
    """A PTZ request that cannot be done; the subclass says why."""


class NotPtz(PtzError):
    """The camera has no motors (or its model is not known yet)."""


class NoSuchPreset(PtzError):
    """No preset has that token."""


class PresetNameTaken(PtzError):
    """Another preset already has that name."""


class InvalidPresetName(PtzError):
    """The name is too long or has control characters."""


class TooManyPresets(PtzError):
    """The maximum number of presets is reached."""


class PtzMoving(PtzError):
    """The camera is moving (a preset cannot be set now)."""


class NoHomePosition(PtzError):
    """No home position was set."""


class SaveFailed(PtzError):
    """The presets could not be saved; nothing changed."""


class FactsSource(Protocol):
    """The part of ``ModelRegistry`` the controller uses."""

    def facts(self, camera_id: str) -> ModelFacts | None: ...

    def fov(self, camera_id: str) -> tuple[float, float] | None: ...


@dataclass
class _Continuous:
    velocity: tuple[float, float]
    timer: Any = None


def preset_token(camera_id: str, number: int) -> str:
    """A preset's token: ``<camera>.preset<n>`` (numbers are never reused)."""
    return f"{camera_id}.preset{number}"


class PtzController:
    """The emulated PTZ unit of one camera: moves, status, presets and home.

    Move methods return once the move is queued (ONVIF moves are non-blocking) and
    give a Deferred that fires with its MoveOutcome; ``stop``, ``relative`` and the
    preset operations read the camera first and so are coroutines.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        camera: CameraConfig,
        client: MoveSink,
        models: FactsSource,
        store: StateStore,
        max_presets: int = DEFAULT_MAX_PRESETS,
        step_period: float = 0.5,
        motor_rate: float = MOTOR_RATE,
        timeout: float = 5.0,
        move_timeout: float = 120.0,
        stop_wait: float = 5.0,
    ) -> None:
        self._clock = clock
        self.camera = camera
        self.stop_wait = stop_wait
        """Longest wait of ``stop`` for the camera to answer its halt, seconds."""
        self._client = client
        self._models = models
        self._store = store
        self._saving = store.change_lock()
        """One preset or home change at a time, each checked against what the previous one saved."""
        self.max_presets = max_presets
        self.step_period = step_period
        self.motor_rate = motor_rate
        self._timeout = timeout
        self.queue = MoveQueue(clock, client, camera.id, move_timeout)
        self.queue.on_position.append(self._remember)
        self.position: MotorPosition | None = None
        """The last position the camera reported."""
        self._continuous: _Continuous | None = None
        self._state_name = f"ptz-{camera.id}"
        self._presets: list[Preset] = []
        self._home: tuple[float, float] | None = None
        self._next_number = 1
        self._load()

    # --- what the camera is -------------------------------------------------------------------

    @property
    def facts(self) -> ModelFacts | None:
        """The camera's model facts (None while unknown)."""
        return self._models.facts(self.camera.id)

    @property
    def ptz(self) -> bool:
        """Whether the camera has motors."""
        facts = self.facts
        return facts is not None and facts.ptz

    def _motor(self) -> ModelFacts:
        facts = self.facts
        if facts is None or not facts.ptz:
            raise NotPtz(f"camera {self.camera.id} has no pan/tilt motors")
        return facts

    @property
    def moving(self) -> bool:
        """Whether the relay is moving the camera (a move runs or waits, or a continuous move is on)."""
        return self.queue.busy or self._continuous is not None

    @property
    def last_error(self) -> str | None:
        """Why the last move failed, if it did."""
        return self.queue.last_error

    def _remember(self, position: MotorPosition) -> None:
        self.position = position

    async def read_position(self) -> MotorPosition:
        """Ask the camera where the motors are (MOTORPOS) and remember it."""
        position = await self._client.position(self._timeout)
        self.position = position
        return position

    async def _base(self) -> tuple[float, float]:
        """Where relative and continuous moves start: the newest queued target, else the motor now."""
        target = self.queue.target
        if target is not None:
            return target
        position = await self.read_position()
        return position.pan, position.tilt

    # --- moves --------------------------------------------------------------------------------

    def absolute(self, x: float, y: float, speed: float = 1.0) -> Deferred[MoveOutcome]:
        """AbsoluteMove to a generic position (x, y in [-1, 1]) at a generic speed."""
        facts = self._motor()
        pan, tilt = generic_to_degrees(x, y, facts)
        return self.move_to(pan, tilt, speed)

    def move_to(self, pan: float, tilt: float, speed: float = 1.0) -> Deferred[MoveOutcome]:
        """Move to motor degrees (clamped), ending any continuous move and interrupting a running move."""
        facts = self._motor()
        self._end_continuous()
        pan, tilt = clamp(pan, facts.pan_range), clamp(tilt, facts.tilt_range)
        return self.queue.submit(pan, tilt, speed_index(speed), interrupt=True)

    async def relative(self, dx: float, dy: float, space: str = GENERIC_SPACE, speed: float = 1.0) -> Deferred[MoveOutcome]:
        """RelativeMove by a translation in the generic or FOV space; stops at the range's border."""
        facts = self._motor()
        fov = self._models.fov(self.camera.id) or facts.fov
        dpan, dtilt = translation_to_degrees(dx, dy, space, facts, fov)
        self._end_continuous()
        pan, tilt = await self._base()
        return self.move_to(pan + dpan, tilt + dtilt, speed)

    def continuous(self, vx: float, vy: float, timeout: float) -> Deferred[None]:
        """ContinuousMove at a generic velocity for at most ``timeout`` seconds; a zero velocity stops.

        The Deferred fires when the stepping ends (Stop, timeout, border, failure).
        """
        self._motor()
        magnitude = max(abs(vx), abs(vy))
        if magnitude == 0:
            return Deferred.fromCoroutine(self.stop())
        self._end_continuous()
        run = self._continuous = _Continuous((vx, vy))
        run.timer = cast(Any, self._clock).callLater(timeout, self._expire, run)
        return Deferred.fromCoroutine(self._step(run))

    async def _step(self, run: _Continuous) -> None:
        facts = self._motor()
        vx, vy = run.velocity
        magnitude = max(abs(vx), abs(vy))
        speed = speed_index(magnitude)
        length = self.motor_rate * speed / 9 * self.step_period
        try:
            pan, tilt = await self._base()
            while self._continuous is run:
                target = (clamp(pan + vx / magnitude * length, facts.pan_range),
                          clamp(tilt + vy / magnitude * length, facts.tilt_range))
                if math.isclose(target[0], pan, abs_tol=0.01) and math.isclose(target[1], tilt, abs_tol=0.01):
                    break
                outcome = await self.queue.submit(target[0], target[1], speed)
                if outcome is not MoveOutcome.DONE:
                    break
                position = self.position
                pan, tilt = (position.pan, position.tilt) if position is not None else target
        except CameraError as exc:
            self.log.warn("camera {camera_id}: continuous move stopped: {error}", camera_id=self.camera.id, error=str(exc))
            self.queue.last_error = str(exc)
        finally:
            if self._continuous is run:
                self._end_continuous()

    def _expire(self, run: _Continuous) -> None:
        if self._continuous is run:
            run.timer = None
            self._end_continuous()

    def _end_continuous(self) -> None:
        run, self._continuous = self._continuous, None
        if run is not None and run.timer is not None and run.timer.active():
            run.timer.cancel()

    async def stop(self) -> None:
        """Stop: end stepping, forget the waiting move, halt the running one where the motor is.

        Returns once the camera answered the halt (its motor has stopped), so that a
        SetPreset right after it finds the camera still, or after ``stop_wait`` seconds.
        """
        self._end_continuous()
        self.queue.drop_pending()
        if not self.queue.running:
            return
        position = await self.read_position()
        halted = self.queue.halt(position.pan, position.tilt)
        if halted is not None and not await _within(cast(Clock, self._clock), halted, self.stop_wait):
            self.log.info("camera {camera_id} did not answer the halt within {wait:g}s; Stop answers anyway",
                          camera_id=self.camera.id, wait=self.stop_wait)

    def close(self) -> None:
        """End stepping and forget the waiting move (the relay is stopping)."""
        self._end_continuous()
        self.queue.drop_pending()

    # --- presets and home ------------------------------------------------------------------------

    def presets(self) -> list[Preset]:
        """The saved presets, oldest first."""
        return list(self._presets)

    def preset(self, token: str) -> Preset:
        """The preset with this token; NoSuchPreset otherwise."""
        for preset in self._presets:
            if preset.token == token:
                return preset
        raise NoSuchPreset(f"no preset {token!r}")

    async def set_preset(self, token: str | None = None, name: str | None = None) -> str:
        """SetPreset: save where the camera is now as a new preset, or into the preset ``token``."""
        async with self._saving:
            self._motor()
            existing = self.preset(token) if token is not None else None
            if name is not None:
                name = name.strip()
                _check_name(name)
            if existing is None and len(self._presets) >= self.max_presets:
                raise TooManyPresets(f"camera {self.camera.id} already has {self.max_presets} presets")
            if self.moving:
                raise PtzMoving("the camera is moving")
            position = await self.read_position()
            if position.idle is False or self.moving:
                raise PtzMoving("the camera is moving")
            number = self._next_number
            if existing is not None:
                new = Preset(existing.token, name or existing.name, position.pan, position.tilt)
            else:
                token = preset_token(self.camera.id, number)
                new = Preset(token, name or f"Preset {number}", position.pan, position.tilt)
                number += 1
            if any(p.name == new.name and p.token != new.token for p in self._presets):
                raise PresetNameTaken(f"a preset is already called {new.name!r}")
            presets = [new if p.token == new.token else p for p in self._presets]
            if existing is None:
                presets.append(new)
            await self._save(presets, self._home, number)
            return new.token

    async def remove_preset(self, token: str) -> None:
        """RemovePreset."""
        async with self._saving:
            self._motor()
            self.preset(token)
            await self._save([p for p in self._presets if p.token != token], self._home, self._next_number)

    def goto_preset(self, token: str, speed: float = 1.0) -> Deferred[MoveOutcome]:
        """GotoPreset."""
        self._motor()
        preset = self.preset(token)
        return self.move_to(preset.pan, preset.tilt, speed)

    @property
    def home(self) -> tuple[float, float] | None:
        """The home position (motor degrees), if one was set."""
        return self._home

    async def set_home(self) -> None:
        """SetHomePosition: remember where the camera is; also tell the camera (``posrec``), best effort."""
        async with self._saving:
            self._motor()
            position = await self.read_position()
            await self._save(self._presets, (position.pan, position.tilt), self._next_number)
        try:
            await self._client.command("posrec", self._timeout)
        except CameraError as exc:
            self.log.info("camera {camera_id} did not take posrec ({error}); the relay keeps the home position",
                          camera_id=self.camera.id, error=str(exc))

    def goto_home(self, speed: float = 1.0) -> Deferred[MoveOutcome]:
        """GotoHomePosition."""
        self._motor()
        if self._home is None:
            raise NoHomePosition(f"no home position was set for camera {self.camera.id}")
        return self.move_to(self._home[0], self._home[1], speed)

    # --- saved state -----------------------------------------------------------------------------

    def _load(self) -> None:
        saved = self._store.load(self._state_name, {})
        saved = saved if isinstance(saved, dict) else {}
        presets: list[Preset] = []
        for entry in saved.get("presets", []) if isinstance(saved.get("presets"), list) else []:
            try:
                preset = Preset(str(entry["token"]), str(entry["name"]), float(entry["pan"]), float(entry["tilt"]))
            except (KeyError, TypeError, ValueError):
                self.log.warn("camera {camera_id}: ignoring a damaged saved preset", camera_id=self.camera.id)
                continue
            if all(p.token != preset.token for p in presets):
                presets.append(preset)
        home = saved.get("home")
        if isinstance(home, dict) and all(isinstance(home.get(k), (int, float)) for k in ("pan", "tilt")):
            self._home = (float(home["pan"]), float(home["tilt"]))
        number = saved.get("next")
        # A hand-edited or damaged file may lack "next", or hold one below a token in use: never hand out a token
        # that names a preset already.
        prefix = preset_token(self.camera.id, 0)[:-1]
        used = [int(p.token[len(prefix):]) for p in presets
                if p.token.startswith(prefix) and re.fullmatch("[0-9]{1,9}", p.token[len(prefix):])]
        self._next_number = max([number if isinstance(number, int) and number > 0 else 1, *(n + 1 for n in used)])
        self._presets = presets

    async def _save(self, presets: list[Preset], home: tuple[float, float] | None, next_number: int) -> None:
        """Write first, then change what the relay serves: a failed write changes nothing."""
        document = {
            "presets": [{"token": p.token, "name": p.name, "pan": p.pan, "tilt": p.tilt} for p in presets],
            "home": {"pan": home[0], "tilt": home[1]} if home is not None else None,
            "next": next_number,
        }
        try:
            await self._store.commit(self._state_name, document, lambda: self._use(presets, home, next_number))
        except StateError as exc:
            self.log.error("camera {camera_id}: cannot save presets: {error}", camera_id=self.camera.id, error=str(exc))
            raise SaveFailed(str(exc)) from exc

    def _use(self, presets: list[Preset], home: tuple[float, float] | None, next_number: int) -> None:
        self._presets, self._home, self._next_number = presets, home, next_number


def _within(clock: Clock, work: Deferred[Any], seconds: float) -> Deferred[bool]:
    """Fires True when ``work`` fires (either way), False after ``seconds``; ``work`` is never cancelled."""
    waiter: Deferred[bool] = Deferred()

    def fire(done: bool) -> None:
        if not waiter.called:
            waiter.callback(done)

    call = clock.callLater(seconds, fire, False)

    def finished(result: object) -> object:
        if call.active():
            call.cancel()
        fire(True)
        return result

    work.addBoth(finished)
    return waiter


def _check_name(name: str) -> None:
    if len(name) > MAX_PRESET_NAME:
        raise InvalidPresetName(f"preset names are at most {MAX_PRESET_NAME} characters")
    if any(unicodedata.category(char).startswith("C") for char in name):
        raise InvalidPresetName("preset names cannot contain control characters")


class PtzControllers(Service):
    """The PTZ controllers of one generation, by camera id: stopping the service (a reload, SystemReboot, shutdown)
    ends their moves, so that no controller the NVR can no longer reach goes on stepping a camera."""

    def __init__(self, controllers: dict[str, PtzController]) -> None:
        self.controllers = controllers

    def stopService(self) -> None:
        """End every controller's stepping and forget its waiting moves."""
        super().stopService()  # type: ignore[no-untyped-call]
        for controller in self.controllers.values():
            controller.close()
