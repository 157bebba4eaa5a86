"""Anonymous clients cannot pin the relay's memory with big requests (issue 15, red-team finding).

A real ``atomrelay run`` gets 64 distinct anonymous GetSystemDateAndTime requests of
about 256 KiB each (the body limit), and its resident set size is read from /proc
before and after. Each request carries a header block the relay does not know:
23,000 empty attributes, 16,000 namespace declarations, or (within every XML limit)
4,000 attributes and 200 KiB of text.
"""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest
import pytest_twisted

from atomrelay.xml import ns
from tests.robustness.support import (
    GET_DATE,
    SWING_MODEL,
    RelayProcess,
    check_reply,
    envelope,
    fault_reason,
    fault_subcodes,
    op,
    soap_post,
    start_relay_process,
    start_rig,
)

REQUESTS = 64
BODY_LIMIT = 256 * 1024
RSS_GROWTH_LIMIT_KIB = 30 * 1000
"""+30 MB."""


def short_name(number: int) -> str:
    """A distinct short XML name for ``number`` (a letter, then base 36)."""
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
        if not number:
            return "a" + digits


def attributes_body(index: int) -> bytes:
    """GetSystemDateAndTime with 23,000 empty attributes on one header element (named for request ``index``)."""
    attributes = " ".join(f'{short_name(n)}=""' for n in range(23_000))
    return envelope(op(ns.TDS, "GetSystemDateAndTime"), f'<h:P{index} xmlns:h="urn:pad" {attributes}/>')


def namespaces_body(index: int) -> bytes:
    """GetSystemDateAndTime with 16,000 namespace declarations on one header element (named for request ``index``)."""
    declarations = " ".join(f'xmlns:{short_name(n)}="u"' for n in range(16_000))
    return envelope(op(ns.TDS, "GetSystemDateAndTime"), f'<h:P{index} xmlns:h="urn:pad" {declarations}/>')


def within_limits_body(index: int) -> bytes:
    """GetSystemDateAndTime with 4,000 attributes and 200 KiB of text in a header block: under every XML limit."""
    attributes = " ".join(f'a{n}="{index}"' for n in range(4_000))
    return envelope(op(ns.TDS, "GetSystemDateAndTime"), f'<h:Pad xmlns:h="urn:pad" {attributes}>{"x" * 200_000}</h:Pad>')


@pytest_twisted.async_yield_fixture
async def relay(tmp_path: Path) -> AsyncIterator[RelayProcess]:
    """``atomrelay run`` with one simulated camera."""
    rig = start_rig(cameras=(("swing", SWING_MODEL),))
    process = await start_relay_process(rig, tmp_path)
    try:
        yield process
    finally:
        await process.stop()
        await rig.stop()


async def rss_growth_kib(relay: RelayProcess, bodies: list[bytes]) -> int:
    """How much the relay's RSS grew over ``bodies`` (after a warm-up of the same request shape)."""
    for body in bodies[:2] + [GET_DATE] * 4:  # lazy imports, the fault answer cached, the parser's buffers
        check_reply(await soap_post(relay.onvif_port, body))
    before = relay.rss_kib()
    for body in bodies:
        check_reply(await soap_post(relay.onvif_port, body))
    assert (await soap_post(relay.onvif_port, GET_DATE)).status == 200
    return relay.rss_kib() - before


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("build", [attributes_body, namespaces_body])
async def test_attribute_floods_are_refused_and_pin_nothing(relay: RelayProcess, build: object) -> None:
    """64 distinct requests of about 200 KiB with 23,000 attributes (or 16,000 namespace declarations) each get ter:WellFormed and leave RSS within +30 MB."""
    bodies = [build(2 + index) for index in range(REQUESTS + 2)]  # type: ignore[operator]
    assert all(150_000 < len(body) <= BODY_LIMIT for body in bodies)
    reply = await soap_post(relay.onvif_port, bodies[0])
    assert reply.status == 400 and fault_subcodes(reply.body) == ["WellFormed"]
    assert "4096" in fault_reason(reply.body)
    growth = await rss_growth_kib(relay, bodies[2:])
    assert growth < RSS_GROWTH_LIMIT_KIB, f"RSS grew by {growth} KiB"


@pytest_twisted.ensureDeferred
async def test_big_requests_within_the_limits_pin_nothing(relay: RelayProcess) -> None:
    """64 distinct 256 KiB requests under every XML limit are answered and leave RSS within +30 MB."""
    bodies = [within_limits_body(2 + index) for index in range(REQUESTS + 2)]
    assert all(200_000 < len(body) <= BODY_LIMIT for body in bodies)
    assert (await soap_post(relay.onvif_port, bodies[0])).status == 200
    growth = await rss_growth_kib(relay, bodies[2:])
    assert growth < RSS_GROWTH_LIMIT_KIB, f"RSS grew by {growth} KiB"
