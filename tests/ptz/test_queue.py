"""The per-camera move queue against the simulated Swing: serialising, superseding, interrupting, retrying."""

from __future__ import annotations

import random
from typing import Any

import pytest

from atomrelay.camera.moves import MoveOutcome, MoveQueue
from atomrelay.sim.camera import MOVE_DISMISSED, MOVE_REJECTED
from tests.camera.support import SWING, Bench, camera_config


def setup(**options: Any) -> tuple[Bench, Any, MoveQueue]:
    bench = Bench()
    sim = bench.add(camera_config(model=SWING))
    return bench, sim, MoveQueue(bench.clock, bench.clients["swing"], "swing", **options)


def moves(sim: Any) -> list[str]:
    return [command for command in sim.commands if command.startswith("move ")]


def test_newer_move_supersedes_the_queued_one() -> None:
    """While one move runs, later moves wait in one slot: only the newest is sent."""
    bench, sim, queue = setup()
    outcomes = [queue.submit(pan, 90.0, 9) for pan in (300.0, 100.0, 50.0)]
    assert queue.busy and queue.target == (50.0, 90.0)
    results = [bench.wait(outcome) for outcome in outcomes]
    assert results == [MoveOutcome.DONE, MoveOutcome.SUPERSEDED, MoveOutcome.DONE]
    assert moves(sim) == ["move 300.00 90.00 9 2", "move 50.00 90.00 9 2"]
    assert sim.position() == (50.0, 90.0) and not queue.busy


def test_interrupting_move_goes_at_once_with_a_better_priority() -> None:
    """An interrupting move is sent at priority 1 while the running one is at 2; the camera cancels the old one."""
    bench, sim, queue = setup()
    first = queue.submit(355.0, 90.0, 9)
    bench.pump(1.0)
    second = queue.submit(100.0, 90.0, 9, interrupt=True)
    assert bench.wait(first) is MoveOutcome.SUPERSEDED
    assert bench.wait(second) is MoveOutcome.DONE
    assert moves(sim) == ["move 355.00 90.00 9 2", "move 100.00 90.00 9 1"]
    assert sim.position() == (100.0, 90.0)
    assert queue.busy_answers == 0 and queue.last_error is None


def test_a_running_interrupt_is_waited_for_not_interrupted() -> None:
    """Interrupting moves arriving while an interrupt runs queue up (newest wins), so no two priority-1 moves meet."""
    bench, sim, queue = setup()
    queue.submit(355.0, 90.0, 9)
    bench.pump(0.5)
    urgent = queue.submit(0.0, 90.0, 9, interrupt=True)
    bench.pump(0.5)
    late = [queue.submit(pan, 45.0, 9, interrupt=True) for pan in (10.0, 20.0, 30.0)]
    assert [bench.wait(d) for d in (urgent, *late)] == [MoveOutcome.DONE, MoveOutcome.SUPERSEDED,
                                                         MoveOutcome.SUPERSEDED, MoveOutcome.DONE]
    assert moves(sim)[-1] == "move 30.00 45.00 9 2"
    assert queue.busy_answers == 0


def test_halt_stops_the_running_move_where_it_is() -> None:
    """halt() interrupts at priority 0 with a move to the given position and drops the queued move."""
    bench, sim, queue = setup()
    running = queue.submit(355.0, 90.0, 9)
    waiting = queue.submit(0.0, 0.0, 9)
    bench.pump(1.0)
    here = sim.position()
    queue.halt(*here)
    assert bench.wait(waiting) is MoveOutcome.SUPERSEDED
    assert bench.wait(running) is MoveOutcome.SUPERSEDED
    bench.until(lambda: not queue.busy)
    assert sim.position() == pytest.approx(here) and moves(sim)[-1].endswith(" 9 0")


def test_busy_answers_from_outside_are_retried() -> None:
    """A move rejected because of a move outside the relay is retried after a delay and then succeeds."""
    bench, sim, queue = setup(busy_delay=0.5)
    sim.fail_next(2, MOVE_REJECTED)
    outcome = queue.submit(200.0, 100.0, 9)
    assert bench.wait(outcome) is MoveOutcome.DONE
    assert queue.busy_answers == 2 and len(moves(sim)) == 3
    assert sim.position() == (200.0, 100.0)


def test_failure_is_recorded_and_frees_the_queue() -> None:
    """After the retries a busy camera fails the move with the reason; the next move runs normally."""
    bench, sim, queue = setup(busy_retries=1)
    sim.fail_next(2, MOVE_DISMISSED)
    assert bench.wait(queue.submit(200.0, 100.0, 9)) is MoveOutcome.FAILED
    assert queue.last_error == "camera answered 'error : dismiss request.'"
    assert bench.wait(queue.submit(210.0, 100.0, 9)) is MoveOutcome.DONE
    assert queue.last_error is None


def test_unreachable_camera_fails_the_move() -> None:
    """A camera that does not answer fails the move after the move timeout and frees the queue."""
    bench, sim, queue = setup(move_timeout=3.0)
    sim.set_offline(True)
    outcome = queue.submit(10.0, 10.0, 9)
    assert bench.wait(outcome) is MoveOutcome.FAILED
    assert "did not answer within 3s" in (queue.last_error or "")
    assert not queue.busy


@pytest.mark.parametrize("seed", range(5))
def test_bursts_of_moves_never_meet_a_busy_camera(seed: int) -> None:
    """Random bursts of queued and interrupting moves never draw a `multiple request` and end at the last target."""
    bench, sim, queue = setup()
    rng = random.Random(seed)
    last = None
    for _ in range(40):
        last = (rng.uniform(0, 355), rng.uniform(0, 180))
        queue.submit(*last, rng.randint(1, 9), interrupt=rng.random() < 0.6)
        bench.pump(rng.uniform(0, 0.8))
    bench.until(lambda: not queue.busy)
    assert queue.busy_answers == 0
    assert sim.position() == pytest.approx((round(last[0], 2), round(last[1], 2)), abs=0.01)
