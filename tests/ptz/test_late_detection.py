"""A ``model: auto`` Swing detected only after the relay started: its profiles and the device's service list gain
PTZ at once; a fixed camera's device never lists PTZ.

GetProfiles answers are cached as bytes (``Operation.reply_key``) and the key is the
media model's generation; nothing in the request path asks the PTZ service again. This
checks the wiring that makes a late detection reach those cached answers: the model
registry's ``on_change`` invalidates each device's media model (``tap.device_services``).
"""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from lxml import etree

from atomrelay.xml import ns
from tests.helpers import poll
from tests.robustness.support import CAM2_MODEL, envelope, get_profiles, op, soap_post, start_inprocess_relay, start_rig

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


async def ptz_listed(port: int) -> tuple[bool, bool]:
    """Whether an anonymous GetServices and GetCapabilities name the PTZ service."""
    services = await soap_post(port, envelope(op(ns.TDS, "GetServices", "<IncludeCapability>false</IncludeCapability>")))
    capabilities = await soap_post(port, envelope(op(ns.TDS, "GetCapabilities")))
    assert services.status == capabilities.status == 200, (services.body[:400], capabilities.body[:400])
    namespaces = [n.text for n in etree.fromstring(services.body).iter(f"{{{ns.TDS}}}Namespace")]
    return ns.TPTZ in namespaces, etree.fromstring(capabilities.body).find(f".//{{{ns.TT}}}PTZ") is not None


@pytest_twisted.ensureDeferred
async def test_ptz_service_is_listed_once_a_swing_is_detected(tmp_path: Path) -> None:
    """Swing off at start: GetServices and GetCapabilities name no PTZ service; camera on: both name it."""
    rig = start_rig(cameras=(("swing", "ATOM_CAKP1JZJP"),))
    await rig.cameras["swing"].power_off()
    relay = await start_inprocess_relay(rig, tmp_path, auto_models=True)
    try:
        assert await ptz_listed(relay.port) == (False, False)
        assert await ptz_listed(relay.port) == (False, False)
        rig.cameras["swing"].power_on()

        async def listed() -> bool:
            return await ptz_listed(relay.port) == (True, True)

        await poll(listed, timeout=15, what="the PTZ service in GetServices and GetCapabilities")
    finally:
        await relay.stop()
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_a_detected_fixed_camera_lists_no_ptz_service(tmp_path: Path) -> None:
    """An ``auto`` camera read as an ATOM Cam 2: once its model is known, still no PTZ service is listed."""
    rig = start_rig(cameras=(("cam2", CAM2_MODEL),))
    relay = await start_inprocess_relay(rig, tmp_path, auto_models=True)
    try:
        saved = relay.state_dir / "camera-hardware.json"
        await poll(lambda: saved.exists() and CAM2_MODEL in saved.read_text(encoding="utf-8"), timeout=15,
                   what="the ATOM Cam 2's model read and saved")
        assert await ptz_listed(relay.port) == (False, False)
    finally:
        await relay.stop()
        await rig.stop()
