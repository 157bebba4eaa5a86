"""The simulated camera's RTSP server on loopback: answers, SDP, refusals, and ffmpeg stopped with the client."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from atomrelay.sim.camera import SimulatedCamera
from atomrelay.sim.rtsp import SimulatedRtspServer, listen_rtsp
from tests.helpers import poll

pytestmark = pytest.mark.integration


class Client(Protocol):
    """Sends RTSP requests and keeps everything the server sent."""

    def __init__(self) -> None:
        self.data = b""
        self.cseq = 0

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    async def ask(self, method: str, url: str, *headers: str) -> str:
        """Send one request and return its whole response head (and SDP body)."""
        self.cseq += 1
        start = len(self.data)
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", *headers]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())  # type: ignore[union-attr]
        await poll(lambda: b"\r\n\r\n" in self.data[start:], timeout=5, what=f"the answer to {method}")
        answer = self.data[start:].decode("latin-1")
        if "Content-Length:" in answer:
            await poll(lambda: self.data[start:].endswith(b"\r\n"), timeout=5, what="the body")
            answer = self.data[start:].decode("latin-1")
        return answer


async def serve(ffmpeg: str | None, **firmware: str) -> tuple[Any, SimulatedRtspServer, Client, str]:
    camera = SimulatedCamera(reactor, "ATOM_CamV3C", firmware=firmware)
    server = SimulatedRtspServer(reactor, camera.rtsp_stream, ffmpeg)
    port = listen_rtsp(reactor, server)
    client = Client()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
    return port, server, client, f"rtsp://127.0.0.1:{port.getHost().port}"


@pytest_twisted.ensureDeferred
async def test_options_describe_and_refusals() -> None:
    """OPTIONS and DESCRIBE answer like the firmware; a stream switched off is 404, UDP 461, PLAY without ffmpeg 503."""
    port, server, client, base = await serve(None, RTSP_AUDIO0="AAC", RTSP_VIDEO1="off")
    try:
        assert (await client.ask("OPTIONS", base + "/")).startswith("RTSP/1.0 200 OK")
        sdp = await client.ask("DESCRIBE", base + "/video0_unicast", "Accept: application/sdp")
        assert "a=rtpmap:96 H264/90000" in sdp and "sprop-parameter-sets" not in sdp
        assert "a=rtpmap:97 MPEG4-GENERIC/8000/1" in sdp and "config=1588" in sdp
        assert f"Content-Base: {base}/video0_unicast/" in sdp
        assert (await client.ask("DESCRIBE", base + "/video1_unicast")).startswith("RTSP/1.0 404")
        udp = await client.ask("SETUP", base + "/video0_unicast/trackID=0", "Transport: RTP/AVP;unicast;client_port=5000-5001")
        assert udp.startswith("RTSP/1.0 461")
        setup = await client.ask("SETUP", base + "/video0_unicast/trackID=0",
                                 "Transport: RTP/AVP/TCP;unicast;interleaved=0-1")
        assert setup.startswith("RTSP/1.0 200") and "interleaved=0-1" in setup
        assert (await client.ask("PLAY", base + "/video0_unicast/")).startswith("RTSP/1.0 503")
    finally:
        client.transport.loseConnection()  # type: ignore[union-attr]
        await port.stopListening()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (make system-deps)")
@pytest_twisted.ensureDeferred
async def test_play_streams_interleaved_rtp_until_the_client_leaves() -> None:
    """PLAY sends RTP on the interleaved channels, and the session and its ffmpeg end when the client disconnects."""
    port, server, client, base = await serve(shutil.which("ffmpeg"))
    try:
        answer = await client.ask("SETUP", f"{base}/video1_unicast/trackID=0",
                                  "Transport: RTP/AVP/TCP;unicast;interleaved=0-1")
        assert answer.startswith("RTSP/1.0 200")
        assert (await client.ask("PLAY", base + "/video1_unicast/")).startswith("RTSP/1.0 200")
        await poll(lambda: client.data.count(b"$\x00") > 20, timeout=15, what="RTP packets on channel 0")
        assert len(server.sessions) == 1
        client.transport.loseConnection()  # type: ignore[union-attr]
        await poll(lambda: not server.sessions and not server.connections, timeout=5, what="the session to end")
    finally:
        await port.stopListening()
