"""The documented mapping between ONVIF generic spaces and the Swing's motor degrees."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atomrelay.camera.model import MODELS
from atomrelay.camera.moves import (
    FOV_SPACE,
    GENERIC_SPACE,
    degrees_to_generic,
    generic_to_degrees,
    speed_index,
    translation_to_degrees,
)
from tests.camera.support import SWING

FACTS = MODELS[SWING]
unit = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)


@pytest.mark.parametrize(
    "x, y, pan, tilt",
    [(-1, -1, 0.0, 0.0), (0, 0, 177.5, 90.0), (1, 1, 355.0, 180.0), (0.5, -0.5, 266.25, 45.0)],
)
def test_generic_corners_and_centre(x: float, y: float, pan: float, tilt: float) -> None:
    """-1 is 0°, +1 is the far end (355° pan, 180° tilt), 0 the middle."""
    assert generic_to_degrees(x, y, FACTS) == pytest.approx((pan, tilt))


@given(unit, unit)
def test_round_trip(x: float, y: float) -> None:
    """Degrees back to the generic space give the same position."""
    pan, tilt = generic_to_degrees(x, y, FACTS)
    assert degrees_to_generic(pan, tilt, FACTS) == pytest.approx((x, y), abs=1e-9)


@given(unit, unit, unit)
def test_direction_is_monotonic(x: float, other: float, y: float) -> None:
    """A larger x is a larger pan angle (right), a larger y a larger tilt angle (up)."""
    if other - x > 1e-9:
        assert generic_to_degrees(x, y, FACTS)[0] < generic_to_degrees(other, y, FACTS)[0]
        assert generic_to_degrees(y, x, FACTS)[1] < generic_to_degrees(y, other, FACTS)[1]


def test_degrees_outside_the_range_are_clamped() -> None:
    """Positions reported past the motor range (or float noise) map into [-1, 1]."""
    assert degrees_to_generic(400.0, -5.0, FACTS) == (1.0, -1.0)
    assert generic_to_degrees(1.0000001, -1.0000001, FACTS) == (355.0, 0.0)


def test_translations() -> None:
    """Generic: 2 is the whole range; FOV: 1 is half the field of view."""
    assert translation_to_degrees(0.1, -0.5, GENERIC_SPACE, FACTS, (100, 60)) == pytest.approx((17.75, -45.0))
    assert translation_to_degrees(1.0, -1.0, FOV_SPACE, FACTS, (100, 60)) == pytest.approx((50.0, -30.0))
    assert translation_to_degrees(0.25, 0.5, FOV_SPACE, FACTS, (100, 60)) == pytest.approx((12.5, 15.0))


def test_speed_index() -> None:
    """Generic speeds 0..1 map onto the camera's 1..9, never outside."""
    assert [speed_index(s) for s in (0.0, 0.5, 1.0, 2.0, -1.0)] == [1, 5, 9, 9, 1]
