"""The camera and mediamtx clients read answers' bodies within a bound, on real loopback sockets.

A peer that sends its headers and then stalls the body, or sends a body that never ends,
must cost the relay neither a connection nor memory: the request fails with a specific
error and the connection is closed (the server below sees it go).
"""

from __future__ import annotations

from typing import AsyncIterator, ClassVar

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from atomrelay.camera.client import MAX_REPLY_BYTES, CameraClient, CameraReplyError, CameraTimeout
from atomrelay.config import MediamtxConfig
from atomrelay.mediamtx.client import MediamtxClient, MediamtxUnavailable
from atomrelay.wiring import camera_http_client
from tests.camera.support import camera_config
from tests.helpers import poll

pytestmark = pytest.mark.integration

_CHUNK = b"x" * 65536


class Peer(Protocol):
    """An HTTP server that answers every request's headers, then stalls the body or sends one without end."""

    endless: ClassVar[bool] = False
    open: ClassVar[list[Peer]] = []
    sent: ClassVar[int] = 0

    def connectionMade(self) -> None:
        self.open.append(self)
        self.pump: LoopingCall | None = None

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" not in data or self.pump is not None:
            return
        if not self.endless:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            return
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.pump = LoopingCall(self.chunk)
        self.pump.start(0.001)

    def chunk(self) -> None:
        self.transport.write(b"%x\r\n%s\r\n" % (len(_CHUNK), _CHUNK))
        Peer.sent += len(_CHUNK)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.pump is not None and self.pump.running:
            self.pump.stop()
        self.open.remove(self)


@pytest_twisted.async_yield_fixture
async def peer() -> AsyncIterator[int]:
    """The peer listening on 127.0.0.1; its port."""
    Peer.open, Peer.sent, Peer.endless = [], 0, False
    port = reactor.listenTCP(0, Factory.forProtocol(Peer), interface="127.0.0.1")
    try:
        yield port.getHost().port
    finally:
        for protocol in list(Peer.open):
            protocol.transport.abortConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_camera_that_stalls_its_body_times_out_and_loses_the_connection(peer: int) -> None:
    """A camera that sends headers and part of a body times out, and the connection is closed, each time."""
    client = CameraClient(camera_http_client(reactor), camera_config(http_port=peer), timeout=0.5, clock=reactor)
    for _ in range(3):
        with pytest.raises(CameraTimeout, match="did not answer within 0.5s"):
            await client.status()
    await poll(lambda: not Peer.open, timeout=5, what="the camera's connections to close")


@pytest_twisted.ensureDeferred
async def test_a_camera_body_without_end_is_cut_at_the_bound(peer: int) -> None:
    """A snapshot that never ends is refused as too large once past the bound, and the connection is closed."""
    Peer.endless = True
    client = CameraClient(camera_http_client(reactor), camera_config(http_port=peer), timeout=30.0, clock=reactor)
    with pytest.raises(CameraReplyError, match=f"larger than {MAX_REPLY_BYTES} bytes"):
        await client.snapshot()
    await poll(lambda: not Peer.open, timeout=5, what="the camera's connection to close")
    assert Peer.sent < 4 * MAX_REPLY_BYTES


@pytest_twisted.ensureDeferred
async def test_a_mediamtx_that_stalls_its_body_times_out_and_loses_the_connection(peer: int) -> None:
    """mediamtx's API sending headers and then nothing is no answer, and the connection is closed."""
    client = MediamtxClient(camera_http_client(reactor), MediamtxConfig(api_url=f"http://127.0.0.1:{peer}"),
                            timeout=0.5, clock=reactor)
    with pytest.raises(MediamtxUnavailable, match="no answer from mediamtx within 0.5s"):
        await client.info()
    await poll(lambda: not Peer.open, timeout=5, what="the API connection to close")
