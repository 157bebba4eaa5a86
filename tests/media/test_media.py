"""The Media (ver10) service: every handler, schema validity, access classes, faults and Synology."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from lxml.etree import _Element
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from atomrelay.auth.security import Authenticator
from atomrelay.config import User
from atomrelay.onvif.media import PATH
from atomrelay.onvif.server import OnvifResource
from atomrelay.xml import ns
from tests.media.support import (
    OPERATOR,
    TRT,
    VIEWER,
    MediaHarness,
    faults,
    resolutions,
    spec_access_classes,
    stream_setup,
    swing_only_ptz,
    text,
    tokens_of,
)
from tests.onvif import schema
from tests.onvif.conftest import SOAP_NOW, soap_envelope, soap_iso, soap_security

MEDIA_SPEC = schema.REFERENCE / "spec" / "Media.xml"


@pytest.fixture
def harness(tmp_path: Path) -> MediaHarness:
    return MediaHarness(tmp_path, ptz=swing_only_ptz)


# --- the operation table ----------------------------------------------------------------------


def test_every_operation_has_the_media_spec_access_class(harness: MediaHarness) -> None:
    """Each operation's access class is its Media.xml one; only CreateProfile is PRE_AUTH on purpose (Synology)."""
    classes = spec_access_classes(MEDIA_SPEC)
    assert len(harness.media.operations) >= 35
    for name, operation in harness.media.operations.items():
        expected = "PRE_AUTH" if name == "CreateProfile" else classes[name]
        assert operation.access.value == expected, name
    assert classes["CreateProfile"] == "ACTUATE"


def all_requests() -> list[tuple[str, list[_Element]]]:
    """One valid request for every operation of the service."""
    profile = [TRT.ProfileToken("cam2.main")]
    return [
        ("GetServiceCapabilities", []),
        ("GetProfiles", []),
        ("GetProfile", profile),
        ("CreateProfile", [TRT.Name("made"), TRT.Token("made1")]),
        ("AddVideoSourceConfiguration", [TRT.ProfileToken("made1"), TRT.ConfigurationToken("swing.vsc")]),
        ("AddVideoEncoderConfiguration", [TRT.ProfileToken("made1"), TRT.ConfigurationToken("swing.main.ve")]),
        ("AddPTZConfiguration", [TRT.ProfileToken("made1"), TRT.ConfigurationToken("swing.ptzc")]),
        ("AddAudioSourceConfiguration", [TRT.ProfileToken("made1"), TRT.ConfigurationToken("swing.asc")]),
        ("AddAudioEncoderConfiguration", [TRT.ProfileToken("cam2.main"), TRT.ConfigurationToken("cam2.main.ae")]),
        ("RemoveAudioEncoderConfiguration", [TRT.ProfileToken("made1")]),
        ("RemoveAudioSourceConfiguration", [TRT.ProfileToken("made1")]),
        ("RemovePTZConfiguration", [TRT.ProfileToken("made1")]),
        ("RemoveVideoEncoderConfiguration", [TRT.ProfileToken("made1")]),
        ("RemoveVideoSourceConfiguration", [TRT.ProfileToken("made1")]),
        ("DeleteProfile", [TRT.ProfileToken("made1")]),
        ("GetVideoSources", []),
        ("GetVideoSourceConfigurations", []),
        ("GetVideoSourceConfiguration", [TRT.ConfigurationToken("cam2.vsc")]),
        ("GetCompatibleVideoSourceConfigurations", profile),
        ("GetVideoSourceConfigurationOptions", []),
        ("GetVideoEncoderConfigurations", []),
        ("GetVideoEncoderConfiguration", [TRT.ConfigurationToken("cam2.main.ve")]),
        ("GetCompatibleVideoEncoderConfigurations", profile),
        ("GetVideoEncoderConfigurationOptions", []),
        ("SetVideoEncoderConfiguration", [current_vec("cam2.main.ve"), TRT.ForcePersistence("true")]),
        ("GetGuaranteedNumberOfVideoEncoderInstances", [TRT.ConfigurationToken("cam2.vsc")]),
        ("GetAudioSources", []),
        ("GetAudioSourceConfigurations", []),
        ("GetAudioSourceConfiguration", [TRT.ConfigurationToken("cam2.asc")]),
        ("GetCompatibleAudioSourceConfigurations", profile),
        ("GetAudioEncoderConfigurations", []),
        ("GetAudioEncoderConfiguration", [TRT.ConfigurationToken("cam2.main.ae")]),
        ("GetCompatibleAudioEncoderConfigurations", profile),
        ("GetAudioEncoderConfigurationOptions", []),
        ("GetMetadataConfigurations", []),
        ("GetVideoAnalyticsConfigurations", []),
        ("GetAudioOutputs", []),
        ("GetAudioOutputConfigurations", []),
        ("GetOSDs", []),
        ("GetStreamUri", [stream_setup(), TRT.ProfileToken("cam2.main")]),
        ("GetSnapshotUri", profile),
    ]


_VEC_CACHE: dict[str, _Element] = {}


def current_vec(token: str) -> _Element:
    """The configuration a fresh relay reports for ``token``, as a SetVideoEncoderConfiguration argument."""
    if token not in _VEC_CACHE:
        import tempfile

        reply = MediaHarness(Path(tempfile.mkdtemp())).call("GetVideoEncoderConfiguration", TRT.ConfigurationToken(token))
        _VEC_CACHE[token] = reply[0]
    element = copy.deepcopy(_VEC_CACHE[token])
    element.tag = ns.q(ns.TRT, "Configuration")
    return element


def test_every_operation_answers_schema_valid(harness: MediaHarness) -> None:
    """Each operation of the table, called with valid arguments, answers an XSD-valid response."""
    requests = all_requests()
    assert {name for name, _ in requests} == set(harness.media.operations)
    for name, children in requests:
        harness.call(name, *children)


# --- profiles ---------------------------------------------------------------------------------


def test_get_profiles_lists_h264_profiles_only(harness: MediaHarness) -> None:
    """Media1 lists the H.264 stream profiles, fixed="true"; the H.265 ones are left out, not mislabelled."""
    reply = harness.call("GetProfiles")
    assert tokens_of(reply, "trt:Profiles") == ["cam2.main", "swing.main", "aac.main"]
    assert {p.get("fixed") for p in reply} == {"true"}
    assert {e.text for e in reply.iterfind(".//tt:Encoding", {"tt": ns.TT})} >= {"H264"}
    assert "H265" not in {e.text for e in reply.iterfind(".//tt:Encoding", {"tt": ns.TT})}
    assert harness.fault("GetProfile", TRT.ProfileToken("cam2.sub")).subcodes == ("InvalidArgVal", "NoProfile")


def test_profile_carries_what_clients_need(harness: MediaHarness) -> None:
    """The VideoEncoderConfiguration has the configured Resolution and RateControl, the source its Bounds."""
    profile = harness.call("GetProfile", TRT.ProfileToken("swing.main"))[0]
    vec = "tt:VideoEncoderConfiguration"
    assert (text(profile, f"{vec}/tt:Resolution/tt:Width"), text(profile, f"{vec}/tt:Resolution/tt:Height")) == (
        "1920", "1080",
    )
    assert text(profile, f"{vec}/tt:RateControl/tt:FrameRateLimit") == "25"
    assert text(profile, f"{vec}/tt:RateControl/tt:BitrateLimit") == "3000"
    bounds = profile.find("tt:VideoSourceConfiguration/tt:Bounds", {"tt": ns.TT})
    assert bounds is not None and (bounds.get("width"), bounds.get("height")) == ("1920", "1080")
    assert profile.find("tt:AudioEncoderConfiguration", {"tt": ns.TT}) is None  # audio: none


def test_profiles_reference_only_listed_entities(harness: MediaHarness) -> None:
    """Every source and configuration token a profile names is returned by the matching list operation."""
    profiles = harness.call("GetProfiles")
    listed = {
        "VideoSourceConfiguration": tokens_of(harness.call("GetVideoSourceConfigurations"), "trt:Configurations"),
        "VideoEncoderConfiguration": tokens_of(harness.call("GetVideoEncoderConfigurations"), "trt:Configurations"),
        "AudioSourceConfiguration": tokens_of(harness.call("GetAudioSourceConfigurations"), "trt:Configurations"),
        "AudioEncoderConfiguration": tokens_of(harness.call("GetAudioEncoderConfigurations"), "trt:Configurations"),
    }
    video_sources = tokens_of(harness.call("GetVideoSources"), "trt:VideoSources")
    audio_sources = tokens_of(harness.call("GetAudioSources"), "trt:AudioSources")
    seen = 0
    for profile in profiles:
        for kind, tokens in listed.items():
            for element in profile.findall(f"tt:{kind}", {"tt": ns.TT}):
                assert element.get("token") in tokens, (profile.get("token"), kind)
                seen += 1
        for source in profile.findall("tt:VideoSourceConfiguration/tt:SourceToken", {"tt": ns.TT}):
            assert source.text in video_sources
        for source in profile.findall("tt:AudioSourceConfiguration/tt:SourceToken", {"tt": ns.TT}):
            assert source.text in audio_sources
    assert seen == 3 + 3 + 2 + 2


def test_audio_in_media1(harness: MediaHarness) -> None:
    """G.711 8 kHz for H.264, AAC for declared AAC passthrough; Opus and the audio of H.265 streams stay out of Media1."""
    reply = harness.call("GetAudioEncoderConfigurations")
    found = {c.get("token"): (text(c, "tt:Encoding"), text(c, "tt:SampleRate"), text(c, "tt:Bitrate")) for c in reply}
    assert found == {"cam2.main.ae": ("G711", "8", "64"), "aac.main.ae": ("AAC", "8", "0")}
    options = harness.call("GetAudioEncoderConfigurationOptions", TRT.ConfigurationToken("cam2.main.ae"))
    assert text(options, "trt:Options/tt:Options/tt:Encoding") == "G711"
    assert harness.fault("GetAudioEncoderConfiguration", TRT.ConfigurationToken("swing.sub.ae")).subcodes == (
        "InvalidArgVal", "NoConfig",
    )


def test_ptz_configuration_comes_from_the_hook(harness: MediaHarness) -> None:
    """The Swing's profile carries the PTZ hook's tt:PTZConfiguration; other cameras' profiles none."""
    profiles = {p.get("token"): p for p in harness.call("GetProfiles")}
    ptz = profiles["swing.main"].find("tt:PTZConfiguration", {"tt": ns.TT})
    assert ptz is not None and ptz.get("token") == "swing.ptzc"
    assert text(ptz, "tt:NodeToken") == "swing.ptz"
    assert profiles["cam2.main"].find("tt:PTZConfiguration", {"tt": ns.TT}) is None


# --- stream and snapshot URIs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "uri"),
    [
        ("192.0.2.7:8080", "rtsp://192.0.2.7:8554/cam2/main"),
        ("nvr-facing.example:18080", "rtsp://nvr-facing.example:8554/cam2/main"),
        ("[2001:db8::7]:8080", "rtsp://[2001:db8::7]:8554/cam2/main"),
    ],
)
def test_stream_uri_uses_request_host_and_mediamtx_port(harness: MediaHarness, host: str, uri: str) -> None:
    """GetStreamUri answers rtsp://<request host without port>:<mediamtx rtsp_port>/<camera>/<stream>."""
    reply = harness.call("GetStreamUri", stream_setup(), TRT.ProfileToken("cam2.main"), host=host)
    media_uri = reply.find("trt:MediaUri", {"trt": ns.TRT})
    assert media_uri is not None
    assert [child.text for child in media_uri] == [uri, "false", "false", "PT0S"]


@pytest.mark.parametrize("protocol", ["RTSP", "UDP"])
def test_unicast_transports_get_the_rtsp_uri(harness: MediaHarness, protocol: str) -> None:
    """RTP-Unicast over RTSP or UDP gets the mediamtx RTSP URI (its SETUP then offers TCP)."""
    reply = harness.call("GetStreamUri", stream_setup(protocol=protocol), TRT.ProfileToken("aac.main"))
    assert text(reply, "trt:MediaUri/tt:Uri") == "rtsp://192.0.2.7:8554/aac/main"


@pytest.mark.parametrize(("stream", "protocol"), [("RTP-Multicast", "UDP"), ("RTP-Unicast", "TCP"), ("x", "RTSP"),
                                                  ("RTP-Unicast", "HTTP")])
def test_unsupported_stream_setups_are_refused(harness: MediaHarness, stream: str, protocol: str) -> None:
    """Multicast, raw RTP/TCP and HTTP tunnelling (whose URI must use the web service's port, Media GetStreamUri)
    are Sender/InvalidArgVal/InvalidStreamSetup."""
    fault = harness.fault("GetStreamUri", stream_setup(stream, protocol), TRT.ProfileToken("cam2.main"))
    assert faults(fault) == ("Sender", "InvalidArgVal", "InvalidStreamSetup")


def test_stream_uri_faults(harness: MediaHarness) -> None:
    """Unknown or H.265 profiles are NoProfile; a profile without encoder is Receiver IncompleteConfiguration."""
    for token in ("nope", "cam2.sub"):
        assert harness.fault("GetStreamUri", stream_setup(), TRT.ProfileToken(token)).subcodes == (
            "InvalidArgVal", "NoProfile",
        )
    harness.call("CreateProfile", TRT.Name("empty"))
    fault = harness.fault("GetStreamUri", stream_setup(), TRT.ProfileToken("profile1"))
    assert faults(fault) == ("Receiver", "Action", "IncompleteConfiguration")
    fault = harness.fault("GetSnapshotUri", TRT.ProfileToken("profile1"))
    assert faults(fault) == ("Receiver", "Action", "IncompleteConfiguration")


def test_snapshot_uri_points_at_the_proxy(harness: MediaHarness) -> None:
    """GetSnapshotUri answers http://<host:port>/snapshot/<camera>.jpg, valid indefinitely."""
    reply = harness.call("GetSnapshotUri", TRT.ProfileToken("swing.main"), host="[2001:db8::7]:8080")
    media_uri = reply.find("trt:MediaUri", {"trt": ns.TRT})
    assert media_uri is not None
    assert [child.text for child in media_uri] == ["http://[2001:db8::7]:8080/snapshot/swing.jpg", "false", "false", "PT0S"]


def test_service_capabilities(harness: MediaHarness) -> None:
    """SnapshotUri="true" (Home Assistant enables snapshots on it), RTP/RTSP/TCP only, the profile limit."""
    capabilities = harness.call("GetServiceCapabilities")[0]
    assert capabilities.get("SnapshotUri") == "true"
    streaming = capabilities.find("trt:StreamingCapabilities", {"trt": ns.TRT})
    assert streaming is not None and (streaming.get("RTP_RTSP_TCP"), streaming.get("RTPMulticast")) == ("true", "false")
    limit = capabilities.find("trt:ProfileCapabilities", {"trt": ns.TRT})
    assert limit is not None and limit.get("MaximumNumberOfProfiles") == "12"
    assert harness.media.capabilities is not None
    schema.validate(harness.media.capabilities(None))  # type: ignore[arg-type]


# --- encoder configuration options and changes ---------------------------------------------------


def test_encoder_options_describe_exactly_the_stream(harness: MediaHarness) -> None:
    """Options for one configuration offer its one resolution and frame rate; the bitrate range sits in Extension."""
    reply = harness.call("GetVideoEncoderConfigurationOptions", TRT.ConfigurationToken("swing.main.ve"))
    options = reply[0]
    h264 = options.find("tt:H264", {"tt": ns.TT})
    assert h264 is not None
    assert resolutions(h264) == [("1920", "1080")]
    assert (text(h264, "tt:FrameRateRange/tt:Min"), text(h264, "tt:FrameRateRange/tt:Max")) == ("25", "25")
    assert text(options, "tt:Extension/tt:H264/tt:BitrateRange/tt:Max") == "3000"
    generic = harness.call("GetVideoEncoderConfigurationOptions")[0]
    assert text(generic, "tt:H264/tt:FrameRateRange/tt:Min") == "20"
    assert text(generic, "tt:H264/tt:FrameRateRange/tt:Max") == "25"


def test_set_video_encoder_accepts_the_current_values(harness: MediaHarness) -> None:
    """Sending back the configuration as reported, or with a higher limit or other bitrate, is accepted."""
    harness.call("SetVideoEncoderConfiguration", current_vec("cam2.main.ve"), TRT.ForcePersistence("true"))
    adjusted = current_vec("cam2.main.ve")
    adjusted.find("tt:RateControl/tt:FrameRateLimit", {"tt": ns.TT}).text = "30"  # type: ignore[union-attr]
    adjusted.find("tt:RateControl/tt:BitrateLimit", {"tt": ns.TT}).text = "99999"  # type: ignore[union-attr]
    adjusted.find("tt:Quality", {"tt": ns.TT}).text = "1"  # type: ignore[union-attr]
    harness.call("SetVideoEncoderConfiguration", adjusted, TRT.ForcePersistence("false"))
    reply = harness.call("GetVideoEncoderConfiguration", TRT.ConfigurationToken("cam2.main.ve"))
    assert text(reply, "trt:Configuration/tt:RateControl/tt:BitrateLimit") == "2048"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("tt:Resolution/tt:Width", "1280"),
        ("tt:RateControl/tt:FrameRateLimit", "10"),
        ("tt:RateControl/tt:EncodingInterval", "2"),
        ("tt:Encoding", "JPEG"),
        ("tt:Name", "renamed"),
        ("tt:Resolution/tt:Height", "many"),
    ],
)
def test_set_video_encoder_refuses_what_needs_reencoding(harness: MediaHarness, path: str, value: str) -> None:
    """Another resolution, a lower frame rate, skipped frames, another codec or name are Sender ConfigModify."""
    changed = current_vec("cam2.main.ve")
    changed.find(path, {"tt": ns.TT}).text = value  # type: ignore[union-attr]
    fault = harness.fault("SetVideoEncoderConfiguration", changed, TRT.ForcePersistence("true"))
    assert faults(fault) == ("Sender", "InvalidArgVal", "ConfigModify")


def test_set_video_encoder_unknown_or_h265_is_no_config(harness: MediaHarness) -> None:
    """A configuration Media1 does not list (unknown, or H.265) is NoConfig."""
    for token in ("nope.ve", "cam2.sub.ve"):
        element = current_vec("cam2.main.ve")
        element.set("token", token)
        assert harness.fault("SetVideoEncoderConfiguration", element, TRT.ForcePersistence("true")).subcodes == (
            "InvalidArgVal", "NoConfig",
        )


def test_guaranteed_encoder_instances(harness: MediaHarness) -> None:
    """The guaranteed number of encoder instances is the camera's H.264 stream count."""
    reply = harness.call("GetGuaranteedNumberOfVideoEncoderInstances", TRT.ConfigurationToken("cam2.vsc"))
    assert [(etree.QName(c).localname, c.text) for c in reply] == [("TotalNumber", "1"), ("H264", "1")]
    fault = harness.fault("GetGuaranteedNumberOfVideoEncoderInstances", TRT.ConfigurationToken("x"))
    assert fault.subcodes == ("InvalidArgVal", "NoConfig")


# --- user-made profiles -----------------------------------------------------------------------------


def test_user_profile_lifecycle_through_media1(harness: MediaHarness, tmp_path: Path) -> None:
    """CreateProfile, Add source and encoder, stream it, Remove the encoder, restart, delete: all as specified."""
    created = harness.call("CreateProfile", TRT.Name("SynoProfile"))
    assert (created[0].get("token"), created[0].get("fixed"), len(created[0])) == ("profile1", "false", 1)
    harness.call("AddVideoSourceConfiguration", TRT.ProfileToken("profile1"), TRT.ConfigurationToken("cam2.vsc"))
    harness.call("AddVideoEncoderConfiguration", TRT.ProfileToken("profile1"), TRT.ConfigurationToken("cam2.main.ve"))
    uri = harness.call("GetStreamUri", stream_setup(), TRT.ProfileToken("profile1"))
    assert text(uri, "trt:MediaUri/tt:Uri") == "rtsp://192.0.2.7:8554/cam2/main"
    vec = harness.call("GetVideoEncoderConfiguration", TRT.ConfigurationToken("cam2.main.ve"))
    assert text(vec, "trt:Configuration/tt:UseCount") == "2"
    harness.call("RemoveVideoEncoderConfiguration", TRT.ProfileToken("profile1"))
    restarted = MediaHarness(tmp_path, ptz=swing_only_ptz)
    profile = restarted.call("GetProfile", TRT.ProfileToken("profile1"))[0]
    assert [etree.QName(c).localname for c in profile] == ["Name", "VideoSourceConfiguration"]
    restarted.call("DeleteProfile", TRT.ProfileToken("profile1"))
    assert "profile1" not in tokens_of(MediaHarness(tmp_path).call("GetProfiles"), "trt:Profiles")


def test_media1_profile_faults(harness: MediaHarness) -> None:
    """ProfileExists, DeletionOfFixedProfile, NoProfile, NoConfig and ConfigurationConflict, each as specified."""
    harness.call("CreateProfile", TRT.Name("a"), TRT.Token("mine"))
    assert faults(harness.fault("CreateProfile", TRT.Name("b"), TRT.Token("mine"))) == (
        "Sender", "InvalidArgVal", "ProfileExists",
    )
    assert faults(harness.fault("DeleteProfile", TRT.ProfileToken("cam2.main"))) == (
        "Sender", "Action", "DeletionOfFixedProfile",
    )
    assert harness.fault("DeleteProfile", TRT.ProfileToken("gone")).subcodes == ("InvalidArgVal", "NoProfile")
    add = "AddVideoEncoderConfiguration"
    assert harness.fault(add, TRT.ProfileToken("mine"), TRT.ConfigurationToken("cam2.sub.ve")).subcodes == (
        "InvalidArgVal", "NoConfig",
    )
    harness.call("AddVideoSourceConfiguration", TRT.ProfileToken("mine"), TRT.ConfigurationToken("aac.vsc"))
    assert faults(harness.fault(add, TRT.ProfileToken("mine"), TRT.ConfigurationToken("cam2.main.ve"))) == (
        "Receiver", "Action", "ConfigurationConflict",
    )
    assert faults(harness.fault(add, TRT.ProfileToken("cam2.main"), TRT.ConfigurationToken("aac.main.ve"))) == (
        "Receiver", "Action", "ConfigurationConflict",
    )
    assert faults(harness.fault("AddPTZConfiguration", TRT.ProfileToken("mine"), TRT.ConfigurationToken("cam2.ptzc"))) == (
        "Sender", "InvalidArgVal", "NoConfig",
    )


def test_compatible_configurations_follow_the_profile(harness: MediaHarness) -> None:
    """An empty profile is compatible with every H.264 encoder; one with a source only with that camera's."""
    harness.call("CreateProfile", TRT.Name("p"))
    every = tokens_of(
        harness.call("GetCompatibleVideoEncoderConfigurations", TRT.ProfileToken("profile1")), "trt:Configurations"
    )
    assert every == ["cam2.main.ve", "swing.main.ve", "aac.main.ve"]
    harness.call("AddVideoSourceConfiguration", TRT.ProfileToken("profile1"), TRT.ConfigurationToken("swing.vsc"))
    narrowed = tokens_of(
        harness.call("GetCompatibleVideoEncoderConfigurations", TRT.ProfileToken("profile1")), "trt:Configurations"
    )
    assert narrowed == ["swing.main.ve"]
    fixed = tokens_of(
        harness.call("GetCompatibleAudioEncoderConfigurations", TRT.ProfileToken("cam2.main")), "trt:Configurations"
    )
    assert fixed == ["cam2.main.ae"]


def test_user_ptz_configuration(harness: MediaHarness) -> None:
    """AddPTZConfiguration puts the Swing's PTZ configuration into a user profile; Remove takes it out."""
    harness.call("CreateProfile", TRT.Name("ptz"))
    harness.call("AddPTZConfiguration", TRT.ProfileToken("profile1"), TRT.ConfigurationToken("swing.ptzc"))
    profile = harness.call("GetProfile", TRT.ProfileToken("profile1"))[0]
    assert tokens_of(profile, "tt:PTZConfiguration") == ["swing.ptzc"]
    harness.call("RemovePTZConfiguration", TRT.ProfileToken("profile1"))
    assert tokens_of(harness.call("GetProfile", TRT.ProfileToken("profile1"))[0], "tt:PTZConfiguration") == []


def test_create_profile_needs_actuate(harness: MediaHarness) -> None:
    """Operators may create profiles; a User-level caller gets Sender NotAuthorized (HTTP 400), not MaxNVTProfiles."""
    harness.call("CreateProfile", TRT.Name("by operator"), caller=OPERATOR)
    fault = harness.fault("CreateProfile", TRT.Name("by viewer"), caller=VIEWER)
    assert (faults(fault), fault.http_status) == (("Sender", "NotAuthorized"), 400)


def test_cached_replies_follow_changes(harness: MediaHarness) -> None:
    """GetProfiles answers from cache until a profile changes, and each reply is a fresh copy."""
    first = harness.call("GetProfiles")
    first[0].set("token", "tampered")
    assert tokens_of(harness.call("GetProfiles"), "trt:Profiles")[0] == "cam2.main"
    harness.call("CreateProfile", TRT.Name("new"))
    assert tokens_of(harness.call("GetProfiles"), "trt:Profiles")[-1] == "profile1"


# --- Synology's CreateProfile through the real SOAP server -------------------------------------------


class SoapClient:
    """The real OnvifResource with the Media service and an Authenticator on a Clock, through StubTreq."""

    USERS = {u.username: u for u in (User("admin", "secret", "Administrator"), User("viewer", "view", "User"))}

    def __init__(self, harness: MediaHarness) -> None:
        self.clock = Clock()
        self.clock.advance(SOAP_NOW)
        self.harness = harness
        authenticator = Authenticator(self.clock, self.USERS.get, 300.0, False)
        root = Resource()
        root.putChild(b"onvif", OnvifResource([harness.media, harness.media2], authenticator, None))
        self.stub = StubTreq(root)

    def post(self, body: bytes, content_type: str = "application/soap+xml; charset=utf-8") -> tuple[int, Any, _Element]:
        """POST to the media service; (status, headers, parsed envelope)."""
        done = self.stub.request(
            "POST", "http://192.0.2.7:8080" + PATH, data=body, headers={"Content-Type": [content_type]}
        )
        replies: list[Any] = []
        done.addCallback(lambda r: self.stub.content(r).addCallback(lambda data: (r.code, r.headers, data)))
        done.addBoth(replies.append)
        self.stub.flush()
        assert replies, "no answer"
        status, headers, data = replies[0]
        return status, headers, etree.fromstring(data)

    def secured(self, operation: _Element, username: str, password: str) -> bytes:
        return soap_envelope(operation, [soap_security(username, password, soap_iso(SOAP_NOW))])


def fault_codes(envelope: _Element) -> list[str]:
    """Code/Value then every Subcode/Value of a SOAP 1.2 fault."""
    return [v.text or "" for v in envelope.iter(ns.q(ns.SOAP12, "Value"))]


def test_synology_unauthenticated_create_profile_gets_max_profiles(tmp_path: Path) -> None:
    """CreateProfile as application/xml without any credentials is a 500 Receiver ter:Action/ter:MaxNVTProfiles fault."""
    client = SoapClient(MediaHarness(tmp_path))
    body = soap_envelope(TRT.CreateProfile(TRT.Name("SynoTestProfile")))
    status, headers, envelope = client.post(body, content_type="application/xml")
    assert status == 500
    assert fault_codes(envelope) == ["SOAP-ENV:Receiver", "ter:Action", "ter:MaxNVTProfiles"]
    assert headers.getRawHeaders("www-authenticate") is None
    assert "NotAuthorized" not in etree.tostring(envelope).decode()
    assert [p.token for p in client.harness.model.profiles() if not p.fixed] == []


def test_wrong_password_create_profile_is_also_max_profiles(tmp_path: Path) -> None:
    """A CreateProfile with a bad UsernameToken is treated as anonymous: MaxNVTProfiles, never NotAuthorized."""
    client = SoapClient(MediaHarness(tmp_path))
    status, _, envelope = client.post(client.secured(TRT.CreateProfile(TRT.Name("SynoTestProfile")), "admin", "wrong"))
    assert (status, fault_codes(envelope)[1:]) == (500, ["ter:Action", "ter:MaxNVTProfiles"])


def test_authenticated_create_and_delete_profile(tmp_path: Path) -> None:
    """With an administrator's UsernameToken CreateProfile makes a saved profile and DeleteProfile removes it."""
    client = SoapClient(MediaHarness(tmp_path))
    status, _, envelope = client.post(client.secured(TRT.CreateProfile(TRT.Name("SynoProfile")), "admin", "secret"))
    assert status == 200
    response = envelope.find(f"{{{ns.SOAP12}}}Body/{{{ns.TRT}}}CreateProfileResponse")
    assert response is not None
    schema.validate(response)
    assert response[0].get("token") == "profile1"
    assert "profile1" in (tmp_path / "profiles.json").read_text()
    status, _, _ = client.post(client.secured(TRT.DeleteProfile(TRT.ProfileToken("profile1")), "admin", "secret"))
    assert status == 200
    assert "profile1" not in (tmp_path / "profiles.json").read_text()


def test_viewer_create_profile_is_not_authorized(tmp_path: Path) -> None:
    """A valid User-level caller gets 400 Sender ter:NotAuthorized from CreateProfile."""
    client = SoapClient(MediaHarness(tmp_path))
    status, _, envelope = client.post(client.secured(TRT.CreateProfile(TRT.Name("x")), "viewer", "view"))
    assert (status, fault_codes(envelope)) == (400, ["SOAP-ENV:Sender", "ter:NotAuthorized"])


def test_unauthenticated_delete_profile_is_challenged(tmp_path: Path) -> None:
    """Other profile operations keep their ACTUATE class: no credentials means 401 with a Digest challenge."""
    client = SoapClient(MediaHarness(tmp_path))
    status, headers, _ = client.post(soap_envelope(TRT.DeleteProfile(TRT.ProfileToken("x"))))
    assert status == 401
    assert any(h.startswith(b"Digest ") for h in headers.getRawHeaders(b"www-authenticate"))
