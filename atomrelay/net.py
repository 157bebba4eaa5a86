"""Network helpers: the HTTP clients' transport failures told apart and said in a few words, hosts in URLs,
IP addresses read from text."""

from __future__ import annotations

import ipaddress
from urllib.parse import quote

from twisted.internet.defer import CancelledError, TimeoutError
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.python.failure import Failure
from twisted.web.client import (
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)

_CANCELLATIONS = (CancelledError, TimeoutError, ConnectingCancelledError)


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is (or wraps, as treq's ResponseNeverReceived does) a cancellation or a timeout.

    A request cancelled while still connecting fails with ConnectingCancelledError; one
    cancelled by ``Deferred.addTimeout`` with TimeoutError.
    """
    if isinstance(exc, _CANCELLATIONS):
        return True
    reasons = getattr(exc, "reasons", None) or []
    return any(isinstance(r, Failure) and isinstance(r.value, _CANCELLATIONS) for r in reasons)


def describe(exc: BaseException) -> str:
    """A short human description of a connection-level failure, for a log line or an error message."""
    if isinstance(exc, (ResponseFailed, ResponseNeverReceived, RequestTransmissionFailed)):
        inner = "; ".join(
            describe(r.value) if isinstance(r, Failure) and r.value is not None else str(r) for r in exc.reasons
        ) or "connection lost"
        if isinstance(exc, ResponseNeverReceived):
            return f"connection closed without an answer ({inner})"
        if isinstance(exc, ResponseFailed):
            return f"answer cut off ({inner})"
        return inner
    if isinstance(exc, ConnectTimeout):
        return "timed out"
    text = str(exc).strip() or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


def url_host(host: str) -> str:
    """``host`` as it goes into a URL's authority: an IPv6 address in brackets, its zone as ``%25zone``."""
    if ":" in host and not host.startswith("["):
        address, _, zone = host.partition("%")
        return f"[{address}%25{quote(zone, safe='')}]" if zone else f"[{address}]"
    return host


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address written in ``host`` (scope id dropped, IPv4-mapped IPv6 as IPv4), or None for a name."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
