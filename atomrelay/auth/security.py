"""Who is calling: WS-Security UsernameToken and HTTP Digest/Basic authentication.

WS-Security (OASIS UsernameToken Profile 1.0, ONVIF Core 5.12):

* ``PasswordDigest`` = Base64(SHA-1(nonce bytes + Created text + password)); it needs
  both ``Nonce`` and ``Created`` (Core: "reject any Username Token not using both").
* ``PasswordText`` is accepted without Nonce/Created, a deliberate leniency: python
  onvif-zeep-async (Frigate's ``tls_insecure``) sends a bare ``Password``. When it does
  carry Created/Nonce they are checked like a digest's. It is not replay-protected (the
  password travels in clear, and nothing binds the Nonce or Created to it);
  ``allow_password_text`` False refuses it.
* ``Created`` must lie within ``max_clock_skew`` of the injected clock (Zulu, offset or
  fractional forms; no offset means UTC); a (username, nonce) pair is accepted once
  within that window. The replay memory holds each pair until its Created leaves the
  window and has a hard cap; when the cap makes it forget a pair early, tokens created
  no later than that pair are refused from then on (``auth.replay``).
* Elements are matched by namespace, never by prefix (npm ``onvif`` declares the
  Security namespace as the default namespace); ``Created`` is accepted in the wsu or
  the wsse namespace.

HTTP (RFC 7616 Digest, RFC 7617 Basic):

* Challenges offer ``MD5`` then ``SHA-256`` (Core's example order) with ``qop="auth"``
  and one shared stateless nonce (issue time + random salt + HMAC), so memory is only
  spent on callers that authenticated; Basic is offered last, only if ``http_basic``.
* A valid response to an expired or unknown nonce earns ``stale=true``, as does one to a
  nonce the full replay memory may have forgotten; a nonce count that does not increase
  is a replay and fails.

Every failure is logged with the peer address and the user name, never the password.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Protocol, cast
from urllib.parse import urlsplit

from lxml.etree import _Element
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from atomrelay.auth.policy import Caller
from atomrelay.auth.replay import ReplayMemory
from atomrelay.clock import Clock
from atomrelay.config import User
from atomrelay.xml import ns
from atomrelay.xml.parsing import first_children

_DIGEST_ALGORITHMS: dict[str, Callable[[bytes], "hashlib._Hash"]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}
_AUTH_PARAM = re.compile(r'\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')
_NC = re.compile(r"^[0-9a-fA-F]{8}$")
_WSU_CREATED = ns.q(ns.WSU, "Created")
_WSSE_CREATED = ns.q(ns.WSSE, "Created")
_USERNAME_TOKEN = ns.q(ns.WSSE, "UsernameToken")
_USERNAME = ns.q(ns.WSSE, "Username")
_PASSWORD = ns.q(ns.WSSE, "Password")
_NONCE = ns.q(ns.WSSE, "Nonce")
_MAX_NONCE_BYTES = 256
_CALLERS_KEPT = 256
_MAX_LOGGED_NAME = 64
_DUMMY_PASSWORD = "\x00atomrelay-no-such-user\x00"


class HttpRequest(Protocol):
    """The part of twisted.web's Request that authentication reads and writes (typed for mypy)."""

    method: bytes
    path: bytes
    responseHeaders: Headers

    def getHeader(self, key: bytes) -> bytes | None: ...

    def setResponseCode(self, code: int) -> None: ...

    def getClientAddress(self) -> object: ...


class AuthenticationFailed(Exception):
    """Credentials were presented and rejected.

    ``reason`` is for the log only; ``hint`` may be shown to the client (it never says
    whether the user exists or the password was wrong).
    """

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


@dataclass(frozen=True)
class HttpAuthResult:
    """What the HTTP Authorization header said: a verified caller, or why there is none."""

    caller: Caller | None
    presented: bool
    """True when credentials of an accepted scheme (Digest, or Basic if enabled) were sent."""
    stale: bool = False
    """True when a correct Digest response used an expired or unknown nonce."""


_NO_HTTP_CREDENTIALS = HttpAuthResult(None, presented=False)


class Authenticator:
    """Verifies WS-Security UsernameTokens and HTTP Digest/Basic credentials against the users."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        lookup: Callable[[str], User | None],
        max_clock_skew: float,
        http_basic: bool,
        realm: str = "atomrelay",
        nonce_lifetime: float = 300.0,
        replay_cap: int = 50_000,
        allow_password_text: bool = True,
    ) -> None:
        self.clock = cast(Clock, clock)
        self.lookup = lookup
        self.max_clock_skew = max_clock_skew
        self.http_basic = http_basic
        self.allow_password_text = allow_password_text
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self._secret = os.urandom(32)
        self._opaque = hmac.new(self._secret, b"opaque", "sha256").hexdigest()[:32]
        self._ws_nonces = ReplayMemory(replay_cap, "WS-Security tokens")
        self._callers: dict[tuple[str, str], Caller] = {}
        self._digest_counts = ReplayMemory(replay_cap, "HTTP Digest nonces")
        self._stale_requests: weakref.WeakSet[HttpRequest] = weakref.WeakSet()

    @property
    def replay_memory_size(self) -> int:
        """How many WS-Security tokens and HTTP Digest nonces the replay memory holds now."""
        return len(self._ws_nonces) + len(self._digest_counts)

    # --- WS-Security -------------------------------------------------------------------

    def verify_security_header(self, security: _Element, remote: str) -> Caller | None:
        """The caller proven by the first UsernameToken in a wsse:Security header.

        Returns None when the header carries no UsernameToken; raises
        ``AuthenticationFailed`` (already logged) when the token is rejected.
        """
        token = first_children(security).get(_USERNAME_TOKEN)
        if token is None:
            return None
        parts = first_children(token)
        username = _text(parts.get(_USERNAME))
        try:
            return self._verify_token(username, parts)
        except AuthenticationFailed as failure:
            self._log_failure("WS-Security", username, remote, failure.reason)
            raise

    def _verify_token(self, username: str, parts: dict[str, _Element]) -> Caller:
        """The caller a UsernameToken with these child elements proves; ``AuthenticationFailed`` if none."""
        # One straight pass over the token: this runs for every signed request (bench_breakdown.py
        # measures its cost in place).
        password = parts.get(_PASSWORD)
        if not username or password is None:
            raise AuthenticationFailed("UsernameToken without Username or Password")
        digest = _is_digest(password.get("Type"))
        if not digest and not self.allow_password_text:
            raise AuthenticationFailed("PasswordText token, and onvif.allow_password_text is false")
        nonce_element = parts.get(_NONCE)
        nonce = None
        if nonce_element is not None:
            hexadecimal = (nonce_element.get("EncodingType") or "").endswith("#HexBinary")
            nonce = _decode_nonce(nonce_element.text or "", hexadecimal)
        created_element = parts.get(_WSU_CREATED)
        if created_element is None:
            created_element = parts.get(_WSSE_CREATED)
        created = (created_element.text or "").strip() if created_element is not None else None
        if digest and (nonce is None or not created):
            raise AuthenticationFailed("PasswordDigest without Nonce and Created")
        now = self.clock.seconds()
        created_at = None
        if created:
            try:
                when = datetime.fromisoformat(created)
            except ValueError:
                raise AuthenticationFailed(f"unparseable Created {created[:40]}") from None
            created_at = (when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)).timestamp()
            skew = created_at - now
            if abs(skew) > self.max_clock_skew:
                raise AuthenticationFailed(
                    f"Created is {skew:+.0f} s off the relay clock (allowed: {self.max_clock_skew:.0f} s)",
                    hint="the UsernameToken Created time is outside the allowed clock skew",
                )
        user = self.lookup(username)
        secret = (user.password if user is not None else _DUMMY_PASSWORD).encode("utf-8")
        presented = (password.text or "").strip().encode("utf-8")
        if digest and nonce is not None and created:
            digest_bytes = hashlib.sha1(nonce + created.encode("utf-8") + secret).digest()
            expected = binascii.b2a_base64(digest_bytes, newline=False)
        else:
            expected = secret
        if not hmac.compare_digest(expected, presented) or user is None:
            raise AuthenticationFailed("unknown user or wrong password")
        if nonce is not None and created_at is not None:
            self._admit_token(username, nonce, created_at, now)
        return self._caller(username, user.role)

    def _admit_token(self, username: str, nonce: bytes, created_at: float, now: float) -> None:
        """Remember an accepted token until its Created leaves the window; refuse a replay, or one it may have forgotten."""
        fingerprint = hash((username, nonce))
        seen = self._ws_nonces
        seen.forget_before(now - self.max_clock_skew)
        if seen.add(fingerprint, created_at, username, now):
            return
        if seen.get(fingerprint) is not None:
            raise AuthenticationFailed("replayed UsernameToken nonce")
        forgotten = datetime.fromtimestamp(seen.horizon(username), timezone.utc).isoformat()
        raise AuthenticationFailed(
            f"Created is not newer than {forgotten}, up to which the full replay memory forgot tokens",
            hint="the relay is under load: send a fresh UsernameToken",
        )

    def _caller(self, username: str, level: str) -> Caller:
        """The (immutable, shared) Caller for a verified user at ``level``."""
        caller = self._callers.get((username, level))
        if caller is None:
            if len(self._callers) >= _CALLERS_KEPT:
                self._callers.clear()
            caller = self._callers[username, level] = Caller(username, level)
        return caller

    # --- HTTP Digest / Basic -----------------------------------------------------------

    def check_http(self, request: HttpRequest) -> HttpAuthResult:
        """Verify the request's Authorization header (Digest, or Basic when enabled)."""
        header = request.getHeader(b"authorization")
        if header is None:
            return _NO_HTTP_CREDENTIALS
        scheme, _, rest = header.decode("latin-1").strip().partition(" ")
        scheme = scheme.lower()
        remote = remote_address(request)
        if scheme == "digest":
            return self._check_digest(request, rest, remote)
        if scheme == "basic" and self.http_basic:
            return self._check_basic(rest, remote)
        return HttpAuthResult(None, presented=False)

    def authenticate_http(self, request: HttpRequest) -> Caller | None:
        """The caller proven by HTTP Digest (or Basic if enabled), or None.

        For any relay HTTP endpoint: on None, call ``challenge(request)`` and answer.
        """
        result = self.check_http(request)
        if result.stale:
            self._stale_requests.add(request)
        return result.caller

    def challenge_headers(self, stale: bool = False) -> list[bytes]:
        """The ``WWW-Authenticate`` values of a 401: Digest MD5, Digest SHA-256, Basic if enabled."""
        nonce = self._new_nonce()
        values = []
        for algorithm in _DIGEST_ALGORITHMS:
            parts = [
                f'realm="{self.realm}"',
                'qop="auth"',
                f"algorithm={algorithm}",
                f'nonce="{nonce}"',
                f'opaque="{self._opaque}"',
            ]
            if stale:
                parts.append("stale=true")
            values.append(("Digest " + ", ".join(parts)).encode("ascii"))
        if self.http_basic:
            values.append(f'Basic realm="{self.realm}", charset="UTF-8"'.encode("ascii"))
        return values

    def challenge(self, request: HttpRequest, stale: bool | None = None) -> None:
        """Make ``request`` a 401 with fresh challenges.

        ``stale`` defaults to what ``authenticate_http`` found for this request.
        """
        if stale is None:
            stale = request in self._stale_requests
        request.setResponseCode(401)
        request.responseHeaders.setRawHeaders(b"www-authenticate", self.challenge_headers(stale))

    def _new_nonce(self) -> str:
        issued = struct.pack(">d", self.clock.seconds())
        salt = os.urandom(8)
        mac = hmac.new(self._secret, issued + salt, "sha256").digest()[:16]
        return (issued + salt + mac).hex()

    def _nonce_issued(self, nonce: str) -> float | None:
        try:
            raw = bytes.fromhex(nonce)
        except ValueError:
            return None
        if len(raw) != 32:
            return None
        mac = hmac.new(self._secret, raw[:16], "sha256").digest()[:16]
        if not hmac.compare_digest(mac, raw[16:]):
            return None
        issued: float = struct.unpack(">d", raw[:8])[0]
        return issued

    def _check_digest(self, request: HttpRequest, params_text: str, remote: str) -> HttpAuthResult:
        params = _parse_auth_params(params_text)
        username = params.get("username", "") if params else ""
        try:
            caller = self._verify_digest(request, params, username)
        except _StaleNonce:
            self.log.info(
                "HTTP Digest from {remote} for user {username}: stale nonce, asking to retry",
                remote=remote,
                username=username[:_MAX_LOGGED_NAME],
            )
            return HttpAuthResult(None, presented=True, stale=True)
        except AuthenticationFailed as failure:
            self._log_failure("HTTP Digest", username, remote, failure.reason)
            return HttpAuthResult(None, presented=True)
        return HttpAuthResult(caller, presented=True)

    def _verify_digest(self, request: HttpRequest, params: dict[str, str] | None, username: str) -> Caller:
        if params is None:
            raise AuthenticationFailed("unparseable Digest parameters")
        required = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        missing = [name for name in required if not params.get(name)]
        if missing:
            raise AuthenticationFailed(f"Digest without {', '.join(missing)}")
        algorithm = params.get("algorithm", "MD5").upper()
        hash_factory = _DIGEST_ALGORITHMS.get(algorithm)
        if hash_factory is None:
            raise AuthenticationFailed(f"unsupported Digest algorithm {algorithm[:20]}")
        if params["realm"] != self.realm:
            raise AuthenticationFailed("Digest for another realm")
        if params["qop"].lower() != "auth":
            raise AuthenticationFailed("Digest qop is not auth")
        if not _NC.match(params["nc"]):
            raise AuthenticationFailed("malformed Digest nc")
        if "opaque" in params and params["opaque"] != self._opaque:
            raise AuthenticationFailed("Digest opaque does not match")
        uri = params["uri"]
        try:
            uri_path = urlsplit(uri).path
        except ValueError:  # e.g. "http://[": an unclosed IPv6 literal
            raise AuthenticationFailed("malformed Digest uri") from None
        if uri_path.encode("utf-8", "replace") != request.path:
            raise AuthenticationFailed("Digest uri does not match the request")

        def h(text: str) -> str:
            return hash_factory(text.encode("utf-8")).hexdigest()

        user = self.lookup(username)
        password = user.password if user is not None else _DUMMY_PASSWORD
        method = request.method.decode("latin-1")
        ha1 = h(f"{username}:{self.realm}:{password}")
        ha2 = h(f"{method}:{uri}")
        nonce = params["nonce"]
        expected = h(f"{ha1}:{nonce}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}")
        if not hmac.compare_digest(expected.encode("ascii"), params["response"].lower().encode("utf-8")) or (
            user is None
        ):
            raise AuthenticationFailed("unknown user or wrong password")
        now = self.clock.seconds()
        issued = self._nonce_issued(nonce)
        if issued is None or not -1.0 <= now - issued <= self.nonce_lifetime:
            raise _StaleNonce()
        # Per user: nonces travel in clear, and one user must not spend (or block) another's nonce counts.
        self._advance_count(hash((username, nonce)), issued, int(params["nc"], 16), now)
        return self._caller(username, user.role)

    def _advance_count(self, fingerprint: int, issued: float, count: int, now: float) -> None:
        """Record ``count`` for a nonce issued at ``issued``; it must exceed the last count seen.

        A nonce the full memory may have forgotten is answered as stale (the client retries
        with a fresh one).
        """
        counts = self._digest_counts
        counts.forget_before(now - self.nonce_lifetime)
        previous = counts.get(fingerprint)
        if previous is None and issued <= counts.horizon(""):
            raise _StaleNonce()
        if previous is not None and count <= previous:
            raise AuthenticationFailed("Digest nonce count replayed")
        counts.put(fingerprint, issued, "", count, now)

    def _check_basic(self, token: str, remote: str) -> HttpAuthResult:
        username = ""
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
            username, separator, password = decoded.partition(":")
            if not separator:
                raise AuthenticationFailed("malformed Basic credentials")
            user = self.lookup(username)
            secret = user.password if user is not None else _DUMMY_PASSWORD
            if not hmac.compare_digest(secret.encode("utf-8"), password.encode("utf-8")) or user is None:
                raise AuthenticationFailed("unknown user or wrong password")
        except (binascii.Error, UnicodeDecodeError):
            self._log_failure("HTTP Basic", username, remote, "malformed Basic credentials")
            return HttpAuthResult(None, presented=True)
        except AuthenticationFailed as failure:
            self._log_failure("HTTP Basic", username, remote, failure.reason)
            return HttpAuthResult(None, presented=True)
        return HttpAuthResult(self._caller(username, user.role), presented=True)

    def _log_failure(self, scheme: str, username: str, remote: str, reason: str) -> None:
        self.log.warn(
            "{scheme} authentication failed from {remote} for user {username}: {reason}",
            scheme=scheme,
            remote=remote,
            username=username[:_MAX_LOGGED_NAME] or "<none>",
            reason=reason,
        )


class _StaleNonce(Exception):
    """A correct Digest response for a nonce that expired or that this process did not issue."""


def remote_address(request: HttpRequest) -> str:
    """The peer's IP address (or a printable stand-in) for logs and RequestContext.remote."""
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return str(host) if host is not None else str(address)


def _text(element: _Element | None) -> str:
    if element is None or element.text is None:
        return ""
    return element.text.strip()


def _is_digest(password_type: str | None) -> bool:
    """Whether a wsse:Password Type names PasswordDigest (full URI or prefixed short form)."""
    return password_type is not None and password_type.strip().endswith(("#PasswordDigest", ":PasswordDigest"))


def _decode_nonce(text: str, hexadecimal: bool) -> bytes:
    text = "".join(text.split())
    try:
        if hexadecimal:
            nonce = bytes.fromhex(text)
        else:
            nonce = binascii.a2b_base64(text, strict_mode=True)
    except (ValueError, binascii.Error):
        raise AuthenticationFailed("malformed Nonce") from None
    if not 0 < len(nonce) <= _MAX_NONCE_BYTES:
        raise AuthenticationFailed("empty or oversized Nonce")
    return nonce


def _parse_auth_params(text: str) -> dict[str, str] | None:
    """RFC 7235 auth-params (``k=v, k="quoted"``) as a dict, or None if malformed."""
    params: dict[str, str] = {}
    position = 0
    text = text.strip()
    while position < len(text):
        match = _AUTH_PARAM.match(text, position)
        if match is None or match.end() == position:
            return None
        name, quoted, token = match.groups()
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else token
        params[name.lower()] = value
        position = match.end()
    return params
