"""The RTSP server of a simulated ATOM Cam: OPTIONS, DESCRIBE, and with ffmpeg a real stream.

It answers like the firmware's server on port 8554: ``/videoN_unicast`` paths, an SDP
without ``sprop-parameter-sets`` (the parameter sets come in-band, as on the camera),
TCP-interleaved transport only. PLAY starts one ffmpeg per session that encodes a test
pattern with a running timestamp (``testsrc``) and a tone, and sends RTP to loopback
UDP ports of this server, which frames each packet onto the client's connection. A
client that does not read loses packets (as from the Wi-Fi camera) rather than growing
a buffer. Without ffmpeg, PLAY answers 503.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, Factory, ProcessProtocol, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

MAX_HEAD = 8192
"""Longest request head accepted before the connection is closed."""

MAX_CONNECTIONS = 32
"""Open RTSP connections per simulated camera."""

MAX_SESSIONS = 4
"""Concurrently playing sessions (ffmpeg processes) per simulated camera."""

PUBLIC = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER"

_AUDIO_SDP = {
    "S16_BE": "L16/8000/1",
    "AAC": "MPEG4-GENERIC/8000/1",
    "OPUS": "opus/48000/2",
}
# AAC-LC, 8 kHz, mono (AudioSpecificConfig 00010 1011 0001 000).
_AAC_FMTP = "profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1588"
_AUDIO_ENCODER = {
    "S16_BE": ["-c:a", "pcm_s16be", "-ar", "8000", "-ac", "1"],
    "AAC": ["-c:a", "aac", "-ar", "8000", "-ac", "1", "-b:a", "32k"],
    "OPUS": ["-c:a", "libopus", "-ar", "48000", "-ac", "2", "-b:a", "32k"],
}
_VIDEO_ENCODER = {
    "h264": ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "main"],
    "h265": ["-c:v", "libx265", "-preset", "ultrafast", "-tune", "zerolatency", "-x265-params", "log-level=error"],
}
_TRACK = re.compile(r"/trackID=([01])$")
_INTERLEAVED = re.compile(r"interleaved=(\d+)(?:-(\d+))?")


@dataclass(frozen=True)
class SimStream:
    """What one RTSP path sends: video codec (h264/h265), size, rate, audio (off/S16_BE/AAC/OPUS)."""

    codec: str
    width: int
    height: int
    fps: int
    audio: str


def sdp(stream: SimStream, host: str) -> str:
    """The session description of ``stream``: video track 0, audio track 1 when audio is on."""
    lines = [
        "v=0",
        f"o=- 0 0 IN IP4 {host}",
        "s=ATOM Cam (simulated)",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "a=control:*",
        "m=video 0 RTP/AVP 96",
        f"a=rtpmap:96 {'H264' if stream.codec == 'h264' else 'H265'}/90000",
    ]
    if stream.codec == "h264":
        lines.append("a=fmtp:96 packetization-mode=1")
    lines.append("a=control:trackID=0")
    if stream.audio in _AUDIO_SDP:
        lines += ["m=audio 0 RTP/AVP 97", f"a=rtpmap:97 {_AUDIO_SDP[stream.audio]}"]
        if stream.audio == "AAC":
            lines.append(f"a=fmtp:97 {_AAC_FMTP}")
        lines.append("a=control:trackID=1")
    return "\r\n".join(lines) + "\r\n"


def ffmpeg_args(ffmpeg: str, stream: SimStream, ports: Mapping[int, int]) -> list[str]:
    """ffmpeg sending ``stream``'s tracks as RTP to ``ports`` (track -> loopback UDP port)."""
    args = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
            "-re", "-f", "lavfi", "-i", f"testsrc=size={stream.width}x{stream.height}:rate={stream.fps}"]
    audio = 1 in ports and stream.audio in _AUDIO_ENCODER
    if audio:
        args += ["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000"]
    if 0 in ports:
        args += ["-map", "0:v", *_VIDEO_ENCODER[stream.codec], "-pix_fmt", "yuv420p", "-g", str(stream.fps),
                 "-f", "rtp", "-payload_type", "96", _rtp_url(ports[0])]
    if audio:
        args += ["-map", "1:a", *_AUDIO_ENCODER[stream.audio], "-f", "rtp", "-payload_type", "97",
                 _rtp_url(ports[1])]
    return args


def _rtp_url(port: int) -> str:
    # RTCP to the same port: the server tells the two apart by packet type.
    return f"rtp://127.0.0.1:{port}?rtcpport={port}&pkt_size=1400"


class _TrackReceiver(DatagramProtocol):
    """Receives one track's RTP/RTCP from ffmpeg and frames it onto the session's connection."""

    def __init__(self, session: _Session, channel: int) -> None:
        self.session = session
        self.channel = channel

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Forward; RTCP (packet types 200-204) goes on the odd channel."""
        channel = self.channel + 1 if len(datagram) > 1 and 200 <= datagram[1] <= 204 else self.channel
        self.session.forward(channel, datagram)


class _FfmpegProtocol(ProcessProtocol):
    log = Logger()

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.err = b""

    def errReceived(self, data: bytes) -> None:
        self.err = (self.err + data)[-2048:]

    def processEnded(self, reason: Failure) -> None:
        if not isinstance(reason.value, (ProcessDone, ProcessTerminated)) or self.session.playing:
            self.log.warn("simulated RTSP: ffmpeg ended: {error}", error=self.err.decode("utf-8", "replace").strip())
        self.session.ffmpeg_ended()


class _Session:
    """One client's playback: the UDP receivers and the ffmpeg feeding them."""

    def __init__(self, connection: RtspConnection, stream: SimStream, session_id: str) -> None:
        self.connection = connection
        self.stream = stream
        self.id = session_id
        self.channels: dict[int, int] = {}
        self.playing = False
        self.paused = False
        self._ports: list[Any] = []
        self._process: Any = None

    def play(self, reactor: Any, ffmpeg: str, env: Mapping[str, str] | None) -> None:
        ports: dict[int, int] = {}
        for track, channel in self.channels.items():
            port = reactor.listenUDP(0, _TrackReceiver(self, channel), interface="127.0.0.1")
            self._ports.append(port)
            ports[track] = int(port.getHost().port)
        args = ffmpeg_args(ffmpeg, self.stream, ports)
        self.playing = True
        self._process = reactor.spawnProcess(_FfmpegProtocol(self), ffmpeg, args,
                                             env=dict(env) if env is not None else None)

    def forward(self, channel: int, packet: bytes) -> None:
        if self.playing and not self.paused:
            self.connection.send_interleaved(channel, packet)

    def ffmpeg_ended(self) -> None:
        self._process = None
        if self.playing:
            self.stop()
            cast(Any, self.connection.transport).loseConnection()

    def stop(self) -> None:
        self.playing = False
        for port in self._ports:
            port.stopListening()
        self._ports = []
        if self._process is not None:
            process, self._process = self._process, None
            try:
                process.signalProcess("KILL")
            except Exception:  # noqa: BLE001 - it ended meanwhile
                pass


class RtspConnection(Protocol):
    """One RTSP client connection (requests in, responses and interleaved RTP out)."""

    log = Logger()

    def __init__(self, server: SimulatedRtspServer) -> None:
        self.server = server
        self._buffer = b""
        self.session: _Session | None = None

    def connectionMade(self) -> None:
        """Refuse beyond MAX_CONNECTIONS; register as a push producer to learn when the client stops reading."""
        if len(self.server.connections) >= MAX_CONNECTIONS:
            cast(Any, self.transport).loseConnection()
            return
        self.server.connections.add(self)
        cast(Any, self.transport).registerProducer(self, True)

    def pauseProducing(self) -> None:
        """The client's socket is full: drop packets until it drains."""
        if self.session is not None:
            self.session.paused = True

    def resumeProducing(self) -> None:
        """Send packets again."""
        if self.session is not None:
            self.session.paused = False

    def stopProducing(self) -> None:
        """The connection is going away."""
        self.end_session()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop ffmpeg with the connection."""
        self.server.connections.discard(self)
        self.end_session()

    def end_session(self) -> None:
        """Stop this connection's playback, if any."""
        if self.session is not None:
            session, self.session = self.session, None
            session.stop()
            self.server.sessions.discard(session)

    def send_interleaved(self, channel: int, packet: bytes) -> None:
        """``$``, channel, 16-bit length, packet (RFC 2326 section 10.12)."""
        cast(Any, self.transport).write(b"$" + bytes([channel]) + len(packet).to_bytes(2, "big") + packet)

    def dataReceived(self, data: bytes) -> None:
        """Split requests (and skip interleaved RTCP receiver reports from the client)."""
        self._buffer += data
        while self._buffer:
            if self._buffer[:1] == b"$":
                if len(self._buffer) < 4:
                    return
                size = 4 + int.from_bytes(self._buffer[2:4], "big")
                if len(self._buffer) < size:
                    return
                self._buffer = self._buffer[size:]
                continue
            head, sep, rest = self._buffer.partition(b"\r\n\r\n")
            if not sep:
                if len(self._buffer) > MAX_HEAD:
                    cast(Any, self.transport).loseConnection()
                    self._buffer = b""
                return
            headers = _headers(head)
            declared = headers.get("content-length", "0")
            length = int(declared) if declared.isdigit() else 0
            if len(rest) < length:
                return
            self._buffer = rest[length:]
            self._handle(head.split(b"\r\n", 1)[0].decode("latin-1"), headers)

    def _reply(self, status: str, cseq: str, extra: Mapping[str, str] | None = None, body: str = "") -> None:
        lines = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", "Server: atomcam_tools (simulated)"]
        lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body.encode('utf-8'))}")
        cast(Any, self.transport).write(("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8"))

    def _handle(self, request_line: str, headers: Mapping[str, str]) -> None:
        cseq = headers.get("cseq", "0")
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("RTSP/1."):
            self._reply("400 Bad Request", cseq)
            return
        method, url = parts[0], parts[1]
        if method == "OPTIONS":
            self._reply("200 OK", cseq, {"Public": PUBLIC})
        elif method == "GET_PARAMETER":
            self._reply("200 OK", cseq, self._session_header())
        elif method == "DESCRIBE":
            self._describe(url, cseq)
        elif method == "SETUP":
            self._setup(url, cseq, headers.get("transport", ""))
        elif method == "PLAY":
            self._play(cseq)
        elif method == "TEARDOWN":
            self.end_session()
            self._reply("200 OK", cseq)
        else:
            self._reply("405 Method Not Allowed", cseq, {"Allow": PUBLIC})

    def _session_header(self) -> dict[str, str]:
        return {"Session": f"{self.session.id};timeout=65"} if self.session is not None else {}

    def _stream(self, url: str) -> tuple[str, SimStream | None]:
        path = urlsplit(url).path.strip("/")
        path = _TRACK.sub("", "/" + path).strip("/")
        return path, self.server.lookup(path)

    def _describe(self, url: str, cseq: str) -> None:
        path, stream = self._stream(url)
        if stream is None:
            self._reply("404 Not Found", cseq)
            return
        host = cast(Any, self.transport).getHost()
        base = f"rtsp://{host.host}:{host.port}/{path}/"
        self._reply("200 OK", cseq, {"Content-Base": base, "Content-Type": "application/sdp"}, sdp(stream, host.host))

    def _setup(self, url: str, cseq: str, transport: str) -> None:
        path, stream = self._stream(url)
        track_match = _TRACK.search(urlsplit(url).path)
        track = int(track_match.group(1)) if track_match else 0
        if stream is None or (track == 1 and stream.audio not in _AUDIO_SDP):
            self._reply("404 Not Found", cseq)
            return
        if "RTP/AVP/TCP" not in transport.upper():
            self._reply("461 Unsupported Transport", cseq)
            return
        if self.session is None:
            if len(self.server.sessions) >= MAX_SESSIONS:
                self._reply("453 Not Enough Bandwidth", cseq)
                return
            self.session = _Session(self, stream, self.server.new_session_id())
            self.server.sessions.add(self.session)
        elif self.session.playing or self.session.stream != stream:
            self._reply("455 Method Not Valid in This State", cseq)
            return
        match = _INTERLEAVED.search(transport)
        channel = int(match.group(1)) if match else 2 * track
        self.session.channels[track] = channel
        self._reply("200 OK", cseq, {
            "Transport": f"RTP/AVP/TCP;unicast;interleaved={channel}-{channel + 1}",
            **self._session_header(),
        })

    def _play(self, cseq: str) -> None:
        if self.session is None:
            self._reply("454 Session Not Found", cseq)
            return
        if self.server.ffmpeg is None:
            self.log.warn("simulated RTSP: PLAY refused: no ffmpeg on PATH to make the test pattern")
            self._reply("503 Service Unavailable", cseq)
            return
        if not self.session.playing:
            self.session.play(self.server.reactor, self.server.ffmpeg, self.server.env)
        self._reply("200 OK", cseq, {"Range": "npt=0.000-", **self._session_header()})


def _headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


class SimulatedRtspServer(Factory):
    """A simulated camera's RTSP server; ``lookup`` maps a path to its SimStream (None: 404)."""

    def __init__(self, reactor: Any, lookup: Callable[[str], SimStream | None], ffmpeg: str | None,
                 env: Mapping[str, str] | None = None) -> None:
        self.reactor = reactor
        self.lookup = lookup
        self.ffmpeg = ffmpeg
        self.env = env
        self.connections: set[RtspConnection] = set()
        self.sessions: set[_Session] = set()
        self._next_session = 0

    def buildProtocol(self, addr: Any) -> RtspConnection:
        """One protocol per connection."""
        return RtspConnection(self)

    def new_session_id(self) -> str:
        """A session id unique on this server."""
        self._next_session += 1
        return f"{0x5A000000 + self._next_session:08X}"

    def stop(self) -> None:
        """Close every connection (and so stop every ffmpeg)."""
        for connection in list(self.connections):
            connection.end_session()
            cast(Any, connection.transport).loseConnection()


def listen_rtsp(reactor: Any, server: SimulatedRtspServer, port: int = 0,
                interface: str = "127.0.0.1") -> IListeningPort:
    """Serve ``server`` on ``interface:port`` (0 picks a free port)."""
    return cast(IListeningPort, reactor.listenTCP(port, server, interface=interface))


__all__ = ["SimStream", "SimulatedRtspServer", "ffmpeg_args", "listen_rtsp", "sdp"]
