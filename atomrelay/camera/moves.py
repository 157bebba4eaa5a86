"""The motor of a pan/tilt camera: ONVIF coordinates in degrees, and one serialising queue of moves.

The firmware knows one move: ``move <pan> <tilt> <speed 1-9> <priority 0-3>`` to an
absolute position in degrees, answered when the motor has stopped (see ``camera.ptz``
for the coordinate spaces). Moves go through one queue per camera (the camera refuses
a second move while one runs): at most one move of the relay runs, a newer move
supersedes a queued one, and a new move interrupts a running one by sending itself at a
better priority (which makes the camera cancel the old one) - never two moves of the
same priority. A busy answer caused by something outside the relay is retried a few
times.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from atomrelay.camera.client import CameraBusy, CameraCanceled, CameraCommandError, CameraError, MotorPosition
from atomrelay.camera.model import ModelFacts

FOV_SPACE = "fov"
GENERIC_SPACE = "generic"

NORMAL, URGENT, HALT = 2, 1, 0
"""Firmware move priorities (lower wins): queued moves and continuous steps, ONVIF moves that interrupt, Stop."""

MOTOR_RATE = 60.0
"""Assumed pan/tilt rate at camera speed 9, degrees per second. Only the length of a
continuous-move step depends on it; how fast the motor turns is the camera's speed."""

# --- coordinates ----------------------------------------------------------------------------


def clamp(value: float, limits: tuple[float, float]) -> float:
    """``value`` within ``limits`` (low, high)."""
    return min(max(value, limits[0]), limits[1])


def generic_to_degrees(x: float, y: float, facts: ModelFacts) -> tuple[float, float]:
    """Generic position ([-1, 1]²) → motor degrees, clamped to the motor range."""
    (p0, p1), (t0, t1) = facts.pan_range, facts.tilt_range
    return clamp(p0 + (x + 1) / 2 * (p1 - p0), facts.pan_range), clamp(t0 + (y + 1) / 2 * (t1 - t0), facts.tilt_range)


def degrees_to_generic(pan: float, tilt: float, facts: ModelFacts) -> tuple[float, float]:
    """Motor degrees → generic position in [-1, 1]²."""
    (p0, p1), (t0, t1) = facts.pan_range, facts.tilt_range
    x = (pan - p0) / (p1 - p0) * 2 - 1 if p1 > p0 else 0.0
    y = (tilt - t0) / (t1 - t0) * 2 - 1 if t1 > t0 else 0.0
    return clamp(x, (-1.0, 1.0)), clamp(y, (-1.0, 1.0))


def translation_to_degrees(
    dx: float, dy: float, space: str, facts: ModelFacts, fov: tuple[float, float]
) -> tuple[float, float]:
    """A relative translation in the generic or FOV space → (pan, tilt) degrees to add."""
    if space == FOV_SPACE:
        return dx * fov[0] / 2, dy * fov[1] / 2
    return dx * (facts.pan_range[1] - facts.pan_range[0]) / 2, dy * (facts.tilt_range[1] - facts.tilt_range[0]) / 2


def speed_index(speed: float) -> int:
    """A generic speed in [0, 1] → the camera's speed 1 (slowest) to 9 (fastest)."""
    return int(min(9, max(1, 1 + round(clamp(speed, (0.0, 1.0)) * 8))))


# --- the move queue -----------------------------------------------------------------------------


class MoveOutcome(enum.Enum):
    """How a queued move ended."""

    DONE = "done"
    """The motor reached the target."""
    SUPERSEDED = "superseded"
    """A newer move of the relay replaced it (queued) or interrupted it (running)."""
    CANCELED = "canceled"
    """Something outside the relay interrupted it."""
    FAILED = "failed"
    """The camera refused it or did not answer; ``MoveQueue.last_error`` says why."""


class MoveSink(Protocol):
    """The part of ``CameraClient`` that moves motors."""

    def move(self, pan: float, tilt: float, speed: int = 9, priority: int = 2,
             timeout: float | None = None) -> Awaitable[MotorPosition]: ...

    def position(self, timeout: float | None = None) -> Awaitable[MotorPosition]: ...

    def command(self, command: str, timeout: float | None = None) -> Awaitable[str]: ...


@dataclass(eq=False)
class _Move:
    pan: float
    tilt: float
    speed: int
    done: Deferred[MoveOutcome] = field(default_factory=Deferred)
    priority: int = NORMAL
    superseded: bool = False


class MoveQueue:
    """Serialises one camera's moves: one running, at most one waiting (the newest)."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        client: MoveSink,
        camera_id: str,
        move_timeout: float = 120.0,
        busy_retries: int = 3,
        busy_delay: float = 0.5,
    ) -> None:
        self._clock = clock
        self._client = client
        self._camera_id = camera_id
        self._move_timeout = move_timeout
        self._busy_retries = busy_retries
        self._busy_delay = busy_delay
        self._current: _Move | None = None
        self._pending: _Move | None = None
        self._interrupted: list[_Move] = []
        self.last_error: str | None = None
        """Why the last move that ended failed (None after a successful one)."""
        self.on_position: list[Callable[[MotorPosition], None]] = []
        self.busy_answers = 0
        """How many busy (``multiple request``/``dismiss request``) answers moves of the queue got."""
        self.sent = 0
        """How many move commands the queue sent."""

    @property
    def busy(self) -> bool:
        """Whether a move runs or waits."""
        return self._current is not None or self._pending is not None

    @property
    def running(self) -> bool:
        """Whether a move runs."""
        return self._current is not None

    @property
    def target(self) -> tuple[float, float] | None:
        """Where the newest move goes (the waiting one, else the running one), or None when idle."""
        move = self._pending or self._current
        return (move.pan, move.tilt) if move is not None else None

    def submit(self, pan: float, tilt: float, speed: int, interrupt: bool = False) -> Deferred[MoveOutcome]:
        """Queue a move; with ``interrupt``, a running queued move (normal priority) is interrupted instead of waited for."""
        move = _Move(pan, tilt, speed)
        current = self._current
        if current is None:
            self._start(move, NORMAL)
        elif interrupt and current.priority == NORMAL:
            self._drop_pending()
            self._interrupt(current, move, URGENT)
        else:
            self._drop_pending()
            self._pending = move
        return move.done

    def halt(self, pan: float, tilt: float) -> Deferred[MoveOutcome] | None:
        """Stop the running move where the motor is (``pan``, ``tilt``), unless it is itself a halt.

        Returns the halt's Deferred (the camera answers a move when the motor has stopped),
        None when no move runs.
        """
        self._drop_pending()
        running = self._current
        if running is None:
            return None
        if running.priority == HALT:
            return running.done
        halt = _Move(pan, tilt, 9)
        self._interrupt(running, halt, HALT)
        return halt.done

    def drop_pending(self) -> None:
        """Forget the waiting move (it ends SUPERSEDED)."""
        self._drop_pending()

    def _drop_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.superseded = True
            pending.done.callback(MoveOutcome.SUPERSEDED)

    def _interrupt(self, current: _Move, move: _Move, priority: int) -> None:
        current.superseded = True
        self._interrupted.append(current)
        self._start(move, priority)

    def _start(self, move: _Move, priority: int) -> None:
        move.priority = priority
        self._current = move
        Deferred.fromCoroutine(self._run(move))

    async def _run(self, move: _Move) -> None:
        outcome = MoveOutcome.FAILED
        attempts = 0
        while True:
            try:
                self.sent += 1
                position = await self._client.move(move.pan, move.tilt, move.speed, move.priority, self._move_timeout)
            except CameraBusy as exc:
                self.busy_answers += 1
                if move.superseded or self._pending is not None:
                    outcome = MoveOutcome.SUPERSEDED
                elif attempts < self._busy_retries:
                    attempts += 1
                    self.log.info("camera {camera_id} busy with another move ({reply}); retrying",
                                  camera_id=self._camera_id, reply=exc.reply)
                    await deferLater(cast(Any, self._clock), self._busy_delay, lambda: None)
                    if not move.superseded:
                        continue
                    outcome = MoveOutcome.SUPERSEDED
                else:
                    outcome = self._failed(move, exc)
            except CameraCanceled:
                outcome = MoveOutcome.SUPERSEDED if move.superseded else self._canceled()
            except CameraCommandError as exc:
                # Some firmware builds answer a plain "error" to the move they interrupt.
                outcome = MoveOutcome.SUPERSEDED if move.superseded else self._failed(move, exc)
            except CameraError as exc:
                outcome = MoveOutcome.SUPERSEDED if move.superseded else self._failed(move, exc)
            except CancelledError:
                outcome = MoveOutcome.SUPERSEDED
            except Exception as exc:  # noqa: BLE001 - a move must always end and free the queue
                self.log.failure("move of camera {camera_id} crashed", camera_id=self._camera_id)
                outcome = self._failed(move, exc)
            else:
                outcome = MoveOutcome.DONE
                if not move.superseded:
                    self.last_error = None
                self._report(position)
            break
        self._finish(move, outcome)

    def _failed(self, move: _Move, exc: BaseException) -> MoveOutcome:
        self.last_error = str(exc) or type(exc).__name__
        self.log.warn("camera {camera_id}: move to {pan:.1f} {tilt:.1f} failed: {error}",
                      camera_id=self._camera_id, pan=move.pan, tilt=move.tilt, error=self.last_error)
        return MoveOutcome.FAILED

    def _canceled(self) -> MoveOutcome:
        self.log.info("camera {camera_id}: a move outside the relay interrupted ours", camera_id=self._camera_id)
        return MoveOutcome.CANCELED

    def _report(self, position: MotorPosition) -> None:
        for callback in self.on_position:
            callback(position)

    def _finish(self, move: _Move, outcome: MoveOutcome) -> None:
        if self._current is move:
            self._current = None
            pending, self._pending = self._pending, None
            if pending is not None:
                self._start(pending, NORMAL)
        elif move in self._interrupted:
            self._interrupted.remove(move)
        move.done.callback(outcome)


# --- presets ----------------------------------------------------------------------------------
