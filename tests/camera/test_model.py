"""Camera model detection: hack_ini.cgi, the saved copy in state_dir, retries and per-model facts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from atomrelay.camera.model import MODELS, STATE_NAME, ModelFacts, ModelRegistry, facts_for
from atomrelay.sim.camera import MODELS as SIM_MODELS
from atomrelay.sim.camera import PAN_RANGE, SECRET_VALUES, TILT_RANGE
from atomrelay.state import StateStore
from tests.camera.support import CAM2, SWING, Bench, camera_config


class Counting:
    """A CameraClient that counts hack_ini.cgi reads."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.reads = 0

    def hardware(self, timeout: float | None = None) -> Any:
        self.reads += 1
        return self.client.hardware(timeout)


def registry(bench: Bench, store: StateStore, retry: float = 30.0, clients: Any = None) -> ModelRegistry:
    return ModelRegistry(bench.clock, list(bench.cameras.values()), clients or bench.clients, store,
                         retry_interval=retry)


def test_every_firmware_model_has_facts_matching_the_simulator() -> None:
    """The model table knows every PRODUCT_MODEL, only the Swing has motors, with the documented ranges."""
    assert set(MODELS) == set(SIM_MODELS)
    for name, facts in MODELS.items():
        assert facts.ptz == SIM_MODELS[name].ptz
        assert 30 < facts.fov[0] < 180 and 20 < facts.fov[1] < facts.fov[0]
    swing = MODELS[SWING]
    assert (swing.pan_range, swing.tilt_range) == (PAN_RANGE, TILT_RANGE)


def test_unknown_product_model_is_a_fixed_camera() -> None:
    """A PRODUCT_MODEL the relay has never heard of gets no PTZ rather than a guess."""
    facts = facts_for("FUTURE_CAM9")
    assert facts.product_model == "FUTURE_CAM9" and not facts.ptz


def test_auto_model_is_read_saved_and_never_leaks_secrets(tmp_path: Path) -> None:
    """model: auto reads PRODUCT_MODEL and HWADDR, saves exactly those, and knows the Swing has PTZ."""
    bench = Bench()
    bench.add(camera_config("swing"), SWING, hwaddr="02:00:00:00:00:07")
    bench.add(camera_config("cam2"), CAM2)
    store = StateStore(tmp_path)
    models = registry(bench, store)
    assert models.facts("swing") is None and not models.ptz("swing")
    models.startService()
    bench.pump()
    assert models.ptz("swing") and not models.ptz("cam2")
    assert models.hardware("swing").hwaddr == "02:00:00:00:00:07"
    saved = (tmp_path / f"{STATE_NAME}.json").read_text()
    assert not any(secret in saved for secret in SECRET_VALUES)
    assert store.load(STATE_NAME, {})["swing"] == {"product_model": SWING, "hwaddr": "02:00:00:00:00:07"}
    bench.wait(models.stopService())


def test_offline_camera_keeps_its_saved_model(tmp_path: Path) -> None:
    """A camera offline at start keeps the PTZ ability saved by an earlier run."""
    store = StateStore(tmp_path)
    store.save(STATE_NAME, {"swing": {"product_model": SWING, "hwaddr": "02:00:00:00:00:09"}})
    bench = Bench()
    bench.add(camera_config("swing"), SWING).set_offline(True, mode="refuse")
    models = registry(bench, store)
    models.startService()
    bench.pump(1)
    assert models.ptz("swing")
    assert models.hardware("swing").hwaddr == "02:00:00:00:00:09"
    assert models.pending == ["swing"]
    bench.wait(models.stopService())


def test_unknown_model_is_retried_until_the_camera_answers(tmp_path: Path) -> None:
    """While a camera has never answered, hack_ini.cgi is asked again every retry interval, then no more."""
    bench = Bench()
    sim = bench.add(camera_config("swing"), SWING)
    sim.set_offline(True, mode="refuse")
    counting = Counting(bench.clients["swing"])
    models = registry(bench, StateStore(tmp_path), retry=10.0, clients={"swing": counting})
    changes: list[tuple[str, Any]] = []
    models.on_change.append(lambda camera_id, facts: changes.append((camera_id, facts)))
    models.startService()
    bench.pump(25)
    assert models.facts("swing") is None and changes == []
    assert counting.reads == 3  # at 0, 10 and 20 s
    sim.set_offline(False)
    bench.pump(10)
    assert models.ptz("swing")
    assert changes == [("swing", MODELS[SWING])]
    assert counting.reads == 4
    bench.pump(60)
    assert models.pending == [] and counting.reads == 4
    bench.wait(models.stopService())


def test_replaced_camera_changes_model_and_notifies(tmp_path: Path) -> None:
    """A saved model is checked once per run; a different camera at the address updates it and tells listeners."""
    store = StateStore(tmp_path)
    store.save(STATE_NAME, {"swing": {"product_model": SWING, "hwaddr": "02:00:00:00:00:01"}})
    bench = Bench()
    bench.add(camera_config("swing"), CAM2, hwaddr="02:00:00:00:00:02")
    models = registry(bench, store)
    changes: list[tuple[str, ModelFacts | None]] = []
    models.on_change.append(lambda camera_id, facts: changes.append((camera_id, facts)))
    models.on_change.insert(0, lambda camera_id, facts: 1 / 0)
    assert models.ptz("swing")
    models.startService()
    bench.pump()
    assert not models.ptz("swing")
    assert changes == [("swing", MODELS[CAM2])]
    assert store.load(STATE_NAME, {})["swing"]["hwaddr"] == "02:00:00:00:00:02"


def test_configured_model_needs_no_camera(tmp_path: Path) -> None:
    """A configured model is used as is and hack_ini.cgi is never read for it."""
    bench = Bench()
    sim = bench.add(camera_config("swing", model=SWING), SWING)
    sim.set_offline(True)
    models = registry(bench, StateStore(tmp_path))
    models.startService()
    bench.pump(5)
    assert models.ptz("swing") and sim.held_requests == 0


@pytest.mark.parametrize("fov, expected", [(None, MODELS[SWING].fov), ((90.0, 50.0), (90.0, 50.0))])
def test_fov_defaults_per_model_and_config_overrides(
    tmp_path: Path, fov: tuple[float, float] | None, expected: tuple[float, float]
) -> None:
    """cameras[].fov wins over the model's published field of view."""
    bench = Bench()
    bench.add(camera_config("swing", model=SWING, fov=fov), SWING)
    assert registry(bench, StateStore(tmp_path)).fov("swing") == expected
