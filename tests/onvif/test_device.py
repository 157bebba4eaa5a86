"""The Device service: every handler, its schema validity, its access class and its persistence."""

from __future__ import annotations

import inspect
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from lxml import etree
from lxml.builder import ElementMaker
from lxml.etree import _Element
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from atomrelay.auth.policy import AccessClass, Caller
from atomrelay.auth.users import UserStore
from atomrelay.config import Config, User, parse_config
from atomrelay.identity import Identity
from atomrelay.onvif.base import RequestContext, Service
from atomrelay.onvif.device import PATH, DeviceService, TimeZone, host_time_zone
from atomrelay.state import StateStore
from atomrelay.xml import ns
from atomrelay.xml.soap import SoapFault
from tests.helpers import settled
from tests.onvif import schema

CORE = schema.REFERENCE / "spec" / "Core.xml"
NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
HOST = "192.0.2.7:8080"
IDENTITY = Identity(uuid.UUID("12345678-1234-5678-1234-567812345678"))
JST = TimeZone("JST-9", lambda seconds: time.gmtime(seconds + 9 * 3600))
ADMIN = Caller("admin", "Administrator")

TDS = ElementMaker(namespace=ns.TDS, nsmap={"tds": ns.TDS, "tt": ns.TT})
TT = ElementMaker(namespace=ns.TT, nsmap={"tt": ns.TT})
TRT = ElementMaker(namespace=ns.TRT, nsmap={"trt": ns.TRT})

CONFIG = """\
onvif:
  port: 8080
  device: {{manufacturer: Acme, model: ATOM Cam relay, name: "Garden cams"}}
  max_profiles: 8
  users:
    - {{username: admin, password: secret, role: Administrator}}
discovery: {{enabled: {discovery}}}
mediamtx: {{rtsp_port: 8554}}
state_dir: {state_dir}
cameras:
  - id: porch
    name: Porch Cam
    host: 192.0.2.50
    onvif_port: 8101
    streams: [{{name: main, rtsp_path: video0_unicast}}]
"""


def make_config(tmp_path: Path, discovery: bool = True) -> Config:
    return parse_config(CONFIG.format(state_dir=tmp_path, discovery="true" if discovery else "false"))


class Harness:
    """A DeviceService on a Clock with recorded reboots and configurable sibling services."""

    def __init__(self, tmp_path: Path, discovery: bool = True, device_id: str = "", zone: TimeZone = JST) -> None:
        self.config = make_config(tmp_path, discovery)
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = StateStore(tmp_path)
        self.users = UserStore(self.config.onvif.users, self.store)
        self.reboots: list[float] = []
        self.others: list[Service] = []
        self.device = DeviceService(
            clock=self.clock,
            config=self.config,
            identity=IDENTITY,
            users=self.users,
            store=self.store,
            services=lambda: [self.device.service(), *self.others],
            reboot=lambda: self.reboots.append(self.clock.seconds()),
            version="1.2.3",
            device_id=device_id,
            zone=zone,
        )

    def call(self, name: str, *children: Any, host: str = HOST, caller: Caller = ADMIN) -> _Element:
        """Run the handler of ``name`` on a request body built from ``children``; validate the reply."""
        body = TDS(name, *children)
        context = RequestContext(body=body, caller=caller, host=host, service_path=PATH)
        result = self.device.service().operations[name].handler(context)
        if inspect.isawaitable(result):
            result = settled(result)
        assert isinstance(result, etree._Element)
        assert result.tag == ns.q(ns.TDS, name + "Response")
        schema.validate(result)
        return result

    def fault(self, name: str, *children: Any, host: str = HOST) -> SoapFault:
        """The SoapFault the handler of ``name`` raises for this request."""
        with pytest.raises(SoapFault) as info:
            self.call(name, *children, host=host)
        return info.value


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def text(element: _Element, path: str) -> str:
    """Text at a ``tds:``/``tt:`` prefixed path below ``element`` (must exist)."""
    found = element.find(path, {"tds": ns.TDS, "tt": ns.TT, "trt": ns.TRT})
    assert found is not None, path
    return found.text or ""


def texts(element: _Element, path: str) -> list[str]:
    return [e.text or "" for e in element.findall(path, {"tds": ns.TDS, "tt": ns.TT})]


def media_service() -> Service:
    """A stand-in Media service whose own capabilities say RTSP/TCP only and 4 profiles."""
    return Service(
        namespace=ns.TRT,
        path="/onvif/media_service",
        version=(21, 6),
        capabilities=lambda ctx: TRT.Capabilities(
            TRT.ProfileCapabilities(MaximumNumberOfProfiles="4"),
            TRT.StreamingCapabilities(RTPMulticast="false", RTP_TCP="false", RTP_RTSP_TCP="true"),
            SnapshotUri="true",
        ),
    )


def plain_service(namespace: str, path: str) -> Service:
    return Service(namespace=namespace, path=path, version=(2, 0))


# --- the schema helper itself ---------------------------------------------------------------


def test_schema_rejects_wrong_element_order() -> None:
    """validate() fails when two elements of an XSD sequence are swapped."""
    swapped = TDS.GetHostnameResponse(TDS.HostnameInformation(TT.Name("cam"), TT.FromDHCP("false")))
    with pytest.raises(AssertionError, match="FromDHCP"):
        schema.validate(swapped)


def test_schema_rejects_missing_required_element() -> None:
    """validate() fails when a required element (HardwareId) is missing."""
    incomplete = TDS.GetDeviceInformationResponse(
        TDS.Manufacturer("a"), TDS.Model("b"), TDS.FirmwareVersion("c"), TDS.SerialNumber("d")
    )
    with pytest.raises(AssertionError, match="HardwareId"):
        schema.validate(incomplete)


def test_schema_rejects_unknown_namespaces_and_bad_values() -> None:
    """validate() fails for an element no loaded schema covers and for a value outside its enumeration."""
    with pytest.raises(AssertionError, match="no schema"):
        schema.validate(etree.Element("{urn:example}Thing"))
    with pytest.raises(AssertionError, match="Sometimes"):
        schema.validate(TDS.GetDiscoveryModeResponse(TDS.DiscoveryMode("Sometimes")))


def test_schema_checks_capabilities_embedded_in_get_services() -> None:
    """A service's capabilities inside GetServices are validated against that service's own schema."""
    def reply(capabilities: _Element) -> _Element:
        return TDS.GetServicesResponse(TDS.Service(
            TDS.Namespace(ns.TRT), TDS.XAddr("http://h/onvif/media_service"), TDS.Capabilities(capabilities),
            TDS.Version(TT.Major("2"), TT.Minor("0")),
        ))

    schema.validate(reply(TRT.Capabilities(TRT.ProfileCapabilities(), TRT.StreamingCapabilities())))
    with pytest.raises(AssertionError, match="StreamingCapabilities"):
        schema.validate(reply(TRT.Capabilities(TRT.StreamingCapabilities(), TRT.ProfileCapabilities())))


def test_schema_covers_the_other_services_and_the_external_standards() -> None:
    """Media, Media2, PTZ, Imaging, Events, WS-BaseNotification and SOAP fault elements validate."""
    wsnt = ElementMaker(namespace=ns.WSNT, nsmap={"wsnt": ns.WSNT})
    wsa = ElementMaker(namespace=ns.WSA, nsmap={"wsa": ns.WSA})
    tev = ElementMaker(namespace=ns.TEV, nsmap={"tev": ns.TEV})
    env = ElementMaker(namespace=ns.SOAP12, nsmap={"env": ns.SOAP12, "ter": ns.TER})
    samples = [
        TRT.GetStreamUriResponse(
            TRT.MediaUri(TT.Uri("rtsp://h/p"), TT.InvalidAfterConnect("false"), TT.InvalidAfterReboot("false"),
                         TT.Timeout("PT0S"))
        ),
        etree.Element(ns.q(ns.TR2, "SetSynchronizationPointResponse")),
        etree.Element(ns.q(ns.TPTZ, "StopResponse")),
        etree.Element(ns.q(ns.TIMG, "StopResponse")),
        tev.CreatePullPointSubscriptionResponse(
            tev.SubscriptionReference(wsa.Address("http://h/onvif/events/1")),
            wsnt.CurrentTime("2023-11-14T22:13:20Z"),
            wsnt.TerminationTime("2023-11-14T22:23:20Z"),
        ),
        wsnt.RenewResponse(wsnt.TerminationTime("2023-11-14T22:23:20Z"), wsnt.CurrentTime("2023-11-14T22:13:20Z")),
        env.Envelope(env.Body(env.Fault(
            env.Code(env.Value("env:Sender"), env.Subcode(env.Value("ter:NotAuthorized"))),
            env.Reason(env.Text("Sender not Authorized", {"{http://www.w3.org/XML/1998/namespace}lang": "en"})),
        ))),
    ]
    for sample in samples:
        schema.validate(sample)
    with pytest.raises(AssertionError):
        schema.validate(wsnt.RenewResponse(wsnt.CurrentTime("2023-11-14T22:13:20Z")))


# --- access classes ---------------------------------------------------------------------------


def core_access_classes() -> dict[str, str]:
    """Operation name (lower case, no spaces) -> the role="access" text of its Core.xml section."""
    docbook = "{http://docbook.org/ns/docbook}"
    classes: dict[str, str] = {}
    for section in etree.parse(str(CORE)).iter(docbook + "section"):
        title = section.find(docbook + "title")
        access = next((p for p in section.iter(docbook + "para") if p.get("role") == "access"), None)
        if title is None or access is None:
            continue
        key = "".join("".join(title.itertext()).split()).lower()
        classes.setdefault(key, (access.text or "").strip())
    return classes


def test_every_operation_has_the_core_access_class(harness: Harness) -> None:
    """Each operation's access class is the one its section in Core.xml gives."""
    classes = core_access_classes()
    operations = harness.device.service().operations
    assert len(operations) >= 25
    for name, operation in operations.items():
        assert operation.access.value == classes[name.lower()], name


def test_pre_auth_operations_are_exactly_the_bootstrap_ones(harness: Harness) -> None:
    """Only the operations a client needs before it has credentials are PRE_AUTH."""
    pre_auth = {n for n, op in harness.device.service().operations.items() if op.access is AccessClass.PRE_AUTH}
    assert pre_auth == {
        "GetSystemDateAndTime", "GetCapabilities", "GetServices", "GetServiceCapabilities",
        "GetWsdlUrl", "GetHostname", "GetEndpointReference",
    }
    assert harness.device.service().operations["GetUsers"].access is AccessClass.READ_SYSTEM_SECRET
    assert harness.device.service().operations["SystemReboot"].access is AccessClass.UNRECOVERABLE


# --- information and time -------------------------------------------------------------------


def test_device_information(harness: Harness) -> None:
    """GetDeviceInformation reports the config's maker/model, the relay version and the identity."""
    reply = harness.call("GetDeviceInformation")
    assert [child.text for child in reply] == [
        "Acme", "ATOM Cam relay", "1.2.3", IDENTITY.serial_number, IDENTITY.hardware_id,
    ]


def test_cached_replies_are_fresh_copies(harness: Harness) -> None:
    """A cached reply moved into one envelope (or changed) does not affect the next reply."""
    first = harness.call("GetDeviceInformation")
    etree.SubElement(etree.Element("envelope"), "x").append(first)
    first[0].text = "changed"
    second = harness.call("GetDeviceInformation")
    assert second.getparent() is None
    assert second[0].text == "Acme"


def test_system_date_and_time_follows_the_clock(harness: Harness) -> None:
    """GetSystemDateAndTime gives the injected clock's UTC time, local time in the zone, NTP type."""
    reply = harness.call("GetSystemDateAndTime")
    assert text(reply, "tds:SystemDateAndTime/tt:DateTimeType") == "NTP"
    assert text(reply, "tds:SystemDateAndTime/tt:DaylightSavings") == "false"
    assert text(reply, "tds:SystemDateAndTime/tt:TimeZone/tt:TZ") == "JST-9"
    utc = reply.find("tds:SystemDateAndTime/tt:UTCDateTime", {"tds": ns.TDS, "tt": ns.TT})
    assert utc is not None
    assert texts(utc, "tt:Date/*") == ["2023", "11", "14"]
    assert texts(utc, "tt:Time/*") == ["22", "13", "20"]
    assert texts(reply, "tds:SystemDateAndTime/tt:LocalDateTime/tt:Date/*") == ["2023", "11", "15"]
    assert texts(reply, "tds:SystemDateAndTime/tt:LocalDateTime/tt:Time/*") == ["7", "13", "20"]
    harness.clock.advance(61)
    assert texts(harness.call("GetSystemDateAndTime"), "tds:SystemDateAndTime/tt:UTCDateTime/tt:Time/*") == [
        "22", "14", "21",
    ]


def test_daylight_savings_reflects_the_zone_rules(tmp_path: Path) -> None:
    """A zone with DST rules reports DaylightSavings true."""
    harness = Harness(tmp_path, zone=TimeZone("CET-1CEST,M3.5.0,M10.5.0/3", time.gmtime))
    assert text(harness.call("GetSystemDateAndTime"), "tds:SystemDateAndTime/tt:DaylightSavings") == "true"


def utc_date_time(year: int, month: int, day: int) -> _Element:
    return TDS.UTCDateTime(
        TT.Time(TT.Hour("1"), TT.Minute("2"), TT.Second("3")),
        TT.Date(TT.Year(str(year)), TT.Month(str(month)), TT.Day(str(day))),
    )


def test_set_system_date_and_time_accepts_only_what_already_is(harness: Harness) -> None:
    """NTP with the host zone succeeds; a manual time or another zone is refused as OperationProhibited."""
    harness.call("SetSystemDateAndTime", TDS.DateTimeType("NTP"), TDS.DaylightSavings("false"))
    harness.call("SetSystemDateAndTime", TDS.DateTimeType("NTP"), TDS.DaylightSavings("false"),
                 TDS.TimeZone(TT.TZ("JST-9")))
    manual = harness.fault("SetSystemDateAndTime", TDS.DateTimeType("Manual"), TDS.DaylightSavings("false"),
                           utc_date_time(2024, 1, 2))
    assert (manual.code, manual.subcodes) == ("Sender", ("OperationProhibited",))
    other_zone = harness.fault("SetSystemDateAndTime", TDS.DateTimeType("NTP"), TDS.DaylightSavings("true"),
                               TDS.TimeZone(TT.TZ("EST5EDT,M3.2.0,M11.1.0")))
    assert other_zone.subcodes == ("OperationProhibited",)


def test_set_system_date_and_time_validates_its_arguments(harness: Harness) -> None:
    """Bad zones and impossible dates get the Core subcodes; a missing argument is InvalidArgs."""
    bad_zone = harness.fault("SetSystemDateAndTime", TDS.DateTimeType("NTP"), TDS.DaylightSavings("false"),
                             TDS.TimeZone(TT.TZ("Europe/Berlin")))
    assert bad_zone.subcodes == ("InvalidArgVal", "InvalidTimeZone")
    bad_date = harness.fault("SetSystemDateAndTime", TDS.DateTimeType("Manual"), TDS.DaylightSavings("false"),
                             utc_date_time(2023, 2, 30))
    assert bad_date.subcodes == ("InvalidArgVal", "InvalidDateTime")
    no_date = harness.fault("SetSystemDateAndTime", TDS.DateTimeType("Manual"), TDS.DaylightSavings("false"))
    assert no_date.subcodes == ("InvalidArgVal", "InvalidDateTime")
    assert harness.fault("SetSystemDateAndTime", TDS.DaylightSavings("false")).subcodes == ("InvalidArgs",)


def test_host_time_zone_sources(tmp_path: Path) -> None:
    """The host zone comes from a POSIX $TZ, else the TZif footer, else UTC0."""
    assert host_time_zone({"TZ": "JST-9"}).posix == "JST-9"
    tzif = tmp_path / "localtime"
    tzif.write_bytes(b"TZif2" + b"\x00" * 40 + b"\nCET-1CEST,M3.5.0,M10.5.0/3\n")
    zone = host_time_zone({}, tzif)
    assert zone.posix == "CET-1CEST,M3.5.0,M10.5.0/3" and zone.daylight_savings
    assert host_time_zone({}, tmp_path / "missing").posix == "UTC0"


# --- capabilities and services --------------------------------------------------------------


def test_get_capabilities_lists_served_services_with_request_host(harness: Harness) -> None:
    """GetCapabilities(All) has a Device, Media, PTZ and Events entry at this host, no Analytics."""
    harness.others = [
        media_service(),
        plain_service(ns.TPTZ, "/onvif/ptz_service"),
        plain_service(ns.TEV, "/onvif/events_service"),
    ]
    reply = harness.call("GetCapabilities", TDS.Category("All"))
    capabilities = reply[0]
    assert [etree.QName(c).localname for c in capabilities] == ["Device", "Events", "Media", "PTZ"]
    assert text(capabilities, "tt:Device/tt:XAddr") == f"http://{HOST}/onvif/device_service"
    assert text(capabilities, "tt:Media/tt:XAddr") == f"http://{HOST}/onvif/media_service"
    assert text(capabilities, "tt:PTZ/tt:XAddr") == f"http://{HOST}/onvif/ptz_service"
    assert text(capabilities, "tt:Events/tt:WSPullPointSupport") == "true"
    assert text(capabilities, "tt:Media/tt:StreamingCapabilities/tt:RTP_RTSP_TCP") == "true"
    assert text(capabilities, "tt:Media/tt:Extension/tt:ProfileCapabilities/tt:MaximumNumberOfProfiles") == "4"
    other_host = harness.call("GetCapabilities", host="[2001:db8::1]:8080")
    assert text(other_host[0], "tt:Device/tt:XAddr") == "http://[2001:db8::1]:8080/onvif/device_service"


def test_get_capabilities_for_one_category(harness: Harness) -> None:
    """Asking for Device gives only Device; a category the relay does not serve is NoSuchService."""
    reply = harness.call("GetCapabilities", TDS.Category("Device"))
    assert [etree.QName(c).localname for c in reply[0]] == ["Device"]
    for category in ("Media", "Analytics"):
        fault = harness.fault("GetCapabilities", TDS.Category(category))
        assert (fault.code, fault.subcodes) == ("Receiver", ("ActionNotSupported", "NoSuchService"))
    assert harness.fault("GetCapabilities", TDS.Category("Toaster")).subcodes == ("InvalidArgVal",)


def test_get_services_without_capabilities(harness: Harness) -> None:
    """GetServices(false) lists the exact namespace strings, XAddrs and versions, no capabilities."""
    harness.others = [media_service(), plain_service(ns.TR2, "/onvif/media2_service")]
    reply = harness.call("GetServices", TDS.IncludeCapability("false"))
    assert texts(reply, "tds:Service/tds:Namespace") == [ns.TDS, ns.TRT, ns.TR2]
    assert texts(reply, "tds:Service/tds:XAddr") == [
        f"http://{HOST}/onvif/device_service", f"http://{HOST}/onvif/media_service",
        f"http://{HOST}/onvif/media2_service",
    ]
    assert texts(reply, "tds:Service/tds:Version/tt:Major") == ["26", "21", "2"]
    assert reply.find("tds:Service/tds:Capabilities", {"tds": ns.TDS}) is None


def test_get_services_with_capabilities(harness: Harness) -> None:
    """GetServices(true) embeds each service's own capabilities element."""
    harness.others = [media_service(), plain_service(ns.TIMG, "/onvif/imaging_service")]
    reply = harness.call("GetServices", TDS.IncludeCapability("true"))
    holders = reply.findall("tds:Service/tds:Capabilities", {"tds": ns.TDS})
    assert [etree.QName(holder[0]).text for holder in holders] == [
        ns.q(ns.TDS, "Capabilities"), ns.q(ns.TRT, "Capabilities"),
    ]
    assert holders[1][0].get("SnapshotUri") == "true"


def test_device_service_capabilities(harness: Harness) -> None:
    """GetServiceCapabilities advertises UsernameToken, HTTP digest, user limits and no network config."""
    capabilities = harness.call("GetServiceCapabilities")[0]
    security = capabilities.find(ns.q(ns.TDS, "Security"))
    system = capabilities.find(ns.q(ns.TDS, "System"))
    assert security is not None and system is not None
    assert (security.get("UsernameToken"), security.get("HttpDigest"), security.get("MaxUsers")) == ("true", "true", "32")
    assert system.get("NetworkConfigNotSupported") == "true"
    assert system.get("DiscoveryNotSupported") == "false"


# --- scopes and discovery -------------------------------------------------------------------


def scope_items(reply: _Element, kind: str) -> list[str]:
    return [
        text(scope, "tt:ScopeItem") for scope in reply if text(scope, "tt:ScopeDef") == kind
    ]


def test_fixed_scopes(harness: Harness) -> None:
    """GetScopes lists the profile, name (URL-encoded), hardware, mac and location scopes as Fixed."""
    reply = harness.call("GetScopes")
    assert scope_items(reply, "Fixed") == [
        "onvif://www.onvif.org/type/video_encoder",
        "onvif://www.onvif.org/Profile/Streaming",
        "onvif://www.onvif.org/Profile/S",
        "onvif://www.onvif.org/name/Garden%20cams",
        "onvif://www.onvif.org/hardware/ATOM%20Cam%20relay",
        f"onvif://www.onvif.org/mac/{IDENTITY.hw_address}",
        "onvif://www.onvif.org/location/unknown",
    ]
    assert scope_items(reply, "Configurable") == []


def test_added_scopes_persist_and_notify(tmp_path: Path) -> None:
    """AddScopes saves the scope, tells the listeners, and a new DeviceService still has it."""
    harness = Harness(tmp_path)
    seen: list[list[str]] = []
    harness.device.on_scopes_changed.append(lambda scopes: seen.append(list(scopes)))
    harness.call("AddScopes", TDS.ScopeItem("onvif://www.onvif.org/location/garden"))
    harness.call("AddScopes", TDS.ScopeItem("onvif://www.onvif.org/location/garden"))
    assert len(seen) == 1 and seen[0][-1] == "onvif://www.onvif.org/location/garden"
    again = Harness(tmp_path)
    assert scope_items(again.call("GetScopes"), "Configurable") == ["onvif://www.onvif.org/location/garden"]


def test_set_scopes_replaces_configurable_ones_only(harness: Harness) -> None:
    """SetScopes replaces the configurable scopes and ignores fixed ones sent back by the client."""
    harness.call("AddScopes", TDS.ScopeItem("onvif://www.onvif.org/location/a"))
    harness.call("SetScopes", TDS.Scopes("onvif://www.onvif.org/Profile/Streaming"),
                 TDS.Scopes("onvif://www.onvif.org/location/b"), TDS.Scopes("urn:x:c"))
    reply = harness.call("GetScopes")
    assert scope_items(reply, "Configurable") == ["onvif://www.onvif.org/location/b", "urn:x:c"]
    assert "onvif://www.onvif.org/Profile/Streaming" in scope_items(reply, "Fixed")
    assert harness.device.scopes()[-2:] == ["onvif://www.onvif.org/location/b", "urn:x:c"]


def test_remove_scopes(harness: Harness) -> None:
    """RemoveScopes echoes what it removed; fixed scopes are FixedScope, unknown ones NoScope."""
    harness.call("AddScopes", TDS.ScopeItem("urn:x:a"), TDS.ScopeItem("urn:x:b"))
    reply = harness.call("RemoveScopes", TDS.ScopeItem("urn:x:a"))
    assert texts(reply, "tds:ScopeItem") == ["urn:x:a"]
    fixed = harness.fault("RemoveScopes", TDS.ScopeItem("onvif://www.onvif.org/Profile/S"))
    assert (fixed.code, fixed.subcodes) == ("Sender", ("OperationProhibited", "FixedScope"))
    missing = harness.fault("RemoveScopes", TDS.ScopeItem("urn:x:b"), TDS.ScopeItem("urn:x:a"))
    assert missing.subcodes == ("InvalidArgVal", "NoScope")
    assert scope_items(harness.call("GetScopes"), "Configurable") == ["urn:x:b"]


def test_too_many_scopes(harness: Harness) -> None:
    """More configurable scopes than the device supports is Receiver ter:Action ter:TooManyScopes."""
    fault = harness.fault("SetScopes", *(TDS.Scopes(f"urn:x:{i}") for i in range(33)))
    assert (fault.code, fault.subcodes) == ("Receiver", ("Action", "TooManyScopes"))


def test_discovery_mode_persists_and_notifies(tmp_path: Path) -> None:
    """SetDiscoveryMode(NonDiscoverable) is reported, told to listeners and kept across restarts."""
    harness = Harness(tmp_path)
    assert text(harness.call("GetDiscoveryMode"), "tds:DiscoveryMode") == "Discoverable"
    seen: list[bool] = []
    harness.device.on_discovery_mode_changed.append(seen.append)
    harness.call("SetDiscoveryMode", TDS.DiscoveryMode("NonDiscoverable"))
    assert seen == [False] and not harness.device.discoverable
    assert text(Harness(tmp_path).call("GetDiscoveryMode"), "tds:DiscoveryMode") == "NonDiscoverable"
    assert harness.fault("SetDiscoveryMode", TDS.DiscoveryMode("Maybe")).subcodes == ("InvalidArgs",)


def test_discovery_disabled_in_config(tmp_path: Path) -> None:
    """With discovery off in the config the device is NonDiscoverable and says DiscoveryNotSupported."""
    harness = Harness(tmp_path, discovery=False)
    assert text(harness.call("GetDiscoveryMode"), "tds:DiscoveryMode") == "NonDiscoverable"
    system = harness.call("GetServiceCapabilities")[0].find(ns.q(ns.TDS, "System"))
    assert system is not None and system.get("DiscoveryNotSupported") == "true"


# --- network ---------------------------------------------------------------------------------


def test_network_interfaces_with_an_ipv4_host(harness: Harness) -> None:
    """One enabled eth0 with the identity's MAC and the IPv4 address the client used."""
    reply = harness.call("GetNetworkInterfaces")
    assert len(reply) == 1 and reply[0].get("token") == "eth0"
    assert text(reply, "tds:NetworkInterfaces/tt:Enabled") == "true"
    assert text(reply, "tds:NetworkInterfaces/tt:Info/tt:HwAddress") == IDENTITY.hw_address
    assert text(reply, "tds:NetworkInterfaces/tt:IPv4/tt:Config/tt:Manual/tt:Address") == "192.0.2.7"


def test_network_interfaces_with_other_hosts(harness: Harness) -> None:
    """An IPv6 host gives an IPv6 block; a host name gives no address block at all."""
    ipv6 = harness.call("GetNetworkInterfaces", host="[2001:db8::7]:8080")
    assert text(ipv6, "tds:NetworkInterfaces/tt:IPv6/tt:Config/tt:Manual/tt:Address") == "2001:db8::7"
    named = harness.call("GetNetworkInterfaces", host="relay.local:8080")
    assert [etree.QName(c).localname for c in named[0]] == ["Enabled", "Info"]


def test_hostname_protocols_and_the_rest(harness: Harness) -> None:
    """Hostname is the DNS-safe device name; protocols carry the SOAP and RTSP ports."""
    hostname = harness.call("GetHostname")
    assert texts(hostname, "tds:HostnameInformation/*") == ["false", "Garden-cams"]
    protocols = harness.call("GetNetworkProtocols")
    assert texts(protocols, "tds:NetworkProtocols/tt:Name") == ["HTTP", "HTTPS", "RTSP"]
    assert texts(protocols, "tds:NetworkProtocols/tt:Port") == ["8080", "443", "8554"]
    assert texts(protocols, "tds:NetworkProtocols/tt:Enabled") == ["true", "false", "true"]
    for name in ("GetDNS", "GetNTP", "GetNetworkDefaultGateway", "GetZeroConfiguration", "GetRelayOutputs"):
        harness.call(name)
    assert text(harness.call("GetWsdlUrl"), "tds:WsdlUrl").startswith("http://www.onvif.org/")
    assert text(harness.call("GetEndpointReference"), "tds:GUID") == IDENTITY.endpoint_reference


def test_per_camera_device(tmp_path: Path) -> None:
    """A per-camera device takes its name and HTTP port from the camera and keeps its own state file."""
    harness = Harness(tmp_path, device_id="porch")
    assert "onvif://www.onvif.org/name/Porch%20Cam" in harness.device.scopes()
    assert texts(harness.call("GetNetworkProtocols"), "tds:NetworkProtocols/tt:Port")[0] == "8101"
    harness.call("AddScopes", TDS.ScopeItem("urn:x:porch"))
    assert (tmp_path / "device-porch.json").exists()
    assert "urn:x:porch" not in Harness(tmp_path).device.scopes()


# --- users and reboot ------------------------------------------------------------------------


def user(name: str, password: str | None, level: str) -> _Element:
    parts = [TT.Username(name)] + ([TT.Password(password)] if password is not None else []) + [TT.UserLevel(level)]
    return TDS.User(*parts)


def test_users_over_soap(tmp_path: Path) -> None:
    """CreateUsers/SetUser/DeleteUsers change the store; GetUsers never shows a password."""
    harness = Harness(tmp_path)
    harness.call("CreateUsers", user("viewer", "pw", "User"), user("op", "pw2", "Operator"))
    reply = harness.call("GetUsers")
    assert texts(reply, "tds:User/tt:Username") == ["admin", "viewer", "op"]
    assert texts(reply, "tds:User/tt:UserLevel") == ["Administrator", "User", "Operator"]
    assert reply.find(".//tt:Password", {"tt": ns.TT}) is None
    assert b"secret" not in etree.tostring(reply)
    harness.call("SetUser", user("viewer", "newpw", "Operator"))
    assert harness.users.lookup("viewer") == User("viewer", "newpw", "Operator")
    harness.call("DeleteUsers", TDS.Username("op"))
    assert Harness(tmp_path).users.lookup("op") is None
    assert Harness(tmp_path).users.lookup("viewer") is not None


def test_user_faults_over_soap(harness: Harness) -> None:
    """Config users cannot be deleted; a SetUser without password is PasswordTooWeak; no users is InvalidArgs."""
    assert harness.fault("DeleteUsers", TDS.Username("admin")).subcodes == ("InvalidArgVal", "FixedUser")
    harness.call("CreateUsers", user("viewer", "pw", "User"))
    assert harness.fault("SetUser", user("viewer", None, "User")).subcodes == ("OperationProhibited", "PasswordTooWeak")
    assert harness.fault("CreateUsers").subcodes == ("InvalidArgs",)
    assert harness.fault("CreateUsers", TDS.User(TT.UserLevel("User"))).subcodes == ("InvalidArgs",)


def test_system_reboot_calls_reboot(harness: Harness) -> None:
    """SystemReboot answers with a message and calls the injected reboot once."""
    reply = harness.call("SystemReboot")
    assert "not rebooted" in text(reply, "tds:Message")
    assert harness.reboots == [NOW]


def test_bad_listener_does_not_fail_the_call(harness: Harness) -> None:
    """A scope listener that raises is logged; the operation still succeeds and is saved."""
    calls: list[str] = []

    def broken(scopes: Any) -> None:
        calls.append("broken")
        raise RuntimeError("boom")

    listeners: list[Callable[[Any], None]] = [broken, lambda scopes: calls.append("ok")]
    harness.device.on_scopes_changed.extend(listeners)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        harness.call("AddScopes", TDS.ScopeItem("urn:x:a"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert calls == ["broken", "ok"]
    assert "urn:x:a" in harness.device.scopes()
    assert [e["what"] for e in events if "log_failure" in e] == ["scopes"]
