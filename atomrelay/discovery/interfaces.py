"""The host's IPv4 interfaces, listed with the standard library (Linux ioctls, no subprocess).

``SIOCGIFCONF`` lists every IPv4 address with its interface label (secondary addresses
included, so IP aliases given to per-camera devices are seen); ``SIOCGIFFLAGS`` and
``SIOCGIFNETMASK`` complete each entry. The kernel matches the netmask query on label
*and* address, so every alias gets its own prefix.
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Sequence

SIOCGIFCONF = 0x8912
SIOCGIFFLAGS = 0x8913
SIOCGIFNETMASK = 0x891B
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_MULTICAST = 0x1000
_IFNAMSIZ = 16
# struct ifreq: a 16-byte name, then a union whose largest member is struct ifmap
# (two unsigned longs, a short and three chars, padded to a long): 40 bytes on LP64.
_IFREQ_SIZE = _IFNAMSIZ + max(16, struct.calcsize("LLHBBB0L"))
_IFCONF = "iP"  # struct ifconf: int ifc_len; then the buffer pointer, natively aligned


@dataclass(frozen=True)
class Interface:
    """One IPv4 address of a network interface, with the interface's state."""

    name: str
    """The device name (``eth0``), without an alias label's ``:suffix``."""
    index: int
    """The kernel's interface index (0 if it vanished while listing)."""
    label: str
    """The address label (``eth0`` or ``eth0:1``)."""
    address: ipaddress.IPv4Interface
    """Address and prefix, e.g. ``192.168.1.20/24``."""
    up: bool
    multicast: bool
    loopback: bool

    @property
    def ip(self) -> ipaddress.IPv4Address:
        """The address without its prefix."""
        return self.address.ip


def ipv4_interfaces() -> list[Interface]:
    """Every IPv4 address of every interface, in the kernel's order; raises OSError if unsupported."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fd = sock.fileno()
        entries: list[Interface] = []
        for label, address in _addresses(fd):
            flags = _flags(fd, label)
            netmask = _netmask(fd, label, address)
            name = label.split(":", 1)[0]
            entries.append(
                Interface(
                    name=name,
                    index=_index(name),
                    label=label,
                    address=ipaddress.IPv4Interface(f"{address}/{netmask}"),
                    up=bool(flags & IFF_UP),
                    multicast=bool(flags & IFF_MULTICAST),
                    loopback=bool(flags & IFF_LOOPBACK),
                )
            )
        return entries


def select(interfaces: Sequence[Interface], wanted: str | None) -> list[Interface]:
    """The addresses discovery uses: those of ``wanted`` (a name, label or IPv4 address), else every up multicast one.

    A named interface contributes all its addresses; an address selects only itself
    (so its XAddrs carry exactly that address).
    """
    if wanted:
        try:
            address = ipaddress.IPv4Address(wanted)
        except ValueError:
            return [i for i in interfaces if wanted in (i.name, i.label) and i.up]
        return [i for i in interfaces if i.ip == address and i.up]
    return [i for i in interfaces if i.up and i.multicast]


def _addresses(fd: int) -> list[tuple[str, str]]:
    size = 64 * _IFREQ_SIZE
    while True:
        buffer = array.array("B", bytes(size))
        pointer, _ = buffer.buffer_info()
        result = fcntl.ioctl(fd, SIOCGIFCONF, struct.pack(_IFCONF, size, pointer))
        length = struct.unpack(_IFCONF, result)[0]
        if length < size:
            break
        size *= 2
    data = buffer.tobytes()[:length]
    found = []
    for offset in range(0, length - _IFREQ_SIZE + 1, _IFREQ_SIZE):
        label = data[offset : offset + _IFNAMSIZ].split(b"\0", 1)[0].decode("utf-8", "replace")
        family = struct.unpack_from("H", data, offset + _IFNAMSIZ)[0]
        if family == socket.AF_INET:
            found.append((label, socket.inet_ntoa(data[offset + _IFNAMSIZ + 4 : offset + _IFNAMSIZ + 8])))
    return found


def _ifreq(label: str, address: str | None = None) -> bytes:
    name = label.encode("utf-8")[: _IFNAMSIZ - 1].ljust(_IFNAMSIZ, b"\0")
    sockaddr = b""
    if address is not None:
        sockaddr = struct.pack("H", socket.AF_INET) + b"\0\0" + socket.inet_aton(address)
    return (name + sockaddr).ljust(_IFREQ_SIZE, b"\0")


def _index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


def _flags(fd: int, label: str) -> int:
    result = fcntl.ioctl(fd, SIOCGIFFLAGS, _ifreq(label))
    flags: int = struct.unpack_from("H", result, _IFNAMSIZ)[0]
    return flags


def _netmask(fd: int, label: str, address: str) -> str:
    result = fcntl.ioctl(fd, SIOCGIFNETMASK, _ifreq(label, address))
    return socket.inet_ntoa(result[_IFNAMSIZ + 4 : _IFNAMSIZ + 8])
