"""The camera webhook receiver: ``POST /webhook/<camera id>/<token>`` on the relay's HTTP port.

The atomcam_tools firmware POSTs JSON (``{"type": ..., "device": <hostname>, "data":
...}``) to one configured URL, waits at most 3 s and never retries, so everything here
is answered synchronously, in well under a millisecond of work:

=====================================================  =================================
request                                                answer
=====================================================  =================================
not POST                                               405
unknown camera, camera without ``webhook_token``,      404, no detail (the same bytes
wrong token, extra path segments                       for every case)
more than ``burst`` requests at ``rate`` per second    429 with Retry-After
for one camera
body over 64 KiB (declared or read)                    400
not JSON, not an object, no string ``type``, nesting   400
too deep
``alarmEvent``                                         204; motion on (or extended)
``recognitionNotify``                                  204; an ObjectDetector event and
                                                       the MyRuleDetector state on, per
                                                       recognised class
anything else (timelapse, upload, record events)       204, logged at debug
=====================================================  =================================

``recognitionNotify`` data differs between firmware versions (a text line of the
recogniser's output, or the vendor cloud JSON), so it is searched for words: ``person``,
``people``, ``human``, ``body``, ``pedestrian`` -> ``Human``; ``vehicle``, ``car``,
``truck`` -> ``Vehicle``; ``pet``, ``animal``, ``dog``, ``cat`` -> ``Animal`` (object keys
count only when their value is truthy, so ``{"person": 0}`` is no person). A
recognition without a known word raises no event.

The token is the only credential (the firmware cannot authenticate), compared in
constant time and never logged; ``access_log_formatter`` keeps it out of the access log,
whatever form the URL takes.
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator, Protocol
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger
from twisted.web.http import combinedLogFormatter
from twisted.web.resource import Resource

from atomrelay.auth.security import HttpRequest, remote_address
from atomrelay.clock import Clock
from atomrelay.events.state import EventHub

MAX_BODY = 64 * 1024
"""Largest webhook body accepted (bytes)."""
BURST = 10
"""Webhooks one camera may send back to back."""
RATE = 2.0
"""Webhooks per second one camera may send on average."""
LOG_INTERVAL = 60.0
"""Repeated rejections are logged at most this often per peer or camera."""

_PLAIN = b"text/plain; charset=utf-8"
_NOT_FOUND = b"Not found.\n"
_WORD = re.compile(r"[a-z]+")
_CLASS_WORDS = {
    "person": "Human",
    "people": "Human",
    "human": "Human",
    "body": "Human",
    "pedestrian": "Human",
    "vehicle": "Vehicle",
    "car": "Vehicle",
    "truck": "Vehicle",
    "pet": "Animal",
    "animal": "Animal",
    "dog": "Animal",
    "cat": "Animal",
}
_FALSY_TEXT = frozenset({"", "0", "false", "no", "off", "none", "null"})
_DECODE_ROUNDS = 4
_MAX_WORDS = 2000


class Request(HttpRequest, Protocol):
    """The part of twisted.web's Request the webhook receiver uses (typed for mypy)."""

    postpath: list[bytes]
    content: IO[bytes]

    def setHeader(self, name: bytes, value: bytes) -> None: ...


@dataclass
class _Bucket:
    tokens: float
    updated: float
    limited: bool = False


class WebhookResource(Resource):
    """``/webhook``: turns camera webhooks into hub inputs (mount as the root's ``webhook`` child).

    Cameras and tokens come from the hub, so a config reload that updates the hub
    updates the receiver too.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self, clock: Clock, hub: EventHub, max_body: int = MAX_BODY, burst: int = BURST, rate: float = RATE
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._clock = clock
        self._hub = hub
        self.max_body = max_body
        self.burst = burst
        self.rate = rate
        self._buckets: dict[str, _Bucket] = {}
        self._logged: dict[str, float] = {}

    def render(self, request: Request) -> bytes:
        """POST is served; every other method is 405."""
        if request.method == b"POST":
            return self.render_POST(request)
        request.setHeader(b"allow", b"POST")
        return _reply(request, 405, b"Method not allowed: webhooks are POSTed.\n")

    def render_POST(self, request: Request) -> bytes:
        """Check the camera, token, rate and body, then feed the hub; see the module docstring."""
        camera_id = self._authorised_camera(request)
        if camera_id is None:
            return _reply(request, 404, _NOT_FOUND)
        retry_after = self._spend(camera_id)
        if retry_after is not None:
            request.setHeader(b"retry-after", str(retry_after).encode("ascii"))
            return _reply(request, 429, b"Too many webhooks from this camera; slow down.\n")
        body = self._read(request)
        if body is None:
            self._log_once(f"size:{camera_id}", "camera {camera_id}: refused a webhook body over {limit} bytes",
                           camera_id=camera_id, limit=self.max_body)
            return _reply(request, 400, b"Bad request: the body is over 64 KiB.\n")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            self._log_once(f"json:{camera_id}", "camera {camera_id}: a webhook body is not JSON", camera_id=camera_id)
            return _reply(request, 400, b"Bad request: the body is not JSON.\n")
        kind = document.get("type") if isinstance(document, dict) else None
        if not isinstance(kind, str):
            self._log_once(f"json:{camera_id}", "camera {camera_id}: a webhook has no type", camera_id=camera_id)
            return _reply(request, 400, b"Bad request: expected a JSON object with a string \"type\".\n")
        self._dispatch(camera_id, kind, document.get("data"))
        request.setResponseCode(204)
        return b""

    def _authorised_camera(self, request: Request) -> str | None:
        segments = list(request.postpath)
        if len(segments) == 3 and segments[2] == b"":
            segments.pop()
        if len(segments) != 2:
            return None
        camera_id = segments[0].decode("utf-8", "replace")
        camera = self._hub.camera(camera_id)
        expected = camera.webhook_token if camera is not None else None
        if expected is None or not hmac.compare_digest(segments[1], expected.encode("utf-8")):
            self._log_once(
                f"404:{remote_address(request)}",
                "webhook for unknown camera {camera_id!r} or with a wrong token from {remote}",
                camera_id=camera_id if camera is not None else "?",  # an odd URL may have the token there
                remote=remote_address(request),
            )
            return None
        return camera_id

    def _spend(self, camera_id: str) -> int | None:
        """Take one token from the camera's bucket; the seconds to wait if it is empty."""
        now = self._clock.seconds()
        bucket = self._buckets.get(camera_id)
        if bucket is None:
            bucket = self._buckets[camera_id] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.limited = False
            return None
        if not bucket.limited:
            bucket.limited = True
            self._log_once(f"flood:{camera_id}", "camera {camera_id}: webhook flood, answering 429 for now",
                           camera_id=camera_id)
        return max(1, int((1.0 - bucket.tokens) / self.rate + 0.999))

    def _read(self, request: Request) -> bytes | None:
        declared = request.getHeader(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body:
            return None
        request.content.seek(0)
        data = request.content.read(self.max_body + 1)
        return data if len(data) <= self.max_body else None

    def _dispatch(self, camera_id: str, kind: str, data: Any) -> None:
        if kind == "alarmEvent":
            self._hub.motion_detected(camera_id)
        elif kind == "recognitionNotify":
            classes = recognised_classes(data)
            if not classes:
                self.log.debug("camera {camera_id}: recognitionNotify without a known class", camera_id=camera_id)
            for object_class in classes:
                self._hub.object_detected(camera_id, object_class)
        else:
            self.log.debug("camera {camera_id}: webhook {kind!r} ignored", camera_id=camera_id, kind=kind[:40])

    def _log_once(self, key: str, message: str, **fields: object) -> None:
        now = self._clock.seconds()
        last = self._logged.get(key)
        if last is not None and now - last < LOG_INTERVAL:
            return
        if len(self._logged) > 1024:
            self._logged.clear()
        self._logged[key] = now
        self.log.warn(message, **fields)


def _reply(request: Request, status: int, body: bytes) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", _PLAIN)
    return body


def _words(value: Any, depth: int = 0) -> Iterator[str]:
    if depth > 16:
        return
    if isinstance(value, str):
        yield from _WORD.findall(value.lower())
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _truthy(item):
                yield from _WORD.findall(key.lower())
            yield from _words(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _words(item, depth + 1)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in _FALSY_TEXT
    return bool(value)


def recognised_classes(data: Any) -> list[str]:
    """The ONVIF object classes (``Human``, ``Vehicle``, ``Animal``) a recognitionNotify names, in order."""
    found: list[str] = []
    for count, word in enumerate(_words(data)):
        if count >= _MAX_WORDS:
            break
        object_class = _CLASS_WORDS.get(word)
        if object_class is not None and object_class not in found:
            found.append(object_class)
    return found


class _RedactedRequest:
    """A view of a request whose URI has the webhook token replaced."""

    def __init__(self, request: Any, uri: bytes) -> None:
        self._request = request
        self.uri = uri

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def access_log_formatter(hub: EventHub) -> Callable[[str, Any], str]:
    """twisted.web's combined access log formatter for the relay's Sites, never showing a webhook token.

    A URI that mentions ``webhook`` in any case or percent-encoding is logged as
    ``/webhook/<camera id>/<token>``, the id being the path segment after ``webhook`` when
    it names one of ``hub``'s cameras, else ``?``: odd forms (``/webhook//cam1/TOKEN``,
    ``/webhook/x/../cam1/TOKEN``, ``%2F``, a query string) show no more than the right one.
    """

    def formatter(timestamp: str, request: Any) -> str:
        uri = request.uri
        if isinstance(uri, bytes):
            shown = _logged_uri(uri, hub)
            if shown is not None:
                request = _RedactedRequest(request, shown)
        line: str = combinedLogFormatter(timestamp, request)
        return line

    return formatter


def _logged_uri(uri: bytes, hub: EventHub) -> bytes | None:
    """The redacted URI for a webhook request, None for any other."""
    decoded = uri
    for _ in range(_DECODE_ROUNDS):
        once = unquote_to_bytes(decoded)
        if once == decoded:
            break
        decoded = once
    segments = [segment for segment in decoded.replace(b"?", b"/").split(b"/") if segment]
    webhook = next((index for index, segment in enumerate(segments) if b"webhook" in segment.lower()), None)
    if webhook is None:
        return None
    camera = b"?"
    if webhook + 1 < len(segments):
        candidate = segments[webhook + 1].decode("utf-8", "replace")
        if hub.camera(candidate) is not None:
            camera = candidate.encode("ascii")
    return b"/webhook/" + camera + b"/<token>"
