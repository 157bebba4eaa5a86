"""Which host a device names in its answers: the Host header a client used (checked), or ``advertise_host``."""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any

_HOST = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?))(?::(?P<port>[0-9]{1,5}))?$"
)


@functools.lru_cache(maxsize=256)
def parse_host(text: str) -> tuple[str, int | None] | None:
    """``(host, port)`` from a Host header value, or None when it is unusable for XAddrs.

    Memoized: clients send a handful of distinct values, and ``ipaddress`` is slow (the
    server passes at most ``MAX_HOST`` bytes).
    """
    match = _HOST.match(text)
    if match is None:
        return None
    port_text = match.group("port")
    port = int(port_text) if port_text else None
    if port is not None and not 0 < port < 65536:
        return None
    v6 = match.group("v6")
    if v6 is not None:
        try:
            address = ipaddress.IPv6Address(v6)
        except ValueError:
            return None
        return (str(address), port) if not address.is_unspecified else None
    name = match.group("name").rstrip(".").lower()
    if name.replace(".", "").isdigit():
        try:
            if ipaddress.IPv4Address(name).is_unspecified:
                return None
        except ValueError:
            return None
    return name, port


def advertised(value: str) -> tuple[str, int | None]:
    """``advertise_host`` as (host, port): ``name``, ``name:port``, ``[v6]:port`` or a bare IPv6 literal."""
    try:
        return str(ipaddress.IPv6Address(value)), None
    except ValueError:
        pass
    parsed = parse_host(value)
    if parsed is None:
        raise ValueError(f"advertise_host {value!r} is not a host name or address")
    return parsed


def local_address(request: Any) -> tuple[str, int | None]:
    """The address the request came in on, as (host, port)."""
    address = request.getHost()
    host = str(getattr(address, "host", "") or "localhost")
    port = getattr(address, "port", None)
    return host, port if isinstance(port, int) else None


def join_host(host: str, port: int | None) -> str:
    """``host:port`` for a URL authority (an IPv6 address in brackets)."""
    if ":" in host:
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"
