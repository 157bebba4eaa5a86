"""Listing the host's IPv4 interfaces (read-only ioctls) and choosing the ones discovery joins."""

from __future__ import annotations

import ipaddress
import socket

from atomrelay.discovery.interfaces import ipv4_interfaces, select
from tests.discovery.support import interface

ETH0 = interface("eth0", "192.168.1.20/24")
ETH0_ALIAS = interface("eth0", "192.168.1.51/24", label="eth0:cam")
WLAN0 = interface("wlan0", "192.168.50.3/24")
DOWN = interface("eth1", "10.9.0.1/24", up=False)
LO = interface("lo", "127.0.0.1/8", multicast=False, loopback=True)
ALL = [LO, ETH0, ETH0_ALIAS, WLAN0, DOWN]


def test_host_loopback_is_listed_with_its_prefix_and_flags() -> None:
    """Every Linux host has lo: 127.0.0.1/8, up, loopback, with its kernel index."""
    [lo] = [i for i in ipv4_interfaces() if i.ip == ipaddress.IPv4Address("127.0.0.1")]
    assert (lo.name, lo.label, lo.address.network.prefixlen, lo.up, lo.loopback) == ("lo", "lo", 8, True, True)
    assert lo.index == socket.if_nametoindex("lo")


def test_listing_matches_the_kernel_interface_names() -> None:
    """Every listed address belongs to an interface the kernel knows by that index."""
    names = dict((name, index) for index, name in socket.if_nameindex())
    for entry in ipv4_interfaces():
        assert names[entry.name] == entry.index


def test_default_selection_is_every_up_multicast_interface() -> None:
    """Without discovery.interface: all addresses of up, multicast-capable interfaces (aliases included)."""
    assert select(ALL, None) == [ETH0, ETH0_ALIAS, WLAN0]


def test_selection_by_name_label_or_address() -> None:
    """A name selects all its addresses, a label or an address exactly one; down or unknown ones nothing."""
    assert select(ALL, "eth0") == [ETH0, ETH0_ALIAS]
    assert select(ALL, "eth0:cam") == [ETH0_ALIAS]
    assert select(ALL, "192.168.50.3") == [WLAN0]
    assert select(ALL, "lo") == [LO]
    assert select(ALL, "eth1") == []
    assert select(ALL, "10.9.0.1") == []
    assert select(ALL, "wlan9") == []
