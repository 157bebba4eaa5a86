"""The ONVIF Device service (``tds``) at ``/onvif/device_service``.

Identity, clock, capabilities, service addresses, scopes, discovery mode and users.
Every operation's access class is the one its ``role="access"`` paragraph in the Core
spec gives; every response follows the element order of ``devicemgmt.wsdl`` and
``onvif.xsd`` exactly (zeep and gSOAP clients reject anything else).

The relay is not a camera with its own network stack: it follows the host's clock and
time zone (so it reports ``NTP`` and refuses a manual time), reports one ``eth0``
interface with the relay's own hardware address, and signals
``NetworkConfigNotSupported``. SystemReboot restarts the relay's services, never the host.
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import os
import re
import time
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote, urlsplit

from lxml import etree
from lxml.etree import _Element
from twisted.logger import Logger

from atomrelay.auth.policy import AccessClass
from atomrelay.auth.users import MAX_PASSWORD_LENGTH, MAX_USERNAME_LENGTH, MAX_USERS, UserStore
from atomrelay.clock import Clock
from atomrelay.config import Config, User
from atomrelay.identity import Identity
from atomrelay.onvif.base import DEVICE_SERVICE_PATH, Handler, Operation, RequestContext, Service
from atomrelay.state import StateError, StateStore
from atomrelay.xml import ns
from atomrelay.xml.soap import Maker, receiver_fault, sender_fault
from atomrelay.xml.xstypes import xs_bool

PATH = DEVICE_SERVICE_PATH
VERSION = (26, 6)
"""The Core spec release whose devicemgmt.wsdl this service is written against (26.06)."""
WSDL_URL = "http://www.onvif.org/ver10/device/wsdl/devicemgmt.wsdl"
INTERFACE_TOKEN = "eth0"
MTU = 1500
MAX_SCOPES = 32
"""Most configurable scopes (SetScopes/AddScopes beyond this are ``ter:TooManyScopes``)."""
DEFAULT_LOCATION = "unknown"
SCOPE_PREFIX = "onvif://www.onvif.org/"

_NSMAP: dict[str | None, str] = {"tds": ns.TDS, "tt": ns.TT}

# Legacy GetCapabilities categories in tt:Capabilities order, with the service namespace
# that provides each; Analytics has no service in the relay, so asking for it is a fault.
_CATEGORIES: tuple[tuple[str, str | None], ...] = (
    ("Analytics", None),
    ("Device", ns.TDS),
    ("Events", ns.TEV),
    ("Imaging", ns.TIMG),
    ("Media", ns.TRT),
    ("PTZ", ns.TPTZ),
)

_TZ_NAME = r"(?:[A-Za-z]{3,}|<[A-Za-z0-9+-]{3,}>)"
_TZ_OFFSET = r"[+-]?\d{1,2}(?::\d{1,2}){0,2}"
_TZ_DATE = r"(?:J\d{1,3}|\d{1,3}|M\d{1,2}\.\d\.\d)(?:/[+-]?\d{1,3}(?::\d{1,2}){0,2})?"
POSIX_TZ = re.compile(rf"^{_TZ_NAME}{_TZ_OFFSET}(?P<dst>{_TZ_NAME}(?:{_TZ_OFFSET})?(?:,{_TZ_DATE},{_TZ_DATE})?)?$")
"""A POSIX 1003.1 section 8.3 TZ string, as ONVIF's TimeZone/TZ requires."""


TDS = Maker(ns.TDS, _NSMAP)
TT = Maker(ns.TT, _NSMAP)


@dataclass(frozen=True)
class TimeZone:
    """The host's time zone: a POSIX TZ string and the matching UTC-to-local conversion."""

    posix: str
    localtime: Callable[[float], time.struct_time] = field(default=time.localtime)

    @property
    def daylight_savings(self) -> bool:
        """Whether the zone has daylight saving rules (the TZ string has a DST part)."""
        match = POSIX_TZ.match(self.posix)
        return bool(match and match.group("dst"))


def host_time_zone(environ: Mapping[str, str] | None = None, localtime_file: Path = Path("/etc/localtime")) -> TimeZone:
    """The host's zone as a POSIX TZ string: ``$TZ`` if POSIX, else the TZif file's footer, else UTC."""
    env = os.environ if environ is None else environ
    name = env.get("TZ", "")
    if POSIX_TZ.match(name):
        return TimeZone(name)
    source = localtime_file
    if name:
        for directory in zoneinfo.TZPATH:
            candidate = Path(directory) / name.lstrip(":")
            if candidate.is_file():
                source = candidate
                break
    try:
        data = source.read_bytes()
    except OSError:
        data = b""
    # TZif version 2+ ends with "\n<POSIX TZ string>\n" (RFC 8536 section 3.3).
    footer = data.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode("ascii", "replace") if data[:4] == b"TZif" else ""
    return TimeZone(footer if POSIX_TZ.match(footer) else "UTC0")


class DeviceService:
    """The ONVIF Device service of one (aggregate or per-camera) virtual device.

    ``services`` returns every service served beside this one (the device service may
    be among them); GetCapabilities and GetServices list their XAddrs. SystemReboot
    calls ``reboot``, which must defer the restart so that the reply still goes out
    (the composition root waits a second). Scopes and the discovery mode
    are saved in ``state_dir``; ``on_scopes_changed`` and ``on_discovery_mode_changed``
    callbacks (for WS-Discovery) get the new scope list / discoverability.
    """

    log = Logger()

    def __init__(
        self,
        clock: Clock,
        config: Config,
        identity: Identity,
        users: UserStore,
        store: StateStore,
        services: Callable[[], Sequence[Service]],
        reboot: Callable[[], None],
        version: str,
        device_id: str = "",
        zone: TimeZone | None = None,
    ) -> None:
        self._clock = clock
        self._config = config
        self._identity = identity
        self._users = users
        self._store = store
        self._services = services
        self._reboot = reboot
        self._version = version
        self._zone = zone if zone is not None else host_time_zone()
        self.on_scopes_changed: list[Callable[[Sequence[str]], None]] = []
        self.on_discovery_mode_changed: list[Callable[[bool], None]] = []
        camera = config.camera(device_id) if device_id else None
        self._name = camera.name if camera is not None and camera.name else config.onvif.device.name
        self._http_port = camera.onvif_port if camera is not None and camera.onvif_port else config.onvif.port
        self._state_name = f"device-{device_id}" if device_id else "device"
        saved = store.load(self._state_name, {})
        saved = saved if isinstance(saved, dict) else {}
        scopes = saved.get("scopes", [])
        self._fixed_scopes = self._make_fixed_scopes()
        self._scopes: list[str] = [
            s for s in (scopes if isinstance(scopes, list) else []) if isinstance(s, str) and s not in self._fixed_scopes
        ]
        self._discoverable = saved.get("discovery_mode", "Discoverable") != "NonDiscoverable"
        self._cache: dict[tuple[Any, ...], _Element] = {}
        self._service: Service | None = None
        self._lock = store.change_lock()
        """One scope or discovery-mode change at a time, each saved before it is served."""

    # --- public API for the composition root and WS-Discovery -------------------------------

    def service(self) -> Service:
        """The ``Service`` to hand to the SOAP server (built once)."""
        if self._service is None:
            self._service = Service(
                namespace=ns.TDS,
                path=PATH,
                version=VERSION,
                operations=self._operations(),
                capabilities=lambda ctx: self._cached(("capabilities",), self._device_capabilities),
            )
        return self._service

    def scopes(self) -> list[str]:
        """Every scope URI of the device: the fixed ones, then the configurable ones."""
        return [*self._fixed_scopes, *self._scopes]

    @property
    def discoverable(self) -> bool:
        """Whether WS-Discovery should announce and answer for this device."""
        return self._config.discovery.enabled and self._discoverable

    # --- plumbing ----------------------------------------------------------------------------

    def _operations(self) -> dict[str, Operation]:
        pre, read, write = AccessClass.PRE_AUTH, AccessClass.READ_SYSTEM, AccessClass.WRITE_SYSTEM
        table: dict[str, tuple[Handler, AccessClass]] = {
            "GetDeviceInformation": (self.get_device_information, read),
            "GetSystemDateAndTime": (self.get_system_date_and_time, pre),
            "SetSystemDateAndTime": (self.set_system_date_and_time, write),
            "GetCapabilities": (self.get_capabilities, pre),
            "GetServices": (self.get_services, pre),
            "GetServiceCapabilities": (self.get_service_capabilities, pre),
            "GetWsdlUrl": (self.get_wsdl_url, pre),
            "GetHostname": (self.get_hostname, pre),
            "GetEndpointReference": (self.get_endpoint_reference, pre),
            "GetScopes": (self.get_scopes, read),
            "SetScopes": (self.set_scopes, write),
            "AddScopes": (self.add_scopes, write),
            "RemoveScopes": (self.remove_scopes, write),
            "GetDiscoveryMode": (self.get_discovery_mode, read),
            "SetDiscoveryMode": (self.set_discovery_mode, write),
            "GetNetworkInterfaces": (self.get_network_interfaces, read),
            "GetDNS": (self.get_dns, read),
            "GetNTP": (self.get_ntp, read),
            "GetNetworkProtocols": (self.get_network_protocols, read),
            "GetNetworkDefaultGateway": (self.get_network_default_gateway, read),
            "GetZeroConfiguration": (self.get_zero_configuration, read),
            "GetRelayOutputs": (self.get_relay_outputs, AccessClass.READ_MEDIA),
            "GetUsers": (self.get_users, AccessClass.READ_SYSTEM_SECRET),
            "CreateUsers": (self.create_users, write),
            "DeleteUsers": (self.delete_users, write),
            "SetUser": (self.set_user, write),
            "SystemReboot": (self.system_reboot, AccessClass.UNRECOVERABLE),
        }
        operations = {name: Operation(handler, access) for name, (handler, access) in table.items()}
        # The answer shows whole seconds of the clock in a fixed zone: one serialization per second.
        operations["GetSystemDateAndTime"] = Operation(
            self.get_system_date_and_time, pre, reply_key=lambda ctx: int(self._clock.seconds())
        )
        return operations

    def _cached(self, key: tuple[Any, ...], build: Callable[[], _Element]) -> _Element:
        """A fresh copy of a response fragment that only depends on ``key``.

        The SOAP layer moves the returned element into its envelope, so the cache keeps
        its own copy. Keys include the request host; a flood of forged Host headers only
        ever costs the cache being cleared.
        """
        element = self._cache.get(key)
        if element is None:
            if len(self._cache) >= 64:
                self._cache.clear()
            element = self._cache[key] = build()
        return copy.deepcopy(element)

    def _all_services(self) -> list[Service]:
        own = self.service()
        return [own, *(s for s in self._services() if s.namespace != ns.TDS and s.listed())]

    def _make_fixed_scopes(self) -> list[str]:
        device = self._config.onvif.device
        return [
            SCOPE_PREFIX + "type/video_encoder",
            SCOPE_PREFIX + "Profile/Streaming",
            SCOPE_PREFIX + "Profile/S",
            SCOPE_PREFIX + "name/" + quote(self._name, safe=""),
            SCOPE_PREFIX + "hardware/" + quote(device.model, safe=""),
            SCOPE_PREFIX + "mac/" + self._identity.hw_address,
            SCOPE_PREFIX + "location/" + DEFAULT_LOCATION,
        ]

    async def _save(self, scopes: list[str], discoverable: bool, use: Callable[[], None]) -> None:
        """Write first, then ``use()`` the change: a failed write changes nothing."""
        document = {"scopes": scopes, "discovery_mode": "Discoverable" if discoverable else "NonDiscoverable"}
        try:
            await self._store.commit(self._state_name, document, use)
        except StateError as exc:
            self.log.error("cannot save the device settings: {error}", error=str(exc))
            raise receiver_fault("Action", reason="the setting could not be saved on the relay") from exc

    def _notify(self, callbacks: Sequence[Callable[[Any], None]], value: object, what: str) -> None:
        for callback in callbacks:
            try:
                callback(value)
            except Exception:  # noqa: BLE001 - one broken listener must not fail the SOAP call
                self.log.failure("a {what} listener failed", what=what)

    # --- device information, time, capabilities ---------------------------------------------

    def get_device_information(self, ctx: RequestContext) -> _Element:
        """GetDeviceInformation: manufacturer and model from the config, relay version, identity."""
        device = self._config.onvif.device
        return self._cached(
            ("information",),
            lambda: TDS.GetDeviceInformationResponse(
                TDS.Manufacturer(device.manufacturer),
                TDS.Model(device.model),
                TDS.FirmwareVersion(self._version),
                TDS.SerialNumber(self._identity.serial_number),
                TDS.HardwareId(self._identity.hardware_id),
            ),
        )

    def get_system_date_and_time(self, ctx: RequestContext) -> _Element:
        """GetSystemDateAndTime: the host clock as NTP-synchronised UTC and local time."""
        now = self._clock.seconds()
        return TDS.GetSystemDateAndTimeResponse(
            TDS.SystemDateAndTime(
                TT.DateTimeType("NTP"),
                TT.DaylightSavings(xs_bool(self._zone.daylight_savings)),
                TT.TimeZone(TT.TZ(self._zone.posix)),
                TT.UTCDateTime(*_date_time(time.gmtime(now))),
                TT.LocalDateTime(*_date_time(self._zone.localtime(now))),
            )
        )

    def set_system_date_and_time(self, ctx: RequestContext) -> _Element:
        """SetSystemDateAndTime: valid requests are refused unless they ask for what already is (NTP, host zone)."""
        body = ctx.body
        date_time_type = _required_text(body, ns.TDS, "DateTimeType")
        if date_time_type not in ("Manual", "NTP"):
            raise sender_fault("InvalidArgs", reason=f"DateTimeType {date_time_type!r} is not Manual or NTP")
        _parse_bool(_required_text(body, ns.TDS, "DaylightSavings"), "DaylightSavings")
        zone = body.find(f"{ns.q(ns.TDS, 'TimeZone')}/{ns.q(ns.TT, 'TZ')}")
        tz = (zone.text or "").strip() if zone is not None else None
        if tz is not None and not POSIX_TZ.match(tz):
            raise sender_fault("InvalidArgVal", "InvalidTimeZone", reason=f"{tz!r} is not a POSIX TZ string")
        if date_time_type == "Manual":
            _check_date_time(body.find(ns.q(ns.TDS, "UTCDateTime")))
            raise sender_fault(
                "OperationProhibited",
                reason="the relay follows the host clock (NTP); set the time on the host instead",
            )
        if tz is not None and tz != self._zone.posix:
            raise sender_fault(
                "OperationProhibited",
                reason=f"the relay uses the host time zone {self._zone.posix}; change it on the host instead",
            )
        return TDS.SetSystemDateAndTimeResponse()

    def get_capabilities(self, ctx: RequestContext) -> _Element:
        """GetCapabilities: the legacy per-category capabilities with this host's XAddrs."""
        requested = [(el.text or "").strip() for el in ctx.body.findall(ns.q(ns.TDS, "Category"))]
        known = {name for name, _ in _CATEGORIES} | {"All"}
        for category in requested:
            if category not in known:
                raise sender_fault("InvalidArgVal", reason=f"{category!r} is not a capability category")
        served = {s.namespace: s for s in self._all_services()}
        everything = not requested or "All" in requested
        wanted: list[tuple[str, Service]] = []
        for name, namespace in _CATEGORIES:
            service = served.get(namespace) if namespace else None
            if service is not None and (everything or name in requested):
                wanted.append((name, service))
            elif not everything and name in requested:
                raise receiver_fault("ActionNotSupported", "NoSuchService", reason=f"the relay has no {name} service")
        signature = tuple((s.namespace, s.path) for s in served.values())
        return self._cached(
            ("GetCapabilities", ctx.host, tuple(name for name, _ in wanted), signature),
            lambda: TDS.GetCapabilitiesResponse(
                TDS.Capabilities(*(self._legacy_capability(name, service, ctx) for name, service in wanted))
            ),
        )

    def _legacy_capability(self, category: str, service: Service, ctx: RequestContext) -> _Element:
        """One child of ``tt:Capabilities``; Events and Media flags come from the service's own capabilities."""
        xaddr = TT.XAddr(_xaddr(ctx, service))
        if category == "Device":
            return TT.Device(
                xaddr,
                TT.Network(
                    TT.IPFilter("false"), TT.ZeroConfiguration("false"), TT.IPVersion6("false"), TT.DynDNS("false")
                ),
                TT.System(
                    TT.DiscoveryResolve(xs_bool(self._config.discovery.enabled)),
                    TT.DiscoveryBye(xs_bool(self._config.discovery.enabled)),
                    TT.RemoteDiscovery("false"),
                    TT.SystemBackup("false"),
                    TT.SystemLogging("false"),
                    TT.FirmwareUpgrade("false"),
                    TT.SupportedVersions(TT.Major(str(VERSION[0])), TT.Minor(str(VERSION[1]))),
                ),
                TT.IO(TT.InputConnectors("0"), TT.RelayOutputs("0")),
                TT.Security(*(TT(tag, "false") for tag in _LEGACY_SECURITY)),
            )
        if category == "Events":
            events = _service_capabilities(service, ctx)
            return TT.Events(
                xaddr,
                TT.WSSubscriptionPolicySupport(xs_bool(_flag(events, "WSSubscriptionPolicySupport", False))),
                TT.WSPullPointSupport("true"),
                TT.WSPausableSubscriptionManagerInterfaceSupport(
                    xs_bool(_flag(events, "WSPausableSubscriptionManagerInterfaceSupport", False))
                ),
            )
        if category == "Media":
            media = _service_capabilities(service, ctx)
            streaming = media.find(ns.q(ns.TRT, "StreamingCapabilities")) if media is not None else None
            profiles = media.find(ns.q(ns.TRT, "ProfileCapabilities")) if media is not None else None
            maximum = profiles.get("MaximumNumberOfProfiles") if profiles is not None else None
            return TT.Media(
                xaddr,
                TT.StreamingCapabilities(
                    TT.RTPMulticast(xs_bool(_flag(streaming, "RTPMulticast", False))),
                    TT.RTP_TCP(xs_bool(_flag(streaming, "RTP_TCP", False))),
                    TT.RTP_RTSP_TCP(xs_bool(_flag(streaming, "RTP_RTSP_TCP", True))),
                ),
                TT.Extension(
                    TT.ProfileCapabilities(
                        TT.MaximumNumberOfProfiles(maximum or str(self._config.onvif.max_profiles))
                    )
                ),
            )
        return TT(category, xaddr)

    def get_services(self, ctx: RequestContext) -> _Element:
        """GetServices: namespace, XAddr, version and (on request) capabilities of every service."""
        flag = ctx.body.find(ns.q(ns.TDS, "IncludeCapability"))
        include = _parse_bool((flag.text or "").strip(), "IncludeCapability") if flag is not None else False
        services = self._all_services()
        signature = tuple((s.namespace, s.path, s.version) for s in services)

        def build() -> _Element:
            entries = []
            for service in services:
                parts = [TDS.Namespace(service.namespace), TDS.XAddr(_xaddr(ctx, service))]
                if include and service.capabilities is not None:
                    parts.append(TDS.Capabilities(service.capabilities(ctx)))
                parts.append(TDS.Version(TT.Major(str(service.version[0])), TT.Minor(str(service.version[1]))))
                entries.append(TDS.Service(*parts))
            return TDS.GetServicesResponse(*entries)

        return self._cached(("GetServices", ctx.host, include, signature), build)

    def get_service_capabilities(self, ctx: RequestContext) -> _Element:
        """GetServiceCapabilities: the device service's own capabilities."""
        return TDS.GetServiceCapabilitiesResponse(self._cached(("capabilities",), self._device_capabilities))

    def _device_capabilities(self) -> _Element:
        discovery = self._config.discovery.enabled
        return TDS.Capabilities(
            TDS.Network(
                {
                    "IPFilter": "false",
                    "ZeroConfiguration": "false",
                    "IPVersion6": "false",
                    "DynDNS": "false",
                    "Dot11Configuration": "false",
                    "HostnameFromDHCP": "false",
                    "NTP": "0",
                    "DHCPv6": "false",
                }
            ),
            TDS.Security(
                {
                    "TLS1.0": "false",
                    "TLS1.1": "false",
                    "TLS1.2": "false",
                    "OnboardKeyGeneration": "false",
                    "AccessPolicyConfig": "false",
                    "DefaultAccessPolicy": "true",
                    "Dot1X": "false",
                    "RemoteUserHandling": "false",
                    "X.509Token": "false",
                    "SAMLToken": "false",
                    "KerberosToken": "false",
                    "UsernameToken": "true",
                    "HttpDigest": "true",
                    "RELToken": "false",
                    "MaxUsers": str(MAX_USERS),
                    "MaxUserNameLength": str(MAX_USERNAME_LENGTH),
                    "MaxPasswordLength": str(MAX_PASSWORD_LENGTH),
                }
            ),
            TDS.System(
                {
                    "DiscoveryResolve": xs_bool(discovery),
                    "DiscoveryBye": xs_bool(discovery),
                    "RemoteDiscovery": "false",
                    "SystemBackup": "false",
                    "SystemLogging": "false",
                    "HttpFirmwareUpgrade": "false",
                    "HttpSystemBackup": "false",
                    "HttpSystemLogging": "false",
                    "HttpSupportInformation": "false",
                    "StorageConfiguration": "false",
                    "DiscoveryNotSupported": xs_bool(not discovery),
                    "NetworkConfigNotSupported": "true",
                    "UserConfigNotSupported": "false",
                }
            ),
        )

    def get_wsdl_url(self, ctx: RequestContext) -> _Element:
        """GetWsdlUrl (deprecated): the relay has no product specific WSDL, so the ONVIF one."""
        return TDS.GetWsdlUrlResponse(TDS.WsdlUrl(WSDL_URL))

    def get_endpoint_reference(self, ctx: RequestContext) -> _Element:
        """GetEndpointReference: the WS-Discovery endpoint reference address (``urn:uuid:...``)."""
        return TDS.GetEndpointReferenceResponse(TDS.GUID(self._identity.endpoint_reference))

    def system_reboot(self, ctx: RequestContext) -> _Element:
        """SystemReboot: restart the relay's services (the composition root defers it past this reply)."""
        self.log.info("SystemReboot requested by {user}", user=ctx.caller.username or "anonymous")
        self._reboot()
        return TDS.SystemRebootResponse(TDS.Message("Restarting the relay services; the host is not rebooted."))

    # --- scopes and discovery mode -----------------------------------------------------------

    def get_scopes(self, ctx: RequestContext) -> _Element:
        """GetScopes: fixed scopes first, then the configurable ones."""
        return TDS.GetScopesResponse(
            *(TDS.Scopes(TT.ScopeDef("Fixed"), TT.ScopeItem(s)) for s in self._fixed_scopes),
            *(TDS.Scopes(TT.ScopeDef("Configurable"), TT.ScopeItem(s)) for s in self._scopes),
        )

    async def set_scopes(self, ctx: RequestContext) -> _Element:
        """SetScopes: replace the configurable scopes (fixed ones in the request are ignored)."""
        async with self._lock:
            await self._replace_scopes(_dedupe(s for s in _uris(ctx.body, "Scopes") if s not in self._fixed_scopes))
        return TDS.SetScopesResponse()

    async def add_scopes(self, ctx: RequestContext) -> _Element:
        """AddScopes: add configurable scopes that are not there yet."""
        async with self._lock:
            present = set(self.scopes())
            added = _dedupe(s for s in _uris(ctx.body, "ScopeItem") if s not in present)
            await self._replace_scopes([*self._scopes, *added])
        return TDS.AddScopesResponse()

    async def remove_scopes(self, ctx: RequestContext) -> _Element:
        """RemoveScopes: remove configurable scopes; a fixed or unknown one fails the whole call."""
        items = _uris(ctx.body, "ScopeItem")
        async with self._lock:
            for item in items:
                if item in self._fixed_scopes:
                    raise sender_fault("OperationProhibited", "FixedScope", reason=f"{item} is a fixed scope")
                if item not in self._scopes:
                    raise sender_fault("InvalidArgVal", "NoScope", reason=f"{item} is not a scope of the device")
            await self._replace_scopes([s for s in self._scopes if s not in items])
        return TDS.RemoveScopesResponse(*(TDS.ScopeItem(item) for item in items))

    async def _replace_scopes(self, scopes: list[str]) -> None:
        if len(scopes) > MAX_SCOPES:
            raise receiver_fault("Action", "TooManyScopes", reason=f"at most {MAX_SCOPES} configurable scopes")
        if scopes == self._scopes:
            return

        def use() -> None:
            self._scopes = scopes
            self.log.info("scopes changed: {scopes}", scopes=" ".join(self._scopes))
            self._notify(self.on_scopes_changed, self.scopes(), "scopes")

        await self._save(scopes, self._discoverable, use)

    def get_discovery_mode(self, ctx: RequestContext) -> _Element:
        """GetDiscoveryMode: Discoverable unless switched off over ONVIF or in the config."""
        return TDS.GetDiscoveryModeResponse(TDS.DiscoveryMode("Discoverable" if self.discoverable else "NonDiscoverable"))

    async def set_discovery_mode(self, ctx: RequestContext) -> _Element:
        """SetDiscoveryMode: save the mode and tell WS-Discovery."""
        mode = _required_text(ctx.body, ns.TDS, "DiscoveryMode")
        if mode not in ("Discoverable", "NonDiscoverable"):
            raise sender_fault("InvalidArgs", reason=f"DiscoveryMode {mode!r} is not Discoverable or NonDiscoverable")
        discoverable = mode == "Discoverable"
        async with self._lock:
            if discoverable != self._discoverable:

                def use() -> None:
                    self._discoverable = discoverable
                    self.log.info("discovery mode set to {mode}", mode=mode)
                    self._notify(self.on_discovery_mode_changed, self.discoverable, "discovery mode")

                await self._save(self._scopes, discoverable, use)
        return TDS.SetDiscoveryModeResponse()

    # --- network -----------------------------------------------------------------------------

    def get_hostname(self, ctx: RequestContext) -> _Element:
        """GetHostname: the device name made hostname-safe; never from DHCP."""
        return TDS.GetHostnameResponse(TDS.HostnameInformation(TT.FromDHCP("false"), TT.Name(_hostname(self._name))))

    def get_network_interfaces(self, ctx: RequestContext) -> _Element:
        """GetNetworkInterfaces: one enabled ``eth0`` with the relay's hardware address.

        Its address is the one the client reached us at when that is an IP literal
        (the prefix length is a plausible guess: the relay does not manage the network).
        """
        address = _ip_literal(ctx.host)
        parts = [
            TT.Enabled("true"),
            TT.Info(TT.Name(INTERFACE_TOKEN), TT.HwAddress(self._identity.hw_address), TT.MTU(str(MTU))),
        ]
        if isinstance(address, ipaddress.IPv4Address):
            parts.append(
                TT.IPv4(
                    TT.Enabled("true"),
                    TT.Config(TT.Manual(TT.Address(str(address)), TT.PrefixLength("24")), TT.DHCP("false")),
                )
            )
        elif isinstance(address, ipaddress.IPv6Address):
            parts.append(
                TT.IPv6(
                    TT.Enabled("true"),
                    TT.Config(TT.DHCP("Off"), TT.Manual(TT.Address(str(address)), TT.PrefixLength("64"))),
                )
            )
        return TDS.GetNetworkInterfacesResponse(TDS.NetworkInterfaces({"token": INTERFACE_TOKEN}, *parts))

    def get_dns(self, ctx: RequestContext) -> _Element:
        """GetDNS: the host resolves names; the relay configures no DNS servers."""
        return TDS.GetDNSResponse(TDS.DNSInformation(TT.FromDHCP("false")))

    def get_ntp(self, ctx: RequestContext) -> _Element:
        """GetNTP: the host keeps time; its NTP servers are not the relay's to report."""
        return TDS.GetNTPResponse(TDS.NTPInformation(TT.FromDHCP("true")))

    def get_network_protocols(self, ctx: RequestContext) -> _Element:
        """GetNetworkProtocols: HTTP (this SOAP port), RTSP (mediamtx), no HTTPS."""
        return TDS.GetNetworkProtocolsResponse(
            TDS.NetworkProtocols(TT.Name("HTTP"), TT.Enabled("true"), TT.Port(str(self._http_port))),
            TDS.NetworkProtocols(TT.Name("HTTPS"), TT.Enabled("false"), TT.Port("443")),
            TDS.NetworkProtocols(TT.Name("RTSP"), TT.Enabled("true"), TT.Port(str(self._config.mediamtx.rtsp_port))),
        )

    def get_network_default_gateway(self, ctx: RequestContext) -> _Element:
        """GetNetworkDefaultGateway: none reported (the host's routing is not the relay's)."""
        return TDS.GetNetworkDefaultGatewayResponse(TDS.NetworkGateway())

    def get_zero_configuration(self, ctx: RequestContext) -> _Element:
        """GetZeroConfiguration: no link-local zeroconf address on ``eth0``."""
        return TDS.GetZeroConfigurationResponse(
            TDS.ZeroConfiguration(TT.InterfaceToken(INTERFACE_TOKEN), TT.Enabled("false"))
        )

    def get_relay_outputs(self, ctx: RequestContext) -> _Element:
        """GetRelayOutputs: an ATOM Cam has no relay outputs."""
        return TDS.GetRelayOutputsResponse()

    # --- users -------------------------------------------------------------------------------

    def get_users(self, ctx: RequestContext) -> _Element:
        """GetUsers: names and levels, never passwords."""
        return TDS.GetUsersResponse(
            *(TDS.User(TT.Username(u.username), TT.UserLevel(u.role)) for u in self._users.list())
        )

    async def create_users(self, ctx: RequestContext) -> _Element:
        """CreateUsers: all or nothing, saved in state_dir."""
        await self._users.create(_users(ctx.body))
        return TDS.CreateUsersResponse()

    async def delete_users(self, ctx: RequestContext) -> _Element:
        """DeleteUsers: all or nothing; config users are fixed."""
        names = [(el.text or "") for el in ctx.body.findall(ns.q(ns.TDS, "Username"))]
        if not names:
            raise sender_fault("InvalidArgs", reason="DeleteUsers needs at least one Username")
        await self._users.delete(names)
        return TDS.DeleteUsersResponse()

    async def set_user(self, ctx: RequestContext) -> _Element:
        """SetUser: change passwords and levels, all or nothing; config users are fixed."""
        await self._users.set(_users(ctx.body))
        return TDS.SetUserResponse()


_LEGACY_SECURITY = (
    "TLS1.1",
    "TLS1.2",
    "OnboardKeyGeneration",
    "AccessPolicyConfig",
    "X.509Token",
    "SAMLToken",
    "KerberosToken",
    "RELToken",
)


def _parse_bool(text: str, what: str) -> bool:
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise sender_fault("InvalidArgs", reason=f"{what} {text!r} is not a boolean")


def _required_text(parent: _Element, namespace: str, name: str) -> str:
    element = parent.find(ns.q(namespace, name))
    if element is None:
        raise sender_fault("InvalidArgs", reason=f"{etree.QName(parent).localname} needs {name}")
    return (element.text or "").strip()


def _uris(body: _Element, name: str) -> list[str]:
    items = [(el.text or "").strip() for el in body.findall(ns.q(ns.TDS, name))]
    if not items or not all(items):
        raise sender_fault("InvalidArgs", reason=f"{etree.QName(body).localname} needs non-empty {name} URIs")
    return items


def _dedupe(items: Any) -> list[str]:
    return list(dict.fromkeys(items))


def _users(body: _Element) -> list[User]:
    """The ``tds:User`` entries of CreateUsers/SetUser as config-style User values."""
    users = []
    for element in body.findall(ns.q(ns.TDS, "User")):
        username = _required_text(element, ns.TT, "Username")
        password = element.find(ns.q(ns.TT, "Password"))
        level = _required_text(element, ns.TT, "UserLevel")
        users.append(User(username, (password.text or "") if password is not None else "", level))
    if not users:
        raise sender_fault("InvalidArgs", reason=f"{etree.QName(body).localname} needs at least one User")
    return users


def _date_time(moment: time.struct_time) -> tuple[_Element, _Element]:
    """The children of a ``tt:DateTime``: Time, then Date (that is the schema's order)."""
    return (
        TT.Time(TT.Hour(str(moment.tm_hour)), TT.Minute(str(moment.tm_min)), TT.Second(str(moment.tm_sec))),
        TT.Date(TT.Year(str(moment.tm_year)), TT.Month(str(moment.tm_mon)), TT.Day(str(moment.tm_mday))),
    )


def _check_date_time(element: _Element | None) -> None:
    """Raise ``ter:InvalidDateTime`` unless ``element`` is a complete, possible ``tt:DateTime``."""
    fields = (("Date", "Year"), ("Date", "Month"), ("Date", "Day"), ("Time", "Hour"), ("Time", "Minute"), ("Time", "Second"))
    try:
        if element is None:
            raise ValueError("UTCDateTime is missing")
        values = []
        for group, name in fields:
            text = element.findtext(f"{ns.q(ns.TT, group)}/{ns.q(ns.TT, name)}")
            if text is None:
                raise ValueError(f"{group}/{name} is missing")
            values.append(int(text.strip()))
        year, month, day, hour, minute, second = values
        datetime.datetime(year, month, day, hour, minute, second)
    except (ValueError, OverflowError) as exc:  # OverflowError: a field with more digits than a C long holds
        raise sender_fault("InvalidArgVal", "InvalidDateTime", reason=f"invalid UTCDateTime: {exc}") from None


def _xaddr(ctx: RequestContext, service: Service) -> str:
    return f"http://{ctx.host}{service.path}"


def _service_capabilities(service: Service, ctx: RequestContext) -> _Element | None:
    return service.capabilities(ctx) if service.capabilities is not None else None


def _flag(element: _Element | None, attribute: str, default: bool) -> bool:
    value = element.get(attribute) if element is not None else None
    return default if value is None else value in ("true", "1")


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address in a Host header value (``1.2.3.4:80``, ``[::1]:80``), or None for a name."""
    try:
        hostname = urlsplit("//" + host).hostname
    except ValueError:
        return None
    try:
        return ipaddress.ip_address(hostname) if hostname else None
    except ValueError:
        return None


def _hostname(name: str) -> str:
    """A DNS label from the device name (``ATOM Cam 2`` -> ``ATOM-Cam-2``)."""
    label = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")[:63].strip("-")
    return label or "atomrelay"
