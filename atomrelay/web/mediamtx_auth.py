"""The endpoint mediamtx calls for every action when ``authMethod: http`` (``mediamtx.auth: relay``).

mediamtx POSTs JSON ``{"ip", "user", "password", "token", "action", "path",
"protocol", "id", "query"}`` (internal/auth/manager.go) and allows the action on any
2xx answer. The relay allows:

* ``read`` / ``playback``: a valid ONVIF user (looked up live, so ONVIF user changes
  apply at once);
* ``publish``: only from 127.0.0.1 / ::1 (the relay's own ffmpeg pipelines);
* ``api`` / ``metrics`` / ``pprof``: only the relay's own mediamtx API user, from
  ``mediamtx.relay_address`` (an IP address; if it is not, nobody).

Everything else gets 401. Denials are logged with ip, user and action, never the password.

Only mediamtx may ask: requests from any address other than loopback or the host of
``mediamtx.api_url`` (when that is an IP address) get 403 without looking at the body,
so the endpoint cannot be used to guess ONVIF passwords from the network.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Callable
from typing import IO, Protocol
from urllib.parse import urlsplit

from twisted.logger import Logger
from twisted.web.resource import Resource

from atomrelay.config import MediamtxConfig, User
from atomrelay.net import ip_of

MAX_BODY = 16 * 1024
LOCALHOST = frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")})
_FIELDS = ("ip", "user", "password", "token", "action", "path", "protocol", "query")
# Compared against when the user does not exist, so that unknown and known users
# take the same time.
_DUMMY_PASSWORD = b"\x00" * 32


class _Request(Protocol):
    """The part of twisted.web's Request used here (typed for mypy)."""

    content: IO[bytes] | None

    def getHeader(self, key: bytes) -> bytes | None: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def setResponseCode(self, code: int) -> None: ...

    def getClientAddress(self) -> object: ...


class AuthRequest:
    """One decoded mediamtx authentication request."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.ip = fields["ip"]
        self.user = fields["user"]
        self.password = fields["password"]
        self.action = fields["action"]
        self.path = fields["path"]
        self.protocol = fields["protocol"]


def _same_secret(given: str, expected: str | None) -> bool:
    """Constant-time comparison; ``expected`` None never matches (but costs the same)."""
    reference = expected.encode("utf-8") if expected is not None else _DUMMY_PASSWORD
    match = hmac.compare_digest(given.encode("utf-8"), reference)
    return match and expected is not None


class MediamtxAuthResource(Resource):
    """twisted.web resource answering mediamtx's HTTP authentication requests."""

    isLeaf = True
    log = Logger()

    def __init__(self, lookup_user: Callable[[str], User | None], config: MediamtxConfig) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._lookup_user = lookup_user
        self._config = config
        self._relay_ip = ip_of(config.relay_address)
        api_ip = ip_of(urlsplit(config.api_url).hostname or "")
        self._callers = LOCALHOST | ({api_ip} if api_ip is not None else set())

    def render_POST(self, request: _Request) -> bytes:
        """Decide one request: 200 allow, 401 deny, 400 malformed, 413 too large."""
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        caller = ip_of(str(getattr(request.getClientAddress(), "host", "")))
        if caller is None or not (caller in self._callers or caller.is_loopback):
            self.log.warn("mediamtx auth: refused a request from {caller}, which is not mediamtx's address",
                          caller=caller)
            return self._answer(request, 403, "forbidden")
        length = request.getHeader(b"content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > MAX_BODY):
            return self._answer(request, 413, "request body too large")
        body = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(body) > MAX_BODY:
            return self._answer(request, 413, "request body too large")
        auth = self._decode(body)
        if auth is None:
            self.log.warn("malformed mediamtx authentication request ({size} bytes)", size=len(body))
            return self._answer(request, 400, "malformed request")
        reason = self._deny_reason(auth)
        if reason is None:
            self.log.debug(
                "mediamtx auth: allowed {action} on {path!r} for user {user!r} from {ip}",
                action=auth.action, path=auth.path, user=auth.user, ip=auth.ip,
            )
            return self._answer(request, 200, "ok")
        # mediamtx first asks without credentials and then asks the client for them:
        # those denials are routine, not worth a warning.
        emit = self.log.info if (auth.user or auth.password) else self.log.debug
        emit(
            "mediamtx auth: denied {action} on {path!r} ({protocol}) for user {user!r} from {ip}: {reason}",
            action=auth.action, path=auth.path, protocol=auth.protocol or "-", user=auth.user, ip=auth.ip,
            reason=reason,
        )
        return self._answer(request, 401, "denied")

    def _answer(self, request: _Request, code: int, text: str) -> bytes:
        request.setResponseCode(code)
        return text.encode("utf-8") + b"\n"

    @staticmethod
    def _decode(body: bytes) -> AuthRequest | None:
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(document, dict):
            return None
        fields: dict[str, str] = {}
        for key in _FIELDS:
            value = document.get(key)
            if value is None:
                value = ""
            if not isinstance(value, str):
                return None
            fields[key] = value
        if not fields["action"]:
            return None
        return AuthRequest(fields)

    def _deny_reason(self, auth: AuthRequest) -> str | None:
        """None when the request is allowed, else why not."""
        if auth.action in ("read", "playback"):
            return self._check_onvif_user(auth)
        if auth.action == "publish":
            if ip_of(auth.ip) in LOCALHOST:
                return None
            return "publishing is allowed from this host only"
        if auth.action in ("api", "metrics", "pprof"):
            return self._check_relay_user(auth)
        return "unknown action"

    def _check_onvif_user(self, auth: AuthRequest) -> str | None:
        if not auth.user:
            return "no credentials"
        user = self._lookup_user(auth.user)
        password_ok = _same_secret(auth.password, user.password if user is not None else None)
        if user is None:
            return "unknown user"
        if not password_ok:
            return "wrong password"
        return None

    def _check_relay_user(self, auth: AuthRequest) -> str | None:
        if self._relay_ip is None or ip_of(auth.ip) != self._relay_ip:
            return "only the relay may use the mediamtx API"
        expected_user, expected_password = self._config.username, self._config.password
        if expected_user is None or expected_password is None:
            if auth.user or auth.password:
                return "the relay uses the mediamtx API without credentials"
            return None
        user_ok = _same_secret(auth.user, expected_user)
        password_ok = _same_secret(auth.password, expected_password)
        if not (user_ok and password_ok):
            return "not the relay's mediamtx API user"
        return None
