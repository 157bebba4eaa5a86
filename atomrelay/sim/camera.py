"""A simulated ATOM Cam running atomcam_tools v2.5.x, as seen over HTTP.

Serves the three CGIs the relay uses (``get_jpeg.cgi``, ``hack_ini.cgi``, ``cmd.cgi``)
with the quirks listed in ``shared/reference/atomcam.md``: a snapshot queue that answers
503 when full, socket-command replies that end in a NUL byte, absolute moves that only
answer when the motor stops, priority arbitration between concurrent moves, optional
HTTP Digest auth (realm ``atomcam``), and a ``hack.ini`` that carries secrets.

Time comes from the injected clock, so tests drive moves and slow snapshots with
``twisted.internet.task.Clock``. Test knobs are plain attributes and methods on
:class:`SimulatedCamera`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Literal, Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from atomrelay.camera.firmware import STREAM_DEFAULTS, Firmware, stream_index
from atomrelay.clock import Clock, DelayedCall
from atomrelay.sim.rtsp import SimStream


# Typed views of the Twisted objects used here: zope interfaces and twisted.web's
# Request are not typed for mypy without the mypy-zope plugin.
class _Request(Protocol):
    method: bytes
    uri: bytes
    path: bytes
    args: dict[bytes, list[bytes]]
    content: IO[bytes] | None

    def getHeader(self, key: bytes) -> bytes | None: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def setResponseCode(self, code: int) -> None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def notifyFinish(self) -> Deferred[None]: ...

    def loseConnection(self) -> None: ...


class _TCPReactor(Protocol):
    def listenTCP(self, port: int, factory: Site, backlog: int = 50, interface: str = "") -> IListeningPort: ...


@dataclass(frozen=True)
class CameraModel:
    """One ``PRODUCT_MODEL`` value and what the simulator does for it."""

    product_model: str
    product: str
    ptz: bool
    appver: str


MODELS: dict[str, CameraModel] = {
    model.product_model: model
    for model in (
        CameraModel("AC1", "ATOM Cam", False, "4.33.3.68"),
        CameraModel("ATOM_CamV3C", "ATOM Cam 2", False, "4.58.0.112"),
        CameraModel("ATOM_CAKP1JZJP", "ATOM Cam Swing", True, "4.58.0.112"),
        CameraModel("WYZE_CAKP2JFUS", "Wyze Cam v3", False, "4.36.9.139"),
    )
}
"""The models the firmware reports; only the Swing has motors."""

PAN_RANGE = (0.0, 355.0)
"""Pan limits of the Swing, degrees."""

TILT_RANGE = (0.0, 180.0)
"""Tilt limits of the Swing, degrees."""

ATOMHACKVER = "2.5.12"
"""The atomcam_tools version the simulator claims."""

KERNELVER = "Linux atomcam 3.10.14__isvp_swan_1.0__ #1 PREEMPT Thu Jun 9 15:30:12 JST 2022 mips GNU/Linux"
"""The ``uname -a`` line hack_ini.cgi reports."""

SECRET_VALUES: tuple[str, ...] = (
    "sim-wifi-passphrase-do-not-leak",
    "sim-web-password-do-not-leak",
    "sim-rtsp-password-do-not-leak",
    "sim-cifs-password-do-not-leak",
)
"""Fake secrets present in every simulated hack.ini; nothing the relay shows may contain them."""

MOVE_CANCELED = "error : canceled"
"""Reply to a move interrupted by a move with a better (lower) priority number."""

MOVE_REJECTED = "error : multiple request."
"""Reply to a move that lost against the move already in progress."""

MOVE_DISMISSED = "error : dismiss request."
"""The firmware's other rejection of a concurrent move; the default for :meth:`SimulatedCamera.fail_next`."""

# An 8x8 mid-gray baseline JPEG made with
# `ffmpeg -f lavfi -i color=c=gray:s=8x8 -frames:v 1 -pix_fmt gray -q:v 10 tiny.jpg`;
# ffprobe reads it as mjpeg 8x8 and ffmpeg decodes it to 64 pixels of value 0x80.
SNAPSHOT_JPEG: bytes = base64.b64decode(
    "/9j/4AAQSkZJRgABAgAAAQABAAD//gAQTGF2YzU5LjM3LjEwMAD/2wBDAAgUFBcUFxsbGxsbGyAe"
    "ICEhISAgICAhISEkJCQqKiokJCQhISQkKCgqKi4vLisrKisvLzIyMjw8OTlGRkhWVmf/xABKAAEA"
    "AAAAAAAAAAAAAAAAAAAAAQEAAAAAAAAAAAAAAAAAAAAAEAEAAAAAAAAAAAAAAAAAAAAAEQEAAAAA"
    "AAAAAAAAAAAAAAAA/8AAEQgACAAIAwESAAISAAMSAP/aAAwDAQACEQMRAD8AAA//2Q=="
)
"""The image every ``get_jpeg.cgi`` call returns."""

FIRMWARE_DEFAULTS: dict[str, str] = {
    "FRAMERATE": "20",
    "RTSP_VIDEO0": "on",
    "RTSP_AUDIO0": "S16_BE",
    "RTSP_VIDEO1": "on",
    "RTSP_AUDIO1": "off",
    "RTSP_VIDEO2": "off",
    "RTSP_AUDIO2": "off",
    "RTSP_AUTH": "off",
    "RTSP_OVER_HTTP": "off",
    "WEBHOOK": "off",
    "WEBHOOK_URL": "",
    "WEBHOOK_ALARM_EVENT": "off",
    "WEBHOOK_ALARM_INFO": "off",
    "WEBHOOK_ALARM_VIDEO_FINISH": "off",
    "WEBHOOK_ALARM_PICT_FINISH": "off",
    "ONVIF_ENABLE": "off",
}
"""The simulated hack.ini's RTSP and webhook settings, before the ``firmware`` argument's changes."""

_FIFO_COMMANDS = frozenset({"reboot", "posrec", "moveinit", "rtspserver on", "rtspserver off", "rtspserver restart"})
_NIGHT_MODES = frozenset({"on", "off", "auto"})
_DIGEST_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^\s,]*)\s*(?:,|$)')

OfflineMode = Literal["hang", "refuse"]


def _format_position(pan: float, tilt: float) -> str:
    return f"{pan:.2f} {tilt:.2f}"


def _clamp(value: float, limits: tuple[float, float]) -> float:
    return min(max(value, limits[0]), limits[1])


def _md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


@dataclass
class _NonceState:
    issued_at: float
    last_nc: int = 0


class _DigestGuard:
    """Server side of RFC 7616 Digest auth (MD5, qop=auth) for one user, as lighttpd does it."""

    realm = "atomcam"
    nonce_lifetime = 300.0

    def __init__(self, clock: Clock, username: str, password: str) -> None:
        self._clock = clock
        self._username = username
        self._ha1 = _md5_hex(f"{username}:{self.realm}:{password}")
        self._nonces: dict[str, _NonceState] = {}

    def check(self, request: _Request) -> Literal["ok", "stale", "denied"]:
        """Whether ``request`` carries a valid Authorization header for a nonce we issued."""
        header = request.getHeader(b"authorization")
        if header is None or not header[:7].lower() == b"digest ":
            return "denied"
        params = _parse_digest_params(header[7:].decode("latin-1"))
        if params is None:
            return "denied"
        uri = request.uri.decode("latin-1")
        required = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        if any(name not in params for name in required):
            return "denied"
        if (
            params["username"] != self._username
            or params["realm"] != self.realm
            or params["uri"] != uri
            or params["qop"] != "auth"
            or params.get("algorithm", "MD5").upper() != "MD5"
        ):
            return "denied"
        try:
            nc = int(params["nc"], 16)
        except ValueError:
            return "denied"
        method = request.method.decode("latin-1")
        ha2 = _md5_hex(f"{method}:{uri}")
        expected = _md5_hex(f"{self._ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}")
        if not hmac.compare_digest(expected, params["response"].lower()):
            return "denied"
        state = self._nonces.get(params["nonce"])
        if state is None or self._clock.seconds() - state.issued_at > self.nonce_lifetime:
            return "stale"
        if nc <= state.last_nc:
            return "denied"
        state.last_nc = nc
        return "ok"

    def challenge(self, request: _Request, stale: bool) -> bytes:
        """Answer 401 with a fresh nonce."""
        now = self._clock.seconds()
        for nonce in [n for n, s in self._nonces.items() if now - s.issued_at > self.nonce_lifetime]:
            del self._nonces[nonce]
        nonce = secrets.token_hex(16)
        self._nonces[nonce] = _NonceState(issued_at=now)
        value = f'Digest realm="{self.realm}", qop="auth", nonce="{nonce}", algorithm=MD5'
        if stale:
            value += ", stale=true"
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", value.encode("ascii"))
        request.setHeader(b"content-type", b"text/html")
        return b"<html><head><title>401 Unauthorized</title></head><body><h1>401 Unauthorized</h1></body></html>\n"


def _parse_digest_params(text: str) -> dict[str, str] | None:
    """The ``key=value`` pairs of a Digest Authorization header, unquoted; None if malformed."""
    params: dict[str, str] = {}
    position = 0
    text = text.strip()
    while position < len(text):
        match = _DIGEST_PARAM.match(text, position)
        if match is None or match.end() == position:
            return None
        quoted = match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else match.group(2)
        params[match.group(1).lower()] = value
        position = match.end()
    return params


class _Move:
    """An absolute move in progress, interpolated linearly between start and target."""

    def __init__(
        self,
        request: _Request | None,
        start: tuple[float, float],
        target: tuple[float, float],
        started_at: float,
        duration: float,
        priority: int,
        call: DelayedCall,
    ) -> None:
        self.request = request
        self.start = start
        self.target = target
        self.started_at = started_at
        self.duration = duration
        self.priority = priority
        self.call = call

    def position_at(self, now: float) -> tuple[float, float]:
        fraction = min(max((now - self.started_at) / self.duration, 0.0), 1.0)
        return (
            self.start[0] + (self.target[0] - self.start[0]) * fraction,
            self.start[1] + (self.target[1] - self.start[1]) * fraction,
        )


class _PendingSnapshot:
    """A ``get_jpeg.cgi`` request waiting for its simulated capture delay."""

    def __init__(self, clock: Clock, request: _Request, delay: float, on_done: Callable[[], None],
                 jpeg: bytes) -> None:
        self._request = request
        self._jpeg = jpeg
        self._on_done = on_done
        self._call = clock.callLater(delay, self._deliver)
        request.notifyFinish().addErrback(self._lost)

    def _deliver(self) -> None:
        self._on_done()
        self._request.setHeader(b"content-type", b"image/jpeg")
        self._request.write(self._jpeg)
        self._request.finish()

    def _lost(self, reason: Failure) -> None:
        if self._call.active():
            self._call.cancel()
            self._on_done()


class SimulatedCamera(Resource):
    """The HTTP side of one ATOM Cam, as a twisted.web resource to serve with a ``Site`` or ``StubTreq``.

    ``firmware`` holds the hack.ini settings (:data:`FIRMWARE_DEFAULTS` updated with the
    argument), which ``hack_ini.cgi`` serves and :meth:`rtsp_stream` follows.

    Knobs for tests: ``snapshot_delay`` (seconds each snapshot takes, default 0),
    ``busy`` (every snapshot answers 503), ``reply_suffix`` (what socket-command replies
    end with, default ``b"\\n\\x00"``), ``set_offline()``, ``fail_next()``, and the
    motor attributes ``pan``, ``tilt`` (where the motor rests; :meth:`position`
    interpolates during a move), ``hflip``, ``vflip``, ``home``. Counters:
    ``snapshot_requests`` (every ``get_jpeg.cgi`` request that reached the camera,
    503s included) and ``commands`` (every socket command, in order).
    """

    log = Logger()
    isLeaf = True

    def __init__(
        self,
        clock: IReactorTime,
        model: str,
        hostname: str = "atomcam",
        hwaddr: str = "02:00:5e:00:53:01",
        username: str | None = None,
        password: str | None = None,
        move_speed_deg_per_s: float = 60.0,
        queue_limit: int = 8,
        firmware: dict[str, str] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; expected one of {', '.join(sorted(MODELS))}")
        if (username is None) != (password is None):
            raise ValueError("username and password must be given together")
        self.snapshot_jpeg = SNAPSHOT_JPEG
        """What ``get_jpeg.cgi`` answers (the demo puts a test pattern here when ffmpeg is present)."""
        if move_speed_deg_per_s <= 0:
            raise ValueError("move_speed_deg_per_s must be positive")
        self.clock = clock
        self._clock = cast(Clock, clock)
        self.model = MODELS[model]
        self.hostname = hostname
        self.hwaddr = hwaddr
        self.move_speed_deg_per_s = move_speed_deg_per_s
        self.queue_limit = queue_limit
        self.pan = 180.0
        self.tilt = 90.0
        self.hflip = 0
        self.vflip = 0
        self.home = (self.pan, self.tilt)
        self.properties: dict[str, str] = {"nightVision": "auto", "IrLED": "auto", "motionDet": "on"}
        self.video_flip = ""
        self.rtsp_server = "on"
        self.firmware = {**FIRMWARE_DEFAULTS, **(firmware or {})}
        self.snapshot_delay = 0.0
        self.busy = False
        self.reply_suffix = b"\n\x00"
        self.snapshot_requests = 0
        self.commands: list[str] = []
        self._guard: _DigestGuard | None = None
        if username is not None and password is not None:
            self._guard = _DigestGuard(self._clock, username, password)
        self._offline: OfflineMode | None = None
        self._held: list[_Request] = []
        self._fail_count = 0
        self._fail_reply = MOVE_DISMISSED
        self._move: _Move | None = None
        self._snapshots_in_flight = 0

    # Test knobs

    def set_offline(self, offline: bool, mode: OfflineMode = "hang") -> None:
        """Make the camera stop answering (``hang``: hold requests open; ``refuse``: drop the connection).

        ``refuse`` closes each connection without a response, which a client sees as a
        reset. For a real refused connect (nothing listening), stop the listening port
        returned by :func:`listen_camera` instead. Going back online drops the
        connections still held by ``hang``.
        """
        if offline:
            self._offline = mode
            return
        self._offline = None
        held, self._held = self._held, []
        for request in held:
            request.loseConnection()

    def fail_next(self, n: int, reply: str = MOVE_DISMISSED) -> None:
        """Answer the next ``n`` socket commands with ``reply`` instead of running them."""
        self._fail_count = n
        self._fail_reply = reply

    @property
    def held_requests(self) -> int:
        """How many requests the ``hang`` offline mode is holding open."""
        return len(self._held)

    @property
    def snapshots_in_flight(self) -> int:
        """Snapshot requests accepted and not yet answered."""
        return self._snapshots_in_flight

    @property
    def moving(self) -> bool:
        """Whether a move is in progress."""
        return self._move is not None

    def position(self) -> tuple[float, float]:
        """The current (pan, tilt), interpolated during a move."""
        if self._move is not None:
            return self._move.position_at(self._clock.seconds())
        return (self.pan, self.tilt)

    def rtsp_stream(self, path: str) -> SimStream | None:
        """What the RTSP server sends on ``path``: None for an unknown path, a stream switched off, or RTSP off."""
        index = stream_index(path)
        firmware = Firmware(self.firmware)
        if index is None or self.rtsp_server != "on" or not firmware.video_on(index):
            return None
        defaults = STREAM_DEFAULTS[index]
        return SimStream(defaults.codec, defaults.width, defaults.height, firmware.framerate, firmware.audio(index))

    # HTTP

    def render(self, request: Request) -> bytes | int:
        """Dispatch one request the way lighttpd and the CGIs on the camera would."""
        return self._dispatch(cast(_Request, request))

    def _dispatch(self, request: _Request) -> bytes | int:
        if self._offline == "hang":
            self._held.append(request)
            request.notifyFinish().addErrback(self._forget_held, request)
            return NOT_DONE_YET
        if self._offline == "refuse":
            request.loseConnection()
            return NOT_DONE_YET
        if self._guard is not None:
            verdict = self._guard.check(request)
            if verdict != "ok":
                self.log.debug(
                    "simulated camera {hostname}: digest auth {verdict}", hostname=self.hostname, verdict=verdict
                )
                return self._guard.challenge(request, stale=verdict == "stale")
        request.setHeader(b"cache-control", b"no-cache")
        if request.path == b"/cgi-bin/get_jpeg.cgi":
            return self._render_snapshot(request)
        if request.path == b"/cgi-bin/hack_ini.cgi":
            return self._render_hack_ini(request)
        if request.path == b"/cgi-bin/cmd.cgi":
            return self._render_cmd(request)
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/html")
        return b"<html><head><title>404 Not Found</title></head><body><h1>404 Not Found</h1></body></html>\n"

    def _forget_held(self, reason: Failure, request: _Request) -> None:
        if request in self._held:
            self._held.remove(request)

    def _render_snapshot(self, request: _Request) -> bytes | int:
        if request.method not in (b"GET", b"HEAD"):
            return _method_not_allowed(request)
        self.snapshot_requests += 1
        if self.busy or self._snapshots_in_flight >= self.queue_limit:
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/html")
            return b"<html><head><title>503 Service Unavailable</title></head><body></body></html>\n"
        if self.snapshot_delay <= 0:
            request.setHeader(b"content-type", b"image/jpeg")
            return self.snapshot_jpeg
        self._snapshots_in_flight += 1
        _PendingSnapshot(self._clock, request, self.snapshot_delay, self._snapshot_done, self.snapshot_jpeg)
        return NOT_DONE_YET

    def _snapshot_done(self) -> None:
        self._snapshots_in_flight -= 1

    def _render_hack_ini(self, request: _Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            return _method_not_allowed(request)
        wifi, web, rtsp, cifs = SECRET_VALUES
        lines = [
            f"appver={self.model.appver}",
            f"PRODUCT_MODEL={self.model.product_model}",
            f"HOSTNAME={self.hostname}",
            f"KERNELVER={KERNELVER}",
            f"ATOMHACKVER={ATOMHACKVER}",
            f"HWADDR={self.hwaddr}",
            "DIGEST=" + ("on" if self._guard is not None else "off"),
            "WIFI_SSID=sim-network",
            f"WIFI_PASSWORD={wifi}",
            "USER=admin",
            f"PASSWORD={web}",
            "RTSP_USER=viewer",
            f"RTSP_PASSWD={rtsp}",
            "STORAGE_CIFS=off",
            "STORAGE_CIFSSERVER=//nas.invalid/share",
            "STORAGE_CIFSUSER=camera",
            f"STORAGE_CIFSPASSWD={cifs}",
            *(f"{key}={value}" for key, value in self.firmware.items()),
        ]
        request.setHeader(b"content-type", b"text/plain")
        return ("\n".join(lines) + "\n").encode("utf-8")

    def _render_cmd(self, request: _Request) -> bytes | int:
        request.setHeader(b"content-type", b"text/plain")
        if request.method in (b"GET", b"HEAD"):
            names = request.args.get(b"name", [b""])
            if names[0] == b"status":
                return self._status_text().encode("utf-8")
            return b""
        if request.method != b"POST":
            return _method_not_allowed(request)
        _, _, query = request.uri.partition(b"?")
        if query != b"port=socket":
            request.setResponseCode(400)
            return b"error\n"
        try:
            body = json.loads(request.content.read() if request.content is not None else b"")
        except ValueError:
            return self._reply_bytes("error")
        command = body.get("exec") if isinstance(body, dict) else None
        if not isinstance(command, str):
            return self._reply_bytes("error")
        return self._execute(request, command.strip())

    def _status_text(self) -> str:
        timestamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(self._clock.seconds()))
        lines = ["TIMELAPSE=", f"TIMESTAMP={timestamp}"]
        if self.model.ptz:
            lines.append(f"MOTORPOS={self._motor_state()}")
        return "\n".join(lines) + "\n"

    def _motor_state(self) -> str:
        pan, tilt = self.position()
        idle = 0 if self._move is not None else 1
        return f"{_format_position(pan, tilt)} {self.hflip} {self.vflip} {idle}"

    def _reply_bytes(self, text: str) -> bytes:
        return text.encode("utf-8") + self.reply_suffix

    def _execute(self, request: _Request, command: str) -> bytes | int:
        """Run one socket command; a move answers later, everything else at once."""
        self.commands.append(command)
        if self._fail_count > 0:
            self._fail_count -= 1
            return self._reply_bytes(self._fail_reply)
        words = command.split()
        if not words:
            return self._reply_bytes("error")
        head, args = words[0], words[1:]
        if head == "move":
            return self._move_command(request, args)
        if head == "night" and len(args) == 1 and args[0] in _NIGHT_MODES:
            self.properties["nightVision"] = args[0]
            return self._reply_bytes("ok")
        if head == "property" and len(args) == 1:
            value = self.properties.get(args[0])
            return self._reply_bytes("error" if value is None else value)
        if head == "property" and len(args) == 2:
            self.properties[args[0]] = args[1]
            return self._reply_bytes("ok")
        if head == "video" and len(args) >= 2 and args[0] == "flip":
            self.video_flip = " ".join(args[1:])
            return self._reply_bytes("ok")
        if command == "jpeg":
            return self.snapshot_jpeg
        normalized = " ".join(words)
        if normalized in _FIFO_COMMANDS:
            self._run_fifo_command(normalized)
            return self._reply_bytes(f"{normalized} OK")
        return self._reply_bytes("error")

    def _run_fifo_command(self, command: str) -> None:
        if command == "posrec":
            self.home = self.position()
        elif command == "moveinit" and self.model.ptz and self._move is None:
            self.pan, self.tilt = self.home
        elif command.startswith("rtspserver "):
            self.rtsp_server = command.split()[1]
        self.log.info("simulated camera {hostname} ran {command}", hostname=self.hostname, command=command)

    def _move_command(self, request: _Request, args: list[str]) -> bytes | int:
        if not self.model.ptz:
            return self._reply_bytes("error")
        if not args:
            return self._reply_bytes(self._motor_state())
        if len(args) not in (2, 3, 4):
            return self._reply_bytes("error")
        try:
            pan, tilt = float(args[0]), float(args[1])
            speed = int(args[2]) if len(args) > 2 else 9
            priority = int(args[3]) if len(args) > 3 else 2
        except ValueError:
            return self._reply_bytes("error")
        if not (math.isfinite(pan) and math.isfinite(tilt)) or not 1 <= speed <= 9 or not 0 <= priority <= 3:
            return self._reply_bytes("error")
        target = (_clamp(pan, PAN_RANGE), _clamp(tilt, TILT_RANGE))
        if self._move is not None:
            if priority >= self._move.priority:
                return self._reply_bytes(MOVE_REJECTED)
            self._interrupt_move()
        start = (self.pan, self.tilt)
        distance = max(abs(target[0] - start[0]), abs(target[1] - start[1]))
        duration = distance / (self.move_speed_deg_per_s * speed / 9)
        if duration <= 0:
            return self._reply_bytes(f"{_format_position(*start)} {self.hflip} {self.vflip}")
        call = self._clock.callLater(duration, self._finish_move)
        move = _Move(request, start, target, self._clock.seconds(), duration, priority, call)
        self._move = move
        request.notifyFinish().addErrback(self._move_request_lost, move)
        self.log.debug(
            "simulated camera {hostname} moving to {pan} {tilt} in {duration}s",
            hostname=self.hostname,
            pan=target[0],
            tilt=target[1],
            duration=duration,
        )
        return NOT_DONE_YET

    def _interrupt_move(self) -> None:
        move = self._move
        assert move is not None
        self.pan, self.tilt = move.position_at(self._clock.seconds())
        move.call.cancel()
        self._move = None
        self._answer_move(move, MOVE_CANCELED)

    def _finish_move(self) -> None:
        move = self._move
        assert move is not None
        self.pan, self.tilt = move.target
        self._move = None
        self._answer_move(move, f"{_format_position(*move.target)} {self.hflip} {self.vflip}")

    def _answer_move(self, move: _Move, text: str) -> None:
        request, move.request = move.request, None
        if request is not None:
            request.write(self._reply_bytes(text))
            request.finish()

    def _move_request_lost(self, reason: Failure, move: _Move) -> None:
        move.request = None


def _method_not_allowed(request: _Request) -> bytes:
    request.setResponseCode(405)
    request.setHeader(b"content-type", b"text/html")
    return b"<html><head><title>405 Method Not Allowed</title></head><body></body></html>\n"


def listen_camera(
    reactor: IReactorTCP, camera: SimulatedCamera, port: int = 0, interface: str = "127.0.0.1"
) -> IListeningPort:
    """Serve ``camera`` over HTTP on ``interface:port`` (0 picks a free port); stop the port to refuse connections."""
    site = Site(camera, reactor=reactor)  # type: ignore[no-untyped-call]
    site.displayTracebacks = False
    return cast(_TCPReactor, reactor).listenTCP(port, site, interface=interface)


__all__ = [
    "ATOMHACKVER",
    "KERNELVER",
    "MODELS",
    "MOVE_CANCELED",
    "MOVE_DISMISSED",
    "MOVE_REJECTED",
    "PAN_RANGE",
    "SECRET_VALUES",
    "SNAPSHOT_JPEG",
    "TILT_RANGE",
    "CameraModel",
    "OfflineMode",
    "SimulatedCamera",
    "listen_camera",
]
