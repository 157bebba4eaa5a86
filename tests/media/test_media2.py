"""The Media2 (ver20) service: every handler, schema validity, access classes and profile rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree
from lxml.etree import _Element

from atomrelay.auth.policy import AccessClass
from atomrelay.xml import ns
from tests.media.support import (
    TR2,
    TRT,
    MediaHarness,
    faults,
    resolutions,
    spec_access_classes,
    swing_only_ptz,
    text,
    tokens_of,
)
from tests.onvif import schema

MEDIA2_SPEC = schema.REFERENCE / "spec" / "Media2.xml"


@pytest.fixture
def harness(tmp_path: Path) -> MediaHarness:
    return MediaHarness(tmp_path, ptz=swing_only_ptz)


def ref(kind: str, token: str | None = None) -> _Element:
    """A ``tr2:Configuration`` reference."""
    return TR2.Configuration(TR2.Type(kind), *([TR2.Token(token)] if token is not None else []))


def test_every_operation_has_the_media2_spec_access_class(harness: MediaHarness) -> None:
    """Each operation's access class is its Media2.xml one (Get<entity>Configurations etc. by their pattern)."""
    classes = spec_access_classes(MEDIA2_SPEC)
    assert len(harness.media2.operations) >= 20
    for name, operation in harness.media2.operations.items():
        key = name
        for prefix, suffix in (("Get", "ConfigurationOptions"), ("Get", "Configurations"), ("Set", "Configuration")):
            if name.startswith(prefix) and name.endswith(suffix) and name not in classes:
                key = f"{prefix}<entity>{suffix}"
        assert operation.access.value == classes[key], name
    assert harness.media2.operations["CreateProfile"].access is AccessClass.ACTUATE


def all_requests() -> list[tuple[str, list[_Element]]]:
    """One valid request for every operation of the service."""
    return [
        ("GetServiceCapabilities", []),
        ("GetProfiles", [TR2.Type("All")]),
        ("CreateProfile", [TR2.Name("made"), ref("VideoSource", "wyze.vsc"), ref("VideoEncoder", "wyze.hd.ve")]),
        ("AddConfiguration", [TR2.ProfileToken("profile1"), TR2.Name("renamed")]),
        ("RemoveConfiguration", [TR2.ProfileToken("profile1"), ref("VideoEncoder")]),
        ("DeleteProfile", [TR2.Token("profile1")]),
        ("GetVideoSourceConfigurations", []),
        ("GetVideoEncoderConfigurations", []),
        ("GetAudioSourceConfigurations", []),
        ("GetAudioEncoderConfigurations", []),
        ("GetMetadataConfigurations", []),
        ("GetAnalyticsConfigurations", []),
        ("GetAudioOutputConfigurations", []),
        ("GetAudioDecoderConfigurations", []),
        ("GetVideoSourceConfigurationOptions", [TR2.ProfileToken("cam2.sub")]),
        ("GetVideoEncoderConfigurationOptions", []),
        ("GetAudioEncoderConfigurationOptions", []),
        ("SetVideoEncoderConfiguration", [current_vec2("cam2.sub.ve")]),
        ("GetVideoEncoderInstances", [TR2.ConfigurationToken("cam2.vsc")]),
        ("GetOSDs", []),
        ("GetStreamUri", [TR2.Protocol("RTSP"), TR2.ProfileToken("cam2.sub")]),
        ("GetSnapshotUri", [TR2.ProfileToken("cam2.sub")]),
    ]


def current_vec2(token: str) -> _Element:
    """The ver20 configuration a fresh relay reports for ``token``, as a SetVideoEncoderConfiguration argument."""
    import tempfile

    reply = MediaHarness(Path(tempfile.mkdtemp())).call2("GetVideoEncoderConfigurations", TR2.ConfigurationToken(token))
    element = reply[0]
    element.tag = ns.q(ns.TR2, "Configuration")
    return element


def test_every_operation_answers_schema_valid(harness: MediaHarness) -> None:
    """Each operation of the table, called with valid arguments, answers an XSD-valid response."""
    requests = all_requests()
    assert {name for name, _ in requests} == set(harness.media2.operations)
    for name, children in requests:
        harness.call2(name, *children)


def test_profiles_include_h265(harness: MediaHarness) -> None:
    """Media2 lists every stream profile, H.265 ones with Encoding H265, and the IANA audio names."""
    reply = harness.call2("GetProfiles", TR2.Type("All"))
    assert tokens_of(reply, "tr2:Profiles") == ["cam2.main", "cam2.sub", "swing.main", "swing.sub", "wyze.hd", "aac.main"]
    profiles = {p.get("token"): p for p in reply}
    encoding = "tr2:Configurations/tr2:VideoEncoder/tt:Encoding"
    assert text(profiles["cam2.sub"], encoding) == "H265"
    assert text(profiles["cam2.main"], encoding) == "H264"
    audio = "tr2:Configurations/tr2:AudioEncoder/tt:Encoding"
    assert [text(profiles[t], audio) for t in ("cam2.main", "cam2.sub", "swing.sub", "aac.main")] == [
        "PCMU", "MP4A-LATM", "opus", "MP4A-LATM",
    ]
    assert text(profiles["cam2.sub"], "tr2:Configurations/tr2:AudioEncoder/tt:SampleRate") == "48"
    assert tokens_of(profiles["swing.main"], "tr2:Configurations/tr2:PTZ") == ["swing.ptzc"]
    vec = profiles["cam2.sub"].find("tr2:Configurations/tr2:VideoEncoder", {"tr2": ns.TR2})
    assert vec is not None
    assert (text(vec, "tt:Resolution/tt:Width"), text(vec, "tt:RateControl/tt:FrameRateLimit")) == ("640", "15")
    assert text(vec, "tt:RateControl/tt:BitrateLimit") == "512"


def test_profile_types_select_configurations(harness: MediaHarness) -> None:
    """No Type gives bare profiles; a Type list gives only those configurations; Token picks one profile."""
    bare = harness.call2("GetProfiles")
    assert all(len(p) == 1 for p in bare)  # Name only
    only = harness.call2("GetProfiles", TR2.Token("swing.sub"), TR2.Type("VideoEncoder"), TR2.Type("PTZ"))
    assert tokens_of(only, "tr2:Profiles") == ["swing.sub"]
    assert [etree.QName(c).localname for c in only[0][1]] == ["VideoEncoder", "PTZ"]
    assert harness.fault("GetProfiles", TR2.Token("nope"), v2=True).subcodes == ("InvalidArgVal", "NoProfile")


def test_configuration_lists_by_token_profile_or_all(harness: MediaHarness) -> None:
    """Get*Configurations answer one by token, a profile's compatible ones, or all; mismatches are faults."""
    every = tokens_of(harness.call2("GetVideoEncoderConfigurations"), "tr2:Configurations")
    assert every == ["cam2.main.ve", "cam2.sub.ve", "swing.main.ve", "swing.sub.ve", "wyze.hd.ve", "aac.main.ve"]
    one = harness.call2("GetAudioEncoderConfigurations", TR2.ConfigurationToken("swing.sub.ae"))
    assert tokens_of(one, "tr2:Configurations") == ["swing.sub.ae"]
    for_fixed = harness.call2("GetVideoEncoderConfigurations", TR2.ProfileToken("cam2.sub"))
    assert tokens_of(for_fixed, "tr2:Configurations") == ["cam2.sub.ve"]
    assert harness.fault("GetVideoEncoderConfigurations", TR2.ConfigurationToken("x"), v2=True).subcodes == (
        "InvalidArgVal", "NoConfig",
    )
    mismatch = harness.fault(
        "GetVideoEncoderConfigurations", TR2.ConfigurationToken("aac.main.ve"), TR2.ProfileToken("cam2.sub"), v2=True
    )
    assert mismatch.subcodes == ("InvalidArgVal", "IncompatibleConfiguration")


def test_encoder_options_per_encoding(harness: MediaHarness) -> None:
    """Options come one per encoding with exactly the configured resolutions, frame rates and bitrates."""
    reply = harness.call2("GetVideoEncoderConfigurationOptions", TR2.ConfigurationToken("cam2.sub.ve"))
    assert len(reply) == 1
    options = reply[0]
    assert text(options, "tt:Encoding") == "H265"
    assert options.get("FrameRatesSupported") == "15"
    assert resolutions(options) == [("640", "360")]
    assert (text(options, "tt:BitrateRange/tt:Min"), text(options, "tt:BitrateRange/tt:Max")) == ("512", "512")
    generic = harness.call2("GetVideoEncoderConfigurationOptions")
    assert sorted(text(o, "tt:Encoding") for o in generic) == ["H264", "H265"]
    audio = harness.call2("GetAudioEncoderConfigurationOptions", TR2.ProfileToken("swing.sub"))
    assert [text(o, "tt:Encoding") for o in audio] == ["opus"]


def test_set_video_encoder_rules(harness: MediaHarness) -> None:
    """Media2 SetVideoEncoderConfiguration accepts the current H.265 values and refuses another resolution."""
    harness.call2("SetVideoEncoderConfiguration", current_vec2("cam2.sub.ve"))
    changed = current_vec2("cam2.sub.ve")
    changed.find("tt:Resolution/tt:Width", {"tt": ns.TT}).text = "1920"  # type: ignore[union-attr]
    fault = harness.fault("SetVideoEncoderConfiguration", changed, v2=True)
    assert faults(fault) == ("Sender", "InvalidArgVal", "ConfigModify")


@pytest.mark.parametrize("protocol", ["RtspUnicast", "RTSP"])
def test_stream_uri_protocols(harness: MediaHarness, protocol: str) -> None:
    """RtspUnicast and RTSP get the mediamtx RTSP URI of the H.265 stream."""
    reply = harness.call2("GetStreamUri", TR2.Protocol(protocol), TR2.ProfileToken("wyze.hd"), host="cams.example:80")
    assert text(reply, "tr2:Uri") == "rtsp://cams.example:8554/wyze/hd"


@pytest.mark.parametrize("protocol", ["RtspMulticast", "RtspsUnicast", "SRT", "RtspOverHttp"])
def test_other_protocols_are_refused(harness: MediaHarness, protocol: str) -> None:
    """Multicast, secure RTSP, HTTP tunnelling (its URI must use the web service's port, Media2 GetStreamUri) and
    unknown protocols are Sender/InvalidArgVal/InvalidStreamSetup."""
    fault = harness.fault("GetStreamUri", TR2.Protocol(protocol), TR2.ProfileToken("wyze.hd"), v2=True)
    assert faults(fault) == ("Sender", "InvalidArgVal", "InvalidStreamSetup")


def test_snapshot_uri(harness: MediaHarness) -> None:
    """GetSnapshotUri points an H.265 profile at its camera's snapshot proxy."""
    assert text(harness.call2("GetSnapshotUri", TR2.ProfileToken("wyze.hd")), "tr2:Uri") == (
        "http://192.0.2.7:8080/snapshot/wyze.jpg"
    )


def test_capabilities(harness: MediaHarness) -> None:
    """Snapshots, RTSP streaming over TCP, the profile limit and the configuration kinds incl. PTZ."""
    capabilities = harness.call2("GetServiceCapabilities")[0]
    assert capabilities.get("SnapshotUri") == "true"
    profile = capabilities.find("tr2:ProfileCapabilities", {"tr2": ns.TR2})
    assert profile is not None and profile.get("MaximumNumberOfProfiles") == "12"
    assert (profile.get("ConfigurationsSupported") or "").split() == [
        "VideoSource", "VideoEncoder", "AudioSource", "AudioEncoder", "PTZ",
    ]
    streaming = capabilities.find("tr2:StreamingCapabilities", {"tr2": ns.TR2})
    assert streaming is not None and (streaming.get("RTSPStreaming"), streaming.get("RTPMulticast")) == ("true", "false")


def test_encoder_instances(harness: MediaHarness) -> None:
    """GetVideoEncoderInstances counts the camera's streams per encoding."""
    reply = harness.call2("GetVideoEncoderInstances", TR2.ConfigurationToken("cam2.vsc"))
    codecs = [(text(c, "tr2:Encoding"), text(c, "tr2:Number")) for c in reply[0].findall("tr2:Codec", {"tr2": ns.TR2})]
    assert codecs == [("H264", "1"), ("H265", "1")]
    assert text(reply, "tr2:Info/tr2:Total") == "2"


def test_user_profile_lifecycle_through_media2(harness: MediaHarness, tmp_path: Path) -> None:
    """CreateProfile with configurations, rename, RemoveConfiguration All, DeleteProfile: all saved."""
    token = harness.call2(
        "CreateProfile",
        TR2.Name("h265 only"),
        ref("All"),
        ref("VideoSource", "wyze.vsc"),
        ref("VideoEncoder", "wyze.hd.ve"),
    )
    assert text(token, "tr2:Token") == "profile1"
    assert text(harness.call2("GetStreamUri", TR2.Protocol("RTSP"), TR2.ProfileToken("profile1")), "tr2:Uri") == (
        "rtsp://192.0.2.7:8554/wyze/hd"
    )
    assert "profile1" not in tokens_of(harness.call("GetProfiles"), "trt:Profiles")  # H.265: Media2 only
    harness.call2("AddConfiguration", TR2.ProfileToken("profile1"), TR2.Name("renamed"))
    restarted = MediaHarness(tmp_path, ptz=swing_only_ptz)
    profile = restarted.call2("GetProfiles", TR2.Token("profile1"), TR2.Type("All"))[0]
    assert (text(profile, "tr2:Name"), profile.get("fixed")) == ("renamed", "false")
    restarted.call2("RemoveConfiguration", TR2.ProfileToken("profile1"), ref("All"))
    assert len(restarted.call2("GetProfiles", TR2.Token("profile1"), TR2.Type("All"))[0]) == 1
    restarted.call2("DeleteProfile", TR2.Token("profile1"))
    assert tokens_of(MediaHarness(tmp_path).call2("GetProfiles"), "tr2:Profiles")[-1] == "aac.main"


def test_media2_profile_faults(harness: MediaHarness) -> None:
    """NoConfig, ConfigurationConflict, DeletionOfFixedProfile, NoProfile and MaxNVTProfiles as specified."""
    assert faults(harness.fault("CreateProfile", TR2.Name("x"), ref("VideoEncoder", "nope"), v2=True)) == (
        "Sender", "InvalidArgVal", "NoConfig",
    )
    conflict = harness.fault(
        "CreateProfile", TR2.Name("x"), ref("VideoSource", "cam2.vsc"), ref("VideoEncoder", "wyze.hd.ve"), v2=True
    )
    assert faults(conflict) == ("Receiver", "Action", "ConfigurationConflict")
    assert faults(harness.fault("DeleteProfile", TR2.Token("cam2.sub"), v2=True)) == (
        "Sender", "Action", "DeletionOfFixedProfile",
    )
    assert harness.fault("AddConfiguration", TR2.ProfileToken("nope"), v2=True).subcodes == ("InvalidArgVal", "NoProfile")
    fixed_change = harness.fault("RemoveConfiguration", TR2.ProfileToken("cam2.sub"), ref("AudioEncoder"), v2=True)
    assert faults(fixed_change) == ("Receiver", "Action", "ConfigurationConflict")
    for n in range(6):
        harness.call2("CreateProfile", TR2.Name(f"p{n}"))
    assert faults(harness.fault("CreateProfile", TR2.Name("one too many"), v2=True)) == (
        "Receiver", "Action", "MaxNVTProfiles",
    )


def test_media1_profiles_appear_in_media2(harness: MediaHarness) -> None:
    """A profile made through Media1 is the same profile in Media2 (one shared model)."""
    harness.call("CreateProfile", TRT.Name("from v1"), TRT.Token("v1"))
    harness.call("AddVideoEncoderConfiguration", TRT.ProfileToken("v1"), TRT.ConfigurationToken("aac.main.ve"))
    profile = harness.call2("GetProfiles", TR2.Token("v1"), TR2.Type("VideoEncoder"))[0]
    assert tokens_of(profile, "tr2:Configurations/tr2:VideoEncoder") == ["aac.main.ve"]
    assert text(harness.call2("GetVideoEncoderConfigurations", TR2.ConfigurationToken("aac.main.ve")),
                "tr2:Configurations/tt:UseCount") == "2"


def test_the_ptz_configuration_counts_every_profile_holding_it(harness: MediaHarness) -> None:
    """UseCount of the Swing's PTZ configuration counts user profiles too, in Media2 and Media1 alike."""
    harness.call("CreateProfile", TRT.Name("pan"), TRT.Token("pan"))
    harness.call("AddVideoSourceConfiguration", TRT.ProfileToken("pan"), TRT.ConfigurationToken("swing.vsc"))
    harness.call("AddPTZConfiguration", TRT.ProfileToken("pan"), TRT.ConfigurationToken("swing.ptzc"))
    for profile in harness.call2("GetProfiles", TR2.Type("PTZ")):
        if profile.get("token") in ("swing.main", "swing.sub", "pan"):
            assert text(profile, "tr2:Configurations/tr2:PTZ/tt:UseCount") == "3"
    media1 = harness.call("GetProfile", TRT.ProfileToken("swing.main"))
    assert text(media1, "trt:Profile/tt:PTZConfiguration/tt:UseCount") == "3"
