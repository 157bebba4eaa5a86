"""``/onvif`` on ``onvif.port`` in per_camera mode: no device lives there, so a SOAP Fault says where they are.

A client set up with the relay's main port (Home Assistant, an NVR) would otherwise get
twisted.web's HTML 404 and show it as an unknown fault. Every POST below ``/onvif`` is
answered ``env:Receiver/ter:ActionNotSupported/ter:NoSuchService`` (the Core spec's fault
for a service the device does not have), in the SOAP version its Content-Type names, with
a reason listing each camera's device service URL.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlsplit

from twisted.web.resource import Resource

from atomrelay.onvif.base import receiver_fault
from atomrelay.onvif.device import PATH
from atomrelay.onvif.soap import SOAP_11, SOAP_12, fault_envelope, fault_status

_SAFE_HOST = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])$")


@dataclass(frozen=True)
class DeviceAddress:
    """Where one per-camera device answers: its camera, its port and the host it advertises (None: the Host header)."""

    camera_id: str
    port: int
    advertise_host: str | None


class DevicesElsewhere(Resource):
    """The ``/onvif`` child of ``onvif.port``'s root when every camera is its own device (see the module docstring)."""

    isLeaf = True

    def __init__(self, devices: Sequence[DeviceAddress]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._devices = list(devices)

    def render_POST(self, request: Any) -> bytes:
        """A SOAP Fault naming the per-camera device URLs."""
        content_type = (request.getHeader(b"content-type") or b"").split(b";", 1)[0].strip().lower()
        version = SOAP_11 if content_type == b"text/xml" else SOAP_12
        host = request.getRequestHostname().decode("latin-1")
        if not _SAFE_HOST.match(host):
            host = str(getattr(request.getHost(), "host", "localhost"))
        urls = ", ".join(f"{device.camera_id} at {_url(device, host)}" for device in self._devices)
        fault = receiver_fault(
            "ActionNotSupported", "NoSuchService",
            reason=f"onvif.mode is per_camera: this port serves no ONVIF device; each camera is its own device: {urls}",
        )
        request.setResponseCode(fault_status(version, fault))
        request.setHeader(b"content-type", version.content_type)
        return fault_envelope(version, fault)


def _url(device: DeviceAddress, request_host: str) -> str:
    """The device service URL of ``device``, on its advertised host or else the host the client asked for."""
    host, port = request_host, device.port
    if device.advertise_host:
        host, port = _split_host(device.advertise_host, device.port)
    return f"http://{host}:{port}{PATH}"


def _split_host(value: str, default_port: int) -> tuple[str, int]:
    """``advertise_host`` (``name``, ``name:port``, ``[v6]:port`` or a bare IPv6 literal) as URL host and port."""
    try:
        return f"[{ipaddress.IPv6Address(value)}]", default_port
    except ValueError:
        pass
    parts = urlsplit("//" + value)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or value
    return (f"[{host}]" if ":" in host else host), port or default_port
