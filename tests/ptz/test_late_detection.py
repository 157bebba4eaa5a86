"""A ``model: auto`` Swing detected only after the relay started: its profiles gain PTZ at once.

GetProfiles answers are cached as bytes (``Operation.reply_key``) and the key is the
media model's generation; nothing in the request path asks the PTZ service again. This
checks the wiring that makes a late detection reach those cached answers: the model
registry's ``on_change`` invalidates each device's media model (``tap.device_services``).
"""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from lxml import etree

from atomrelay.onvif import ns
from tests.helpers import poll
from tests.robustness.support import get_profiles, soap_post, start_inprocess_relay, start_rig

PTZ_CONFIGURATION = f"{{{ns.TT}}}PTZConfiguration"


async def swing_ptz(port: int) -> list[bool]:
    """For each of the Swing's Media1 profiles in an authenticated GetProfiles: whether it carries PTZ."""
    reply = await soap_post(port, get_profiles(), path="/onvif/media_service")
    assert reply.status == 200, reply.body[:400]
    profiles = etree.fromstring(reply.body).iter(f"{{{ns.TRT}}}Profiles")
    found = [p.find(PTZ_CONFIGURATION) is not None for p in profiles if p.get("token", "").startswith("swing.")]
    assert found, "the Swing has no Media1 profile"
    return found


@pytest_twisted.ensureDeferred
async def test_swing_detected_late_gets_ptz_in_cached_get_profiles(tmp_path: Path) -> None:
    """Swing off at start: profiles without PTZ (answer cached); camera on: the next answers show PTZ."""
    rig = start_rig(cameras=(("swing", "ATOM_CAKP1JZJP"),))
    await rig.cameras["swing"].power_off()
    relay = await start_inprocess_relay(rig, tmp_path, auto_models=True)
    try:
        assert not any(await swing_ptz(relay.port))
        assert not any(await swing_ptz(relay.port))  # now answered from the reply cache
        rig.cameras["swing"].power_on()
        await poll(lambda: swing_ptz_everywhere(relay.port), timeout=15, what="PTZ in the Swing's profiles")
    finally:
        await relay.stop()
        await rig.stop()


async def swing_ptz_everywhere(port: int) -> bool:
    """Every Media1 profile of the Swing carries PTZ."""
    return all(await swing_ptz(port))
