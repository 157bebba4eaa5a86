"""Hypothesis strategies for adversarial SOAP requests.

Two families: whole bodies that are broken as XML (random bytes, truncations, wrong
namespaces, deep nesting, huge attributes and texts, entity tricks, wrong encodings),
and valid requests of every operation the relay serves, mutated (texts and attributes
replaced with hostile values, elements deleted, duplicated, renamed or added) so that
the handlers behind the parser see malicious input too. Request templates name the
cameras of the robustness rig (``swing``, a Swing, and ``cam2``, an ATOM Cam 2).
"""

from __future__ import annotations

import codecs
from typing import Any

from hypothesis import strategies as st
from lxml import etree

from atomrelay.xml import ns
from tests.robustness.support import envelope, op, security_header

TT_NS = ns.TT
WSNT_DECL = f'xmlns:wsnt="{ns.WSNT}"'
FOV = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/TranslationSpaceFov"
CONCRETE_SET = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)

# --- values -------------------------------------------------------------------------------------

HOSTILE_VALUES = (
    "", " ", "0", "-0", "1", "-1", "2", "0.5", "1.0000000001", "-1.0000000001", "NaN", "nan", "inf", "-inf",
    "Infinity", "1e309", "-1e309", "1e-400", "1e5", "9" * 30, "-" + "9" * 30, "9" * 5000, "0x10", "1_000", "١٢",
    "１２", "+7", " 5 ", "5\n", "true", "false", "TRUE", "yes", "PT0S", "PT1S", "PT0.5S", "-PT1S", "P", "PT", "PT-1S",
    "PT" + "9" * 400 + "H", "P" + "9" * 400 + "Y", "P" + "9" * 400 + "D", "PT" + "9" * 400 + ".5S", "P1Y2M3DT4H5M6.7S",
    "PT99999999999999999999S", "PT0.0000000001S", "P0D", "2023-11-14T22:13:20Z", "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+23:59", "2023-02-30T00:00:00Z", "2023-11-14T22:13:20.1234567890123Z", "2023-11-14T99:99:99Z",
    "2023-11-14T22:13:20+99:99", "10000-01-01T00:00:00Z", "swing", "swing.main", "swing.sub", "cam2.main", "swing.vs",
    "swing.vsc", "swing.ptz", "swing.ptzc", "swing.main.ve", "swing.preset1", "swing.preset99999999999999999999",
    "../../../etc/passwd", "swing/../cam2", "swing.main\u0000", "x" * 300, "x" * 70_000, "\u202eevil", "😀" * 20,
    "\ufffd", "a\tb\rc\nd", "<b>", "&amp;", "]]>", "' OR 1=1 --", "%s%s%n", "{0}{1}", "${jndi:ldap://127.0.0.1/a}",
    "Administrator", "Operator", "User", "Anonymous", "Extended", "admin", "ON", "OFF", "AUTO", "H264", "H265", "JPEG",
    "RTSP", "HTTP", "UDP", "RTP-Unicast", "RTP-Multicast", "All", "Manual", "NTP", "UTC0", "CST6CDT,M3.2.0,M11.1.0",
    "GMT+99", "tns1:VideoSource/MotionAlarm", "tns1:RuleEngine//.", "tns1:*", "//.", "tns1:VideoSource|tns1:Device",
    "onvif://www.onvif.org/name/x", "onvif://" + "a" * 2000, "http://[", "http://127.0.0.1:0/", "urn:uuid:x",
    FOV, "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace", CONCRETE_SET,
)
"""Texts that have broken parsers before: numbers at and past every limit, durations, dates, tokens, injections."""

SWEEP_VALUES = (
    "", "-1", "0", "0.5", "1.0000000001", "-1.0000000001", "NaN", "inf", "-inf", "1e309", "9" * 30, "-" + "9" * 30,
    "9" * 5000, "１２", "true", "PT", "-PT1S", "PT" + "9" * 400 + "H", "P" + "9" * 400 + "Y", "P" + "9" * 400 + "D",
    "PT99999999999999999999S", "PT" + "9" * 400 + ".5S", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+23:59",
    "2023-02-30T00:00:00Z", "2023-11-14T22:13:20+99:99", "10000-01-01T00:00:00Z", "x" * 300, "x" * 70_000,
    "\U0001f600" * 20, "\u202eevil", "../../../etc/passwd", "swing.preset99999999999999999999", "swing.sub",
    "cam2.main", "All", "http://[", "tns1:RuleEngine//.", "//.", "a\tb\rc\nd", "]]>",
)
"""The hostile values most likely to break a handler, tried in every field of every template (``sweep``)."""


def sweep() -> list[tuple[str, bytes]]:
    """Every template with one text or attribute replaced by one SWEEP_VALUES entry: (where to post, operation)."""
    requests = []
    for where, body in TEMPLATES:
        template = etree.fromstring(body.encode(), _PARSER)
        slots = [(index, name) for index, element in enumerate(template.iter())
                 for name in ([None] if len(element) == 0 else []) + list(element.attrib)]
        for index, name in slots:
            for value in SWEEP_VALUES:
                operation = etree.fromstring(body.encode(), _PARSER)
                element = list(operation.iter())[index]
                if name is None:
                    element.text = value
                else:
                    element.set(name, value)
                requests.append((where, etree.tostring(operation)))
    return requests


_XML_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF, blacklist_categories=("Cs",),
                           blacklist_characters="\ufffe\uffff")


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry (lxml refuses them)."""
    return "".join(c for c in text if c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd")
                   or c >= "\U00010000")


values = st.one_of(
    st.sampled_from(HOSTILE_VALUES).map(xml_safe),
    st.text(_XML_CHARS, max_size=40),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.builds(lambda c, n: c * n, st.sampled_from("9xA<&"), st.integers(100, 20_000)).map(xml_safe),
)
"""Element texts and attribute values."""

ELEMENT_NAMES = (
    "ProfileToken", "ConfigurationToken", "VideoSourceToken", "NodeToken", "PresetToken", "PresetName", "Token", "Name",
    "Position", "Translation", "Velocity", "Speed", "PanTilt", "Zoom", "Timeout", "Configuration", "StreamSetup",
    "Stream", "Transport", "Protocol", "Tunnel", "InitialTerminationTime", "TerminationTime", "Filter",
    "TopicExpression", "MessageContent", "MessageLimit", "ConsumerReference", "Address", "ImagingSettings",
    "IrCutFilter", "Brightness", "Category", "IncludeCapability", "DateTimeType", "DaylightSavings", "TimeZone", "TZ",
    "UTCDateTime", "Date", "Time", "Year", "Month", "Day", "Hour", "Minute", "Second", "User", "Username", "Password",
    "UserLevel", "Scopes", "ScopeItem", "DiscoveryMode", "Encoding", "Resolution", "Width", "Height", "Quality",
    "RateControl", "FrameRateLimit", "EncodingInterval", "BitrateLimit", "H264", "GovLength", "H264Profile",
    "ForcePersistence", "Type", "UseCount", "Multicast", "SessionTimeout", "Extension", "Any",
)
ATTRIBUTE_NAMES = ("x", "y", "space", "token", "Type", "GovLength", "Profile", "Dialect", "ConstantBitRate",
                   f"{{{ns.XSI}}}nil", f"{{{ns.XSI}}}type", "EncodingType", "fixed", "lang")
NAMESPACES = (ns.TT, ns.TDS, ns.TRT, ns.TR2, ns.TPTZ, ns.TIMG, ns.TEV, ns.WSNT, ns.WSA, ns.WSSE, "", "urn:x",
              ns.SOAP12, ns.SOAP11)

# --- valid requests to mutate --------------------------------------------------------------------

_DATE = ("<UTCDateTime><tt:Date><tt:Year>2024</tt:Year><tt:Month>2</tt:Month><tt:Day>29</tt:Day></tt:Date>"
         "<tt:Time><tt:Hour>12</tt:Hour><tt:Minute>0</tt:Minute><tt:Second>0</tt:Second></tt:Time></UTCDateTime>")
_VE1 = ('<Configuration token="swing.main.ve"><tt:Name>main</tt:Name><tt:UseCount>1</tt:UseCount>'
        "<tt:Encoding>H264</tt:Encoding><tt:Resolution><tt:Width>1920</tt:Width><tt:Height>1080</tt:Height>"
        "</tt:Resolution><tt:Quality>5</tt:Quality><tt:RateControl><tt:FrameRateLimit>20</tt:FrameRateLimit>"
        "<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>2048</tt:BitrateLimit></tt:RateControl>"
        "<tt:H264><tt:GovLength>40</tt:GovLength><tt:H264Profile>Main</tt:H264Profile></tt:H264></Configuration>"
        "<ForcePersistence>true</ForcePersistence>")
_VE2 = ('<Configuration token="swing.sub.ve" GovLength="40" Profile="Main"><tt:Name>sub</tt:Name>'
        "<tt:UseCount>1</tt:UseCount><tt:Encoding>H265</tt:Encoding><tt:Resolution><tt:Width>640</tt:Width>"
        '<tt:Height>360</tt:Height></tt:Resolution><tt:RateControl ConstantBitRate="false">'
        "<tt:FrameRateLimit>20</tt:FrameRateLimit><tt:BitrateLimit>512</tt:BitrateLimit></tt:RateControl>"
        "<tt:Quality>5</tt:Quality></Configuration>")
_P = "<ProfileToken>swing.main</ProfileToken>"

TEMPLATES: tuple[tuple[str, str], ...] = tuple((path, body) for path, body in (
    ("device", op(ns.TDS, "GetSystemDateAndTime")),
    ("device", op(ns.TDS, "GetDeviceInformation")),
    ("device", op(ns.TDS, "GetCapabilities", "<Category>All</Category>")),
    ("device", op(ns.TDS, "GetServices", "<IncludeCapability>true</IncludeCapability>")),
    ("device", op(ns.TDS, "GetScopes")),
    ("device", op(ns.TDS, "SetScopes", "<Scopes>onvif://www.onvif.org/name/fuzz</Scopes>")),
    ("device", op(ns.TDS, "AddScopes", "<ScopeItem>onvif://www.onvif.org/location/fuzz</ScopeItem>")),
    ("device", op(ns.TDS, "RemoveScopes", "<ScopeItem>onvif://www.onvif.org/location/fuzz</ScopeItem>")),
    ("device", op(ns.TDS, "GetUsers")),
    ("device", op(ns.TDS, "CreateUsers", "<User><tt:Username>fuzz</tt:Username><tt:Password>fuzz-pw</tt:Password>"
                                         "<tt:UserLevel>User</tt:UserLevel></User>")),
    ("device", op(ns.TDS, "SetUser", "<User><tt:Username>fuzz</tt:Username><tt:Password>pw2</tt:Password>"
                                     "<tt:UserLevel>Operator</tt:UserLevel></User>")),
    ("device", op(ns.TDS, "DeleteUsers", "<Username>fuzz</Username>")),
    ("device", op(ns.TDS, "SetSystemDateAndTime", "<DateTimeType>Manual</DateTimeType><DaylightSavings>false"
                                                  "</DaylightSavings><TimeZone><tt:TZ>UTC0</tt:TZ></TimeZone>" + _DATE)),
    ("device", op(ns.TDS, "SetDiscoveryMode", "<DiscoveryMode>Discoverable</DiscoveryMode>")),
    ("device", op(ns.TDS, "GetNetworkInterfaces")),
    ("device", op(ns.TDS, "GetHostname")),
    ("device", op(ns.TDS, "GetEndpointReference")),
    ("media", op(ns.TRT, "GetProfiles")),
    ("media", op(ns.TRT, "GetProfile", _P)),
    ("media", op(ns.TRT, "GetStreamUri", "<StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport>"
                                         "<tt:Protocol>RTSP</tt:Protocol></tt:Transport></StreamSetup>" + _P)),
    ("media", op(ns.TRT, "GetSnapshotUri", _P)),
    ("media", op(ns.TRT, "CreateProfile", "<Name>fuzz</Name><Token>fuzz1</Token>")),
    ("media", op(ns.TRT, "AddVideoSourceConfiguration",
                 "<ProfileToken>fuzz1</ProfileToken><ConfigurationToken>swing.vsc</ConfigurationToken>")),
    ("media", op(ns.TRT, "AddVideoEncoderConfiguration",
                 "<ProfileToken>fuzz1</ProfileToken><ConfigurationToken>swing.main.ve</ConfigurationToken>")),
    ("media", op(ns.TRT, "AddPTZConfiguration",
                 "<ProfileToken>fuzz1</ProfileToken><ConfigurationToken>swing.ptzc</ConfigurationToken>")),
    ("media", op(ns.TRT, "DeleteProfile", "<ProfileToken>fuzz1</ProfileToken>")),
    ("media", op(ns.TRT, "SetVideoEncoderConfiguration", _VE1)),
    ("media", op(ns.TRT, "GetVideoEncoderConfigurationOptions", _P)),
    ("media", op(ns.TRT, "GetVideoSourceConfigurationOptions", _P)),
    ("media", op(ns.TRT, "GetCompatibleVideoEncoderConfigurations", _P)),
    ("media2", op(ns.TR2, "GetProfiles", "<Type>All</Type>")),
    ("media2", op(ns.TR2, "GetStreamUri", "<Protocol>RTSP</Protocol><ProfileToken>swing.sub</ProfileToken>")),
    ("media2", op(ns.TR2, "CreateProfile", "<Name>fuzz2</Name>")),
    ("media2", op(ns.TR2, "AddConfiguration", "<ProfileToken>swing.main</ProfileToken><Configuration><Type>"
                                              "VideoEncoder</Type><Token>swing.main.ve</Token></Configuration>")),
    ("media2", op(ns.TR2, "RemoveConfiguration", "<ProfileToken>swing.main</ProfileToken><Configuration><Type>All"
                                                 "</Type></Configuration>")),
    ("media2", op(ns.TR2, "SetVideoEncoderConfiguration", _VE2)),
    ("media2", op(ns.TR2, "GetVideoEncoderConfigurationOptions", "<ProfileToken>swing.sub</ProfileToken>")),
    ("ptz", op(ns.TPTZ, "GetStatus", _P)),
    ("ptz", op(ns.TPTZ, "AbsoluteMove", _P + '<Position><tt:PanTilt x="0.5" y="-0.5"/></Position>'
                                             '<Speed><tt:PanTilt x="1" y="1"/></Speed>')),
    ("ptz", op(ns.TPTZ, "RelativeMove", _P + f'<Translation><tt:PanTilt x="0.1" y="0.1" space="{FOV}"/></Translation>')),
    ("ptz", op(ns.TPTZ, "ContinuousMove", _P + '<Velocity><tt:PanTilt x="0.5" y="0"/></Velocity><Timeout>PT1S</Timeout>')),
    ("ptz", op(ns.TPTZ, "Stop", _P + "<PanTilt>true</PanTilt><Zoom>false</Zoom>")),
    ("ptz", op(ns.TPTZ, "SetPreset", _P + "<PresetName>fuzz</PresetName>")),
    ("ptz", op(ns.TPTZ, "GotoPreset", _P + "<PresetToken>swing.preset1</PresetToken>")),
    ("ptz", op(ns.TPTZ, "RemovePreset", _P + "<PresetToken>swing.preset2</PresetToken>")),
    ("ptz", op(ns.TPTZ, "GetPresets", _P)),
    ("ptz", op(ns.TPTZ, "SetHomePosition", _P)),
    ("ptz", op(ns.TPTZ, "GotoHomePosition", _P + '<Speed><tt:PanTilt x="0.2" y="0.2"/></Speed>')),
    ("ptz", op(ns.TPTZ, "GetConfigurationOptions", "<ConfigurationToken>swing.ptzc</ConfigurationToken>")),
    ("ptz", op(ns.TPTZ, "GetNode", "<NodeToken>swing.ptz</NodeToken>")),
    ("imaging", op(ns.TIMG, "GetImagingSettings", "<VideoSourceToken>swing.vs</VideoSourceToken>")),
    ("imaging", op(ns.TIMG, "SetImagingSettings", "<VideoSourceToken>swing.vs</VideoSourceToken><ImagingSettings>"
                                                  "<tt:IrCutFilter>AUTO</tt:IrCutFilter></ImagingSettings>")),
    ("imaging", op(ns.TIMG, "GetOptions", "<VideoSourceToken>cam2.vs</VideoSourceToken>")),
    ("events", op(ns.TEV, "GetEventProperties")),
    ("events", op(ns.TEV, "CreatePullPointSubscription",
                  f'<InitialTerminationTime>PT60S</InitialTerminationTime><Filter><wsnt:TopicExpression {WSNT_DECL} '
                  f'Dialect="{CONCRETE_SET}">tns1:VideoSource/MotionAlarm</wsnt:TopicExpression></Filter>')),
    ("subscription", op(ns.TEV, "PullMessages", "<Timeout>PT0.2S</Timeout><MessageLimit>10</MessageLimit>")),
    ("subscription", op(ns.TEV, "SetSynchronizationPoint")),
    ("subscription", op(ns.WSNT, "Renew", "<TerminationTime>PT60S</TerminationTime>")),
    ("subscription", op(ns.WSNT, "Unsubscribe")),
))
"""(where to post, operation element) for every kind of request worth mutating; Subscribe is left out on purpose
(a consumer address would make the relay connect out)."""


@st.composite
def mutated_requests(draw: Any) -> tuple[str, bytes]:
    """A template request with one to four hostile mutations: (where to post, operation element bytes)."""
    where, body = draw(st.sampled_from(TEMPLATES))
    operation = etree.fromstring(body.encode(), _PARSER)
    for _ in range(draw(st.integers(1, 4))):
        elements = [e for e in operation.iter() if isinstance(e.tag, str)]
        target = draw(st.sampled_from(elements))
        kind = draw(st.sampled_from(("text", "text", "attribute", "delete", "duplicate", "child", "rename", "nest")))
        if kind == "text":
            target.text = draw(values)
        elif kind == "attribute":
            target.set(draw(st.sampled_from(ATTRIBUTE_NAMES)), draw(values))
        elif kind == "delete" and target is not operation:
            target.getparent().remove(target)
        elif kind == "duplicate" and target is not operation:
            for _ in range(draw(st.integers(1, 3))):
                target.addnext(etree.fromstring(etree.tostring(target)))
        elif kind == "child":
            namespace, local = draw(st.sampled_from(NAMESPACES)), draw(st.sampled_from(ELEMENT_NAMES))
            child = etree.SubElement(target, f"{{{namespace}}}{local}" if namespace else local)
            child.text = draw(values)
        elif kind == "rename":
            local = etree.QName(target).localname
            target.tag = f"{{{draw(st.sampled_from(NAMESPACES))}}}{local}" if draw(st.booleans()) else local
        elif kind == "nest":
            parent = target
            for _ in range(draw(st.integers(1, 70))):
                parent = etree.SubElement(parent, f"{{{ns.TT}}}{draw(st.sampled_from(ELEMENT_NAMES))}")
            parent.text = draw(values)
    return where, etree.tostring(operation)


# --- broken documents ------------------------------------------------------------------------------

_VALID = (
    envelope(op(ns.TDS, "GetSystemDateAndTime")),
    envelope(op(ns.TRT, "GetProfiles"), security_header(nonce=b"fixed-nonce-0123", created="2023-11-14T22:13:20Z")),
    envelope(op(ns.TPTZ, "AbsoluteMove", _P + '<Position><tt:PanTilt x="0.5" y="-0.5"/></Position>'), version="1.1"),
    envelope(op(ns.TEV, "CreatePullPointSubscription", "<InitialTerminationTime>PT60S</InitialTerminationTime>")),
)


def truncated() -> st.SearchStrategy[bytes]:
    """A valid request cut short at any byte."""
    return st.sampled_from(_VALID).flatmap(lambda doc: st.integers(0, len(doc) - 1).map(lambda n: doc[:n]))


def wrong_namespaces() -> st.SearchStrategy[bytes]:
    """Envelopes and operations in namespaces that are not SOAP's or ONVIF's, or none, or swapped."""
    envelope_ns = st.sampled_from((ns.SOAP12, ns.SOAP11, "", "urn:x", ns.SOAP12 + "/", ns.SOAP12.upper(), ns.TDS,
                                   "http://schemas.xmlsoap.org/wsdl/", "http://www.w3.org/2003/05/soap-envelope\u00a0"))
    operation_ns = st.sampled_from((ns.TDS, ns.TRT, ns.TPTZ, ns.TEV, "", "urn:x", ns.SOAP12, ns.TT, ns.TDS + "/"))
    names = st.sampled_from(("Envelope", "envelope", "Body", "Header", "Fault", "x"))

    def build(env: str, body_name: str, operation: str, local: str) -> bytes:
        declaration = f' xmlns:s="{env}"' if env else ""
        prefix = "s:" if env else ""
        return (f"<{prefix}Envelope{declaration}><{prefix}{body_name}><{local} xmlns=\"{operation}\"/>"
                f"</{prefix}{body_name}></{prefix}Envelope>").encode()

    return st.builds(build, envelope_ns, st.sampled_from(("Body", "body", "Header", "Envelope")), operation_ns,
                     st.one_of(names, st.sampled_from(("GetSystemDateAndTime", "GetProfiles", "Renew"))))


def deep_nesting() -> st.SearchStrategy[bytes]:
    """Elements nested tens to tens of thousands deep, inside the Body or as the document."""
    depths = st.sampled_from((60, 63, 64, 65, 100, 255, 256, 257, 1000, 10_000, 40_000))

    def build(depth: int, inside: bool, attribute: bool) -> bytes:
        tag = b'<a x="1">' if attribute else b"<a>"
        nest = tag * depth + b"</a>" * depth
        return envelope(nest.decode()) if inside else nest

    return st.builds(build, depths, st.booleans(), st.booleans())


def huge() -> st.SearchStrategy[bytes]:
    """Huge attribute values, many attributes, many namespace declarations, long names, big texts, over-size bodies."""
    size = st.sampled_from((1_000, 100_000, 200_000, 255_000, 262_144, 300_000))

    def build(kind: str, n: int) -> bytes:
        if kind == "attribute":
            inner = f'<GetProfiles xmlns="{ns.TRT}" a="{"x" * n}"/>'
        elif kind == "attributes":
            inner = f'<GetProfiles xmlns="{ns.TRT}" ' + " ".join(f"a{i}=\"{i}\"" for i in range(n // 12)) + "/>"
        elif kind == "namespaces":
            inner = f'<GetProfiles xmlns="{ns.TRT}" ' + " ".join(f'xmlns:p{i}="urn:{i}"' for i in range(n // 20)) + "/>"
        elif kind == "name":
            inner = f'<{"G" * n} xmlns="{ns.TRT}"/>'
        elif kind == "text":
            inner = f'<GetProfile xmlns="{ns.TRT}"><ProfileToken>{"t" * n}</ProfileToken></GetProfile>'
        else:
            inner = f'<GetProfiles xmlns="{ns.TRT}"/>' * (n // 40)
        return envelope(inner)

    return st.builds(build, st.sampled_from(("attribute", "attributes", "namespaces", "name", "text", "many")), size)


ENTITY_TRICKS: tuple[bytes, ...] = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><s:Envelope xmlns:s="' + ns.SOAP12.encode()
    + b'"><s:Body><x>&lol3;</x></s:Body></s:Envelope>',
    b'<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><s:Envelope xmlns:s="' + ns.SOAP12.encode()
    + b'"><s:Body><GetScopes xmlns="' + ns.TDS.encode() + b'">&xxe;</GetScopes></s:Body></s:Envelope>',
    b'<!DOCTYPE x [<!ENTITY % p SYSTEM "http://127.0.0.1:9/evil.dtd"> %p;]><x/>',
    b'<!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd"><x/>',
    b'<?xml version="1.0"?>\n<!-- c -->\n<!DOCTYPE x [<!ENTITY a "' + b"A" * 50_000 + b'">]><x>' + b"&a;" * 1000
    + b"</x>",
    b'<s:Envelope xmlns:s="' + ns.SOAP12.encode() + b'"><s:Body><x>&undefined;</x></s:Body></s:Envelope>',
    b'<s:Envelope xmlns:s="' + ns.SOAP12.encode() + b'"><s:Body><x a="&#0;"/></s:Body></s:Envelope>',
    b'<s:Envelope xmlns:s="' + ns.SOAP12.encode() + b'"><s:Body><x>&#xD800;&#x110000;&#99999999999;</x></s:Body>'
    b"</s:Envelope>",
    b'<s:Envelope xmlns:s="' + ns.SOAP12.encode() + b'"><s:Body><GetScopes xmlns="' + ns.TDS.encode()
    + b'"><![CDATA[<x>]]]]><![CDATA[>]]></GetScopes></s:Body></s:Envelope>',
    b'<s:Envelope xmlns:s="' + ns.SOAP12.encode() + b'" xmlns:xi="http://www.w3.org/2001/XInclude"><s:Body>'
    b'<GetScopes xmlns="' + ns.TDS.encode() + b'"><xi:include href="file:///etc/passwd" parse="text"/></GetScopes>'
    b"</s:Body></s:Envelope>",
    b'<?xml-stylesheet href="http://127.0.0.1:9/x.xsl"?><s:Envelope xmlns:s="' + ns.SOAP12.encode()
    + b'"><s:Body><GetScopes xmlns="' + ns.TDS.encode() + b'"/></s:Body></s:Envelope>',
    b'<?xml version="1.0"?><?xml version="1.0"?><x/>',
    b"<!ENTITY x \"y\"><x>&x;</x>",
    b"<x><!DOCTYPE y></x>",
    b'<x xmlns:a="urn:a" xmlns:a="urn:b"/>',
    b'<x a="1" a="2"/>',
    b"<a:x/>",
    b'<x xmlns:xml="urn:not-xml"/>',
    b"<x>" + b"&amp;" * 50_000 + b"</x>",
    b"<x>" + b"&#65;" * 50_000 + b"</x>",
    b"<!--" + b"-" * 10_000 + b"-->",
    b"<x><!-- -- --></x>",
    b"\x00<x/>",
    b"<x/>\x00",
    b"<x/><y/>",
    b"   ",
    b"",
)
"""Entity expansion, external entities and DTDs, XInclude, PIs and other well-formedness traps."""


def _encodings(doc: bytes) -> list[bytes]:
    text = doc.decode("utf-8")
    declared = '<?xml version="1.0" encoding="{}"?>'
    latin = text.replace("GetScopes", "GetScopés")
    return [
        codecs.BOM_UTF16_LE + text.encode("utf-16-le"),
        codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
        text.encode("utf-16-le"),
        (declared.format("UTF-16") + text).encode("utf-16"),
        (declared.format("UTF-32") + text).encode("utf-32"),
        (declared.format("ISO-8859-1") + latin).encode("latin-1"),
        (declared.format("ISO-8859-1") + latin).encode("utf-8"),
        (declared.format("UTF-8") + latin).encode("latin-1"),
        (declared.format("EBCDIC-US") + text).encode("cp500"),
        (declared.format("x-unknown-charset") + text).encode(),
        codecs.BOM_UTF8 + doc,
        codecs.BOM_UTF8 + codecs.BOM_UTF8 + doc,
        doc.replace(b"<", b"\xc0\xbc", 1),
        doc.replace(b"GetScopes", b"Get\xed\xa0\x80Scopes"),
        doc.replace(b"GetScopes", b"Get\xf4\x90\x80\x80Scopes"),
        doc.replace(b"GetScopes", b"GetScopes\x01"),
        doc[:-1] + b"\xff",
    ]


_SCOPES = envelope(op(ns.TDS, "GetScopes", "<x>é</x>"))
ENCODINGS = tuple(_encodings(_SCOPES))


def wrong_encodings() -> st.SearchStrategy[bytes]:
    """A request in UTF-16/32, latin-1 (declared or not), EBCDIC, with BOMs, or with invalid UTF-8 put in."""
    corrupt = st.builds(lambda doc, at, junk: doc[:at] + junk + doc[at:], st.sampled_from(_VALID),
                        st.integers(0, 200), st.sampled_from((b"\xff", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98",
                                                              b"\xed\xbf\xbf", b"\xc0\x80", b"\x00", b"\x1b")))
    return st.one_of(st.sampled_from(ENCODINGS), corrupt)


def broken_documents() -> st.SearchStrategy[bytes]:
    """Any body that must be refused as XML, or that reaches the relay in a shape it does not expect."""
    return st.one_of(
        st.binary(max_size=2048),
        truncated(),
        wrong_namespaces(),
        deep_nesting(),
        huge(),
        st.sampled_from(ENTITY_TRICKS),
        wrong_encodings(),
    )


CONTENT_TYPES = ("application/soap+xml", "application/soap+xml; charset=utf-8", "text/xml; charset=utf-8",
                 "application/xml", 'application/soap+xml; charset=utf-16; action="x"', "TEXT/XML;CHARSET=ISO-8859-1",
                 "text/plain", "multipart/related; boundary=x", "", "application/soap+xml\x00", "*/*")


def digest_headers() -> st.SearchStrategy[str]:
    """Authorization headers: Digest with odd and broken parameters, Basic with junk, unknown schemes."""
    param_names = st.sampled_from(("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce",
                                   "algorithm", "opaque", "x"))
    param_values = st.one_of(st.sampled_from(("admin", "atomrelay", "auth", "00000001", "MD5", "SHA-256", "http://[",
                                              "//[::1", "/onvif/device_service", "a" * 5000, "ffffffff",
                                              "zz", "\u00e9", '\\"', "0" * 64, "MD5-sess")),
                           st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=30))
    params = st.lists(st.tuples(param_names, param_values, st.booleans()), max_size=10).map(
        lambda items: ", ".join(f'{k}="{v}"' if quoted else f"{k}={v}" for k, v, quoted in items))
    return st.one_of(
        params.map(lambda p: "Digest " + p),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60).map(lambda t: "Basic " + t),
        st.sampled_from(("Digest", "Basic", "Bearer x", "Digest ,,,,", 'Digest username="admin", uri="http://[",'
                         ' realm="atomrelay", nonce="00", response="00", qop=auth, nc=00000001, cnonce="x"')),
    )
