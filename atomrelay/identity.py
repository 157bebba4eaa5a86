"""Stable identity of the relay and of each virtual device.

A random UUID is created once and kept in state_dir; serial numbers, hardware
addresses and WS-Discovery endpoint references derive from it, so they are unique per
relay (Home Assistant and UniFi merge devices that share them) and stable across
restarts and config reorders.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from atomrelay.state import StateError, StateStore


@dataclass(frozen=True)
class Identity:
    """The identifiers one ONVIF device presents."""

    uuid: uuid.UUID

    @property
    def endpoint_reference(self) -> str:
        """WS-Discovery / GetEndpointReference address."""
        return f"urn:uuid:{self.uuid}"

    @property
    def serial_number(self) -> str:
        """GetDeviceInformation SerialNumber."""
        return "AR" + self.uuid.hex[:14].upper()

    @property
    def hardware_id(self) -> str:
        """GetDeviceInformation HardwareId."""
        return self.uuid.hex[14:22].upper()

    @property
    def hw_address(self) -> str:
        """A locally administered unicast MAC address, e.g. ``02:1a:...``."""
        raw = bytearray(self.uuid.bytes[-6:])
        raw[0] = (raw[0] & 0xFC) | 0x02
        return ":".join(f"{b:02x}" for b in raw)

    def for_camera(self, camera_id: str) -> Identity:
        """The identity of the per-camera virtual device for ``camera_id``."""
        return Identity(uuid.uuid5(self.uuid, f"camera:{camera_id}"))


def load_identity(store: StateStore) -> Identity:
    """The relay's identity, created and saved on first use (at start, before the reactor runs).

    Raises StateError when the saved one exists but cannot be read: a new identity would
    make every NVR see new cameras. A saved one without a valid uuid is moved aside first.
    """
    saved = store.load("identity", {})
    unreadable = store.unreadable("identity")
    if unreadable is not None:
        raise StateError(f"cannot read {store.directory / 'identity.json'} ({unreadable}): make it readable by the "
                         "relay's user; a new identity would make every NVR see new cameras")
    if saved:
        try:
            return Identity(uuid.UUID(str(saved["uuid"])))
        except (KeyError, ValueError, TypeError):
            store.set_aside("identity", "it holds no valid uuid")
            unmovable = store.unreadable("identity")
            if unmovable is not None:
                raise StateError(f"cannot move {store.directory / 'identity.json'} aside: {unmovable}") from None
    identity = Identity(uuid.uuid4())
    store.write("identity", store.encode({"uuid": str(identity.uuid)}))
    return identity
