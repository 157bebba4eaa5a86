"""``/onvif`` on ``onvif.port`` in per_camera mode: no device lives there, so a SOAP Fault says where they are.

A client set up with the relay's main port (Home Assistant, an NVR) would otherwise get
twisted.web's HTML 404 and show it as an unknown fault. Every POST below ``/onvif`` is
answered ``env:Receiver/ter:ActionNotSupported/ter:NoSuchService`` (the Core spec's fault
for a service the device does not have), in the SOAP version its Content-Type names, with
a reason listing each camera's device service URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from twisted.web.resource import Resource

from atomrelay.onvif.base import DEVICE_SERVICE_PATH as PATH
from atomrelay.xml.soap import SOAP_11, SOAP_12, fault_envelope, fault_status, receiver_fault

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
    """The device service URL of ``device``, on its advertised host or else the host the client asked for.

    In per_camera mode ``advertise_host`` names no port (the config refuses one): it is the
    camera's ``onvif_bind`` address or ``onvif.advertise_host``.
    """
    host = device.advertise_host or request_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{device.port}{PATH}"
