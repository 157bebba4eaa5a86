"""The WS-Discovery service: UDP 3702, group 239.255.255.250 on the chosen interfaces, Hello and Bye.

``startService`` binds UDP 3702 with address reuse (another relay or a desktop's wsdd
may share the host), then joins the group on ``discovery.interface`` (a name or an
IPv4 address) or on every up, multicast-capable IPv4 interface. Interfaces are
rescanned periodically; a failed bind or join, or a configured interface that is not
there (yet), is retried with exponential backoff and logged, never fatal. The socket
only receives the group on the interfaces it joined (``IP_MULTICAST_ALL`` off on
Linux), so ``discovery.interface`` really limits where the relay answers.

A device is announced with Hello on each interface as soon as the group is joined
there (the composition root starts this service after the SOAP listeners, so the
XAddrs answer), again with an incremented MetadataVersion whenever its scopes change,
and when it becomes Discoverable; it says Bye when it becomes NonDiscoverable and on
``stopService``, which fires only after every Bye is written and the socket closed.
MetadataVersion survives restarts in state_dir and is incremented when the scopes
differ from the saved ones (e.g. after a config edit).

A device with its own address (per_camera ``cameras[].onvif_bind``, or ``onvif.bind``)
speaks from that address: a sending socket is bound to it on an ephemeral port
(SOAP-over-UDP lets a reply and an announcement leave from any port), its ProbeMatch and
ResolveMatch leave from it, and its Hello and Bye leave from it on the interface that
holds the address only. Until that socket can be bound (the address is not up yet:
retried with the interfaces) the device speaks from the shared socket.

A config reload keeps the service (and its socket) when the discovery settings stay:
``retire`` says Bye for the devices that are going before their listeners close, and
``update`` takes the new generation's devices, with Hello only for new devices and for
devices whose XAddrs or scopes changed (MetadataVersion + 1). Unchanged devices say
nothing, so NVRs do not see them leave and come back.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Protocol, Sequence, cast

from twisted.application.service import Service
from twisted.internet.base import DelayedCall
from twisted.internet.defer import CancelledError, Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.logger import Logger

from atomrelay.config import DiscoveryConfig
from atomrelay.discovery.interfaces import Interface, ipv4_interfaces, select
from atomrelay.discovery.responder import DiscoveryResponder, Limits, Target
from atomrelay.state import StateStore

GROUP = "239.255.255.250"
PORT = 3702
MAX_DATAGRAM = 65536
"""Read buffer: the largest UDP payload fits, so no datagram is ever silently cut."""
RESCAN_INTERVAL = 60.0
RETRY_MIN = 1.0
RETRY_MAX = 300.0
STATE_NAME = "discovery"
_IP_MULTICAST_ALL = 49  # linux/in.h; the socket module does not export it


class Reactor(Protocol):
    """The reactor methods the service uses (``IReactorTime`` + ``IReactorMulticast``)."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> DelayedCall: ...

    def listenMulticast(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192,
        listenMultiple: bool = False,
    ) -> Any: ...


@dataclass
class _Link:
    """One interface the group is joined on, with the addresses used for XAddrs."""

    name: str
    index: int
    join_address: str
    addresses: list[ipaddress.IPv4Interface] = field(default_factory=list)


class DiscoveryService(Service):
    """Announces and answers for the relay's ONVIF devices over WS-Discovery (see the module docstring)."""

    log = Logger()

    def __init__(
        self,
        reactor: Reactor,
        config: DiscoveryConfig,
        targets: Sequence[Target],
        store: StateStore,
        interfaces: Callable[[], list[Interface]] = ipv4_interfaces,
        rng: random.Random | None = None,
        port: int = PORT,
        limits: Limits = Limits(),
        rescan_interval: float = RESCAN_INTERVAL,
    ) -> None:
        self._reactor = reactor
        self._config = config
        self._store = store
        self._interfaces = interfaces
        self._port_number = port
        self._rescan_interval = rescan_interval
        self.targets = list(targets)
        self._own: dict[str, Any] = {}
        """Own address -> the sending socket bound to it."""
        self.responder = DiscoveryResponder(
            reactor, self.targets, self._local_addresses, rng or random.Random(), limits, own_transport=self._own.get
        )
        self._port: Any = None
        self._links: dict[str, _Link] = {}
        self._attempts = 0
        self._loop: Deferred[None] | None = None
        self._send_lock = DeferredLock()
        self._last_instance = 0
        for target in self.targets:
            self._watch(target)

    # --- Service -----------------------------------------------------------------------------

    def startService(self) -> None:
        """Load MetadataVersions, bind UDP 3702 and start joining interfaces (Hello follows each join)."""
        super().startService()  # type: ignore[no-untyped-call]
        self._load_state()
        self._loop = Deferred.fromCoroutine(self._run())
        self._loop.addErrback(lambda failure: self.log.failure("WS-Discovery stopped", failure))

    def stopService(self) -> Deferred[None]:
        """Send Bye for every announced device, then close the socket; fires when both are done."""
        super().stopService()  # type: ignore[no-untyped-call]

        async def stop() -> None:
            loop, self._loop = self._loop, None
            if loop is not None and not loop.called:
                loop.cancel()
            self.responder.cancel_pending()
            port, self._port = self._port, None
            links = list(self._links.values())
            self._links.clear()
            if port is None:
                return
            leaving = [target for target in self.targets if target.device.discoverable]
            await self._bye(port, leaving, links)
            await self._close_own(keep=set())
            stopped = port.stopListening()
            if isinstance(stopped, Deferred):
                await stopped
            self.log.info(
                "WS-Discovery stopped: Bye for {devices} devices on {interfaces} interfaces",
                devices=len(leaving), interfaces=len(links),
            )

        return Deferred.fromCoroutine(stop())

    @property
    def config(self) -> DiscoveryConfig:
        """The discovery settings this service runs with."""
        return self._config

    async def retire(self, keep: Collection[str]) -> None:
        """Say Bye for (and forget) every device whose endpoint reference is not in ``keep``."""
        leaving = [target for target in self.targets if target.endpoint_reference not in keep]
        if not leaving:
            return
        self.targets[:] = [target for target in self.targets if target.endpoint_reference in keep]
        self.responder.targets = list(self.targets)
        if self._port is not None and self.running:
            discoverable = [target for target in leaving if target.device.discoverable]
            await self._bye(self._port, discoverable, list(self._links.values()))
        self.log.info("WS-Discovery: Bye for {count} devices that are gone", count=len(leaving))

    async def update(self, targets: Sequence[Target]) -> None:
        """Announce the devices of a new config generation: Hello for new ones and for changed ones only.

        A device is changed when its XAddrs (port, bind, advertise_host) or its scopes differ;
        it then gets MetadataVersion + 1. Devices that are gone get Bye (see ``retire``).
        """
        await self.retire({target.endpoint_reference for target in targets})
        before = {target.endpoint_reference: target for target in self.targets}
        saved, _ = self._saved()
        announce = []
        for target in targets:
            old = before.get(target.endpoint_reference)
            if old is None:
                target.metadata_version = max(target.metadata_version, _saved_version(saved, target))
                announce.append(target)
            else:
                target.metadata_version = old.metadata_version
                if _announced(old) != _announced(target):
                    target.metadata_version += 1
                    announce.append(target)
                elif old.device.discoverable != target.device.discoverable:
                    announce.append(target)
            if target is not old:
                self._watch(target)
        self.targets[:] = list(targets)
        self.responder.targets = list(self.targets)
        self._save_state()
        port = self._port
        if port is None or not self.running:
            return
        await self._close_own(keep=self._own_addresses())
        self._bind_own()
        for target in announce:
            was = before.get(target.endpoint_reference)
            for link in list(self._links.values()):
                if target.device.discoverable:
                    await self._hello(port, target, link)
                elif was is not None and was.device.discoverable:
                    await self._to_group(port, target, self.responder.bye(target), link)
        self.log.info(
            "WS-Discovery: {devices} devices, Hello for {announced} new or changed ones",
            devices=len(self.targets), announced=len(announce),
        )

    @property
    def joined(self) -> dict[str, list[ipaddress.IPv4Interface]]:
        """Interface name -> addresses, for every interface the group is joined on."""
        return {name: list(link.addresses) for name, link in self._links.items()}

    # --- the loop: bind, join, rescan ----------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                complete = False
                if self._listen():
                    own = self._bind_own()
                    complete = await self._refresh() and own
                if complete:
                    self._attempts = 0
                    delay = self._rescan_interval
                else:
                    delay = min(RETRY_MAX, RETRY_MIN * 2**self._attempts)
                    self._attempts += 1
                await deferLater(cast(IReactorTime, self._reactor), delay)
        except CancelledError:
            pass

    def _listen(self) -> bool:
        if self._port is not None:
            return True
        try:
            port = self._reactor.listenMulticast(
                self._port_number, self.responder, maxPacketSize=MAX_DATAGRAM, listenMultiple=True
            )
        except Exception as exc:  # noqa: BLE001 - CannotListenError and OS errors alike: retry later
            self.log.error(
                "WS-Discovery cannot listen on UDP {port}: {error}; retrying in {delay:g}s",
                port=self._port_number, error=str(exc), delay=min(RETRY_MAX, RETRY_MIN * 2**self._attempts),
            )
            return False
        port.setTTL(1)
        port.setLoopbackMode(1)
        if sys.platform.startswith("linux"):
            try:
                port.getHandle().setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
            except OSError as exc:
                self.log.warn("cannot limit WS-Discovery to the joined interfaces: {error}", error=str(exc))
        self._port = port
        self.log.info("WS-Discovery listening on UDP {port}", port=self._port_number)
        return True

    def _own_addresses(self) -> set[str]:
        return {address for address in (target.own_address for target in self.targets) if address is not None}

    def _bind_own(self) -> bool:
        """Open a sending socket on each device's own address that has none; True when every one is open."""
        complete = True
        for address in sorted(self._own_addresses() - set(self._own)):
            try:
                port = self._reactor.listenMulticast(0, DatagramProtocol(), interface=address)
            except Exception as exc:  # noqa: BLE001 - CannotListenError and OS errors alike: retry later
                self.log.warn(
                    "WS-Discovery cannot send from {address} ({error}); its devices speak from the shared socket "
                    "until it can", address=address, error=str(exc),
                )
                complete = False
                continue
            port.setTTL(1)
            port.setLoopbackMode(1)
            self._own[address] = port
            self.log.info("WS-Discovery: devices on {address} speak from it", address=address)
        return complete

    async def _close_own(self, keep: set[str]) -> None:
        """Close the sending sockets of own addresses not in ``keep``."""
        for address in [address for address in self._own if address not in keep]:
            stopped = self._own.pop(address).stopListening()
            if isinstance(stopped, Deferred):
                await stopped

    async def _refresh(self) -> bool:
        """Join new interfaces, forget vanished ones; True when everything wanted is joined."""
        wanted = self._config.interface
        try:
            found = select(self._interfaces(), wanted)
        except OSError as exc:
            self.log.error("cannot list network interfaces: {error}", error=str(exc))
            return False
        grouped: dict[str, list[Interface]] = {}
        for entry in found:
            grouped.setdefault(entry.name, []).append(entry)
        for name, link in list(self._links.items()):
            if name not in grouped or grouped[name][0].index != link.index:
                self.log.info("WS-Discovery: interface {name} is gone", name=name)
                del self._links[name]
        complete = bool(grouped)
        if not grouped and wanted:
            self.log.warn("WS-Discovery: interface {wanted} is not up (yet); retrying", wanted=wanted)
        elif not grouped:
            self.log.warn("WS-Discovery: no up, multicast-capable IPv4 interface (yet); retrying")
        for name, entries in grouped.items():
            addresses = [entry.address for entry in entries]
            joined = self._links.get(name)
            if joined is not None:
                joined.addresses = addresses
                if all(str(address.ip) != joined.join_address for address in addresses):
                    joined.join_address = str(entries[0].ip)
                continue
            if not await self._join(_Link(name, entries[0].index, str(entries[0].ip), addresses)):
                complete = False
        return complete

    async def _join(self, link: _Link) -> bool:
        port = self._port
        try:
            await port.joinGroup(GROUP, link.join_address)
        except Exception as exc:  # noqa: BLE001 - MulticastJoinError and friends: retry with backoff
            self.log.warn(
                "WS-Discovery cannot join {group} on {name} ({address}): {error}; retrying",
                group=GROUP, name=link.name, address=link.join_address, error=str(exc),
            )
            return False
        if port is not self._port:
            return True
        self._links[link.name] = link
        self.log.info(
            "WS-Discovery joined {group} on {name} ({address})", group=GROUP, name=link.name, address=link.join_address
        )
        for target in self.targets:
            if target.device.discoverable:
                await self._hello(port, target, link)
        return True

    def _local_addresses(self) -> list[ipaddress.IPv4Interface]:
        return [address for link in self._links.values() for address in link.addresses]

    # --- sending -----------------------------------------------------------------------------

    async def _hello(self, port: Any, target: Target, link: _Link) -> None:
        data = self.responder.hello(target, ipaddress.IPv4Address(link.join_address))
        if data is not None:
            await self._to_group(port, target, data, link)

    async def _bye(self, port: Any, targets: Sequence[Target], links: Sequence[_Link]) -> None:
        """Bye for each of ``targets`` out of each of ``links``."""
        for link in links:
            for target in targets:
                await self._to_group(port, target, self.responder.bye(target), link)

    async def _to_group(self, port: Any, target: Target, data: bytes, link: _Link) -> None:
        """Send ``target``'s announcement out of ``link``: from its own address's socket, and only on the
        interface holding that address, when it has one; else from the shared socket ``port``."""
        own = target.own_address
        if own is None:
            await self._multicast(port, data, link)
        elif any(str(address.ip) == own for address in link.addresses):
            await self._multicast(self._own.get(own) or port, data, link)

    async def _multicast(self, port: Any, data: bytes, link: _Link) -> None:
        """Send ``data`` to the group from ``port`` out of ``link`` (the outgoing interface is per socket: one at
        a time)."""
        await self._send_lock.acquire()
        try:
            await port.setOutgoingInterface(link.join_address)
            port.write(data, (GROUP, self._port_number))
        except Exception as exc:  # noqa: BLE001 - an interface that went away: log, go on
            self.log.warn("cannot send WS-Discovery on {name}: {error}", name=link.name, error=str(exc))
        finally:
            self._send_lock.release()

    def _announce(self, target: Target, hello: bool) -> None:
        port = self._port
        if port is None:
            return

        async def send() -> None:
            for link in list(self._links.values()):
                if hello:
                    await self._hello(port, target, link)
                else:
                    await self._to_group(port, target, self.responder.bye(target), link)

        Deferred.fromCoroutine(send()).addErrback(lambda f: self.log.failure("WS-Discovery announcement failed", f))

    # --- device changes and saved state -------------------------------------------------------

    def _watch(self, target: Target) -> None:
        def scopes_changed(scopes: Sequence[str]) -> None:
            self._scopes_changed(target)

        def mode_changed(discoverable: bool) -> None:
            self._mode_changed(target, discoverable)

        target.device.on_scopes_changed.append(scopes_changed)
        target.device.on_discovery_mode_changed.append(mode_changed)

    def _scopes_changed(self, target: Target) -> None:
        target.metadata_version += 1
        self._save_state()
        self.log.info(
            "scopes of {epr} changed: MetadataVersion {version}",
            epr=target.endpoint_reference, version=target.metadata_version,
        )
        if self.running and target.device.discoverable:
            self._announce(target, hello=True)

    def _mode_changed(self, target: Target, discoverable: bool) -> None:
        if self.running:
            self._announce(target, hello=discoverable)

    def _load_state(self) -> None:
        devices, last = self._saved()
        for target in self.targets:
            target.metadata_version = max(target.metadata_version, _saved_version(devices, target))
        instance = max(last + 1, self._last_instance + 1, int(self._reactor.seconds()))
        self.responder.instance_id = self._last_instance = instance
        self._save_state()

    def _saved(self) -> tuple[dict[str, Any], int]:
        """The saved state: each device's entry by endpoint reference, and the last instance id."""
        saved = self._store.load(STATE_NAME, {})
        saved = saved if isinstance(saved, dict) else {}
        devices = saved.get("devices", {})
        last = saved.get("instance_id")
        return (devices if isinstance(devices, dict) else {}), (last if isinstance(last, int) else 0)

    def _save_state(self) -> None:
        document = {
            "instance_id": self._last_instance,
            "devices": {
                target.endpoint_reference: {
                    "metadata_version": target.metadata_version,
                    "scopes": list(target.device.scopes()),
                }
                for target in self.targets
            },
        }
        self._store.save_in_background(STATE_NAME, document, "WS-Discovery state")


def _saved_version(devices: dict[str, Any], target: Target) -> int:
    """The MetadataVersion to announce ``target`` with, from the saved state: the saved one while the
    scopes are the saved ones, else one more."""
    entry = devices.get(target.endpoint_reference)
    entry = entry if isinstance(entry, dict) else {}
    version = entry.get("metadata_version")
    version = version if isinstance(version, int) and version > 0 else 0
    if entry.get("scopes") == target.device.scopes() and version:
        return version
    return version + 1


def _announced(target: Target) -> tuple[object, ...]:
    """What a Hello says about ``target`` besides its endpoint reference."""
    return (target.port, target.bind, target.advertise_host, tuple(target.device.scopes()))
