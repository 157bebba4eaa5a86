"""TEST DOUBLE of mediamtx's Control API v3, used by tests and ``atomrelay demo`` only.

This is not mediamtx and moves no media. It answers the part of the Control API that
the relay uses, following ``shared/reference/mediamtx-openapi.yaml`` (mediamtx v1.20.1)
for routes, schemas and status codes, and mediamtx's own source where the spec is
silent:

* Error bodies are ``{"status":"error","error":"<text>"}`` with mediamtx's texts:
  ``path already exists`` (add), ``path configuration not found`` (config get),
  ``path not found`` (patch, replace, delete, runtime get), ``invalid name`` (empty
  name), Go's ``encoding/json`` texts for bad bodies (``json: unknown field "x"``,
  ``json: cannot unmarshal string into Go struct field .sourceOnDemand of type bool``,
  ``unexpected end of JSON input``, ...), Go's ``time: invalid duration "x"`` for
  durations, ``strconv.ParseUint: parsing "x": invalid syntax`` for bad paging, and the
  path validation texts (``invalid source: 'x'``, ``'sourceOnDemand' is useless when
  source is 'publisher'``, ``invalid path name 'x': ...``).
* Unknown routes and known routes with the wrong method both answer 404 with the
  plain-text body ``404 page not found``: mediamtx uses gin with its default
  ``HandleMethodNotAllowed = false``, so there are no 405s.
* Path names are everything after the operation prefix, percent-decoded, so
  ``/v3/config/paths/add/living/main`` adds ``living/main`` (gin ``*name`` routes).
* With credentials set, every request needs HTTP Basic: without credentials the answer
  is 401 with ``WWW-Authenticate: Basic realm="mediamtx"``, with wrong ones a 401
  without that header (mediamtx then also waits 2 s; set ``auth_failure_pause``).
  Both bodies are ``{"status":"error","error":"authentication error"}``.
* A stored path configuration is the full PathConf: the defaults of
  ``pathDefaults`` in mediamtx.default.yml overlaid with the fields the client set,
  durations re-marshalled the way mediamtx does (``1h`` reads back as ``1h0m0s``).
  Deprecated fields are accepted and shown only when set, as mediamtx does.

Test knobs: :meth:`FakeMediamtx.restart`, :meth:`FakeMediamtx.set_down`,
:meth:`FakeMediamtx.set_ready`, the ``paths`` view of the configuration, and the
``writes`` record of every non-GET request.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from atomrelay.clock import Clock


# Typed views of the Twisted objects used here: zope interfaces and twisted.web's
# Request are not typed for mypy without the mypy-zope plugin.
class _Request(Protocol):
    method: bytes
    uri: bytes
    path: bytes

    def getHeader(self, key: bytes) -> bytes | None: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def setResponseCode(self, code: int) -> None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def notifyFinish(self) -> Deferred[None]: ...

    def loseConnection(self) -> None: ...


class _Body(Protocol):
    def read(self) -> bytes: ...


class _TCPReactor(Protocol):
    def listenTCP(self, port: int, factory: Site, backlog: int = 50, interface: str = "") -> IListeningPort: ...


# --- Go-compatible value handling -------------------------------------------------------


class _JSONFloat(str):
    """The source text of a JSON number with a fraction or exponent, kept for Go-style errors."""


class _DecodeError(Exception):
    """A body that mediamtx's decoder rejects; ``hard`` errors stop decoding at once."""

    def __init__(self, message: str, hard: bool = False) -> None:
        super().__init__(message)
        self.hard = hard


_DURATION_UNITS = {
    "ns": 1,
    "us": 10**3,
    "\u00b5s": 10**3,
    "\u03bcs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_DAYS_PREFIX = re.compile(r"^(-?[0-9]+)d")
_NUMBER = re.compile(r"([0-9]*)(?:\.([0-9]*))?")
_UNIT = re.compile(r"[^0-9.]*")
_NANOS_PER_DAY = 86400 * 10**9


def _go_quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _parse_go_duration(text: str) -> int:
    """Nanoseconds in ``text``, parsed like Go's ``time.ParseDuration``; ValueError with Go's message."""
    invalid = ValueError(f"time: invalid duration {_go_quote(text)}")
    rest = text
    negative = False
    if rest[:1] in ("+", "-"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if rest == "":
        raise invalid
    total = Decimal(0)
    while rest:
        number = _NUMBER.match(rest)
        assert number is not None
        whole, fraction = number.group(1), number.group(2)
        if whole == "" and not fraction:
            raise invalid
        rest = rest[number.end() :]
        unit_match = _UNIT.match(rest)
        assert unit_match is not None
        unit = unit_match.group(0)
        if unit == "":
            raise ValueError(f"time: missing unit in duration {_go_quote(text)}")
        if unit not in _DURATION_UNITS:
            raise ValueError(f"time: unknown unit {_go_quote(unit)} in duration {_go_quote(text)}")
        total += Decimal(f"{whole or '0'}.{fraction or '0'}") * _DURATION_UNITS[unit]
        rest = rest[len(unit) :]
    nanos = int(total)
    return -nanos if negative else nanos


def _parse_mediamtx_duration(text: str) -> int:
    """Nanoseconds in a mediamtx duration: Go's syntax plus a leading ``<n>d`` for days."""
    days = 0
    match = _DAYS_PREFIX.match(text)
    if match is not None:
        days = int(match.group(1))
        text = text[match.end() :]
    nanos = _parse_go_duration(text) if text else 0
    nanos += abs(days) * _NANOS_PER_DAY
    return -nanos if days < 0 else nanos


def _fmt_frac(value: int, precision: int) -> tuple[str, int]:
    digits = ""
    printing = False
    for _ in range(precision):
        digit = value % 10
        printing = printing or digit != 0
        if printing:
            digits = str(digit) + digits
        value //= 10
    return ("." + digits if printing else ""), value


def _go_duration_string(nanos: int) -> str:
    """Go's ``time.Duration.String()`` for a non-negative duration."""
    if nanos == 0:
        return "0s"
    if nanos < 10**3:
        return f"{nanos}ns"
    if nanos < 10**6:
        fraction, whole = _fmt_frac(nanos, 3)
        return f"{whole}{fraction}\u00b5s"
    if nanos < 10**9:
        fraction, whole = _fmt_frac(nanos, 6)
        return f"{whole}{fraction}ms"
    fraction, seconds = _fmt_frac(nanos, 9)
    text = f"{seconds % 60}{fraction}s"
    minutes = seconds // 60
    if minutes:
        text = f"{minutes % 60}m" + text
        hours = minutes // 60
        if hours:
            text = f"{hours}h" + text
    return text


def _format_mediamtx_duration(nanos: int) -> str:
    """A duration as mediamtx marshals it: ``1d``, ``10s``, ``1h0m0s`` (and ``""`` for zero)."""
    sign = "-" if nanos < 0 else ""
    days, rest = divmod(abs(nanos), _NANOS_PER_DAY)
    return sign + (f"{days}d" if days else "") + (_go_duration_string(rest) if rest else "")


def _rfc3339(seconds: float) -> str:
    """A UTC timestamp the way Go marshals ``time.Time`` (RFC 3339, trailing zeros dropped)."""
    whole = math.floor(seconds)
    nanos = round((seconds - whole) * 10**9)
    if nanos >= 10**9:
        whole, nanos = whole + 1, nanos - 10**9
    fraction = f".{nanos:09d}".rstrip("0") if nanos else ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + fraction + "Z"


def _json_kind(value: object) -> str:
    """The JSON type name Go's decoder uses in its errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str) and not isinstance(value, _JSONFloat):
        return "string"
    if isinstance(value, (int, _JSONFloat)):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(value: object, path: str, go_type: str, hard: bool = False, struct: str = "") -> _DecodeError:
    kind = _json_kind(value)
    if kind == "number" and go_type in ("int", "uint", "int64", "uint64"):
        kind = f"number {value}"
    return _DecodeError(f"json: cannot unmarshal {kind} into Go struct field {struct}.{path} of type {go_type}", hard)


def _syntax_error(text: str, error: json.JSONDecodeError) -> str:
    """Go's ``encoding/json`` syntax error text for what Python's decoder rejected."""
    position = error.pos
    if position >= len(text) or error.msg.startswith("Unterminated"):
        return "unexpected end of JSON input"
    contexts = {
        "Expecting value": "looking for beginning of value",
        "Expecting property name enclosed in double quotes": "looking for beginning of object key string",
        "Extra data": "after top-level value",
        "Expecting ':' delimiter": "after object key",
        "Expecting ',' delimiter": "after object key:value pair",
    }
    character = json.dumps(text[position], ensure_ascii=False)[1:-1]
    return f"invalid character '{character}' {contexts.get(error.msg, 'looking for beginning of value')}"


def _reject_constant(name: str) -> object:
    raise ValueError(name)


def _load_json(body: bytes) -> object:
    """Parse a request body as Go's ``json.Unmarshal`` would, raising _DecodeError with its text."""
    text = body.decode("utf-8", errors="replace")
    try:
        return json.loads(text, parse_float=_JSONFloat, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise _DecodeError(_syntax_error(text, error)) from error
    except ValueError as error:
        raise _DecodeError(f"invalid character '{str(error)[0]}' looking for beginning of value") from error


# --- PathConf schema ---------------------------------------------------------------------

_Converter = Callable[[object, str], object]


def _as_bool(value: object, path: str) -> object:
    if not isinstance(value, bool):
        raise _type_error(value, path, "bool")
    return value


def _as_string(value: object, path: str) -> object:
    if not isinstance(value, str) or isinstance(value, _JSONFloat):
        raise _type_error(value, path, "string")
    return str(value)


def _as_int(value: object, path: str) -> object:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise _type_error(value, path, "int")
    return value


def _as_uint(value: object, path: str) -> object:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise _type_error(value, path, "uint")
    return value


def _as_float(value: object, path: str) -> object:
    if isinstance(value, bool) or not isinstance(value, (int, _JSONFloat)):
        raise _type_error(value, path, "float64")
    number = float(value)
    return int(number) if number.is_integer() else number


def _custom_string(value: object, path: str) -> str:
    """The string a mediamtx custom type's UnmarshalJSON reads; its errors stop decoding."""
    if not isinstance(value, str) or isinstance(value, _JSONFloat):
        raise _type_error(value, path, "string", hard=True)
    return str(value)


def _as_duration(value: object, path: str) -> object:
    try:
        return _format_mediamtx_duration(_parse_mediamtx_duration(_custom_string(value, path)))
    except ValueError as error:
        raise _DecodeError(str(error), hard=True) from error


def _as_size(value: object, path: str) -> object:
    text = _custom_string(value, path)
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?\s*([KMGTPE]i?B?|B)?", text, re.IGNORECASE):
        raise _DecodeError(f"invalid size: {_go_quote(text)}", hard=True)
    return text


def _enum(values: Sequence[str], message: str) -> _Converter:
    def convert(value: object, path: str) -> object:
        text = _custom_string(value, path)
        if text not in values:
            raise _DecodeError(message.format(text), hard=True)
        return text

    return convert


def _list_of(item: _Converter, go_type: str) -> _Converter:
    def convert(value: object, path: str) -> object:
        if not isinstance(value, list):
            raise _type_error(value, path, go_type)
        return [item(element, path) for element in value]

    return convert


def _objects(fields: Mapping[str, _Converter], struct: str) -> _Converter:
    def convert_item(value: object, path: str) -> object:
        if not isinstance(value, dict):
            raise _type_error(value, path, struct)
        converted: dict[str, object] = {}
        for key, element in value.items():
            if key not in fields:
                raise _DecodeError(f"json: unknown field {_go_quote(key)}")
            if element is not None:
                converted[key] = fields[key](element, f"{path}.{key}")
        return converted

    return _list_of(convert_item, f"[]{struct}")


_as_transport = _enum(("automatic", "udp", "multicast", "tcp"), "invalid protocol '{}'")

# name -> (converter, default); the defaults are pathDefaults of mediamtx.default.yml
# v1.20.1, in its order, as mediamtx marshals them.
_PATH_FIELDS: dict[str, tuple[_Converter, object]] = {
    "name": (_as_string, ""),
    "source": (_as_string, "publisher"),
    "sourceFingerprint": (_as_string, ""),
    "sourceOnDemand": (_as_bool, False),
    "sourceOnDemandStartTimeout": (_as_duration, "10s"),
    "sourceOnDemandCloseAfter": (_as_duration, "10s"),
    "maxReaders": (_as_int, 0),
    "srtReadPassphrase": (_as_string, ""),
    "useAbsoluteTimestamp": (_as_bool, False),
    "alwaysAvailable": (_as_bool, False),
    "alwaysAvailableTracks": (
        _objects(
            {"codec": _as_string, "channelCount": _as_int, "sampleRate": _as_int, "muLaw": _as_bool},
            "AlwaysAvailableTrack",
        ),
        [],
    ),
    "alwaysAvailableFile": (_as_string, ""),
    "forward": (
        _objects(
            {"dest": _as_string, "destFingerprint": _as_string, "whipBearerToken": _as_string},
            "PathConfForwardDest",
        ),
        [],
    ),
    "record": (_as_bool, False),
    "recordPath": (_as_string, "./recordings/%path/%Y-%m-%d_%H-%M-%S-%f"),
    "recordFormat": (_enum(("fmp4", "mpegts"), "invalid record format '{}'"), "fmp4"),
    "recordPartDuration": (_as_duration, "1s"),
    "recordMaxPartSize": (_as_size, "50M"),
    "recordSegmentDuration": (_as_duration, "1h0m0s"),
    "recordDeleteAfter": (_as_duration, "1d"),
    "overridePublisher": (_as_bool, True),
    "srtPublishPassphrase": (_as_string, ""),
    "rtspDemuxMpegts": (_as_bool, False),
    "rtspTransport": (_as_transport, "automatic"),
    "rtspAnyPort": (_as_bool, False),
    "rtspRangeType": (_enum(("", "clock", "npt", "smpte"), "invalid rtsp range type: '{}'"), ""),
    "rtspRangeStart": (_as_string, ""),
    "rtspScale": (_as_string, ""),
    "rtspUDPSourcePortRange": (_list_of(_as_uint, "[]uint"), [32768, 60999]),
    "rtpSDP": (_as_string, ""),
    "moqTransport": (_as_string, "quic"),
    "whepBearerToken": (_as_string, ""),
    "whepSTUNGatherTimeout": (_as_duration, "5s"),
    "whepHandshakeTimeout": (_as_duration, "10s"),
    "whepTrackGatherTimeout": (_as_duration, "2s"),
    "sourceRedirect": (_as_string, ""),
    "rpiCameraCamID": (_as_uint, 0),
    "rpiCameraSecondary": (_as_bool, False),
    "rpiCameraWidth": (_as_uint, 1920),
    "rpiCameraHeight": (_as_uint, 1080),
    "rpiCameraHFlip": (_as_bool, False),
    "rpiCameraVFlip": (_as_bool, False),
    "rpiCameraBrightness": (_as_float, 0),
    "rpiCameraContrast": (_as_float, 1),
    "rpiCameraSaturation": (_as_float, 1),
    "rpiCameraSharpness": (_as_float, 1),
    "rpiCameraExposure": (_as_string, "normal"),
    "rpiCameraAWB": (_as_string, "auto"),
    "rpiCameraAWBGains": (_list_of(_as_float, "[]float64"), [0, 0]),
    "rpiCameraDenoise": (_as_string, "off"),
    "rpiCameraShutter": (_as_uint, 0),
    "rpiCameraMetering": (_as_string, "centre"),
    "rpiCameraGain": (_as_float, 0),
    "rpiCameraEV": (_as_float, 0),
    "rpiCameraROI": (_as_string, ""),
    "rpiCameraHDR": (_as_bool, False),
    "rpiCameraTuningFile": (_as_string, ""),
    "rpiCameraMode": (_as_string, ""),
    "rpiCameraFPS": (_as_float, 30),
    "rpiCameraAfMode": (_as_string, "continuous"),
    "rpiCameraAfRange": (_as_string, "normal"),
    "rpiCameraAfSpeed": (_as_string, "normal"),
    "rpiCameraLensPosition": (_as_float, 0),
    "rpiCameraAfWindow": (_as_string, ""),
    "rpiCameraFlickerPeriod": (_as_uint, 0),
    "rpiCameraTextOverlayEnable": (_as_bool, False),
    "rpiCameraTextOverlay": (_as_string, "%Y-%m-%d %H:%M:%S - MediaMTX"),
    "rpiCameraCodec": (_as_string, "auto"),
    "rpiCameraIDRPeriod": (_as_uint, 60),
    "rpiCameraBitrate": (_as_uint, 5000000),
    "rpiCameraH264Profile": (_as_string, "auto"),
    "rpiCameraH264Level": (_as_string, "4.1"),
    "rpiCameraMJPEGQuality": (_as_uint, 60),
    "runOnInit": (_as_string, ""),
    "runOnInitRestart": (_as_bool, False),
    "runOnDemand": (_as_string, ""),
    "runOnDemandRestart": (_as_bool, False),
    "runOnDemandStartTimeout": (_as_duration, "10s"),
    "runOnDemandCloseAfter": (_as_duration, "10s"),
    "runOnUnDemand": (_as_string, ""),
    "runOnAvailable": (_as_string, ""),
    "runOnAvailableRestart": (_as_bool, False),
    "runOnUnavailable": (_as_string, ""),
    "runOnOnline": (_as_string, ""),
    "runOnOnlineRestart": (_as_bool, False),
    "runOnOffline": (_as_string, ""),
    "runOnRead": (_as_string, ""),
    "runOnReadRestart": (_as_bool, False),
    "runOnUnread": (_as_string, ""),
    "runOnRecordSegmentCreate": (_as_string, ""),
    "runOnRecordSegmentComplete": (_as_string, ""),
}

# Deprecated fields: accepted, shown only when set (Go ``omitempty`` pointers).
_DEPRECATED_PATH_FIELDS: dict[str, _Converter] = {
    "disablePublisherOverride": _as_bool,
    "fallback": _as_string,
    "mpegtsUDPReadBufferSize": _as_uint,
    "playback": _as_bool,
    "publishIPs": _list_of(_as_string, "conf.IPNetworks"),
    "publishPass": _as_string,
    "publishUser": _as_string,
    "readIPs": _list_of(_as_string, "conf.IPNetworks"),
    "readPass": _as_string,
    "readUser": _as_string,
    "rpiCameraHardwareH264Level": _as_string,
    "rpiCameraHardwareH264Profile": _as_string,
    "rpiCameraJPEGQuality": _as_uint,
    "rpiCameraLevel": _as_string,
    "rpiCameraProfile": _as_string,
    "rpiCameraSoftwareH264Level": _as_string,
    "rpiCameraSoftwareH264Profile": _as_string,
    "rtpUDPReadBufferSize": _as_uint,
    "rtspUDPReadBufferSize": _as_uint,
    "runOnNotReady": _as_string,
    "runOnReady": _as_string,
    "runOnReadyRestart": _as_bool,
    "sourceAnyPortEnable": _as_bool,
    "sourceProtocol": _as_transport,
}

_ALL_PATH_FIELDS: dict[str, _Converter] = {name: spec[0] for name, spec in _PATH_FIELDS.items()}
_ALL_PATH_FIELDS.update(_DEPRECATED_PATH_FIELDS)
_FIELDS_BY_LOWER_NAME = {name.lower(): name for name in _ALL_PATH_FIELDS}

_STATIC_SOURCE_PREFIXES = (
    "rtsp://",
    "rtsps://",
    "rtmp://",
    "rtmps://",
    "http://",
    "https://",
    "udp://",
    "udp+mpegts://",
    "udp+rtp://",
    "unix+mpegts://",
    "unix+rtp://",
    "srt://",
    "whep://",
    "wheps://",
    "moq://",
    "moqs://",
)
_PATH_NAME = re.compile(r"^[0-9a-zA-Z_\-/.~]+$")
_READER_TYPES = frozenset(
    {
        "hlsSession",
        "rtmpConn",
        "rtmpsConn",
        "rtspConn",
        "rtspSession",
        "rtspsConn",
        "rtspsSession",
        "srtConn",
        "webRTCSession",
        "moqSession",
        "hidden",
    }
)


def _decode_optional_path(body: bytes) -> dict[str, object]:
    """The fields a PathConf body sets, converted as mediamtx stores them; _DecodeError with Go's text."""
    raw = _load_json(body)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _DecodeError(f"json: cannot unmarshal {_json_kind(raw)} into Go value of type conf.OptionalPath")
    values: dict[str, object] = {}
    first_error: _DecodeError | None = None
    for key, value in raw.items():
        name = key if key in _ALL_PATH_FIELDS else _FIELDS_BY_LOWER_NAME.get(key.lower())
        try:
            if name is None:
                raise _DecodeError(f"json: unknown field {_go_quote(key)}")
            if value is not None:
                values[name] = _ALL_PATH_FIELDS[name](value, name)
        except _DecodeError as error:
            if error.hard:
                raise
            first_error = first_error or error
    if first_error is not None:
        raise first_error
    return values


def _full_path_conf(name: str, optional: Mapping[str, object]) -> dict[str, object]:
    """The PathConf mediamtx returns for ``optional`` fields set on path ``name``."""
    conf: dict[str, object] = {key: copy.deepcopy(spec[1]) for key, spec in _PATH_FIELDS.items()}
    conf.update(copy.deepcopy(dict(optional)))
    conf["name"] = name
    renamed = {
        "sourceProtocol": "rtspTransport",
        "sourceAnyPortEnable": "rtspAnyPort",
        "runOnReady": "runOnOnline",
        "runOnReadyRestart": "runOnOnlineRestart",
        "runOnNotReady": "runOnOffline",
    }
    for old, new in renamed.items():
        if old in optional:
            conf[new] = optional[old]
    if "disablePublisherOverride" in optional:
        conf["overridePublisher"] = not optional["disablePublisherOverride"]
    return conf


def _is_regexp_name(name: str) -> bool:
    return name in ("all", "all_others") or name.startswith("~")


def _validate_path_conf(name: str, conf: Mapping[str, object]) -> str | None:
    """mediamtx's validation error for a full PathConf, or None when it is valid."""
    if name in ("all", "all_others"):
        pass
    elif not name.startswith("~"):
        problem = _path_name_problem(name)
        if problem is not None:
            return f"invalid path name '{name}': {problem}"
    else:
        try:
            re.compile(name[1:])
        except re.error:
            return f"invalid regular expression: {name[1:]}"
    source = str(conf["source"])
    static = source not in ("publisher", "redirect")
    if static and _is_regexp_name(name) and not conf["sourceOnDemand"]:
        return (
            "a path with a regular expression (or path 'all') and a static source"
            " must have 'sourceOnDemand' set to true"
        )
    if source.startswith(_STATIC_SOURCE_PREFIXES):
        try:
            urlsplit(source).port
        except ValueError:
            return f"'{source}' is not a valid URL"
    elif source not in ("publisher", "redirect", "rpiCamera"):
        return f"invalid source: '{source}'"
    if conf["sourceOnDemand"] and source == "publisher":
        return "'sourceOnDemand' is useless when source is 'publisher'"
    read_passphrase = str(conf["srtReadPassphrase"])
    if read_passphrase and not 10 <= len(read_passphrase) <= 79:
        return "invalid 'readRTPassphrase': must be between 10 and 79 characters"
    publish_passphrase = str(conf["srtPublishPassphrase"])
    if publish_passphrase:
        if source != "publisher":
            return "'srtPublishPassphase' can only be used when source is 'publisher'"
        if not 10 <= len(publish_passphrase) <= 79:
            return "invalid 'srtPublishPassphrase': must be between 10 and 79 characters"
    if source == "redirect" and not conf["sourceRedirect"]:
        return "source redirect must be filled"
    return None


def _path_name_problem(name: str) -> str | None:
    if name == "":
        return "cannot be empty"
    if name[0] == "/":
        return "can't begin with a slash"
    if name[-1] == "/":
        return "can't end with a slash"
    if not _PATH_NAME.match(name):
        return "can contain only alphanumeric characters, underscore, dot, tilde, minus or slash"
    return None


def _paginate(items: list[Any], items_per_page: str, page: str) -> tuple[list[Any], int]:
    """mediamtx's paginate(): (this page's items, page count); ValueError with Go's text."""
    per_page = _parse_page_number(items_per_page, 100)
    if per_page == 0:
        raise ValueError("invalid items per page")
    number = _parse_page_number(page, 0)
    if not items:
        return [], 0
    page_count = -(-len(items) // per_page)
    start = min(number * per_page, len(items))
    return items[start : start + per_page], page_count


def _parse_page_number(text: str, default: int) -> int:
    if text == "":
        return default
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"strconv.ParseUint: parsing {_go_quote(text)}: invalid syntax")
    value = int(text)
    if value >= 2**31:
        raise ValueError(f"strconv.ParseUint: parsing {_go_quote(text)}: value out of range")
    return value


def _global_conf(api_user: tuple[str, str] | None) -> dict[str, object]:
    """GET /v3/config/global/get: mediamtx.default.yml v1.20.1 with the API switched on."""
    any_permissions = [{"action": action, "path": ""} for action in ("publish", "read", "playback")]
    api_user_entry: dict[str, object] = {
        "user": "any",
        "pass": "",
        "ips": ["127.0.0.1/32", "::1/128"],
        "permissions": [{"action": action, "path": ""} for action in ("api", "metrics", "pprof")],
    }
    if api_user is not None:
        api_user_entry = {
            "user": api_user[0],
            "pass": api_user[1],
            "ips": [],
            "permissions": [{"action": "api", "path": ""}],
        }
    return {
        "logLevel": "info",
        "logDestinations": ["stdout"],
        "logStructured": False,
        "logFile": "mediamtx.log",
        "sysLogPrefix": "mediamtx",
        "dumpPackets": False,
        "readTimeout": "10s",
        "writeTimeout": "10s",
        "writeQueueSize": 512,
        "udpMaxPayloadSize": 1452,
        "udpReadBufferSize": 0,
        "runOnConnect": "",
        "runOnConnectRestart": False,
        "runOnDisconnect": "",
        "authMethod": "internal",
        "authInternalUsers": [{"user": "any", "pass": "", "ips": [], "permissions": any_permissions}, api_user_entry],
        "authHTTPAddress": "",
        "authHTTPFingerprint": "",
        "authHTTPExclude": [],
        "authJWTJWKS": "",
        "authJWTJWKSFingerprint": "",
        "authJWTClaimKey": "mediamtx_permissions",
        "authJWTExclude": [],
        "authJWTIssuer": "",
        "authJWTAudience": "",
        "api": True,
        "apiAddress": ":9997",
        "apiEncryption": False,
        "apiServerKey": "server.key",
        "apiServerCert": "server.crt",
        "apiAllowOrigins": ["*"],
        "apiTrustedProxies": [],
        "metrics": False,
        "metricsAddress": ":9998",
        "metricsEncryption": False,
        "metricsServerKey": "server.key",
        "metricsServerCert": "server.crt",
        "metricsAllowOrigins": ["*"],
        "metricsTrustedProxies": [],
        "pprof": False,
        "pprofAddress": ":9999",
        "pprofEncryption": False,
        "pprofServerKey": "server.key",
        "pprofServerCert": "server.crt",
        "pprofAllowOrigins": ["*"],
        "pprofTrustedProxies": [],
        "playback": False,
        "playbackAddress": ":9996",
        "playbackEncryption": False,
        "playbackServerKey": "server.key",
        "playbackServerCert": "server.crt",
        "playbackAllowOrigins": ["*"],
        "playbackTrustedProxies": [],
        "rtsp": True,
        "rtspTransports": ["udp", "multicast", "tcp"],
        "rtspEncryption": "no",
        "rtspAddress": ":8554",
        "rtspsAddress": ":8322",
        "rtpAddress": ":8000",
        "rtcpAddress": ":8001",
        "multicastIPRange": "224.1.0.0/16",
        "multicastRTPPort": 8002,
        "multicastRTCPPort": 8003,
        "srtpAddress": ":8004",
        "srtcpAddress": ":8005",
        "multicastSRTPPort": 8006,
        "multicastSRTCPPort": 8007,
        "rtspServerKey": "server.key",
        "rtspServerCert": "server.crt",
        "rtspAuthMethods": ["basic"],
        "rtspTrustedProxies": [],
        "rtmp": True,
        "rtmpEncryption": "no",
        "rtmpAddress": ":1935",
        "rtmpsAddress": ":1936",
        "rtmpServerKey": "server.key",
        "rtmpServerCert": "server.crt",
        "rtmpTrustedProxies": [],
        "hls": True,
        "hlsAddress": ":8888",
        "hlsEncryption": False,
        "hlsServerKey": "server.key",
        "hlsServerCert": "server.crt",
        "hlsAllowOrigins": ["*"],
        "hlsTrustedProxies": [],
        "hlsAlwaysRemux": False,
        "hlsVariant": "lowLatency",
        "hlsSegmentCount": 7,
        "hlsSegmentDuration": "1s",
        "hlsPartDuration": "200ms",
        "hlsSegmentMaxSize": "50M",
        "hlsDirectory": "",
        "hlsMuxerCloseAfter": "1m0s",
        "hlsCDNSecret": "",
        "webrtc": True,
        "webrtcAddress": ":8889",
        "webrtcEncryption": False,
        "webrtcServerKey": "server.key",
        "webrtcServerCert": "server.crt",
        "webrtcAllowOrigins": ["*"],
        "webrtcTrustedProxies": [],
        "webrtcLocalUDPAddress": ":8189",
        "webrtcLocalTCPAddress": "",
        "webrtcIPsFromInterfaces": True,
        "webrtcIPsFromInterfacesList": [],
        "webrtcAdditionalHosts": [],
        "webrtcICEServers2": [],
        "webrtcSTUNGatherTimeout": "5s",
        "webrtcHandshakeTimeout": "10s",
        "webrtcTrackGatherTimeout": "2s",
        "srt": True,
        "srtAddress": ":8890",
        "moq": True,
        "moqHTTP2Address": ":8892",
        "moqHTTP3Address": ":8892",
        "moqQUICAddress": ":8893",
        "moqServerKey": "auto.key",
        "moqServerCert": "auto.crt",
        "moqAllowOrigins": ["*"],
        "moqTrustedProxies": [],
    }


# --- the resource ------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedWrite:
    """One non-GET request the fake received: method, percent-encoded URL path, raw body."""

    method: str
    path: str
    body: bytes


@dataclass
class _RuntimePath:
    ready_since: float | None = None
    readers: list[dict[str, str]] = field(default_factory=list)
    tracks: list[str] = field(default_factory=list)


class _APIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_NOT_FOUND = object()


class FakeMediamtx(Resource):
    """A TEST DOUBLE of mediamtx's Control API v3 as a twisted.web resource (not mediamtx itself).

    ``file_paths`` are path configurations that come from mediamtx.yml (for example
    ``{"all_others": {}}`` for the stock file): they survive :meth:`restart`, unlike
    paths added through the API. ``has_replace=False`` models versions without
    ``/v3/config/paths/replace`` (404 like any unknown route);
    ``replace_creates_missing`` chooses whether replace on a missing path creates it
    (v1.20.1) or answers 404 ``path not found`` (older versions).
    """

    log = Logger()
    isLeaf = True
    auth_failure_pause = 0.0

    def __init__(
        self,
        clock: IReactorTime,
        version: str = "v1.20.1",
        username: str | None = None,
        password: str | None = None,
        has_replace: bool = True,
        replace_creates_missing: bool = True,
        file_paths: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if (username is None) != (password is None):
            raise ValueError("username and password must be given together")
        self.clock = clock
        self._clock = cast(Clock, clock)
        self.version = version
        self.has_replace = has_replace
        self.replace_creates_missing = replace_creates_missing
        self.writes: list[RecordedWrite] = []
        self.started = self._clock.seconds()
        self.down = False
        self._credentials = (username, password) if username is not None and password is not None else None
        self._file_paths: dict[str, dict[str, object]] = {}
        for name, fields in (file_paths or {}).items():
            try:
                optional = _decode_optional_path(json.dumps(dict(fields)).encode("utf-8"))
            except _DecodeError as error:
                raise ValueError(f"file path {name!r}: {error}") from error
            problem = _validate_path_conf(name, _full_path_conf(name, optional))
            if problem is not None:
                raise ValueError(f"file path {name!r}: {problem}")
            self._file_paths[name] = optional
        self._paths: dict[str, dict[str, object]] = {}
        self._runtime: dict[str, _RuntimePath] = {}
        self._reset_paths()

    # Test knobs

    def restart(self) -> None:
        """Simulate a mediamtx restart: API-added paths and edits are gone, ``started`` is now."""
        self._reset_paths()
        self.started = self._clock.seconds()
        self.log.info("fake mediamtx restarted")

    def set_down(self, down: bool) -> None:
        """While down, every request has its connection closed without an answer."""
        self.down = down

    def set_ready(
        self, name: str, ready: bool = True, readers: Sequence[str] = (), tracks: Sequence[str] = ("H264",)
    ) -> None:
        """Mark a configured path ready (publishing ``tracks``), read by readers of the given PathReaderType values."""
        if name not in self._runtime:
            raise KeyError(f"path {name!r} is not configured (or is a regular expression path)")
        unknown = [kind for kind in readers if kind not in _READER_TYPES]
        if unknown:
            raise ValueError(f"unknown PathReaderType {unknown[0]!r}")
        runtime = _RuntimePath()
        if ready:
            runtime.ready_since = self._clock.seconds()
            runtime.tracks = list(tracks)
            runtime.readers = [{"type": kind, "id": str(uuid.uuid4())} for kind in readers]
        self._runtime[name] = runtime

    @property
    def paths(self) -> dict[str, dict[str, object]]:
        """Every configured path, name to full PathConf as the API returns it (a fresh copy)."""
        return {name: _full_path_conf(name, self._paths[name]) for name in sorted(self._paths)}

    def _reset_paths(self) -> None:
        self._paths = copy.deepcopy(self._file_paths)
        self._runtime = {name: _RuntimePath() for name in self._paths if not _is_regexp_name(name)}

    # HTTP

    def render(self, request: Request) -> bytes | int:
        """Answer one Control API request the way mediamtx's gin router would."""
        body_source = cast(_Body, request.content) if request.content is not None else None
        return self._dispatch(cast(_Request, request), body_source.read() if body_source is not None else b"")

    def _dispatch(self, request: _Request, body: bytes) -> bytes | int:
        if self.down:
            request.loseConnection()
            return NOT_DONE_YET
        method = request.method.decode("ascii", errors="replace")
        raw_path = request.path.decode("ascii", errors="replace")
        if method not in ("GET", "HEAD", "OPTIONS"):
            self.writes.append(RecordedWrite(method, raw_path, body))
        request.setHeader(b"access-control-allow-origin", b"*")
        request.setHeader(b"access-control-allow-credentials", b"true")
        if method == "OPTIONS" and request.getHeader(b"access-control-request-method") is not None:
            request.setHeader(b"access-control-allow-methods", b"OPTIONS, GET, POST, PATCH, DELETE")
            request.setHeader(b"access-control-allow-headers", b"Authorization, Content-Type")
            request.setResponseCode(204)
            return b""
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        query = parse_qs(urlsplit(request.uri.decode("latin-1")).query, keep_blank_values=True)
        try:
            result = self._route(method, unquote(raw_path), {key: values[0] for key, values in query.items()}, body)
        except _APIError as error:
            self.log.info(
                "fake mediamtx: {method} {path} -> {status} {error}",
                method=method,
                path=raw_path,
                status=error.status,
                error=str(error),
            )
            return _json_response(request, error.status, {"status": "error", "error": str(error)})
        if result is _NOT_FOUND:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain")
            return b"404 page not found"
        return _json_response(request, 200, result)

    def _check_auth(self, request: _Request) -> bytes | int | None:
        """None when the request may proceed, else the 401 (late by ``auth_failure_pause`` for bad credentials)."""
        if self._credentials is None:
            return None
        user, password = _basic_credentials(request.getHeader(b"authorization"))
        expected_user, expected_password = self._credentials
        if hmac.compare_digest(user.encode(), expected_user.encode()) and hmac.compare_digest(
            password.encode(), expected_password.encode()
        ):
            return None
        asked = user == "" and password == ""
        if asked:
            request.setHeader(b"www-authenticate", b'Basic realm="mediamtx"')
        answer = _json_response(request, 401, {"status": "error", "error": "authentication error"})
        if asked or self.auth_failure_pause <= 0:
            return answer

        lost: list[Failure] = []
        request.notifyFinish().addErrback(lost.append)

        def answer_later() -> None:
            if not lost:
                request.write(answer)
                request.finish()

        self._clock.callLater(self.auth_failure_pause, answer_later)
        return NOT_DONE_YET

    def _route(self, method: str, path: str, query: Mapping[str, str], body: bytes) -> object:
        """The JSON answer to one authenticated request, ``_NOT_FOUND`` for gin's 404, or _APIError."""
        fixed: dict[tuple[str, str], Callable[[], object]] = {
            ("GET", "/v3/info"): lambda: {"version": self.version, "started": _rfc3339(self.started)},
            ("GET", "/v3/config/global/get"): lambda: _global_conf(self._credentials),
            ("GET", "/v3/config/pathdefaults/get"): lambda: _full_path_conf("", {}),
            ("GET", "/v3/config/paths/list"): lambda: self._list(self._config_items(), query),
            ("GET", "/v3/paths/list"): lambda: self._list(self._runtime_items(), query),
        }
        handler = fixed.get((method, path))
        if handler is not None:
            return handler()
        named: list[tuple[str, str, Callable[[str], object]]] = [
            ("GET", "/v3/config/paths/get/", self._get_conf),
            ("POST", "/v3/config/paths/add/", lambda name: self._add(name, body)),
            ("PATCH", "/v3/config/paths/patch/", lambda name: self._patch(name, body)),
            ("DELETE", "/v3/config/paths/delete/", self._delete),
            ("GET", "/v3/paths/get/", self._get_runtime),
        ]
        if self.has_replace:
            named.append(("POST", "/v3/config/paths/replace/", lambda name: self._replace(name, body)))
        for route_method, prefix, named_handler in named:
            if method == route_method and path.startswith(prefix):
                name = path[len(prefix) :]
                if name == "":
                    raise _APIError(400, "invalid name")
                return named_handler(name)
        return _NOT_FOUND

    def _list(self, items: list[dict[str, object]], query: Mapping[str, str]) -> object:
        try:
            page, page_count = _paginate(items, query.get("itemsPerPage", ""), query.get("page", ""))
        except ValueError as error:
            raise _APIError(400, str(error)) from error
        return {"itemCount": len(items), "pageCount": page_count, "items": page}

    def _config_items(self) -> list[dict[str, object]]:
        return [_full_path_conf(name, self._paths[name]) for name in sorted(self._paths)]

    def _runtime_items(self) -> list[dict[str, object]]:
        return [self._runtime_item(name) for name in sorted(self._runtime)]

    def _runtime_item(self, name: str) -> dict[str, object]:
        runtime = self._runtime[name]
        since = None if runtime.ready_since is None else _rfc3339(runtime.ready_since)
        ready = since is not None
        source: dict[str, str] | None = None
        if ready:
            conf_source = str(_full_path_conf(name, self._paths[name])["source"])
            source = (
                {"type": "rtspSession", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, name))}
                if conf_source == "publisher"
                else {"type": "rtspSource", "id": ""}
            )
        return {
            "name": name,
            "confName": name,
            "source": source,
            "available": ready,
            "availableTime": since,
            "online": ready,
            "onlineTime": since,
            "ready": ready,
            "readyTime": since,
            "tracks": list(runtime.tracks),
            "tracks2": [{"codec": track, "codecProps": None} for track in runtime.tracks],
            "inboundBytes": 0,
            "inboundFramesInError": 0,
            "outboundBytes": 0,
            "bytesReceived": 0,
            "bytesSent": 0,
            "readers": copy.deepcopy(runtime.readers),
        }

    def _get_conf(self, name: str) -> object:
        if name not in self._paths:
            raise _APIError(404, "path configuration not found")
        return _full_path_conf(name, self._paths[name])

    def _get_runtime(self, name: str) -> object:
        if name not in self._runtime:
            raise _APIError(404, "path not found")
        return self._runtime_item(name)

    def _decode(self, body: bytes) -> dict[str, object]:
        try:
            return _decode_optional_path(body)
        except _DecodeError as error:
            raise _APIError(400, str(error)) from error

    def _store(self, name: str, optional: dict[str, object]) -> object:
        """Validate and keep ``optional`` as the configuration of ``name``; a changed path restarts."""
        conf = _full_path_conf(name, optional)
        problem = _validate_path_conf(name, conf)
        if problem is not None:
            raise _APIError(400, problem)
        previous = self._paths.get(name)
        self._paths[name] = optional
        if not _is_regexp_name(name) and (previous is None or _full_path_conf(name, previous) != conf):
            self._runtime[name] = _RuntimePath()
        return {"status": "ok"}

    def _add(self, name: str, body: bytes) -> object:
        optional = self._decode(body)
        if name in self._paths:
            raise _APIError(400, "path already exists")
        return self._store(name, optional)

    def _patch(self, name: str, body: bytes) -> object:
        optional = self._decode(body)
        if name not in self._paths:
            raise _APIError(404, "path not found")
        merged = dict(self._paths[name])
        merged.update(optional)
        return self._store(name, merged)

    def _replace(self, name: str, body: bytes) -> object:
        optional = self._decode(body)
        if name not in self._paths and not self.replace_creates_missing:
            raise _APIError(404, "path not found")
        return self._store(name, optional)

    def _delete(self, name: str) -> object:
        if name not in self._paths:
            raise _APIError(404, "path not found")
        del self._paths[name]
        self._runtime.pop(name, None)
        return {"status": "ok"}


def _basic_credentials(header: bytes | None) -> tuple[str, str]:
    """(user, password) from a Basic Authorization header; empty strings when absent or malformed."""
    if header is None or header[:6].lower() != b"basic ":
        return "", ""
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, separator, password = decoded.partition(":")
    return (user, password) if separator else ("", "")


def _json_response(request: _Request, status: int, payload: object) -> bytes:
    """Write ``payload`` as gin's ``ctx.JSON`` does: compact, HTML-escaped, UTF-8."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        text = text.replace(raw, f"\\u{ord(raw):04x}")
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return text.encode("utf-8")


def listen_mediamtx(
    reactor: IReactorTCP, fake: FakeMediamtx, port: int = 0, interface: str = "127.0.0.1"
) -> IListeningPort:
    """Serve ``fake`` over HTTP on ``interface:port`` (0 picks a free port)."""
    site = Site(fake, reactor=reactor)  # type: ignore[no-untyped-call]
    site.displayTracebacks = False
    return cast(_TCPReactor, reactor).listenTCP(port, site, interface=interface)


__all__ = ["FakeMediamtx", "RecordedWrite", "listen_mediamtx"]
