"""The reconciler and client over real loopback HTTP, against the fake mediamtx on a real port."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.web.client import Agent, HTTPConnectionPool

from atomrelay.config import MediamtxConfig
from atomrelay.mediamtx.client import MediamtxClient, MediamtxUnavailable
from atomrelay.mediamtx.paths import build_path_conf, path_conf_differences
from atomrelay.mediamtx.reconciler import Reconciler
from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx
from atomrelay.state import StateStore

from ..helpers import free_port, poll
from .support import ALL_PATHS, capture, make_config

pytestmark = pytest.mark.integration


def http_client() -> tuple[HTTPClient, HTTPConnectionPool]:
    """A real treq client without persistent connections."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    return HTTPClient(Agent(reactor, pool=pool)), pool


@pytest_twisted.ensureDeferred
async def test_reconciler_over_real_http(tmp_path: Path) -> None:
    """Over a real socket with Basic auth: paths registered, steady state silent, restart re-registered, clean stop."""
    fake = FakeMediamtx(reactor, username="relay", password="api-pw")
    port = listen_mediamtx(reactor, fake, 0)
    api_port = port.getHost().port
    config = make_config(
        tmp_path,
        mediamtx=f"  api_url: http://127.0.0.1:{api_port}\n  username: relay\n  password: api-pw\n",
        poll_interval="0.2s",
    )
    http, pool = http_client()
    client = MediamtxClient(http, config.mediamtx, clock=reactor)
    reconciler = Reconciler(reactor, client, config, StateStore(tmp_path))
    events = capture(reconciler)
    try:
        reconciler.startService()
        await reconciler.ready
        assert sorted(fake.paths) == ALL_PATHS
        for camera in config.cameras:
            for stream in camera.streams:
                wanted = build_path_conf(camera, stream, config.mediamtx)
                assert path_conf_differences(wanted, fake.paths[f"{camera.id}/{stream.name}"]) == []
        writes = len(fake.writes)
        passes: list[float] = []
        original_info = client.info

        def counting_info() -> Any:
            passes.append(time.monotonic())
            return original_info()

        client.info = counting_info  # type: ignore[method-assign]
        await poll(lambda: len(passes) >= 5, timeout=10, interval=0.02, what="five steady-state passes")
        assert len(fake.writes) == writes
        fake.restart()
        # A restart that lands between a pass's info() and its path list is re-registered by that pass and
        # noticed as a restart by the next one, so wait for both rather than asserting the log line at once.
        await poll(
            lambda: sorted(fake.paths) == ALL_PATHS and any("mediamtx restarted" in text for text in events.texts()),
            timeout=10, interval=0.02, what="re-registration after restart, and the restart logged",
        )
    finally:
        await reconciler.stopService()
        await port.stopListening()
        await pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_connection_refused_over_real_tcp() -> None:
    """A closed port gives MediamtxUnavailable that names the URL and the refusal."""
    closed = free_port()
    http, pool = http_client()
    client = MediamtxClient(http, MediamtxConfig(api_url=f"http://127.0.0.1:{closed}"), timeout=5.0)
    try:
        with pytest.raises(MediamtxUnavailable) as caught:
            await client.info()
        assert f"http://127.0.0.1:{closed}" in str(caught.value)
        assert "refused" in str(caught.value).lower()
    finally:
        await pool.closeCachedConnections()
