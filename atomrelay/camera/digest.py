"""Client side of HTTP Digest authentication (RFC 7616, MD5 and SHA-256, qop=auth).

The cameras' lighttpd may require Digest (realm ``atomcam``); treq only does Basic,
so requests that get a 401 with a Digest challenge are answered once with this.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_HASHES = {"MD5": hashlib.md5, "MD5-SESS": hashlib.md5, "SHA-256": hashlib.sha256, "SHA-256-SESS": hashlib.sha256}


class DigestError(Exception):
    """The server's challenge cannot be answered."""


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate: Digest ...`` challenge."""

    realm: str
    nonce: str
    qop: str | None
    algorithm: str
    opaque: str | None


def parse_challenge(header: str) -> Challenge:
    """Parse one Digest challenge; raise DigestError if it is not one we can answer."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest challenge: {scheme!r}")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in _PARAM.finditer(rest)}
    if "nonce" not in params or "realm" not in params:
        raise DigestError("Digest challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm not in _HASHES:
        raise DigestError(f"unsupported Digest algorithm {algorithm!r}")
    qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
    if qops and "auth" not in qops:
        raise DigestError(f"unsupported Digest qop {params['qop']!r}")
    return Challenge(params["realm"], params["nonce"], "auth" if qops else None, algorithm, params.get("opaque"))


def pick_challenge(headers: list[str]) -> Challenge:
    """The strongest answerable Digest challenge among ``WWW-Authenticate`` values."""
    parsed: list[Challenge] = []
    for value in headers:
        try:
            parsed.append(parse_challenge(value))
        except DigestError:
            continue
    if not parsed:
        raise DigestError("no usable Digest challenge")
    parsed.sort(key=lambda c: 0 if c.algorithm.startswith("SHA-256") else 1)
    return parsed[0]


def authorization(
    challenge: Challenge, method: str, uri: str, username: str, password: str, nc: int = 1, cnonce: str | None = None
) -> str:
    """The ``Authorization`` header value answering ``challenge``."""
    hasher = _HASHES[challenge.algorithm]

    def h(text: str) -> str:
        return hasher(text.encode("utf-8")).hexdigest()

    cnonce = cnonce or os.urandom(8).hex()
    ha1 = h(f"{username}:{challenge.realm}:{password}")
    if challenge.algorithm.endswith("-SESS"):
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    nc_text = f"{nc:08x}"
    if challenge.qop:
        response = h(f"{ha1}:{challenge.nonce}:{nc_text}:{cnonce}:{challenge.qop}:{ha2}")
    else:
        response = h(f"{ha1}:{challenge.nonce}:{ha2}")
    parts = [
        f'username="{_escape(username)}"',
        f'realm="{_escape(challenge.realm)}"',
        f'nonce="{_escape(challenge.nonce)}"',
        f'uri="{_escape(uri)}"',
        f"algorithm={challenge.algorithm}",
        f'response="{response}"',
    ]
    if challenge.qop:
        parts += [f"qop={challenge.qop}", f"nc={nc_text}", f'cnonce="{cnonce}"']
    if challenge.opaque is not None:
        parts.append(f'opaque="{_escape(challenge.opaque)}"')
    return "Digest " + ", ".join(parts)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
