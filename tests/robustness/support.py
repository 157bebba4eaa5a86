"""The robustness suite's rig: simulators with fault switches, a relay process, raw and SOAP clients.

Everything listens on 127.0.0.1. The simulators run in the test process's reactor; the
relay under test runs either in the same reactor (``build_relay``) or as a real
``atomrelay run`` process whose log lines are collected.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
import signal
import socket
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import treq
from lxml import etree
from lxml.etree import _Element
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from atomrelay.sim.camera import SimulatedCamera
from atomrelay.sim.mediamtx import FakeMediamtx
from atomrelay.xml import ns
from tests.helpers import VENV_BIN, child_env, free_port, poll

USER, PASSWORD = "admin", "s3cret!"
WEBHOOK_TOKEN = "robustness-token-0123456789"
SOAP12_TYPE = "application/soap+xml; charset=utf-8"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


# --- SOAP requests --------------------------------------------------------------------------------


def security_header(username: str = USER, password: str = PASSWORD, created: str | None = None,
                    nonce: bytes | None = None) -> str:
    """A WS-Security UsernameToken header (PasswordDigest) with a fresh nonce."""
    nonce = nonce if nonce is not None else os.urandom(16)
    created = created or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    digest = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()
    return (
        f'<wsse:Security xmlns:wsse="{ns.WSSE}" xmlns:wsu="{ns.WSU}"><wsse:UsernameToken>'
        f"<wsse:Username>{username}</wsse:Username>"
        f'<wsse:Password Type="{ns.PASSWORD_DIGEST}">{digest}</wsse:Password>'
        f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce>"
        f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"
    )


def envelope(body: str, header: str = "", version: str = "1.2") -> bytes:
    """A SOAP envelope around ``body`` (an XML fragment) with an optional header fragment."""
    envelope_ns = ns.SOAP12 if version == "1.2" else ns.SOAP11
    head = f"<s:Header>{header}</s:Header>" if header else ""
    return f'<s:Envelope xmlns:s="{envelope_ns}">{head}<s:Body>{body}</s:Body></s:Envelope>'.encode("utf-8")


def authed(body: str) -> bytes:
    """``body`` in a SOAP 1.2 envelope signed by the admin user."""
    return envelope(body, security_header())


def op(namespace: str, name: str, inner: str = "") -> str:
    """An operation element ``<name xmlns=namespace>inner</name>``; ``tt`` is declared for children."""
    return f'<{name} xmlns="{namespace}" xmlns:tt="{ns.TT}">{inner}</{name}>'


GET_DATE = envelope(op(ns.TDS, "GetSystemDateAndTime"))


def get_profiles() -> bytes:
    """An authenticated Media GetProfiles."""
    return authed(op(ns.TRT, "GetProfiles"))


# --- HTTP responses ------------------------------------------------------------------------------


@dataclass
class HttpReply:
    """One parsed HTTP/1.x response."""

    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str:
        """The first value of a header, or ""."""
        return (self.headers.get(name.lower()) or [""])[0]


def parse_http_response(data: bytes, closed: bool = False) -> HttpReply | None:
    """The first complete response in ``data`` (interim 1xx skipped), or None while it is incomplete."""
    while True:
        head, separator, rest = data.partition(b"\r\n\r\n")
        if not separator:
            return None
        lines = head.decode("latin-1").split("\r\n")
        match = re.match(r"^HTTP/1\.[01] (\d{3})", lines[0])
        if match is None:
            raise AssertionError(f"not an HTTP response: {data[:200]!r}")
        status = int(match.group(1))
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        if 100 <= status < 200:
            data = rest
            continue
        if "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
            body = _dechunk(rest)
            if body is None:
                return HttpReply(status, headers, rest) if closed else None
            return HttpReply(status, headers, body)
        if "content-length" in headers:
            length = int(headers["content-length"][0])
            if len(rest) < length:
                return None
            return HttpReply(status, headers, rest[:length])
        return HttpReply(status, headers, rest) if closed else None


def _dechunk(data: bytes) -> bytes | None:
    body = b""
    while True:
        size_line, separator, data = data.partition(b"\r\n")
        if not separator:
            return None
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body
        if len(data) < size + 2:
            return None
        body, data = body + data[:size], data[size + 2:]


def soap_fault(body: bytes) -> _Element | None:
    """The Fault element of a SOAP 1.2 or 1.1 response body, or None when it holds none."""
    root = etree.fromstring(body, _PARSER)
    for envelope_ns in (ns.SOAP12, ns.SOAP11):
        if root.tag == ns.q(envelope_ns, "Envelope"):
            return root.find(f"{ns.q(envelope_ns, 'Body')}/{ns.q(envelope_ns, 'Fault')}")
    raise AssertionError(f"not a SOAP envelope: {body[:200]!r}")


def check_reply(reply: HttpReply | None, request: bytes = b"") -> None:
    """The contract for any request: a SOAP answer (200, or a Fault with 4xx/5xx) or a plain 4xx, never a traceback."""
    assert reply is not None, f"no complete HTTP response to {request[:200]!r}"
    assert b"Traceback" not in reply.body and b'File "' not in reply.body, reply.body[:500]
    if reply.status == 200:
        assert soap_fault(reply.body) is None, reply.body[:500]
    elif 500 <= reply.status < 600:
        assert soap_fault(reply.body) is not None, f"{reply.status} without a SOAP Fault: {reply.body[:300]!r}"
    else:
        assert 400 <= reply.status < 500, f"status {reply.status} for {request[:200]!r}"


def fault_subcodes(body: bytes) -> list[str]:
    """The ter: subcodes of a SOAP 1.2 fault, outermost first."""
    fault = soap_fault(body)
    assert fault is not None, body[:300]
    return [(v.text or "").split(":")[-1] for v in fault.iterfind(f".//{{{ns.SOAP12}}}Subcode/{{{ns.SOAP12}}}Value")]


def fault_reason(body: bytes) -> str:
    """The reason text of a SOAP fault."""
    fault = soap_fault(body)
    assert fault is not None, body[:300]
    return "".join(fault.itertext())


# --- clients -------------------------------------------------------------------------------------


async def soap_post(port: int, body: bytes, path: str = "/onvif/device_service", timeout: float = 15.0,
                    content_type: str = SOAP12_TYPE) -> HttpReply:
    """POST ``body`` to the relay on 127.0.0.1:port and return the reply."""
    response = await treq.post(f"http://127.0.0.1:{port}{path}", body, headers={"Content-Type": [content_type]},
                               timeout=timeout, persistent=False)
    content = await response.content()
    headers = {k.decode().lower(): [v.decode("latin-1") for v in vs] for k, vs in response.headers.getAllRawHeaders()}
    return HttpReply(response.code, headers, content)


async def answers_soap(port: int) -> bool:
    """Whether the relay on ``port`` answers GetSystemDateAndTime."""
    try:
        reply = await soap_post(port, GET_DATE, timeout=2.0)
    except Exception:  # noqa: BLE001 - not up (yet)
        return False
    return reply.status == 200


class RawConnection(Protocol):
    """A client connection that writes what it is told and keeps every byte it receives."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        """Keep it (bounded: the tests never need more than a response or two)."""
        if len(self.received) < 4 * 1024 * 1024:
            self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        """Note that the server (or we) closed the connection."""
        self.closed = True
        self.lost.callback(None)

    def send(self, data: bytes) -> None:
        """Write ``data`` unless the connection is gone."""
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def abort(self) -> None:
        """Drop the connection at once."""
        if not self.closed and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def reply(self) -> HttpReply | None:
        """The first complete response received so far."""
        return parse_http_response(self.received, closed=self.closed)


async def raw_connect(port: int, source: str | None = None) -> RawConnection:
    """A RawConnection to 127.0.0.1:port (from ``source``, e.g. 127.0.0.2, when given)."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5,
                                  bindAddress=(source, 0) if source else None)
    connection: RawConnection = await endpoint.connect(Factory.forProtocol(RawConnection))
    return connection


async def raw_exchange(port: int, data: bytes, timeout: float = 15.0) -> HttpReply | None:
    """Send ``data`` on a fresh connection; the first complete response, or None if the server closed without one."""
    connection = await raw_connect(port)
    try:
        connection.send(data)
        await poll(lambda: connection.reply() is not None or connection.closed, timeout=timeout,
                   interval=0.01, what="a response")
        return connection.reply()
    finally:
        connection.abort()


# --- simulators with fault switches ------------------------------------------------------------


class TrackingSite(Site):
    """A Site that can drop every connection it has open (a crash or reboot kills established connections)."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)  # type: ignore[no-untyped-call]
        self.displayTracebacks = False
        self.channels: weakref.WeakSet[Any] = weakref.WeakSet()

    def buildProtocol(self, addr: Any) -> Any:
        """Remember the channel."""
        channel = super().buildProtocol(addr)  # type: ignore[no-untyped-call]
        self.channels.add(channel)
        return channel

    def drop_all(self) -> None:
        """Abort every open connection."""
        for channel in list(self.channels):
            # Site wraps each HTTPChannel in a _GenericHTTPChannelProtocol proxy.
            transport = getattr(getattr(channel, "_channel", channel), "transport", None)
            if transport is not None:
                transport.abortConnection()


class Listener:
    """A site on a fixed 127.0.0.1 port that can go away (refusing connections) and come back."""

    def __init__(self, factory: Any, listening: bool = True) -> None:
        self.factory = factory
        self._port: Any = None
        self.port = 0
        if listening:
            self._port = reactor.listenTCP(0, factory, interface="127.0.0.1")
            self.port = int(self._port.getHost().port)
        else:
            self.port = free_port()

    @property
    def up(self) -> bool:
        """Whether it listens now."""
        return self._port is not None

    async def down(self) -> None:
        """Stop listening and drop the connections that are open."""
        if self._port is not None:
            port, self._port = self._port, None
            await port.stopListening()
        drop = getattr(self.factory, "drop_all", None)
        if drop is not None:
            drop()

    def back(self) -> None:
        """Listen again on the same port."""
        if self._port is None:
            self._port = reactor.listenTCP(self.port, self.factory, interface="127.0.0.1")


class FaultyMediamtx(Resource):
    """The fake mediamtx API with a fault switch: ``ok``, ``http500``, ``garbage`` or ``slow``."""

    isLeaf = True

    def __init__(self, fake: FakeMediamtx) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.fake = fake
        self.mode = "ok"
        self.slow_delay = 10.0
        self.requests = 0
        self._timers: list[Any] = []

    def render(self, request: Request) -> bytes | int:
        """Answer as the fault says, else as the fake does."""
        self.requests += 1
        if self.mode == "http500":
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            return b'{"status":"error","error":"internal error: database is locked"}'
        if self.mode == "garbage":
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            return b'{"version": "v1.20.1", "started": \x00\xff<html>'
        if self.mode == "slow":
            lost: list[Any] = []
            request.notifyFinish().addErrback(lost.append)

            def answer() -> None:
                if lost:
                    return
                body = self.fake.render(request)
                if isinstance(body, bytes):
                    request.write(body)
                    request.finish()

            self._timers.append(reactor.callLater(self.slow_delay, answer))
            return NOT_DONE_YET
        return self.fake.render(request)

    def heal(self) -> None:
        """End the fault; slow answers still pending are dropped."""
        self.mode = "ok"
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers.clear()


HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Router login</title></head>"
             b"<body><form action=/login>Password: <input name=pw type=password></form></body></html>\n")


class FaultyCamera(Resource):
    """A simulated camera with a fault switch: ``ok``, ``hang`` (stalls mid-reply) or ``html``."""

    isLeaf = True

    def __init__(self, camera: SimulatedCamera) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.camera = camera
        self.mode = "ok"
        self.requests = 0
        self._held: list[Request] = []

    def render(self, request: Request) -> bytes | int:
        """Answer as the fault says, else as the simulated camera does."""
        self.requests += 1
        if self.mode == "hang":
            request.setHeader(b"content-type", b"text/plain")
            request.write(b"TIMELAPSE=\nTIMESTA")
            self._held.append(request)
            return NOT_DONE_YET
        if self.mode == "html":
            request.setHeader(b"content-type", b"text/html")
            return HTML_PAGE
        return self.camera.render(request)

    def heal(self) -> None:
        """End the fault; replies left hanging are cut off."""
        self.mode = "ok"
        held, self._held = self._held, []
        for request in held:
            transport = getattr(request.channel, "transport", None)
            if transport is not None:
                transport.abortConnection()


class BlackHole:
    """A port whose accept queue is full, so that connection attempts hang (a camera gone from the network)."""

    def __init__(self, port: int) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(0)
        self.fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            self.fillers.append(filler)

    def close(self) -> None:
        """Free the port."""
        for filler in self.fillers:
            filler.close()
        self.listener.close()


class RtspStandIn(Protocol):
    """Answers RTSP OPTIONS like a camera's RTSP server (the health check needs no more)."""

    def dataReceived(self, data: bytes) -> None:
        """Answer each request with 200 OK."""
        for _ in range(data.count(b"\r\n\r\n")):
            self.transport.write(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY\r\n\r\n")


class RtspFactory(Factory):
    """Builds RtspStandIn connections and can drop them all."""

    protocol = RtspStandIn

    def __init__(self) -> None:
        self.connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def buildProtocol(self, addr: Any) -> Any:
        """Remember the connection."""
        protocol = super().buildProtocol(addr)
        self.connections.add(protocol)
        return protocol

    def drop_all(self) -> None:
        """Abort every open connection."""
        for protocol in list(self.connections):
            if protocol.transport is not None:
                protocol.transport.abortConnection()


@dataclass
class CameraRig:
    """One simulated camera: its HTTP API (with faults) and its RTSP port."""

    id: str
    model: str
    sim: SimulatedCamera
    faulty: FaultyCamera
    http: Listener
    rtsp: Listener

    async def power_off(self) -> None:
        """The camera reboots: HTTP and RTSP stop answering, open connections die."""
        await self.http.down()
        await self.rtsp.down()

    def power_on(self) -> None:
        """The camera is back."""
        self.http.back()
        self.rtsp.back()


SWING_MODEL = "ATOM_CAKP1JZJP"
CAM2_MODEL = "ATOM_CamV3C"


@dataclass
class Rig:
    """A fake mediamtx with fault switches and simulated cameras, all on 127.0.0.1."""

    fake: FakeMediamtx
    mediamtx: FaultyMediamtx
    api: Listener
    cameras: dict[str, CameraRig]

    @property
    def path_names(self) -> set[str]:
        """Every mediamtx path the relay should register."""
        return {f"{camera_id}/{stream}" for camera_id in self.cameras for stream in ("main", "sub")}

    def paths_registered(self) -> bool:
        """Whether the fake mediamtx has every path of every camera."""
        return self.path_names <= set(self.fake.paths)

    async def stop(self) -> None:
        """Close every listening port and cancel pending slow answers."""
        self.mediamtx.heal()
        await self.api.down()
        for camera in self.cameras.values():
            camera.faulty.heal()
            await camera.power_off()


def start_rig(cameras: tuple[tuple[str, str], ...] = (("swing", SWING_MODEL), ("cam2", CAM2_MODEL)),
              api_up: bool = True) -> Rig:
    """Start the simulators; with ``api_up=False`` the mediamtx port is reserved but not listening yet."""
    fake = FakeMediamtx(reactor)
    faulty = FaultyMediamtx(fake)
    api = Listener(TrackingSite(faulty), listening=api_up)
    rigs = {}
    for camera_id, model in cameras:
        sim = SimulatedCamera(reactor, model, hostname=camera_id, move_speed_deg_per_s=720.0)
        faulty_camera = FaultyCamera(sim)
        rigs[camera_id] = CameraRig(camera_id, model, sim, faulty_camera, Listener(TrackingSite(faulty_camera)),
                                    Listener(RtspFactory()))
    return Rig(fake, faulty, api, rigs)


def relay_config(rig: Rig, onvif_port: int, state_dir: Path, *, wait_timeout: str = "5s",
                 poll_interval: str = "200ms", health_interval: str = "1s", http_basic: bool = False,
                 auto_models: bool = False, max_clock_skew: str | None = None) -> str:
    """The relay's YAML config for ``rig``: user admin, webhook tokens, two streams per camera.

    With ``auto_models`` every camera is ``model: auto`` (read from the camera), else its rig model;
    ``max_clock_skew`` sets ``onvif.max_clock_skew`` (else the default).
    """
    lines = [
        "onvif:",
        "  bind: 127.0.0.1",
        f"  port: {onvif_port}",
        f"  http_basic: {'true' if http_basic else 'false'}",
        *([f"  max_clock_skew: {max_clock_skew}"] if max_clock_skew is not None else []),
        f'  users: [{{username: {USER}, password: "{PASSWORD}", role: Administrator}}]',
        "discovery: {enabled: false}",
        "mediamtx:",
        f"  api_url: http://127.0.0.1:{rig.api.port}",
        f"  poll_interval: {poll_interval}",
        f"  wait_timeout: {wait_timeout}",
        f"health: {{interval: {health_interval}}}",
        f"state_dir: {state_dir}",
        "cameras:",
    ]
    for camera in rig.cameras.values():
        lines += [
            f"  - id: {camera.id}",
            "    host: 127.0.0.1",
            f"    http_port: {camera.http.port}",
            f"    rtsp_port: {camera.rtsp.port}",
            f"    model: {'auto' if auto_models else camera.model}",
            f"    webhook_token: {WEBHOOK_TOKEN}",
            "    streams:",
            "      - {name: main, rtsp_path: video0_unicast, codec: h264, audio: transcode}",
            "      - {name: sub, rtsp_path: video1_unicast, codec: h265, audio: none, width: 640, height: 360}",
        ]
    return "\n".join(lines) + "\n"


# --- the relay as a process ------------------------------------------------------------------------


class _Output(ProcessProtocol):
    def __init__(self, process: RelayProcess) -> None:
        self.process = process
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        self.process.lines.extend(line.decode("utf-8", "replace") for line in lines)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if self._partial:
            self.process.lines.append(self._partial.decode("utf-8", "replace"))
        self.process.ended.callback(reason.value)


@dataclass
class RelayProcess:
    """``atomrelay run`` as a child process (optionally behind a wrapper such as ``unshare``)."""

    config_path: Path
    onvif_port: int
    prefix: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    ended: Deferred[Any] = field(default_factory=Deferred)
    transport: Any = None

    def start(self) -> None:
        """Spawn it."""
        args = [*self.prefix, str(VENV_BIN / "atomrelay"), "run", "-c", str(self.config_path)]
        self.transport = reactor.spawnProcess(_Output(self), args[0], args, env=child_env(),
                                              path=str(self.config_path.parent))

    @property
    def pid(self) -> int:
        """The child's process id."""
        return int(self.transport.pid)

    @property
    def alive(self) -> bool:
        """Whether it is still running."""
        return not self.ended.called

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until it answers SOAP."""
        await poll(lambda: answers_soap(self.onvif_port) if self.alive else True, timeout=timeout,
                   what="the relay to answer SOAP")
        assert self.alive, self.output

    def mark(self) -> int:
        """A position in the log, for ``since``."""
        return len(self.lines)

    def since(self, mark: int, pattern: str = "") -> list[str]:
        """The log lines after ``mark`` matching the regular expression ``pattern``."""
        regex = re.compile(pattern)
        return [line for line in self.lines[mark:] if regex.search(line)]

    async def wait_for(self, pattern: str, mark: int = 0, timeout: float = 15.0) -> str:
        """The first log line after ``mark`` matching ``pattern``, waiting up to ``timeout`` seconds."""
        try:
            await poll(lambda: bool(self.since(mark, pattern)) or not self.alive, timeout=timeout,
                       what=f"a log line matching {pattern!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the relay logged since then:\n" + "\n".join(self.lines[mark:])) from None
        found = self.since(mark, pattern)
        assert found, f"the relay exited before logging {pattern!r}:\n{self.output}"
        return found[0]

    @property
    def output(self) -> str:
        """Everything it logged."""
        return "\n".join(self.lines)

    def rss_kib(self) -> int:
        """Its resident set size (KiB), from /proc."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None
        return int(match.group(1))

    async def stop(self, timeout: float = 20.0) -> Any:
        """SIGTERM, wait for the exit (SIGKILL after ``timeout``); the exit reason."""
        if self.alive:
            self.transport.signalProcess("TERM")
        deadline = time.monotonic() + timeout
        await poll(lambda: not self.alive or time.monotonic() > deadline, timeout=timeout + 5, what="the relay to exit")
        if self.alive:
            self.transport.signalProcess(signal.SIGKILL)
        return await self.ended


async def start_relay_process(rig: Rig, directory: Path, prefix: list[str] | None = None,
                              wait_ready: bool = True, **config: Any) -> RelayProcess:
    """Write a config for ``rig`` in ``directory`` and start ``atomrelay run`` on it."""
    onvif_port = free_port()
    path = directory / "config.yaml"
    path.write_text(relay_config(rig, onvif_port, directory / "state", **config), encoding="utf-8")
    path.chmod(0o600)
    process = RelayProcess(path, onvif_port, prefix or [])
    process.start()
    if wait_ready:
        await process.ready()
    return process


def log_errors(lines: list[str]) -> list[str]:
    """The lines that show a crash: tracebacks and unhandled errors."""
    return [line for line in lines if "Traceback" in line or "Unhandled" in line or "level=critical" in line]



# --- the relay in this process -------------------------------------------------------------------


@dataclass
class InProcessRelay:
    """The relay built by ``build_relay`` and started on this process's reactor."""

    service: Any
    port: int
    site: Site
    state_dir: Path

    async def stop(self) -> None:
        """Stop every service (listeners included)."""
        await self.service.stopService()


def all_services(service: Any) -> list[Any]:
    """``service`` and every service below it."""
    found = [service]
    for child in getattr(service, "services", []):
        found.extend(all_services(child))
    return found


def relay_sites(service: Any) -> list[Site]:
    """The twisted.web Sites of every listener in a service tree."""
    return [svc.factory for svc in all_services(service) if isinstance(getattr(svc, "factory", None), Site)]


async def start_inprocess_relay(rig: Rig, directory: Path, **config: Any) -> InProcessRelay:
    """Build the relay for ``rig`` as ``atomrelay run`` would, start it here and wait until it answers."""
    from atomrelay.config import parse_config
    from atomrelay.wiring import build_relay

    port = free_port()
    state_dir = directory / "state"
    service = build_relay(parse_config(relay_config(rig, port, state_dir, **config), "<robustness>"), reactor)
    service.startService()
    relay = InProcessRelay(service, port, relay_sites(service)[0], state_dir)
    try:
        await poll(lambda: answers_soap(port), timeout=15, what="the in-process relay to answer")
    except BaseException:
        await relay.stop()
        raise
    return relay
