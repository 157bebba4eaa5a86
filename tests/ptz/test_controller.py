"""The PTZ emulation of one camera: moves on the Clock, presets and home, saved state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from atomrelay.camera.model import ModelRegistry
from atomrelay.camera.moves import FOV_SPACE, MoveOutcome
from atomrelay.camera.ptz import (
    InvalidPresetName,
    NoHomePosition,
    NoSuchPreset,
    NotPtz,
    PresetNameTaken,
    PtzController,
    PtzControllers,
    PtzMoving,
    SaveFailed,
    TooManyPresets,
)
from atomrelay.state import StateError, StateStore
from tests.camera.support import CAM2, SWING, Bench, camera_config
from tests.helpers import ROOT, settled


def rig(tmp_path: Path, **options: Any) -> tuple[Bench, Any, PtzController]:
    bench = Bench()
    camera = camera_config(model=SWING, fov=(100.0, 60.0))
    sim = bench.add(camera)
    store = StateStore(tmp_path)
    models = ModelRegistry(bench.clock, [camera], bench.clients, store)
    return bench, sim, PtzController(bench.clock, camera, bench.clients["swing"], models, store, **options)


def idle(bench: Bench, ptz: PtzController) -> float:
    return bench.until(lambda: not ptz.moving)


def test_absolute_move_follows_the_mapping(tmp_path: Path) -> None:
    """AbsoluteMove(0.5, -0.5) puts the simulated motor at pan 266.25°, tilt 45°."""
    bench, sim, ptz = rig(tmp_path)
    assert bench.wait(ptz.absolute(0.5, -0.5)) is MoveOutcome.DONE
    assert sim.position() == (266.25, 45.0)
    assert ptz.position is not None and (ptz.position.pan, ptz.position.tilt) == (266.25, 45.0)


def test_absolute_speed_reaches_the_camera(tmp_path: Path) -> None:
    """A generic speed of 0.5 is sent as camera speed 5."""
    bench, sim, ptz = rig(tmp_path)
    bench.wait(ptz.absolute(0.0, 1.0, speed=0.5))
    assert sim.commands[-1] == "move 177.50 180.00 5 2"


def test_relative_generic_and_fov(tmp_path: Path) -> None:
    """Generic dx 0.1 is 17.75° of pan; FOV (1, -1) is half the configured 100°x60° field of view."""
    bench, sim, ptz = rig(tmp_path)
    bench.wait(bench.wait(ptz.relative(0.1, 0.0)))
    assert sim.position() == (197.75, 90.0)
    bench.wait(bench.wait(ptz.relative(1.0, -1.0, FOV_SPACE)))
    assert sim.position() == (247.75, 60.0)


def test_relative_stops_at_the_border(tmp_path: Path) -> None:
    """A translation past the range moves to the border."""
    bench, sim, ptz = rig(tmp_path)
    bench.wait(bench.wait(ptz.relative(1.0, 1.0)))
    assert sim.position() == (355.0, 180.0)


def test_relative_moves_chain_from_the_queued_target(tmp_path: Path) -> None:
    """Relative moves sent while moving add up from where the previous one is going."""
    bench, sim, ptz = rig(tmp_path)
    first = bench.wait(ptz.relative(-0.2, 0.0))
    second = bench.wait(ptz.relative(-0.2, 0.0))
    bench.wait(first)
    bench.wait(second)
    assert sim.position() == pytest.approx((180.0 - 71.0, 90.0))


def test_continuous_move_steps_until_the_timeout(tmp_path: Path) -> None:
    """ContinuousMove at full speed pans right ~60°/s and stops by itself when its timeout ends."""
    bench, sim, ptz = rig(tmp_path)
    ptz.continuous(1.0, 0.0, timeout=2.0)
    bench.pump(1.0)
    assert ptz.moving and 200.0 <= sim.position()[0] <= 245.0
    took = idle(bench, ptz)
    assert bench.clock.seconds() - 1_700_000_000.0 <= 2.0 + ptz.step_period + 0.1
    assert took > 0 and 290.0 <= sim.position()[0] <= 302.0 and sim.position()[1] == 90.0
    commands = [c for c in sim.commands if c.startswith("move ")]
    assert all(c.endswith(" 9 2") for c in commands) and len(commands) >= 4


def test_continuous_speed_and_direction(tmp_path: Path) -> None:
    """Velocity (-0.5, 0.5) moves left and up at camera speed 5, both axes equally."""
    bench, sim, ptz = rig(tmp_path)
    ptz.continuous(-0.5, 0.5, timeout=1.0)
    idle(bench, ptz)
    pan, tilt = sim.position()
    assert pan < 180.0 and tilt > 90.0 and pytest.approx(180.0 - pan) == tilt - 90.0
    assert all(c.endswith(" 5 2") for c in sim.commands if c.startswith("move "))


def test_continuous_ends_at_the_border(tmp_path: Path) -> None:
    """Stepping stops once the motor reaches the end of its range, well before the timeout."""
    bench, sim, ptz = rig(tmp_path)
    ptz.continuous(0.0, 1.0, timeout=60.0)
    took = idle(bench, ptz)
    assert sim.position() == (180.0, 180.0) and took < 5.0


def test_stop_halts_a_continuous_move_at_once(tmp_path: Path) -> None:
    """Stop during ContinuousMove halts the motor where it is, with no further steps."""
    bench, sim, ptz = rig(tmp_path)
    ptz.continuous(1.0, 0.0, timeout=10.0)
    bench.pump(1.2)
    bench.wait(ptz.stop())
    stopped_at = sim.position()
    bench.pump(2.0)
    assert not ptz.moving and sim.position() == pytest.approx(stopped_at, abs=0.5)
    assert 240.0 <= stopped_at[0] <= 260.0


def test_stopping_the_controllers_service_ends_a_continuous_move(tmp_path: Path) -> None:
    """When a generation's PtzControllers stop (reload, SystemReboot, shutdown), a continuous move sends no more
    steps to the camera."""
    bench, sim, ptz = rig(tmp_path)
    service = PtzControllers({"swing": ptz})
    service.startService()
    ptz.continuous(1.0, 0.0, timeout=10.0)
    bench.pump(1.2)
    service.stopService()
    bench.pump(0.6)  # the step in flight, if any, is answered
    sent = len([c for c in sim.commands if c.startswith("move ")])
    bench.pump(5.0)
    assert len([c for c in sim.commands if c.startswith("move ")]) == sent and not ptz.moving


def test_stop_interrupts_a_long_absolute_move(tmp_path: Path) -> None:
    """Stop during a long AbsoluteMove leaves the motor part way."""
    bench, sim, ptz = rig(tmp_path)
    moving = ptz.absolute(-1.0, 0.0, speed=0.0)  # speed 1: 180° at 6.7°/s
    bench.pump(3.0)
    bench.wait(ptz.stop())
    assert bench.wait(moving) is MoveOutcome.SUPERSEDED
    bench.pump(1.0)
    assert 150.0 < sim.position()[0] < 165.0 and not ptz.moving


def test_zero_velocity_is_stop(tmp_path: Path) -> None:
    """ContinuousMove with a zero velocity stops a continuous move."""
    bench, sim, ptz = rig(tmp_path)
    ptz.continuous(1.0, 0.0, timeout=10.0)
    bench.pump(1.0)
    bench.wait(ptz.continuous(0.0, 0.0, timeout=10.0))
    bench.pump(1.0)
    assert not ptz.moving


def test_presets_and_home_survive_a_restart(tmp_path: Path) -> None:
    """Presets and the home position are saved and come back in a new controller on the same state_dir."""
    bench, sim, ptz = rig(tmp_path)
    bench.wait(ptz.absolute(0.5, 0.5))
    door = bench.wait(ptz.set_preset(name="Door"))
    bench.wait(ptz.absolute(-0.5, -0.5))
    gate = bench.wait(ptz.set_preset())
    bench.wait(ptz.set_home())
    assert "posrec" in sim.commands and sim.home == (88.75, 45.0)
    assert (door, gate) == ("swing.preset1", "swing.preset2")
    settled(ptz.remove_preset(door))
    third = bench.wait(ptz.set_preset(name="Yard"))
    assert third == "swing.preset3"  # tokens are never reused
    _, sim2, again = rig(tmp_path)
    assert [(p.token, p.name, p.pan, p.tilt) for p in again.presets()] == [
        ("swing.preset2", "Preset 2", 88.75, 45.0), ("swing.preset3", "Yard", 88.75, 45.0)
    ]
    assert again.home == (88.75, 45.0)


@pytest.mark.parametrize("next_number", [None, 1, "3", 2])
def test_a_saved_file_without_a_usable_next_number_never_reuses_a_token(tmp_path: Path, next_number: Any) -> None:
    """A presets file edited by hand (its "next" missing, wrong or too low): the next preset gets a number after
    every token in use, so no preset is overwritten and no token is listed twice."""
    import json

    saved: dict[str, Any] = {"presets": [
        {"token": "swing.preset1", "name": "Door", "pan": 0.0, "tilt": 0.0},
        {"token": "swing.preset3", "name": "Garden", "pan": 10.0, "tilt": 0.0},
    ], "home": None}
    if next_number is not None:
        saved["next"] = next_number
    (tmp_path / "ptz-swing.json").write_text(json.dumps(saved))
    saved["presets"] += [{"token": "swing.preset²", "name": "Odd", "pan": 0.0, "tilt": 0.0},
                         {"token": "swing.preset" + "9" * 5000, "name": "Long", "pan": 0.0, "tilt": 0.0}]
    (tmp_path / "ptz-swing.json").write_text(json.dumps(saved))
    bench, _, ptz = rig(tmp_path)
    token = bench.wait(ptz.set_preset(name="Gate"))
    assert token == "swing.preset4"
    assert [(p.token, p.name) for p in ptz.presets()][-1] == ("swing.preset4", "Gate")
    assert [p.token for p in ptz.presets()][:2] == ["swing.preset1", "swing.preset3"]


def test_goto_preset_and_home(tmp_path: Path) -> None:
    """GotoPreset and GotoHomePosition move the simulated motor to the saved positions."""
    bench, sim, ptz = rig(tmp_path)
    with pytest.raises(NoHomePosition):
        ptz.goto_home()
    bench.wait(ptz.absolute(1.0, 1.0))
    token = bench.wait(ptz.set_preset(name="Far"))
    bench.wait(ptz.set_home())
    bench.wait(ptz.absolute(-1.0, -1.0))
    bench.wait(ptz.goto_preset(token))
    assert sim.position() == (355.0, 180.0)
    bench.wait(ptz.absolute(0.0, 0.0))
    bench.wait(ptz.goto_home(speed=1.0))
    assert sim.position() == (355.0, 180.0)


def test_preset_rules(tmp_path: Path) -> None:
    """Unknown tokens, duplicate or bad names, too many presets and a moving camera are refused."""
    bench, sim, ptz = rig(tmp_path, max_presets=2)
    a = bench.wait(ptz.set_preset(name="A"))
    with pytest.raises(PresetNameTaken):
        bench.wait(ptz.set_preset(name="A"))
    with pytest.raises(InvalidPresetName):
        bench.wait(ptz.set_preset(name="x" * 65))
    with pytest.raises(InvalidPresetName):
        bench.wait(ptz.set_preset(name="bell\x07"))
    with pytest.raises(NoSuchPreset):
        bench.wait(ptz.set_preset(token="swing.preset99"))
    bench.wait(ptz.set_preset(name="B"))
    with pytest.raises(TooManyPresets):
        bench.wait(ptz.set_preset(name="C"))
    assert bench.wait(ptz.set_preset(token=a, name="A2")) == a  # updating needs no free slot
    ptz.absolute(1.0, 0.0)
    with pytest.raises(PtzMoving):
        bench.wait(ptz.set_preset(token=a))
    with pytest.raises(NoSuchPreset):
        settled(ptz.remove_preset("nope"))


def test_failed_save_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the state cannot be written the preset is not created, in memory or on disk."""
    bench, sim, ptz = rig(tmp_path)
    bench.wait(ptz.set_preset(name="Kept"))

    def refuse(name: str, document: Any) -> None:
        raise StateError("disk full")

    monkeypatch.setattr(StateStore, "save", lambda self, name, document: refuse(name, document))
    with pytest.raises(SaveFailed):
        bench.wait(ptz.set_preset(name="Lost"))
    assert [p.name for p in ptz.presets()] == ["Kept"]


CRASH = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from atomrelay.state import StateStore

    mode, directory = sys.argv[1], Path(sys.argv[2])
    real_fdopen = os.fdopen

    class Torn:
        def __init__(self, handle):
            self.handle = handle
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return False
        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            os._exit(9)  # the power goes out half way through the new file

    if mode == "mid-write":
        os.fdopen = lambda fd, *a, **k: Torn(real_fdopen(fd, *a, **k))
    else:
        os.replace = lambda *a, **k: os._exit(9)  # the new file is complete but never renamed
    document = {"presets": [{"token": "swing.preset9", "name": "New", "pan": 1.0, "tilt": 2.0}], "home": None, "next": 10}
    StateStore(directory).save("ptz-swing", document)
    """
)


@pytest.mark.parametrize("mode", ["mid-write", "before-rename"])
def test_crash_while_saving_keeps_the_old_presets(tmp_path: Path, mode: str) -> None:
    """A process killed while writing presets leaves the previous file intact and readable."""
    bench, sim, ptz = rig(tmp_path)
    bench.wait(ptz.set_preset(name="Old"))
    before = (tmp_path / "ptz-swing.json").read_bytes()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    crashed = subprocess.run([sys.executable, "-c", CRASH, mode, str(tmp_path)], env=env, timeout=60)
    assert crashed.returncode == 9
    assert (tmp_path / "ptz-swing.json").read_bytes() == before
    assert any(p.name.startswith(".ptz-swing.") for p in tmp_path.iterdir())  # the torn temp file
    assert json.loads(before)["presets"][0]["name"] == "Old"
    _, _, restarted = rig(tmp_path)
    assert [p.name for p in restarted.presets()] == ["Old"]


def test_camera_without_motors(tmp_path: Path) -> None:
    """A fixed camera's controller refuses every move."""
    bench = Bench()
    camera = camera_config("cam2", model=CAM2)
    bench.add(camera, CAM2)
    store = StateStore(tmp_path)
    ptz = PtzController(bench.clock, camera, bench.clients["cam2"], ModelRegistry(bench.clock, [camera], {}, store), store)
    assert not ptz.ptz
    with pytest.raises(NotPtz):
        ptz.absolute(0, 0)
    with pytest.raises(NotPtz):
        bench.wait(ptz.set_preset())


class SlowHalt:
    """The simulated Swing's client, except that a halt is answered ``delay`` seconds late (a motor slowing down)."""

    def __init__(self, client: Any, clock: Any, delay: float) -> None:
        self._client = client
        self._clock = clock
        self.delay = delay

    def move(self, pan: float, tilt: float, speed: int = 9, priority: int = 2, timeout: float | None = None) -> Any:
        async def later() -> Any:
            position = await self._client.move(pan, tilt, speed, priority, timeout)
            if priority == 0:
                await deferLater(self._clock, self.delay, lambda: None)
            return position

        return Deferred.fromCoroutine(later())

    def position(self, timeout: float | None = None) -> Any:
        return self._client.position(timeout)

    def command(self, command: str, timeout: float | None = None) -> Any:
        return self._client.command(command, timeout)


def slow_halt_rig(tmp_path: Path, delay: float) -> tuple[Bench, PtzController]:
    bench = Bench()
    camera = camera_config(model=SWING)
    bench.add(camera)
    client = SlowHalt(bench.clients["swing"], bench.clock, delay)
    models = ModelRegistry(bench.clock, [camera], bench.clients, StateStore(tmp_path))
    return bench, PtzController(bench.clock, camera, client, models, StateStore(tmp_path))


def test_stop_returns_when_the_camera_has_stopped_so_a_preset_can_be_set(tmp_path: Path) -> None:
    """Stop during ContinuousMove answers once the camera answered the halt (0.5 s later), and SetPreset right
    after it succeeds."""
    bench, ptz = slow_halt_rig(tmp_path, delay=0.5)
    ptz.continuous(1.0, 0.0, timeout=10.0)
    bench.pump(1.2)
    start = bench.clock.seconds()
    bench.wait(ptz.stop(), step=0.01)
    assert bench.clock.seconds() - start == pytest.approx(0.5, abs=0.05)
    assert not ptz.moving
    token = bench.wait(ptz.set_preset(name="Stopped"), limit=0.1)
    assert [p.token for p in ptz.presets()] == [token]


def test_stop_waits_for_the_halt_at_most_stop_wait(tmp_path: Path) -> None:
    """A camera slow to answer the halt holds Stop for ``stop_wait`` seconds, not longer."""
    bench, ptz = slow_halt_rig(tmp_path, delay=60.0)
    ptz.continuous(1.0, 0.0, timeout=10.0)
    bench.pump(1.2)
    start = bench.clock.seconds()
    bench.wait(ptz.stop(), step=0.01)
    assert bench.clock.seconds() - start == pytest.approx(ptz.stop_wait, abs=0.05)
    assert ptz.moving
